package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wisp-faas/wisp/internal/sandbox/hostlog"

	"github.com/containerd/containerd"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/image"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/sandbox/cgroup"
	"github.com/wisp-faas/wisp/internal/sandbox/spares"
)

// Defaults for Options fields left at zero.
const (
	DefaultAddress      = "/run/containerd/containerd.sock"
	DefaultNamespace    = "wisp"
	DefaultRuntime      = "runc"
	DefaultCgroupParent = "wisp-container"
	DefaultTmpSize      = 64 << 20
	DefaultUIDBase      = 300000
	DefaultUIDCount     = 65536
)

// CgroupParentFor is the default cgroup parent of a backend using
// containerd namespace ns: DefaultCgroupParent for the default namespace,
// else one of its own, so that servers in different namespaces never clean
// up each other's groups.
func CgroupParentFor(ns string) string {
	if ns == DefaultNamespace || ns == "" {
		return DefaultCgroupParent
	}
	return "wisp-container-" + ns
}

// shimRuntime is containerd's runtime v2 shim for runc-compatible OCI
// runtimes; crun runs under it with BinaryName set.
const shimRuntime = "io.containerd.runc.v2"

// Labels on the containers the backend creates.
const (
	labelInstance = "wisp.instance"
	labelFunction = "wisp.function"
)

// Options configure the container backend. The zero value of each field
// means its default.
type Options struct {
	// Address is containerd's socket (DefaultAddress).
	Address string
	// Namespace is the containerd namespace of wisp's images, containers
	// and snapshots (DefaultNamespace). Cleanup removes every container in
	// it: give two wisp servers on one machine different namespaces.
	Namespace string
	// Runtime is the OCI runtime: "runc" (default) or "crun" (run by
	// containerd's runc shim with that binary), another runc-compatible
	// binary name or absolute path, or a containerd shim name
	// ("io.containerd.runsc.v1").
	Runtime string
	// StateDir holds the per-instance channel directories, the stage
	// directories of spare containers and the runtime hosts with the shim.
	// Required. Only root should be able to enter it.
	StateDir string
	// TmpSize is the size of each container's /tmp (DefaultTmpSize), at
	// most half the function's memory limit (the tmpfs counts against it).
	TmpSize int64
	// Spares is how many started containers to keep waiting per Python or
	// Node runtime once a function of that runtime has started (0: none).
	Spares int
	// BaseImage, when set, is the image every function runs on instead of
	// the runtime's locally built base (config container.base_image). It
	// must hold the interpreter at the Launcher's path and a C library the
	// wisp binary can run with.
	BaseImage string
	// Snapshotter is containerd's snapshotter (image.DefaultSnapshotter).
	Snapshotter string
	// CgroupParent is the cgroup the containers' groups are made under
	// (CgroupParentFor(Namespace)). It must differ from process mode's.
	CgroupParent string
	// UIDBase and UIDCount give the uids (and gids) containers run as, one
	// per live container (DefaultUIDBase, DefaultUIDCount).
	UIDBase, UIDCount int
	// Launcher finds the interpreters (runtime.DefaultLauncher's paths
	// when zero); the paths are the same inside the images.
	Launcher runtime.Launcher
	// Conn configures the worker side of each instance's channel.
	Conn runtime.ConnOptions
	// Shim is the wisp binary mounted into containers as their entry
	// (os.Executable() when ""). It must call MaybeRunInit in main.
	Shim string
	// Log gets the backend's lines and the containers' output.
	Log *slog.Logger
	// Progress, when set, sees image builds as they go.
	Progress func(image.Progress)
}

// Backend is the container execution mode. It is safe for concurrent use.
type Backend struct {
	opts Options
	log  *slog.Logger
	uids *uidPool
	seq  atomic.Uint64

	mu       sync.Mutex // guards client, builder, cg, hostsDir, images
	client   *containerd.Client
	builder  *image.Builder
	cg       *cgroup.Manager
	hostsDir string
	images   map[string]*baseImage // by runtime name, "ref:"+reference for a spec's image, "" for Options.BaseImage

	spares *spares.Set[*spare] // see spare.go
}

var _ sandbox.Backend = (*Backend)(nil)

// baseImage is an image ready for containers: unpacked, with its chain id.
type baseImage struct {
	img containerd.Image
	// view: the image has every mount point, so containers run on a
	// read-only view of it instead of a writable snapshot.
	view bool
}

// New returns a container backend. It does not touch the system: Check
// says whether this machine can run it.
func New(opts Options) (*Backend, error) {
	if opts.Address == "" {
		opts.Address = DefaultAddress
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.Runtime == "" {
		opts.Runtime = DefaultRuntime
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = CgroupParentFor(opts.Namespace)
	}
	if opts.TmpSize == 0 {
		opts.TmpSize = DefaultTmpSize
	}
	if opts.UIDBase == 0 {
		opts.UIDBase = DefaultUIDBase
	}
	if opts.UIDCount == 0 {
		opts.UIDCount = DefaultUIDCount
	}
	if opts.Snapshotter == "" {
		opts.Snapshotter = image.DefaultSnapshotter
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	switch {
	case opts.StateDir == "":
		return nil, errdefs.Invalidf("set the container backend's StateDir (a directory below the data directory)",
			"container backend: no state directory")
	case opts.UIDBase < 1000 || opts.UIDCount < 1 || opts.UIDBase+opts.UIDCount > 1<<31-2:
		return nil, errdefs.Invalidf("use a range of uids above 1000 that holds no real users",
			"container backend: uid range %d+%d is not usable", opts.UIDBase, opts.UIDCount)
	case opts.TmpSize < 1<<20:
		return nil, errdefs.Invalidf("use at least 1Mi", "container backend: tmp size %d is too small", opts.TmpSize)
	case strings.ContainsAny(opts.Namespace, "/ "):
		return nil, errdefs.Invalidf("use letters, digits and '-'", "container backend: namespace %q", opts.Namespace)
	}
	if opts.Shim == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("container backend: find the wisp binary: %w", err)
		}
		opts.Shim = exe
	}
	b := &Backend{opts: opts, log: opts.Log, uids: newUIDPool(opts.UIDBase, opts.UIDCount), images: map[string]*baseImage{}}
	b.initSpares()
	return b, nil
}

// Name returns "container".
func (b *Backend) Name() string { return function.ModeContainer }

// ctx returns ctx in the backend's containerd namespace.
func (b *Backend) nsCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, b.opts.Namespace)
}

func (b *Backend) notRunning(cause error) error {
	return errdefs.New(errdefs.ErrUnavailable,
		"apt-get install containerd runc, then start containerd (containerd &, or systemctl start containerd)",
		"containerd is not running at %s: install it with `apt-get install containerd runc` and start it with "+
			"`containerd &` (or `systemctl start containerd`) (%v)", b.opts.Address, cause)
}

// connect returns the containerd client, connecting on first use (a
// failure is retried on the next call).
func (b *Backend) connect(ctx context.Context) (*containerd.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.client != nil {
		return b.client, nil
	}
	// containerd.New waits for the connection up to its timeout; a missing
	// socket is known at once.
	if _, err := os.Stat(b.opts.Address); err != nil {
		return nil, b.notRunning(err)
	}
	c, err := net.DialTimeout("unix", b.opts.Address, 2*time.Second)
	if err != nil {
		return nil, b.notRunning(err)
	}
	c.Close()
	client, err := containerd.New(b.opts.Address, containerd.WithDefaultNamespace(b.opts.Namespace),
		containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, b.notRunning(err)
	}
	b.client = client
	b.builder = &image.Builder{Client: client, Snapshotter: b.opts.Snapshotter, Launcher: b.opts.Launcher,
		Shim: b.opts.Shim, Log: b.log, Progress: b.opts.Progress}
	return client, nil
}

// cgroups returns the manager of the containers' parent cgroup, creating
// it on first use.
func (b *Backend) cgroups() (*cgroup.Manager, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cg != nil {
		return b.cg, nil
	}
	m, err := cgroup.New(b.opts.CgroupParent)
	if err != nil {
		return nil, err
	}
	b.cg = m
	return m, nil
}

// runtimeOpts maps Options.Runtime to containerd's runtime name and its
// options.
func (b *Backend) runtimeOpts() (name string, opts any, binary string) {
	rt := b.opts.Runtime
	switch {
	case rt == "runc":
		return shimRuntime, nil, "runc"
	case strings.HasPrefix(rt, "io.containerd."):
		return rt, nil, ""
	default: // crun, or another runc-compatible binary
		return shimRuntime, &runcoptions.Options{BinaryName: rt}, rt
	}
}

// Check reports what this machine lacks to run containers, with the fix:
// root, a running containerd, the OCI runtime binary and a cgroup memory
// controller.
func (b *Backend) Check(ctx context.Context) error {
	if uid := os.Geteuid(); uid != 0 {
		return errdefs.New(errdefs.ErrUnavailable, "run wisp serve as root: containerd's socket and cgroups need it",
			"container mode: wisp runs as uid %d, not root", uid)
	}
	client, err := b.connect(ctx)
	if err != nil {
		return fmt.Errorf("container mode: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := client.Version(b.nsCtx(cctx)); err != nil {
		return fmt.Errorf("container mode: %w", b.notRunning(err))
	}
	if _, _, bin := b.runtimeOpts(); bin != "" {
		if _, err := exec.LookPath(bin); err != nil {
			pkg := bin
			if filepath.IsAbs(bin) {
				pkg = "the package that provides it"
			}
			return errdefs.New(errdefs.ErrUnavailable, "apt-get install "+pkg,
				"container mode: OCI runtime %s is not installed", bin)
		}
	}
	cg, err := b.cgroups()
	if err != nil {
		return fmt.Errorf("container mode: %w", err)
	}
	if _, _, bin := b.runtimeOpts(); filepath.Base(bin) == "crun" && hybridCgroups(cg) {
		return errdefs.New(errdefs.ErrUnavailable,
			"use container.runtime: runc on this host, or boot it with only cgroup v2 (systemd.unified_cgroup_hierarchy=1)",
			"container mode: crun refuses this host's hybrid cgroup layout (cgroup v1 hierarchies plus cgroup2 at %s)",
			hybridUnified)
	}
	return nil
}

// hybridUnified is where hybrid hosts mount cgroup2 beside the v1
// hierarchies.
const hybridUnified = "/sys/fs/cgroup/unified"

// hybridCgroups reports a cgroup v1 host with a cgroup2 mount beside its
// hierarchies, a layout crun (1.8) refuses ("cgroups in hybrid mode not
// supported").
func hybridCgroups(cg *cgroup.Manager) bool {
	if cg.Version() != cgroup.V1 {
		return false
	}
	_, err := os.Stat(filepath.Join(hybridUnified, "cgroup.procs"))
	return err == nil
}

// Client returns the backend's containerd client, connecting if needed,
// for `wisp image import` and tests. Contexts passed to it need the
// backend's namespace (WithNamespace).
func (b *Backend) Client(ctx context.Context) (*containerd.Client, error) { return b.connect(ctx) }

// WithNamespace returns ctx in the backend's containerd namespace.
func (b *Backend) WithNamespace(ctx context.Context) context.Context { return b.nsCtx(ctx) }

// Prepare builds (or finds) the base image of runtime rt, so that the
// first cold start does not pay for it, and when Spares > 0 starts making
// that runtime's spare containers.
func (b *Backend) Prepare(ctx context.Context, rt string) error {
	ctx = b.nsCtx(ctx)
	if _, err := b.imageFor(ctx, rt, ""); err != nil {
		return fmt.Errorf("prepare %s containers: %w", rt, err)
	}
	if b.spareRuntime(rt) {
		b.spares.Fill(rt)
	}
	return nil
}

// imageFor returns the image containers of runtime rt run on: the spec's
// image reference ref when set, else Options.BaseImage when set, else the
// runtime's base, built once per backend (and cached by containerd across
// runs).
func (b *Backend) imageFor(ctx context.Context, rt, ref string) (*baseImage, error) {
	client, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	key := rt
	switch {
	case ref != "":
		key = "ref:" + ref
	case b.opts.BaseImage != "":
		key, ref = "", b.opts.BaseImage
	}
	b.mu.Lock()
	bi := b.images[key]
	builder := b.builder
	b.mu.Unlock()
	if bi != nil {
		return bi, nil
	}
	if ref != "" {
		img, err := image.Ensure(ctx, client, ref, b.opts.Snapshotter)
		if err != nil {
			return nil, err
		}
		bi = &baseImage{img: img}
	} else {
		img, err := builder.Runtime(ctx, rt)
		if err != nil {
			return nil, err
		}
		bi = &baseImage{img: img, view: true}
	}
	b.mu.Lock()
	b.images[key] = bi
	b.mu.Unlock()
	return bi, nil
}

// hosts returns the directory mounted at /wisp: the runtime hosts and the
// shim (a hard link to, or a copy of, the wisp binary).
func (b *Backend) hosts() (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hostsDir != "" {
		return b.hostsDir, nil
	}
	dir := filepath.Join(b.opts.StateDir, "hosts")
	if err := runtime.Extract(dir); err != nil {
		return "", err
	}
	if err := os.Chmod(b.opts.StateDir, 0o711); err != nil {
		return "", err
	}
	if err := installShim(b.opts.Shim, filepath.Join(dir, "init")); err != nil {
		return "", fmt.Errorf("install the container shim: %w", err)
	}
	b.hostsDir = dir
	return dir, nil
}

// installShim puts the binary src at dst (a hard link where they share a
// file system), replacing what an earlier run left.
func installShim(src, dst string) error {
	tmp := dst + ".new"
	_ = os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// Cleanup removes what a crashed run left in the backend's namespace:
// every container with its task and snapshot, active snapshots without a
// container, the containers' cgroups, and the state directory's instance
// and stage directories. Images stay: they are the cache.
func (b *Backend) Cleanup(ctx context.Context) error {
	client, err := b.connect(ctx)
	if err != nil {
		return fmt.Errorf("clean up containers: %w", err)
	}
	ctx = b.nsCtx(ctx)
	ctrs, err := client.Containers(ctx)
	if err != nil {
		return fmt.Errorf("clean up containers: %w", err)
	}
	var errs []error
	for _, c := range ctrs {
		if err := removeContainer(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}
	sn := client.SnapshotService(b.opts.Snapshotter)
	var orphans []string
	if err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind != snapshots.KindCommitted {
			orphans = append(orphans, info.Name)
		}
		return nil
	}); err != nil {
		errs = append(errs, fmt.Errorf("list snapshots: %w", err))
	}
	for _, key := range orphans {
		if err := sn.Remove(ctx, key); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove snapshot %s: %w", key, err))
		}
	}
	if cg, err := b.cgroups(); err == nil {
		if err := cg.Cleanup(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range []string{"run", "stage"} {
		if err := os.RemoveAll(filepath.Join(b.opts.StateDir, d)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(ctrs)+len(orphans) > 0 {
		b.log.InfoContext(ctx, "removed containers left by an earlier run", "containers", len(ctrs), "snapshots", len(orphans))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up containers: %w", err)
	}
	return nil
}

// removeContainer kills and deletes c's task, then c and its snapshot.
func removeContainer(ctx context.Context, c containerd.Container) error {
	if task, err := c.Task(ctx, nil); err == nil {
		_ = task.Kill(ctx, syscall.SIGKILL)
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("delete task %s: %w", c.ID(), err)
		}
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("task of %s: %w", c.ID(), err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", c.ID(), err)
	}
	return nil
}

// Destroy stops the spare containers. For shutdown and tests: the
// instances are the scheduler's to close.
func (b *Backend) Destroy(ctx context.Context) error {
	b.spares.Close()
	b.mu.Lock()
	client := b.client
	b.client = nil
	b.images = map[string]*baseImage{}
	b.mu.Unlock()
	if client != nil {
		return client.Close()
	}
	return nil
}

// Start starts one instance: a container with the runtime host for the
// function, ready for calls. ctx bounds the whole cold start.
func (b *Backend) Start(ctx context.Context, opts sandbox.StartOptions) (sandbox.Instance, error) {
	spec := opts.Spec
	if spec == nil {
		return nil, errdefs.Invalidf("pass the function spec", "start %s: no spec", opts.ID)
	}
	fail := func(err error) (sandbox.Instance, error) {
		return nil, fmt.Errorf("start %s of %s: %w", opts.ID, spec.Name, err)
	}
	if err := readableByOthers(opts.CodeDir); err != nil {
		return fail(err)
	}
	ctx = b.nsCtx(ctx)
	if inst, err := b.startFromSpare(ctx, opts); inst != nil || err != nil {
		if err != nil {
			return fail(err)
		}
		return inst, nil
	}
	var cfg shimConfig
	if function.Family(spec.Runtime) == function.RuntimeExec {
		ec, err := runtime.NewExecConfig(spec, runtime.SandboxCodeDir, b.opts.Conn.LogLimit)
		if err != nil {
			return fail(err)
		}
		ec.MaxBody = b.opts.Conn.MaxBody
		cfg.Exec = &ec
	} else {
		argv, err := b.opts.Launcher.Command(spec, runtime.SandboxCodeDir, runtime.SandboxRuntimeDir)
		if err != nil {
			return fail(err)
		}
		cfg.Argv = argv
	}
	c, err := b.create(ctx, params{
		id:      opts.ID,
		runtime: spec.Runtime,
		image:   spec.Image,
		network: spec.Network,
		shim:    cfg,
		env:     runtime.HostEnv(spec, b.opts.Conn.LogLimit),
		codeDir: opts.CodeDir,
		limits:  cgroup.Limits{MemoryBytes: int64(spec.Memory), MilliCPU: int64(spec.CPU), Pids: int64(spec.Pids)},
		tmpSize: min(b.opts.TmpSize, int64(spec.Memory)/2),
		attrs:   []slog.Attr{slog.String("function", spec.Name), slog.String("instance", opts.ID)},
	})
	if err != nil {
		return fail(err)
	}
	inst, ready, err := b.newInstance(ctx, opts.ID, spec, c)
	if err != nil {
		return fail(err)
	}
	inst.stages.Ready = time.Since(c.start) - c.stages.Image - c.stages.Container - c.stages.Task - c.stages.Start - c.stages.Connect
	inst.stages.HostInit = time.Duration(ready.InitMS * float64(time.Millisecond))
	inst.stages.Total = time.Since(c.start)
	b.log.DebugContext(ctx, "instance started", slog.String("function", spec.Name), slog.String("instance", opts.ID),
		slog.Any("stages", inst.stages))
	return inst, nil
}

// params describe the container create makes.
type params struct {
	id      string
	runtime string
	image   string // the spec's image reference ("" for the base)
	network string
	shim    shimConfig
	env     []string
	codeDir string // bind-mounted read-only at /code
	limits  cgroup.Limits
	tmpSize int64
	attrs   []slog.Attr
}

// Stages are the times a cold start spent in each step.
type Stages struct {
	Image     time.Duration // find (or build) the image
	Container time.Duration // snapshot view and container record
	Task      time.Duration // task create (shim, runc create)
	Start     time.Duration // task start
	Connect   time.Duration // the shim's channel connections
	Ready     time.Duration // from connect to the host's ready frame (interpreter start-up, host, import)
	HostInit  time.Duration // the host's own account of its start-up and handler import
	Total     time.Duration // Start's whole time
	Spare     bool          // served by a spare container
	Staged    time.Duration // spare only: claiming it, staging the code, setting the limits
}

// created is a started container whose shim has connected its channel.
type created struct {
	id     string
	ctr    containerd.Container
	task   containerd.Task
	exit   <-chan containerd.ExitStatus
	cancel context.CancelFunc // ends the task.Wait
	reqW   *os.File           // requests, to the host's fd 3 (a pipe)
	respR  *os.File           // responses, from the host's fd 4 (a pipe)
	group  *cgroup.Group
	uid    int
	dir    string // the instance directory (channel socket)
	tail   *hostlog.Tail
	logs   []*lineLogger
	start  time.Time
	stages Stages
}

// create makes and starts a container for p and waits for its shim to
// connect. On failure it removes everything it made.
func (b *Backend) create(ctx context.Context, p params) (_ *created, err error) {
	c := &created{id: p.id, start: time.Now()}
	client, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	cg, err := b.cgroups()
	if err != nil {
		return nil, err
	}
	hosts, err := b.hosts()
	if err != nil {
		return nil, err
	}
	bi, err := b.imageFor(ctx, p.runtime, p.image)
	if err != nil {
		return nil, err
	}
	c.stages.Image = time.Since(c.start)

	uid, err := b.uids.get()
	if err != nil {
		return nil, err
	}
	c.uid = uid
	defer func() {
		if err != nil {
			c.destroy(b)
		}
	}()
	c.dir = filepath.Join(b.opts.StateDir, "run", p.id)
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(filepath.Dir(c.dir), 0o711); err != nil {
		return nil, err
	}
	ln, err := listenChannel(c.dir)
	if err != nil {
		return nil, err
	}
	defer ln.Close()

	t := time.Now()
	specOpts := b.specOpts(p, hosts, c.dir, uid, cg)
	rtName, rtOpts, _ := b.runtimeOpts()
	ctrOpts := []containerd.NewContainerOpts{
		containerd.WithSnapshotter(b.opts.Snapshotter),
	}
	if bi.view {
		ctrOpts = append(ctrOpts, containerd.WithNewSnapshotView(p.id, bi.img))
	} else {
		ctrOpts = append(ctrOpts, containerd.WithNewSnapshot(p.id, bi.img))
	}
	ctrOpts = append(ctrOpts,
		containerd.WithRuntime(rtName, rtOpts),
		containerd.WithContainerLabels(map[string]string{labelInstance: p.id, labelFunction: attr(p.attrs, "function")}),
		containerd.WithNewSpec(specOpts...),
	)
	c.ctr, err = client.NewContainer(ctx, p.id, ctrOpts...)
	if err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	c.stages.Container = time.Since(t)

	t = time.Now()
	stdout := newLineLogger(b.log, append(p.attrs, slog.String("stream", "stdout"))...)
	stderr := newLineLogger(b.log, append(p.attrs, slog.String("stream", "stderr"))...)
	c.logs = []*lineLogger{stdout, stderr}
	c.tail = &hostlog.Tail{Next: stderr}
	c.task, err = c.ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, stdout, c.tail)))
	if err != nil {
		return nil, fmt.Errorf("create task: %w", err)
	}
	c.stages.Task = time.Since(t)
	wctx, cancel := context.WithCancel(b.nsCtx(context.WithoutCancel(ctx)))
	c.cancel = cancel
	if c.exit, err = c.task.Wait(wctx); err != nil {
		return nil, fmt.Errorf("wait for task: %w", err)
	}
	if c.group, err = cg.Open(p.id); err != nil {
		return nil, err
	}
	if p.limits != (cgroup.Limits{}) {
		// Swap off and swappiness 0, which the OCI spec cannot say on v1
		// hosts without swap accounting.
		if err := c.group.SetLimits(p.limits); err != nil {
			return nil, err
		}
	}
	t = time.Now()
	if err := c.task.Start(ctx); err != nil {
		return nil, fmt.Errorf("start task: %w", err)
	}
	c.stages.Start = time.Since(t)

	t = time.Now()
	if c.reqW, c.respR, err = accept(ctx, ln, c.exit); err != nil {
		if last := c.tail.LastLine(); last != "" {
			err = fmt.Errorf("%w (its last output: %s)", err, last)
		}
		return nil, err
	}
	c.stages.Connect = time.Since(t)
	return c, nil
}

// accept takes the shim's connection, giving up when ctx ends or the task
// exits, and hands the shim the host's ends of two pipes over it
// (SCM_RIGHTS): the requests' read end and the responses' write end. The
// channel itself is then the same pair of pipes process mode uses; a unix
// socket carrying the calls would cost some 5 µs more per write on each
// side (measured with strace -c: 12 µs per write on the socket, 7 µs on a
// pipe).
func accept(ctx context.Context, ln *net.UnixListener, exit <-chan containerd.ExitStatus) (req, resp *os.File, err error) {
	type res struct {
		conn *net.UnixConn
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.AcceptUnix()
		ch <- res{c, err}
	}()
	var r res
	select {
	case r = <-ch:
	case st := <-exit:
		_ = ln.Close()
		r = <-ch
		r.err = errdefs.New(errdefs.ErrCrashed, "see the instance's log for its output",
			"container exited before its runtime host connected: %s", exitReason(st))
	case <-ctx.Done():
		_ = ln.Close()
		r = <-ch
		r.err = fmt.Errorf("wait for the runtime host to connect: %w", ctx.Err())
	}
	if r.err != nil {
		if r.conn != nil {
			r.conn.Close()
		}
		return nil, nil, r.err
	}
	defer r.conn.Close()
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("channel pipes: %w", err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		return nil, nil, fmt.Errorf("channel pipes: %w", err)
	}
	// Fd puts the host's ends in blocking mode, as a host expects.
	rights := unix.UnixRights(int(reqR.Fd()), int(respW.Fd()))
	_, _, err = r.conn.WriteMsgUnix([]byte{'w'}, rights, nil)
	reqR.Close()
	respW.Close()
	if err != nil {
		reqW.Close()
		respR.Close()
		return nil, nil, fmt.Errorf("hand the channel to the container: %w", err)
	}
	return reqW, respR, nil
}

// destroy removes everything create made so far.
func (c *created) destroy(b *Backend) {
	if c.reqW != nil {
		c.reqW.Close()
	}
	if c.respR != nil {
		c.respR.Close()
	}
	ctx, cancel := context.WithTimeout(b.nsCtx(context.Background()), 30*time.Second)
	defer cancel()
	var errs []error
	if c.task != nil {
		_ = c.task.Kill(ctx, syscall.SIGKILL)
		if _, err := c.task.Delete(ctx, containerd.WithProcessKill); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete task: %w", err))
		}
	}
	if c.cancel != nil {
		c.cancel()
	}
	if c.ctr != nil {
		if err := c.ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete container: %w", err))
		}
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
	for _, l := range c.logs {
		l.Flush()
	}
	if c.uid != 0 {
		b.uids.put(c.uid)
		c.uid = 0
	}
	if err := errors.Join(errs...); err != nil {
		b.log.Warn("remove container", "id", c.id, "err", err)
	}
}

// specOpts build the container's OCI spec: containerd's defaults (new
// PID, IPC, UTS, mount and network namespaces; /proc, /dev, /sys, /run),
// then wisp's isolation on top.
func (b *Backend) specOpts(p params, hosts, dir string, uid int, cg *cgroup.Manager) []oci.SpecOpts {
	shimArg, _ := jsonString(p.shim)
	ro := []string{"rbind", "ro", "nosuid", "nodev"}
	mounts := []specs.Mount{
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(p.tmpSize, 10)}},
		{Destination: runtime.SandboxCodeDir, Type: "bind", Source: p.codeDir, Options: ro},
		{Destination: runtime.SandboxRuntimeDir, Type: "bind", Source: hosts, Options: ro},
		{Destination: channelDir, Type: "bind", Source: dir, Options: append(ro, "noexec")},
	}
	opts := []oci.SpecOpts{
		oci.WithProcessArgs(shimPath, InitArg, shimArg),
		oci.WithProcessCwd("/tmp"),
		withEnv(p.env),
		oci.WithUIDGID(uint32(uid), uint32(uid)),
		withoutSupplementaryGroups,
		withoutCapabilities,
		oci.WithNoNewPrivileges,
		oci.WithRootFSReadonly(),
		oci.WithMounts(mounts),
		oci.WithHostname(hostname(p.id)),
		oci.WithCgroup("/" + cg.Name() + "/" + p.id),
		withRlimits,
	}
	if p.limits.MemoryBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(p.limits.MemoryBytes)))
	}
	if p.limits.MilliCPU > 0 {
		period := uint64(cgroup.CPUPeriod.Microseconds())
		opts = append(opts, oci.WithCPUCFS(max(p.limits.MilliCPU*int64(period)/1000, 1000), period))
	}
	if p.limits.Pids > 0 {
		opts = append(opts, oci.WithPidsLimit(p.limits.Pids))
	}
	if p.network == function.NetworkHost {
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostHostsFile, oci.WithHostResolvconf)
	}
	// Last: the profile allows system calls by the capabilities the spec
	// grants (none).
	return append(opts, seccomp.WithDefaultProfile())
}

// withEnv replaces the default environment with env.
func withEnv(env []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.Env = append([]string(nil), env...)
		return nil
	}
}

// withoutSupplementaryGroups leaves the process its primary group only
// (containerd adds the gid to the supplementary list).
func withoutSupplementaryGroups(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Process.User.AdditionalGids = nil
	return nil
}

// withoutCapabilities empties every capability set.
func withoutCapabilities(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: []string{}, Effective: []string{}, Permitted: []string{}, Inheritable: []string{}, Ambient: []string{},
	}
	return nil
}

// withRlimits adds no core dumps to containerd's default open-files limit.
func withRlimits(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_CORE", Hard: 0, Soft: 0})
	return nil
}

// hostname is "wisp-" and the first 12 characters of the id that are
// valid in a host name.
func hostname(id string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(id) {
		if sb.Len() == 12 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			sb.WriteRune(r)
		}
	}
	return "wisp-" + sb.String()
}

func attr(attrs []slog.Attr, key string) string {
	for _, a := range attrs {
		if a.Key == key {
			return a.Value.String()
		}
	}
	return ""
}

// readableByOthers checks that the container's uid can list and read dir.
func readableByOthers(dir string) error {
	if dir == "" {
		return errdefs.Invalidf("pass the function's code directory", "no code directory")
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("function code: %w", err)
	}
	if st.Mode().Perm()&0o005 != 0o005 {
		return errdefs.New(errdefs.ErrUnavailable,
			"store function code world-readable (directories 0755, files 0644): containers run as unprivileged uids",
			"function code at %s has mode %v, which the container's uid cannot read", dir, st.Mode().Perm())
	}
	return nil
}
