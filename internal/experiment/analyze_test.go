package experiment

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/energy"
	"github.com/wisp-faas/wisp/internal/stats"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// synthetic builds a deterministic two-mode run: container cold starts 3×
// slower than process, warm calls alike, an idle baseline, a keep-alive
// sweep and a startup breakdown.
func synthetic() *Result {
	plan, err := ParsePlan([]byte(`
name: synthetic
modes: [process, container]
scenarios:
  - {kind: idle, duration: 10s}
  - {kind: cold, functions: [small, large], calls: 6}
  - {kind: warm, calls: 20}
  - {kind: keepalive, keep_alives: [0s, 10s], rate: 60, duration: 10s}
  - {kind: breakdown, functions: [small], calls: 4}
`))
	if err != nil {
		panic(err)
	}
	res := &Result{Plan: plan, Modes: []string{"process", "container"}, Skipped: map[string]string{},
		Source: "model", Energy: "model: P = 1.48 W + (7 W − 1.48 W) × u", Started: t0, Finished: t0.Add(time.Hour),
		Machine: Machine{Hostname: "test", CPUs: 2}}
	at := t0
	window := func(sc *Scenario, variant, mode string, ka time.Duration, param float64, nodeJ, fnJ float64, calls []Call) {
		end := at.Add(10 * time.Second)
		res.Windows = append(res.Windows, Window{Scenario: sc.Name, Kind: sc.Kind, Variant: variant, Mode: mode,
			Start: at, End: end, EnergyEnd: end, NodeJ: nodeJ, FunctionJ: fnJ, Source: "model", KeepAlive: ka, Param: param})
		res.Calls = append(res.Calls, calls...)
		at = end
	}
	mk := func(sc *Scenario, variant, mode, fn string, i int, lat float64, cold bool, inst string) Call {
		c := newCall(sc, variant, mode, fn, i)
		c.Start, c.LatencyMs, c.Cold, c.Status, c.InstanceID = at.Add(time.Duration(i)*time.Second), lat, cold, 200, inst
		c.ServerMs, c.ExecMs = lat-0.5, 1
		c.ActivationID = fmt.Sprintf("%s-%s-%s-%d", sc.Name, variant, mode, i)
		if cold {
			c.QueueMs, c.StartMs, c.SandboxMs, c.RuntimeMs, c.ImportMs = lat-2, lat-2.5, (lat-2.5)/2, 0, (lat-2.5)/2
		} else {
			c.QueueMs = 0
		}
		return c
	}
	sc := plan.Scenarios
	factor := map[string]float64{"process": 1, "container": 3}
	for _, mode := range res.Modes {
		f := factor[mode]
		window(&sc[0], "", mode, -1, 0, 10*f, math.NaN(), nil) // 1 W process, 3 W container
		for _, fn := range []string{"small", "large"} {
			base := map[string]float64{"small": 50, "large": 200}[fn]
			var calls []Call
			for i := range 6 {
				calls = append(calls, mk(&sc[1], fn, mode, fn, i, base*f+float64(i), true, fmt.Sprintf("%s-%s-%d", fn, mode, i)))
			}
			window(&sc[1], fn, mode, 0, 0, 6*f, 0.6, calls)
		}
		var calls []Call
		for i := range 20 {
			calls = append(calls, mk(&sc[2], "small", mode, "small", i, 1+float64(i%5)*0.1, false, "w-"+mode))
		}
		window(&sc[2], "small", mode, 10*time.Minute, 1, 20, 1, calls)
		for _, ka := range []time.Duration{0, 10 * time.Second} {
			var calls []Call
			for i := range 10 {
				cold := ka == 0 || i == 0
				inst := "k-" + mode
				if ka == 0 {
					inst = fmt.Sprintf("k-%s-%d", mode, i)
				}
				lat := 2.0
				if cold {
					lat = 60 * f
				}
				calls = append(calls, mk(&sc[3], "keep_alive="+Duration(ka).String(), mode, "small", i, lat+float64(i)*0.01, cold, inst))
			}
			window(&sc[3], "keep_alive="+Duration(ka).String(), mode, ka, ka.Seconds(), 12, 1, calls)
		}
		for _, k := range []string{"cold", "warm"} {
			var calls []Call
			for i := range 4 {
				lat := 3 + float64(i)
				if k == "cold" {
					lat = 80*f + float64(i)
				}
				calls = append(calls, mk(&sc[4], "small/"+k, mode, "small", i, lat, k == "cold", "b"))
			}
			window(&sc[4], "small/"+k, mode, 0, 0, 5, 0.5, calls)
		}
	}
	return res
}

func TestAnalyzeSynthetic(t *testing.T) {
	res := synthetic()
	s := Analyze(res)
	find := func(scenario, variant, mode string) *Group {
		for i := range s.Groups {
			g := &s.Groups[i]
			if g.Scenario == scenario && g.Variant == variant && g.Mode == mode {
				return g
			}
		}
		t.Fatalf("no group %s/%s/%s", scenario, variant, mode)
		return nil
	}
	g := find("cold", "small", "container")
	if g.N != 6 || g.Cold != 6 || g.ColdPct != 100 {
		t.Errorf("cold small container: n %d cold %d %g%%", g.N, g.Cold, g.ColdPct)
	}
	if want := 152.5; math.Abs(g.Latency.Mean-want) > 1e-9 || g.Latency.P50 != want {
		t.Errorf("cold small container mean %g median %g, want %g", g.Latency.Mean, g.Latency.P50, want)
	}
	if g.NodeJPerCall != 3 || math.Abs(g.SPUE-30) > 1e-9 {
		t.Errorf("cold small container: %g J/inv, sPUE %g; want 3 and 30", g.NodeJPerCall, g.SPUE)
	}
	if idle := find("idle", "", "process"); idle.PowerW != 1 {
		t.Errorf("idle process power %g W, want 1", idle.PowerW)
	}

	// The pooled cold Welch test is stats.Welch over the same samples.
	var pa, pb []float64
	for _, c := range res.Calls {
		if c.Kind == KindCold {
			if c.Mode == "process" {
				pa = append(pa, c.LatencyMs)
			} else {
				pb = append(pb, c.LatencyMs)
			}
		}
	}
	want, err := stats.Welch(pa, pb)
	if err != nil {
		t.Fatal(err)
	}
	w := findWelch(s.Welch, "cold latency (all functions)")
	if w == nil || w.Err != "" || w.Test != want {
		t.Errorf("pooled cold Welch = %+v, want %+v", w, want)
	}
	if len(s.ANOVA) == 0 {
		t.Error("no ANOVA rows")
	}
	var acrossModes, acrossVariants bool
	for _, a := range s.ANOVA {
		acrossModes = acrossModes || a.Across == "modes"
		acrossVariants = acrossVariants || (a.Across == "variants" && a.What == "cold on process")
	}
	if !acrossModes || !acrossVariants {
		t.Errorf("ANOVA rows lack modes (%v) or cold variants (%v): %+v", acrossModes, acrossVariants, s.ANOVA)
	}

	verdicts := map[string]string{}
	for _, h := range s.Hypotheses {
		verdicts[strings.SplitN(h.Metric, " (", 2)[0]] = h.Verdict
	}
	for metric, v := range map[string]string{
		"Idle power":            NotSupported, // B (3 W) is higher than A (1 W)
		"Cold start time":       Supported,    // 3×
		"Cold start energy":     DirOnly,      // +200 %
		"Warm execution energy": Supported,    // equal
		"Memory per function":   NotMeasured,
		"sPUE":                  Measured,
		"Security":              NotMeasured,
		"Max density":           NotMeasured,
	} {
		if verdicts[metric] != v {
			t.Errorf("hypothesis %s: %q, want %q", metric, verdicts[metric], v)
		}
	}

	if len(s.KeepAlive) != 4 {
		t.Fatalf("keep-alive points: %+v", s.KeepAlive)
	}
	for _, p := range s.KeepAlive {
		switch p.KeepAliveS {
		case 0:
			if p.ColdPct != 100 || p.IdleInstanceS > 0.01 { // 0.5 ms per call between server and round trip
				t.Errorf("keep-alive 0: %+v", p)
			}
		case 10:
			if p.ColdPct != 10 || p.IdleInstanceS < 18 {
				t.Errorf("keep-alive 10s: %+v (one instance over 9 s plus a 10 s tail)", p)
			}
		}
	}
	if len(s.Stages) != 4 || s.Stages[0].Variant != "small/cold" || s.Stages[0].Sandbox == 0 {
		t.Errorf("stages: %+v", s.Stages)
	}

	// Deterministic, and JSON-encodable (no NaN).
	a, err := json.Marshal(Analyze(res))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(Analyze(res))
	if !bytes.Equal(a, b) {
		t.Error("Analyze is not deterministic")
	}
}

func TestAnalyzeOneMode(t *testing.T) {
	res := synthetic()
	res.Modes = []string{"process"}
	var calls []Call
	for _, c := range res.Calls {
		if c.Mode == "process" {
			calls = append(calls, c)
		}
	}
	res.Calls = calls
	s := Analyze(res)
	for _, w := range s.Welch {
		if w.A == "process" && w.B == "container" {
			t.Errorf("a mode comparison with one mode: %+v", w)
		}
	}
	for _, a := range s.ANOVA {
		if a.Across != "variants" {
			t.Errorf("ANOVA across %s with one mode", a.Across)
		}
	}
	for _, h := range s.Hypotheses {
		if strings.HasPrefix(h.Metric, "Cold start time") && h.Verdict != NotMeasured {
			t.Errorf("cold start time with one mode: %+v", h)
		}
	}
}

func TestIdleInstanceSeconds(t *testing.T) {
	call := func(inst string, startS, latMs float64) Call {
		c := Call{InstanceID: inst, Start: t0.Add(time.Duration(startS * float64(time.Second))), LatencyMs: latMs,
			ServerMs: latMs, Status: 200}
		return c
	}
	tests := []struct {
		name      string
		calls     []Call
		keepAlive time.Duration
		instances int
		idle      float64
	}{
		{"no instance ids", []Call{{Start: t0, LatencyMs: 1, Status: 200}}, time.Second, 0, math.NaN()},
		{"keep-alive 0, one call each", []Call{call("a", 0, 100), call("b", 1, 100)}, 0, 2, 0},
		{"one instance, two calls", []Call{call("a", 0, 1000), call("a", 5, 1000)}, 10 * time.Second, 1, 14},
		{"failed calls are left out", []Call{call("a", 0, 1000), {InstanceID: "a", Start: t0.Add(time.Hour), Status: 500}}, 0, 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, idle := IdleInstanceSeconds(tc.calls, tc.keepAlive)
			if n != tc.instances || !(math.Abs(idle-tc.idle) < 1e-9 || (math.IsNaN(tc.idle) && math.IsNaN(idle))) {
				t.Errorf("IdleInstanceSeconds = %d, %g; want %d, %g", n, idle, tc.instances, tc.idle)
			}
		})
	}
}

func TestModelFunctionEnergy(t *testing.T) {
	cfg := energy.ModelConfig{IdleWatts: 2, MaxWatts: 10, CPUs: 2} // 4 W active per CPU
	tests := []struct {
		name   string
		nodeJ  float64
		execMs []float64
		want   float64
	}{
		{"share of one CPU", 100, []float64{500, 500}, 4},                    // 4 W × 1 s
		{"capped at the node's active energy", 21, []float64{1000, 1000}, 1}, // 21 − 2 W × 10 s
		{"unknown exec time", 100, []float64{math.NaN()}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := make([]Call, len(tc.execMs))
			for i, e := range tc.execMs {
				calls[i] = Call{ExecMs: e, EnergyJ: math.NaN()}
			}
			got := ModelFunctionEnergy(cfg, tc.nodeJ, 10*time.Second, calls)
			if math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("function energy %g, want %g", got, tc.want)
			}
			sum := 0.0
			for _, c := range calls {
				if !math.IsNaN(c.EnergyJ) {
					sum += c.EnergyJ
					if c.EnergySource != "model" {
						t.Errorf("call energy source %q", c.EnergySource)
					}
				}
			}
			if math.Abs(sum-tc.want) > 1e-9 {
				t.Errorf("calls add up to %g, want %g", sum, tc.want)
			}
		})
	}
}

func TestWriteCSV(t *testing.T) {
	sc := &Scenario{Name: "cold", Kind: KindCold}
	c := newCall(sc, "small", "process", "small", 3)
	c.Start, c.LatencyMs, c.Cold, c.Status, c.ExecMs, c.Error = t0, 12.5, true, 200, 1.25, `say "hi", ok`
	var buf bytes.Buffer
	if err := WriteCSV(&buf, []Call{c}); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || len(rows[0]) != len(CSVHeader) || len(rows[1]) != len(CSVHeader) {
		t.Fatalf("rows: %q", rows)
	}
	row := map[string]string{}
	for i, h := range rows[0] {
		row[h] = rows[1][i]
	}
	want := map[string]string{"scenario": "cold", "variant": "small", "mode": "process", "call": "3",
		"start": "2025-01-02T03:04:05Z", "latency_ms": "12.5", "cold": "true", "exec_ms": "1.25",
		"init_ms": "", "energy_j": "", "status": "200", "error": `say "hi", ok`}
	for k, v := range want {
		if row[k] != v {
			t.Errorf("column %s = %q, want %q", k, row[k], v)
		}
	}
}

func TestWriteOutputs(t *testing.T) {
	dir := t.TempDir()
	res := synthetic()
	if _, err := WriteOutputs(dir, res); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CallsFile, SummaryFile, ReportFile, "latency_cdf.png", "cold_vs_warm.png",
		"energy_per_invocation.png", "spue.png", "keepalive_tradeoff.png"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	rep, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Machine", "## Energy source", "Source: **model**", "## Plan", "## Welch's t-test",
		"## One-way ANOVA", "## Startup breakdown by stage", "## Keep-alive trade-off", "## Seed 000's hypotheses",
		"| Cold start time (mean latency of cold calls) | B 2–5× slower than A |", "](latency_cdf.png)", "](keepalive_tradeoff.png)"} {
		if !bytes.Contains(rep, []byte(want)) {
			t.Errorf("report lacks %q", want)
		}
	}
	var sum Summary
	b, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if len(sum.Groups) == 0 || len(sum.Hypotheses) != 8 || sum.SPUE["process"] == 0 {
		t.Errorf("summary.json: %d groups, %d hypotheses, sPUE %v", len(sum.Groups), len(sum.Hypotheses), sum.SPUE)
	}
}
