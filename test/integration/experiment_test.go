package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/experiment"
	"github.com/wisp-faas/wisp/internal/function"
)

// TestExperimentHarness runs a small plan of every scenario kind through the
// experiment harness against a real server in process mode, and checks
// that the report comes out with real cold starts, stage timings and energy.
func TestExperimentHarness(t *testing.T) {
	h := startServer(t, testConfig(t, function.ModeProcess), "")
	plan, err := experiment.ParsePlan([]byte(`
name: integration
modes: [process]
settle: 0s
energy: {min_window: 0s, sample_lag: 1100ms}
scenarios:
  - {kind: idle, duration: 1s}
  - {kind: cold, functions: [small, medium], calls: 2}
  - {kind: warm, calls: 10, warmup: 1}
  - {kind: poisson, rates: [600], duration: 1s}
  - {kind: keepalive, keep_alives: [0s, 1m], rate: 300, duration: 1s}
  - {kind: breakdown, functions: [small], calls: 2}
  - {kind: chain, sizes: [1KiB, 64KiB], calls: 2, warmup: 1}
  - {kind: stateless, variants: [reload, cached], state_size: 8KiB, calls: 3, warmup: 1}
  - {kind: parallel, concurrency: [1, 2], calls: 6, warmup: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := experiment.Run(ctx, plan, experiment.Options{URL: h.url, Token: tokenFor(h.url)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Notes) > 0 {
		t.Fatalf("scenarios failed: %v", res.Notes)
	}
	for _, c := range res.Calls {
		if !c.OK() {
			t.Errorf("call failed: %s %s %s: %d %s", c.Scenario, c.Variant, c.Function, c.Status, c.Error)
		}
		if c.Kind == experiment.KindCold && (!c.Cold || c.StartMs <= 0) {
			t.Errorf("cold scenario call without a cold start and its stages: %+v", c)
		}
	}
	dir := t.TempDir()
	s, err := experiment.WriteOutputs(dir, res)
	if err != nil {
		t.Fatal(err)
	}
	if s.EnergySource == "" {
		t.Error("no energy source in the summary")
	}
	rep, err := os.ReadFile(filepath.Join(dir, experiment.ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Energy source", "## Startup breakdown by stage", "## Keep-alive trade-off", "](latency_cdf.png)"} {
		if !strings.Contains(string(rep), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	fns, err := h.c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 0 {
		t.Errorf("the harness left %d functions deployed", len(fns))
	}
}
