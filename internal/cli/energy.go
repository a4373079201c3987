package cli

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/energy"
)

// newEnergyCmd is `wisp energy`: the server's energy report, and fitting
// the model's coefficients against a real counter.
func newEnergyCmd(g *globals) *cobra.Command {
	var window time.Duration
	cmd := &cobra.Command{
		Use:   "energy [--window 5m]",
		Short: "Show the node's energy over a window: functions, cold starts, idle instances, platform, sPUE",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.client(1).Energy(cmd.Context(), window)
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(s)
			}
			fmt.Fprintf(g.stdout, "source: %s\n  %s\nwindow: %.0f s\n\n", s.Source, s.Describe, s.Window)
			tw := g.table("PART", "JOULES", "SHARE")
			share := func(v float64) string {
				if s.Node <= 0 {
					return "-"
				}
				return fmt.Sprintf("%.1f %%", 100*v/s.Node)
			}
			for _, row := range []struct {
				name string
				v    float64
			}{{"node total", s.Node}, {"functions (execution)", s.Function}, {"cold starts", s.ColdStart},
				{"idle warm instances", s.IdleInst}, {"platform (wisp)", s.Platform}, {"node idle", s.Idle}, {"other", s.Other}} {
				fmt.Fprintf(tw, "%s\t%.3f\t%s\n", row.name, row.v, share(row.v))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "\nsPUE (node / function execution): %.2f\n", s.SPUE)
			names := make([]string, 0, len(s.Functions))
			for n := range s.Functions {
				names = append(names, n)
			}
			sort.Strings(names)
			if len(names) > 0 {
				fmt.Fprintln(g.stdout)
				tw := g.table("FUNCTION", "JOULES")
				for _, n := range names {
					fmt.Fprintf(tw, "%s\t%.3f\n", n, s.Functions[n])
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			for _, w := range s.Warnings {
				fmt.Fprintln(g.stderr, "warning:", w)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&window, "window", time.Minute, "how far back to add up (at most the server's energy.history)")
	cmd.AddCommand(newCalibrateCmd(g))
	return cmd
}

// newCalibrateCmd is `wisp energy calibrate`: run this machine at several
// CPU loads, read a real energy counter and /proc/stat at each, and fit the
// model's idle and max watts by least squares.
func newCalibrateCmd(g *globals) *cobra.Command {
	var step time.Duration
	cmd := &cobra.Command{
		Use:   "calibrate [--step 10s]",
		Short: "Fit the energy model's coefficients against this machine's RAPL or perf counter (needs one; run as root on an otherwise quiet machine)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			srcs, skipped := energy.Sources(ctx, energy.Options{})
			var counter energy.Source
			for _, s := range srcs {
				if s.Kind() != energy.KindModel && counter == nil {
					counter = s
					continue
				}
				s.Close()
			}
			if counter == nil {
				msg := "no energy counter on this machine"
				for _, u := range skipped {
					msg += "; " + u.String()
				}
				return fmt.Errorf("%s: calibration needs RAPL (powercap) or perf's power PMU; keep the documented model defaults", msg)
			}
			defer counter.Close()
			fmt.Fprintf(g.stderr, "calibrating against %s\n", counter.Describe())
			var readings []energy.Reading
			var times []energy.CPUTimes
			sample := func() error {
				r, err := counter.Read()
				if err != nil {
					return err
				}
				t, err := energy.ReadCPUTimes("/proc/stat")
				if err != nil {
					return err
				}
				readings, times = append(readings, r), append(times, t)
				return nil
			}
			if err := sample(); err != nil {
				return err
			}
			for _, load := range []float64{0, 0.25, 0.5, 0.75, 1} {
				fmt.Fprintf(g.stderr, "load %3.0f %% for %s\n", 100*load, step)
				burn(ctx, load, step/2) // settle
				if err := sample(); err != nil {
					return err
				}
				burn(ctx, load, step/2)
				if err := sample(); err != nil {
					return err
				}
			}
			samples, err := energy.SamplesFrom(readings, times)
			if err != nil {
				return err
			}
			fit, err := energy.Calibrate(samples)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "# fitted against %s: R² %.3f, RMSE %.2f W, %d samples\nenergy:\n  model_idle_watts: %.2f\n  model_max_watts: %.2f\n",
				counter.Kind(), fit.R2, fit.RMSE, fit.N, fit.IdleWatts, fit.MaxWatts)
			return nil
		},
	}
	cmd.Flags().DurationVar(&step, "step", 10*time.Second, "time at each of the five load levels (0, 25, 50, 75, 100 %)")
	return cmd
}

// burn keeps every CPU busy for the fraction load of each 10 ms for d.
func burn(ctx context.Context, load float64, d time.Duration) {
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				busyUntil := time.Now().Add(time.Duration(load * float64(10*time.Millisecond)))
				for time.Now().Before(busyUntil) {
				}
				time.Sleep(time.Duration((1 - load) * float64(10*time.Millisecond)))
			}
		})
	}
	wg.Wait()
}
