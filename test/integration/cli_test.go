package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLI drives the real wisp binary against a running server, as a user
// would from a shell.
func TestCLI(t *testing.T) {
	h := startServer(t, testConfig(t, "process"), "")
	bin := buildWisp(t)
	dir := t.TempDir()
	if err := WriteExamplesTo(dir); err != nil {
		t.Fatal(err)
	}
	wisp := func(stdin string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "WISP_URL="+h.url, "WISP_TOKEN="+tokenFor(h.url))
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(stdin string, args ...string) string {
		t.Helper()
		out, err := wisp(stdin, args...)
		if err != nil {
			t.Fatalf("wisp %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	out := must("", "deploy", "-f", filepath.Join(dir, "hello-python", "function.yaml"))
	if !strings.Contains(out, "deployed hello-python version 1") {
		t.Fatalf("deploy output: %s", out)
	}
	must("", "deploy", "-f", filepath.Join(dir, "shout-exec", "function.yaml"))
	must("", "deploy", "wc", "--runtime", "exec", "--handler", "wc -c", "--dir", t.TempDir())

	if out := must("", "invoke", "hello-python", "-d", `{"name": "Ada"}`); !strings.Contains(out, "Hello, Ada!") {
		t.Fatalf("invoke -d: %s", out)
	}
	os.WriteFile(filepath.Join(dir, "body.txt"), []byte("from a file"), 0o644)
	if out := must("", "invoke", "shout-exec", "-d", "@"+filepath.Join(dir, "body.txt")); !strings.Contains(out, "FROM A FILE") {
		t.Fatalf("invoke -d @file: %s", out)
	}
	if out := must("from stdin", "invoke", "shout-exec"); !strings.Contains(out, "FROM STDIN") {
		t.Fatalf("invoke from stdin: %s", out)
	}
	if out := must("12345", "invoke", "wc"); strings.TrimSpace(out) != "5" {
		t.Fatalf("invoke wc: %q", out)
	}

	var fns []map[string]any
	if err := json.Unmarshal([]byte(must("", "ls", "-o", "json")), &fns); err != nil || len(fns) != 3 {
		t.Fatalf("ls -o json: %v %v", fns, err)
	}
	if out := must("", "ls"); !strings.Contains(out, "NAME") || !strings.Contains(out, "hello-python") {
		t.Fatalf("ls table: %s", out)
	}
	if out := must("", "get", "hello-python"); !strings.Contains(out, "keep_alive") || strings.Contains(out, "GREETING=Hello") {
		t.Fatalf("get (shows fields, hides env values): %s", out)
	}
	if out := must("", "activations", "--function", "shout-exec"); !strings.Contains(out, "success") {
		t.Fatalf("activations: %s", out)
	}
	// A failing call shows up in logs with its error.
	must("", "deploy", "-f", writeFailing(t))
	if out, err := wisp("", "invoke", "failing"); err == nil || !strings.Contains(out, "ValueError") {
		t.Fatalf("invoke failing: err=%v out=%s", err, out)
	}
	if out := must("", "logs", "failing"); !strings.Contains(out, "Traceback") || !strings.Contains(out, "before failing") {
		t.Fatalf("logs: %s", out)
	}
	if out := must("", "bench", "hello-python", "-n", "20", "-c", "2", "-q"); !strings.Contains(out, "p50") && !strings.Contains(out, "P50") {
		t.Fatalf("bench: %s", out)
	}
	// Async calls, dead letters and triggers from the CLI.
	var queued struct {
		ActivationID string `json:"activation_id"`
	}
	if err := json.Unmarshal([]byte(must("", "invoke", "hello-python", "--async", "-d", `{"name": "Queue"}`, "-o", "json")), &queued); err != nil || queued.ActivationID == "" {
		t.Fatalf("invoke --async -o json: %v", err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out := must("", "activations", queued.ActivationID)
		if strings.Contains(out, "async:     succeeded after 1 attempt(s), from api") && strings.Contains(out, "Hello, Queue!") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("async activation never succeeded:\n%s", out)
		}
	}
	if out := must("", "activations", "--failed"); !strings.Contains(out, "ATTEMPTS") {
		t.Fatalf("activations --failed: %s", out)
	}
	must("", "trigger", "create", "hourly", "--function", "hello-python", "--schedule", "@hourly")
	if out := must("", "trigger", "ls"); !strings.Contains(out, "hourly") || !strings.Contains(out, "@hourly") || strings.Contains(out, "\t-\t") {
		t.Fatalf("trigger ls: %s", out)
	}
	if out, err := wisp("", "trigger", "create", "bad", "--function", "hello-python", "--schedule", "61 * * * *"); err == nil || !strings.Contains(out, "minute") {
		t.Fatalf("trigger create with a bad schedule: err=%v out=%s", err, out)
	}
	must("", "trigger", "rm", "hourly")

	must("", "rm", "wc")
	if out, err := wisp("", "get", "wc"); err == nil || !strings.Contains(out, "not found") || !strings.Contains(out, "hint") {
		t.Fatalf("get after rm: err=%v out=%s", err, out)
	}
	// Offline validation names the field before anything is sent.
	bad := filepath.Join(t.TempDir(), "function.yaml")
	os.WriteFile(bad, []byte("name: x\nruntime: cobol\nhandler: x\n"), 0o644)
	if out, err := wisp("", "deploy", "-f", bad); err == nil || !strings.Contains(out, "unknown runtime") {
		t.Fatalf("deploy bad spec: err=%v out=%s", err, out)
	}
}

func writeFailing(t *testing.T) string {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "function.yaml"), []byte("name: failing\nruntime: python3\nhandler: h.py\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "h.py"), []byte("def handle(req):\n    print('before failing')\n    raise ValueError('bad input')\n"), 0o644)
	return filepath.Join(dir, "function.yaml")
}
