package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// zygoteBackend returns a test backend with zygotes on and the python3
// zygote ready.
func zygoteBackend(t testing.TB, mod ...func(*Config)) *Backend {
	t.Helper()
	testenv.RequireFile(t, "/usr/bin/python3", "python3")
	b := testBackend(t, append([]func(*Config){func(c *Config) { c.Zygote = true }}, mod...)...)
	// Before testBackend's check that no cgroup is left: the zygote's is
	// one until it stops.
	t.Cleanup(b.zygotes.closeAll)
	waitZygote(t, b, function.RuntimePython)
	return b
}

// waitZygote waits until rt's zygote is ready and returns it.
func waitZygote(t testing.TB, b *Backend, rt string) *zygote {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if z := b.zygotes.get(b, rt); z != nil {
			return z
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s zygote after 30s", rt)
	return nil
}

// startForked starts an instance and fails unless it was forked from a
// zygote.
func startForked(t testing.TB, b *Backend, s *function.Spec, files map[string]string) *instance {
	t.Helper()
	inst := start(t, b, s, files).(*instance)
	if inst.sb.zc == nil {
		t.Fatal("instance was not forked from the zygote")
	}
	return inst
}

// isolationHandler answers the check named by the request body.
const isolationHandler = `
import ctypes, errno, os, signal, socket
libc = ctypes.CDLL(None, use_errno=True)

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return line.split()[1]

def errname(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]

def syscall_err(ret):
    return "ok" if ret == 0 else errno.errorcode[ctypes.get_errno()]

def write(path):
    def f():
        with open(path, "w") as fh:
            fh.write("x")
    return errname(f)

def handle(req):
    what = req.text
    if what == "pids":
        return " ".join(sorted(p for p in os.listdir("/proc") if p.isdigit()))
    if what == "ids":
        return "%d %d %s" % (os.getuid(), os.getgid(), os.getgroups())
    if what in ("CapEff", "CapBnd", "CapPrm", "NoNewPrivs", "Seccomp"):
        return status(what)
    if what.startswith("write "):
        return write(what[6:])
    if what.startswith("exists "):
        return str(os.path.exists(what[7:]))
    if what == "root":
        return " ".join(sorted(os.listdir("/")))
    if what == "code":
        return " ".join(sorted(os.listdir("/code")))
    if what == "mount":
        return syscall_err(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
    if what == "unshare":
        return syscall_err(libc.unshare(0x00020000))
    if what == "nets":
        return " ".join(n for _, n in socket.if_nameindex())
    if what == "mounts":
        ms = [l.split()[:2] for l in open("/proc/self/mounts")]
        return " ".join(sorted(mp + ":" + ("code" if mp == "/code" else src)
                               for src, mp in ms if mp in ("/tmp", "/dev/shm", "/proc", "/code")))
    if what.startswith("kill "):
        return errname(lambda: os.kill(int(what[5:]), signal.SIGKILL))
    if what.startswith("put "):
        name, _, data = what[4:].partition("=")
        with open(name, "w") as f:
            f.write(data)
        return "ok"
    return "unknown check " + what
`

func TestZygoteIsolation(t *testing.T) {
	b := zygoteBackend(t)
	s := spec(t, "python3", "handler.py")
	inst := startForked(t, b, s, map[string]string{"handler.py": isolationHandler})
	uid := inst.uid
	tests := []struct{ check, want string }{
		{"pids", "1"}, // its own PID namespace, alone in it
		{"ids", fmt.Sprintf("%d %d []", uid, uid)},
		{"CapEff", "0000000000000000"},
		{"CapPrm", "0000000000000000"},
		{"CapBnd", "0000000000000000"},
		{"NoNewPrivs", "1"},
		{"Seccomp", "2"},
		{"write /tmp/x", "ok"},
		{"write /dev/shm/x", "ok"},
		{"write /x", "EROFS"},
		{"write /code/x", "EROFS"},
		{"write /wisp/x", "EROFS"},
		{"write /etc/passwd", "EROFS"},
		{"write /usr/x", "EROFS"},
		{"exists /root", "False"},
		{"exists /home", "False"},
		{"exists /var", "False"},
		{"exists /sys", "False"},
		{"exists /wisp/python/host.py", "True"},
		{"code", "handler.py"}, // its own code only
		{"mount", "EPERM"},
		{"unshare", "EPERM"},
		{"nets", "lo"},
		// Its own, and nothing of the zygote's left below them (its /proc
		// shows the host's PID namespace).
		{"mounts", "/code:code /dev/shm:wisp-shm /proc:proc /tmp:wisp-tmp"},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.check, "/", "_"), func(t *testing.T) {
			resp, err := invoke(t, inst, tc.check, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(resp.Body); got != tc.want {
				t.Errorf("%s = %q, want %q (error %q)", tc.check, got, tc.want, resp.Error)
			}
		})
	}
	// The root holds what the sandbox init's does, nothing of the zygote's.
	resp, err := invoke(t, inst, "root", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range strings.Fields(string(resp.Body)) {
		if !slices.Contains([]string{"bin", "code", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr", "wisp"}, d) {
			t.Errorf("unexpected %s in the sandbox's root %q", d, resp.Body)
		}
	}
	if st := inst.StartStages(); st.Sandbox <= 0 || st.Import <= 0 || st.Provisioned {
		t.Errorf("start stages %+v", st)
	}
}

func TestZygotePython(t *testing.T) {
	b := zygoteBackend(t)
	s := spec(t, "python3", "handler.py", func(s *function.Spec) { s.Environment = []string{"GREETING=hi"} })
	inst := startForked(t, b, s, map[string]string{"handler.py": pyHandler})
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
	if got.UID != inst.uid || got.PID != 1 || got.Host != hostname(inst.ID()) || got.Env != "hi" ||
		got.Fn != "fn" || got.Cwd != "/tmp" || got.Echo != "hello" {
		t.Errorf("handler saw %+v; want uid %d, pid 1, its hostname, env, /tmp", got, inst.uid)
	}
	if u := inst.Usage(); u.CPUTime <= 0 || u.MemoryBytes <= 0 {
		t.Errorf("usage %+v: the child is not charged to its cgroup", u)
	}
	// /tmp is capped at half the memory limit, as on demand.
	tmpSpec := spec(t, "python3", "handler.py", func(s *function.Spec) { s.Memory = 64 << 20 })
	tmpInst := startForked(t, b, tmpSpec, map[string]string{"handler.py": `
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
	if n := processesOf(inst.uid); n != 0 {
		t.Errorf("%d processes of the instance's uid after close", n)
	}
}

func TestZygoteCrashes(t *testing.T) {
	b := zygoteBackend(t)
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
			inst := startForked(t, b, s, map[string]string{"handler.py": pyHandler})
			_, err := invoke(t, inst, tc.body, 2*time.Second)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v with %q", err, tc.kind, tc.msg)
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
	// The zygote survives its children's deaths.
	if z := b.zygotes.get(b, "python3"); z == nil {
		t.Error("zygote gone after its children crashed")
	}
}

func TestZygoteLoadError(t *testing.T) {
	b := zygoteBackend(t)
	_, err := b.Start(context.Background(), sandbox.StartOptions{
		ID: "bad", Spec: spec(t, "python3", "handler.py"), CodeDir: codeDir(t, map[string]string{"handler.py": "def handle(req:\n"}),
	})
	if !errors.Is(err, errdefs.ErrCrashed) || !strings.Contains(err.Error(), "SyntaxError") {
		t.Fatalf("err = %v, want ErrCrashed with the SyntaxError", err)
	}
	if n := b.uids.inUse(); n != 0 {
		t.Errorf("%d uids in use after a failed start", n)
	}
}

// TestZygoteNeighbours: two functions forked from the same zygote share
// nothing they could use to see or signal each other.
func TestZygoteNeighbours(t *testing.T) {
	b := zygoteBackend(t)
	s := spec(t, "python3", "handler.py")
	a := startForked(t, b, s, map[string]string{"handler.py": isolationHandler, "a-only.txt": "a"})
	c := startForked(t, b, s, map[string]string{"handler.py": isolationHandler, "c-only.txt": "c"})
	if a.uid == c.uid {
		t.Fatalf("both run as uid %d", a.uid)
	}
	ask := func(inst *instance, what string) string {
		t.Helper()
		resp, err := invoke(t, inst, what, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return string(resp.Body)
	}
	for _, p := range []string{"/tmp/secret", "/dev/shm/secret"} {
		if got := ask(a, "put "+p+"=a's"); got != "ok" {
			t.Fatalf("a writes %s: %s", p, got)
		}
		if got := ask(c, "exists "+p); got != "False" {
			t.Errorf("c sees a's %s", p)
		}
	}
	if got := ask(c, "code"); got != "c-only.txt handler.py" {
		t.Errorf("c's /code holds %q", got)
	}
	if got := ask(c, "pids"); got != "1" {
		t.Errorf("c sees pids %q", got)
	}
	// a's pid as the host sees it, and as a sees itself: neither names a
	// process c can signal.
	for _, pid := range []int{a.sb.Pid(), 1 + 1} {
		if got := ask(c, fmt.Sprintf("kill %d", pid)); got != "ESRCH" {
			t.Errorf("c kills pid %d: %s, want ESRCH", pid, got)
		}
	}
	if got := ask(a, "pids"); got != "1" {
		t.Errorf("a sees pids %q after c's attempts", got)
	}
}

// TestZygoteRebuilt: a zygote that dies takes its children with it, is
// rebuilt, and cold starts fall back to the ordinary path meanwhile.
func TestZygoteRebuilt(t *testing.T) {
	b := zygoteBackend(t)
	s := spec(t, "python3", "handler.py")
	z := waitZygote(t, b, "python3")
	inst := startForked(t, b, s, map[string]string{"handler.py": pyHandler})
	if err := syscall.Kill(z.sb.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the zygote's child outlived it")
	}
	if _, err := invoke(t, inst, "x", 5*time.Second); !errors.Is(err, errdefs.ErrCrashed) {
		t.Errorf("call to a child of a dead zygote: %v, want ErrCrashed", err)
	}
	// Until the new zygote is ready, starts take the ordinary path.
	plain := start(t, b, s, map[string]string{"handler.py": pyHandler}).(*instance)
	if _, err := invoke(t, plain, "x", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	z2 := waitZygote(t, b, "python3")
	if z2 == z || z2.sb.Pid() == z.sb.Pid() {
		t.Fatal("zygote not rebuilt")
	}
	again := startForked(t, b, s, map[string]string{"handler.py": pyHandler})
	if _, err := invoke(t, again, "x", 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestZygoteHostNetworkAndLightweight(t *testing.T) {
	tests := []struct {
		name    string
		level   string
		network string
		seccomp string
		nets    func(string) bool
	}{
		{"strict host network", IsolationStrict, function.NetworkHost, "2", func(n string) bool { return n != "lo" }},
		{"lightweight", IsolationLightweight, function.NetworkNone, "0", func(n string) bool { return n != "lo" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := zygoteBackend(t, func(c *Config) { c.IsolationLevel = tc.level })
			s := spec(t, "python3", "handler.py", func(s *function.Spec) { s.Network = tc.network })
			inst := startForked(t, b, s, map[string]string{"handler.py": isolationHandler})
			for check, want := range map[string]string{"Seccomp": tc.seccomp, "NoNewPrivs": "1", "CapBnd": "0000000000000000", "pids": "1"} {
				resp, err := invoke(t, inst, check, 10*time.Second)
				if err != nil || string(resp.Body) != want {
					t.Errorf("%s = %v %v, want %q", check, resp, err, want)
				}
			}
			resp, err := invoke(t, inst, "nets", 10*time.Second)
			if err != nil || !tc.nets(string(resp.Body)) {
				t.Errorf("interfaces %v %v: want the host's", resp, err)
			}
		})
	}
}

// TestZygoteSeccompPrograms: the filters sent to the zygote are whole
// struct sock_filter arrays.
func TestZygoteSeccompPrograms(t *testing.T) {
	progs, err := seccompPrograms()
	if err != nil {
		t.Fatal(err)
	}
	if len(progs) != 2 {
		t.Fatalf("%d programs, want the policy and the ABI guard", len(progs))
	}
	for _, p := range progs {
		if len(p) == 0 {
			t.Error("empty program")
		}
	}
}

// The function's code, from its first line at import, runs inside the
// instance's own cgroup: the child is born in it (v2) or joins it before
// it reads the load frame (v1), and the load frame is sent with the fork
// request rather than after a move.
func TestZygoteChildInCgroupBeforeImport(t *testing.T) {
	b := zygoteBackend(t)
	s := spec(t, "python3", "handler.py")
	inst := startForked(t, b, s, map[string]string{"handler.py": `
AT_IMPORT = open("/proc/self/cgroup").read()
def handle(req):
    return AT_IMPORT
`})
	defer inst.Close()
	resp, err := invoke(t, inst, "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// v2: the one line "0::/wisp-x/ID". v1: a line per hierarchy
	// ("4:memory:/wisp-x/ID"), and those wisp limits (memory, cpu, pids)
	// must name the instance's group; on a hybrid host the unified "0::"
	// line is not one of them.
	lines := strings.Split(strings.TrimSpace(string(resp.Body)), "\n")
	checked := 0
	for _, l := range lines {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			t.Fatalf("/proc/self/cgroup line %q", l)
		}
		ctrls := strings.Split(f[1], ",")
		limited := len(lines) == 1 || slices.Contains(ctrls, "memory") || slices.Contains(ctrls, "pids") || slices.Contains(ctrls, "cpu")
		if !limited {
			continue
		}
		checked++
		if !strings.HasSuffix(f[2], "/"+inst.ID()) {
			t.Errorf("at import, cgroup %q is not the instance's (%s)", l, inst.ID())
		}
	}
	if checked == 0 {
		t.Fatalf("no limited hierarchy in /proc/self/cgroup:\n%s", resp.Body)
	}
}
