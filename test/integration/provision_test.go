package integration

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPreProvisionedSandboxes checks that an instance started in a
// pre-provisioned sandbox keeps every promise of one made on demand: the
// function's own limits, environment and code, a fresh unprivileged uid,
// the same isolation; and that spares are gone after shutdown.
func TestPreProvisionedSandboxes(t *testing.T) {
	cfg := testConfig(t, "process")
	cfg.Process.Provisioned = 2
	h := startServer(t, cfg, "")
	// 128Mi: enough for a spare (twice the 64Mi /tmp); keep_alive 0 so every
	// call takes a new sandbox.
	h.mustDeploy(probe("pp", "memory: 128Mi\nkeep_alive: 0\nenvironment: [\"COLOR=teal\"]\n"))
	wantStatus(t, h.call("pp", "?op=pid", ""), 200) // first start is on demand; spares follow

	stage := filepath.Join(h.dataDir, "stage")
	waitFor(t, "two spares ready", func() bool {
		entries, _ := os.ReadDir(stage)
		return len(entries) >= 2
	})
	time.Sleep(300 * time.Millisecond) // let the spares' hosts report idle

	res := h.call("pp", "?op=status", "")
	wantStatus(t, res, 200)
	a, err := h.c.Activation(context.Background(), res.ActivationID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Timings["start_ms"] > 40 {
		t.Logf("start took %.1f ms: the spare was probably not ready (slow machine?)", a.Timings["start_ms"])
	}
	st := decode[map[string]string](t, res)
	if st["CapEff"] != "0000000000000000" || st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
		t.Fatalf("spare-started instance: %v", st)
	}
	ids := decode[map[string]any](t, h.call("pp", "?op=ids", ""))
	if ids["uid"].(float64) < float64(cfg.Process.UIDBase) {
		t.Fatalf("uid %v outside the sandbox range", ids["uid"])
	}
	if pids := decode[[]int](t, h.call("pp", "?op=procs", "")); len(pids) > 3 || pids[0] != 1 {
		t.Fatalf("visible pids %v", pids)
	}
	if r := decode[tryResult](t, h.call("pp", "?op=read&path=/code/secret.txt", "")); !r.OK {
		t.Fatalf("own code not visible: %+v", r)
	}
	if r := decode[tryResult](t, h.call("pp", "?op=write&path=/code/x", "")); r.OK {
		t.Fatal("wrote into /code")
	}
	if r := decode[map[string]bool](t, h.call("pp", "?op=exists&path="+stage, "")); r["exists"] {
		t.Fatal("the stage directory is visible inside the sandbox")
	}
	// The function's memory limit applies, not the spare's (none).
	res = h.call("pp", "?op=alloc&mb=300", "")
	wantStatus(t, res, http.StatusBadGateway)
	if !bytes.Contains(res.Body, []byte("memory limit 128Mi exceeded")) {
		t.Fatalf("body %s; want the function's memory limit named", res.Body)
	}
	// The function's environment reaches the handler.
	h.mustDeploy(fn{spec: "name: env\nruntime: python3\nhandler: h.py\nmemory: 128Mi\nkeep_alive: 0\nenvironment: [\"COLOR=teal\"]\n",
		files: map[string]string{"h.py": "import os\ndef handle(req):\n    return os.environ.get('COLOR', 'none')\n"}})
	for range 3 {
		if got := h.call("env", "", ""); string(got.Body) != "teal" {
			t.Fatalf("environment: %q", got.Body)
		}
	}
	// Node functions get spares too.
	h.mustDeploy(fn{spec: "name: envjs\nruntime: node\nhandler: h.js\nmemory: 128Mi\nkeep_alive: 0\nenvironment: [\"COLOR=jade\"]\n",
		files: map[string]string{"h.js": "exports.handle = async () => process.env.COLOR + ':' + process.getuid();\n"}})
	for range 4 {
		got := h.call("envjs", "", "")
		wantStatus(t, got, 200)
		if !strings.HasPrefix(string(got.Body), "jade:") || strings.HasSuffix(string(got.Body), ":0") {
			t.Fatalf("node from a spare: %q", got.Body)
		}
	}
	h.stop()
	if entries, _ := os.ReadDir(stage); len(entries) != 0 {
		t.Fatalf("%d stage directories left after shutdown", len(entries))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
