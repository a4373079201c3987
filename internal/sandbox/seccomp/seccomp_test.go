package seccomp

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"

	seccompbpf "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"go.uber.org/goleak"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/wisp-faas/wisp/internal/testenv"
)

// childEnv selects what the re-executed test binary does instead of running
// tests: a filter is irreversible, so it is only ever installed in a child.
const childEnv = "WISP_SECCOMP_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		goleak.VerifyTestMain(m)
	case "probes":
		os.Exit(runProbes())
	case "int80":
		fmt.Println(int80Getpid() == int32(os.Getpid()))
		os.Exit(0)
	case "int80-filtered":
		if err := Install(); err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
		fmt.Println(int80Getpid())
		os.Exit(0)
	}
}

// probe is one system call tried under the filter and the errno it should
// fail with (0: it must succeed).
type probe struct {
	name string
	want syscall.Errno
	run  func() error
}

func startWithFlags(flags uintptr) func() error {
	return func() error {
		cmd := exec.Command("/bin/true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
		return cmd.Run()
	}
}

var probes = []probe{
	{"mount", unix.EPERM, func() error { return unix.Mount("none", "/nonexistent-wisp", "tmpfs", 0, "") }},
	{"umount2", unix.EPERM, func() error { return unix.Unmount("/nonexistent-wisp", 0) }},
	{"unshare(CLONE_NEWUSER)", unix.EPERM, func() error { return unix.Unshare(unix.CLONE_NEWUSER) }},
	{"unshare(CLONE_NEWNS)", unix.EPERM, func() error { return unix.Unshare(unix.CLONE_NEWNS) }},
	{"clone(CLONE_NEWUSER)", unix.EPERM, startWithFlags(unix.CLONE_NEWUSER)},
	{"clone(CLONE_NEWNET)", unix.EPERM, startWithFlags(unix.CLONE_NEWNET)},
	{"clone(CLONE_NEWPID|CLONE_NEWNS)", unix.EPERM, startWithFlags(unix.CLONE_NEWPID | unix.CLONE_NEWNS)},
	{"clone(CLONE_NEWCGROUP)", unix.EPERM, startWithFlags(unix.CLONE_NEWCGROUP)},
	{"ptrace", unix.EPERM, func() error {
		// Without the filter this is ESRCH: the parent is not our tracee.
		_, err := unix.PtracePeekData(os.Getppid(), 0, make([]byte, 8))
		return err
	}},
	{"bpf", unix.EPERM, func() error {
		_, _, e := unix.Syscall(unix.SYS_BPF, 0, 0, 0)
		return errnoErr(e)
	}},
	{"keyctl", unix.EPERM, func() error {
		_, err := unix.KeyctlInt(unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_SESSION_KEYRING, 0, 0, 0)
		return err
	}},
	{"setns", unix.EPERM, func() error { return unix.Setns(-1, 0) }},
	{"io_uring_setup", unix.EPERM, func() error {
		_, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, 0, 0)
		return errnoErr(e)
	}},
	{"clone3", unix.ENOSYS, func() error {
		// Without the filter: EINVAL (no arguments).
		_, _, e := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
		return errnoErr(e)
	}},
	// What a function legitimately does keeps working.
	{"fork+exec", 0, func() error { return exec.Command("/bin/true").Run() }},
	{"shell fork", 0, func() error { return exec.Command("/bin/sh", "-c", "(true) & wait; echo | cat >/dev/null").Run() }},
	{"pthreads (clone3 falls back to clone)", 0, func() error {
		out, err := exec.Command("python3", "-c",
			"import threading\nt=[threading.Thread(target=sum,args=([1],)) for _ in range(4)]\n"+
				"[x.start() for x in t]\n[x.join() for x in t]\nprint('ok')").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}},
	{"go threads", 0, func() error {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				runtime.LockOSThread() // forces a new OS thread per goroutine
				defer runtime.UnlockOSThread()
				_ = unix.Getpid()
			})
		}
		wg.Wait()
		return nil
	}},
	{"file io", 0, func() error {
		f, err := os.CreateTemp("", "seccomp")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := f.WriteString("hello"); err != nil {
			return err
		}
		b, err := os.ReadFile(f.Name())
		if err != nil || string(b) != "hello" {
			return fmt.Errorf("read back %q: %v", b, err)
		}
		return nil
	}},
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// runProbes installs the filter and prints, as JSON, what each probe
// returned.
func runProbes() int {
	if err := Install(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	res := map[string]string{}
	for _, p := range probes {
		var e syscall.Errno
		err := p.run()
		if err != nil && !errors.As(err, &e) {
			res[p.name] = err.Error()
			continue
		}
		res[p.name] = e.Error()
		if err == nil {
			res[p.name] = "ok"
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func child(t *testing.T, mode string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	if mode == "probes" {
		cmd.Stderr = os.Stderr
	}
	return cmd
}

func TestFilterInChild(t *testing.T) {
	out, err := child(t, "probes").Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var res map[string]string
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	for _, p := range probes {
		want := "ok"
		if p.want != 0 {
			want = p.want.Error()
		}
		if got := res[p.name]; got != want {
			t.Errorf("%s under the filter: got %q, want %q", p.name, got, want)
		}
	}
}

// TestForeignABIKillsProcess proves the ABI guard two ways: with a real
// int 0x80 where the kernel runs 32-bit calls, and always by running the
// guard's program in x/net/bpf's BPF interpreter on seccomp_data for the
// native and the i386 ABI (this machine's kernel has no IA32 emulation, so
// the first proof cannot run here).
func TestForeignABIKillsProcess(t *testing.T) {
	insns, err := archGuard()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	info, err := arch.GetInfo("")
	if err != nil {
		t.Fatal(err)
	}
	// seccomp_data: nr, arch, ip, args. The interpreter loads words
	// big-endian; the kernel loads them native-endian: write each word in
	// the order the interpreter reads, so both see the same values.
	data := func(archID uint32) []byte {
		b := make([]byte, 64)
		binary.BigEndian.PutUint32(b[0:], 39) // getpid
		binary.BigEndian.PutUint32(b[4:], archID)
		return b
	}
	const auditArchI386 = 0x40000003
	for _, tc := range []struct {
		name string
		arch uint32
		want uint32
	}{
		{"native", uint32(info.ID), unix.SECCOMP_RET_ALLOW},
		{"i386", auditArchI386, unix.SECCOMP_RET_KILL_PROCESS},
	} {
		got, err := vm.Run(data(tc.arch))
		if err != nil || uint32(got) != tc.want {
			t.Errorf("%s ABI: guard returns %#x, %v; want %#x", tc.name, uint32(got), err, tc.want)
		}
	}

	if !haveInt80 {
		return // no 32-bit entry point to try on this architecture
	}
	if out, err := child(t, "int80").Output(); err != nil || string(out) != "true\n" {
		t.Logf("int 0x80 is unavailable here (kernel without IA32 emulation): %q, %v; the interpreter proof above stands", out, err)
		return
	}
	out, err := child(t, "int80-filtered").Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGSYS {
		t.Fatalf("int 0x80 getpid under the filter: output %q, err %v; want death by SIGSYS", out, err)
	}
}

func TestPolicyLists(t *testing.T) {
	p, err := Policy()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Assemble(); err != nil {
		t.Fatalf("assemble: %v", err)
	}
	must := []string{
		"mount", "umount2", "pivot_root", "chroot", "ptrace", "process_vm_readv", "process_vm_writev",
		"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf", "keyctl",
		"add_key", "request_key", "unshare", "setns", "perf_event_open", "open_by_handle_at",
		"name_to_handle_at", "userfaultfd", "swapon", "swapoff", "reboot", "syslog", "acct",
		"settimeofday", "clock_settime", "adjtimex", "quotactl", "lookup_dcookie", "fsopen", "fsmount",
		"fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr",
	}
	if runtime.GOARCH == "amd64" {
		must = append(must, "iopl", "ioperm")
	}
	var eperm, enosys []string
	var cloneFlags []uint64
	for _, g := range p.Syscalls {
		switch g.Action {
		case seccompbpf.ActionErrno:
			eperm = append(eperm, g.Names...)
			for _, nc := range g.NamesWithCondtions {
				if nc.Name != "clone" || len(nc.Conditions) != 1 || nc.Conditions[0].Operation != seccompbpf.BitsSet ||
					nc.Conditions[0].Argument != 0 {
					t.Errorf("unexpected conditional rule %+v", nc)
					continue
				}
				cloneFlags = append(cloneFlags, nc.Conditions[0].Value)
			}
		case seccompbpf.ActionErrno | seccompbpf.Action(unix.ENOSYS):
			enosys = append(enosys, g.Names...)
		default:
			t.Errorf("unexpected action %v for %v", g.Action, g.Names)
		}
	}
	for _, n := range must {
		if !slices.Contains(eperm, n) {
			t.Errorf("%s is not refused with EPERM", n)
		}
	}
	if !slices.Equal(enosys, []string{"clone3"}) {
		t.Errorf("ENOSYS rules = %v, want [clone3]", enosys)
	}
	for _, f := range []uint64{unix.CLONE_NEWNS, unix.CLONE_NEWUSER, unix.CLONE_NEWPID, unix.CLONE_NEWNET,
		unix.CLONE_NEWIPC, unix.CLONE_NEWUTS, unix.CLONE_NEWCGROUP, unix.CLONE_NEWTIME} {
		if !slices.Contains(cloneFlags, f) {
			t.Errorf("clone flag %#x is not refused", f)
		}
	}
}

// Make sure the tests above do not pass by accident: the probes that must
// fail under the filter behave differently without it.
func TestProbesDifferWithoutFilter(t *testing.T) {
	testenv.RequireRoot(t) // the unfiltered baseline is a root baseline
	for _, name := range []string{"ptrace", "clone3", "mount"} {
		i := slices.IndexFunc(probes, func(p probe) bool { return p.name == name })
		var e syscall.Errno
		if err := probes[i].run(); !errors.As(err, &e) || e == probes[i].want {
			t.Errorf("%s without the filter: %v; the probe cannot tell the filter apart", name, err)
		}
	}
}
