package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// testBackend returns a backend with a private cgroup parent and extracted
// runtime hosts; every instance left open is closed when the test ends.
func testBackend(t testing.TB, mod ...func(*Config)) *Backend {
	t.Helper()
	testenv.RequireCgroups(t)
	rt := codeDir(t, nil)
	if err := runtime.Extract(rt); err != nil {
		t.Fatal(err)
	}
	name := testCgroupName()
	cfg := Config{CgroupRoot: name, RuntimeDir: rt, UIDBase: 280000 + int(uidSeq.Add(100)), UIDCount: 100}
	for _, f := range mod {
		f(&cfg)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cg, err := b.cgroups()
		if err == nil {
			if ids, _ := cg.List(); len(ids) != 0 {
				t.Errorf("instances left open: %v", ids)
			}
		}
		if err := b.Destroy(context.Background()); err != nil {
			t.Error(err)
		}
		if testenv.Exists("/sys/fs/cgroup/memory/"+name) || testenv.Exists("/sys/fs/cgroup/"+name) {
			t.Errorf("cgroup parent %s survived Destroy", name)
		}
	})
	return b
}

// testWriter sends log output to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var instSeq atomic.Int64

func spec(t testing.TB, runtimeName, handler string, mod ...func(*function.Spec)) *function.Spec {
	t.Helper()
	s := function.Defaults(function.Baseline{})
	s.Name, s.Runtime, s.Handler = "fn", runtimeName, handler
	for _, f := range mod {
		f(&s)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return &s
}

func start(t testing.TB, b *Backend, s *function.Spec, files map[string]string) sandbox.Instance {
	t.Helper()
	if s.Runtime == function.RuntimePython {
		testenv.RequireFile(t, "/usr/bin/python3", "python3")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, err := b.Start(ctx, sandbox.StartOptions{
		ID: fmt.Sprintf("i%d", instSeq.Add(1)), Spec: s, CodeDir: codeDir(t, files),
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = inst.Close() })
	return inst
}

func invoke(t testing.TB, inst sandbox.Instance, body string, timeout time.Duration) (*sandbox.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return inst.Invoke(ctx, &sandbox.Request{Method: "POST", Path: "/", Body: []byte(body)})
}

const pyHandler = `
import os, socket
def handle(req):
    if req.text == "oom":
        b = b"x" * (200 << 20)
        return len(b)
    if req.text == "exit":
        os._exit(3)
    if req.text == "sleep":
        import time; time.sleep(60)
    return {"uid": os.getuid(), "pid": os.getpid(), "host": socket.gethostname(),
            "env": os.environ.get("GREETING"), "fn": os.environ.get("WISP_FUNCTION"),
            "cwd": os.getcwd(), "echo": req.text}
`

func TestBackendPython(t *testing.T) {
	b := testBackend(t)
	s := spec(t, "python3", "handler.py", func(s *function.Spec) { s.Environment = []string{"GREETING=hi"} })
	inst := start(t, b, s, map[string]string{"handler.py": pyHandler})
	resp, err := invoke(t, inst, "hello", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		UID  int    `json:"uid"`
		PID  int    `json:"pid"`
		Host string `json:"host"`
		Env  string `json:"env"`
		Fn   string `json:"fn"`
		Cwd  string `json:"cwd"`
		Echo string `json:"echo"`
	}
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatalf("body %q: %v", resp.Body, err)
	}
	inUID := inst.(*instance).uid
	if got.UID != inUID || got.PID != 1 || got.Host != hostname(inst.ID()) || got.Env != "hi" ||
		got.Fn != "fn" || got.Cwd != "/tmp" || got.Echo != "hello" {
		t.Errorf("handler saw %+v; want uid %d, pid 1, its hostname, env, /tmp", got, inUID)
	}
	if u := inst.Usage(); u.CPUTime <= 0 || u.MemoryBytes <= 0 {
		t.Errorf("usage %+v", u)
	}
	if n := b.uids.inUse(); n != 1 {
		t.Errorf("%d uids in use", n)
	}
	// /tmp is capped at half the memory limit: a handler filling it gets
	// ENOSPC, not an OOM kill.
	tmpSpec := spec(t, "python3", "handler.py", func(s *function.Spec) { s.Memory = 64 << 20 })
	tmpInst := start(t, b, tmpSpec, map[string]string{"handler.py": `
import errno
def handle(req):
    try:
        with open("/tmp/big", "wb") as f:
            for _ in range(100):
                f.write(b"x" * (1 << 20))
        return "wrote 100 MB"
    except OSError as e:
        return errno.errorcode[e.errno]
`})
	if resp, err := invoke(t, tmpInst, "", 10*time.Second); err != nil || string(resp.Body) != "ENOSPC" {
		t.Errorf("filling /tmp in a 64Mi sandbox: %v %v, want ENOSPC", resp, err)
	}
	_ = tmpInst.Close()

	if err := inst.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Done():
	case <-time.After(time.Second):
		t.Error("Done not closed after Close")
	}
	if n := b.uids.inUse(); n != 0 {
		t.Errorf("%d uids in use after close", n)
	}
	if err := inst.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestBackendCrashes(t *testing.T) {
	b := testBackend(t)
	tests := []struct {
		name, body string
		kind       error
		msg        string
	}{
		{"memory", "oom", errdefs.ErrCrashed, "memory limit 64Mi exceeded"},
		{"exit", "exit", errdefs.ErrCrashed, "runtime host exited with status 3"},
		{"timeout", "sleep", errdefs.ErrTimeout, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, "python3", "handler.py", func(s *function.Spec) { s.Memory = 64 << 20 })
			inst := start(t, b, s, map[string]string{"handler.py": pyHandler})
			_, err := invoke(t, inst, tc.body, 2*time.Second)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v with %q", err, tc.kind, tc.msg)
			}
			if tc.kind == errdefs.ErrCrashed && errdefs.Hint(err) == "" {
				t.Errorf("no hint on %v", err)
			}
			select {
			case <-inst.Done():
			case <-time.After(5 * time.Second):
				t.Error("Done not closed after the sandbox died")
			}
			if tc.name == "memory" && inst.Usage().OOMKills == 0 {
				t.Errorf("usage shows no OOM kill: %+v", inst.Usage())
			}
		})
	}
}

func TestBackendLoadError(t *testing.T) {
	b := testBackend(t)
	testenv.RequireFile(t, "/usr/bin/python3", "python3")
	s := spec(t, "python3", "handler.py")
	_, err := b.Start(context.Background(), sandbox.StartOptions{
		ID: "bad", Spec: s, CodeDir: codeDir(t, map[string]string{"handler.py": "def handle(req:\n"}),
	})
	if !errors.Is(err, errdefs.ErrCrashed) || !strings.Contains(err.Error(), "SyntaxError") {
		t.Fatalf("err = %v, want ErrCrashed with the SyntaxError", err)
	}
	if n := b.uids.inUse(); n != 0 {
		t.Errorf("%d uids in use after a failed start", n)
	}
}

func TestBackendExec(t *testing.T) {
	for _, level := range []string{IsolationStrict, IsolationLightweight} {
		t.Run(level, func(t *testing.T) {
			b := testBackend(t, func(c *Config) { c.IsolationLevel = level })
			s := spec(t, "exec", "./handler.sh", func(s *function.Spec) {
				s.Memory = 128 << 20
				s.Concurrency = 2
			})
			inst := start(t, b, s, map[string]string{
				// A background grandchild that outlives the call exercises
				// the init's reaper.
				"handler.sh": "#!/bin/sh\n(sleep 0.01 &) ; echo \"$(id -u) $(cat) $Http_Method $$\"; grep Seccomp: /proc/self/status; " +
					"cd /proc/self/fd && echo fds *\n",
			})
			for i := range 3 {
				resp, err := invoke(t, inst, fmt.Sprintf("call%d", i), 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				f := strings.Fields(string(resp.Body))
				wantSeccomp := map[string]string{IsolationStrict: "2", IsolationLightweight: "0"}[level]
				if resp.Status != 200 || len(f) < 6 || f[0] != fmt.Sprint(inst.(*instance).uid) ||
					f[1] != fmt.Sprintf("call%d", i) || f[2] != "POST" || f[5] != wantSeccomp {
					t.Errorf("response %d %q", resp.Status, resp.Body)
				}
				// stdin, stdout, stderr, the directory the glob reads (3,
				// the lowest free fd) and dash's script fd (10): not the
				// channel's pipes, which would hold 3 and 4.
				if len(f) < 7 || f[6] != "fds" || len(f[7:]) > 5 || slices.Contains(f[7:], "4") {
					t.Errorf("handler's open fds: %q", f[6:])
				}
			}
			time.Sleep(100 * time.Millisecond)
			// Only the resident init is left: the handlers and their
			// orphans are gone, reaped rather than left as zombies (which
			// cgroup.procs would not list, but /proc does).
			if n := processesOf(inst.(*instance).uid); n != 1 {
				t.Errorf("%d processes of the sandbox's uid after the calls, want the init alone", n)
			}
		})
	}
}

func TestBackendCheck(t *testing.T) {
	b := testBackend(t)
	if err := b.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v (hint: %s)", err, errdefs.Hint(err))
	}
}

func TestNewValidates(t *testing.T) {
	tests := []Config{
		{IsolationLevel: "paranoid"},
		{UIDBase: 10},
		{TmpSize: 10},
		{NamespaceTypes: []string{"pid", "mount", "user"}},
	}
	for _, cfg := range tests {
		if _, err := New(cfg, nil); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("New(%+v) err = %v, want ErrInvalid", cfg, err)
		}
	}
}

func TestUIDPool(t *testing.T) {
	p := newUIDPool(1000, 3)
	var got []int
	for range 3 {
		uid, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, uid)
	}
	if fmt.Sprint(got) != "[1000 1001 1002]" {
		t.Errorf("uids %v", got)
	}
	if _, err := p.get(); !errors.Is(err, errdefs.ErrLimit) {
		t.Errorf("exhausted pool: err = %v, want ErrLimit", err)
	}
	p.put(1001)
	if uid, _ := p.get(); uid != 1001 {
		t.Errorf("after put(1001), get = %d", uid)
	}
	p.put(1000)
	p.put(1002)
	if uid, _ := p.get(); uid != 1002 { // round robin: the next after 1001
		t.Errorf("round robin: get = %d, want 1002", uid)
	}
}

func BenchmarkColdStartPython(b *testing.B) {
	testenv.RequireFile(b, "/usr/bin/python3", "python3")
	be := testBackend(b)
	s := spec(b, "python3", "handler.py")
	code := codeDir(b, map[string]string{"handler.py": "def handle(req):\n    return 'hello'\n"})
	var durs []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		inst, err := be.Start(context.Background(), sandbox.StartOptions{ID: fmt.Sprintf("cold-%d", i), Spec: s, CodeDir: code})
		if err != nil {
			b.Fatal(err)
		}
		resp, err := inst.Invoke(context.Background(), &sandbox.Request{Method: "GET", Path: "/"})
		if err != nil || string(resp.Body) != "hello" {
			b.Fatalf("invoke: %v %v", resp, err)
		}
		durs = append(durs, time.Since(start))
		if err := inst.Close(); err != nil {
			b.Fatal(err)
		}
	}
	reportPercentiles(b, durs)
}
