package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/keepalive"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// instance is a ready sandbox instance owned by a pool.
type instance struct {
	inst     sandbox.Instance
	startDur time.Duration
	busy     int       // calls in flight on it
	calls    int       // calls it has taken
	lastUsed time.Time // when it last went idle
	// ttl is how long it may stay idle from lastUsed: the pool's keep_alive,
	// or with keep_alive auto the policy's window when it went idle.
	ttl  time.Duration
	gone bool // removed from the pool (dead, evicted or closing)
	// serial says its host serves calls one at a time in order, so calls
	// may queue inside it (sandbox.Instance.Serial).
	serial bool
	// progress is when a call on it last ended (or it became ready): how
	// long its current call has run, at most.
	progress time.Time
}

type lease struct {
	inst *instance
	cold bool
	// piped says the call was queued inside a busy serial instance.
	piped bool
}

type waiter struct {
	ch   chan lease // buffered 1; receives the lease when dispatched
	pipe bool       // the call may be queued inside a busy instance
	// err is set (under pool.mu) instead of a lease when the pool cannot
	// serve the waiter; ch is then closed.
	err error
}

// pool holds the instances of one function version. Its mu guards every
// field below it.
type pool struct {
	s         *Scheduler
	target    *Target
	backend   sandbox.Backend
	keepAlive time.Duration // fixed keep-alive; with policy, its fallback
	maxInst   int
	conc      int
	// policy learns the function's idle times (keep_alive: auto); nil for
	// a fixed keep-alive. It is shared with the pools of the function's
	// other versions and has its own lock, taken after mu, never before.
	policy *keepalive.Policy

	ctx    context.Context // cancelled on shutdown; parent of instance starts
	cancel context.CancelFunc

	mu       sync.Mutex
	all      map[*instance]struct{} // ready instances
	avail    []*instance            // instances with spare capacity, most recently used last
	busyN    int                    // instances with busy > 0
	starting int
	waiters  []*waiter
	retired  bool // replaced by a newer version or deleted: close instances when idle
	down     bool // shut down: close everything, refuse waiters
	// prewarm is the pending pre-warm of a keep_alive auto pool (nil when
	// none); prewarmGen tells a timer that fired after being replaced or
	// cancelled that it is stale.
	prewarm    *time.Timer
	prewarmGen uint64
	lastStart  time.Duration // the last instance start's duration
	// execAvg is a moving average of the time calls take inside an
	// instance (execN samples so far): pipelining is for short calls.
	execAvg time.Duration
	execN   int
}

// newPool returns the pool of t. It is called with s.mu held (poolFor), so it
// may read s.pools: a keep_alive auto function keeps the policy, and so the
// idle times learned, of its previous version's pool.
func newPool(s *Scheduler, t *Target, b sandbox.Backend) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pool{
		s:         s,
		target:    t,
		backend:   b,
		keepAlive: t.Spec.KeepAlive.D(),
		maxInst:   t.Spec.MaxInstances,
		conc:      t.Spec.Concurrency,
		ctx:       ctx,
		cancel:    cancel,
		all:       make(map[*instance]struct{}),
	}
	if t.Spec.KeepAliveAuto {
		if old := s.pools[t.Name]; old != nil && old.policy != nil {
			p.policy = old.policy
			p.policy.SetFallback(p.keepAlive)
		} else {
			p.policy = keepalive.New(policyConfig(p.keepAlive))
		}
	}
	return p
}

// capacity is how many calls one instance may take at once. With
// keep_alive 0 an instance serves exactly one call in its life.
func (p *pool) capacity() int {
	if p.singleUse() {
		return 1
	}
	return p.conc
}

// pipelineMinSamples is how many calls a pool measures before it may
// pipeline.
const pipelineMinSamples = 8

// pipeliningLocked says whether calls may queue inside busy instances at
// all: the node allows it (execution.pipeline_depth), instances serve one
// call at a time (concurrency 1) and are reused, and the function's calls
// are known to be short enough that at least one may wait
// (execution.pipeline_max_wait).
func (p *pool) pipeliningLocked() bool {
	return p.s.cfg.PipelineDepth > 0 && p.conc == 1 && !p.singleUse() &&
		p.execN >= pipelineMinSamples && p.execAvg <= p.s.cfg.PipelineMaxWait
}

// roomLocked says whether one more call may queue inside i: its host is
// serial, fewer than execution.pipeline_depth calls wait behind its running
// one, and those ahead are expected to finish (their count times the
// function's average call time, plus how long the running one has run
// already) within execution.pipeline_max_wait.
func (p *pool) roomLocked(i *instance, now time.Time) bool {
	return i.serial && !i.gone && i.busy > 0 && i.busy <= p.s.cfg.PipelineDepth &&
		time.Duration(i.busy)*p.execAvg+now.Sub(i.progress) <= p.s.cfg.PipelineMaxWait
}

// observeExecLocked adds one call's time inside its instance to execAvg
// (an exponential moving average, weight 1/8).
func (p *pool) observeExecLocked(d time.Duration) {
	if d < 0 {
		return
	}
	if p.execN == 0 {
		p.execAvg = d
	} else {
		p.execAvg += (d - p.execAvg) / 8
	}
	p.execN++
}

// singleUse says whether every instance serves one call only (keep_alive 0).
// A keep_alive auto pool reuses instances within its window.
func (p *pool) singleUse() bool { return p.keepAlive == 0 && p.policy == nil }

// acquire takes a slot for one call. pipe says it may be queued inside a
// busy serial instance (its request is small enough to sit in the
// channel's buffer).
func (p *pool) acquire(ctx context.Context, pipe bool) (lease, error) {
	if p.policy == nil {
		return p.acquireSlot(ctx, pipe)
	}
	// Every arrival reaches the policy (it measures the idle time since the
	// function's last call ended); a call refused here ends at once.
	p.policy.Arrive()
	l, err := p.acquireSlot(ctx, pipe)
	if err != nil {
		p.policy.Finish()
	}
	return l, err
}

func (p *pool) acquireSlot(ctx context.Context, pipe bool) (lease, error) {
	p.mu.Lock()
	p.cancelPrewarmLocked()
	if p.down {
		p.mu.Unlock()
		return lease{}, ErrClosed
	}
	if len(p.waiters) == 0 {
		if i, piped := p.pickLocked(pipe); i != nil {
			if piped {
				p.scaleLocked()
			}
			p.mu.Unlock()
			return lease{inst: i, piped: piped}, nil
		}
	}
	// Calls beyond those that starting or startable instances will absorb
	// count against the queue bound.
	free := p.maxInst - len(p.all) - p.starting
	if free < 0 {
		free = 0
	}
	absorbed := (p.starting + free) * p.capacity()
	if len(p.waiters)-absorbed >= p.s.cfg.MaxQueue {
		n := len(p.all) + p.starting
		q := len(p.waiters)
		p.mu.Unlock()
		return lease{}, errdefs.WithHint(fmt.Errorf("function %s: all %d instances are busy and %d calls are queued: %w",
			p.target.Name, n, q, errdefs.ErrLimit),
			"retry later, or raise max_instances in the function spec or execution.max_queue in the server config")
	}
	w := &waiter{ch: make(chan lease, 1), pipe: pipe}
	p.waiters = append(p.waiters, w)
	p.maybeStartLocked()
	p.mu.Unlock()

	timer := time.NewTimer(p.s.cfg.QueueTimeout)
	defer timer.Stop()
	var why error
	select {
	case l, ok := <-w.ch:
		if !ok {
			return lease{}, w.err
		}
		return l, nil
	case <-timer.C:
		why = errdefs.WithHint(fmt.Errorf("function %s: no instance became free within the queue timeout of %s: %w",
			p.target.Name, p.s.cfg.QueueTimeout, errdefs.ErrLimit),
			"retry later, or raise max_instances in the function spec or execution.queue_timeout in the server config")
	case <-ctx.Done():
		why = timeoutError(p.target, ctx.Err())
	}
	p.mu.Lock()
	if i := slices.Index(p.waiters, w); i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
		p.mu.Unlock()
		return lease{}, why
	}
	p.mu.Unlock()
	// Dispatched (or failed) while we gave up: hand the lease back unused.
	if l, ok := <-w.ch; ok {
		p.putBack(l)
	}
	return lease{}, why
}

// takeLocked takes a slot on the most recently used instance with spare
// capacity.
func (p *pool) takeLocked() *instance {
	if len(p.avail) == 0 {
		return nil
	}
	i := p.avail[len(p.avail)-1]
	if i.busy == 0 {
		p.busyN++
	}
	i.busy++
	i.calls++
	if i.busy >= p.capacity() || p.singleUse() {
		p.avail = p.avail[:len(p.avail)-1]
	}
	p.notifyLocked()
	return i
}

// pickLocked takes a slot for one call: on an instance with spare
// capacity; else, when pipe allows and the pool pipelines, queued inside
// the busiest serial instance that has room (piped). Packing calls into
// few instances keeps their hosts from sleeping between calls, which is
// where a short call's cost goes; an instance fills only up to what
// pipeline_max_wait allows, and then calls wait for a free one or start
// another.
func (p *pool) pickLocked(pipe bool) (*instance, bool) {
	if i := p.takeLocked(); i != nil {
		return i, false
	}
	if !pipe || !p.pipeliningLocked() {
		return nil, false
	}
	var best *instance
	now := time.Now()
	for i := range p.all {
		if p.roomLocked(i, now) && (best == nil || i.busy > best.busy) {
			best = i
		}
	}
	if best == nil {
		return nil, false
	}
	best.busy++
	best.calls++
	return best, true
}

// scaleLocked starts one more instance, when none is starting and the pool
// is below max_instances, after a call had to queue inside a busy one: an
// instance packed with queued calls uses one CPU, and the pool grows as it
// would have for a call waiting outside, without the call waiting for it.
// The new instance, idle, takes the next call.
func (p *pool) scaleLocked() {
	if p.down || p.retired || p.starting > 0 || len(p.all) >= p.maxInst {
		return
	}
	p.starting++
	p.s.bg.Add(1)
	go p.start(0)
	p.notifyLocked()
}

// dispatchLocked hands free instance slots to waiters, oldest first.
func (p *pool) dispatchLocked(cold bool) {
	for len(p.waiters) > 0 {
		i, piped := p.pickLocked(p.waiters[0].pipe)
		if i == nil {
			return
		}
		w := p.waiters[0]
		p.waiters = slices.Delete(p.waiters, 0, 1)
		w.ch <- lease{inst: i, cold: cold && i.calls == i.busy, piped: piped}
	}
}

// maybeStartLocked starts instances while fewer are starting than calls wait
// and the pool is below max_instances.
func (p *pool) maybeStartLocked() {
	for !p.down && p.starting*p.capacity() < len(p.waiters) && len(p.all)+p.starting < p.maxInst {
		p.starting++
		p.s.bg.Add(1)
		go p.start(0)
	}
	p.notifyLocked()
}

// start starts one instance. ttl, when positive, is how long it may stay
// idle once ready (a pre-warm); otherwise the pool's keep-alive applies.
func (p *pool) start(ttl time.Duration) {
	defer p.s.bg.Done()
	id := p.s.newInstanceID(p.target.Name)
	p.s.refDigest(p.target.Digest, 1)
	ctx, cancel := context.WithTimeout(p.ctx, p.s.cfg.ColdStartTimeout)
	t0 := time.Now()
	inst, err := p.backend.Start(ctx, sandbox.StartOptions{
		ID:       id,
		Function: p.target.Name,
		Spec:     p.target.Spec,
		CodeDir:  p.target.CodeDir,
		Version:  p.target.Digest,
	})
	expired := ctx.Err() != nil
	cancel()
	d := time.Since(t0)
	if err != nil && expired && p.ctx.Err() == nil && !errors.Is(err, errdefs.ErrCrashed) {
		err = errdefs.WithHint(fmt.Errorf("start instance of %s: not ready within cold_start_timeout %s: %w",
			p.target.Name, p.s.cfg.ColdStartTimeout, errdefs.ErrTimeout),
			"make the handler's import faster or raise execution.cold_start_timeout")
	} else if err != nil {
		err = fmt.Errorf("start instance of %s: %w", p.target.Name, err)
	}
	if f := p.s.obs.InstanceStarted; f != nil {
		f(p.target.Name, p.backend.Name(), d, err)
	}
	p.mu.Lock()
	p.starting--
	if err == nil {
		p.lastStart = d
	}
	if err != nil {
		p.s.refDigest(p.target.Digest, -1)
		p.s.log.Warn("instance start failed", "function", p.target.Name, "instance", id, "err", err)
		p.failWaitersLocked(err)
		p.maybeStartLocked()
		p.mu.Unlock()
		return
	}
	if p.down {
		p.notifyLocked()
		p.mu.Unlock()
		_ = inst.Close()
		p.s.refDigest(p.target.Digest, -1)
		return
	}
	if ttl <= 0 {
		ttl = p.idleTTLLocked()
	}
	now := time.Now()
	i := &instance{inst: inst, startDur: d, lastUsed: now, ttl: ttl, serial: inst.Serial(), progress: now}
	p.all[i] = struct{}{}
	p.avail = append(p.avail, i)
	p.dispatchLocked(true)
	if p.retired && i.busy == 0 {
		p.removeLocked(i)
		p.mu.Unlock()
		p.closeInstance(i, "retired")
		return
	}
	p.notifyLocked()
	p.mu.Unlock()
	p.s.bg.Add(1)
	go p.watch(i)
}

// failWaitersLocked fails the oldest waiter with a start error; when no
// instance is alive or starting, it fails them all, since starting again
// would most likely fail the same way.
func (p *pool) failWaitersLocked(err error) {
	n := 1
	if len(p.all) == 0 && p.starting == 0 {
		n = len(p.waiters)
	}
	for ; n > 0 && len(p.waiters) > 0; n-- {
		w := p.waiters[0]
		p.waiters = slices.Delete(p.waiters, 0, 1)
		w.err = err
		close(w.ch)
	}
}

// watch removes an instance from the pool when it dies on its own.
func (p *pool) watch(i *instance) {
	defer p.s.bg.Done()
	select {
	case <-i.inst.Done():
	case <-p.ctx.Done():
		return
	}
	p.mu.Lock()
	if i.gone {
		p.mu.Unlock()
		return
	}
	p.removeLocked(i)
	p.maybeStartLocked()
	p.mu.Unlock()
	p.s.log.Warn("instance died", "function", p.target.Name, "instance", i.inst.ID())
	p.closeInstance(i, "died")
}

// removeLocked takes an instance out of the pool's lists.
func (p *pool) removeLocked(i *instance) {
	if i.gone {
		return
	}
	i.gone = true
	if i.busy > 0 {
		p.busyN--
	}
	delete(p.all, i)
	if j := slices.Index(p.avail, i); j >= 0 {
		p.avail = slices.Delete(p.avail, j, j+1)
	}
	p.notifyLocked()
}

func (p *pool) closeInstance(i *instance, reason string) {
	p.s.bg.Add(1)
	go func() {
		defer p.s.bg.Done()
		if err := i.inst.Close(); err != nil {
			p.s.log.Warn("close instance", "function", p.target.Name, "instance", i.inst.ID(), "err", err)
		}
		p.s.refDigest(p.target.Digest, -1)
		if f := p.s.obs.InstanceStopped; f != nil {
			f(p.target.Name, reason)
		}
	}()
}

// release returns a lease after a call. callErr is the Invoke error: any
// sandbox failure (crash, timeout) takes the instance out of service, except
// a call that gave up while it waited inside a serial instance (the
// instance goes on). exec is the call's time inside the instance (negative
// when it never ran there).
func (p *pool) release(l lease, callErr error, exec time.Duration) {
	var d keepalive.Decision
	fnIdle := false
	if p.policy != nil {
		d, fnIdle = p.policy.Finish()
	}
	switch {
	case errors.Is(callErr, sandbox.ErrNotStarted):
		// The call did not run there: the instance is as good as before,
		// unless it died (then watch takes it out).
		select {
		case <-l.inst.inst.Done():
		default:
			callErr = nil
		}
		exec = -1
	case errors.Is(callErr, errdefs.ErrTooLarge):
		callErr = nil // its channel stays usable
	}
	p.releaseSlot(l, callErr, d, fnIdle, exec)
}

// releaseSlot frees a lease's slot. With keep_alive auto, d is the policy's
// decision and fnIdle says whether the call left the function idle: then,
// if the decision is to pre-warm, every idle instance is unloaded and one is
// loaded again d.PreWarm later.
//
// exec is the call's time inside the instance, for the pool's average
// (negative: it did not run there).
func (p *pool) releaseSlot(l lease, callErr error, d keepalive.Decision, fnIdle bool, exec time.Duration) {
	i := l.inst
	p.mu.Lock()
	p.observeExecLocked(exec)
	i.progress = time.Now()
	i.busy--
	if i.busy == 0 && !i.gone {
		p.busyN--
	}
	auto := p.policy != nil
	idleNow := i.busy == 0 && len(p.waiters) == 0
	unload := auto && fnIdle && d.PreWarm > 0 && len(p.waiters) == 0 && !p.retired && !p.down
	var reason string
	switch {
	case i.gone:
	case callErr != nil:
		reason = "failed"
	case p.singleUse():
		reason = "keep_alive 0"
	case (p.retired || p.down) && idleNow:
		reason = "retired"
	case auto && idleNow && d.Window() == 0:
		reason = "keep_alive 0" // not yet representative, and the fallback is 0
	case unload && idleNow:
		reason = "keep_alive" // unloaded until the pre-warm
	}
	var victims []*instance
	if unload {
		for _, j := range slices.Clone(p.avail) {
			if j != i && j.busy == 0 {
				p.removeLocked(j)
				victims = append(victims, j)
			}
		}
		p.schedulePrewarmLocked(d)
	}
	defer func() {
		for _, j := range victims {
			p.closeInstance(j, "keep_alive")
		}
	}()
	if reason != "" && !i.gone {
		p.removeLocked(i)
		p.maybeStartLocked()
		p.mu.Unlock()
		p.closeInstance(i, reason)
		return
	}
	if i.gone {
		p.notifyLocked()
		p.mu.Unlock()
		return
	}
	if i.busy == 0 {
		i.lastUsed = time.Now()
		if auto {
			i.ttl = d.Window()
		}
	}
	// Move to the most-recently-used end of avail (unless calls queued
	// inside it still fill it).
	if j := slices.Index(p.avail, i); j >= 0 {
		p.avail = slices.Delete(p.avail, j, j+1)
	}
	if i.busy < p.capacity() {
		p.avail = append(p.avail, i)
	}
	p.dispatchLocked(false)
	p.notifyLocked()
	p.mu.Unlock()
}

// putBack returns a lease that was dispatched to a waiter who had already
// given up; the slot was never used.
func (p *pool) putBack(l lease) {
	i := l.inst
	p.mu.Lock()
	i.calls--
	p.mu.Unlock()
	// The waiter's acquire ends the call with the policy itself.
	var d keepalive.Decision
	if p.policy != nil {
		d = p.policy.Decide()
	}
	p.releaseSlot(lease{inst: i}, nil, d, false, -1)
}

func (p *pool) evictIdle(now time.Time) {
	if p.keepAlive <= 0 && p.policy == nil {
		return
	}
	var victims []*instance
	p.mu.Lock()
	for _, i := range slices.Clone(p.avail) {
		if i.busy == 0 && now.Sub(i.lastUsed) >= i.ttl {
			p.removeLocked(i)
			victims = append(victims, i)
		}
	}
	p.mu.Unlock()
	for _, i := range victims {
		p.s.log.Debug("evict idle instance", "function", p.target.Name, "instance", i.inst.ID(), "keep_alive", i.ttl)
		p.closeInstance(i, "keep_alive")
	}
}

// retire stops the pool taking new calls (a newer version replaced it or the
// function was deleted). Idle instances close now, busy ones after their
// calls.
func (p *pool) retire() {
	var victims []*instance
	p.mu.Lock()
	p.retired = true
	p.cancelPrewarmLocked()
	if len(p.waiters) == 0 {
		for _, i := range slices.Clone(p.avail) {
			if i.busy == 0 {
				p.removeLocked(i)
				victims = append(victims, i)
			}
		}
	}
	p.mu.Unlock()
	for _, i := range victims {
		p.closeInstance(i, "retired")
	}
}

// shutdown closes every instance and fails every waiter.
func (p *pool) shutdown() {
	p.mu.Lock()
	p.down = true
	p.cancelPrewarmLocked()
	for _, w := range p.waiters {
		w.err = ErrClosed
		close(w.ch)
	}
	p.waiters = nil
	var victims []*instance
	for i := range p.all {
		victims = append(victims, i)
	}
	for _, i := range victims {
		p.removeLocked(i)
	}
	p.mu.Unlock()
	p.cancel()
	for _, i := range victims {
		p.closeInstance(i, "shutdown")
	}
}

func (p *pool) stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{
		Function: p.target.Name,
		Version:  p.target.Version,
		Starting: p.starting,
		Idle:     len(p.all) - p.busyN,
		Busy:     p.busyN,
		Queued:   len(p.waiters),
	}
}

func (p *pool) notifyLocked() {
	if f := p.s.obs.InstancesChanged; f != nil {
		f(p.target.Name, p.starting, len(p.all)-p.busyN, p.busyN)
	}
}
