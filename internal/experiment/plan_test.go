package experiment

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func TestParsePlanDefaults(t *testing.T) {
	p, err := ParsePlan([]byte(`
modes: [process]
scenarios:
  - {kind: cold, calls: 3}
  - {kind: warm, calls: 10}
  - {kind: poisson, rates: [60], duration: 1s}
  - {kind: chain, calls: 2}
  - {kind: stateless, calls: 2}
`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "experiment" || p.Prefix != "exp" || p.Memory != "256Mi" || p.Energy.Source != "auto" || p.LargeMB != 50 {
		t.Errorf("plan defaults: %+v", p)
	}
	if p.Energy.MinWindow.D() != 3*time.Second || p.Energy.SampleLag.D() != 1100*time.Millisecond {
		t.Errorf("energy defaults: %v %v", p.Energy.MinWindow, p.Energy.SampleLag)
	}
	cold, warm, poisson, chain, state := p.Scenarios[0], p.Scenarios[1], p.Scenarios[2], p.Scenarios[3], p.Scenarios[4]
	if cold.Name != "cold" || strings.Join(cold.Functions, ",") != "small,medium,large" {
		t.Errorf("cold defaults: %+v", cold)
	}
	if warm.Function != "small" || warm.Warmup != 3 || len(warm.Concurrency) != 1 || warm.KeepAlive.D() != 10*time.Minute {
		t.Errorf("warm defaults: %+v", warm)
	}
	if poisson.Arrival != ArrivalPoisson || poisson.MaxInFlight != 256 || poisson.KeepAlive.D() != 10*time.Minute {
		t.Errorf("poisson defaults: %+v", poisson)
	}
	if len(chain.Sizes) != 3 || chain.Sizes[2] != 1<<20 {
		t.Errorf("chain defaults: %v", chain.Sizes)
	}
	if state.StateSize != 1<<20 || len(state.Variants) != 3 {
		t.Errorf("stateless defaults: %+v", state)
	}
}

func TestParsePlanErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, plan, want string
	}{
		{"no modes", "scenarios: [{kind: idle, duration: 1s}]", "modes:"},
		{"bad mode", "modes: [vm]\nscenarios: [{kind: idle, duration: 1s}]", "modes[0]"},
		{"duplicate mode", "modes: [process, process]\nscenarios: [{kind: idle, duration: 1s}]", "modes[1]"},
		{"no scenarios", "modes: [process]", "scenarios:"},
		{"unknown kind", "modes: [process]\nscenarios: [{kind: sleepy}]", "scenarios[0].kind"},
		{"unknown field", "modes: [process]\nscenarios: [{kind: idle, duraton: 1s}]", "duraton"},
		{"bad duration", "modes: [process]\nscenarios: [{kind: idle, duration: soon}]", "not a duration"},
		{"idle duration", "modes: [process]\nscenarios: [{kind: idle}]", "scenarios[0].duration"},
		{"cold calls", "modes: [process]\nscenarios: [{kind: idle, duration: 1s}, {kind: cold, calls: 0}]", "scenarios[1].calls"},
		{"cold function", "modes: [process]\nscenarios: [{kind: cold, calls: 1, functions: [huge]}]", "scenarios[0].functions[0]"},
		{"warm function", "modes: [process]\nscenarios: [{kind: warm, calls: 1, function: huge}]", "scenarios[0].function"},
		{"warm concurrency", "modes: [process]\nscenarios: [{kind: warm, calls: 1, concurrency: [1, 2]}]", "scenarios[0].concurrency"},
		{"warm keep_alive", "modes: [process]\nscenarios: [{kind: warm, calls: 1, keep_alive: 0s}]", "scenarios[0].keep_alive"},
		{"poisson rates", "modes: [process]\nscenarios: [{kind: poisson, duration: 1s}]", "scenarios[0].rates"},
		{"poisson rate", "modes: [process]\nscenarios: [{kind: poisson, duration: 1s, rates: [10, -1]}]", "scenarios[0].rates[1]"},
		{"arrival", "modes: [process]\nscenarios: [{kind: poisson, duration: 1s, rates: [1], arrival: burst}]", "scenarios[0].arrival"},
		{"keepalive rate", "modes: [process]\nscenarios: [{kind: keepalive, duration: 1s, keep_alives: [0s]}]", "scenarios[0].rate"},
		{"keepalive values", "modes: [process]\nscenarios: [{kind: keepalive, duration: 1s, rate: 10}]", "scenarios[0].keep_alives"},
		{"chain size", "modes: [process]\nscenarios: [{kind: chain, calls: 1, sizes: [1KiB, 7MiB]}]", "scenarios[0].sizes[1]"},
		{"size unit", "modes: [process]\nscenarios: [{kind: chain, calls: 1, sizes: [1XB]}]", "unknown unit"},
		{"state variant", "modes: [process]\nscenarios: [{kind: stateless, calls: 1, variants: [magic]}]", "scenarios[0].variants[0]"},
		{"parallel levels", "modes: [process]\nscenarios: [{kind: parallel, calls: 1}]", "scenarios[0].concurrency"},
		{"parallel level", "modes: [process]\nscenarios: [{kind: parallel, calls: 1, concurrency: [1, 0]}]", "scenarios[0].concurrency[1]"},
		{"scenario name", "modes: [process]\nscenarios: [{name: Bad_Name, kind: idle, duration: 1s}]", "scenarios[0].name"},
		{"duplicate name", "modes: [process]\nscenarios: [{kind: idle, duration: 1s}, {kind: idle, duration: 1s}]", "scenarios[1].name"},
		{"prefix", "prefix: Exp\nmodes: [process]\nscenarios: [{kind: idle, duration: 1s}]", "prefix"},
		{"memory", "memory: lots\nmodes: [process]\nscenarios: [{kind: idle, duration: 1s}]", "memory"},
		{"energy source", "energy: {source: psu}\nmodes: [process]\nscenarios: [{kind: idle, duration: 1s}]", "energy.source"},
		{"energy coefficients", "energy: {idle_watts: 5, max_watts: 2}\nmodes: [process]\nscenarios: [{kind: idle, duration: 1s}]", "energy:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePlan([]byte(tc.plan))
			if err == nil {
				t.Fatalf("ParsePlan accepted an invalid plan")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("error %q is not ErrInvalid", err)
			}
		})
	}
}

func TestShippedPlans(t *testing.T) {
	tests := []struct {
		file        string
		maxDuration time.Duration // the plan's named durations, per mode count
		minDuration time.Duration
	}{
		{"quick.yaml", 2 * time.Minute, 10 * time.Second},
		{"seed000.yaml", 24 * time.Hour, 8 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			p, err := LoadPlan(filepath.Join("..", "..", "experiments", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[string]bool{}
			for _, s := range p.Scenarios {
				kinds[s.Kind] = true
			}
			for _, k := range Kinds {
				if !kinds[k] {
					t.Errorf("%s has no %s scenario", tc.file, k)
				}
			}
			if d := p.EstimatedDuration(); d > tc.maxDuration || d < tc.minDuration {
				t.Errorf("%s: estimated duration %s outside [%s, %s]", tc.file, d, tc.minDuration, tc.maxDuration)
			}
		})
	}
	// Seed 000's own figures.
	p, err := LoadPlan(filepath.Join("..", "..", "experiments", "seed000.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Scenarios {
		switch s.Name {
		case "idle":
			if s.Duration.D() != time.Hour {
				t.Errorf("idle: %s, seed 000 says 1 hour", s.Duration)
			}
		case "cold":
			if s.Calls != 100 {
				t.Errorf("cold: %d calls, seed 000 says 100", s.Calls)
			}
		case "warm":
			if s.Calls != 1000 || s.KeepAlive.D() != 10*time.Minute {
				t.Errorf("warm: %d calls keep-alive %s, seed 000 says 1000 and 10 min", s.Calls, s.KeepAlive)
			}
		case "mixed":
			if s.Duration.D() != 30*time.Minute || len(s.Rates) != 5 || s.Rates[4] != 1000 {
				t.Errorf("mixed: %s %v, seed 000 says 30 min at 10, 50, 100, 500, 1000", s.Duration, s.Rates)
			}
		case "keepalive":
			if s.Duration.D() != 20*time.Minute || s.Rate != 100 || len(s.KeepAlives) != 4 || s.KeepAlives[3].D() != 10*time.Minute {
				t.Errorf("keepalive: %s %g %v, seed 000 says 20 min at 100/min over 0s, 10s, 60s, 600s", s.Duration, s.Rate, s.KeepAlives)
			}
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"1024", 1024, false}, {"1KiB", 1024, false}, {"64Ki", 64 << 10, false}, {"1MiB", 1 << 20, false},
		{"1MB", 1000000, false}, {"10B", 10, false}, {"1 KiB", 1024, false}, {"x", 0, true}, {"1GiB", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
	if s := Size(256 << 10).String(); s != "256KiB" {
		t.Errorf("Size.String = %q", s)
	}
}

func TestArrivals(t *testing.T) {
	tests := []struct {
		name    string
		arrival string
		rate    float64
		d       time.Duration
		lo, hi  int
	}{
		{"constant", ArrivalConstant, 120, 10 * time.Second, 19, 19}, // at 0.5 s, …, 9.5 s
		{"poisson", ArrivalPoisson, 600, 60 * time.Second, 540, 660},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := Arrivals(tc.arrival, tc.rate, tc.d, rand.New(rand.NewPCG(1, 2)))
			if len(a) < tc.lo || len(a) > tc.hi {
				t.Errorf("%d arrivals, want %d to %d", len(a), tc.lo, tc.hi)
			}
			for i := 1; i < len(a); i++ {
				if a[i] < a[i-1] || a[i] >= tc.d {
					t.Fatalf("arrival %d at %s out of order or past %s", i, a[i], tc.d)
				}
			}
			b := Arrivals(tc.arrival, tc.rate, tc.d, rand.New(rand.NewPCG(1, 2)))
			if len(a) != len(b) || (len(a) > 0 && a[len(a)-1] != b[len(b)-1]) {
				t.Error("the same seed gave different arrivals")
			}
		})
	}
}
