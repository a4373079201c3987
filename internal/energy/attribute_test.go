package energy

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestAttribute(t *testing.T) {
	tests := []struct {
		name string
		w    Window
		want Report // Functions and Warnings checked separately
		fns  map[string]FunctionEnergy
		acts map[string]float64
		warn string
	}{
		{
			// 100 J over 10 s at 4 W idle: 40 J idle, 60 J active over 6 s of
			// busy CPU, so 10 J per CPU-second.
			name: "two functions, platform and others",
			w: Window{
				Duration: 10 * time.Second, Energy: 100, Source: KindRAPL, IdleWatts: 4,
				NodeCPU: 6 * time.Second, PlatformCPU: ms(600),
				Instances: []InstanceCPU{
					{Function: "a", Instance: "a1", CPU: 3 * time.Second, ColdStartCPU: ms(600),
						Calls: []CallCPU{{"act1", ms(1200)}, {"act2", ms(600)}}},
					{Function: "b", Instance: "b1", CPU: ms(1200)}, // warm, no call
				},
			},
			want: Report{Window: 10 * time.Second, Source: KindRAPL, Total: 100, Idle: 40, Active: 60,
				Execution: 18, ColdStart: 6, IdleInstances: 6 + 12, Platform: 6, Other: 12, Overhead: 82, SPUE: 100.0 / 18},
			fns: map[string]FunctionEnergy{
				"a": {Function: "a", CPU: 3 * time.Second, ColdStart: 6, Execution: 18, IdleInstances: 6, Total: 30},
				"b": {Function: "b", CPU: ms(1200), IdleInstances: 12, Total: 12},
			},
			acts: map[string]float64{"act1": 12, "act2": 6},
		},
		{
			// Two instances of one function sum; ExecCPU above the calls' sum
			// keeps the rest in execution without an activation.
			name: "exec CPU given, calls partial",
			w: Window{
				Duration: time.Second, Energy: 8, Source: KindModel, NodeCPU: 4 * time.Second,
				Instances: []InstanceCPU{
					{Function: "f", Instance: "f1", CPU: 3 * time.Second, ExecCPU: 2 * time.Second, Calls: []CallCPU{{"x", time.Second}}},
					{Function: "f", Instance: "f2", CPU: time.Second, ColdStartCPU: time.Second},
				},
			},
			want: Report{Window: time.Second, Source: KindModel, Total: 8, Active: 8, Execution: 4, ColdStart: 2, IdleInstances: 2, Overhead: 4, SPUE: 2},
			fns:  map[string]FunctionEnergy{"f": {Function: "f", CPU: 4 * time.Second, ColdStart: 2, Execution: 4, IdleInstances: 2, Total: 8}},
			acts: map[string]float64{"x": 2},
		},
		{
			name: "idle power above the measured average",
			w: Window{Duration: 10 * time.Second, Energy: 30, IdleWatts: 4, NodeCPU: time.Second,
				Instances: []InstanceCPU{{Function: "f", CPU: time.Second, ExecCPU: time.Second}}},
			want: Report{Window: 10 * time.Second, Total: 30, Idle: 30, Overhead: 30},
			fns:  map[string]FunctionEnergy{"f": {Function: "f", CPU: time.Second}},
			warn: "idle power 4 W is above the measured average 3 W",
		},
		{
			name: "cgroups add up to more than the node",
			w: Window{Duration: 10 * time.Second, Energy: 20, IdleWatts: 1, NodeCPU: time.Second,
				Instances: []InstanceCPU{{Function: "f", CPU: 2 * time.Second, ExecCPU: 2 * time.Second}}},
			want: Report{Window: 10 * time.Second, Total: 20, Idle: 10, Active: 10, Execution: 10, Overhead: 10, SPUE: 2},
			fns:  map[string]FunctionEnergy{"f": {Function: "f", CPU: 2 * time.Second, Execution: 10, Total: 10}},
			warn: "exceeds the node's busy time",
		},
		{
			name: "cold start and exec above the cgroup's CPU",
			w: Window{Duration: time.Second, Energy: 10, NodeCPU: 5 * time.Second,
				Instances: []InstanceCPU{{Function: "f", CPU: time.Second, ColdStartCPU: time.Second, ExecCPU: time.Second}}},
			want: Report{Window: time.Second, Total: 10, Active: 10, ColdStart: 2, Execution: 2, Other: 6, Overhead: 8, SPUE: 5},
			fns:  map[string]FunctionEnergy{"f": {Function: "f", CPU: 2 * time.Second, ColdStart: 2, Execution: 2, Total: 4}},
			warn: "exceeds the cgroup's",
		},
		{
			name: "nothing ran",
			w:    Window{Duration: 10 * time.Second, Energy: 15, IdleWatts: 1},
			want: Report{Window: 10 * time.Second, Total: 15, Idle: 10, Active: 5, Other: 5, Overhead: 15},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Attribute(tt.w)
			if err != nil {
				t.Fatal(err)
			}
			checkSum(t, r)
			got := r
			got.Functions, got.Warnings = nil, nil
			if !closeReport(got, tt.want) {
				t.Errorf("report\n got %+v\nwant %+v", got, tt.want)
			}
			if len(r.Functions) != len(tt.fns) {
				t.Fatalf("functions = %+v, want %d", r.Functions, len(tt.fns))
			}
			for _, fe := range r.Functions {
				w := tt.fns[fe.Function]
				if fe.CPU != w.CPU || !near(fe.ColdStart, w.ColdStart) || !near(fe.Execution, w.Execution) ||
					!near(fe.IdleInstances, w.IdleInstances) || !near(fe.Total, w.Total) {
					t.Errorf("function %s = %+v, want %+v", fe.Function, fe, w)
				}
				for _, a := range fe.Activations {
					if !near(a.Joules, tt.acts[a.Activation]) {
						t.Errorf("activation %s = %g J, want %g", a.Activation, a.Joules, tt.acts[a.Activation])
					}
				}
			}
			joined := strings.Join(r.Warnings, "\n")
			if (tt.warn == "") != (joined == "") || !strings.Contains(joined, tt.warn) {
				t.Errorf("warnings = %q, want %q", joined, tt.warn)
			}
		})
	}
}

func TestAttributeInvalid(t *testing.T) {
	ok := Window{Duration: time.Second, Energy: 1}
	tests := []struct {
		name string
		mut  func(*Window)
	}{
		{"no window", func(w *Window) { w.Duration = 0 }},
		{"negative energy", func(w *Window) { w.Energy = -1 }},
		{"negative idle", func(w *Window) { w.IdleWatts = -1 }},
		{"negative node CPU", func(w *Window) { w.NodeCPU = -1 }},
		{"negative platform CPU", func(w *Window) { w.PlatformCPU = -1 }},
		{"negative instance CPU", func(w *Window) { w.Instances = []InstanceCPU{{CPU: -1}} }},
		{"negative call CPU", func(w *Window) { w.Instances = []InstanceCPU{{Calls: []CallCPU{{"a", -1}}}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := ok
			tt.mut(&w)
			if _, err := Attribute(w); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

// TestAttributeAddsUp checks on random windows that the parts add up to
// the node total and that no part is negative.
func TestAttributeAddsUp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dur := func(max time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(max))) }
	for i := range 500 {
		w := Window{
			Duration:    time.Second + dur(time.Minute),
			Energy:      rng.Float64() * 5000,
			IdleWatts:   rng.Float64() * 50,
			NodeCPU:     dur(2 * time.Minute),
			PlatformCPU: dur(5 * time.Second),
		}
		for j := range rng.IntN(6) {
			in := InstanceCPU{Function: string(rune('a' + j%3)), CPU: dur(10 * time.Second), ColdStartCPU: dur(time.Second)}
			for range rng.IntN(4) {
				in.Calls = append(in.Calls, CallCPU{"c", dur(2 * time.Second)})
			}
			w.Instances = append(w.Instances, in)
		}
		r, err := Attribute(w)
		if err != nil {
			t.Fatalf("window %d: %v", i, err)
		}
		checkSum(t, r)
	}
}

func checkSum(t *testing.T, r Report) {
	t.Helper()
	parts := []float64{r.Idle, r.ColdStart, r.Execution, r.IdleInstances, r.Platform, r.Other}
	var sum float64
	for _, p := range parts {
		if p < 0 {
			t.Fatalf("negative part in %+v", r)
		}
		sum += p
	}
	if math.Abs(sum-r.Total) > 1e-9*math.Max(1, r.Total) {
		t.Errorf("parts add up to %.12f, total %.12f: %+v", sum, r.Total, r)
	}
	if !near(r.Overhead, r.Total-r.Execution) {
		t.Errorf("overhead %g != total − execution %g", r.Overhead, r.Total-r.Execution)
	}
	var fsum, asum float64
	for _, f := range r.Functions {
		fsum += f.Total
		for _, a := range f.Activations {
			asum += a.Joules
		}
	}
	if !near(fsum, r.ColdStart+r.Execution+r.IdleInstances) || asum > r.Execution+1e-9 {
		t.Errorf("functions add up to %g, activations %g; report %+v", fsum, asum, r)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func closeReport(a, b Report) bool {
	return a.Window == b.Window && a.Source == b.Source && near(a.Total, b.Total) && near(a.Idle, b.Idle) &&
		near(a.Active, b.Active) && near(a.Execution, b.Execution) && near(a.ColdStart, b.ColdStart) &&
		near(a.IdleInstances, b.IdleInstances) && near(a.Platform, b.Platform) && near(a.Other, b.Other) &&
		near(a.Overhead, b.Overhead) && near(a.SPUE, b.SPUE)
}
