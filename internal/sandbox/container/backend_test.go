package container

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/testenv"
)

func start(t *testing.T, b *Backend, s *function.Spec, code string) sandbox.Instance {
	t.Helper()
	inst, err := b.Start(timeout(t, 3*time.Minute), sandbox.StartOptions{ID: instanceID(), Spec: s, CodeDir: code})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := inst.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return inst
}

func invoke(t *testing.T, inst sandbox.Instance, body string) *sandbox.Response {
	t.Helper()
	resp, err := inst.Invoke(timeout(t, time.Minute), &sandbox.Request{Method: "POST", Path: "/", Body: []byte(body)})
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	return resp
}

func TestCheckWithoutContainerd(t *testing.T) {
	testenv.RequireRoot(t)
	b, err := New(Options{Address: filepath.Join(t.TempDir(), "containerd.sock"), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Check(context.Background())
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Check = %v, want an ErrUnavailable error", err)
	}
	for _, want := range []string{"containerd is not running at", "apt-get install containerd runc", "containerd &"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check's error %q does not say %q", err, want)
		}
	}
	if errdefs.Hint(err) == "" {
		t.Errorf("Check's error has no hint")
	}
}

func TestCheck(t *testing.T) {
	b := testBackend(t)
	if err := b.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.Name() != function.ModeContainer {
		t.Errorf("Name = %q", b.Name())
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name, runtime, handler, file, code, body, want string
	}{
		{"python", "python3", "handler.py", "handler.py",
			"import sys\ndef handle(req):\n    return 'hello ' + req.text + ' from ' + sys.version.split()[0]\n", "ada", "hello ada from 3."},
		{"node", "node", "handler.js", "handler.js",
			"exports.handle = async (req) => 'hello ' + req.text() + ' from ' + process.version;\n", "grace", "hello grace from v"},
		{"exec", "exec", "tr a-z A-Z", "unused", "", "quiet please", "QUIET PLEASE"},
	}
	b := testBackend(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.runtime == "node" {
				testenv.RequireFile(t, "/usr/bin/node", "nodejs")
			}
			code := codeDir(t, map[string]string{tc.file: tc.code})
			inst := start(t, b, spec(t, tc.runtime, tc.handler), code)
			resp := invoke(t, inst, tc.body)
			if resp.Status != 200 || !strings.HasPrefix(string(resp.Body), tc.want) {
				t.Fatalf("got %d %q (error %q, logs %q), want 200 %q...", resp.Status, resp.Body, resp.Error, resp.Logs, tc.want)
			}
			if u := inst.Usage(); u.MemoryBytes == 0 {
				t.Errorf("Usage = %+v, want memory in use", u)
			}
		})
	}
}

func TestWarmReuse(t *testing.T) {
	b := testBackend(t)
	code := codeDir(t, map[string]string{"handler.py": "import os\nn = 0\ndef handle(req):\n    global n\n    n += 1\n    return '%d %d' % (n, os.getpid())\n"})
	inst := start(t, b, spec(t, "python3", "handler.py"), code)
	var first string
	for i := 1; i <= 3; i++ {
		resp := invoke(t, inst, "")
		n, pid, _ := strings.Cut(string(resp.Body), " ")
		if n != string(rune('0'+i)) {
			t.Fatalf("call %d: counter %q: the instance was not reused", i, resp.Body)
		}
		if first == "" {
			first = pid
		} else if pid != first {
			t.Fatalf("call %d ran in pid %s, earlier ones in %s", i, pid, first)
		}
	}
}

// probe reports what a handler sees of its container.
const probe = `
import os, json, socket
def can_write(path):
    try:
        with open(path, 'w') as f:
            f.write('x')
        return True
    except OSError:
        return False
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return line.split(':', 1)[1].strip()
def handle(req):
    return {
        'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),
        'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),
        'write_root': can_write('/probe'), 'write_code': can_write('/code/probe'),
        'write_etc': can_write('/etc/probe'), 'write_tmp': can_write('/tmp/probe'),
        'interfaces': sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]),
        'cap_eff': status('CapEff'), 'cap_bnd': status('CapBnd'),
        'no_new_privs': status('NoNewPrivs'), 'seccomp': status('Seccomp'),
        'hostname': socket.gethostname(), 'home': os.listdir('/'),
    }
`

func TestIsolation(t *testing.T) {
	b := testBackend(t)
	inst := start(t, b, spec(t, "python3", "handler.py"), codeDir(t, map[string]string{"handler.py": probe}))
	resp := invoke(t, inst, "")
	if resp.Status != 200 {
		t.Fatalf("probe: %d %s %s", resp.Status, resp.Error, resp.Logs)
	}
	var got struct {
		UID, GID                                      int
		Groups                                        []int
		Pids                                          []int
		WriteRoot, WriteCode, WriteEtc, WriteTmp      bool `json:"-"`
		Interfaces                                    []string
		CapEff, CapBnd, NoNewPrivs, Seccomp, Hostname string
		Home                                          []string
	}
	raw := map[string]json.RawMessage{}
	if err := json.Unmarshal(resp.Body, &raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatal(err)
	}
	for k, p := range map[string]*bool{"write_root": &got.WriteRoot, "write_code": &got.WriteCode, "write_etc": &got.WriteEtc, "write_tmp": &got.WriteTmp} {
		_ = json.Unmarshal(raw[k], p)
	}
	_ = json.Unmarshal(raw["cap_eff"], &got.CapEff)
	_ = json.Unmarshal(raw["cap_bnd"], &got.CapBnd)
	_ = json.Unmarshal(raw["no_new_privs"], &got.NoNewPrivs)
	t.Logf("probe: %s", resp.Body)
	checks := []struct {
		what string
		ok   bool
	}{
		{"runs as a non-root uid", got.UID >= DefaultUIDBase-100000 && got.UID != 0 && got.GID != 0},
		{"no supplementary groups", len(got.Groups) == 0},
		{"other processes invisible (the shim, pid 1, and the host)", len(got.Pids) == 2 && got.Pids[0] == 1},
		{"root file system read-only", !got.WriteRoot && !got.WriteEtc},
		{"code read-only", !got.WriteCode},
		{"/tmp writable", got.WriteTmp},
		{"no network but loopback", len(got.Interfaces) == 1 && got.Interfaces[0] == "lo"},
		{"no effective capabilities", got.CapEff == "0000000000000000"},
		{"empty bounding set", got.CapBnd == "0000000000000000"},
		{"no_new_privs", got.NoNewPrivs == "1"},
		{"seccomp filter", got.Seccomp == "2"},
		{"own host name", strings.HasPrefix(got.Hostname, "wisp-")},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("isolation: not %s", c.what)
		}
	}
	hostname, _ := os.Hostname()
	if got.Hostname == hostname {
		t.Errorf("container sees the host's name %q", hostname)
	}
}

func TestHostNetwork(t *testing.T) {
	b := testBackend(t)
	s := spec(t, "python3", "handler.py", func(s *function.Spec) { s.Network = function.NetworkHost })
	inst := start(t, b, s, codeDir(t, map[string]string{"handler.py": probe}))
	resp := invoke(t, inst, "")
	var got struct{ Interfaces []string }
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Interfaces) < 2 {
		t.Errorf("network host: interfaces %v, want the host's", got.Interfaces)
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name    string
		code    string
		memory  function.Size
		timeout time.Duration
		kind    error
		want    string
	}{
		{"memory limit", "def handle(req):\n    x = []\n    while True:\n        x.append(bytearray(8 << 20))\n",
			32 << 20, time.Minute, errdefs.ErrCrashed, "memory limit 32Mi exceeded"},
		{"timeout", "import time\ndef handle(req):\n    time.sleep(60)\n", 0, 500 * time.Millisecond, errdefs.ErrTimeout, "timeout"},
		{"crash", "import os\ndef handle(req):\n    os._exit(3)\n", 0, time.Minute, errdefs.ErrCrashed, "exit status 3"},
		{"killed", "import os, signal\ndef handle(req):\n    os.kill(os.getpid(), signal.SIGSEGV)\n", 0, time.Minute, errdefs.ErrCrashed, "killed by signal 11"},
	}
	b := testBackend(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(t, "python3", "handler.py", func(s *function.Spec) {
				if tc.memory != 0 {
					s.Memory = tc.memory
				}
			})
			inst := start(t, b, s, codeDir(t, map[string]string{"handler.py": tc.code}))
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			_, err := inst.Invoke(ctx, &sandbox.Request{Method: "GET", Path: "/"})
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Invoke = %v, want a %v error saying %q", err, tc.kind, tc.want)
			}
			select {
			case <-inst.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("Done not closed after the instance died")
			}
		})
	}
}

func TestLoadError(t *testing.T) {
	b := testBackend(t)
	_, err := b.Start(timeout(t, time.Minute), sandbox.StartOptions{ID: instanceID(),
		Spec: spec(t, "python3", "handler.py"), CodeDir: codeDir(t, map[string]string{"handler.py": "def handle(req:\n"})})
	if !errors.Is(err, errdefs.ErrCrashed) || !strings.Contains(err.Error(), "SyntaxError") {
		t.Fatalf("Start = %v, want a crash saying SyntaxError", err)
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	b := testBackend(t)
	inst := start(t, b, spec(t, "python3", "handler.py"), codeDir(t, map[string]string{"handler.py": "def handle(req):\n    return 'x'\n"}))
	invoke(t, inst, "")
	c := inst.(*instance)
	dir, group := c.dir, c.group.Dir()
	if err := inst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := inst.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if left := leftovers(t, testNamespace); left != "" {
		t.Errorf("after Close: %s", left)
	}
	for _, p := range []string{dir, group} {
		if testenv.Exists(p) {
			t.Errorf("%s survived Close", p)
		}
	}
}

func TestCleanupRemovesOrphans(t *testing.T) {
	crashed := testBackend(t)
	code := codeDir(t, map[string]string{"handler.py": "def handle(req):\n    return 'x'\n"})
	// An instance whose server "crashed": never closed.
	if _, err := crashed.Start(timeout(t, time.Minute), sandbox.StartOptions{ID: instanceID(),
		Spec: spec(t, "python3", "handler.py"), CodeDir: code}); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, testNamespace); left == "" {
		t.Fatal("no container to clean up")
	}
	next := testBackend(t, func(o *Options) { o.CgroupParent = crashed.opts.CgroupParent; o.StateDir = crashed.opts.StateDir })
	if err := next.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, testNamespace); left != "" {
		t.Errorf("after Cleanup: %s", left)
	}
	if testenv.Exists(filepath.Join(crashed.opts.StateDir, "run")) {
		t.Error("instance directories survived Cleanup")
	}
}

func TestSpares(t *testing.T) {
	b := testBackend(t, func(o *Options) { o.Spares = 1; o.TmpSize = 16 << 20 })
	code := codeDir(t, map[string]string{"handler.py": "import os\ndef handle(req):\n    return os.environ.get('GREETING', '') + ' ' + open('/code/data.txt').read()\n",
		"data.txt": "from the stage"})
	s := spec(t, "python3", "handler.py", func(s *function.Spec) {
		s.Environment = []string{"GREETING=hi"}
		s.Memory = 96 << 20
	})
	if err := b.Prepare(context.Background(), "python3"); err != nil {
		t.Fatal(err)
	}
	inst := start(t, b, s, code)
	c := inst.(*instance)
	if !c.stages.Spare {
		t.Fatalf("started on demand although a spare was being made: %+v", c.stages)
	}
	resp := invoke(t, inst, "")
	if string(resp.Body) != "hi from the stage" {
		t.Fatalf("got %q", resp.Body)
	}
	lim, err := os.ReadFile(filepath.Join(c.group.Dir(), memoryLimitFile(c.group.Dir())))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(lim)) != "100663296" {
		t.Errorf("memory limit of the claimed spare = %s, want 96Mi", lim)
	}
	t.Logf("stages %+v", c.stages)
}

func memoryLimitFile(dir string) string {
	if testenv.Exists(filepath.Join(dir, "memory.max")) {
		return "memory.max"
	}
	return "memory.limit_in_bytes"
}

// TestRuntimes runs a call under each OCI runtime that is installed. crun
// refuses hybrid cgroup hosts (v1 hierarchies plus cgroup2 beside them):
// there Check must say so.
func TestRuntimes(t *testing.T) {
	for _, rt := range []string{"runc", "crun"} {
		t.Run(rt, func(t *testing.T) {
			testenv.RequireFile(t, "/usr/bin/"+rt, rt)
			b := testBackend(t, func(o *Options) { o.Runtime = rt })
			err := b.Check(context.Background())
			cg, _ := b.cgroups()
			if rt == "crun" && cg != nil && hybridCgroups(cg) {
				if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "hybrid") {
					t.Fatalf("Check with crun on a hybrid host = %v, want ErrUnavailable naming the hybrid layout", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			inst := start(t, b, spec(t, "python3", "handler.py"), codeDir(t, map[string]string{"handler.py": "def handle(req):\n    return 'ok'\n"}))
			if resp := invoke(t, inst, ""); string(resp.Body) != "ok" {
				t.Fatalf("got %q", resp.Body)
			}
		})
	}
}
