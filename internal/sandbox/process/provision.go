package process

// Pre-provisioned sandboxes.
//
// Most of a Python cold start is spent before the function matters: the
// sandbox init (clone, Go runtime, mounts, pivot_root, seccomp), then the
// interpreter and the host's imports. A spare is all of that done ahead of
// demand: a complete sandbox (own namespaces, cgroup, uid, read-only root,
// private /tmp, seccomp) whose Python host has started and waits, with an
// empty stage directory of its own mounted read-only at /code.
//
// Claiming a spare for a function: hard-link the function's code into the
// stage directory (the sandbox sees it at once through its bind mount),
// apply the function's cgroup limits, and send the host one load frame
// (handler, environment). The host imports the handler and says ready. So
// the call still pays for everything that depends on the function (its
// code, limits, environment and import), and nothing is shared: a spare
// serves exactly one instance of one function and is never returned.
//
// Spares exist for Python and Node runtimes and for functions the spare fits:
// network none (the default) and memory of at least twice the configured
// /tmp size (the private /tmp is sized when the sandbox is made; an
// instance made on demand gets min(tmp_size, memory/2)). Others start on
// demand. A runtime's spares are made once a function of that runtime has
// started, and replaced in the background as they are claimed.

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

// spare is one pre-provisioned sandbox: a started host and the stage
// directory mounted at its /code.
type spare struct {
	*hostProc
	id    string
	stage string
}

// discard stops a spare that will serve nothing and gives its uid back.
func (s *spare) discard(b *Backend) {
	s.release(b)
	_ = os.RemoveAll(s.stage)
}

// fits reports whether a spare can serve spec.
func (b *Backend) fits(spec *function.Spec) bool {
	return b.cfg.Provisioned > 0 && b.cfg.StageDir != "" && b.cfg.RuntimeDir != "" &&
		(function.Family(spec.Runtime) == function.RuntimePython || function.Family(spec.Runtime) == function.RuntimeNode) &&
		spec.Network != function.NetworkHost &&
		int64(spec.Memory) >= 2*b.cfg.TmpSize
}

// initSpares sets up the backend's spare set.
func (b *Backend) initSpares() {
	b.spares = &spares.Set[*spare]{
		Size:    b.cfg.Provisioned,
		Make:    b.provision,
		Discard: func(s *spare) { s.discard(b) },
		Dead: func(s *spare) bool {
			select {
			case <-s.sb.Exited():
				return true
			default:
				return false
			}
		},
		Log: b.log,
	}
}

// provision makes one spare for runtime rt.
func (b *Backend) provision(rt string) (*spare, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cg, err := b.cgroups()
	if err != nil {
		return nil, err
	}
	argv, err := b.cfg.Launcher.WaitCommand(rt, runtime.SandboxRuntimeDir)
	if err != nil || argv == nil {
		return nil, fmt.Errorf("runtime %s: no waiting host: %w", rt, err)
	}
	id := "spare-" + strconv.FormatUint(b.seq.Add(1), 10) + "-" + strconv.Itoa(os.Getpid())
	stage := filepath.Join(b.cfg.StageDir, id)
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
	h, err := b.spawnHost(ctx, cg, hostParams{
		id:      id,
		network: function.NetworkNone,
		argv:    argv,
		env:     runtime.BaseEnv(),
		codeDir: stage,
		limits:  cgroup.Limits{}, // the claiming function's limits are applied at claim
		tmpSize: b.cfg.TmpSize,
		attrs:   []slog.Attr{slog.String("instance", id)},
	})
	if err != nil {
		return fail(err)
	}
	s := &spare{hostProc: h, id: id, stage: stage}
	if err := runtime.AwaitIdle(ctx, h.respR, func() { _ = h.sb.Kill() }); err != nil {
		if last := h.tail.LastLine(); last != "" {
			err = fmt.Errorf("%w (its last output: %s)", err, last)
		}
		s.discard(b)
		return nil, fmt.Errorf("provision %s: %w", id, err)
	}
	return s, nil
}

// startFromSpare starts an instance of opts' function in a spare. It
// returns (nil, nil) when no spare fits or is ready, so the caller makes a
// sandbox on demand.
func (b *Backend) startFromSpare(ctx context.Context, opts sandbox.StartOptions) (sandbox.Instance, error) {
	spec := opts.Spec
	if !b.fits(spec) {
		return nil, nil
	}
	start := time.Now() // a claim may wait for a spare being made
	s, ok := b.spares.Claim(ctx, spec.Runtime)
	if !ok {
		return nil, nil
	}
	discard := func(err error) (sandbox.Instance, error) {
		s.discard(b)
		b.log.Warn("pre-provisioned sandbox unusable; starting one on demand", "sandbox", s.id, "err", err)
		return nil, nil
	}
	if err := stage.LinkTree(opts.CodeDir, s.stage); err != nil {
		return discard(fmt.Errorf("stage code: %w", err))
	}
	lim := cgroup.Limits{MemoryBytes: int64(spec.Memory), MilliCPU: int64(spec.CPU), Pids: int64(spec.Pids)}
	if err := s.sb.group.SetLimits(lim); err != nil {
		return discard(err)
	}
	load := runtime.Load{CodeDir: runtime.SandboxCodeDir, Handler: spec.Handler,
		Env: runtime.EnvMap(runtime.HostEnv(spec, b.cfg.Conn.LogLimit))}
	if err := runtime.SendLoad(s.reqW, load); err != nil {
		return discard(err)
	}
	staged := time.Since(start)
	inst, ready, err := b.newInstance(ctx, opts.ID, spec, s.hostProc, s.stage)
	if err != nil {
		return nil, err
	}
	inst.stages = sandbox.StartStages{Sandbox: staged, Provisioned: true,
		Import: max(time.Since(start)-staged, time.Duration(ready.InitMS*float64(time.Millisecond)))}
	b.log.Debug("instance started from a pre-provisioned sandbox", slog.String("function", spec.Name),
		slog.String("instance", opts.ID), slog.String("sandbox", s.id),
		slog.Duration("total", time.Since(start)), slog.Float64("host_init_ms", ready.InitMS))
	return inst, nil
}
