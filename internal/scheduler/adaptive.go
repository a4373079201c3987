package scheduler

import (
	"time"

	"github.com/wisp-faas/wisp/internal/keepalive"
)

// Adaptive keep-alive (keep_alive: auto). The pool of such a function feeds
// every call's arrival and end to a keepalive.Policy and, when a call leaves
// the function idle, follows its decision:
//
//   - not representative yet: keep idle instances for the fixed fallback
//     (the spec's keep_alive, the server's warm_instance_ttl by default);
//   - pre-warm window 0: keep idle instances for the keep-alive window;
//   - pre-warm window > 0: unload every idle instance now, and start one in
//     the background when the pre-warm window (less the last start's
//     duration) has passed, kept for the keep-alive window. A call that
//     arrives first cancels the pre-warm and starts cold as usual; one that
//     arrives after it finds the pre-warmed instance idle and runs warm (a
//     call that waits for a pre-warm still starting is reported cold, since
//     it waited for a start).
//
// An idle instance's window is fixed when it goes idle (instance.ttl) and
// the janitor evicts it after that, so eviction keeps its EvictInterval
// (1 s) resolution.

// Histogram parameters the scheduler gives every keep_alive auto function.
// The bin is 1 s rather than the paper's 1 minute: wisp's instances start in
// milliseconds and many functions are called every few seconds, so 1-minute
// bins would put nearly every idle time in bin 0 and learn nothing; the
// janitor evicts once a second, so finer bins would not be honoured. The
// range stays the paper's 4 hours (the histogram is sparse, so 14,400 bins
// cost nothing where no idle time falls). See the keepalive package doc.
const (
	policyBinWidth = time.Second
	policyRange    = 4 * time.Hour
)

// policyConfig is the policy of a keep_alive auto function whose fixed
// keep-alive is fallback.
func policyConfig(fallback time.Duration) keepalive.Config {
	return keepalive.Config{
		BinWidth: policyBinWidth,
		Range:    policyRange,
		Fallback: fallback,
		Now:      time.Now,
	}
}

// idleTTLLocked is how long an instance that becomes idle now may stay so.
func (p *pool) idleTTLLocked() time.Duration {
	if p.policy == nil {
		return p.keepAlive
	}
	return p.policy.Decide().Window()
}

// schedulePrewarmLocked arranges for an instance to be loaded d.PreWarm
// from now (the call's end), less the time a start takes, so that it is
// ready before the next expected call.
func (p *pool) schedulePrewarmLocked(d keepalive.Decision) {
	p.cancelPrewarmLocked()
	delay := max(d.PreWarm-p.lastStart, 0)
	gen := p.prewarmGen
	ttl := max(d.KeepAlive, time.Nanosecond)
	p.prewarm = time.AfterFunc(delay, func() { p.prewarmNow(gen, ttl) })
	p.s.log.Debug("unload idle instances until the pre-warm", "function", p.target.Name,
		"pre_warm", d.PreWarm, "keep_alive", d.KeepAlive)
}

// cancelPrewarmLocked drops a pending pre-warm (a call arrived first, or the
// pool is retiring).
func (p *pool) cancelPrewarmLocked() {
	if p.prewarm == nil {
		return
	}
	p.prewarm.Stop()
	p.prewarm = nil
	p.prewarmGen++
}

// prewarmNow starts the pre-warm instance unless the pre-warm was cancelled
// or an instance is idle or starting already.
func (p *pool) prewarmNow(gen uint64, ttl time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.prewarmGen || p.prewarm == nil || p.down || p.retired {
		return
	}
	p.prewarm = nil
	p.prewarmGen++
	if len(p.all)-p.busyN > 0 || p.starting > 0 || len(p.all) >= p.maxInst {
		return
	}
	p.starting++
	p.s.bg.Add(1)
	go p.start(ttl)
	p.notifyLocked()
}

// PolicyStats describe the adaptive keep-alive of one keep_alive auto
// function: the current decision and the histogram behind it.
type PolicyStats struct {
	Function string
	Decision keepalive.Decision
	Stats    keepalive.Stats
}

// KeepAlivePolicies returns the policy of every live keep_alive auto pool,
// for the API and metrics to show what was learned.
func (s *Scheduler) KeepAlivePolicies() []PolicyStats {
	s.mu.RLock()
	var out []PolicyStats
	for name, p := range s.pools {
		if p.policy != nil {
			out = append(out, PolicyStats{Function: name, Decision: p.policy.Decide(), Stats: p.policy.Stats()})
		}
	}
	s.mu.RUnlock()
	return out
}
