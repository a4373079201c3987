package process

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox/cgroup"
)

// Namespace types a sandbox can be given (the names of the system config's
// process.namespace_types). The mount namespace is always created: the
// sandbox's root filesystem lives in it.
const (
	NamespacePID    = "pid"
	NamespaceMount  = "mount" // "mnt" is accepted too
	NamespaceIPC    = "ipc"
	NamespaceUTS    = "uts"
	NamespaceNet    = "net"
	NamespaceCgroup = "cgroup" // /proc/self/cgroup shows "/" instead of the host's layout
	NamespaceUser   = "user"   // not supported: sandboxes run as an unprivileged uid instead
)

// DefaultNamespaceTypes are the namespaces of a strict sandbox.
var DefaultNamespaceTypes = []string{NamespacePID, NamespaceMount, NamespaceIPC, NamespaceUTS, NamespaceNet}

// checkNamespaceTypes returns an ErrInvalid error for a namespace type
// sandboxes cannot have.
func checkNamespaceTypes(types []string) error {
	for _, t := range types {
		switch t {
		case NamespacePID, NamespaceMount, "mnt", NamespaceIPC, NamespaceUTS, NamespaceNet, NamespaceCgroup:
		case NamespaceUser:
			return errdefs.Invalidf("remove user from process.namespace_types: process sandboxes already run as an "+
				"unprivileged uid with no capabilities", "namespace type user is not supported by the process mode")
		default:
			return errdefs.Invalidf("use pid, mount, ipc, uts, net and cgroup", "unknown namespace type %q", t)
		}
	}
	return nil
}

// DefaultTmpSize is the size of a sandbox's /tmp when none is given.
const DefaultTmpSize = 64 << 20

// SpawnConfig describes one sandbox.
type SpawnConfig struct {
	// ID names the sandbox: its cgroup, its hostname (wisp-<id prefix>) and
	// its error messages. It must be a single path component.
	ID string
	// Argv is the program to exec inside the sandbox, as seen from inside
	// ("/usr/bin/python3", "-B", "/wisp/python/host.py", "/code",
	// "handler.py"). A bare name is looked up on the sandbox's PATH.
	Argv []string
	// ExecHost, when set instead of Argv, keeps the init resident as the
	// exec runtime host: it serves the channel on fd 3 (requests) and fd 4
	// (responses) with runtime.ServeExec, one handler process per call.
	ExecHost *runtime.ExecConfig
	// Env is added to the clean base environment (PATH, HOME=/tmp,
	// LANG=C.UTF-8); its entries win over the base's.
	Env []string
	// CodeDir (host path) is bind-mounted read-only at /code, RuntimeDir at
	// /wisp. Either may be empty. The sandbox's uid must be able to read
	// them.
	CodeDir    string
	RuntimeDir string
	// ExtraFiles become fd 3, 4, ... in the sandbox. Spawn does not close
	// them; the caller closes its copies once Spawn returns.
	ExtraFiles []*os.File
	// Cgroups creates the sandbox's cgroup (required); Limits are its caps.
	Cgroups *cgroup.Manager
	Limits  cgroup.Limits
	// TmpSize is the size of the sandbox's /tmp in bytes (DefaultTmpSize
	// when 0). /tmp is a tmpfs: what is written there counts against the
	// memory limit too.
	TmpSize int64
	// UID and GID the sandbox runs as. Zero is refused: a sandbox never
	// runs as root.
	UID, GID int
	// Network is "none" (a network namespace with only lo, the default) or
	// "host" (the host's network namespace).
	Network string
	// NamespaceTypes lists the namespaces to create (DefaultNamespaceTypes
	// when empty); "mount" is implied. Network "host" removes "net".
	NamespaceTypes []string
	// Seccomp installs the seccomp filter (package seccomp) last.
	Seccomp bool
	// Stdout and Stderr receive the sandbox's output (the instance's log
	// stream); nil discards it.
	Stdout, Stderr io.Writer

	// keepRoot leaves the program root with every capability, for a
	// zygote (zygote.go), which makes the sandboxes of its children and
	// drops privileges in each of them. UID and GID may then be 0.
	keepRoot bool
}

// SetupError is a failure of the sandbox init before it handed over to the
// program: a mount the kernel refused, a uid it could not switch to, a
// program that does not exist. It wraps errdefs.ErrUnavailable.
type SetupError struct {
	ID     string // sandbox id
	Reason string // "mount /tmp: invalid argument"
}

func (e *SetupError) Error() string {
	return fmt.Sprintf("set up sandbox %s: %s", e.ID, e.Reason)
}

func (e *SetupError) Unwrap() error { return errdefs.ErrUnavailable }

// Sandbox is a running sandbox. Its methods are safe for concurrent use.
type Sandbox struct {
	id    string
	cmd   *exec.Cmd    // nil for a sandbox forked by a zygote
	zc    *zygoteChild // set instead of cmd for a sandbox forked by a zygote
	group *cgroup.Group

	exited  chan struct{} // closed once cmd.Wait returned
	waitErr error         // cmd.Wait's result; read after exited

	closeOnce sync.Once
	closeErr  error

	mu        sync.Mutex // guards lastUsage and removed
	lastUsage cgroup.Usage
	removed   bool // the cgroup is gone; Usage returns lastUsage
}

// initConfig is what the parent sends the init over the sync socket.
type initConfig struct {
	ID         string              `json:"id"`
	Argv       []string            `json:"argv,omitempty"`
	Exec       *runtime.ExecConfig `json:"exec,omitempty"`
	Env        []string            `json:"env,omitempty"`
	CodeDir    string              `json:"code_dir,omitempty"`
	RuntimeDir string              `json:"runtime_dir,omitempty"`
	Files      int                 `json:"files"` // number of extra files, at fd 3...
	TmpSize    int64               `json:"tmp_size"`
	UID        int                 `json:"uid"`
	GID        int                 `json:"gid"`
	NewNet     bool                `json:"new_net"`
	NewUTS     bool                `json:"new_uts"`
	NewCgroup  bool                `json:"new_cgroup"`
	Seccomp    bool                `json:"seccomp"`
	KeepRoot   bool                `json:"keep_root,omitempty"`
}

// initMsg is what the init reports back: Stage "ready" just before it execs
// (or starts serving), Error when a step failed.
type initMsg struct {
	Stage string `json:"stage,omitempty"`
	Error string `json:"error,omitempty"`
}

// goByte releases the init once its cgroup is in place.
const goByte = 'G'

// Spawn starts a sandbox and returns once the init has built it and handed
// over to the program (or to the exec host). When ctx ends first the
// sandbox is torn down and the error wraps errdefs.ErrTimeout.
func Spawn(ctx context.Context, cfg SpawnConfig) (*Sandbox, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("start sandbox %s: %w", cfg.ID, err)
	}
	flags, icfg, err := cfg.initConfig()
	if err != nil {
		return nil, fmt.Errorf("start sandbox %s: %w", cfg.ID, err)
	}
	group, err := cfg.Cgroups.Create(cfg.ID, cfg.Limits)
	if err != nil {
		return nil, fmt.Errorf("start sandbox %s: %w", cfg.ID, err)
	}
	s, err := spawn(ctx, cfg, flags, icfg, group)
	if err != nil {
		_ = group.Kill()
		if rerr := group.Remove(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, err
	}
	return s, nil
}

func (cfg *SpawnConfig) validate() error {
	switch {
	case cfg.ID == "" || strings.ContainsAny(cfg.ID, "/\x00") || cfg.ID == "." || cfg.ID == "..":
		return errdefs.Invalidf("use a plain name", "sandbox id %q is not a single path component", cfg.ID)
	case (len(cfg.Argv) == 0) == (cfg.ExecHost == nil):
		return errdefs.Invalidf("set exactly one of Argv and ExecHost", "nothing to run")
	case cfg.Cgroups == nil:
		return errdefs.Invalidf("pass a cgroup.Manager", "no cgroup manager")
	case (cfg.UID <= 0 || cfg.GID <= 0) && !cfg.keepRoot:
		return errdefs.Invalidf("allocate an unprivileged uid and gid", "uid %d, gid %d: a sandbox never runs as root", cfg.UID, cfg.GID)
	case cfg.Network != "" && cfg.Network != "none" && cfg.Network != "host":
		return errdefs.Invalidf("use none or host", "unknown network %q", cfg.Network)
	}
	for _, d := range []string{cfg.CodeDir, cfg.RuntimeDir} {
		if d == "" {
			continue
		}
		if st, err := os.Stat(d); err != nil {
			return fmt.Errorf("mount source: %w", err)
		} else if !st.IsDir() {
			return errdefs.Invalidf("pass a directory", "mount source %s is not a directory", d)
		}
	}
	return nil
}

func (cfg *SpawnConfig) initConfig() (uintptr, *initConfig, error) {
	types := cfg.NamespaceTypes
	if len(types) == 0 {
		types = DefaultNamespaceTypes
	}
	if err := checkNamespaceTypes(types); err != nil {
		return 0, nil, err
	}
	flags := uintptr(unix.CLONE_NEWNS)
	var newNet, newUTS, newCgroup bool
	for _, t := range types {
		switch t {
		case NamespacePID:
			flags |= unix.CLONE_NEWPID
		case NamespaceIPC:
			flags |= unix.CLONE_NEWIPC
		case NamespaceUTS:
			flags |= unix.CLONE_NEWUTS
			newUTS = true
		case NamespaceNet:
			if cfg.Network != "host" {
				flags |= unix.CLONE_NEWNET
				newNet = true
			}
		case NamespaceCgroup:
			// Created by the init once it is in its cgroup (on v1 the
			// parent moves it there after clone), so that the namespace's
			// root is the sandbox's own cgroup.
			newCgroup = true
		}
	}
	tmp := cfg.TmpSize
	if tmp <= 0 {
		tmp = DefaultTmpSize
	}
	return flags, &initConfig{
		ID:         cfg.ID,
		Argv:       cfg.Argv,
		Exec:       cfg.ExecHost,
		Env:        cfg.Env,
		CodeDir:    cfg.CodeDir,
		RuntimeDir: cfg.RuntimeDir,
		Files:      len(cfg.ExtraFiles),
		TmpSize:    tmp,
		UID:        cfg.UID,
		GID:        cfg.GID,
		NewNet:     newNet,
		NewUTS:     newUTS,
		NewCgroup:  newCgroup,
		Seccomp:    cfg.Seccomp,
		KeepRoot:   cfg.keepRoot,
	}, nil
}

func spawn(ctx context.Context, cfg SpawnConfig, flags uintptr, icfg *initConfig, group *cgroup.Group) (*Sandbox, error) {
	fail := func(err error) error { return fmt.Errorf("start sandbox %s: %w", cfg.ID, err) }

	// The parent's end is non-blocking so that reads obey deadlines; the
	// child's end stays blocking (the init reads it with plain read(2)).
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fail(fmt.Errorf("socketpair: %w", err))
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fail(fmt.Errorf("socketpair: %w", err))
	}
	parentSock := os.NewFile(uintptr(fds[0]), "sandbox-sync")
	childSock := os.NewFile(uintptr(fds[1]), "sandbox-sync-child")
	defer childSock.Close()

	// The configuration goes into the socket buffer before the child
	// exists; the init reads it while the parent places it in its cgroup.
	msg, err := json.Marshal(icfg)
	if err != nil {
		parentSock.Close()
		return nil, fail(err)
	}
	if _, err := parentSock.Write(append(msg, '\n')); err != nil {
		parentSock.Close()
		return nil, fail(fmt.Errorf("send init config: %w", err))
	}

	syncFD := 3 + len(cfg.ExtraFiles)
	newCmd := func() *exec.Cmd {
		return &exec.Cmd{
			Path:       "/proc/self/exe",
			Args:       []string{"wisp-sandbox-init", InitArg, strconv.Itoa(syncFD)},
			Env:        []string{},
			Stdout:     cfg.Stdout,
			Stderr:     cfg.Stderr,
			ExtraFiles: append(append([]*os.File{}, cfg.ExtraFiles...), childSock),
			SysProcAttr: &syscall.SysProcAttr{
				Cloneflags: flags,
				Setsid:     true,
				Pdeathsig:  syscall.SIGKILL,
			},
		}
	}
	cmd := newCmd()
	// On cgroup v2 the child is born in its cgroup (clone3 with
	// CLONE_INTO_CGROUP): nothing it does is ever charged elsewhere.
	intoCgroup := cfg.Cgroups.Version() == cgroup.V2
	if intoCgroup {
		dir, err := group.FD()
		if err != nil {
			parentSock.Close()
			return nil, fail(err)
		}
		defer dir.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(dir.Fd())
	}
	err = cmd.Start()
	if err != nil && intoCgroup && errors.Is(err, syscall.ENOSYS) {
		// clone3 refused (kernel before 5.7, or wisp itself runs under a
		// seccomp profile that hides clone3): clone, then move the child.
		intoCgroup = false
		cmd = newCmd()
		err = cmd.Start()
	}
	if err != nil {
		parentSock.Close()
		return nil, fail(fmt.Errorf("clone sandbox init: %w", err))
	}
	childSock.Close()

	s := &Sandbox{id: cfg.ID, cmd: cmd, group: group, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	abort := func(err error) (*Sandbox, error) {
		parentSock.Close()
		_ = cmd.Process.Kill()
		<-s.exited
		return nil, err
	}

	if !intoCgroup {
		if err := group.AddProc(cmd.Process.Pid); err != nil {
			return abort(fail(err))
		}
	}
	if _, err := parentSock.Write([]byte{goByte}); err != nil {
		return abort(fail(fmt.Errorf("release sandbox init: %w", err)))
	}

	stop := context.AfterFunc(ctx, func() { _ = parentSock.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := s.awaitInit(parentSock); err != nil {
		if ctx.Err() != nil {
			return abort(fmt.Errorf("start sandbox %s: %w: %w", cfg.ID, errdefs.ErrTimeout, context.Cause(ctx)))
		}
		return abort(err)
	}
	parentSock.Close()
	return s, nil
}

// awaitInit reads the init's reports until the socket closes: its end is
// close-on-exec, so end of file after "ready" means the program runs.
func (s *Sandbox) awaitInit(sock *os.File) error {
	r := bufio.NewReader(io.LimitReader(sock, 64<<10))
	ready := false
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) == 0 && ready {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("start sandbox %s: read from sandbox init: %w", s.id, err)
			}
			// Died without a word (EOF, or ECONNRESET when it left the go
			// byte unread): report how.
			select {
			case <-s.exited:
			case <-time.After(closeWait):
				return fmt.Errorf("start sandbox %s: read from sandbox init: %w", s.id, err)
			}
			reason := "sandbox init " + s.Reason()
			if s.OOMKilled() {
				reason += " (out of memory: the memory limit is too small for the sandbox init)"
			}
			return &SetupError{ID: s.id, Reason: reason}
		}
		var m initMsg
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("start sandbox %s: bad message from sandbox init %q: %w", s.id, line, err)
		}
		if m.Error != "" {
			return &SetupError{ID: s.id, Reason: m.Error}
		}
		if m.Stage == "ready" {
			ready = true
		}
	}
}

// ID returns the sandbox's id.
func (s *Sandbox) ID() string { return s.id }

// Pid returns the host pid of the sandbox's PID 1 (the program after exec).
func (s *Sandbox) Pid() int {
	if s.zc != nil {
		return s.zc.pid
	}
	return s.cmd.Process.Pid
}

// Exited is closed once PID 1 of the sandbox has exited and been reaped.
func (s *Sandbox) Exited() <-chan struct{} { return s.exited }

// Wait waits for PID 1 of the sandbox to exit and returns how it ended
// (nil for exit status 0, an *exec.ExitError otherwise).
func (s *Sandbox) Wait() error {
	<-s.exited
	return s.waitErr
}

// Reason describes how PID 1 ended: "exited with status 1", "killed by
// signal killed", or "running".
func (s *Sandbox) Reason() string {
	select {
	case <-s.exited:
	default:
		return "running"
	}
	if s.zc != nil {
		return s.zc.reason()
	}
	ps := s.cmd.ProcessState
	if ps == nil {
		return fmt.Sprintf("failed: %v", s.waitErr)
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		return "killed by signal " + ws.Signal().String()
	case ok && ws.Exited():
		return "exited with status " + strconv.Itoa(ws.ExitStatus())
	}
	return ps.String()
}

// Kill sends SIGKILL to the sandbox. Killing PID 1 of the PID namespace
// takes every process in it down; the cgroup kill catches processes of a
// sandbox without its own PID namespace. It does not wait (for a zygote's
// child, at most 100 ms for the zygote to report its exit).
func (s *Sandbox) Kill() error {
	var err error
	if s.zc != nil {
		err = s.zc.kill()
	} else {
		err = s.cmd.Process.Kill()
	}
	if errors.Is(err, os.ErrProcessDone) {
		err = nil
	}
	s.mu.Lock()
	removed := s.removed
	s.mu.Unlock()
	if !removed {
		err = errors.Join(err, s.group.Kill())
	}
	if err != nil {
		return fmt.Errorf("kill sandbox %s: %w", s.id, err)
	}
	return nil
}

// Usage reads the sandbox's resource use from its cgroup. After Close it
// returns the last reading.
func (s *Sandbox) Usage() cgroup.Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return s.lastUsage
	}
	if u, err := s.group.Usage(); err == nil {
		s.lastUsage = u
	}
	return s.lastUsage
}

// OOMKilled reports whether the kernel's OOM killer killed a process of the
// sandbox because it hit its memory limit.
func (s *Sandbox) OOMKilled() bool { return s.Usage().OOMKills > 0 }

// closeWait bounds how long Close waits for PID 1 after SIGKILL.
const closeWait = 10 * time.Second

// Close kills every process of the sandbox, waits for PID 1, and removes
// the cgroup. The sandbox's mounts vanish with its mount namespace. It is
// safe to call more than once and returns the first call's result.
func (s *Sandbox) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if err := s.Kill(); err != nil {
			errs = append(errs, err)
		}
		select {
		case <-s.exited:
		case <-time.After(closeWait):
			errs = append(errs, fmt.Errorf("close sandbox %s: pid %d did not exit after SIGKILL", s.id, s.Pid()))
		}
		_ = s.Usage() // the final reading, for callers after Close
		if err := s.group.Kill(); err != nil {
			errs = append(errs, err)
		}
		if err := s.group.Remove(); err != nil {
			errs = append(errs, fmt.Errorf("close sandbox %s: %w", s.id, err))
		} else {
			s.mu.Lock()
			s.removed = true
			s.mu.Unlock()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
