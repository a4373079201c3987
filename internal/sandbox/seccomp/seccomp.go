package seccomp

import (
	"fmt"
	"runtime"
	"unsafe"

	seccompbpf "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Denied are the system calls every sandbox is refused (EPERM).
var Denied = []string{
	// Mounts and filesystem views.
	"mount", "umount2", "pivot_root", "chroot",
	"fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr",
	"open_by_handle_at", "name_to_handle_at",
	// Other processes' memory.
	"ptrace", "process_vm_readv", "process_vm_writev",
	// The kernel itself.
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"bpf", "perf_event_open", "userfaultfd", "lookup_dcookie",
	// io_uring: a large attack surface that Docker, Android and ChromeOS
	// also deny; runtimes (libuv) fall back to plain system calls.
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"keyctl", "add_key", "request_key",
	"swapon", "swapoff", "reboot", "syslog", "acct", "quotactl",
	// Namespaces (clone's namespace flags are checked separately).
	"unshare", "setns",
	// The clock.
	"settimeofday", "clock_settime", "adjtimex",
	// Raw I/O ports (x86 only).
	"iopl", "ioperm",
}

// NamespaceFlag is a clone flag that creates a namespace.
type NamespaceFlag struct {
	Name string
	Flag uint64
}

// NamespaceFlags are the clone flags that make clone fail with EPERM. Each
// is a condition of its own, so clone is refused when any one of them is
// set. CLONE_NEWTIME is only honoured by clone3 and unshare (in clone's
// flags its bit is part of the exit signal), so its rule never fires for a
// valid call; it is kept so that the list matches the namespace types.
var NamespaceFlags = []NamespaceFlag{
	{"CLONE_NEWNS", unix.CLONE_NEWNS},
	{"CLONE_NEWUSER", unix.CLONE_NEWUSER},
	{"CLONE_NEWPID", unix.CLONE_NEWPID},
	{"CLONE_NEWNET", unix.CLONE_NEWNET},
	{"CLONE_NEWIPC", unix.CLONE_NEWIPC},
	{"CLONE_NEWUTS", unix.CLONE_NEWUTS},
	{"CLONE_NEWCGROUP", unix.CLONE_NEWCGROUP},
	{"CLONE_NEWTIME", unix.CLONE_NEWTIME},
}

// Policy returns the filter Install loads, for the architecture this binary
// was built for. System calls that do not exist on it (iopl and ioperm off
// x86) are left out.
func Policy() (*seccompbpf.Policy, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("seccomp policy: %w", err)
	}
	var names []string
	for _, n := range Denied {
		if _, ok := info.SyscallNames[n]; ok {
			names = append(names, n)
		}
	}
	// clone's flags are its first argument on x86-64 and arm64 (s390 swaps
	// the first two, and is not supported).
	var clone []seccompbpf.NameWithConditions
	for _, f := range NamespaceFlags {
		clone = append(clone, seccompbpf.NameWithConditions{
			Name: "clone",
			Conditions: seccompbpf.ArgumentConditions{
				{Argument: 0, Operation: seccompbpf.BitsSet, Value: f.Flag},
			},
		})
	}
	return &seccompbpf.Policy{
		DefaultAction: seccompbpf.ActionAllow,
		Syscalls: []seccompbpf.SyscallGroup{
			{Names: names, Action: seccompbpf.ActionErrno}, // ActionErrno alone means EPERM
			{NamesWithCondtions: clone, Action: seccompbpf.ActionErrno},
			{Names: []string{"clone3"}, Action: seccompbpf.ActionErrno | seccompbpf.Action(unix.ENOSYS)},
		},
	}, nil
}

// Install sets no_new_privs and loads the sandbox filter into every thread
// of the calling process. It cannot be undone.
func Install() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("install seccomp filter: not supported on %s", runtime.GOOS)
	}
	p, err := Policy()
	if err != nil {
		return fmt.Errorf("install seccomp filter: %w", err)
	}
	filter := seccompbpf.Filter{NoNewPrivs: true, Flag: seccompbpf.FilterFlagTSync, Policy: *p}
	if err := seccompbpf.LoadFilter(filter); err != nil {
		return fmt.Errorf("install seccomp filter: %w", err)
	}
	if err := installArchGuard(); err != nil {
		return fmt.Errorf("install seccomp filter: %w", err)
	}
	return nil
}

// Programs returns the filters Install loads, in order (the policy, then
// the ABI guard), assembled to raw BPF, for a process that installs them
// itself (the Python zygote's children do, through prctl/seccomp).
func Programs() ([][]bpf.RawInstruction, error) {
	p, err := Policy()
	if err != nil {
		return nil, err
	}
	policy, err := p.Assemble()
	if err != nil {
		return nil, fmt.Errorf("assemble seccomp policy: %w", err)
	}
	guard, err := archGuard()
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	var out [][]bpf.RawInstruction
	for _, prog := range [][]bpf.Instruction{policy, guard} {
		raw, err := bpf.Assemble(prog)
		if err != nil {
			return nil, fmt.Errorf("assemble seccomp filter: %w", err)
		}
		out = append(out, raw)
	}
	return out, nil
}

// archGuard is a second filter that kills the process on a system call
// made through a foreign ABI (on amd64, int 0x80 into the i386 table). The
// policy above only checks the native ABI's numbers and lets other ABIs
// through unchecked (go-seccomp-bpf jumps to its default action on an
// architecture mismatch). Assembled with golang.org/x/net/bpf, the
// assembler go-seccomp-bpf itself uses.
func archGuard() ([]bpf.Instruction, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, err
	}
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(info.ID), SkipTrue: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_KILL_PROCESS},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW},
	}, nil
}

// installArchGuard loads archGuard on every thread.
func installArchGuard() error {
	insns, err := archGuard()
	if err != nil {
		return err
	}
	raw, err := bpf.Assemble(insns)
	if err != nil {
		return fmt.Errorf("assemble the ABI guard: %w", err)
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("load the ABI guard: %w", errno)
	}
	if r != 0 {
		return fmt.Errorf("load the ABI guard: thread %d could not be synchronised", r)
	}
	return nil
}
