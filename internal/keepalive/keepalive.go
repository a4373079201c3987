// Package keepalive is wisp's adaptive keep-alive and pre-warm policy for
// functions deployed with `keep_alive: auto`: the hybrid histogram policy of
// "Serverless in the Wild: Characterizing and Optimizing the Serverless
// Workload at a Large Cloud Provider" (Shahrad et al., USENIX ATC'20, §4.2).
// The scheduler keeps one Policy per function (surviving redeploys); each
// call's arrival and end feed it, and after each call that leaves the
// function idle it answers how long to keep the instance loaded and whether
// to unload it now and load it again ahead of the next expected call.
//
// # The policy
//
// An idle time (IT) is the time from the end of a call that left the
// function with no call in flight to the next call's arrival. The policy
// keeps a histogram of a function's idle times and, when the histogram is
// representative, derives two windows from it:
//
//   - pre-warm window: the histogram's head, its Head-th percentile (5th),
//     minus a Margin (10%), rounded down to a bin edge. The instance is
//     unloaded as soon as the call ends and loaded again that long after the
//     call ended, so that it is warm before the next expected arrival. A
//     pre-warm window of 0 (the head falls in the first bin, or below
//     MinPreWarm) means: do not unload, keep the instance loaded from the
//     call's end.
//   - keep-alive window: the histogram's tail, its Tail-th percentile
//     (99th), plus the Margin, rounded up to a bin edge, counted from the
//     call's end; with a pre-warm, the loaded instance stays for the tail
//     minus the pre-warm window (the paper's "keep-alive window is the
//     distance between the head and the tail").
//
// The head percentile uses a bin's lower edge and the tail its upper edge,
// both on the conservative side (earlier pre-warm, longer keep-alive), as in
// the paper.
//
// # When the histogram is not representative
//
// The policy falls back to a fixed keep-alive (Config.Fallback: the
// function's keep_alive, i.e. the server's execution.warm_instance_ttl when
// the spec says only "auto") and no pre-warm when
//
//   - fewer than MinSamples idle times were observed (5 by default; the
//     paper asks for "enough" samples without a number, 5 is the fewest for
//     which a head and a tail are distinct ranks);
//   - the coefficient of variation (standard deviation over mean) of the
//     bin counts, across every bin of the range, is below MinCV (2, the
//     paper's threshold): a flat histogram has no pattern to predict, a
//     histogram with a few dominant bins does;
//   - more than MaxOutOfRange (50%) of the idle times are beyond Range. The
//     paper forecasts those with ARIMA; wisp does not, it falls back.
//
// Out-of-range idle times count in the percentile ranks (they lie above
// every bin), so a tail that falls among them becomes the whole Range.
//
// # Parameters and bin width
//
// The paper uses 1-minute bins over a 4-hour range, sized for Azure's
// per-app cost of keeping a worker loaded. Config's defaults are those.
// wisp's instances are processes that start in milliseconds and many of its
// functions are called every few seconds, so a 1-minute bin would put most
// of their idle times into bin 0 (pre-warm 0, keep-alive ≥ 1.1 min) and
// learn nothing. The scheduler therefore uses 1-second bins (its eviction
// check runs every second, so finer bins would not be honoured), still over
// 4 hours; the histogram is sparse (a map of the non-empty bins), so the
// 14,400 bins cost memory only where idle times fall. The CV criterion is
// unaffected in meaning by the bin width: samples spread evenly over k of N
// bins give CV = sqrt(N/k - 1), so CV ≥ 2 means "concentrated in less than a
// fifth of the range" whatever the width. Percentiles use the nearest rank
// over all samples.
//
// # Time
//
// Config.Now is the clock (time.Now by default); tests pass a fake clock.
// A Policy is safe for concurrent use.
package keepalive

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Defaults of the paper (§4.2).
const (
	DefaultBinWidth      = time.Minute
	DefaultRange         = 4 * time.Hour
	DefaultHead          = 5.0  // percentile
	DefaultTail          = 99.0 // percentile
	DefaultMargin        = 0.10
	DefaultMinSamples    = 5
	DefaultMinCV         = 2.0
	DefaultMaxOutOfRange = 0.5
)

// Config holds the policy's parameters; a zero field takes its default.
type Config struct {
	// BinWidth is the histogram's resolution (default 1 minute, the
	// paper's; the scheduler uses 1 second, see the package doc).
	BinWidth time.Duration
	// Range is the longest idle time the histogram holds (default 4 hours);
	// longer ones are out of range.
	Range time.Duration
	// Head and Tail are the percentiles (0-100) giving the pre-warm and
	// keep-alive windows (default 5 and 99).
	Head, Tail float64
	// Margin widens both windows: the pre-warm window shrinks and the
	// keep-alive window grows by this fraction (default 0.10). Set it
	// negative for no margin.
	Margin float64
	// MinPreWarm: a pre-warm window shorter than this is 0 (keep loaded).
	// Default 0: only a head in the first bin keeps the instance loaded.
	MinPreWarm time.Duration
	// MinSamples is the fewest idle times for a representative histogram
	// (default 5).
	MinSamples int
	// MinCV is the lowest coefficient of variation of the bin counts for
	// a representative histogram (default 2). Set it negative to disable
	// the check.
	MinCV float64
	// MaxOutOfRange is the largest fraction of idle times beyond Range for a
	// representative histogram (default 0.5).
	MaxOutOfRange float64
	// Fallback is the fixed keep-alive used while the histogram is not
	// representative (the function's keep_alive; 0 is valid: unload at
	// once).
	Fallback time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.BinWidth <= 0 {
		c.BinWidth = DefaultBinWidth
	}
	if c.Range <= 0 {
		c.Range = DefaultRange
	}
	if c.Range < c.BinWidth {
		c.Range = c.BinWidth
	}
	if c.Head <= 0 || c.Head >= 100 {
		c.Head = DefaultHead
	}
	if c.Tail <= 0 || c.Tail > 100 {
		c.Tail = DefaultTail
	}
	if c.Margin == 0 {
		c.Margin = DefaultMargin
	} else if c.Margin < 0 {
		c.Margin = 0
	}
	if c.MinSamples <= 0 {
		c.MinSamples = DefaultMinSamples
	}
	if c.MinCV == 0 {
		c.MinCV = DefaultMinCV
	}
	if c.MaxOutOfRange <= 0 || c.MaxOutOfRange > 1 {
		c.MaxOutOfRange = DefaultMaxOutOfRange
	}
	if c.Fallback < 0 {
		c.Fallback = 0
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Decision is what to do with a function's instances once a call has left it
// idle.
type Decision struct {
	// PreWarm: 0 keeps the instance loaded from the call's end; otherwise
	// unload it now and load one again PreWarm after the call's end.
	PreWarm time.Duration
	// KeepAlive is how long an idle instance stays loaded: from the call's
	// end when PreWarm is 0, from the pre-warm load otherwise.
	KeepAlive time.Duration
	// Representative says whether the windows come from the histogram
	// (true) or are the fixed fallback (false, with Reason saying why).
	Representative bool
	Reason         string
}

// Window is how long after the call's end the function is covered: the end
// of the keep-alive window.
func (d Decision) Window() time.Duration { return d.PreWarm + d.KeepAlive }

// Stats describe a policy's histogram.
type Stats struct {
	Samples    int     // idle times observed, out-of-range ones included
	OutOfRange int     // idle times beyond Range
	CV         float64 // coefficient of variation of the in-range bin counts
}

// Policy learns one function's idle times. Its mu guards every field below
// it; it calls nothing while holding it.
type Policy struct {
	cfg   Config
	nbins int

	mu       sync.Mutex
	fallback time.Duration
	counts   map[int]uint64 // bin index -> idle times in it (non-empty bins only)
	keys     []int          // the keys of counts, ascending
	inRange  uint64         // idle times within Range
	sumSq    float64        // sum over bins of count², for the CV
	oob      uint64         // idle times beyond Range
	inflight int            // calls between Arrive and Finish
	lastEnd  time.Time      // when the function last went idle; zero before the first call ended
}

// New returns a policy with an empty histogram.
func New(cfg Config) *Policy {
	cfg = cfg.withDefaults()
	n := int((cfg.Range + cfg.BinWidth - 1) / cfg.BinWidth)
	return &Policy{cfg: cfg, nbins: n, fallback: cfg.Fallback, counts: make(map[int]uint64)}
}

// Config returns the policy's parameters, defaults filled in.
func (p *Policy) Config() Config { return p.cfg }

// SetFallback changes the fixed keep-alive used while the histogram is not
// representative (a redeploy that changed keep_alive keeps the histogram).
func (p *Policy) SetFallback(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fallback = max(d, 0)
}

// Arrive records a call's arrival. If no call was in flight and one has
// ended before, the time since that end is an idle time; it is returned with
// ok true.
func (p *Policy) Arrive() (idle time.Duration, ok bool) {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight++
	if p.inflight == 1 && !p.lastEnd.IsZero() {
		idle = max(now.Sub(p.lastEnd), 0)
		p.observeLocked(idle)
		return idle, true
	}
	return 0, false
}

// Finish records a call's end (every Arrive needs one Finish). idle says
// whether no call is in flight any more; the decision is the current one
// either way.
func (p *Policy) Finish() (d Decision, idle bool) {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inflight > 0 {
		p.inflight--
	}
	if p.inflight == 0 {
		p.lastEnd = now
		idle = true
	}
	return p.decideLocked(), idle
}

// Observe records one idle time directly.
func (p *Policy) Observe(idle time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.observeLocked(max(idle, 0))
}

func (p *Policy) observeLocked(idle time.Duration) {
	if idle >= p.cfg.Range {
		p.oob++
		return
	}
	b := int(idle / p.cfg.BinWidth)
	c := p.counts[b]
	if c == 0 {
		i, _ := slices.BinarySearch(p.keys, b)
		p.keys = slices.Insert(p.keys, i, b)
	}
	p.counts[b] = c + 1
	p.sumSq += float64(2*c + 1) // (c+1)² - c²
	p.inRange++
}

// Decide returns the current decision.
func (p *Policy) Decide() Decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.decideLocked()
}

// Stats returns the histogram's counts and CV.
func (p *Policy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Samples: int(p.inRange + p.oob), OutOfRange: int(p.oob), CV: p.cvLocked()}
}

// cvLocked is the coefficient of variation of the bin counts over all
// nbins bins (empty ones included).
func (p *Policy) cvLocked() float64 {
	if p.inRange == 0 {
		return 0
	}
	n := float64(p.nbins)
	mean := float64(p.inRange) / n
	variance := p.sumSq/n - mean*mean
	if variance < 0 {
		variance = 0
	}
	return math.Sqrt(variance) / mean
}

func (p *Policy) decideLocked() Decision {
	fixed := func(why string) Decision {
		return Decision{KeepAlive: p.fallback, Reason: why}
	}
	total := p.inRange + p.oob
	switch {
	case total < uint64(p.cfg.MinSamples):
		return fixed(fmt.Sprintf("%d idle times observed, fewer than %d", total, p.cfg.MinSamples))
	case float64(p.oob) > p.cfg.MaxOutOfRange*float64(total):
		return fixed(fmt.Sprintf("%d of %d idle times are longer than the histogram's range of %s", p.oob, total, p.cfg.Range))
	}
	if cv := p.cvLocked(); p.cfg.MinCV > 0 && cv < p.cfg.MinCV {
		return fixed(fmt.Sprintf("coefficient of variation of the histogram is %.2f, below %.2f", cv, p.cfg.MinCV))
	}
	w := p.cfg.BinWidth
	head := p.percentileLocked(p.cfg.Head, false)
	tail := p.percentileLocked(p.cfg.Tail, true)
	// Margins rounded to the nanosecond first, so that 30m+10% is 33m and
	// not a float's 33m+1ns (which would round up a whole bin).
	prewarm := head - time.Duration(math.Round(float64(head)*p.cfg.Margin))
	prewarm = prewarm / w * w // round down to a bin edge
	if prewarm < p.cfg.MinPreWarm {
		prewarm = 0
	}
	end := tail + time.Duration(math.Round(float64(tail)*p.cfg.Margin))
	end = (end + w - 1) / w * w // round up to a bin edge
	end = min(end, p.cfg.Range) // the histogram knows nothing beyond its range
	if end <= prewarm {
		end = prewarm + w
	}
	return Decision{PreWarm: prewarm, KeepAlive: end - prewarm, Representative: true}
}

// percentileLocked returns the q-th percentile (nearest rank over all
// samples, out-of-range ones above every bin): a bin's upper edge when
// upper, its lower edge otherwise; Range when the rank falls beyond it.
func (p *Policy) percentileLocked(q float64, upper bool) time.Duration {
	total := p.inRange + p.oob
	rank := uint64(math.Ceil(q / 100 * float64(total)))
	if rank < 1 {
		rank = 1
	}
	var cum uint64
	for _, b := range p.keys {
		cum += p.counts[b]
		if cum >= rank {
			if upper {
				return min(time.Duration(b+1)*p.cfg.BinWidth, p.cfg.Range)
			}
			return time.Duration(b) * p.cfg.BinWidth
		}
	}
	return p.cfg.Range
}
