package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/sandbox/cgroup"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// TestIsolation runs shell probes in a strict sandbox and checks what they
// see. Each probe prints one line per check.
func TestIsolation(t *testing.T) {
	testenv.RequireCgroups(t)
	code := codeDir(t, map[string]string{"handler.sh": "echo hi\n"})
	other := codeDir(t, map[string]string{"secret.py": "KEY = 'other function'\n"})
	tests := []struct {
		name   string
		script string
		mod    func(*SpawnConfig)
		want   []string // stdout lines, in order
	}{
		{
			name: "own PID namespace: the shell is PID 1 and alone",
			// Shell builtins only, so that no helper process shows up.
			script: `echo $$; for p in /proc/[0-9]*; do echo "proc ${p#/proc/}"; done; cat /proc/1/cmdline | tr '\0' ' '; echo`,
			want:   []string{"1", "proc 1", "/bin/sh -c " + `echo $$; for p in /proc/[0-9]*; do echo "proc ${p#/proc/}"; done; cat /proc/1/cmdline | tr '\0' ' '; echo`},
		},
		{
			name:   "unprivileged uid, no groups",
			script: `id -u; id -g; id -G`,
			mod:    func(c *SpawnConfig) { c.UID, c.GID = 261234, 261235 },
			want:   []string{"261234", "261235", "261235"},
		},
		{
			name:   "no capabilities, no_new_privs, seccomp filter",
			script: `grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status | tr -s '\t ' ' '`,
			want: []string{
				"CapInh: 0000000000000000", "CapPrm: 0000000000000000", "CapEff: 0000000000000000",
				"CapBnd: 0000000000000000", "CapAmb: 0000000000000000", "NoNewPrivs: 1", "Seccomp: 2",
			},
		},
		{
			name: "read-only everywhere but /tmp",
			script: `for f in /x /usr/x /etc/x /code/x /wisp/x /dev/x /proc/x; do touch $f 2>/dev/null && echo "$f writable" || echo "$f ro"; done
				touch /tmp/x && echo "/tmp writable"; stat -c %a /tmp`,
			mod: func(c *SpawnConfig) { c.CodeDir, c.RuntimeDir = code, code },
			want: []string{"/x ro", "/usr/x ro", "/etc/x ro", "/code/x ro", "/wisp/x ro", "/dev/x ro", "/proc/x ro",
				"/tmp writable", "1777"},
		},
		{
			name:   "/tmp is size-limited",
			script: `dd if=/dev/zero of=/tmp/big bs=1M count=4 2>&1 | grep -o 'No space left on device' | head -1; rm /tmp/big; dd if=/dev/zero of=/tmp/small bs=1M count=1 2>/dev/null && echo small ok`,
			mod:    func(c *SpawnConfig) { c.TmpSize = 2 << 20 },
			want:   []string{"No space left on device", "small ok"},
		},
		{
			name: "nothing else of the host is visible",
			script: fmt.Sprintf(`for d in /root /home /var /work /run /srv /opt /mnt /sys /boot %s %s; do test -e $d && echo "$d visible" || echo "$d absent"; done
				ls /tmp | wc -l; ls /code`, other, filepath.Dir(code)),
			mod: func(c *SpawnConfig) { c.CodeDir = code },
			want: []string{"/root absent", "/home absent", "/var absent", "/work absent", "/run absent", "/srv absent",
				"/opt absent", "/mnt absent", "/sys absent", "/boot absent", other + " absent", filepath.Dir(code) + " absent",
				"0", "handler.sh"},
		},
		{
			name:   "usrmerge symlinks and a minimal /dev",
			script: `readlink /bin; ls /dev | tr '\n' ' '; echo; head -c 4 /dev/zero | od -An -tx1 | tr -d ' '; echo x > /dev/null && echo null ok`,
			want:   []string{usrmergeBin(), "fd full null random shm stderr stdin stdout urandom zero", "00000000", "null ok"},
		},
		{
			name:   "cannot mount, cannot unshare (seccomp)",
			script: `mount -t tmpfs none /tmp 2>/dev/null || echo mount refused; unshare -U true 2>&1 | grep -o 'Operation not permitted'; unshare -n true 2>&1 | grep -o 'Operation not permitted'`,
			want:   []string{"mount refused", "Operation not permitted", "Operation not permitted"},
		},
		{
			name:   "hostname from the id",
			script: `hostname`,
			mod:    func(c *SpawnConfig) { c.ID = "Fn_Abc-123456789xyz" },
			want:   []string{"wisp-fnabc-123456"},
		},
		{
			name:   "clean environment",
			script: `env | grep -v -E '^(PWD|SHLVL|_)=' | sort`,
			mod:    func(c *SpawnConfig) { c.Env = []string{"FOO=bar", "HOME=/tmp/home"} },
			want:   []string{"FOO=bar", "HOME=/tmp/home", "LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"},
		},
		{
			name:   "cgroup namespace rooted at the sandbox's cgroup",
			script: `cut -d: -f3 /proc/self/cgroup | sort -u`,
			mod:    func(c *SpawnConfig) { c.NamespaceTypes = append(slices.Clone(DefaultNamespaceTypes), NamespaceCgroup) },
			want:   []string{"/"},
		},
		{
			name:   "starts in /tmp with core dumps off",
			script: `pwd; ulimit -c`,
			want:   []string{"/tmp", "0"},
		},
	}
	t.Setenv("WISP_HOST_SECRET", "must not leak") // the clean-environment probe would show it
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mods []func(*SpawnConfig)
			if tc.mod != nil {
				mods = append(mods, tc.mod)
			}
			r := sh(t, tc.script, mods...)
			if r.err != nil {
				t.Errorf("exit: %v (%s); stderr %q", r.err, r.sb.Reason(), r.stderr)
			}
			if got := lines(r.stdout); !slices.Equal(got, tc.want) {
				t.Errorf("stdout:\n got %q\nwant %q\nstderr %q", got, tc.want, r.stderr)
			}
		})
	}
}

func usrmergeBin() string {
	if l, err := os.Readlink("/bin"); err == nil {
		return l
	}
	return ""
}

// TestUnshareAllowedWithoutSeccomp shows that the seccomp filter, not
// something else, is what blocks unshare in a strict sandbox.
func TestUnshareAllowedWithoutSeccomp(t *testing.T) {
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err != nil || strings.TrimSpace(string(b)) == "0" {
		testenv.Missing(t, "user namespaces are disabled on this kernel (sysctl user.max_user_namespaces)")
	}
	r := sh(t, `unshare -U true && echo unshared`, func(c *SpawnConfig) { c.Seccomp = false })
	if got := lines(r.stdout); !slices.Equal(got, []string{"unshared"}) {
		t.Errorf("without seccomp: stdout %q stderr %q, want unshared", r.stdout, r.stderr)
	}
}

// netProbe reports, one line each: a connection to the sandbox's own
// loopback listener, to the host's loopback listener, to the host's
// listener on a host address, and the interfaces.
const netProbe = `
import errno, socket, sys
port, ip = int(sys.argv[1]), sys.argv[2]
def dial(addr):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect(addr); return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print("own", dial(l.getsockname()))
print("host-lo", dial(("127.0.0.1", port)))
print("host-ip", dial((ip, port)))
print("ifaces", " ".join(sorted(n for _, n in socket.if_nameindex())))
`

func TestNetwork(t *testing.T) {
	testenv.RequireCgroups(t)
	testenv.RequireFile(t, "/usr/bin/python3", "python3")
	hostIP := ""
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			hostIP = n.IP.String()
			break
		}
	}
	if hostIP == "" {
		testenv.Missing(t, "the host has no non-loopback IPv4 address to try")
	}
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	tests := []struct {
		network string
		want    []string
	}{
		{"none", []string{"own ok", "host-lo ECONNREFUSED", "host-ip ENETUNREACH", "ifaces lo"}},
		{"host", []string{"own ok", "host-lo ok", "host-ip ok"}},
	}
	for _, tc := range tests {
		t.Run(tc.network, func(t *testing.T) {
			cfg := strictConfig(t, testCgroups(t), "/usr/bin/python3", "-c", netProbe, port, hostIP)
			cfg.Network = tc.network
			r := run(t, cfg)
			got := lines(r.stdout)
			if tc.network == "host" && len(got) == 4 {
				got = got[:3] // the host's interfaces vary
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q; stderr %q", got, tc.want, r.stderr)
			}
		})
	}
}

// syscallProbe makes the raw system calls a sandbox must be refused and
// prints the errno of each.
const syscallProbe = `
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def res(r):
    return "ok" if r != -1 else errno.errorcode[ctypes.get_errno()]
print("mount", res(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)))
print("umount2", res(libc.umount2(b"/proc", 2)))
print("chroot", res(libc.chroot(b"/tmp")))
print("ptrace(TRACEME)", res(libc.ptrace(0, 0, None, None)))
print("clone3", res(libc.syscall(435, None, 0)))
# Last: in a new user namespace the process has every capability (over
# that namespace), which is why the filter refuses it.
print("unshare(CLONE_NEWUSER)", res(libc.unshare(0x10000000)))
`

func TestDeniedSyscalls(t *testing.T) {
	testenv.RequireFile(t, "/usr/bin/python3", "python3")
	tests := []struct {
		name    string
		seccomp bool
		want    []string
	}{
		{"strict", true, []string{"mount EPERM", "umount2 EPERM", "chroot EPERM", "ptrace(TRACEME) EPERM",
			"clone3 ENOSYS", "unshare(CLONE_NEWUSER) EPERM"}},
		// Without the filter the uid and missing capabilities still stop
		// mount, umount2 and chroot; unshare, ptrace and clone3 go through
		// to the kernel (clone3 without arguments: EINVAL).
		{"no seccomp", false, []string{"mount EPERM", "umount2 EPERM", "chroot EPERM", "ptrace(TRACEME) ok",
			"clone3 EINVAL", "unshare(CLONE_NEWUSER) ok"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := strictConfig(t, testCgroups(t), "/usr/bin/python3", "-c", syscallProbe)
			cfg.Seccomp = tc.seccomp
			r := run(t, cfg)
			got := lines(r.stdout)
			if !tc.seccomp && slices.Contains(got, "unshare(CLONE_NEWUSER) EPERM") {
				// Some kernels forbid unprivileged user namespaces.
				got[slices.Index(got, "unshare(CLONE_NEWUSER) EPERM")] = "unshare(CLONE_NEWUSER) ok"
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q; stderr %q", got, tc.want, r.stderr)
			}
		})
	}
}

func TestMemoryLimitOOMKill(t *testing.T) {
	testenv.RequireFile(t, "/usr/bin/python3", "python3")
	r := sh(t, "", func(c *SpawnConfig) {
		c.Argv = []string{"/usr/bin/python3", "-c", "b = b'x' * (200 << 20); print('survived', len(b))"}
		c.Limits.MemoryBytes = 64 << 20
	})
	if strings.Contains(r.stdout, "survived") {
		t.Fatalf("allocated 200 MB under a 64 MiB limit: %q", r.stdout)
	}
	if !r.sb.OOMKilled() {
		t.Errorf("OOMKilled = false; exit %v (%s), usage %+v, stderr %q", r.err, r.sb.Reason(), r.sb.Usage(), r.stderr)
	}
	if got := r.sb.Reason(); got != "killed by signal killed" {
		t.Errorf("Reason = %q, want killed by signal killed", got)
	}
	if u := r.sb.Usage(); u.MemoryPeak > 64<<20 || u.MemoryPeak < 32<<20 {
		t.Errorf("memory peak %d, want close to the 64 MiB limit", u.MemoryPeak)
	}
}

func TestForkBombIsContained(t *testing.T) {
	testenv.RequireFile(t, "/bin/bash", "bash")
	cg := testCgroups(t)
	cfg := strictConfig(t, cg, "/bin/bash", "-c", `bomb() { bomb | bomb & }; bomb; sleep 100`)
	cfg.Limits.Pids = 32
	var stderr testenv.Buffer
	cfg.Stderr = &stderr
	sb, err := Spawn(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	pids, err := sb.group.Procs()
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) > 32 || len(pids) < 16 {
		t.Errorf("%d processes in the sandbox; want the bomb to fill, and stop at, the limit of 32", len(pids))
	}
	start := time.Now()
	if err := sb.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("close took %s", d)
	}
	if ids, _ := cg.List(); len(ids) != 0 {
		t.Errorf("cgroups left after close: %v", ids)
	}
	if n := processesOf(cfg.UID); n != 0 {
		t.Errorf("%d processes of uid %d survived close", n, cfg.UID)
	}
	if !strings.Contains(stderr.String(), "Resource temporarily unavailable") {
		t.Logf("stderr did not show the pids limit biting: %.300q", stderr.String())
	}
}

// hostMounts returns the mount points of the test process's mount
// namespace (the host's).
func hostMounts(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mps []string
	for _, l := range lines(string(b)) {
		if f := strings.Fields(l); len(f) > 4 {
			mps = append(mps, f[4])
		}
	}
	return mps
}

// processesOf counts the host's processes running as uid.
func processesOf(uid int) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name(), &st) == nil && int(st.Uid) == uid {
			n++
		}
	}
	return n
}

func TestLimitsApplied(t *testing.T) {
	cg := testCgroups(t)
	cfg := strictConfig(t, cg, "/bin/sh", "-c", "sleep 100")
	cfg.Limits = cgroup.Limits{MemoryBytes: 48 << 20, MilliCPU: 250, Pids: 20}
	sb, err := Spawn(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	want := map[string]string{}
	if cg.Version() == cgroup.V2 {
		d := sb.group.Dir()
		want[filepath.Join(d, "memory.max")] = "50331648"
		want[filepath.Join(d, "cpu.max")] = "25000 100000"
		want[filepath.Join(d, "pids.max")] = "20"
	} else {
		want["/sys/fs/cgroup/memory/"+cg.Name()+"/"+cfg.ID+"/memory.limit_in_bytes"] = "50331648"
		want["/sys/fs/cgroup/cpu/"+cg.Name()+"/"+cfg.ID+"/cpu.cfs_quota_us"] = "25000"
		want["/sys/fs/cgroup/cpu/"+cg.Name()+"/"+cfg.ID+"/cpu.cfs_period_us"] = "100000"
		want["/sys/fs/cgroup/pids/"+cg.Name()+"/"+cfg.ID+"/pids.max"] = "20"
	}
	for file, w := range want {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Error(err)
			continue
		}
		if got := strings.TrimSpace(string(b)); got != w {
			t.Errorf("%s = %q, want %q", file, got, w)
		}
	}
	// The sandbox's PID 1 is in the group.
	pids, _ := sb.group.Procs()
	if !slices.Contains(pids, sb.Pid()) {
		t.Errorf("pid %d not in its cgroup (%v)", sb.Pid(), pids)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	cg := testCgroups(t)
	// A sandbox with a background grandchild and a subshell.
	cfg := strictConfig(t, cg, "/bin/sh", "-c", "sleep 1000 & (sleep 1000; true) & sleep 1000")
	cfg.CodeDir = codeDir(t, nil)
	mountsBefore := hostMounts(t)
	sb, err := Spawn(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for processesOf(cfg.UID) < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := processesOf(cfg.UID); n < 4 {
		t.Fatalf("%d processes of uid %d, want 4 or more", n, cfg.UID)
	}
	// Nothing the sandbox mounted is visible in the host's namespace.
	if got := hostMounts(t); !slices.Equal(got, mountsBefore) {
		t.Errorf("host mount table changed while a sandbox runs:\nbefore %q\nduring %q", mountsBefore, got)
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if n := processesOf(cfg.UID); n != 0 {
		t.Errorf("%d processes survived", n)
	}
	if ids, _ := cg.List(); len(ids) != 0 {
		t.Errorf("cgroups left: %v", ids)
	}
	if u := sb.Usage(); u.CPUTime <= 0 {
		t.Errorf("usage after close = %+v, want the last reading", u)
	}
	if got := sb.Reason(); got != "killed by signal killed" {
		t.Errorf("Reason = %q", got)
	}
}

func TestSetupErrorsAreReported(t *testing.T) {
	cg := testCgroups(t)
	tests := []struct {
		name string
		argv []string
		want string
	}{
		{"missing program", []string{"/nonexistent/prog"}, "exec /nonexistent/prog: no such file or directory"},
		{"not on PATH", []string{"no-such-program"}, "exec no-such-program: not found in PATH"},
		{"not executable", []string{"/etc/passwd"}, "exec /etc/passwd: permission denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := strictConfig(t, cg, tc.argv...)
			_, err := Spawn(context.Background(), cfg)
			var se *SetupError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) ||
				!strings.HasPrefix(err.Error(), "set up sandbox "+cfg.ID+": ") {
				t.Fatalf("err = %v, want a SetupError with %q", err, tc.want)
			}
			if !errors.Is(err, errdefs.ErrUnavailable) {
				t.Errorf("err does not wrap ErrUnavailable")
			}
			if ids, _ := cg.List(); len(ids) != 0 {
				t.Errorf("cgroups left after a failed spawn: %v", ids)
			}
		})
	}
}

func TestSpawnValidation(t *testing.T) {
	cg := testCgroups(t)
	tests := []struct {
		name string
		mod  func(*SpawnConfig)
	}{
		{"root uid", func(c *SpawnConfig) { c.UID = 0 }},
		{"bad id", func(c *SpawnConfig) { c.ID = "a/b" }},
		{"nothing to run", func(c *SpawnConfig) { c.Argv = nil }},
		{"no cgroups", func(c *SpawnConfig) { c.Cgroups = nil }},
		{"bad network", func(c *SpawnConfig) { c.Network = "bridge" }},
		{"bad namespace", func(c *SpawnConfig) { c.NamespaceTypes = []string{"time"} }},
		{"user namespace", func(c *SpawnConfig) { c.NamespaceTypes = []string{"pid", "user"} }},
		{"missing code dir", func(c *SpawnConfig) { c.CodeDir = "/nonexistent" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := strictConfig(t, cg, "/bin/true")
			tc.mod(&cfg)
			if _, err := Spawn(context.Background(), cfg); err == nil {
				t.Fatal("Spawn succeeded")
			}
		})
	}
}

func TestSpawnContextCancel(t *testing.T) {
	cg := testCgroups(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Spawn(ctx, strictConfig(t, cg, "/bin/true"))
	if !errors.Is(err, errdefs.ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrTimeout and context.Canceled", err)
	}
	if ids, _ := cg.List(); len(ids) != 0 {
		t.Errorf("cgroups left: %v", ids)
	}
}

func TestExtraFilesAndNoLeakedFDs(t *testing.T) {
	cg := testCgroups(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// A descriptor the parent leaks (no close-on-exec), as C code might.
	leak, err := syscall.Open("/root", syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(leak)
	cfg := strictConfig(t, cg, "/bin/sh", "-c", `echo via-fd3 >&3; cd /proc/self/fd && echo *`)
	cfg.ExtraFiles = []*os.File{w}
	res := run(t, cfg)
	w.Close()
	got := make([]byte, 64)
	n, _ := r.Read(got)
	if string(got[:n]) != "via-fd3\n" {
		t.Errorf("fd 3 got %q", got[:n])
	}
	// 0 1 2 3, plus the directory the glob read through.
	fds := strings.Fields(res.stdout)
	if len(fds) < 4 || !slices.Equal(fds[:4], []string{"0", "1", "2", "3"}) || len(fds) > 5 {
		t.Errorf("open fds in the sandbox: %q (the parent leaked fd %d)", fds, leak)
	}
}

// TestOrphansDieWithTheirParent kills -9 a process that started a
// sandbox (as a crashed wisp serve would die) and checks that everything in
// the sandbox, grandchildren included, dies with it, and that Cleanup then
// removes the cgroup it left.
func TestOrphansDieWithTheirParent(t *testing.T) {
	testenv.RequireCgroups(t)
	name := testCgroupName()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=orphan", "WISP_TEST_CGROUP="+name)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := out.Read(buf)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper: %v", err)
	}
	uid, _ := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	deadline := time.Now().Add(5 * time.Second)
	for processesOf(uid) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := processesOf(uid); got < 3 {
		t.Fatalf("%d sandbox processes before the kill, want 3", got)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	deadline = time.Now().Add(5 * time.Second)
	for processesOf(uid) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := processesOf(uid); got != 0 {
		t.Errorf("%d sandbox processes outlived their parent", got)
	}

	m, err := cgroup.New(name)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Destroy()
	if ids, _ := m.List(); len(ids) != 1 {
		t.Fatalf("cgroups after the crash: %v, want the orphan's", ids)
	}
	b, err := New(Config{CgroupRoot: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ids, _ := m.List(); len(ids) != 0 {
		t.Errorf("cgroups after Cleanup: %v", ids)
	}
}

// runChildRole runs a helper role in a re-executed test binary.
func runChildRole(role string) int {
	switch role {
	case "orphan":
		// Start a sandbox with a grandchild, report its uid, then wait to
		// be killed.
		m, err := cgroup.New(os.Getenv("WISP_TEST_CGROUP"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		uid := 270000 + os.Getpid()%10000
		_, err = Spawn(context.Background(), SpawnConfig{
			ID: "orphan", Argv: []string{"/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait"},
			Cgroups: m, UID: uid, GID: uid, Seccomp: true,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(uid)
		time.Sleep(time.Hour)
	}
	return 2
}

// TestCleanupRemovesLeftovers drops a live sandbox's handle (as a crash
// would) and checks that Backend.Cleanup kills it and removes its cgroup.
func TestCleanupRemovesLeftovers(t *testing.T) {
	cg := testCgroups(t)
	cfg := strictConfig(t, cg, "/bin/sh", "-c", "sleep 1000 & sleep 1000")
	sb, err := Spawn(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{CgroupRoot: cg.Name()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("sandbox survived Cleanup")
	}
	if ids, _ := cg.List(); len(ids) != 0 {
		t.Errorf("cgroups after Cleanup: %v", ids)
	}
	if n := processesOf(cfg.UID); n != 0 {
		t.Errorf("%d processes survived Cleanup", n)
	}
	_ = sb.Close()
}

func TestHostname(t *testing.T) {
	tests := map[string]string{
		"abc":                  "wisp-abc",
		"Fn_Abc-123456789xyz":  "wisp-fnabc-123456",
		"0123456789abcdefghij": "wisp-0123456789ab",
		"___":                  "wisp-",
	}
	for id, want := range tests {
		if got := hostname(id); got != want {
			t.Errorf("hostname(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	tests := []struct {
		base, extra, want []string
	}{
		{baseEnv, nil, baseEnv},
		{baseEnv, []string{"HOME=/x", "A=1"}, []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/x", "LANG=C.UTF-8", "A=1"}},
		{nil, []string{"A=1", "A=2", "B"}, []string{"A=2", "B"}},
	}
	for _, tc := range tests {
		if got := mergeEnv(tc.base, tc.extra); !slices.Equal(got, tc.want) {
			t.Errorf("mergeEnv(%q, %q) = %q, want %q", tc.base, tc.extra, got, tc.want)
		}
	}
}

func BenchmarkSpawnTrue(b *testing.B) {
	cg := testCgroups(b)
	uid := testUID()
	var durs []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		sb, err := Spawn(context.Background(), SpawnConfig{
			ID: fmt.Sprintf("bench-%d", i), Argv: []string{"/bin/true"}, Cgroups: cg,
			UID: uid, GID: uid, Seccomp: true,
			Limits: cgroup.Limits{MemoryBytes: 128 << 20, MilliCPU: 1000, Pids: 64},
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := sb.Wait(); err != nil {
			b.Fatal(err)
		}
		if err := sb.Close(); err != nil {
			b.Fatal(err)
		}
		durs = append(durs, time.Since(start))
	}
	reportPercentiles(b, durs)
}

// reportPercentiles adds p50 and p95 (in ms) to a benchmark's output.
func reportPercentiles(b *testing.B, durs []time.Duration) {
	if len(durs) == 0 {
		return
	}
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(durs[len(durs)*95/100].Microseconds())/1000, "p95-ms")
}
