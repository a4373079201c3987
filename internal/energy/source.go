package energy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Kind says where an energy figure came from. It is stored with every
// activation (energy_source) and printed in every report.
type Kind string

const (
	KindRAPL  Kind = "rapl"  // powercap sysfs counters
	KindPerf  Kind = "perf"  // perf_event "power" PMU counters
	KindModel Kind = "model" // estimate from CPU utilisation
)

// Reading is one sample of a Source.
type Reading struct {
	Source Kind `json:"source"`
	// Joules is the node's energy since the source was opened. It never
	// decreases: wraparounds are folded in.
	Joules float64 `json:"joules"`
	// Domains holds the per-domain cumulative joules behind Joules (for
	// example "package-0", "package-0/core", "dram"; for perf "pkg", "ram").
	// Domains may overlap (core lies inside package); only Joules is the node
	// figure. Nil for the model.
	Domains map[string]float64 `json:"domains,omitempty"`
	Time    time.Time          `json:"time"`
}

// Source reads the node's cumulative energy. Implementations are safe for
// concurrent use. Read must be called at least once per counter wrap period
// (about 40 minutes for RAPL at 100 W) for wraparound to be handled.
type Source interface {
	Kind() Kind
	// Read returns the energy used since the source was opened.
	Read() (Reading, error)
	// Describe says what the source measures, from where, with which
	// coefficients: one line to print in reports.
	Describe() string
	Close() error
}

// Between returns the joules used between two readings of one source.
func Between(a, b Reading) (float64, error) {
	if a.Source != b.Source {
		return 0, fmt.Errorf("energy between a %s and a %s reading: %w", a.Source, b.Source, errdefs.ErrInvalid)
	}
	if b.Time.Before(a.Time) {
		return 0, fmt.Errorf("energy between readings: the second (%s) is older than the first (%s): %w",
			b.Time.Format(time.RFC3339Nano), a.Time.Format(time.RFC3339Nano), errdefs.ErrInvalid)
	}
	if b.Joules < a.Joules {
		return 0, fmt.Errorf("energy between readings: %s counter went back from %g J to %g J: %w",
			a.Source, a.Joules, b.Joules, errdefs.ErrInvalid)
	}
	return b.Joules - a.Joules, nil
}

// wrapCounter turns a raw hardware counter that wraps at max into a
// monotonic 64-bit total. The zero value is ready; max 0 means the counter
// is not expected to wrap (perf's 64-bit counts), so going back is an error.
type wrapCounter struct {
	max     uint64 // largest raw value before it wraps to 0 (max_energy_range_uj)
	last    uint64
	total   uint64 // raw units accumulated since the first update
	started bool
}

// update folds a new raw value in and returns the running total. It assumes
// at most one wrap between two updates.
func (c *wrapCounter) update(raw uint64) (uint64, error) {
	if !c.started {
		c.started, c.last = true, raw
		return 0, nil
	}
	var d uint64
	switch {
	case raw >= c.last:
		d = raw - c.last
	case c.max > 0 && c.last <= c.max:
		// Wrapped: from last up to max, then from 0 to raw (the rule Kepler
		// and the kernel's powercap users apply).
		d = c.max - c.last + raw
	default:
		return c.total, fmt.Errorf("counter went back from %d to %d with no wrap range known", c.last, raw)
	}
	c.last = raw
	c.total += d
	return c.total, nil
}

// Options configures discovery. The zero value probes the real machine.
type Options struct {
	PowercapRoot string        // default /sys/class/powercap
	PerfRoot     string        // default /sys/bus/event_source/devices
	ProcStat     string        // default /proc/stat
	ProbeWindow  time.Duration // how long a counter must move to count as working; default 200ms
	Model        ModelConfig   // coefficients of the model source

	openPerf perfOpener       // perf_event_open; replaced in tests
	now      func() time.Time // time.Now; replaced in tests
	// probeHook runs between the two probe reads; tests advance fixture
	// counters in it.
	probeHook func()
}

func (o Options) withDefaults() Options {
	if o.PowercapRoot == "" {
		o.PowercapRoot = "/sys/class/powercap"
	}
	if o.PerfRoot == "" {
		o.PerfRoot = "/sys/bus/event_source/devices"
	}
	if o.ProcStat == "" {
		o.ProcStat = "/proc/stat"
	}
	if o.ProbeWindow <= 0 {
		o.ProbeWindow = 200 * time.Millisecond
	}
	if o.openPerf == nil {
		o.openPerf = openPerfEvent
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o
}

// Unavailable says why a kind of source cannot be used on this machine.
type Unavailable struct {
	Kind   Kind
	Reason error
}

// String is the reason, which names the kind.
func (u Unavailable) String() string { return u.Reason.Error() }

// Sources probes every kind of source and returns the usable ones best first
// (rapl, perf, model), with the reasons the others were skipped. Counter
// sources are read over opts.ProbeWindow and dropped if they do not move.
// The caller closes the sources it keeps.
func Sources(ctx context.Context, opts Options) ([]Source, []Unavailable) {
	opts = opts.withDefaults()
	var (
		out     []Source
		skipped []Unavailable
	)
	if s, err := OpenRAPL(ctx, opts); err != nil {
		skipped = append(skipped, Unavailable{KindRAPL, err})
	} else {
		out = append(out, s)
	}
	if s, err := OpenPerf(ctx, opts); err != nil {
		skipped = append(skipped, Unavailable{KindPerf, err})
	} else {
		out = append(out, s)
	}
	if s, err := OpenModel(opts); err != nil {
		skipped = append(skipped, Unavailable{KindModel, err})
	} else {
		out = append(out, s)
	}
	return out, skipped
}

// Best returns the best usable source and closes the others. It fails only
// when not even the model can run (no readable /proc/stat).
func Best(ctx context.Context, opts Options) (Source, []Unavailable, error) {
	srcs, skipped := Sources(ctx, opts)
	if len(srcs) == 0 {
		errs := make([]error, 0, len(skipped))
		for _, u := range skipped {
			errs = append(errs, u.Reason)
		}
		return nil, skipped, fmt.Errorf("no energy source: %w", errors.Join(errs...))
	}
	for _, s := range srcs[1:] {
		_ = s.Close()
	}
	return srcs[0], skipped, nil
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
