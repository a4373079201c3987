package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wisp-faas/wisp/internal/sandbox/hostlog"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/sandbox/cgroup"
	"github.com/wisp-faas/wisp/internal/sandbox/spares"
)

// Isolation levels.
const (
	// IsolationStrict is every namespace, cgroup limits, an unprivileged
	// uid, no capabilities, no_new_privs and the seccomp filter.
	IsolationStrict = "strict"
	// IsolationLightweight drops the network namespace (the sandbox shares
	// the host's network) and the seccomp filter; the rest stays.
	IsolationLightweight = "lightweight"
)

// Defaults for Config fields left at zero.
const (
	DefaultUIDBase  = 200000
	DefaultUIDCount = 65536
)

// Config configures the process backend. The zero value of each field means
// its default.
type Config struct {
	// CgroupRoot is the parent cgroup sandboxes are created under
	// (cgroup.DefaultName, "wisp").
	CgroupRoot string
	// UIDBase and UIDCount give the range of uids (and gids) sandboxes run
	// as, one per live instance (DefaultUIDBase, DefaultUIDCount). The
	// range should hold no real users.
	UIDBase, UIDCount int
	// TmpSize is the size of each sandbox's /tmp (DefaultTmpSize), at most
	// half the function's memory limit: /tmp is a tmpfs whose pages count
	// against that limit, and a full /tmp should be ENOSPC, which a handler
	// can catch, not an OOM kill.
	TmpSize int64
	// NamespaceTypes lists the namespaces of a sandbox
	// (DefaultNamespaceTypes).
	NamespaceTypes []string
	// IsolationLevel is IsolationStrict (default) or IsolationLightweight.
	IsolationLevel string
	// RuntimeDir is where the runtime hosts were extracted
	// (runtime.Extract); it is mounted read-only at /wisp. Required for
	// python and node functions.
	RuntimeDir string
	// Launcher finds the interpreters (runtime.DefaultLauncher's paths when
	// zero).
	Launcher runtime.Launcher
	// Conn configures the worker side of each instance's channel.
	Conn runtime.ConnOptions
	// Provisioned is how many pre-provisioned sandboxes to keep ready per
	// Python or Node runtime once a function of that runtime has started (0: none).
	// See provision.go.
	Provisioned int
	// StageDir holds the per-sandbox directories that pre-provisioned
	// sandboxes mount at /code before they know their function. Required
	// when Provisioned > 0.
	StageDir string
	// Zygote makes Python cold starts that find no pre-provisioned
	// sandbox fork from a pre-initialised interpreter of their runtime
	// into a fresh sandbox, instead of starting one. See zygote.go.
	Zygote bool
}

// Backend is the process execution mode. It is safe for concurrent use.
type Backend struct {
	cfg  Config
	log  *slog.Logger
	uids *uidPool

	mu  sync.Mutex // guards cg
	cg  *cgroup.Manager
	seq atomic.Uint64 // for probe sandbox ids

	spares  *spares.Set[*spare] // pre-provisioned sandboxes; see provision.go
	zygotes zygoteSet           // Python zygotes; see zygote.go
}

var _ sandbox.Backend = (*Backend)(nil)

// New returns a process backend. It does not touch the system: Check says
// whether this machine can run it, and the cgroup parent is created on
// first use.
func New(cfg Config, log *slog.Logger) (*Backend, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.UIDBase == 0 {
		cfg.UIDBase = DefaultUIDBase
	}
	if cfg.UIDCount == 0 {
		cfg.UIDCount = DefaultUIDCount
	}
	if cfg.TmpSize == 0 {
		cfg.TmpSize = DefaultTmpSize
	}
	if cfg.IsolationLevel == "" {
		cfg.IsolationLevel = IsolationStrict
	}
	if len(cfg.NamespaceTypes) == 0 {
		cfg.NamespaceTypes = DefaultNamespaceTypes
	}
	switch {
	case cfg.IsolationLevel != IsolationStrict && cfg.IsolationLevel != IsolationLightweight:
		return nil, errdefs.Invalidf("use strict or lightweight",
			"process backend: unknown isolation level %q", cfg.IsolationLevel)
	case cfg.UIDBase < 1000 || cfg.UIDCount < 1 || cfg.UIDBase+cfg.UIDCount > 1<<31-2:
		return nil, errdefs.Invalidf("use a range of uids above 1000 that holds no real users, such as 200000-265535",
			"process backend: uid range %d+%d is not usable", cfg.UIDBase, cfg.UIDCount)
	case cfg.TmpSize < 1<<20:
		return nil, errdefs.Invalidf("use at least 1Mi", "process backend: tmp size %d is too small", cfg.TmpSize)
	}
	if err := checkNamespaceTypes(cfg.NamespaceTypes); err != nil {
		return nil, fmt.Errorf("process backend: %w", err)
	}
	b := &Backend{cfg: cfg, log: log, uids: newUIDPool(cfg.UIDBase, cfg.UIDCount)}
	b.initSpares()
	return b, nil
}

// Name returns "process".
func (b *Backend) Name() string { return function.ModeProcess }

// cgroups returns the cgroup manager, creating the parent group on first
// use (a failure is retried on the next call).
func (b *Backend) cgroups() (*cgroup.Manager, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cg != nil {
		return b.cg, nil
	}
	m, err := cgroup.New(b.cfg.CgroupRoot)
	if err != nil {
		return nil, err
	}
	b.cg = m
	return m, nil
}

func (b *Backend) strict() bool { return b.cfg.IsolationLevel == IsolationStrict }

// Check reports what this machine lacks to run sandboxes, with the fix: it
// needs root, a cgroup memory controller, and namespaces and mounts that
// work (checked by starting a sandbox running /bin/true).
func (b *Backend) Check(ctx context.Context) error {
	if uid := os.Geteuid(); uid != 0 {
		return errdefs.New(errdefs.ErrUnavailable,
			"run wisp serve as root: the process mode creates namespaces, cgroups and mounts",
			"process mode: wisp runs as uid %d, not root", uid)
	}
	cg, err := b.cgroups()
	if err != nil {
		return fmt.Errorf("process mode: %w", err)
	}
	if b.cfg.RuntimeDir != "" {
		if _, err := os.Stat(b.cfg.RuntimeDir); err != nil {
			return errdefs.New(errdefs.ErrUnavailable, "extract the runtime hosts first (runtime.Extract)",
				"process mode: runtime directory: %v", err)
		}
	}
	uid, err := b.uids.get()
	if err != nil {
		return fmt.Errorf("process mode: %w", err)
	}
	defer b.uids.put(uid)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var stderr hostlog.Tail
	sb, err := Spawn(ctx, b.spawnConfig(cg, "check-"+strconv.FormatUint(b.seq.Add(1), 10)+"-"+strconv.Itoa(os.Getpid()),
		uid, function.NetworkNone, []string{"/bin/true"}, nil, &stderr))
	if err != nil {
		if last := stderr.LastLine(); last != "" {
			err = fmt.Errorf("%w (its last output: %s)", err, last)
		}
		return errdefs.New(errdefs.ErrUnavailable,
			"the process mode needs Linux 5.12 or later (open_tree, mount_setattr) and the right to create "+
				"namespaces and mounts; inside a container, run it privileged",
			"process mode: cannot start a sandbox: %v", err)
	}
	werr := sb.Wait()
	cerr := sb.Close()
	if werr != nil {
		return errdefs.New(errdefs.ErrUnavailable, "check the log of wisp serve for the sandbox's output",
			"process mode: /bin/true in a sandbox %s: %s", sb.Reason(), stderr.String())
	}
	if cerr != nil {
		return fmt.Errorf("process mode: %w", cerr)
	}
	return nil
}

// Cleanup kills and removes the sandboxes a crashed run left behind: every
// cgroup below the parent group. Their mounts lived in their own mount
// namespaces and are already gone.
func (b *Backend) Cleanup(ctx context.Context) error {
	cg, err := b.cgroups()
	if err != nil {
		return fmt.Errorf("clean up process sandboxes: %w", err)
	}
	ids, _ := cg.List()
	if b.cfg.StageDir != "" {
		// Stage directories of an earlier run's pre-provisioned sandboxes.
		if err := os.RemoveAll(b.cfg.StageDir); err != nil {
			return fmt.Errorf("clean up process sandboxes: %w", err)
		}
	}
	if err := cg.Cleanup(); err != nil {
		return fmt.Errorf("clean up process sandboxes: %w", err)
	}
	if len(ids) > 0 {
		b.log.InfoContext(ctx, "removed sandboxes left by an earlier run", "count", len(ids), "ids", ids)
	}
	return nil
}

// Destroy kills every sandbox of this backend and removes its cgroup
// parent too. For tests and uninstalls; the backend creates the parent
// again if used afterwards.
func (b *Backend) Destroy(ctx context.Context) error {
	b.spares.Close()
	b.zygotes.closeAll()
	b.mu.Lock()
	cg := b.cg
	b.cg = nil
	b.mu.Unlock()
	if cg == nil {
		return nil
	}
	if err := cg.Destroy(); err != nil {
		return fmt.Errorf("destroy process sandboxes: %w", err)
	}
	return nil
}

func (b *Backend) spawnConfig(cg *cgroup.Manager, id string, uid int, network string, argv []string,
	exec *runtime.ExecConfig, stderr *hostlog.Tail) SpawnConfig {
	types := b.cfg.NamespaceTypes
	if !b.strict() {
		types = slices.DeleteFunc(slices.Clone(types), func(t string) bool { return t == NamespaceNet })
	}
	if network == "" {
		network = function.NetworkNone
	}
	return SpawnConfig{
		ID:             id,
		Argv:           argv,
		ExecHost:       exec,
		Cgroups:        cg,
		TmpSize:        b.cfg.TmpSize,
		UID:            uid,
		GID:            uid,
		Network:        network,
		NamespaceTypes: types,
		Seccomp:        b.strict(),
		Stderr:         stderr,
	}
}

// Start starts one instance: a sandbox with the runtime host for the
// function, ready for calls. Limits come from the spec (memory, cpu, pids),
// the environment from runtime.HostEnv. ctx bounds the whole cold start
// (the scheduler passes the cold start timeout).
func (b *Backend) Start(ctx context.Context, opts sandbox.StartOptions) (sandbox.Instance, error) {
	start := time.Now()
	spec := opts.Spec
	if spec == nil {
		return nil, errdefs.Invalidf("pass the function spec", "start %s: no spec", opts.ID)
	}
	fail := func(err error) (sandbox.Instance, error) {
		return nil, fmt.Errorf("start %s of %s: %w", opts.ID, spec.Name, err)
	}
	cg, err := b.cgroups()
	if err != nil {
		return fail(err)
	}
	if err := readableByOthers(opts.CodeDir); err != nil {
		return fail(err)
	}
	if inst, err := b.startFromSpare(ctx, opts); inst != nil || err != nil {
		if err != nil {
			return fail(err)
		}
		return inst, nil
	}
	if inst, err := b.startFromZygote(ctx, cg, opts); inst != nil || err != nil {
		if err != nil {
			return fail(err)
		}
		return inst, nil
	}
	argv, err := b.cfg.Launcher.Command(spec, runtime.SandboxCodeDir, runtime.SandboxRuntimeDir)
	if err != nil {
		return fail(err)
	}
	var execCfg *runtime.ExecConfig
	if argv == nil {
		ec, err := runtime.NewExecConfig(spec, runtime.SandboxCodeDir, b.cfg.Conn.LogLimit)
		if err != nil {
			return fail(err)
		}
		ec.MaxBody = b.cfg.Conn.MaxBody
		execCfg = &ec
	} else if b.cfg.RuntimeDir == "" {
		return fail(errdefs.New(errdefs.ErrUnavailable, "set the process backend's RuntimeDir (runtime.Extract)",
			"no runtime directory for the %s host", spec.Runtime))
	}

	h, err := b.spawnHost(ctx, cg, hostParams{
		id:      opts.ID,
		network: spec.Network,
		argv:    argv,
		exec:    execCfg,
		env:     runtime.HostEnv(spec, b.cfg.Conn.LogLimit),
		codeDir: opts.CodeDir,
		limits:  cgroup.Limits{MemoryBytes: int64(spec.Memory), MilliCPU: int64(spec.CPU), Pids: int64(spec.Pids)},
		tmpSize: min(b.cfg.TmpSize, int64(spec.Memory)/2),
		attrs:   []slog.Attr{slog.String("function", spec.Name), slog.String("instance", opts.ID)},
	})
	if err != nil {
		return fail(err)
	}
	spawned := time.Since(start)
	inst, ready, err := b.newInstance(ctx, opts.ID, spec, h, "")
	if err != nil {
		return fail(err)
	}
	hostInit := time.Duration(ready.InitMS * float64(time.Millisecond))
	inst.stages = sandbox.StartStages{Sandbox: spawned, Import: hostInit,
		Runtime: max(time.Since(start)-spawned-hostInit, 0)}
	b.log.DebugContext(ctx, "instance started", slog.String("function", spec.Name), slog.String("instance", opts.ID),
		slog.Duration("spawn", spawned), slog.Duration("total", time.Since(start)),
		slog.Float64("host_init_ms", ready.InitMS), slog.Int("uid", h.uid))
	return inst, nil
}

// hostProc is a sandbox running a runtime host, with the worker's ends of
// its channel.
type hostProc struct {
	sb    *Sandbox
	reqW  *os.File // requests, to the host's fd 3
	respR *os.File // responses, from the host's fd 4
	uid   int
	tail  *hostlog.Tail
	logs  []*logWriter
}

// hostParams describe the sandbox spawnHost makes.
type hostParams struct {
	id      string
	network string
	argv    []string            // the host to exec, or nil with exec set
	exec    *runtime.ExecConfig // the init serves exec functions itself
	env     []string
	codeDir string // mounted read-only at /code
	limits  cgroup.Limits
	tmpSize int64
	attrs   []slog.Attr // on every line the host writes to its stdout or stderr
}

// spawnHost takes a uid, makes the channel pipes and starts the sandbox.
// On failure it gives everything back.
func (b *Backend) spawnHost(ctx context.Context, cg *cgroup.Manager, p hostParams) (*hostProc, error) {
	uid, err := b.uids.get()
	if err != nil {
		return nil, err
	}
	reqR, reqW, err := os.Pipe()
	if err != nil {
		b.uids.put(uid)
		return nil, err
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		b.uids.put(uid)
		return nil, err
	}
	stdout := newLogWriter(b.log, append(slices.Clone(p.attrs), slog.String("stream", "stdout"))...)
	stderrLog := newLogWriter(b.log, append(slices.Clone(p.attrs), slog.String("stream", "stderr"))...)
	tail := &hostlog.Tail{Next: stderrLog}

	sc := b.spawnConfig(cg, p.id, uid, p.network, p.argv, p.exec, tail)
	sc.Stdout = stdout
	sc.Env = p.env
	sc.CodeDir = p.codeDir
	sc.RuntimeDir = b.cfg.RuntimeDir
	sc.ExtraFiles = []*os.File{reqR, respW} // fd 3, fd 4
	sc.Limits = p.limits
	sc.TmpSize = p.tmpSize
	sb, err := Spawn(ctx, sc)
	reqR.Close()
	respW.Close()
	if err != nil {
		reqW.Close()
		respR.Close()
		b.uids.put(uid)
		if last := tail.LastLine(); last != "" {
			err = fmt.Errorf("%w (its last output: %s)", err, last)
		}
		return nil, err
	}
	return &hostProc{sb: sb, reqW: reqW, respR: respR, uid: uid, tail: tail, logs: []*logWriter{stdout, stderrLog}}, nil
}

// release stops a host that never became an instance and gives its uid back.
func (h *hostProc) release(b *Backend) {
	_ = h.reqW.Close()
	_ = h.respR.Close()
	_ = h.sb.Close()
	for _, l := range h.logs {
		l.Flush()
	}
	b.uids.put(h.uid)
}

// newInstance wraps a started host in an instance and waits for its ready
// frame (bounded by ctx). On failure the instance is closed and the error
// says why the host died. stage is the spare's stage directory, or "".
func (b *Backend) newInstance(ctx context.Context, id string, spec *function.Spec, h *hostProc, stage string) (*instance, runtime.Ready, error) {
	inst := &instance{
		id:      id,
		spec:    spec,
		b:       b,
		sb:      h.sb,
		conn:    runtime.NewConn(h.reqW, h.respR, b.cfg.Conn),
		uid:     h.uid,
		tail:    h.tail,
		logs:    h.logs,
		stage:   stage,
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}
	inst.conn.SetKill(func() { _ = inst.sb.Kill() })
	go inst.watch()
	ready, err := inst.conn.WaitReady(ctx)
	if err != nil {
		if errors.Is(err, errdefs.ErrCrashed) {
			err = inst.crashReason(err)
		}
		_ = inst.Close()
		return nil, ready, err
	}
	return inst, ready, nil
}

// readableByOthers checks that the sandbox's uid can list and read dir.
func readableByOthers(dir string) error {
	if dir == "" {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("function code: %w", err)
	}
	if st.Mode().Perm()&0o005 != 0o005 {
		return errdefs.New(errdefs.ErrUnavailable,
			"store function code world-readable (directories 0755, files 0644): sandboxes run as unprivileged uids",
			"function code at %s has mode %v, which the sandbox's uid cannot read", dir, st.Mode().Perm())
	}
	return nil
}

// instance is one running sandbox with its channel.
type instance struct {
	id   string
	spec *function.Spec
	b    *Backend
	sb   *Sandbox
	conn *runtime.Conn
	uid  int
	tail *hostlog.Tail
	logs []*logWriter
	// stage is the host directory mounted at /code of a pre-provisioned
	// sandbox, removed with the instance ("" for sandboxes made on demand).
	stage string
	// stages is how the start was spent.
	stages sandbox.StartStages

	done      chan struct{} // closed by watch
	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
}

var _ sandbox.Instance = (*instance)(nil)

// watch closes done once the sandbox can no longer serve: its PID 1 exited,
// its channel broke, or it was closed.
func (i *instance) watch() {
	select {
	case <-i.sb.Exited():
	case <-i.conn.Done():
	case <-i.closing:
	}
	close(i.done)
}

func (i *instance) ID() string { return i.id }

// StartStages reports how the instance's start was spent.
func (i *instance) StartStages() sandbox.StartStages { return i.stages }

func (i *instance) Done() <-chan struct{} { return i.done }

// Serial says the runtime host serves calls one at a time, in order.
func (i *instance) Serial() bool { return i.conn.Serial() }

// Invoke sends one call over the channel. A call whose ctx ends kills the
// sandbox at once (the handler may still be running, and the instance is
// no longer usable) and returns an errdefs.ErrTimeout error. A sandbox that
// dies during the call gives an errdefs.ErrCrashed error that says why.
func (i *instance) Invoke(ctx context.Context, req *sandbox.Request) (*sandbox.Response, error) {
	resp, err := i.conn.RoundTrip(ctx, req)
	if err == nil {
		return resp, nil
	}
	return nil, sandbox.CallError(ctx, i.id, err, func() { _ = i.sb.Kill() }, i.crashReason)
}

// crashGrace is how long crashReason waits for the exit status after the
// channel broke (the pipe closes a moment before the process is reaped).
const crashGrace = time.Second

// crashReason turns a broken channel into an errdefs.ErrCrashed error that
// says why the sandbox died. A load error from the host is kept as is.
func (i *instance) crashReason(cause error) error {
	var le *runtime.LoadError
	if errors.As(cause, &le) {
		return cause
	}
	select {
	case <-i.sb.Exited():
	case <-time.After(crashGrace):
	}
	if i.sb.OOMKilled() {
		return errdefs.New(errdefs.ErrCrashed,
			"raise the function's memory limit (memory: in its spec) or make it use less",
			"memory limit %s exceeded", i.spec.Memory)
	}
	select {
	case <-i.sb.Exited():
	default:
		_ = i.sb.Kill() // alive but deaf: no use to anyone
		return errdefs.New(errdefs.ErrCrashed, "", "runtime host closed its channel: %v", cause)
	}
	msg := "runtime host " + i.sb.Reason()
	if last := i.tail.LastLine(); last != "" {
		msg += ": " + last
	}
	return errdefs.New(errdefs.ErrCrashed, "see the instance's log for its output", "%s", msg)
}

// Usage reads the sandbox's cgroup.
func (i *instance) Usage() sandbox.Usage {
	u := i.sb.Usage()
	return sandbox.Usage{CPUTime: u.CPUTime, MemoryBytes: u.MemoryBytes, MemoryPeak: u.MemoryPeak, OOMKills: u.OOMKills}
}

// Close kills the sandbox, removes its cgroup and returns its uid.
func (i *instance) Close() error {
	i.closeOnce.Do(func() {
		close(i.closing)
		cerr := i.conn.Close()
		err := i.sb.Close()
		if i.stage != "" {
			if rerr := os.RemoveAll(i.stage); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		for _, l := range i.logs {
			l.Flush()
		}
		select {
		case <-i.sb.Exited():
			i.b.uids.put(i.uid) // nothing runs as it any more
		default:
		}
		if err != nil {
			i.closeErr = fmt.Errorf("close instance %s: %w", i.id, errors.Join(err, cerr))
		}
	})
	return i.closeErr
}
