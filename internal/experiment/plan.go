package experiment

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

// Scenario kinds.
const (
	KindIdle      = "idle"      // node power with nothing (or W warm instances) running
	KindCold      = "cold"      // keep_alive 0: every call starts an instance
	KindWarm      = "warm"      // calls after a warm-up
	KindPoisson   = "poisson"   // open-loop Poisson arrivals at given rates
	KindKeepAlive = "keepalive" // keep-alive sweep at a constant rate
	KindBreakdown = "breakdown" // startup latency by stage (seed 001)
	KindChain     = "chain"     // chained functions, growing payloads (seed 001)
	KindStateless = "stateless" // re-reading state each call vs keeping it (seed 001)
	KindParallel  = "parallel"  // throughput and latency as concurrency grows (seed 001, owperf)
)

// Kinds lists every scenario kind, in the order a full study runs them.
var Kinds = []string{KindIdle, KindCold, KindWarm, KindPoisson, KindKeepAlive,
	KindBreakdown, KindChain, KindStateless, KindParallel}

// Function sizes the cold, warm and breakdown scenarios can name.
var Sizes = []string{"small", "medium", "large"}

// Arrival processes of the poisson and keepalive scenarios.
const (
	ArrivalPoisson  = "poisson"
	ArrivalConstant = "constant"
)

// Plan is a PLAN.yaml file: the modes to compare and the scenarios to run on
// each. See the package documentation for the format.
type Plan struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Modes are the execution modes to compare (process, container).
	Modes []string `yaml:"modes"`
	// SkipUnavailable skips a mode that /healthz does not report ready,
	// instead of failing the run.
	SkipUnavailable bool `yaml:"skip_unavailable"`
	// Seed makes Poisson arrivals reproducible.
	Seed uint64 `yaml:"seed"`
	// Settle is the pause between two scenario runs, so that one's instances
	// and CPU tail do not fall into the next one's energy window.
	Settle Duration `yaml:"settle"`
	// Prefix starts the name of every function the run deploys.
	Prefix string `yaml:"prefix"`
	// Memory and CPU of the deployed functions (function spec syntax).
	Memory string `yaml:"memory"`
	CPU    string `yaml:"cpu"`
	// LargeMB is how much the large function loads at start-up (MiB).
	LargeMB int `yaml:"large_mb"`
	// Energy configures energy measurement.
	Energy EnergyPlan `yaml:"energy"`
	// Scenarios run in order, each on every mode.
	Scenarios []Scenario `yaml:"scenarios"`
}

// EnergyPlan chooses where energy figures come from.
type EnergyPlan struct {
	// Source is auto (the server's /v1/energy, else the harness's model) or
	// model (always the harness's model).
	Source string `yaml:"source"`
	// IdleWatts and MaxWatts override the model's coefficients for the whole
	// node; both 0 means internal/energy's defaults.
	IdleWatts float64 `yaml:"idle_watts"`
	MaxWatts  float64 `yaml:"max_watts"`
	// MinWindow pads a shorter window with idle time, so that a server that
	// samples energy every second (internal/meter) has whole samples to
	// report (default 3s; 0s turns padding off).
	MinWindow *Duration `yaml:"min_window"`
	// SampleLag is how long the harness waits after a window before asking
	// the server for its energy, so that the server's last sample covers the
	// window's end (default 1100ms; the server's energy.interval plus a
	// margin). The tail counts in the window's energy.
	SampleLag *Duration `yaml:"sample_lag"`
}

// Scenario is one experiment. Which fields apply depends on Kind; the
// package documentation lists them.
type Scenario struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`

	Function  string   `yaml:"function,omitempty"`  // warm, poisson, keepalive, parallel (default small)
	Functions []string `yaml:"functions,omitempty"` // cold, breakdown (default small, medium, large)

	Duration      Duration   `yaml:"duration,omitempty"`       // idle; poisson and keepalive: per variant
	WarmInstances int        `yaml:"warm_instances,omitempty"` // idle: instances kept warm while idle
	Calls         int        `yaml:"calls,omitempty"`          // cold, warm, breakdown, chain, stateless; parallel: per level
	Warmup        int        `yaml:"warmup,omitempty"`         // warm, chain, stateless, parallel: calls before measuring
	Interval      Duration   `yaml:"interval,omitempty"`       // cold, breakdown: pause between calls
	Concurrency   []int      `yaml:"concurrency,omitempty"`    // warm: one value; parallel: the levels
	Rates         []float64  `yaml:"rates,omitempty"`          // poisson: invocations per minute
	Rate          float64    `yaml:"rate,omitempty"`           // keepalive: invocations per minute
	Arrival       string     `yaml:"arrival,omitempty"`        // poisson | constant (keepalive; default poisson)
	KeepAlive     *Duration  `yaml:"keep_alive,omitempty"`     // poisson, warm: the function's keep_alive (default 10m)
	KeepAlives    []Duration `yaml:"keep_alives,omitempty"`    // keepalive: the values swept
	Sizes         []Size     `yaml:"sizes,omitempty"`          // chain: payload sizes
	StateSize     Size       `yaml:"state_size,omitempty"`     // stateless: size of the state
	Variants      []string   `yaml:"variants,omitempty"`       // stateless: reload, cached, passed
	WorkMs        float64    `yaml:"work_ms,omitempty"`        // warm, poisson, keepalive, parallel: CPU work per call
	MaxInFlight   int        `yaml:"max_in_flight,omitempty"`  // poisson, keepalive: bound on open calls (default 256)
}

// Duration is a time.Duration written as "10s", "20m", or 0.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML accepts Go duration strings and a bare 0.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	if s == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use 500ms, 10s, 20m, 1h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalText writes d as a Go duration string (for JSON).
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Size is a byte count written as 1024, 1KiB, 64KiB, 1MiB (or KB, MB).
type Size int64

// UnmarshalYAML parses a size.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*s = Size(v)
	return nil
}

// MarshalText writes s in the largest binary unit that divides it.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Size) String() string {
	switch {
	case s >= 1<<20 && s%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", s>>20)
	case s >= 1<<10 && s%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", s>>10)
	default:
		return fmt.Sprintf("%dB", int64(s))
	}
}

var sizeRe = regexp.MustCompile(`^\s*(\d+)\s*([A-Za-z]*)\s*$`)

// ParseSize parses "1024", "1KiB", "64Ki", "1MiB", "1MB", "10B".
func ParseSize(v string) (int64, error) {
	m := sizeRe.FindStringSubmatch(v)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size (use 1024, 1KiB, 1MiB)", v)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: %w", v, err)
	}
	mult := map[string]int64{"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1 << 10, "kib": 1 << 10,
		"m": 1000 * 1000, "mb": 1000 * 1000, "mi": 1 << 20, "mib": 1 << 20}[strings.ToLower(m[2])]
	if mult == 0 {
		return 0, fmt.Errorf("%q: unknown unit %q (use B, KiB, MiB, KB, MB)", v, m[2])
	}
	return n * mult, nil
}

// MaxPayload bounds chain and state sizes: the server's default
// gateway.max_body_size is 6 MiB.
const MaxPayload = 6 << 20

// LoadPlan reads and validates a plan file.
func LoadPlan(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	p, err := ParsePlan(b)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", path, err)
	}
	return p, nil
}

// ParsePlan decodes a plan (unknown fields are errors), fills in defaults
// and validates it. Errors name the field, as scenarios[2].calls.
func ParsePlan(data []byte) (*Plan, error) {
	var p Plan
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("decode: %w: %w", err, errdefs.ErrInvalid)
	}
	p.defaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

func (p *Plan) defaults() {
	if p.Name == "" {
		p.Name = "experiment"
	}
	if p.Prefix == "" {
		p.Prefix = "exp"
	}
	if p.Memory == "" {
		p.Memory = "256Mi"
	}
	if p.CPU == "" {
		p.CPU = "1000m"
	}
	if p.LargeMB == 0 {
		p.LargeMB = 50
	}
	if p.Seed == 0 {
		p.Seed = 1
	}
	if p.Energy.Source == "" {
		p.Energy.Source = "auto"
	}
	if p.Energy.MinWindow == nil {
		d := Duration(3 * time.Second)
		p.Energy.MinWindow = &d
	}
	if p.Energy.SampleLag == nil {
		d := Duration(1100 * time.Millisecond)
		p.Energy.SampleLag = &d
	}
	for i := range p.Scenarios {
		s := &p.Scenarios[i]
		if s.Name == "" {
			s.Name = s.Kind
		}
		switch s.Kind {
		case KindWarm, KindPoisson, KindKeepAlive, KindParallel:
			if s.Function == "" {
				s.Function = "small"
			}
		case KindCold, KindBreakdown:
			if len(s.Functions) == 0 {
				s.Functions = slices.Clone(Sizes)
			}
		case KindChain:
			if len(s.Sizes) == 0 {
				s.Sizes = []Size{1 << 10, 64 << 10, 1 << 20}
			}
		case KindStateless:
			if len(s.Variants) == 0 {
				s.Variants = []string{"reload", "cached", "passed"}
			}
			if s.StateSize == 0 {
				s.StateSize = 1 << 20
			}
		}
		switch s.Kind {
		case KindWarm, KindChain, KindStateless, KindParallel:
			if s.Warmup == 0 {
				s.Warmup = 3
			}
		}
		if s.Kind == KindWarm && len(s.Concurrency) == 0 {
			s.Concurrency = []int{1}
		}
		if (s.Kind == KindPoisson || s.Kind == KindKeepAlive) && s.Arrival == "" {
			s.Arrival = ArrivalPoisson
		}
		if (s.Kind == KindPoisson || s.Kind == KindKeepAlive) && s.MaxInFlight == 0 {
			s.MaxInFlight = 256
		}
		if (s.Kind == KindPoisson || s.Kind == KindWarm) && s.KeepAlive == nil {
			d := Duration(10 * time.Minute)
			s.KeepAlive = &d
		}
	}
}

var nameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$`)

// Validate checks the plan. Every error names the field it is about.
func (p *Plan) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), errdefs.ErrInvalid))
	}
	if len(p.Modes) == 0 {
		bad("modes", "name at least one execution mode (process, container)")
	}
	seenMode := map[string]bool{}
	for i, m := range p.Modes {
		if m != function.ModeProcess && m != function.ModeContainer {
			bad(fmt.Sprintf("modes[%d]", i), "%q is not a mode the harness compares (use process or container)", m)
		}
		if seenMode[m] {
			bad(fmt.Sprintf("modes[%d]", i), "%q is listed twice", m)
		}
		seenMode[m] = true
	}
	if !regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`).MatchString(p.Prefix) {
		bad("prefix", "%q: use 1-8 of a-z, 0-9, starting with a letter", p.Prefix)
	}
	if _, err := function.ParseSize(p.Memory); err != nil {
		bad("memory", "%v", err)
	}
	if _, err := function.ParseMilliCPU(p.CPU); err != nil {
		bad("cpu", "%v", err)
	}
	if p.LargeMB < 1 || p.LargeMB > 4096 {
		bad("large_mb", "%d: use 1 to 4096", p.LargeMB)
	}
	if p.Settle < 0 {
		bad("settle", "must not be negative")
	}
	if p.Energy.Source != "auto" && p.Energy.Source != "model" {
		bad("energy.source", "%q: use auto or model", p.Energy.Source)
	}
	if p.Energy.IdleWatts < 0 || p.Energy.MaxWatts < p.Energy.IdleWatts {
		bad("energy", "need 0 ≤ idle_watts (%g) ≤ max_watts (%g)", p.Energy.IdleWatts, p.Energy.MaxWatts)
	}
	if *p.Energy.MinWindow < 0 {
		bad("energy.min_window", "must not be negative")
	}
	if *p.Energy.SampleLag < 0 {
		bad("energy.sample_lag", "must not be negative")
	}
	if len(p.Scenarios) == 0 {
		bad("scenarios", "name at least one scenario")
	}
	names := map[string]bool{}
	for i := range p.Scenarios {
		s := &p.Scenarios[i]
		f := func(field string) string { return fmt.Sprintf("scenarios[%d].%s", i, field) }
		if !slices.Contains(Kinds, s.Kind) {
			bad(f("kind"), "%q: use one of %s", s.Kind, strings.Join(Kinds, ", "))
			continue
		}
		if !nameRe.MatchString(s.Name) {
			bad(f("name"), "%q: use 1-20 of a-z, 0-9, '-'", s.Name)
		}
		if names[s.Name] {
			bad(f("name"), "%q is used by an earlier scenario", s.Name)
		}
		names[s.Name] = true
		positive := func(field string, v int) {
			if v <= 0 {
				bad(f(field), "must be positive, got %d", v)
			}
		}
		posDur := func(field string, d Duration) {
			if d <= 0 {
				bad(f(field), "must be a positive duration, got %s", d)
			}
		}
		size := func(field string) {
			if s.Function != "" && !slices.Contains(Sizes, s.Function) {
				bad(f(field), "%q: use one of %s", s.Function, strings.Join(Sizes, ", "))
			}
		}
		if s.Warmup < 0 {
			bad(f("warmup"), "must not be negative, got %d", s.Warmup)
		}
		if s.WorkMs < 0 {
			bad(f("work_ms"), "must not be negative, got %g", s.WorkMs)
		}
		if s.Interval < 0 {
			bad(f("interval"), "must not be negative")
		}
		switch s.Kind {
		case KindIdle:
			posDur("duration", s.Duration)
			if s.WarmInstances < 0 || s.WarmInstances > 1000 {
				bad(f("warm_instances"), "%d: use 0 to 1000", s.WarmInstances)
			}
		case KindCold, KindBreakdown:
			positive("calls", s.Calls)
			for j, fn := range s.Functions {
				if !slices.Contains(Sizes, fn) {
					bad(f(fmt.Sprintf("functions[%d]", j)), "%q: use one of %s", fn, strings.Join(Sizes, ", "))
				}
			}
		case KindWarm:
			positive("calls", s.Calls)
			size("function")
			if len(s.Concurrency) != 1 || s.Concurrency[0] <= 0 {
				bad(f("concurrency"), "warm takes one positive value, got %v", s.Concurrency)
			}
			if *s.KeepAlive <= 0 {
				bad(f("keep_alive"), "warm calls need a positive keep_alive, got %s", *s.KeepAlive)
			}
		case KindPoisson:
			size("function")
			posDur("duration", s.Duration)
			if len(s.Rates) == 0 {
				bad(f("rates"), "name at least one rate (invocations per minute)")
			}
			for j, r := range s.Rates {
				if !(r > 0) {
					bad(f(fmt.Sprintf("rates[%d]", j)), "must be positive (invocations per minute), got %g", r)
				}
			}
			if *s.KeepAlive < 0 {
				bad(f("keep_alive"), "must not be negative")
			}
		case KindKeepAlive:
			size("function")
			posDur("duration", s.Duration)
			if !(s.Rate > 0) {
				bad(f("rate"), "must be positive (invocations per minute), got %g", s.Rate)
			}
			if len(s.KeepAlives) == 0 {
				bad(f("keep_alives"), "name at least one keep-alive (0s, 10s, 60s, 600s)")
			}
			for j, d := range s.KeepAlives {
				if d < 0 {
					bad(f(fmt.Sprintf("keep_alives[%d]", j)), "must not be negative")
				}
			}
		case KindChain:
			positive("calls", s.Calls)
			for j, z := range s.Sizes {
				if z < 0 || z > MaxPayload {
					bad(f(fmt.Sprintf("sizes[%d]", j)), "%s: use 0 to 6MiB (the server's default body limit)", z)
				}
			}
		case KindStateless:
			positive("calls", s.Calls)
			if s.StateSize <= 0 || s.StateSize > MaxPayload {
				bad(f("state_size"), "%s: use 1B to 6MiB", s.StateSize)
			}
			for j, v := range s.Variants {
				if v != "reload" && v != "cached" && v != "passed" {
					bad(f(fmt.Sprintf("variants[%d]", j)), "%q: use reload, cached or passed", v)
				}
			}
		case KindParallel:
			positive("calls", s.Calls)
			size("function")
			if len(s.Concurrency) == 0 {
				bad(f("concurrency"), "name the concurrency levels, e.g. [1, 2, 4, 8]")
			}
			for j, c := range s.Concurrency {
				if c <= 0 || c > 1000 {
					bad(f(fmt.Sprintf("concurrency[%d]", j)), "%d: use 1 to 1000", c)
				}
			}
		}
		if s.Kind == KindPoisson || s.Kind == KindKeepAlive {
			if s.Arrival != ArrivalPoisson && s.Arrival != ArrivalConstant {
				bad(f("arrival"), "%q: use poisson or constant", s.Arrival)
			}
			if s.MaxInFlight <= 0 {
				bad(f("max_in_flight"), "must be positive, got %d", s.MaxInFlight)
			}
		}
	}
	return errors.Join(errs...)
}

// EstimatedCalls is the number of calls the plan makes per mode (Poisson
// counts are expectations), for a progress bar.
func (p *Plan) EstimatedCalls() int {
	n := 0
	for _, s := range p.Scenarios {
		n += s.estimatedCalls()
	}
	return n * len(p.Modes)
}

func (s *Scenario) estimatedCalls() int {
	switch s.Kind {
	case KindIdle:
		return int(s.Duration.D().Seconds()) + s.WarmInstances
	case KindCold:
		return s.Calls * len(s.Functions)
	case KindBreakdown:
		return 2 * s.Calls * len(s.Functions)
	case KindWarm:
		return s.Calls + s.Warmup
	case KindPoisson:
		n := 0.0
		for _, r := range s.Rates {
			n += r * s.Duration.D().Minutes()
		}
		return int(n)
	case KindKeepAlive:
		return int(s.Rate*s.Duration.D().Minutes()) * len(s.KeepAlives)
	case KindChain:
		return 2 * (s.Calls + s.Warmup) * len(s.Sizes)
	case KindStateless:
		return (s.Calls + s.Warmup) * len(s.Variants)
	case KindParallel:
		n := 0
		for _, c := range s.Concurrency {
			n += s.Calls + s.Warmup*c
		}
		return n
	}
	return 0
}

// EstimatedDuration is a rough lower bound of the time a plan takes per
// mode: the durations it names plus the settle pauses.
func (p *Plan) EstimatedDuration() time.Duration {
	var d time.Duration
	for _, s := range p.Scenarios {
		switch s.Kind {
		case KindIdle:
			d += s.Duration.D()
		case KindPoisson:
			d += s.Duration.D() * time.Duration(len(s.Rates))
		case KindKeepAlive:
			d += s.Duration.D() * time.Duration(len(s.KeepAlives))
		}
		d += p.Settle.D()
	}
	return d * time.Duration(len(p.Modes))
}
