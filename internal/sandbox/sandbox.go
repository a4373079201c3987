// Package sandbox defines the contract every execution mode implements
// (process, container, microvm): a Backend starts Instances of a function,
// and an Instance serves calls over one persistent channel to the runtime
// host inside it. The scheduler owns instances; backends own isolation.
//
// Data path: scheduler → Backend.Start (cold) → Instance.Invoke (every call)
// → runtime host → handle(request).
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

// Backend is one execution mode.
type Backend interface {
	// Name is the execution mode this backend implements ("process").
	Name() string
	// Check reports why this mode cannot run on this machine, with the fix
	// (an errdefs.ErrUnavailable error), or nil.
	Check(ctx context.Context) error
	// Start creates and starts one isolated instance of a function and
	// returns once its runtime host has loaded the handler and is ready for
	// calls. A handler that fails to load is an errdefs.ErrCrashed error
	// whose message carries the reason.
	Start(ctx context.Context, opts StartOptions) (Instance, error)
	// Cleanup removes what earlier runs of this backend left behind
	// (sandboxes, cgroups, mounts) after a crash. Called once at startup.
	Cleanup(ctx context.Context) error
}

// StartOptions describe the instance to start.
type StartOptions struct {
	ID string // unique instance id, used for cgroup and log names
	// Function is the function's reference (function.Ref: unique across
	// namespaces, unlike Spec.Name); "" means Spec.Name.
	Function string
	Spec     *function.Spec // limits, runtime, handler, environment
	CodeDir  string         // unpacked function code on the host, mounted read-only
	Version  string         // code digest, for logs
}

// Instance is one running sandbox with a runtime host inside.
type Instance interface {
	// ID returns the instance id given in StartOptions.
	ID() string
	// Invoke sends one call and waits for its response. When ctx ends
	// first, Invoke returns an errdefs.ErrTimeout error and the instance is
	// no longer usable (the caller closes it). When the instance dies during
	// the call, Invoke returns an errdefs.ErrCrashed error that says why
	// ("memory limit 64Mi exceeded", "exit status 1").
	Invoke(ctx context.Context, req *Request) (*Response, error)
	// Done is closed when the instance has died or been closed.
	Done() <-chan struct{}
	// Serial says the instance serves calls one at a time in the order
	// they were sent, so that calls may queue inside it behind a running
	// one (pipelining). Invoke of a queued call whose ctx ends before its
	// turn, or whose instance dies before its turn, returns an
	// ErrNotStarted error and leaves the instance usable (or dead, for the
	// latter) without killing the running call.
	Serial() bool
	// Usage reads the instance's resource use from its cgroup.
	Usage() Usage
	// Close stops the instance and removes everything it created. It is
	// safe to call more than once.
	Close() error
}

// Request is one call to a function.
type Request struct {
	ActivationID string
	Method       string
	Path         string // path below /function/{name}, always starting with "/"
	RawQuery     string
	Header       http.Header
	Body         []byte
}

// Response is what the handler returned. Handler exceptions are responses
// too (Status 500, Error set, traceback in Logs); only sandbox failures are
// Invoke errors.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Error is the handler's exception message, if it raised one.
	Error string
	// Logs is what the handler wrote to stdout and stderr during this call
	// (and its traceback), truncated to the runtime's log limit.
	Logs []byte
	// Queued is how long the call waited inside a serial instance behind
	// calls sent before it (pipelining); 0 when it started at once.
	Queued time.Duration
	// Ran is how long the handler ran, as the runtime host measured it;
	// else, on a serial instance, from the call's turn to its response
	// being read; else 0.
	Ran time.Duration
}

// ErrNotStarted marks a call to a serial instance that was not the one
// running there: the instance died while it waited behind another call,
// or had no room in its channel for it (it never started: wrapped with
// the cause, the instance's errdefs.ErrCrashed error for the former; send
// it to another instance), or its ctx ended while it waited, or just
// as its turn came (wrapped with errdefs.ErrTimeout: answer 504 and keep
// the instance; if the host did start it, the instance is killed should
// it run past its deadline).
var ErrNotStarted = errors.New("call did not start")

// Usage is an instance's resource use since it started.
type Usage struct {
	CPUTime     time.Duration
	MemoryBytes int64 // current
	MemoryPeak  int64 // high-water mark
	OOMKills    int
}

// StartStages is where an instance's start went, for the cold-start
// breakdown of the call that waited for it.
type StartStages struct {
	// Sandbox is making the isolation (namespaces or container, cgroup,
	// mounts, uid) or, from a pre-provisioned one, claiming it and staging
	// the code and limits into it.
	Sandbox time.Duration
	// Runtime is the interpreter's start-up before the runtime host runs
	// (0 for pre-provisioned sandboxes, whose host started ahead of demand).
	Runtime time.Duration
	// Import is the host's own account of loading the handler (module
	// import and the host's set-up).
	Import time.Duration
	// Provisioned says the sandbox was made ahead of demand.
	Provisioned bool
}

// StageReporter is implemented by instances that know how their start was
// spent.
type StageReporter interface {
	StartStages() StartStages
}

// CallError turns the error of a call that failed on instance id's channel
// into the error Invoke returns, as every backend does: a call whose ctx
// ended (or that timed out) is an errdefs.ErrTimeout error, after kill has
// stopped the instance (its handler may still be running); a broken
// channel is the errdefs.ErrCrashed error crash makes of it, which says
// why the instance died.
//
// A call that never started (ErrNotStarted) neither kills nor is explained.
func CallError(ctx context.Context, id string, err error, kill func(), crash func(error) error) error {
	switch {
	case errors.Is(err, ErrNotStarted):
	case errors.Is(err, errdefs.ErrTimeout) || ctx.Err() != nil:
		kill()
		if !errors.Is(err, errdefs.ErrTimeout) {
			err = fmt.Errorf("%w: %w", errdefs.ErrTimeout, err)
		}
	case errors.Is(err, errdefs.ErrCrashed):
		err = crash(err)
	}
	return fmt.Errorf("instance %s: %w", id, err)
}
