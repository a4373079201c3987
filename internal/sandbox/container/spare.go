package container

// Spare containers.
//
// Most of a container's cold start is spent before the function matters:
// the snapshot view and container record, containerd's shim, runc create
// and start, the shim's Go start-up, and the interpreter. A spare is all of
// that done ahead of demand: a container (own namespaces, cgroup, uid,
// read-only root, private /tmp, seccomp profile) whose Python or Node host
// has started and waits (runtime.WaitCommand), with an empty stage
// directory of its own bind-mounted read-only at /code.
//
// Claiming a spare for a function: hard-link the function's code into the
// stage directory (the container sees it at once through its bind mount),
// write the function's limits into the container's cgroup, and send the
// host one load frame (handler, environment). The host imports the handler
// and says ready. A spare serves exactly one instance of one function and
// is removed with it.
//
// Spares exist for Python and Node functions with network none that run on
// the locally built base image and have at least twice Options.TmpSize of
// memory (the /tmp tmpfs is sized when the container is made). A runtime's
// spares are made once a function of that runtime has started (or Prepare
// was called for it), and replaced in the background as they are claimed.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/sandbox/cgroup"
	"github.com/wisp-faas/wisp/internal/sandbox/spares"
	"github.com/wisp-faas/wisp/internal/sandbox/stage"
)

// spare is one waiting container and the stage directory at its /code.
type spare struct {
	*created
	stage string
}

func (s *spare) discard(b *Backend) {
	s.destroy(b)
	_ = os.RemoveAll(s.stage)
}

// spareRuntime reports whether runtime rt gets spares at all.
func (b *Backend) spareRuntime(rt string) bool {
	fam := function.Family(rt)
	return b.opts.Spares > 0 && b.opts.BaseImage == "" && (fam == function.RuntimePython || fam == function.RuntimeNode)
}

// fits reports whether a spare can serve spec.
func (b *Backend) fits(spec *function.Spec) bool {
	return b.spareRuntime(spec.Runtime) && spec.Image == "" && spec.Network != function.NetworkHost && int64(spec.Memory) >= 2*b.opts.TmpSize
}

// exited reports whether the spare's task has exited (died idle).
func (s *spare) exited() bool {
	select {
	case <-s.exit:
		return true
	default:
		return false
	}
}

// initSpares sets up the backend's spare set.
func (b *Backend) initSpares() {
	b.spares = &spares.Set[*spare]{
		Size:    b.opts.Spares,
		Make:    b.provision,
		Discard: func(s *spare) { s.discard(b) },
		Dead:    (*spare).exited,
		Log:     b.log,
	}
}

// provision makes one spare for runtime rt.
func (b *Backend) provision(rt string) (*spare, error) {
	ctx, cancel := context.WithTimeout(b.nsCtx(context.Background()), 60*time.Second)
	defer cancel()
	argv, err := b.opts.Launcher.WaitCommand(rt, runtime.SandboxRuntimeDir)
	if err != nil || argv == nil {
		return nil, fmt.Errorf("runtime %s: no waiting host: %w", rt, err)
	}
	id := "spare-" + strconv.FormatUint(b.seq.Add(1), 10) + "-" + strconv.Itoa(os.Getpid())
	stage := filepath.Join(b.opts.StateDir, "stage", id)
	fail := func(err error) (*spare, error) {
		_ = os.RemoveAll(stage)
		return nil, fmt.Errorf("provision %s: %w", id, err)
	}
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return fail(err)
	}
	if err := os.Chmod(stage, 0o755); err != nil {
		return fail(err)
	}
	if err := os.Chmod(filepath.Dir(stage), 0o711); err != nil {
		return fail(err)
	}
	c, err := b.create(ctx, params{
		id:      id,
		runtime: rt,
		network: function.NetworkNone,
		shim:    shimConfig{Argv: argv},
		env:     runtime.BaseEnv(),
		codeDir: stage,
		tmpSize: b.opts.TmpSize,
		attrs:   []slog.Attr{slog.String("instance", id)},
	})
	if err != nil {
		return fail(err)
	}
	s := &spare{created: c, stage: stage}
	if err := runtime.AwaitIdle(ctx, c.respR, func() { c.respR.Close() }); err != nil {
		if last := c.tail.LastLine(); last != "" {
			err = fmt.Errorf("%w (its last output: %s)", err, last)
		}
		s.discard(b)
		return nil, fmt.Errorf("provision %s: %w", id, err)
	}
	return s, nil
}

// startFromSpare starts an instance of opts' function in a spare. It
// returns (nil, nil) when no spare fits or is ready, so the caller makes a
// container on demand.
func (b *Backend) startFromSpare(ctx context.Context, opts sandbox.StartOptions) (sandbox.Instance, error) {
	spec := opts.Spec
	if !b.fits(spec) {
		return nil, nil
	}
	start := time.Now()
	s, ok := b.spares.Claim(ctx, spec.Runtime)
	if !ok {
		return nil, nil
	}
	discard := func(err error) (sandbox.Instance, error) {
		s.discard(b)
		b.log.Warn("spare container unusable; starting one on demand", "container", s.id, "err", err)
		return nil, nil
	}
	if err := stage.LinkTree(opts.CodeDir, s.stage); err != nil {
		return discard(fmt.Errorf("stage code: %w", err))
	}
	lim := cgroup.Limits{MemoryBytes: int64(spec.Memory), MilliCPU: int64(spec.CPU), Pids: int64(spec.Pids)}
	if err := s.group.SetLimits(lim); err != nil {
		return discard(err)
	}
	load := runtime.Load{CodeDir: runtime.SandboxCodeDir, Handler: spec.Handler,
		Env: runtime.EnvMap(runtime.HostEnv(spec, b.opts.Conn.LogLimit))}
	if err := runtime.SendLoad(s.reqW, load); err != nil {
		return discard(err)
	}
	spareID := s.id
	staged := time.Since(start)
	inst, ready, err := b.newInstance(ctx, opts.ID, spec, s.created)
	if err != nil {
		_ = os.RemoveAll(s.stage)
		return nil, err
	}
	inst.stage = s.stage
	inst.stages = Stages{Spare: true, Staged: staged, HostInit: time.Duration(ready.InitMS * float64(time.Millisecond)),
		Total: time.Since(start)}
	b.log.Debug("instance started from a spare container", slog.String("function", spec.Name),
		slog.String("instance", opts.ID), slog.String("container", spareID), slog.Any("stages", inst.stages))
	return inst, nil
}
