package experiment

import (
	"fmt"
	"math"
	"strings"

	"github.com/wisp-faas/wisp/internal/stats"
)

// Verdicts of a hypothesis.
const (
	Supported    = "supported"
	DirOnly      = "direction only" // the difference goes the expected way, outside the expected range
	NotSupported = "not supported"
	Measured     = "measured" // no expectation to test: the value is reported
	NotMeasured  = "not measured"
)

// hypotheses fills seed 000's hypothesis table. Seed 000 compares a
// baseline (containers) with a stronger-isolation stack (microVMs); wisp
// compares its first mode (the baseline, process) with its second
// (container), so each row reads "B relative to A".
func hypotheses(s *Summary, modes []string) []Hypothesis {
	two := len(modes) >= 2
	var a, b string
	if two {
		a, b = modes[0], modes[1]
	}
	perMode := func(f func(mode string) float64) (float64, float64) {
		if !two {
			return math.NaN(), math.NaN()
		}
		return f(a), f(b)
	}
	need := fmt.Sprintf("needs two modes; this run had %s", strings.Join(modes, ", "))
	var out []Hypothesis

	// Idle power: seed 000 expects the stronger isolation to idle 30–50 % lower.
	// With nothing running both modes are the same server, so the windows
	// with warm idle instances (the modes' own idle cost) are compared when
	// the plan has them.
	warmIdle := false
	if two {
		warmIdle = !math.IsNaN(idlePower(s.Groups, a, true)) && !math.IsNaN(idlePower(s.Groups, b, true))
	}
	pa, pb := perMode(func(m string) float64 { return idlePower(s.Groups, m, warmIdle) })
	h0 := compare("Idle power", "B 30–50 % lower than A", pa, pb, "W", -0.50, -0.30, need)
	if two && !math.IsNaN(pa) {
		if warmIdle {
			h0.Measured += " (node power with warm idle instances of each mode; one window each, no test)"
		} else {
			h0.Measured += " (nothing running: both modes are the same server, so the difference is noise; one window each, no test)"
		}
	}
	out = append(out, h0)

	// Cold start energy: 40–60 % higher.
	ea, eb := perMode(func(m string) float64 { return jPerCall(s.Groups, m, KindCold) })
	out = append(out, compare("Cold start energy (node J per cold call)", "B 40–60 % higher", ea, eb, "J", 0.40, 0.60, need))

	// Cold start time: 2–5× slower.
	h := Hypothesis{Metric: "Cold start time (mean latency of cold calls)", Expected: "B 2–5× slower than A"}
	ca, cb := perMode(func(m string) float64 { return stats.Mean(kindLatencies(s.Groups, m, KindCold, true)) })
	switch {
	case !two:
		h.Measured, h.Verdict = need, NotMeasured
	case math.IsNaN(ca) || math.IsNaN(cb) || ca <= 0:
		h.Measured, h.Verdict = "no cold calls on both modes", NotMeasured
	default:
		ratio := cb / ca
		h.Measured = fmt.Sprintf("A (%s) %.1f ms, B (%s) %.1f ms: B/A = %.2f×", a, ca, b, cb, ratio)
		if r := findWelch(s.Welch, "cold latency (all functions)"); r != nil && r.Err == "" {
			h.Measured += fmt.Sprintf("; Welch t = %.2f, p = %.3g", r.Test.T, r.Test.P)
		}
		switch {
		case ratio >= 2 && ratio <= 5:
			h.Verdict = Supported
		case ratio > 1:
			h.Verdict = DirOnly
		default:
			h.Verdict = NotSupported
		}
	}
	out = append(out, h)

	// Warm execution energy: similar (±10 %).
	wa, wb := perMode(func(m string) float64 { return jPerCall(s.Groups, m, KindWarm) })
	h = Hypothesis{Metric: "Warm execution energy (node J per warm call)", Expected: "similar: B within ±10 % of A"}
	switch {
	case !two:
		h.Measured, h.Verdict = need, NotMeasured
	case math.IsNaN(wa) || math.IsNaN(wb) || wa <= 0:
		h.Measured, h.Verdict = "no warm scenario with energy on both modes", NotMeasured
	default:
		d := (wb - wa) / wa
		h.Measured = fmt.Sprintf("A %.4g J, B %.4g J: %+.1f %%", wa, wb, 100*d)
		if r := findWelch(s.Welch, "warm latency (all functions)"); r != nil && r.Err == "" {
			h.Measured += fmt.Sprintf("; warm latency A %.2f ms, B %.2f ms (Welch p = %.3g)", r.Test.MeanA, r.Test.MeanB, r.Test.P)
		}
		h.Verdict = NotSupported
		if math.Abs(d) <= 0.10 {
			h.Verdict = Supported
		}
	}
	out = append(out, h)

	out = append(out,
		Hypothesis{Metric: "Memory per function", Expected: "A ~20 Mi, B ~160 Mi (8×)",
			Measured: "the harness does not read per-instance memory (no API reports it yet)", Verdict: NotMeasured},
		Hypothesis{Metric: "Max density", Expected: "B ~50 % of A", Measured: densityEvidence(s.Groups, modes), Verdict: NotMeasured},
		Hypothesis{Metric: "Security", Expected: "B stronger (hardware isolation)",
			Measured: "a property of the isolation design, not measured by timing or energy", Verdict: NotMeasured},
	)

	h = Hypothesis{Metric: "sPUE (node energy / function energy)", Expected: "to be measured"}
	var parts []string
	for _, m := range modes {
		if v, ok := s.SPUE[m]; ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			parts = append(parts, fmt.Sprintf("%s %.2f", m, v))
		}
	}
	if len(parts) == 0 {
		h.Measured, h.Verdict = "no window with function energy", NotMeasured
	} else {
		h.Measured, h.Verdict = strings.Join(parts, ", ")+" (over every window with function energy)", Measured
	}
	return append(out, h)
}

// compare judges a relative difference (b − a)/a against [lo, hi].
func compare(metric, expected string, a, b float64, unit string, lo, hi float64, need string) Hypothesis {
	h := Hypothesis{Metric: metric, Expected: expected}
	switch {
	case math.IsNaN(a) && math.IsNaN(b) && need != "":
		h.Measured, h.Verdict = need, NotMeasured
	case math.IsNaN(a) || math.IsNaN(b) || a <= 0:
		h.Measured, h.Verdict = "not measured on both modes", NotMeasured
	default:
		d := (b - a) / a
		h.Measured = fmt.Sprintf("A %.4g %s, B %.4g %s: %+.1f %%", a, unit, b, unit, 100*d)
		switch {
		case d >= lo && d <= hi:
			h.Verdict = Supported
		case (lo > 0 && d > 0) || (hi < 0 && d < 0):
			h.Verdict = DirOnly
		default:
			h.Verdict = NotSupported
		}
	}
	return h
}

func idlePower(groups []Group, mode string, warm bool) float64 {
	for i := range groups {
		g := &groups[i]
		if g.Kind == KindIdle && g.Mode == mode && (g.Param > 0) == warm && g.EnergyS > 0 {
			return g.PowerW
		}
	}
	return math.NaN()
}

// jPerCall is the node energy per successful call over every window of a
// kind on a mode.
func jPerCall(groups []Group, mode, kind string) float64 {
	j, n := 0.0, 0
	for i := range groups {
		g := &groups[i]
		if g.Kind == kind && g.Mode == mode && !math.IsNaN(g.NodeJ) {
			j += g.NodeJ
			n += g.N
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return j / float64(n)
}

func kindLatencies(groups []Group, mode, kind string, coldOnly bool) []float64 {
	var xs []float64
	for i := range groups {
		g := &groups[i]
		if g.Kind != kind || g.Mode != mode {
			continue
		}
		if coldOnly && g.ColdMs != nil {
			xs = append(xs, g.cold...)
		} else {
			xs = append(xs, g.latencies...)
		}
	}
	return xs
}

func findWelch(rows []WelchRow, what string) *WelchRow {
	for i := range rows {
		if rows[i].What == what {
			return &rows[i]
		}
	}
	return nil
}

func densityEvidence(groups []Group, modes []string) string {
	var parts []string
	for _, m := range modes {
		best, at := 0.0, 0.0
		for i := range groups {
			g := &groups[i]
			if g.Kind == KindParallel && g.Mode == m && g.Throughput > best {
				best, at = g.Throughput, g.Param
			}
		}
		if best > 0 {
			parts = append(parts, fmt.Sprintf("%s peaks at %.0f calls/s (concurrency %.0f)", m, best, at))
		}
	}
	if len(parts) == 0 {
		return "instance density is not measured; no parallel scenario either"
	}
	return "instance density is not measured; as a proxy, warm throughput: " + strings.Join(parts, ", ")
}
