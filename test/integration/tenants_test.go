package integration

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/wisp-faas/wisp/internal/client"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/store"
)

// TestTenants makes two namespaces with the CLI, deploys a function of the
// same name in each with their own keys, and checks that neither tenant can
// list, read, call or delete the other's, against real sandboxes.
func TestTenants(t *testing.T) {
	h := startServer(t, testConfig(t, function.ModeProcess), "")
	bin := buildWisp(t)
	wisp := func(token string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "WISP_URL="+h.url, "WISP_TOKEN="+token)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	admin := tokenFor(h.url)
	keys := map[string]string{}
	for _, ns := range []string{"team-a", "team-b"} {
		out, err := wisp(admin, "ns", "create", ns, "-o", "json")
		if err != nil {
			t.Fatalf("wisp ns create %s: %v\n%s", ns, err, out)
		}
		var v struct{ Name, Key string }
		if err := json.Unmarshal([]byte(out), &v); err != nil || v.Name != ns || !strings.HasPrefix(v.Key, "wisp_") {
			t.Fatalf("wisp ns create -o json printed %s (%v); want {name, key}", out, err)
		}
		keys[ns] = v.Key
	}
	ctx := context.Background()
	as := func(ns string) *harness {
		hh := *h
		hh.c = client.New(h.url, keys[ns], 4)
		return &hh
	}
	a, b := as("team-a"), as("team-b")
	a.mustDeploy(probe("app", ""))
	b.mustDeploy(probe("app", ""))
	b.mustDeploy(probe("private", ""))

	call := func(key, ref string) int {
		req, _ := http.NewRequest(http.MethodPost, h.url+"/function/"+ref+"?op=pid", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := call(keys["team-a"], "app"); got != 200 {
		t.Fatalf("team-a calls its app: HTTP %d", got)
	}
	if got := call(keys["team-b"], "app"); got != 200 {
		t.Fatalf("team-b calls its app: HTTP %d", got)
	}
	for _, ref := range []string{"private", "private.team-b", "app.team-b"} {
		if got := call(keys["team-a"], ref); got != http.StatusNotFound {
			t.Errorf("team-a calls %s: HTTP %d, want 404", ref, got)
		}
	}
	if got := call(admin, "private.team-b"); got != 200 {
		t.Errorf("the admin calls private.team-b: HTTP %d", got)
	}
	fns, err := a.c.List(ctx)
	if err != nil || len(fns) != 1 || fns[0].Ref != "app.team-a" {
		t.Fatalf("team-a lists %+v (%v); want its app only", fns, err)
	}
	var ce *client.Error
	if _, err := a.c.Get(ctx, "private.team-b"); !errors.As(err, &ce) || ce.Status != 404 {
		t.Errorf("team-a gets private.team-b: %v", err)
	}
	if err := a.c.Delete(ctx, "app.team-b"); !errors.As(err, &ce) || ce.Status != 404 {
		t.Errorf("team-a deletes app.team-b: %v", err)
	}
	if _, err := a.c.Activations(ctx, store.ActivationFilter{Function: "private.team-b"}); !errors.As(err, &ce) || ce.Status != 404 {
		t.Errorf("team-a lists private.team-b's activations: %v", err)
	}
	if got := call(keys["team-b"], "app"); got != 200 {
		t.Fatalf("team-b's app after team-a's attempts: HTTP %d", got)
	}

	// The CLI as each tenant and as the admin.
	if out, err := wisp(keys["team-a"], "ls"); err != nil || !strings.Contains(out, "team-a") || strings.Contains(out, "private") {
		t.Errorf("team-a's wisp ls: %v\n%s", err, out)
	}
	if out, err := wisp(keys["team-a"], "ns", "create", "team-c"); err == nil || !strings.Contains(out, "403") {
		t.Errorf("a tenant makes a namespace: %v\n%s", err, out)
	}
	if out, err := wisp(admin, "ls", "-A"); err != nil || !strings.Contains(out, "private") || strings.Count(out, "app") != 2 {
		t.Errorf("the admin's wisp ls -A: %v\n%s", err, out)
	}
	if out, err := wisp(admin, "--namespace", "team-b", "ls"); err != nil || !strings.Contains(out, "private") || strings.Contains(out, "team-a") {
		t.Errorf("the admin's wisp --namespace team-b ls: %v\n%s", err, out)
	}
	if out, err := wisp(admin, "ns", "rm", "team-b"); err == nil || !strings.Contains(out, "--force") {
		t.Errorf("wisp ns rm of a namespace with functions: %v\n%s", err, out)
	}
	if out, err := wisp(admin, "ns", "rm", "team-b", "--force"); err != nil {
		t.Fatalf("wisp ns rm --force: %v\n%s", err, out)
	}
	if got := call(keys["team-b"], "app"); got != http.StatusUnauthorized {
		t.Errorf("the key of a removed namespace: HTTP %d, want 401", got)
	}
	if got := call(keys["team-a"], "app"); got != 200 {
		t.Errorf("team-a after team-b's removal: HTTP %d", got)
	}
}
