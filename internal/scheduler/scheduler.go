package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// Config holds the scheduler's node-wide limits (system config, execution
// section).
type Config struct {
	// MaxConcurrent bounds calls in flight across all functions
	// (execution.max_concurrent_functions). 0 means unlimited.
	MaxConcurrent int
	// ColdStartTimeout bounds how long an instance may take to become ready
	// (execution.cold_start_timeout).
	ColdStartTimeout time.Duration
	// MaxQueue bounds each function's wait queue (execution.max_queue).
	MaxQueue int
	// QueueTimeout bounds how long a call waits in the queue before it is
	// refused with 429 (execution.queue_timeout).
	QueueTimeout time.Duration
	// EvictInterval is how often idle instances are checked against their
	// keep_alive. Default 1s.
	EvictInterval time.Duration
	// PipelineDepth is how many calls may queue inside one busy instance
	// whose host serves calls one at a time (execution.pipeline_depth);
	// 0 turns pipelining off.
	PipelineDepth int
	// PipelineMaxWait bounds how long a call may be expected to wait inside
	// an instance: the calls ahead of it times the function's average call
	// time, plus how long the running one has run (execution.pipeline_max_wait).
	PipelineMaxWait time.Duration
}

// Target is one deployed version of a function: what to run.
type Target struct {
	// Name is the function's reference (function.Ref): unique across
	// namespaces, and what pools, instance ids and metrics are named by.
	Name    string
	Version int64
	Digest  string // code digest
	Spec    *function.Spec
	CodeDir string
}

// Namespace returns the namespace of the target's function ("" for the
// default namespace, as activation records store it).
func (t *Target) Namespace() string {
	ns, _ := function.SplitRef(t.Name)
	return function.StoredNamespace(ns)
}

// Timings are the stages of one call, in the order they happen.
type Timings struct {
	Queue time.Duration // waiting for a free instance (includes a cold start it waited for)
	Start time.Duration // creating the instance that served the call, if it was cold
	// Stages break Start down, when the call was cold and the backend
	// reports them (sandbox.StageReporter).
	Stages *sandbox.StartStages
	Exec   time.Duration // the call inside the instance
}

// Result is the outcome of a call that reached an instance.
type Result struct {
	Response   *sandbox.Response
	Cold       bool
	InstanceID string
	Timings    Timings
}

// Observer receives pool events for metrics. All methods must be cheap and
// safe for concurrent use; nil fields are skipped.
type Observer struct {
	InstanceStarted func(function string, mode string, d time.Duration, err error)
	InstanceStopped func(function string, reason string)
	// InstancesChanged reports the count of instances per state for one
	// function after a change ("starting", "idle", "busy").
	InstancesChanged func(function string, starting, idle, busy int)
	// Pipelined reports a call queued inside a busy instance; Redispatched
	// one sent to another instance after the one it was queued in died, or
	// had no room in its channel, before its turn.
	Pipelined    func(function string)
	Redispatched func(function string)
}

// Scheduler routes calls to per-function pools.
type Scheduler struct {
	cfg      Config
	backends map[string]sandbox.Backend
	log      *slog.Logger
	obs      Observer

	global chan struct{} // semaphore of MaxConcurrent slots; nil when unlimited

	mu     sync.RWMutex
	pools  map[string]*pool // by function name: the live version
	closed bool
	// live counts instances per code digest, retired versions included, so
	// code still mounted by an instance is not garbage-collected.
	live map[string]int

	stop     chan struct{}
	bg       sync.WaitGroup // janitor and instance starts/closes
	inflight sync.WaitGroup
	seq      atomic.Uint64
}

// New returns a scheduler over the given backends (keyed by mode name).
func New(cfg Config, backends map[string]sandbox.Backend, log *slog.Logger, obs Observer) *Scheduler {
	if cfg.ColdStartTimeout <= 0 {
		cfg.ColdStartTimeout = 30 * time.Second
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = 10 * time.Second
	}
	if cfg.MaxQueue < 0 {
		cfg.MaxQueue = 0
	}
	if cfg.EvictInterval <= 0 {
		cfg.EvictInterval = time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Scheduler{
		cfg:      cfg,
		backends: backends,
		log:      log,
		obs:      obs,
		pools:    make(map[string]*pool),
		live:     make(map[string]int),
		stop:     make(chan struct{}),
	}
	if cfg.MaxConcurrent > 0 {
		s.global = make(chan struct{}, cfg.MaxConcurrent)
	}
	s.bg.Add(1)
	go s.janitor()
	return s
}

// ErrClosed is returned by Invoke after Close has begun.
var ErrClosed = errdefs.WithHint(fmt.Errorf("server is shutting down: %w", errdefs.ErrUnavailable),
	"retry against another node or after the restart")

// Invoke runs one call of target. ctx bounds the whole call (queue, cold
// start wait and execution); its deadline is the function's timeout.
func (s *Scheduler) Invoke(ctx context.Context, t *Target, req *sandbox.Request) (*Result, error) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	p, err := s.poolFor(t)
	if err != nil {
		return nil, err
	}
	arrived := time.Now()
	if s.global != nil {
		select {
		case s.global <- struct{}{}:
		default:
			if err := s.waitGlobal(ctx, t.Name); err != nil {
				return nil, err
			}
		}
		defer func() { <-s.global }()
	}
	// A call queued inside an instance that died before its turn never
	// started: it goes to another instance.
	pipe := req == nil || len(req.Body) <= pipeMaxBody
	for attempt := 1; ; attempt++ {
		l, err := p.acquire(ctx, pipe)
		if err != nil {
			return nil, err
		}
		if f := s.obs.Pipelined; l.piped && f != nil {
			f(t.Name)
		}
		res := &Result{Cold: l.cold, InstanceID: l.inst.inst.ID()}
		res.Timings.Queue = time.Since(arrived)
		if l.cold {
			res.Timings.Start = l.inst.startDur
			if r, ok := l.inst.inst.(sandbox.StageReporter); ok {
				st := r.StartStages()
				res.Timings.Stages = &st
			}
		}
		execStart := time.Now()
		resp, err := l.inst.inst.Invoke(ctx, req)
		res.Timings.Exec = time.Since(execStart)
		if resp != nil && resp.Queued > 0 {
			res.Timings.Queue += resp.Queued
			res.Timings.Exec -= resp.Queued
		}
		res.Response = resp
		ran := res.Timings.Exec
		if resp != nil && resp.Ran > 0 {
			ran = resp.Ran // without the wake-up of this goroutine
		}
		p.release(l, err, ran)
		if err != nil && errors.Is(err, sandbox.ErrNotStarted) && !errors.Is(err, errdefs.ErrTimeout) &&
			ctx.Err() == nil && attempt < maxAttempts {
			s.log.Debug("call that did not start in its instance goes to another", "function", t.Name, "err", err)
			if f := s.obs.Redispatched; f != nil {
				f(t.Name)
			}
			pipe = false // it waits for a free instance this time
			continue
		}
		if err != nil {
			return res, callError(t, err)
		}
		return res, nil
	}
}

// pipeMaxBody is the largest request body of a call that may queue inside
// a busy instance. Queued frames must fit in the instance's request pipe
// (runtime.Conn refuses one that would not, and the call then waits for a
// free instance); bigger calls do not try.
const pipeMaxBody = 16 << 10

// maxAttempts bounds how often one call is sent to another instance after
// the one it was queued in died, or had no room, before its turn.
const maxAttempts = 3

// callError wraps the error of a call that reached an instance.
func callError(t *Target, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = timeoutError(t, err)
	}
	return fmt.Errorf("invoke %s: %w", t.Name, err)
}

func timeoutError(t *Target, err error) error {
	if errors.Is(err, errdefs.ErrTimeout) {
		return err
	}
	return errdefs.WithHint(fmt.Errorf("function %s ran past its timeout of %s: %w", t.Name, t.Spec.Timeout, errdefs.ErrTimeout),
		"raise timeout in the function spec or make the handler faster")
}

func (s *Scheduler) waitGlobal(ctx context.Context, name string) error {
	timer := time.NewTimer(s.cfg.QueueTimeout)
	defer timer.Stop()
	select {
	case s.global <- struct{}{}:
		return nil
	case <-timer.C:
		return errdefs.WithHint(fmt.Errorf("function %s: node is at its limit of %d concurrent calls: %w",
			name, s.cfg.MaxConcurrent, errdefs.ErrLimit), "retry later or raise execution.max_concurrent_functions")
	case <-ctx.Done():
		return errdefs.WithHint(fmt.Errorf("function %s: waited for a free slot until the call's deadline: %w",
			name, errdefs.ErrTimeout), "retry later or raise execution.max_concurrent_functions")
	}
}

// poolFor returns the live pool of t's version, creating it and retiring the
// previous version's pool as needed.
func (s *Scheduler) poolFor(t *Target) (*pool, error) {
	// Every call comes here: the common case (the live version's pool
	// exists) takes only the read lock.
	s.mu.RLock()
	p := s.pools[t.Name]
	closed := s.closed
	s.mu.RUnlock()
	if !closed && p != nil && p.target.Version == t.Version && p.target.Digest == t.Digest {
		return p, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	p = s.pools[t.Name]
	if p != nil && p.target.Version == t.Version && p.target.Digest == t.Digest {
		return p, nil
	}
	mode := t.Spec.ExecutionMode
	if mode == function.ModeAuto {
		mode = function.ModeProcess
	}
	b, ok := s.backends[mode]
	if !ok {
		return nil, errdefs.WithHint(fmt.Errorf("function %s: execution mode %q is not available on this node: %w",
			t.Name, mode, errdefs.ErrUnavailable), "redeploy with execution_mode: process, or enable the mode in the server config")
	}
	if p != nil {
		p.retire()
	}
	p = newPool(s, t, b)
	s.pools[t.Name] = p
	return p, nil
}

// Forget retires the pool of a deleted function: idle instances close now,
// busy ones after their calls.
func (s *Scheduler) Forget(name string) {
	s.mu.Lock()
	p := s.pools[name]
	delete(s.pools, name)
	s.mu.Unlock()
	if p != nil {
		p.retire()
	}
}

// LiveDigests returns the code digests that instances (starting or running,
// of any version) still use.
func (s *Scheduler) LiveDigests() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.live))
	for d := range s.live {
		out = append(out, d)
	}
	return out
}

func (s *Scheduler) refDigest(d string, delta int) {
	if d == "" {
		return
	}
	s.mu.Lock()
	s.live[d] += delta
	if s.live[d] <= 0 {
		delete(s.live, d)
	}
	s.mu.Unlock()
}

// Stats is a snapshot of one function's pool.
type Stats struct {
	Function string
	Version  int64
	Starting int
	Idle     int
	Busy     int
	Queued   int
}

// Stats returns a snapshot of every live pool.
func (s *Scheduler) Stats() []Stats {
	s.mu.RLock()
	pools := make([]*pool, 0, len(s.pools))
	for _, p := range s.pools {
		pools = append(pools, p)
	}
	s.mu.RUnlock()
	out := make([]Stats, 0, len(pools))
	for _, p := range pools {
		out = append(out, p.stats())
	}
	return out
}

// Close refuses new calls, waits for calls in flight until ctx ends, then
// stops every instance. It returns once every instance is closed.
func (s *Scheduler) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	drained := make(chan struct{})
	go func() { s.inflight.Wait(); close(drained) }()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = fmt.Errorf("drain calls in flight: %w", ctx.Err())
	}
	close(s.stop)
	s.mu.Lock()
	pools := s.pools
	s.pools = map[string]*pool{}
	s.mu.Unlock()
	for _, p := range pools {
		p.shutdown()
	}
	s.bg.Wait()
	return err
}

func (s *Scheduler) janitor() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.EvictInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.mu.RLock()
			pools := make([]*pool, 0, len(s.pools))
			for _, p := range s.pools {
				pools = append(pools, p)
			}
			s.mu.RUnlock()
			for _, p := range pools {
				p.evictIdle(now)
			}
		}
	}
}

func (s *Scheduler) newInstanceID(name string) string {
	n := s.seq.Add(1)
	u := uuid.New()
	// A reference may be 127 bytes ("name.namespace"); containerd takes
	// ids of at most 76, and the sequence and random part keep it unique.
	if len(name) > 48 {
		name = strings.TrimRight(name[:48], "-.")
	}
	return fmt.Sprintf("%s-%d-%x", name, n, u[:4])
}
