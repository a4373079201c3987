package experiment

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/wisp-faas/wisp/internal/stats"
)

// Summary is summary.json: the statistics of a run, per scenario variant,
// mode and function, with the tests between modes and the hypotheses.
type Summary struct {
	Plan         string             `json:"plan"`
	Modes        []string           `json:"modes"`
	Skipped      map[string]string  `json:"skipped,omitempty"`
	EnergySource string             `json:"energy_source"`
	Energy       string             `json:"energy"`
	Started      time.Time          `json:"started"`
	Finished     time.Time          `json:"finished"`
	Groups       []Group            `json:"groups"`
	Welch        []WelchRow         `json:"welch"`
	ANOVA        []ANOVARow         `json:"anova"`
	KeepAlive    []KeepAlivePoint   `json:"keep_alive"`
	Stages       []StageRow         `json:"stages"`
	Hypotheses   []Hypothesis       `json:"hypotheses"`
	SPUE         map[string]float64 `json:"spue_by_mode"` // Σ node J / Σ function J over every window with function energy
	Notes        []string           `json:"notes,omitempty"`
}

// Group holds the statistics of one scenario variant's calls of one
// function on one mode. Latencies are in milliseconds and count successful
// calls only. Energy figures are the window's (every group of a window
// shares them): NodeJPerCall is the node's energy over the window divided
// by the window's invocations. Figures that need more data than there is
// are 0 in JSON.
type Group struct {
	Scenario string `json:"scenario"`
	Kind     string `json:"kind"`
	Variant  string `json:"variant"`
	Mode     string `json:"mode"`
	Function string `json:"function"`

	N       int     `json:"n"`      // successful calls
	Errors  int     `json:"errors"` // failed or dropped calls
	Cold    int     `json:"cold"`
	ColdPct float64 `json:"cold_pct"`

	Latency stats.Summary  `json:"latency_ms"`
	ColdMs  *stats.Summary `json:"cold_latency_ms,omitempty"`
	WarmMs  *stats.Summary `json:"warm_latency_ms,omitempty"`

	WindowS    float64 `json:"window_s"`         // from the first call's start to the last call's end
	EnergyS    float64 `json:"energy_window_s"`  // the energy window: WindowS padded to energy.min_window, plus the sample lag
	Throughput float64 `json:"throughput_per_s"` // successful calls per second of the window

	EnergySource     string  `json:"energy_source"`
	NodeJ            float64 `json:"node_j"`
	FunctionJ        float64 `json:"function_j"`
	PowerW           float64 `json:"power_w"` // node J / window s
	NodeJPerCall     float64 `json:"node_j_per_call"`
	FunctionJPerCall float64 `json:"function_j_per_call"`
	SPUE             float64 `json:"spue"` // node J / function J

	Instances     int     `json:"instances"`
	IdleInstanceS float64 `json:"idle_instance_s"` // instance-seconds spent idle (keep-alive tail included)
	KeepAliveS    float64 `json:"keep_alive_s"`
	Param         float64 `json:"param"`

	latencies, cold, warm []float64
}

// WelchRow is Welch's t-test between two modes (A − B), or between cold
// and warm calls of one mode.
type WelchRow struct {
	What string      `json:"what"`
	A    string      `json:"a"`
	B    string      `json:"b"`
	NA   int         `json:"n_a"`
	NB   int         `json:"n_b"`
	Test stats.TTest `json:"test"`
	Err  string      `json:"error,omitempty"`
}

// ANOVARow is a one-way ANOVA of latency across groups (modes, or a
// scenario's variants).
type ANOVARow struct {
	What   string            `json:"what"`
	Across string            `json:"across"` // "modes" or "variants"
	Groups []string          `json:"groups"`
	Result stats.ANOVAResult `json:"result"`
	Err    string            `json:"error,omitempty"`
}

// KeepAlivePoint is one point of the keep-alive trade-off curve.
type KeepAlivePoint struct {
	Mode          string  `json:"mode"`
	KeepAliveS    float64 `json:"keep_alive_s"`
	Calls         int     `json:"calls"`
	ColdPct       float64 `json:"cold_pct"`
	MeanMs        float64 `json:"mean_ms"`
	P95Ms         float64 `json:"p95_ms"`
	IdleInstanceS float64 `json:"idle_instance_s"`
	// IdleJ estimates the idle instances' energy: IdleInstanceS × the
	// per-instance idle power measured by an idle scenario with warm
	// instances on this mode (0 when there is none).
	IdleJ        float64 `json:"idle_j"`
	NodeJPerCall float64 `json:"node_j_per_call"`
}

// StageRow is the mean startup breakdown of one function's calls.
type StageRow struct {
	Mode     string  `json:"mode"`
	Variant  string  `json:"variant"` // function/cold or function/warm
	N        int     `json:"n"`
	Latency  float64 `json:"latency_ms"` // client round trip
	Server   float64 `json:"server_ms"`  // X-Wisp-Duration-Ms
	Queue    float64 `json:"queue_ms"`
	Start    float64 `json:"start_ms"`
	Sandbox  float64 `json:"sandbox_ms"`
	Runtime  float64 `json:"runtime_ms"`
	Import   float64 `json:"import_ms"`
	Exec     float64 `json:"exec_ms"`
	Transfer float64 `json:"client_ms"` // latency − server: HTTP, network, client
}

// Hypothesis is one row of seed 000's hypothesis table, measured.
type Hypothesis struct {
	Metric   string `json:"metric"`
	Expected string `json:"expected"`
	Measured string `json:"measured"`
	Verdict  string `json:"verdict"` // supported, direction only, not supported, measured, not measured
}

type windowKey struct{ scenario, variant, mode string }

// Analyze computes the summary of a run. It is deterministic: the same
// result gives the same summary.
func Analyze(res *Result) *Summary {
	s := &Summary{Plan: res.Plan.Name, Modes: res.Modes, Skipped: res.Skipped, EnergySource: res.Source,
		Energy: res.Energy, Started: res.Started, Finished: res.Finished, Notes: res.Notes, SPUE: map[string]float64{}}
	byWindow := map[windowKey][]Call{}
	for _, c := range res.Calls {
		k := windowKey{c.Scenario, c.Variant, c.Mode}
		byWindow[k] = append(byWindow[k], c)
	}
	nodeSum, fnSum := map[string]float64{}, map[string]float64{}
	for _, w := range res.Windows {
		calls := byWindow[windowKey{w.Scenario, w.Variant, w.Mode}]
		invocations := 0
		for _, c := range calls {
			if c.Function != "chain" && c.OK() {
				invocations++
			}
		}
		fns := []string{}
		byFn := map[string][]Call{}
		for _, c := range calls {
			if _, ok := byFn[c.Function]; !ok {
				fns = append(fns, c.Function)
			}
			byFn[c.Function] = append(byFn[c.Function], c)
		}
		if len(fns) == 0 {
			fns = []string{""}
		}
		if w.FunctionJ > 0 && !math.IsNaN(w.NodeJ) {
			nodeSum[w.Mode] += w.NodeJ
			fnSum[w.Mode] += w.FunctionJ
		}
		for _, fn := range fns {
			g := newGroup(w, fn, byFn[fn], invocations)
			s.Groups = append(s.Groups, g)
		}
	}
	for m, n := range nodeSum {
		s.SPUE[m] = n / fnSum[m]
	}
	s.Welch = welchRows(s.Groups, res.Modes)
	s.ANOVA = anovaRows(s.Groups, res.Modes)
	s.KeepAlive = keepAliveCurve(s.Groups)
	s.Stages = stageRows(res.Calls)
	s.Hypotheses = hypotheses(s, res.Modes)
	for i := range s.Groups {
		finiteGroup(&s.Groups[i])
	}
	return s
}

func newGroup(w Window, fn string, calls []Call, invocations int) Group {
	g := Group{Scenario: w.Scenario, Kind: w.Kind, Variant: w.Variant, Mode: w.Mode, Function: fn,
		WindowS: w.Seconds(), EnergyS: w.EnergySeconds(), EnergySource: w.Source, NodeJ: w.NodeJ, FunctionJ: w.FunctionJ, Param: w.Param}
	for _, c := range calls {
		if !c.OK() {
			g.Errors++
			continue
		}
		g.N++
		g.latencies = append(g.latencies, c.LatencyMs)
		if c.Cold {
			g.Cold++
			g.cold = append(g.cold, c.LatencyMs)
		} else {
			g.warm = append(g.warm, c.LatencyMs)
		}
	}
	g.Latency = stats.Summarize(g.latencies)
	if g.N > 0 {
		g.ColdPct = 100 * float64(g.Cold) / float64(g.N)
	}
	if len(g.cold) > 0 && len(g.warm) > 0 {
		c, wm := stats.Summarize(g.cold), stats.Summarize(g.warm)
		g.ColdMs, g.WarmMs = &c, &wm
	}
	if g.WindowS > 0 {
		g.Throughput = float64(g.N) / g.WindowS
	}
	if g.EnergyS > 0 {
		g.PowerW = g.NodeJ / g.EnergyS
	}
	g.NodeJPerCall, g.FunctionJPerCall, g.SPUE = math.NaN(), math.NaN(), math.NaN()
	if invocations > 0 {
		g.NodeJPerCall = g.NodeJ / float64(invocations)
		g.FunctionJPerCall = g.FunctionJ / float64(invocations)
	}
	if g.FunctionJ > 0 {
		g.SPUE = g.NodeJ / g.FunctionJ
	}
	g.KeepAliveS = w.KeepAlive.Seconds()
	g.Instances, g.IdleInstanceS = IdleInstanceSeconds(calls, w.KeepAlive)
	return g
}

// IdleInstanceSeconds estimates, from calls' instance ids, how many
// instances served them and how long those instances sat idle: each lives
// from its first call's start to its last call's end plus keepAlive (the
// tail until eviction); idle is that lifetime less the time its calls took
// (the server's duration, else the round trip). NaN when no call carries an
// instance id.
func IdleInstanceSeconds(calls []Call, keepAlive time.Duration) (int, float64) {
	type life struct {
		first, last time.Time
		busy        float64
	}
	lives := map[string]*life{}
	for _, c := range calls {
		if c.InstanceID == "" || !c.OK() {
			continue
		}
		d := c.ServerMs
		if math.IsNaN(d) {
			d = c.LatencyMs
		}
		end := c.Start.Add(time.Duration(c.LatencyMs * float64(time.Millisecond)))
		l, ok := lives[c.InstanceID]
		if !ok {
			l = &life{first: c.Start, last: end}
			lives[c.InstanceID] = l
		}
		if c.Start.Before(l.first) {
			l.first = c.Start
		}
		if end.After(l.last) {
			l.last = end
		}
		l.busy += d / 1000
	}
	if len(lives) == 0 {
		return 0, math.NaN()
	}
	idle := 0.0
	for _, l := range lives {
		idle += math.Max(0, l.last.Sub(l.first).Seconds()+math.Max(0, keepAlive.Seconds())-l.busy)
	}
	return len(lives), idle
}

func finiteGroup(g *Group) {
	fin := func(s *stats.Summary) {
		for _, p := range []*float64{&s.Mean, &s.StdDev, &s.Min, &s.P50, &s.P95, &s.P99, &s.Max, &s.CI95Lo, &s.CI95Hi} {
			*p = stats.Finite(*p)
		}
	}
	fin(&g.Latency)
	if g.ColdMs != nil {
		fin(g.ColdMs)
		fin(g.WarmMs)
	}
	for _, p := range []*float64{&g.NodeJ, &g.FunctionJ, &g.PowerW, &g.NodeJPerCall, &g.FunctionJPerCall, &g.SPUE, &g.IdleInstanceS, &g.KeepAliveS} {
		*p = stats.Finite(*p)
	}
}

type groupKey struct{ scenario, variant, function string }

func (g *Group) key() groupKey { return groupKey{g.Scenario, g.Variant, g.Function} }

func (k groupKey) String() string {
	parts := []string{k.scenario}
	if k.variant != "" && k.variant != k.function {
		parts = append(parts, k.variant)
	}
	if k.function != "" {
		parts = append(parts, k.function)
	}
	return strings.Join(parts, " / ")
}

// orderedKeys returns the distinct keys of groups in first-seen order.
func orderedKeys(groups []Group) []groupKey {
	var keys []groupKey
	seen := map[groupKey]bool{}
	for i := range groups {
		k := groups[i].key()
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

func findGroup(groups []Group, k groupKey, mode string) *Group {
	for i := range groups {
		if groups[i].key() == k && groups[i].Mode == mode {
			return &groups[i]
		}
	}
	return nil
}

// welchRows tests every group present on the first two modes (A = the
// first mode, B = the second), and cold against warm calls of each
// breakdown function on every mode.
func welchRows(groups []Group, modes []string) []WelchRow {
	var out []WelchRow
	add := func(what, a, b string, xa, xb []float64) {
		r := WelchRow{What: what, A: a, B: b, NA: len(xa), NB: len(xb)}
		t, err := stats.Welch(xa, xb)
		if err != nil {
			r.Err = err.Error()
		}
		r.Test = finiteT(t)
		out = append(out, r)
	}
	if len(modes) >= 2 {
		// Pooled cold and warm latency first: the comparisons seed 000 asks for.
		for _, kind := range []string{KindCold, KindWarm} {
			var xa, xb []float64
			for i := range groups {
				g := &groups[i]
				if g.Kind != kind {
					continue
				}
				switch g.Mode {
				case modes[0]:
					xa = append(xa, g.latencies...)
				case modes[1]:
					xb = append(xb, g.latencies...)
				}
			}
			if len(xa) > 0 || len(xb) > 0 {
				add(kind+" latency (all functions)", modes[0], modes[1], xa, xb)
			}
		}
		for _, k := range orderedKeys(groups) {
			ga, gb := findGroup(groups, k, modes[0]), findGroup(groups, k, modes[1])
			if ga == nil || gb == nil || ga.Kind == KindIdle || len(ga.latencies) == 0 {
				continue
			}
			add(k.String(), modes[0], modes[1], ga.latencies, gb.latencies)
		}
	}
	// Cold against warm within a mode (breakdown).
	for _, m := range modes {
		for i := range groups {
			g := &groups[i]
			if g.Mode != m || g.Kind != KindBreakdown || !strings.HasSuffix(g.Variant, "/cold") {
				continue
			}
			w := findGroup(groups, groupKey{g.Scenario, strings.TrimSuffix(g.Variant, "/cold") + "/warm", g.Function}, m)
			if w == nil {
				continue
			}
			add(fmt.Sprintf("%s %s: cold vs warm", g.Scenario, g.Function), m+" cold", m+" warm", g.latencies, w.latencies)
		}
	}
	return out
}

func finiteT(t stats.TTest) stats.TTest {
	for _, p := range []*float64{&t.MeanA, &t.MeanB, &t.Diff, &t.T, &t.DF, &t.P, &t.CI95Lo, &t.CI95Hi} {
		*p = stats.Finite(*p)
	}
	return t
}

func finiteA(a stats.ANOVAResult) stats.ANOVAResult {
	for _, p := range []*float64{&a.SSBetween, &a.SSWithin, &a.MSBetween, &a.MSWithin, &a.F, &a.P, &a.R2} {
		*p = stats.Finite(*p)
	}
	return a
}

// anovaRows runs a one-way ANOVA of latency across modes for every group
// on two or more modes, and across the variants of each scenario (per
// mode and function) where it has two or more.
func anovaRows(groups []Group, modes []string) []ANOVARow {
	var out []ANOVARow
	run := func(what, across string, names []string, xs [][]float64) {
		r := ANOVARow{What: what, Across: across, Groups: names}
		a, err := stats.ANOVA(xs...)
		if err != nil {
			r.Err = err.Error()
		}
		r.Result = finiteA(a)
		out = append(out, r)
	}
	if len(modes) >= 2 {
		for _, k := range orderedKeys(groups) {
			var names []string
			var xs [][]float64
			for _, m := range modes {
				if g := findGroup(groups, k, m); g != nil && len(g.latencies) > 0 {
					names = append(names, m)
					xs = append(xs, g.latencies)
				}
			}
			if len(xs) >= 2 {
				run(k.String(), "modes", names, xs)
			}
		}
	}
	type sk struct{ scenario, mode, function string }
	var order []sk
	members := map[sk][]*Group{}
	for i := range groups {
		g := &groups[i]
		if g.Kind == KindIdle || len(g.latencies) == 0 || g.Variant == "" {
			continue
		}
		k := sk{g.Scenario, g.Mode, g.Function}
		if g.Kind == KindCold {
			k.function = "" // the variants are the functions
		}
		if _, ok := members[k]; !ok {
			order = append(order, k)
		}
		members[k] = append(members[k], g)
	}
	for _, k := range order {
		ms := members[k]
		if len(ms) < 2 {
			continue
		}
		var names []string
		var xs [][]float64
		for _, g := range ms {
			names = append(names, g.Variant)
			xs = append(xs, g.latencies)
		}
		what := k.scenario + " on " + k.mode
		if k.function != "" {
			what += " (" + k.function + ")"
		}
		run(what, "variants", names, xs)
	}
	return out
}

// keepAliveCurve collects the keepalive scenarios' points.
func keepAliveCurve(groups []Group) []KeepAlivePoint {
	// Per-instance idle power per mode, from idle windows with warm
	// instances against one without.
	base, warm, warmN := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for i := range groups {
		g := &groups[i]
		if g.Kind != KindIdle || g.EnergyS <= 0 || math.IsNaN(g.PowerW) {
			continue
		}
		if g.Param == 0 {
			base[g.Mode] = g.PowerW
		} else {
			warm[g.Mode], warmN[g.Mode] = g.PowerW, g.Param
		}
	}
	perInstance := func(mode string) float64 {
		b, okb := base[mode]
		w, okw := warm[mode]
		if !okb || !okw || warmN[mode] <= 0 {
			return 0
		}
		return math.Max(0, (w-b)/warmN[mode])
	}
	var out []KeepAlivePoint
	for i := range groups {
		g := &groups[i]
		if g.Kind != KindKeepAlive {
			continue
		}
		p := KeepAlivePoint{Mode: g.Mode, KeepAliveS: g.KeepAliveS, Calls: g.N, ColdPct: g.ColdPct,
			MeanMs: stats.Finite(g.Latency.Mean), P95Ms: stats.Finite(g.Latency.P95),
			IdleInstanceS: stats.Finite(g.IdleInstanceS), NodeJPerCall: stats.Finite(g.NodeJPerCall)}
		p.IdleJ = p.IdleInstanceS * perInstance(g.Mode)
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b KeepAlivePoint) int {
		return cmp.Or(cmp.Compare(a.Mode, b.Mode), cmp.Compare(a.KeepAliveS, b.KeepAliveS))
	})
	return out
}

// stageRows averages the stage timings of the breakdown scenarios' calls.
func stageRows(calls []Call) []StageRow {
	type k struct{ mode, variant string }
	var order []k
	acc := map[k][]*Call{}
	for i := range calls {
		c := &calls[i]
		if c.Kind != KindBreakdown || !c.OK() {
			continue
		}
		kk := k{c.Mode, c.Variant}
		if _, ok := acc[kk]; !ok {
			order = append(order, kk)
		}
		acc[kk] = append(acc[kk], c)
	}
	var out []StageRow
	for _, kk := range order {
		cs := acc[kk]
		mean := func(f func(*Call) float64) float64 {
			var xs []float64
			for _, c := range cs {
				if v := f(c); !math.IsNaN(v) {
					xs = append(xs, v)
				}
			}
			if len(xs) == 0 {
				return 0
			}
			return stats.Mean(xs)
		}
		r := StageRow{Mode: kk.mode, Variant: kk.variant, N: len(cs),
			Latency: mean(func(c *Call) float64 { return c.LatencyMs }),
			Server:  mean(func(c *Call) float64 { return c.ServerMs }),
			Queue:   mean(func(c *Call) float64 { return c.QueueMs }),
			Start:   mean(func(c *Call) float64 { return c.StartMs }),
			Sandbox: mean(func(c *Call) float64 { return c.SandboxMs }),
			Runtime: mean(func(c *Call) float64 { return c.RuntimeMs }),
			Import:  mean(func(c *Call) float64 { return c.ImportMs }),
			Exec:    mean(func(c *Call) float64 { return c.ExecMs }),
		}
		r.Transfer = mean(func(c *Call) float64 { return c.LatencyMs - c.ServerMs })
		out = append(out, r)
	}
	return out
}
