package experiment

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/wisp-faas/wisp/internal/stats"
)

// Figure is one plot written next to the report.
type Figure struct {
	File    string // file name in the output directory
	Title   string
	Caption string
}

// plotter writes one figure; it returns false when the run has no data for
// it.
type figureFunc func(s *Summary, path string) (bool, error)

var figures = []struct {
	file, title, caption string
	draw                 figureFunc
}{
	{"latency_cdf.png", "Latency CDF per mode", "Empirical CDF of the round-trip latency of the cold-start and warm scenarios' calls, per mode (log scale).", plotLatencyCDF},
	{"cold_vs_warm.png", "Cold vs warm latency", "Median round-trip latency of the cold-start and warm scenarios' calls, per mode.", plotColdWarm},
	{"energy_per_invocation.png", "Energy per invocation", "Node energy over each window divided by the window's invocations, per scenario variant and mode.", plotEnergy},
	{"spue.png", "sPUE per scenario", "sPUE = node energy / function energy over each scenario's windows, per mode (idle windows have no function energy).", plotSPUE},
	{"keepalive_tradeoff.png", "Keep-alive trade-off", "Cold-start share against idle instance-seconds for each keep-alive, per mode.", plotKeepAlive},
	{"parallel_throughput.png", "Throughput as concurrency grows", "Successful calls per second at each concurrency level (closed loop), per mode.", plotParallel},
	{"chain_latency.png", "Chained functions: latency by payload size", "Mean end-to-end latency of A → B (A's output fed to B) by payload size, per mode.", plotChain},
}

// WritePlots draws every figure the run has data for into dir.
func WritePlots(s *Summary, dir string) ([]Figure, error) {
	var out []Figure
	for _, f := range figures {
		ok, err := f.draw(s, filepath.Join(dir, f.file))
		if err != nil {
			return out, fmt.Errorf("plot %s: %w", f.file, err)
		}
		if ok {
			out = append(out, Figure{File: f.file, Title: f.title, Caption: f.caption})
		}
	}
	return out, nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

func save(p *plot.Plot, path string) error {
	if err := p.Save(18*vg.Centimeter, 11*vg.Centimeter, path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

func plotLatencyCDF(s *Summary, path string) (bool, error) {
	p := newPlot("Latency CDF", "latency (ms, log scale)", "P(latency ≤ x)")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	i := 0
	for _, m := range s.Modes {
		for _, kind := range []string{KindCold, KindWarm} {
			var xs []float64
			for gi := range s.Groups {
				g := &s.Groups[gi]
				if g.Mode == m && g.Kind == kind {
					xs = append(xs, g.latencies...)
				}
			}
			pts := stats.ECDF(xs)
			if len(pts) == 0 {
				continue
			}
			xy := make(plotter.XYs, 0, len(pts))
			for _, pt := range pts {
				xy = append(xy, plotter.XY{X: math.Max(pt.X, 1e-3), Y: pt.P})
			}
			l, err := plotter.NewLine(xy)
			if err != nil {
				return false, err
			}
			l.StepStyle = plotter.PostStep
			l.Color = plotutil.Color(i)
			l.Dashes = plotutil.Dashes(i % 2)
			l.Width = vg.Points(1.5)
			p.Add(l)
			p.Legend.Add(m+" "+kind, l)
			i++
		}
	}
	if i == 0 {
		return false, nil
	}
	return true, save(p, path)
}

// groupedBars draws one bar series per mode over labels.
func groupedBars(title, ylabel string, labels []string, modes []string, value func(label, mode string) float64, path string) (bool, error) {
	if len(labels) == 0 {
		return false, nil
	}
	p := newPlot(title, "", ylabel)
	w := vg.Points(math.Max(4, math.Min(20, 300/float64(len(labels)*max(1, len(modes))))))
	any := false
	for i, m := range modes {
		vals := make(plotter.Values, len(labels))
		for j, l := range labels {
			v := value(l, m)
			if math.IsNaN(v) || math.IsInf(v, 0) {
				v = 0
			}
			vals[j] = v
			any = any || v != 0
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return false, err
		}
		b.Color = plotutil.Color(i)
		b.LineStyle.Width = 0
		b.Offset = w * vg.Length(float64(i)-float64(len(modes)-1)/2)
		p.Add(b)
		p.Legend.Add(m, b)
	}
	if !any {
		return false, nil
	}
	p.NominalX(labels...)
	if len(labels) > 4 {
		p.X.Tick.Label.Rotation = math.Pi / 5
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
	}
	return true, save(p, path)
}

func plotColdWarm(s *Summary, path string) (bool, error) {
	labels := []string{"cold", "warm"}
	return groupedBars("Median latency: cold vs warm", "median latency (ms)", labels, s.Modes, func(l, m string) float64 {
		kind := KindCold
		if l == "warm" {
			kind = KindWarm
		}
		return stats.Median(kindLatencies(s.Groups, m, kind, false))
	}, path)
}

// windowLabel names a group's window in plots.
func windowLabel(g *Group) string {
	if g.Variant == "" || g.Variant == g.Scenario {
		return g.Scenario
	}
	return g.Scenario + " " + g.Variant
}

func plotEnergy(s *Summary, path string) (bool, error) {
	var labels []string
	val := map[[2]string]float64{}
	for i := range s.Groups {
		g := &s.Groups[i]
		if g.Kind == KindIdle || g.NodeJPerCall <= 0 || g.Function == "chain-a" || g.Function == "chain-b" {
			continue
		}
		l := windowLabel(g)
		if !slices.Contains(labels, l) {
			labels = append(labels, l)
		}
		val[[2]string{l, g.Mode}] = g.NodeJPerCall
	}
	return groupedBars("Node energy per invocation ("+s.EnergySource+")", "J per invocation", labels, s.Modes,
		func(l, m string) float64 { return val[[2]string{l, m}] }, path)
}

func plotSPUE(s *Summary, path string) (bool, error) {
	var labels []string
	node, fn := map[[2]string]float64{}, map[[2]string]float64{}
	seen := map[[3]string]bool{}
	for i := range s.Groups {
		g := &s.Groups[i]
		if g.FunctionJ <= 0 {
			continue
		}
		w := [3]string{g.Scenario, g.Variant, g.Mode}
		if seen[w] {
			continue // one window, several function groups
		}
		seen[w] = true
		if !slices.Contains(labels, g.Scenario) {
			labels = append(labels, g.Scenario)
		}
		k := [2]string{g.Scenario, g.Mode}
		node[k] += g.NodeJ
		fn[k] += g.FunctionJ
	}
	return groupedBars("sPUE per scenario ("+s.EnergySource+")", "sPUE = E_node / E_function", labels, s.Modes,
		func(l, m string) float64 {
			k := [2]string{l, m}
			if fn[k] <= 0 {
				return 0
			}
			return node[k] / fn[k]
		}, path)
}

func plotKeepAlive(s *Summary, path string) (bool, error) {
	if len(s.KeepAlive) == 0 {
		return false, nil
	}
	p := newPlot("Keep-alive trade-off", "idle instance-seconds", "cold starts (%)")
	for i, m := range s.Modes {
		var xy plotter.XYs
		var names []string
		for _, pt := range s.KeepAlive {
			if pt.Mode == m {
				xy = append(xy, plotter.XY{X: pt.IdleInstanceS, Y: pt.ColdPct})
				names = append(names, fmt.Sprintf("%gs", pt.KeepAliveS))
			}
		}
		if len(xy) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(xy)
		if err != nil {
			return false, err
		}
		l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		p.Add(l, sc)
		p.Legend.Add(m, l, sc)
		lab, err := plotter.NewLabels(plotter.XYLabels{XYs: xy, Labels: names})
		if err != nil {
			return false, err
		}
		lab.Offset = vg.Point{X: vg.Points(4), Y: vg.Points(4 + 8*float64(i))}
		p.Add(lab)
	}
	p.Y.Min, p.Y.Max = math.Min(p.Y.Min, 0), math.Max(p.Y.Max, 100)
	return true, save(p, path)
}

func lineByMode(s *Summary, title, x, y string, logX bool, pick func(g *Group) (float64, float64, bool), path string) (bool, error) {
	p := newPlot(title, x, y)
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	n := 0
	for i, m := range s.Modes {
		var xy plotter.XYs
		for gi := range s.Groups {
			g := &s.Groups[gi]
			if g.Mode != m {
				continue
			}
			if xv, yv, ok := pick(g); ok {
				xy = append(xy, plotter.XY{X: xv, Y: yv})
			}
		}
		if len(xy) == 0 {
			continue
		}
		slices.SortFunc(xy, func(a, b plotter.XY) int { return cmpFloat(a.X, b.X) })
		l, sc, err := plotter.NewLinePoints(xy)
		if err != nil {
			return false, err
		}
		l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		p.Add(l, sc)
		p.Legend.Add(m, l, sc)
		n++
	}
	if n == 0 {
		return false, nil
	}
	return true, save(p, path)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func plotParallel(s *Summary, path string) (bool, error) {
	return lineByMode(s, "Throughput as concurrency grows", "concurrency (calls in flight)", "calls per second", false,
		func(g *Group) (float64, float64, bool) {
			return g.Param, g.Throughput, g.Kind == KindParallel && g.N > 0
		}, path)
}

func plotChain(s *Summary, path string) (bool, error) {
	return lineByMode(s, "Chained functions A → B", "payload (bytes, log scale)", "mean end-to-end latency (ms)", true,
		func(g *Group) (float64, float64, bool) {
			return math.Max(g.Param, 1), g.Latency.Mean, g.Kind == KindChain && g.Function == "chain" && g.N > 0
		}, path)
}
