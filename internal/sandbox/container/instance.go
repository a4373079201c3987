package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"golang.org/x/sys/unix"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// instance is one running container with its channel.
type instance struct {
	*created
	spec *function.Spec
	b    *Backend
	conn *runtime.Conn
	// stage is the host directory mounted at /code of a spare container,
	// removed with the instance ("" for containers made on demand).
	stage string

	exited chan struct{} // closed once status is set
	status containerd.ExitStatus

	done      chan struct{} // closed by watch
	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
}

var _ sandbox.Instance = (*instance)(nil)

// newInstance wraps a created container whose host has been told its
// function (directly, or by a load frame) and waits for the ready frame.
// On failure the instance is closed and the error says why.
func (b *Backend) newInstance(ctx context.Context, id string, spec *function.Spec, c *created) (*instance, runtime.Ready, error) {
	inst := &instance{
		created: c,
		spec:    spec,
		b:       b,
		conn:    runtime.NewConn(c.reqW, c.respR, b.opts.Conn),
		exited:  make(chan struct{}),
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}
	c.id = id
	inst.conn.SetKill(inst.kill)
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

// watch records the task's exit and closes done once the container can no
// longer serve: its task exited, its channel broke, or it was closed.
func (i *instance) watch() {
	go func() {
		st, ok := <-i.exit
		if ok {
			i.status = st
		}
		close(i.exited)
	}()
	select {
	case <-i.exited:
	case <-i.conn.Done():
	case <-i.closing:
	}
	close(i.done)
}

func (i *instance) ID() string { return i.id }

// StartStages maps the container's start stages onto the common breakdown.
func (i *instance) StartStages() sandbox.StartStages {
	st := i.stages
	if st.Spare {
		return sandbox.StartStages{Sandbox: st.Staged, Import: max(st.Total-st.Staged, st.HostInit), Provisioned: true}
	}
	return sandbox.StartStages{
		Sandbox: st.Image + st.Container + st.Task + st.Start + st.Connect,
		Runtime: max(st.Ready-st.HostInit, 0),
		Import:  st.HostInit,
	}
}

func (i *instance) Done() <-chan struct{} { return i.done }

// Serial says the runtime host serves calls one at a time, in order.
func (i *instance) Serial() bool { return i.conn.Serial() }

// Invoke sends one call over the channel. A call whose ctx ends kills the
// container at once and returns an errdefs.ErrTimeout error; a container
// that dies during the call gives an errdefs.ErrCrashed error that says
// why.
func (i *instance) Invoke(ctx context.Context, req *sandbox.Request) (*sandbox.Response, error) {
	resp, err := i.conn.RoundTrip(ctx, req)
	if err == nil {
		return resp, nil
	}
	return nil, sandbox.CallError(ctx, i.id, err, i.kill, i.crashReason)
}

// kill sends SIGKILL to every process of the container. The cgroup is
// killed directly (no round trip through containerd and its shim).
func (i *instance) kill() {
	if i.group != nil {
		if err := i.group.Kill(); err == nil {
			return
		}
	}
	ctx, cancel := context.WithTimeout(i.b.nsCtx(context.Background()), 10*time.Second)
	defer cancel()
	_ = i.task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)
}

// crashGrace is how long crashReason waits for the exit status after the
// channel broke (the socket closes a moment before the shim reports it).
const crashGrace = 2 * time.Second

// crashReason turns a broken channel into an errdefs.ErrCrashed error that
// says why the container died. A load error from the host is kept as is.
func (i *instance) crashReason(cause error) error {
	var le *runtime.LoadError
	if errors.As(cause, &le) {
		return cause
	}
	select {
	case <-i.exited:
	case <-time.After(crashGrace):
	}
	if i.group != nil {
		if u, err := i.group.Usage(); err == nil && u.OOMKills > 0 {
			return errdefs.New(errdefs.ErrCrashed,
				"raise the function's memory limit (memory: in its spec) or make it use less",
				"memory limit %s exceeded", i.spec.Memory)
		}
	}
	select {
	case <-i.exited:
	default:
		i.kill() // alive but deaf: no use to anyone
		return errdefs.New(errdefs.ErrCrashed, "", "runtime host closed its channel: %v", cause)
	}
	msg := "runtime host " + exitReason(i.status)
	if last := i.tail.LastLine(); last != "" {
		msg += ": " + last
	}
	return errdefs.New(errdefs.ErrCrashed, "see the instance's log for its output", "%s", msg)
}

// exitReason says how a task ended: "exit status 1", "killed by signal 9
// (killed)".
func exitReason(st containerd.ExitStatus) string {
	if err := st.Error(); err != nil {
		return "ended: " + err.Error()
	}
	code := st.ExitCode()
	if code > 128 && code < 128+65 {
		sig := syscall.Signal(code - 128)
		return fmt.Sprintf("killed by signal %d (%s)", int(sig), unix.SignalName(sig))
	}
	return fmt.Sprintf("exit status %d", code)
}

// Usage reads the container's cgroup.
func (i *instance) Usage() sandbox.Usage {
	if i.group == nil {
		return sandbox.Usage{}
	}
	u, err := i.group.Usage()
	if err != nil {
		return sandbox.Usage{}
	}
	return sandbox.Usage{CPUTime: u.CPUTime, MemoryBytes: u.MemoryBytes, MemoryPeak: u.MemoryPeak, OOMKills: u.OOMKills}
}

// Close kills the container and removes its task, container record,
// snapshot, cgroup, channel directory and stage directory.
func (i *instance) Close() error {
	i.closeOnce.Do(func() {
		close(i.closing)
		cerr := i.conn.Close()
		i.reqW, i.respR = nil, nil // closed by the Conn
		i.kill()
		i.created.destroy(i.b)
		var err error
		if i.stage != "" {
			err = os.RemoveAll(i.stage)
		}
		if err != nil {
			i.closeErr = fmt.Errorf("close instance %s: %w", i.id, errors.Join(err, cerr))
		}
	})
	return i.closeErr
}
