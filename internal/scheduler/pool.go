package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// instance is a ready sandbox instance owned by a pool.
type instance struct {
	inst     sandbox.Instance
	startDur time.Duration
	busy     int       // calls in flight on it
	calls    int       // calls it has taken
	lastUsed time.Time // when it last went idle
	gone     bool      // removed from the pool (dead, evicted or closing)
}

type lease struct {
	inst *instance
	cold bool
}

type waiter struct {
	ch chan lease // buffered 1; receives the lease when dispatched
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
	keepAlive time.Duration
	maxInst   int
	conc      int

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
}

func newPool(s *Scheduler, t *Target, b sandbox.Backend) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &pool{
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
}

// capacity is how many calls one instance may take at once. With
// keep_alive 0 an instance serves exactly one call in its life.
func (p *pool) capacity() int {
	if p.keepAlive == 0 {
		return 1
	}
	return p.conc
}

func (p *pool) acquire(ctx context.Context) (lease, error) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		return lease{}, ErrClosed
	}
	if len(p.waiters) == 0 {
		if i := p.takeLocked(); i != nil {
			p.mu.Unlock()
			return lease{inst: i}, nil
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
	w := &waiter{ch: make(chan lease, 1)}
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
	if i.busy >= p.capacity() || (p.keepAlive == 0) {
		p.avail = p.avail[:len(p.avail)-1]
	}
	p.notifyLocked()
	return i
}

// dispatchLocked hands free instance slots to waiters, oldest first.
func (p *pool) dispatchLocked(cold bool) {
	for len(p.waiters) > 0 {
		i := p.takeLocked()
		if i == nil {
			return
		}
		w := p.waiters[0]
		p.waiters = slices.Delete(p.waiters, 0, 1)
		w.ch <- lease{inst: i, cold: cold && i.calls == i.busy}
	}
}

// maybeStartLocked starts instances while fewer are starting than calls wait
// and the pool is below max_instances.
func (p *pool) maybeStartLocked() {
	for !p.down && p.starting*p.capacity() < len(p.waiters) && len(p.all)+p.starting < p.maxInst {
		p.starting++
		p.s.bg.Add(1)
		go p.start()
	}
	p.notifyLocked()
}

func (p *pool) start() {
	defer p.s.bg.Done()
	id := p.s.newInstanceID(p.target.Name)
	p.s.refDigest(p.target.Digest, 1)
	ctx, cancel := context.WithTimeout(p.ctx, p.s.cfg.ColdStartTimeout)
	t0 := time.Now()
	inst, err := p.backend.Start(ctx, sandbox.StartOptions{
		ID:      id,
		Spec:    p.target.Spec,
		CodeDir: p.target.CodeDir,
		Version: p.target.Digest,
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
	i := &instance{inst: inst, startDur: d, lastUsed: time.Now()}
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
// sandbox failure (crash, timeout) takes the instance out of service.
func (p *pool) release(l lease, callErr error) {
	i := l.inst
	p.mu.Lock()
	i.busy--
	if i.busy == 0 && !i.gone {
		p.busyN--
	}
	var reason string
	switch {
	case i.gone:
	case callErr != nil:
		reason = "failed"
	case p.keepAlive == 0:
		reason = "keep_alive 0"
	case (p.retired || p.down) && i.busy == 0 && len(p.waiters) == 0:
		reason = "retired"
	}
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
	}
	// Move to the most-recently-used end of avail.
	if j := slices.Index(p.avail, i); j >= 0 {
		p.avail = slices.Delete(p.avail, j, j+1)
	}
	p.avail = append(p.avail, i)
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
	p.release(lease{inst: i}, nil)
}

func (p *pool) evictIdle(now time.Time) {
	if p.keepAlive <= 0 {
		return
	}
	var victims []*instance
	p.mu.Lock()
	for _, i := range slices.Clone(p.avail) {
		if i.busy == 0 && now.Sub(i.lastUsed) >= p.keepAlive {
			p.removeLocked(i)
			victims = append(victims, i)
		}
	}
	p.mu.Unlock()
	for _, i := range victims {
		p.s.log.Debug("evict idle instance", "function", p.target.Name, "instance", i.inst.ID(), "keep_alive", p.keepAlive)
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
