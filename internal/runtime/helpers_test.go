package runtime

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// testHost is a runtime host started as a plain child process with the
// channel on fds 3 and 4, the way a sandbox starts it minus the isolation.
type testHost struct {
	conn   *Conn
	cmd    *exec.Cmd
	output *testenv.Buffer // the host's own stdout and stderr
	exited chan struct{}
}

// startHost writes files into a fresh code directory and starts the host
// for runtime with the given handler. env entries override HostEnv's.
func startHost(t testing.TB, runtime, handler string, files map[string]string, env ...string) *testHost {
	t.Helper()
	l := DefaultLauncher()
	switch function.Family(runtime) {
	case function.RuntimePython:
		testenv.RequireFile(t, l.Python, "python3")
	case function.RuntimeNode:
		testenv.RequireFile(t, l.Node, "nodejs")
	}
	codeDir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(codeDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rtDir := t.TempDir()
	if err := Extract(rtDir); err != nil {
		t.Fatal(err)
	}
	spec := &function.Spec{Name: "test", Runtime: runtime, Handler: handler, Concurrency: 1}
	argv, err := l.Command(spec, codeDir, rtDir)
	if err != nil {
		t.Fatal(err)
	}
	reqR, reqW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &testenv.Buffer{}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = []*os.File{reqR, respW} // fds 3 and 4
	cmd.Env = append(HostEnv(spec, 0), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reqR.Close()
	respW.Close()
	h := &testHost{conn: NewConn(reqW, respR, ConnOptions{}), cmd: cmd, output: out, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(h.exited)
	}()
	t.Cleanup(func() {
		h.conn.Close()
		// A host busy in a handler notices end of input only afterwards.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-h.exited
		}
		<-h.conn.Done()
	})
	return h
}

// ready waits for the host's ready frame and fails the test on error.
func (h *testHost) ready(t testing.TB) Ready {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := h.conn.WaitReady(ctx)
	if err != nil {
		var le *LoadError
		if errors.As(err, &le) {
			t.Fatalf("host not ready: %v\n%s\nhost output:\n%s", err, le.Logs, h.output.String())
		}
		t.Fatalf("host not ready: %v\nhost output:\n%s", err, h.output.String())
	}
	return r
}
