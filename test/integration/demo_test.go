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
	srv, out := startBinaryOut(t, bin, t.TempDir(), cfgFile, addr, "--demo")
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
	calls := []struct{ path, body, want string }{
		{"/function/hello-python?name=Ada", "", "Hello, Ada!"},
		{"/function/hello-node", `{"name": "Grace"}`, "Hello from Node, Grace!"},
		{"/function/shout-exec", "quiet please", "QUIET PLEASE"},
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
