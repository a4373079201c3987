package energy

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Default model coefficients, per logical CPU. See the package doc.
const (
	// DefaultIdleWattsPerCPU is the power of one logical CPU at 0 % utilisation.
	DefaultIdleWattsPerCPU = 0.74
	// DefaultMaxWattsPerCPU is the power of one logical CPU at 100 % utilisation.
	DefaultMaxWattsPerCPU = 3.5
	// DefaultCoefficientSource says where the defaults come from.
	DefaultCoefficientSource = "Cloud Carbon Footprint methodology, Appendix I, AWS average " +
		"min/max watts per vCPU at 0 %/100 % CPU (0.74 W / 3.5 W, derived from SPECpower_ssj2008 results), " +
		"https://www.cloudcarbonfootprint.org/docs/methodology/"
	// UserHZ is the unit of /proc/stat's CPU times (USER_HZ, 100 on every
	// Linux architecture wisp runs on).
	UserHZ = 100
)

// ModelConfig holds the coefficients of the linear power model
// P = IdleWatts + (MaxWatts − IdleWatts) × u for the whole node.
type ModelConfig struct {
	IdleWatts float64 `json:"idle_watts" yaml:"idle_watts"` // node power at 0 % CPU
	MaxWatts  float64 `json:"max_watts" yaml:"max_watts"`   // node power at 100 % CPU
	// CPUs is the number of logical CPUs the defaults are scaled by; 0 means
	// the count in /proc/stat.
	CPUs int `json:"cpus,omitempty" yaml:"cpus"`
	// Source says where the coefficients come from ("calibrated against rapl
	// on 2025-…", a datasheet); printed in every report.
	Source string `json:"source,omitempty" yaml:"source"`
}

// Resolve fills in the defaults for cpus logical CPUs when no coefficient is
// set, and checks the coefficients.
func (c ModelConfig) Resolve(cpus int) (ModelConfig, error) {
	if c.CPUs <= 0 {
		c.CPUs = cpus
	}
	if c.IdleWatts == 0 && c.MaxWatts == 0 {
		if c.CPUs <= 0 {
			return c, fmt.Errorf("energy model: no CPU count to scale the default coefficients by: %w", errdefs.ErrInvalid)
		}
		c.IdleWatts = DefaultIdleWattsPerCPU * float64(c.CPUs)
		c.MaxWatts = DefaultMaxWattsPerCPU * float64(c.CPUs)
		if c.Source == "" {
			c.Source = DefaultCoefficientSource
		}
	}
	if c.IdleWatts < 0 || c.MaxWatts < c.IdleWatts || math.IsNaN(c.IdleWatts) || math.IsInf(c.MaxWatts, 0) {
		return c, fmt.Errorf("energy model: need 0 ≤ idle_watts (%g) ≤ max_watts (%g): %w", c.IdleWatts, c.MaxWatts, errdefs.ErrInvalid)
	}
	if c.Source == "" {
		c.Source = "configured"
	}
	return c, nil
}

// Power returns the model's node power in watts at utilisation u (clamped to
// [0, 1]).
func (c ModelConfig) Power(u float64) float64 {
	u = math.Max(0, math.Min(1, u))
	return c.IdleWatts + (c.MaxWatts-c.IdleWatts)*u
}

func (c ModelConfig) String() string {
	return fmt.Sprintf("P = %.3g W + (%.3g W − %.3g W) × u, u = node CPU utilisation (%d CPUs); coefficients: %s",
		c.IdleWatts, c.MaxWatts, c.IdleWatts, c.CPUs, c.Source)
}

// CPUTimes is the aggregate "cpu" line of /proc/stat, in USER_HZ ticks.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal, Guest, GuestNice uint64
	CPUs                                                                    int // cpuN lines
}

// Busy is the ticks spent running: user+nice+system+irq+softirq (guest time
// is already inside user and nice).
func (t CPUTimes) Busy() uint64 { return t.User + t.Nice + t.System + t.IRQ + t.SoftIRQ }

// Total is Busy plus idle and iowait; steal (time the hypervisor gave
// elsewhere) is in neither.
func (t CPUTimes) Total() uint64 { return t.Busy() + t.Idle + t.IOWait }

// BusyTime converts Busy to a duration.
func (t CPUTimes) BusyTime() time.Duration { return ticks(t.Busy()) }

func ticks(n uint64) time.Duration { return time.Duration(n) * (time.Second / UserHZ) }

// BusyBetween returns the node's busy CPU time between two samples: all CPU
// time on the node, the denominator of attribution.
func BusyBetween(a, b CPUTimes) (time.Duration, error) {
	if b.Busy() < a.Busy() {
		return 0, fmt.Errorf("busy CPU time went back from %d to %d ticks: %w", a.Busy(), b.Busy(), errdefs.ErrInvalid)
	}
	return ticks(b.Busy() - a.Busy()), nil
}

// Utilisation returns the node's CPU utilisation in [0, 1] between two
// samples, and false when no tick elapsed between them or a counter went
// back (so there is nothing to measure).
func Utilisation(a, b CPUTimes) (float64, bool) {
	if b.Total() <= a.Total() || b.Busy() < a.Busy() {
		return 0, false
	}
	u := float64(b.Busy()-a.Busy()) / float64(b.Total()-a.Total())
	return math.Min(1, u), true
}

// ReadCPUTimes reads the aggregate CPU times from a /proc/stat file.
func ReadCPUTimes(path string) (CPUTimes, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return CPUTimes{}, fmt.Errorf("read CPU times: %w", err)
	}
	t, err := ParseCPUTimes(b)
	if err != nil {
		return t, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// ParseCPUTimes parses the contents of /proc/stat.
func ParseCPUTimes(data []byte) (CPUTimes, error) {
	var (
		t     CPUTimes
		found bool
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "cpu") {
			continue
		}
		if fields[0] != "cpu" {
			if _, err := strconv.Atoi(fields[0][3:]); err == nil {
				t.CPUs++
			}
			continue
		}
		if len(fields) < 5 {
			return t, fmt.Errorf("parse /proc/stat: cpu line has %d fields, want at least 4 numbers: %w", len(fields)-1, errdefs.ErrInvalid)
		}
		dst := []*uint64{&t.User, &t.Nice, &t.System, &t.Idle, &t.IOWait, &t.IRQ, &t.SoftIRQ, &t.Steal, &t.Guest, &t.GuestNice}
		for i, f := range fields[1:] {
			if i >= len(dst) {
				break
			}
			v, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return t, fmt.Errorf("parse /proc/stat: cpu field %d %q: %w", i+1, f, errdefs.ErrInvalid)
			}
			*dst[i] = v
		}
		found = true
	}
	if err := sc.Err(); err != nil {
		return t, fmt.Errorf("parse /proc/stat: %w", err)
	}
	if !found {
		return t, fmt.Errorf("parse /proc/stat: no aggregate cpu line: %w", errdefs.ErrInvalid)
	}
	return t, nil
}

// Model estimates energy from CPU utilisation. Open it with OpenModel.
type Model struct {
	cfg  ModelConfig
	path string
	now  func() time.Time

	mu     sync.Mutex // guards the fields below
	last   CPUTimes
	lastAt time.Time
	lastU  float64
	joules float64
}

var _ Source = (*Model)(nil)

// OpenModel starts the model source on opts.ProcStat with opts.Model's
// coefficients (defaults scaled by the CPU count when unset).
func OpenModel(opts Options) (*Model, error) {
	opts = opts.withDefaults()
	t, err := ReadCPUTimes(opts.ProcStat)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	cfg, err := opts.Model.Resolve(t.CPUs)
	if err != nil {
		return nil, err
	}
	return &Model{cfg: cfg, path: opts.ProcStat, now: opts.now, last: t, lastAt: opts.now()}, nil
}

// Config returns the coefficients in use.
func (m *Model) Config() ModelConfig { return m.cfg }

func (m *Model) Kind() Kind { return KindModel }

// Read integrates the model's power since the last Read: the utilisation
// between the two /proc/stat samples times the wall time between them. When
// no tick elapsed it keeps the previous utilisation.
func (m *Model) Read() (Reading, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, err := ReadCPUTimes(m.path)
	if err != nil {
		return Reading{}, fmt.Errorf("model: %w", err)
	}
	now := m.now()
	if u, ok := Utilisation(m.last, t); ok {
		m.lastU = u
	}
	if dt := now.Sub(m.lastAt); dt > 0 {
		m.joules += m.cfg.Power(m.lastU) * dt.Seconds()
		m.last, m.lastAt = t, now
	}
	return Reading{Source: KindModel, Joules: m.joules, Time: now}, nil
}

// Describe states the model and its coefficients with their source.
func (m *Model) Describe() string {
	return "model (an estimate, not a measurement): " + m.cfg.String()
}

func (m *Model) Close() error { return nil }
