package experiment

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Output file names in the output directory.
const (
	CallsFile   = "calls.csv"
	SummaryFile = "summary.json"
	ReportFile  = "report.md"
)

// WriteOutputs writes calls.csv, summary.json, the plots and report.md into
// dir (created if needed) and returns the summary.
func WriteOutputs(dir string, res *Result) (*Summary, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	s := Analyze(res)
	var csvBuf bytes.Buffer
	if err := WriteCSV(&csvBuf, res.Calls); err != nil {
		return s, err
	}
	if err := os.WriteFile(filepath.Join(dir, CallsFile), csvBuf.Bytes(), 0o644); err != nil {
		return s, fmt.Errorf("write %s: %w", CallsFile, err)
	}
	js, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return s, fmt.Errorf("encode %s: %w", SummaryFile, err)
	}
	if err := os.WriteFile(filepath.Join(dir, SummaryFile), append(js, '\n'), 0o644); err != nil {
		return s, fmt.Errorf("write %s: %w", SummaryFile, err)
	}
	figs, err := WritePlots(s, dir)
	if err != nil {
		return s, err
	}
	var rep bytes.Buffer
	if err := WriteReport(&rep, res, s, figs); err != nil {
		return s, err
	}
	if err := os.WriteFile(filepath.Join(dir, ReportFile), rep.Bytes(), 0o644); err != nil {
		return s, fmt.Errorf("write %s: %w", ReportFile, err)
	}
	return s, nil
}

// num formats a figure for a table: "—" for NaN or infinite.
func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// sig formats a figure with 4 significant digits, "—" when unknown.
func sig(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf("%.4g", v)
}

// orDash prints "—" for a zero figure (the JSON convention for unknown).
func orDash(v float64, f func(float64) string) string {
	if v == 0 {
		return "—"
	}
	return f(v)
}

func pval(p float64) string {
	if p < 1e-4 {
		return "< 0.0001"
	}
	return fmt.Sprintf("%.4f", p)
}

// WriteReport writes report.md.
func WriteReport(w io.Writer, res *Result, s *Summary, figs []Figure) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	plan := res.Plan
	p("# Experiment report: %s\n\n", plan.Name)
	if plan.Description != "" {
		p("%s\n\n", strings.TrimSpace(plan.Description))
	}
	p("Run from %s to %s (%s). Modes compared: **%s**.",
		res.Started.UTC().Format(time.RFC3339), res.Finished.UTC().Format(time.RFC3339),
		res.Finished.Sub(res.Started).Round(time.Second), strings.Join(res.Modes, ", "))
	for m, why := range res.Skipped {
		p(" Skipped %s: %s.", m, why)
	}
	p("\n\nFiles: `%s` (one row per call), `%s` (the statistics below as JSON), the figures, and this report.\n\n", CallsFile, SummaryFile)

	p("## Machine\n\n| | |\n| --- | --- |\n")
	m := res.Machine
	p("| host | %s |\n| OS | %s, kernel %s |\n| CPU | %s, %d logical CPUs |\n| memory | %d MiB |\n| server | %s (version %s) |\n| harness | %s |\n\n",
		m.Hostname, m.OS, m.Kernel, m.CPUModel, m.CPUs, m.MemoryMiB, m.ServerURL, m.ServerVersion, m.GoVersion)

	p("## Energy source\n\nSource: **%s**. %s\n\n", res.Source, res.Energy)
	if res.Source == "model" {
		p("Model figures are estimates from CPU utilisation, not measurements: two workloads with the same CPU time get the same energy. Compare modes with them only as far as CPU time differs.\n\n")
	}

	p("## Plan\n\n")
	p("| scenario | kind | parameters |\n| --- | --- | --- |\n")
	for _, sc := range plan.Scenarios {
		p("| %s | %s | %s |\n", sc.Name, sc.Kind, scenarioParams(&sc))
	}
	y, err := yaml.Marshal(plan)
	if err == nil {
		p("\n<details><summary>the plan as run (defaults filled in)</summary>\n\n```yaml\n%s```\n</details>\n\n", y)
	}
	if len(res.Notes) > 0 {
		p("## Failures\n\n")
		for _, n := range res.Notes {
			p("- %s\n", n)
		}
		p("\n")
	}

	p("## Idle baseline\n\n| mode | variant | window (s) | node power (W) | node energy (J) |\n| --- | --- | ---: | ---: | ---: |\n")
	for i := range s.Groups {
		g := &s.Groups[i]
		if g.Kind == KindIdle {
			p("| %s | %s | %.1f | %s | %s |\n", g.Mode, cmpOr(g.Variant, "nothing running"), g.WindowS, orDash(g.PowerW, sig), orDash(g.NodeJ, sig))
		}
	}

	p("\n## Latency and energy per scenario\n\n")
	p("Latency in ms over successful calls (round trip seen by the harness); CI is the 95 %% confidence interval of the mean. Energy per invocation is the node's energy over the window divided by its invocations (J/inv), and the energy attributed to function code (fn J/inv); sPUE = node / function energy.\n\n")
	p("| scenario | variant | function | mode | n | err | mean | median | p95 | p99 | 95 %% CI | cold %% | calls/s | J/inv | fn J/inv | sPUE |\n")
	p("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for i := range s.Groups {
		g := &s.Groups[i]
		if g.Kind == KindIdle {
			continue
		}
		ci := "—"
		if g.N >= 2 {
			ci = fmt.Sprintf("%.2f–%.2f", g.Latency.CI95Lo, g.Latency.CI95Hi)
		}
		p("| %s | %s | %s | %s | %d | %d | %.2f | %.2f | %.2f | %.2f | %s | %.0f | %.1f | %s | %s | %s |\n",
			g.Scenario, g.Variant, g.Function, g.Mode, g.N, g.Errors, g.Latency.Mean, g.Latency.P50, g.Latency.P95,
			g.Latency.P99, ci, g.ColdPct, g.Throughput, orDash(g.NodeJPerCall, sig), orDash(g.FunctionJPerCall, sig), orDash(g.SPUE, func(v float64) string { return num(v, 2) }))
	}

	p("\n## Welch's t-test\n\n")
	if len(res.Modes) < 2 {
		p("One mode ran, so there is no test between modes; cold against warm calls of each breakdown function follows.\n\n")
	} else {
		p("A − B, with A = %s and B = %s unless the row says otherwise. p < 0.05: the means differ.\n\n", res.Modes[0], res.Modes[1])
	}
	p("| comparison | A | B | n A | n B | mean A (ms) | mean B (ms) | A − B (ms) | 95 %% CI of A − B | t | df | p | differ at 5 %% |\n")
	p("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |\n")
	for _, r := range s.Welch {
		if r.Err != "" {
			p("| %s | %s | %s | %d | %d | | | | | | | | n/a: %s |\n", r.What, r.A, r.B, r.NA, r.NB, r.Err)
			continue
		}
		t := r.Test
		diff := "no"
		if t.P < 0.05 {
			diff = "yes"
		}
		p("| %s | %s | %s | %d | %d | %.2f | %.2f | %.2f | %.2f–%.2f | %.2f | %.1f | %s | %s |\n",
			r.What, r.A, r.B, r.NA, r.NB, t.MeanA, t.MeanB, t.Diff, t.CI95Lo, t.CI95Hi, t.T, t.DF, pval(t.P), diff)
	}

	p("\n## One-way ANOVA\n\n")
	p("Latency across modes (when two or more ran) and across each scenario's variants.\n\n")
	p("| what | across | groups | F | df | p | R² | differ at 5 %% |\n| --- | --- | --- | ---: | --- | ---: | ---: | --- |\n")
	for _, r := range s.ANOVA {
		if r.Err != "" {
			p("| %s | %s | %s | | | | | n/a: %s |\n", r.What, r.Across, strings.Join(r.Groups, ", "), r.Err)
			continue
		}
		a := r.Result
		diff := "no"
		if a.P < 0.05 {
			diff = "yes"
		}
		p("| %s | %s | %s | %.2f | %d, %d | %s | %.3f | %s |\n", r.What, r.Across, strings.Join(r.Groups, ", "),
			a.F, a.DFBetween, a.DFWithin, pval(a.P), a.R2, diff)
	}

	if len(s.Stages) > 0 {
		p("\n## Startup breakdown by stage\n\n")
		p("Means in ms from the activation records: queue (waiting, including the start it waited for), start = sandbox + runtime + import, exec (the handler); server is X-Wisp-Duration-Ms and client the rest of the round trip (HTTP, loopback, client).\n\n")
		p("| mode | function | n | round trip | server | queue | start | sandbox | runtime | import | exec | client |\n")
		p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, r := range s.Stages {
			p("| %s | %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", r.Mode, r.Variant, r.N,
				r.Latency, r.Server, r.Queue, r.Start, r.Sandbox, r.Runtime, r.Import, r.Exec, r.Transfer)
		}
	}

	if len(s.KeepAlive) > 0 {
		p("\n## Keep-alive trade-off\n\n")
		p("Idle instance-seconds: each instance's life from its first call to its last call's end plus the keep-alive (until eviction), less the time it served calls. Idle energy = idle instance-seconds × per-instance idle power from an idle scenario with warm instances on the same mode (— without one).\n\n")
		p("| mode | keep-alive (s) | calls | cold %% | mean (ms) | p95 (ms) | idle instance-s | idle J | node J/inv |\n")
		p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, k := range s.KeepAlive {
			p("| %s | %g | %d | %.1f | %.2f | %.2f | %.1f | %s | %s |\n", k.Mode, k.KeepAliveS, k.Calls, k.ColdPct, k.MeanMs,
				k.P95Ms, k.IdleInstanceS, orDash(k.IdleJ, sig), orDash(k.NodeJPerCall, sig))
		}
	}

	p("\n## Seed 000's hypotheses\n\n")
	if len(res.Modes) >= 2 {
		p("Seed 000 compares a baseline (containers) with stronger isolation (microVMs). Here A = **%s** (the baseline) and B = **%s**. Verdicts: *supported* (the measured difference lies in the expected range), *direction only* (the expected direction, outside the range), *not supported*, *measured* (no expectation to test), *not measured*.\n\n", res.Modes[0], res.Modes[1])
	} else {
		p("Only one mode ran, so the comparisons between modes are not measured.\n\n")
	}
	p("| metric | hypothesis | measured | verdict |\n| --- | --- | --- | --- |\n")
	for _, h := range s.Hypotheses {
		p("| %s | %s | %s | %s |\n", h.Metric, h.Expected, h.Measured, h.Verdict)
	}

	if len(figs) > 0 {
		p("\n## Figures\n\n")
		for _, f := range figs {
			p("### %s\n\n![%s](%s)\n\n%s\n\n", f.Title, f.Title, f.File, f.Caption)
		}
	}
	_, err = io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func scenarioParams(sc *Scenario) string {
	var ps []string
	add := func(k string, v any) { ps = append(ps, fmt.Sprintf("%s %v", k, v)) }
	switch sc.Kind {
	case KindIdle:
		add("duration", sc.Duration)
		add("warm instances", sc.WarmInstances)
	case KindCold:
		add("functions", strings.Join(sc.Functions, ", "))
		add("calls", sc.Calls)
		add("keep_alive", "0")
	case KindWarm:
		add("function", sc.Function)
		add("warm-up", sc.Warmup)
		add("calls", sc.Calls)
		add("concurrency", sc.Concurrency[0])
	case KindPoisson:
		add("function", sc.Function)
		add("rates (/min)", fmt.Sprint(sc.Rates))
		add("duration each", sc.Duration)
		add("keep_alive", *sc.KeepAlive)
	case KindKeepAlive:
		add("function", sc.Function)
		add("keep_alives", fmt.Sprint(sc.KeepAlives))
		add("rate (/min)", sc.Rate)
		add("arrival", sc.Arrival)
		add("duration each", sc.Duration)
	case KindBreakdown:
		add("functions", strings.Join(sc.Functions, ", "))
		add("cold and warm calls", sc.Calls)
	case KindChain:
		add("sizes", fmt.Sprint(sc.Sizes))
		add("calls", sc.Calls)
	case KindStateless:
		add("variants", strings.Join(sc.Variants, ", "))
		add("state", sc.StateSize)
		add("calls", sc.Calls)
	case KindParallel:
		add("function", sc.Function)
		add("concurrency", fmt.Sprint(sc.Concurrency))
		add("calls per level", sc.Calls)
	}
	if sc.WorkMs > 0 {
		add("work_ms", sc.WorkMs)
	}
	return strings.Join(ps, "; ")
}
