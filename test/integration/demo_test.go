package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeDemo runs the README's quick start: `wisp serve --demo` deploys
// the examples, prints how to call them, and every printed call works.
func TestServeDemo(t *testing.T) {
	bin := buildWisp(t)
	cfg := testConfig(t, "process")
	cfgFile := filepath.Join(t.TempDir(), "wisp.yaml")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf("process:\n  cgroup_root: %s\nlog:\n  level: warn\n", cfg.Process.CgroupRoot)), 0o644)
	addr := freePort(t)
	dataDir := t.TempDir()
	srv, out := startBinaryOut(t, bin, dataDir, cfgFile, addr, "--demo")
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		if err := srv.Wait(); err != nil {
			t.Errorf("wisp serve exited with %v after SIGTERM", err)
		}
		assertNoLeftovers(t, cfg.Process.CgroupRoot)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "Press Ctrl-C") {
		if time.Now().After(deadline) {
			t.Fatalf("demo banner not printed: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	banner := out.String()
	if strings.Contains(banner, "NOT DEPLOYED") {
		t.Fatalf("an example failed to deploy:\n%s", banner)
	}
	// The banner says where the admin key is, and the calls it prints use it.
	if !strings.Contains(banner, filepath.Join(dataDir, "admin.key")) || !strings.Contains(banner, "Authorization: Bearer $WISP_TOKEN") {
		t.Errorf("banner does not say how to authenticate:\n%s", banner)
	}
	rememberKey(t, addr, dataDir)
	calls := []struct{ path, body, want string }{
		{"/function/hello-python?name=Ada", "", "Hello, Ada!"},
		{"/function/hello-node", `{"name": "Grace"}`, "Hello from Node, Grace!"},
		{"/function/shout-exec", "quiet please", "QUIET PLEASE"},
		{"/function/greet-loud", `{"name": "Ada"}`, "HELLO, ADA!"},
	}
	for _, c := range calls {
		if !strings.Contains(banner, c.path) {
			t.Errorf("banner does not show how to call %s", c.path)
		}
		method := http.MethodGet
		if c.body != "" {
			method = http.MethodPost
		}
		req, _ := http.NewRequest(method, "http://"+addr+c.path, strings.NewReader(c.body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(b.String(), c.want) {
			t.Errorf("%s: HTTP %d %s; want %q", c.path, res.StatusCode, b.String(), c.want)
		}
	}
}

// TestSIGTERMDrainsCalls: a call in flight when wisp serve gets SIGTERM
// finishes with its answer; then the server exits 0 and leaves nothing.
func TestSIGTERMDrainsCalls(t *testing.T) {
	bin := buildWisp(t)
	cfg := testConfig(t, "process")
	cfgFile := filepath.Join(t.TempDir(), "wisp.yaml")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf("process:\n  cgroup_root: %s\nlog:\n  level: warn\n", cfg.Process.CgroupRoot)), 0o644)
	addr := freePort(t)
	srv := startBinary(t, bin, t.TempDir(), cfgFile, addr)
	h := &harness{t: t, c: newClient("http://" + addr), url: "http://" + addr, cfg: cfg}
	h.mustDeploy(probe("slow", ""))
	wantStatus(t, h.call("slow", "?op=pid", ""), 200) // warm it

	done := make(chan *resultOrErr, 1)
	go func() {
		res, err := http.Post(h.url+"/function/slow?op=sleep&s=1.5", "text/plain", nil)
		r := &resultOrErr{err: err}
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(res.Body)
			res.Body.Close()
			r.status, r.body = res.StatusCode, b.String()
		}
		done <- r
	}()
	time.Sleep(400 * time.Millisecond)
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.status != 200 || !strings.Contains(r.body, "slept") {
		t.Fatalf("call in flight during SIGTERM: %+v; want 200 slept", r)
	}
	if err := srv.Wait(); err != nil {
		t.Fatalf("wisp serve exited with %v after SIGTERM", err)
	}
	if n := countCgroups(cfg.Process.CgroupRoot); n != 0 {
		t.Fatalf("%d sandbox cgroups left after SIGTERM", n)
	}
	for _, d := range []string{"/sys/fs/cgroup/memory/" + cfg.Process.CgroupRoot, "/sys/fs/cgroup/" + cfg.Process.CgroupRoot} {
		if _, err := os.Stat(d); err == nil {
			t.Fatalf("wisp's cgroup %s left after SIGTERM", d)
		}
	}
}

type resultOrErr struct {
	status int
	body   string
	err    error
}
