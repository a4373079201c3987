package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// TestWaitingHosts starts each host in --wait mode, then binds it to a
// function with a load frame, as a pre-provisioned sandbox does.
func TestWaitingHosts(t *testing.T) {
	tests := []struct {
		runtime, handler, code, want string
	}{
		{"python3", "h.py", "import os\ndef handle(req):\n    return os.environ['COLOR'] + ':' + req.body.decode()\n", "teal:hi"},
		{"node", "h.js", "exports.handle = async (req) => process.env.COLOR + ':' + req.text();\n", "teal:hi"},
	}
	l := DefaultLauncher()
	for _, tt := range tests {
		t.Run(tt.runtime, func(t *testing.T) {
			if function.Family(tt.runtime) == function.RuntimeNode {
				testenv.RequireFile(t, l.Node, "nodejs")
			} else {
				testenv.RequireFile(t, l.Python, "python3")
			}
			rtDir, codeDir := t.TempDir(), t.TempDir()
			if err := Extract(rtDir); err != nil {
				t.Fatal(err)
			}
			argv, err := l.WaitCommand(tt.runtime, rtDir)
			if err != nil || argv == nil {
				t.Fatalf("WaitCommand: %v %v", argv, err)
			}
			reqR, reqW, _ := os.Pipe()
			respR, respW, _ := os.Pipe()
			out := &testenv.Buffer{}
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.ExtraFiles = []*os.File{reqR, respW}
			cmd.Env = []string{"PATH=/usr/bin:/bin"}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			reqR.Close()
			respW.Close()
			defer func() { cmd.Process.Kill(); cmd.Wait() }()

			if pid, err := ReadIdle(respR); err != nil || pid <= 0 {
				t.Fatalf("ReadIdle = %d, %v\n%s", pid, err, out.String())
			}
			// The code arrives after the host started, as it does in a spare.
			os.WriteFile(filepath.Join(codeDir, tt.handler), []byte(tt.code), 0o644)
			spec := &function.Spec{Name: "w", Runtime: tt.runtime, Handler: tt.handler, Concurrency: 1,
				Environment: []string{"COLOR=teal"}}
			if err := SendLoad(reqW, Load{CodeDir: codeDir, Handler: tt.handler, Env: EnvMap(HostEnv(spec, 0))}); err != nil {
				t.Fatal(err)
			}
			conn := NewConn(reqW, respR, ConnOptions{})
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := conn.WaitReady(ctx); err != nil {
				t.Fatalf("WaitReady: %v\n%s", err, out.String())
			}
			for range 3 {
				resp, err := conn.RoundTrip(ctx, &sandbox.Request{Method: "POST", Path: "/", Body: []byte("hi")})
				if err != nil || string(resp.Body) != tt.want {
					t.Fatalf("RoundTrip = %+v, %v; want %q\n%s", resp, err, tt.want, out.String())
				}
			}
		})
	}
}

func TestWaitingHostExitsWhenClosed(t *testing.T) {
	l := DefaultLauncher()
	testenv.RequireFile(t, l.Python, "python3")
	rtDir := t.TempDir()
	Extract(rtDir)
	argv, _ := l.WaitCommand("python3", rtDir)
	reqR, reqW, _ := os.Pipe()
	respR, respW, _ := os.Pipe()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = []*os.File{reqR, respW}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reqR.Close()
	respW.Close()
	if _, err := ReadIdle(respR); err != nil {
		t.Fatal(err)
	}
	reqW.Close() // never claimed: the host must exit by itself
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("idle host exited with %v, want 0", err)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("idle host did not exit when its channel closed")
	}
	if got, _ := l.WaitCommand("exec", rtDir); got != nil {
		t.Fatalf("exec has no waiting host, got %v", got)
	}
}
