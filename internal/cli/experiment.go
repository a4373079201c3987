package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/experiment"
)

// NewExperimentCmd returns `wisp experiment`: run seed 000's study from a
// plan file against the server at --url and write its report.
func NewExperimentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "experiment",
		Short: "Run an experiment plan (seed 000's study) and write its report",
	}
	cmd.AddCommand(newExperimentRunCmd(g), newExperimentValidateCmd(g))
	return cmd
}

func newExperimentRunCmd(g *globals) *cobra.Command {
	var out, logLevel string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "run PLAN.yaml --out DIR",
		Short: "Deploy the plan's functions, run its scenarios on each mode, write calls.csv, summary.json, report.md and plots",
		Long: `Run every scenario of PLAN.yaml (idle baseline, cold start, warm execution,
Poisson mixed load, keep-alive sweep, startup breakdown, chained functions,
stateless cost, parallelisation limits) on each execution mode the plan
names, against the server at --url (WISP_URL) with the key from WISP_TOKEN
or ./.wisp-data/admin.key. The harness deploys its own functions (named
<prefix>-<scenario>-...) and deletes them after each scenario.

DIR receives calls.csv (one row per call), summary.json (statistics per
scenario, variant and mode, tests, hypotheses), report.md and PNG figures.
Energy comes from the server's /v1/energy when it has one, else from the
harness's CPU-utilisation model, labelled "model" with its coefficients.
Ctrl-C stops the run and writes what was measured so far.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("--out: name the output directory")
			}
			plan, err := experiment.LoadPlan(args[0])
			if err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			opts := experiment.Options{URL: g.url, Token: g.token,
				Logger: slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if !quiet {
				fmt.Fprintf(g.stderr, "plan %s: %d scenarios on %v, about %d calls, at least %s\n", plan.Name,
					len(plan.Scenarios), plan.Modes, plan.EstimatedCalls(), plan.EstimatedDuration().Round(time.Second))
				total := plan.EstimatedCalls()
				bar := progressbar.NewOptions(total,
					progressbar.OptionSetWriter(g.stderr),
					progressbar.OptionSetDescription("starting"),
					progressbar.OptionShowCount(),
					progressbar.OptionSetElapsedTime(true),
					progressbar.OptionThrottle(200*time.Millisecond),
					progressbar.OptionClearOnFinish())
				var mu sync.Mutex
				done := 0
				opts.Progress = func(n int) {
					mu.Lock()
					defer mu.Unlock()
					done += n
					if done > total { // Poisson counts are expectations
						total = done + total/10 + 1
						bar.ChangeMax(total)
					}
					_ = bar.Add(n)
				}
				opts.Describe = func(what string) { bar.Describe(what) }
				defer bar.Finish()
			}
			t0 := time.Now()
			res, runErr := experiment.Run(ctx, plan, opts)
			if res == nil {
				return runErr
			}
			if res.Finished.IsZero() {
				res.Finished = time.Now()
			}
			// Write what was measured, even after an interruption.
			sum, err := experiment.WriteOutputs(out, res)
			if err != nil {
				return errors.Join(runErr, err)
			}
			if g.jsonOut() {
				if err := g.printJSON(sum); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "%d calls in %s on %v; energy: %s\nreport: %s\n", len(res.Calls),
					time.Since(t0).Round(time.Second), res.Modes, res.Source, filepath.Join(out, experiment.ReportFile))
				for _, n := range res.Notes {
					fmt.Fprintln(g.stdout, "failed:", n)
				}
			}
			return runErr
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "output directory (created)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "harness log level: debug, info, warn, error")
	return cmd
}

func newExperimentValidateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate PLAN.yaml",
		Short: "Check a plan and print how many calls and how long it takes at least",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, err := experiment.LoadPlan(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s: %d scenarios on %v, about %d calls, at least %s\n", plan.Name,
				len(plan.Scenarios), plan.Modes, plan.EstimatedCalls(), plan.EstimatedDuration().Round(time.Second))
			return nil
		},
	}
}
