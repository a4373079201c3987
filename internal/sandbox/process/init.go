package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox/seccomp"
)

// InitArg is the hidden first argument that turns the wisp binary into a
// sandbox init. Spawn passes it; MaybeRunInit looks for it.
const InitArg = "__wisp-sandbox-init"

// MaybeRunInit runs the sandbox init and never returns when this process
// was started as one (os.Args[1] == InitArg); otherwise it returns at once.
// Call it first thing in main, and in TestMain of every test binary that
// starts sandboxes.
func MaybeRunInit() {
	if len(os.Args) < 3 || os.Args[1] != InitArg {
		return
	}
	// Pdeathsig, the capability bounding set and the exec all act on the
	// calling thread: keep them on one.
	goruntime.LockOSThread()
	os.Exit(runInit(os.Args[2]))
}

// baseEnv is the environment every sandboxed program starts from.
var baseEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}

// hostDirs are the host directories a sandbox sees, read-only. A symlink
// (Debian's usrmerge /bin → usr/bin) is recreated as a symlink.
var hostDirs = []string{"/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc"}

// devices are bound from the host's /dev into the sandbox's.
var devices = []string{"null", "zero", "full", "random", "urandom"}

// stageDir is where the new root is assembled: a tmpfs mounted over the
// host's /tmp, visible only in the sandbox's mount namespace. Everything
// the sandbox needs from the host is cloned (open_tree) before it is
// mounted, so it hides nothing the sandbox uses even when the function's
// code lives below /tmp.
const stageDir = "/tmp"

// initSync is the init's end of the sync socket.
type initSync struct{ fd int }

func (s initSync) send(m initMsg) {
	b, _ := json.Marshal(m)
	_, _ = unix.Write(s.fd, append(b, '\n'))
}

func (s initSync) fail(err error) int {
	s.send(initMsg{Error: err.Error()})
	return 1
}

// readConfig reads the configuration line, then waits for the go byte.
func (s initSync) readConfig() (*initConfig, error) {
	var buf []byte
	chunk := make([]byte, 4096)
	for {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 && len(buf) > i+1 {
			if buf[i+1] != goByte {
				return nil, fmt.Errorf("sync: unexpected byte %q", buf[i+1])
			}
			var cfg initConfig
			if err := json.Unmarshal(buf[:i], &cfg); err != nil {
				return nil, fmt.Errorf("sync: bad config: %w", err)
			}
			return &cfg, nil
		}
		n, err := unix.Read(s.fd, chunk)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sync: %w", err)
		}
		if n == 0 {
			return nil, errors.New("sync: parent went away")
		}
		buf = append(buf, chunk[:n]...)
		if len(buf) > 1<<20 {
			return nil, errors.New("sync: config too large")
		}
	}
}

func runInit(fdArg string) int {
	fd, err := strconv.Atoi(fdArg)
	if err != nil || fd < 3 {
		fmt.Fprintf(os.Stderr, "wisp sandbox init: bad sync fd %q\n", fdArg)
		return 2
	}
	// Nothing but stdio, the extra files and the sync socket may cross
	// into the sandbox: a leaked host directory fd would be a way out.
	s := initSync{fd: fd}
	if err := closeInherited(fd); err != nil {
		return s.fail(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return s.fail(fmt.Errorf("sync: %w", err))
	}
	cfg, err := s.readConfig()
	if err != nil {
		return s.fail(err)
	}
	if err := buildRoot(cfg); err != nil {
		return s.fail(err)
	}
	if !cfg.KeepRoot { // a zygote drops privileges in each child instead
		if err := dropPrivileges(cfg, fd); err != nil {
			return s.fail(err)
		}
	}
	if err := unix.Chdir("/tmp"); err != nil {
		return s.fail(fmt.Errorf("chdir /tmp: %w", err))
	}
	if cfg.Exec != nil {
		return serveExec(cfg, s)
	}
	env := mergeEnv(baseEnv, cfg.Env)
	path, err := lookPath(cfg.Argv[0], env)
	if err != nil {
		return s.fail(err)
	}
	s.send(initMsg{Stage: "ready"})
	err = unix.Exec(path, cfg.Argv, env)
	return s.fail(fmt.Errorf("exec %s: %w", path, err))
}

// closeInherited closes the descriptors above last that the parent let
// through (not close-on-exec: they survived the exec). It leaves the ones
// this process opened itself before main, which the Go runtime and package
// initialisers open close-on-exec (the netpoller's epoll descriptor among
// them: closing that kills the runtime).
func closeInherited(last int) error {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("close inherited descriptors: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("close inherited descriptors: %w", err)
	}
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd <= last {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			continue // the directory listing's own descriptor, closed now
		}
		if flags&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
	return nil
}

// buildRoot assembles the sandbox's root filesystem and pivots into it.
func buildRoot(cfg *initConfig) error {
	// First, so that no mount below can propagate to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if cfg.NewCgroup {
		// Only this thread moves to the new namespace; it is the one that
		// execs. (The exec host's handlers, forked from any thread, may
		// see the host's cgroup paths.)
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("create cgroup namespace: %w", err)
		}
	}

	// Clone what the sandbox may see while the host's tree is still in
	// view. Each clone is a detached mount tree, made read-only before it
	// is attached anywhere.
	type tree struct {
		target string // path in the new root
		fd     int    // detached mount, or -1
		link   string // symlink target, when the host has a symlink
		dir    bool
	}
	var trees []tree
	defer func() {
		for _, t := range trees {
			if t.fd >= 0 {
				unix.Close(t.fd)
			}
		}
	}()
	const roAttrs = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	// clone takes a detached copy of the mount tree at src (recursive: with
	// the mounts below it) and applies attrs to all of it.
	clone := func(src, target string, recursive, dir bool, attrs uint64) error {
		flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
		setFlags := uint(unix.AT_EMPTY_PATH)
		if recursive {
			flags |= unix.AT_RECURSIVE
			setFlags |= unix.AT_RECURSIVE
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
		if err != nil {
			return fmt.Errorf("bind %s: open_tree %s: %w", target, src, err)
		}
		trees = append(trees, tree{target: target, fd: fd, dir: dir})
		if err := unix.MountSetattr(fd, "", setFlags, &unix.MountAttr{Attr_set: attrs}); err != nil {
			return fmt.Errorf("bind %s: set mount attributes: %w", target, err)
		}
		return nil
	}
	for _, d := range hostDirs {
		st, err := os.Lstat(d)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("bind %s: %w", d, err)
		}
		if st.Mode()&os.ModeSymlink != 0 {
			link, err := os.Readlink(d)
			if err != nil {
				return fmt.Errorf("bind %s: %w", d, err)
			}
			trees = append(trees, tree{target: d, fd: -1, link: link})
			continue
		}
		if err := clone(d, d, true, true, roAttrs); err != nil {
			return err
		}
	}
	if cfg.CodeDir != "" {
		if err := clone(cfg.CodeDir, runtime.SandboxCodeDir, true, true, roAttrs); err != nil {
			return err
		}
	}
	if cfg.RuntimeDir != "" {
		if err := clone(cfg.RuntimeDir, runtime.SandboxRuntimeDir, true, true, roAttrs); err != nil {
			return err
		}
	}
	for _, d := range devices {
		if err := clone("/dev/"+d, "/dev/"+d, false, false, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC); err != nil {
			return err
		}
	}

	// The new root: a tmpfs that holds only mount points and symlinks.
	if err := unix.Mount("wisp-root", stageDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=0755"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	root := stageDir
	at := func(p string) string { return filepath.Join(root, p) }

	for _, d := range []string{"/proc", "/dev", "/tmp"} {
		if err := os.Mkdir(at(d), 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", d, err)
		}
	}
	if err := unix.Mount("proc", at("/proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := unix.Mount("wisp-dev", at("/dev"), "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	if err := os.Mkdir(at("/dev/shm"), 0o755); err != nil {
		return fmt.Errorf("mkdir /dev/shm: %w", err)
	}
	shm := min(cfg.TmpSize, DefaultTmpSize)
	if err := unix.Mount("wisp-shm", at("/dev/shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		fmt.Sprintf("size=%d,mode=1777", shm)); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	for link, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, at(link)); err != nil {
			return fmt.Errorf("symlink %s: %w", link, err)
		}
	}
	if err := unix.Mount("wisp-tmp", at("/tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV,
		fmt.Sprintf("size=%d,mode=1777", cfg.TmpSize)); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}

	for i := range trees {
		t := &trees[i]
		dst := at(t.target)
		if t.link != "" {
			if err := os.Symlink(t.link, dst); err != nil {
				return fmt.Errorf("symlink %s: %w", t.target, err)
			}
			continue
		}
		var err error
		if t.dir {
			err = os.MkdirAll(dst, 0o755)
		} else {
			var f *os.File
			if f, err = os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o666); err == nil {
				f.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("bind %s: mount point: %w", t.target, err)
		}
		if err := unix.MoveMount(t.fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("bind %s: move_mount: %w", t.target, err)
		}
		unix.Close(t.fd)
		t.fd = -1
	}

	if err := pivot(root); err != nil {
		return err
	}
	// Read-only from here: the root and /dev (their submounts, /tmp and
	// /dev/shm, stay writable).
	for _, p := range []string{"/dev", "/"} {
		if err := unix.MountSetattr(unix.AT_FDCWD, p, 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("make %s read-only: %w", p, err)
		}
	}
	if cfg.NewUTS {
		if err := unix.Sethostname([]byte(hostname(cfg.ID))); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	if cfg.NewNet {
		if err := loopbackUp(); err != nil {
			return fmt.Errorf("bring up lo: %w", err)
		}
	}
	return nil
}

// pivot makes root the root of the mount namespace and detaches the old one
// (runc's pivot_root(".", ".") sequence: no directory for the old root is
// needed).
func pivot(root string) error {
	oldRoot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	defer unix.Close(oldRoot)
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	// The old root is now stacked on top of the new one; "." from the old
	// root's directory names it.
	if err := unix.Fchdir(oldRoot); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	return nil
}

// hostname is "wisp-" and the first 12 characters of the id that are
// valid in a host name.
func hostname(id string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		if b.Len() == 12 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	return "wisp-" + b.String()
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// dropPrivileges turns the init (root with every capability) into the
// unprivileged sandbox user, with no way back.
func dropPrivileges(cfg *initConfig, syncFD int) error {
	// Keep the root user's capabilities out of reach for good: even a
	// setuid binary (impossible already: nosuid mounts, no_new_privs)
	// could not regain them. Needs CAP_SETPCAP, so before setuid.
	if err := dropBoundingSet(); err != nil {
		return err
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("setrlimit core: %w", err)
	}
	// Go's Setgroups, Setgid and Setuid apply to every thread.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(cfg.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", cfg.GID, err)
	}
	if err := syscall.Setuid(cfg.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", cfg.UID, err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	// Changing credentials cleared the parent-death signal: arm it again,
	// then make sure the parent did not die in between (its end of the
	// sync socket would be closed).
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent death signal: %w", err)
	}
	var b [1]byte
	if n, _, err := unix.Recvfrom(syncFD, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT); n == 0 && err == nil {
		return errors.New("parent went away")
	}
	if cfg.Seccomp {
		return seccomp.Install() // sets no_new_privs on every thread too
	}
	if err := setNoNewPrivs(); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}

// dropBoundingSet removes every capability from the bounding set of every
// thread (of the calling thread only when the binary uses cgo, where
// AllThreadsSyscall is unsupported; that thread is the one that execs).
func dropBoundingSet() error {
	for c := uintptr(0); ; c++ {
		_, _, errno := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0)
		if errno == syscall.ENOTSUP {
			_, _, errno = syscall.RawSyscall(syscall.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0)
		}
		switch {
		case errno == 0:
		case errno == unix.EINVAL && c > 0:
			return nil // past the last capability this kernel knows
		default:
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, errno)
		}
	}
}

func setNoNewPrivs() error {
	_, _, errno := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0)
	if errno == syscall.ENOTSUP {
		return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// mergeEnv returns base with extra appended, later entries replacing
// earlier ones with the same name.
func mergeEnv(base, extra []string) []string {
	out := make([]string, 0, len(base)+len(extra))
	idx := make(map[string]int, cap(out))
	for _, kv := range append(append([]string{}, base...), extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// lookPath resolves a program name on env's PATH inside the sandbox.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %s: not found in PATH %s", name, path)
}

// serveExec keeps the init resident as the exec runtime host.
func serveExec(cfg *initConfig, s initSync) int {
	if cfg.Files < 2 {
		return s.fail(errors.New("exec host: needs the request and response pipes at fd 3 and 4"))
	}
	// Out of reach of the handlers it runs (same uid): no /proc/1/mem,
	// /proc/1/fd.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return s.fail(fmt.Errorf("exec host: %w", err))
	}
	// The channel is the init's alone: a handler that inherited it could
	// read other calls' requests or forge their responses.
	for fd := 3; fd < 3+cfg.Files; fd++ {
		unix.CloseOnExec(fd)
	}
	stopReaper := runtime.ReapOrphans()
	defer stopReaper()
	in := os.NewFile(runtime.RequestFD, "request")
	out := os.NewFile(runtime.ResponseFD, "response")
	s.send(initMsg{Stage: "ready"})
	unix.Close(s.fd)
	if err := runtime.ServeExec(context.Background(), in, out, *cfg.Exec); err != nil {
		fmt.Fprintf(os.Stderr, "wisp exec host: %v\n", err)
		return 1
	}
	return 0
}
