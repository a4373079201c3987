// Package meter measures energy on a running node and attributes it to
// functions. It samples the node's energy (internal/energy's best source:
// RAPL, perf's power PMU, or the CPU-time model), the node's busy CPU time,
// the wisp process's own CPU time and every sandbox's cgroup CPU time at a
// fixed interval, and gives each window's energy out with
// energy.Attribute: instance creation and runtime start-up as cold-start
// energy, CPU time of instances that served calls as execution energy, warm
// instances that served none as idle, the wisp process as platform
// overhead, everything else on the node as other. sPUE = total / execution.
//
// Sandboxes are tracked by wrapping each backend (WrapBackend): an instance
// is measured when it becomes ready (its cold start), at every sample, and
// once more just before it is closed, so that instances that live shorter
// than a sample interval (keep_alive 0) are counted too.
//
// A call's own energy (an activation's energy_j) is estimated when it ends:
// its execution time × its function's execution energy per second of
// execution in the last complete window. It is an estimate by
// apportionment, marked with the source the window's energy came from.
package meter

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wisp-faas/wisp/internal/energy"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// Options configure a Meter.
type Options struct {
	// Source reads the node's energy. Required.
	Source energy.Source
	// IdleWatts is the node's power with nothing running: the model's idle
	// coefficient, or a measured baseline for a counter (0: unknown; all
	// energy is then shared out by CPU time).
	IdleWatts float64
	// Interval between samples (default 1s).
	Interval time.Duration
	// History is how long windows are kept for reports (default 1h).
	History time.Duration
	// ProcStat is /proc/stat (tests point it elsewhere).
	ProcStat string
	// OnWindow, when set, sees each window's report (metrics).
	OnWindow func(energy.Report)
	Log      *slog.Logger
}

// Meter is safe for concurrent use.
type Meter struct {
	opts Options

	mu        sync.Mutex
	tracked   map[string]*tracked // live instances by id
	finished  []*tracked          // closed since the last sample
	execWall  map[string]time.Duration
	rates     map[string]float64 // function → execution joules per second of execution, last window
	windows   []window
	lastRead  energy.Reading
	lastStat  energy.CPUTimes
	lastSelf  time.Duration
	lastAt    time.Time
	started   bool
	lastError string
}

type window struct {
	end    time.Time
	report energy.Report
}

// tracked is one instance's CPU accounting.
type tracked struct {
	function string
	id       string
	inst     sandbox.Instance
	lastCPU  time.Duration // at the last sample
	coldCPU  time.Duration // CPU when it became ready, not yet given to a window
	calls    atomic.Int64  // calls since the last sample
	finalCPU time.Duration // set at close
}

// New returns a meter; Run starts sampling.
func New(o Options) (*Meter, error) {
	if o.Source == nil {
		return nil, fmt.Errorf("meter: no energy source")
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.History <= 0 {
		o.History = time.Hour
	}
	if o.ProcStat == "" {
		o.ProcStat = "/proc/stat"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Meter{opts: o, tracked: map[string]*tracked{}, execWall: map[string]time.Duration{}, rates: map[string]float64{}}, nil
}

// Source returns the energy source's kind and description.
func (m *Meter) Source() (energy.Kind, string) { return m.opts.Source.Kind(), m.opts.Source.Describe() }

// Run samples every Interval until ctx ends.
func (m *Meter) Run(ctx context.Context) {
	m.Sample() // the first sample only sets the baseline
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.Sample()
		}
	}
}

// selfCPU is the wisp process's own CPU time (all its threads).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Sample closes the current window: it reads every counter, attributes the
// window's energy and starts the next one.
func (m *Meter) Sample() {
	now := time.Now()
	read, rerr := m.opts.Source.Read()
	stat, serr := energy.ReadCPUTimes(m.opts.ProcStat)
	self := selfCPU()

	m.mu.Lock()
	live := make([]*tracked, 0, len(m.tracked))
	for _, t := range m.tracked {
		live = append(live, t)
	}
	finished := m.finished
	m.finished = nil
	execWall := m.execWall
	m.execWall = map[string]time.Duration{}
	m.mu.Unlock()

	// Instance CPU, outside the lock: one cgroup read each.
	type use struct {
		t   *tracked
		cpu time.Duration
	}
	uses := make([]use, 0, len(live)+len(finished))
	for _, t := range live {
		uses = append(uses, use{t, t.inst.Usage().CPUTime})
	}
	for _, t := range finished {
		uses = append(uses, use{t, t.finalCPU})
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if rerr != nil || serr != nil {
		m.lastError = fmt.Sprint(rerr, serr)
		m.opts.Log.Warn("energy sample", "err", rerr, "proc_stat_err", serr)
		m.started = false
		return
	}
	if !m.started {
		m.lastRead, m.lastStat, m.lastSelf, m.lastAt, m.started = read, stat, self, now, true
		for _, u := range uses {
			u.t.lastCPU = u.cpu
			u.t.calls.Store(0)
		}
		return
	}
	joules, err := energy.Between(m.lastRead, read)
	if err != nil {
		m.opts.Log.Warn("energy sample", "err", err)
		joules = 0
	}
	nodeCPU, err := energy.BusyBetween(m.lastStat, stat)
	if err != nil {
		nodeCPU = 0
	}
	w := energy.Window{
		Duration:    now.Sub(m.lastAt),
		Energy:      joules,
		Source:      read.Source,
		IdleWatts:   m.opts.IdleWatts,
		NodeCPU:     nodeCPU,
		PlatformCPU: max(self-m.lastSelf, 0),
	}
	for _, u := range uses {
		t := u.t
		delta := max(u.cpu-t.lastCPU, 0)
		t.lastCPU = u.cpu
		ic := energy.InstanceCPU{Function: t.function, Instance: t.id, CPU: delta}
		if t.coldCPU > 0 {
			ic.ColdStartCPU = min(t.coldCPU, delta)
			t.coldCPU = 0
		}
		if t.calls.Swap(0) > 0 {
			ic.ExecCPU = delta - ic.ColdStartCPU
		}
		w.Instances = append(w.Instances, ic)
	}
	rep, err := energy.Attribute(w)
	if err != nil {
		m.opts.Log.Warn("attribute energy", "err", err)
	} else {
		m.windows = append(m.windows, window{end: now, report: rep})
		cut := 0
		for cut < len(m.windows) && now.Sub(m.windows[cut].end) > m.opts.History {
			cut++
		}
		m.windows = m.windows[cut:]
		rates := map[string]float64{}
		for _, f := range rep.Functions {
			if d := execWall[f.Function]; d > 0 && f.Execution > 0 {
				rates[f.Function] = f.Execution / d.Seconds()
			} else if r, ok := m.rates[f.Function]; ok {
				rates[f.Function] = r // no calls ended this window: keep the last rate
			}
		}
		m.rates = rates
		if m.opts.OnWindow != nil {
			m.opts.OnWindow(rep)
		}
	}
	m.lastRead, m.lastStat, m.lastSelf, m.lastAt = read, stat, self, now
}

// ObserveCall counts a call's execution time towards its function's window
// and returns the call's estimated energy and the source it is based on
// (0 and "" until a window has measured the function).
func (m *Meter) ObserveCall(function string, exec time.Duration) (float64, energy.Kind) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.execWall[function] += exec
	r, ok := m.rates[function]
	if !ok {
		return 0, ""
	}
	return r * exec.Seconds(), m.opts.Source.Kind()
}

// Summary is the energy over a recent span of windows (GET /v1/energy).
type Summary struct {
	Source    energy.Kind        `json:"source"`
	Describe  string             `json:"describe"`
	Window    float64            `json:"window_s"` // seconds covered
	Node      float64            `json:"node_j"`
	Idle      float64            `json:"idle_j"`
	Function  float64            `json:"function_j"` // execution: E_function of sPUE
	ColdStart float64            `json:"cold_start_j"`
	IdleInst  float64            `json:"idle_instances_j"`
	Platform  float64            `json:"platform_j"`
	Other     float64            `json:"other_j"`
	Overhead  float64            `json:"overhead_j"`
	SPUE      float64            `json:"spue"`
	Functions map[string]float64 `json:"functions"` // all of each function's energy: cold start + execution + idle
	Warnings  []string           `json:"warnings,omitempty"`
}

// Summarize adds up the windows that ended in the last span.
func (m *Meter) Summarize(span time.Duration) Summary {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Summary{Source: m.opts.Source.Kind(), Describe: m.opts.Source.Describe(), Functions: map[string]float64{}}
	now := time.Now()
	warn := map[string]bool{}
	for _, w := range m.windows {
		if now.Sub(w.end) > span {
			continue
		}
		r := w.report
		s.Window += r.Window.Seconds()
		s.Node += r.Total
		s.Idle += r.Idle
		s.Function += r.Execution
		s.ColdStart += r.ColdStart
		s.IdleInst += r.IdleInstances
		s.Platform += r.Platform
		s.Other += r.Other
		s.Overhead += r.Overhead
		for _, f := range r.Functions {
			s.Functions[f.Function] += f.Total
		}
		for _, msg := range r.Warnings {
			if !warn[msg] {
				warn[msg] = true
				s.Warnings = append(s.Warnings, msg)
			}
		}
	}
	if s.Function > 0 {
		s.SPUE = s.Node / s.Function
	}
	if m.lastError != "" {
		s.Warnings = append(s.Warnings, "last sample failed: "+m.lastError)
	}
	return s
}

// WrapBackend returns b with its instances tracked by the meter.
func (m *Meter) WrapBackend(b sandbox.Backend) sandbox.Backend { return &backend{Backend: b, m: m} }

type backend struct {
	sandbox.Backend
	m *Meter
}

func (b *backend) Start(ctx context.Context, opts sandbox.StartOptions) (sandbox.Instance, error) {
	inst, err := b.Backend.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	fn := opts.Function
	if fn == "" {
		fn = opts.Spec.Name
	}
	t := &tracked{function: fn, id: inst.ID(), inst: inst}
	// Everything it used until ready is its cold start.
	t.coldCPU = inst.Usage().CPUTime
	b.m.mu.Lock()
	b.m.tracked[t.id] = t
	b.m.mu.Unlock()
	return &instance{Instance: inst, t: t, m: b.m}, nil
}

type instance struct {
	sandbox.Instance
	t    *tracked
	m    *Meter
	once sync.Once
}

func (i *instance) Invoke(ctx context.Context, req *sandbox.Request) (*sandbox.Response, error) {
	i.t.calls.Add(1)
	return i.Instance.Invoke(ctx, req)
}

// StartStages passes the backend's breakdown through.
func (i *instance) StartStages() sandbox.StartStages {
	if r, ok := i.Instance.(sandbox.StageReporter); ok {
		return r.StartStages()
	}
	return sandbox.StartStages{}
}

// Close takes the instance's last reading before its cgroup goes.
func (i *instance) Close() error {
	i.once.Do(func() {
		i.t.finalCPU = i.Instance.Usage().CPUTime
		i.m.mu.Lock()
		delete(i.m.tracked, i.t.id)
		i.m.finished = append(i.m.finished, i.t)
		i.m.mu.Unlock()
	})
	return i.Instance.Close()
}
