package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/bench"
	"github.com/wisp-faas/wisp/internal/function"
)

func newBenchCmd(g *globals) *cobra.Command {
	var o bench.Options
	var data string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "bench NAME [-n N] [-c C]",
		Short: "Measure a deployed function's latency percentiles and throughput",
		Long: `Send N calls with C in flight at once and report latency percentiles
(cold and warm separately when both occur) and throughput. Deploy the
function with keep_alive: 0 to measure cold starts.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Function = args[0]
			if data != "" {
				o.Body = []byte(data)
			}
			if !quiet && !g.jsonOut() {
				bar := progressbar.NewOptions(o.Requests,
					progressbar.OptionSetWriter(g.stderr),
					progressbar.OptionSetDescription("calling "+o.Function),
					progressbar.OptionShowCount(),
					progressbar.OptionShowIts(),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionClearOnFinish())
				o.Progress = func(int) { _ = bar.Add(1) }
				defer bar.Finish()
			}
			sum, _, err := bench.Run(cmd.Context(), g.client(o.Concurrency), o)
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(sum)
			}
			fmt.Fprintf(g.stdout, "%s: %d calls, concurrency %d, %.0f calls/s, %d errors, %d cold\n",
				sum.Function, sum.Requests, sum.Concurrency, sum.Throughput, sum.Errors, sum.Cold)
			tw := g.table("", "N", "MIN", "P50", "P90", "P99", "MAX", "MEAN")
			row := func(label string, p bench.Percentiles) {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", label, p.N, ms(p.Min), ms(p.P50), ms(p.P90), ms(p.P99), ms(p.Max), ms(p.Mean))
			}
			row("all", sum.All)
			if sum.ColdLatency != nil {
				row("cold", *sum.ColdLatency)
			}
			if sum.WarmLatency != nil {
				row("warm", *sum.WarmLatency)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if sum.Errors > 0 {
				fmt.Fprintf(g.stdout, "statuses: %v\n", sum.Statuses)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&o.Requests, "requests", "n", 1000, "number of calls")
	cmd.Flags().IntVarP(&o.Concurrency, "concurrency", "c", 1, "calls in flight at once")
	cmd.Flags().StringVarP(&o.Method, "method", "X", "POST", "HTTP method")
	cmd.Flags().Float64VarP(&o.Rate, "rate", "r", 0, "pace calls at this many per second (0: as fast as they complete)")
	cmd.Flags().StringVarP(&data, "data", "d", "", "request body")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	cmd.AddCommand(newBenchHostCmd(g), newBenchReplayCmd(g), newBenchTraceCmd(g), newBenchDensityCmd(g))
	return cmd
}

func newBenchReplayCmd(g *globals) *cobra.Command {
	var o bench.ReplayOptions
	var policies []string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "replay TRACE.csv [--speedup N] [--keep-alive auto,10m,0]",
		Short: "Replay a trace of per-function arrivals against the server under each keep-alive policy",
		Long: `Deploy the trace's functions (a Python handler that sleeps each call's
duration_ms) with each keep-alive policy in turn, replay the arrivals, and
report per policy the calls, the cold-start percentage and the idle
instance-seconds (wisp_instances{state="idle"} of those functions, read from
/metrics and integrated over the replay).

The trace is CSV: function,arrival_ms[,duration_ms] (wisp bench trace writes
one). --speedup divides arrival offsets and durations; keep-alive durations
are given in trace time and divided by it too, so that each policy covers the
same share of the trace. Functions of the trace's names are replaced, and
deleted after each policy (--keep leaves the last policy's deployed).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			tr, err := bench.ParseTrace(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			o.URL, o.Token = g.url, g.token
			o.Log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			var results []*bench.ReplayResult
			for _, ka := range policies {
				ro := o
				ro.KeepAlive = ka
				if !quiet && !g.jsonOut() {
					fmt.Fprintf(g.stderr, "replaying %d calls of %d functions, keep_alive %s, speedup %g (%s)\n",
						len(tr.Arrivals), len(tr.Functions()), ka, ro.Speedup,
						time.Duration(float64(tr.Span())/max(ro.Speedup, 1e-9)).Round(time.Second))
					bar := progressbar.NewOptions(len(tr.Arrivals),
						progressbar.OptionSetWriter(g.stderr),
						progressbar.OptionSetDescription("keep_alive "+ka),
						progressbar.OptionShowCount(),
						progressbar.OptionThrottle(200*time.Millisecond),
						progressbar.OptionClearOnFinish())
					ro.Progress = func(int) { _ = bar.Add(1) }
				}
				r, err := bench.Replay(cmd.Context(), g.client(64), tr, ro)
				if err != nil {
					return fmt.Errorf("replay with keep_alive %s: %w", ka, err)
				}
				results = append(results, r)
			}
			if g.jsonOut() {
				return g.printJSON(results)
			}
			tw := g.table("KEEP_ALIVE", "DEPLOYED", "CALLS", "ERRORS", "COLD", "COLD%", "IDLE_INST_S", "IDLE_INST_S_TRACE", "P50", "P99")
			for _, r := range results {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.1f\t%.1f\t%.0f\t%s\t%s\n", r.KeepAlive, r.Deployed, r.Calls, r.Errors,
					r.Cold, r.ColdPercent, r.IdleInstanceSeconds, r.TraceIdleInstanceSeconds, ms(r.Latency.P50), ms(r.Latency.P99))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().Float64Var(&o.Speedup, "speedup", 1, "replay this many times faster than the trace")
	cmd.Flags().StringSliceVar(&policies, "keep-alive", []string{"auto", "10m", "0"}, "keep-alive policies to compare, in trace time: auto or a duration")
	cmd.Flags().DurationVar(&o.Fallback, "fallback", 10*time.Minute, "keep_alive auto's fixed keep-alive while it learns, in trace time")
	cmd.Flags().IntVar(&o.MaxInFlight, "max-in-flight", 64, "calls in flight at most")
	cmd.Flags().DurationVar(&o.Poll, "poll", 250*time.Millisecond, "how often /metrics is read for idle instances")
	cmd.Flags().BoolVar(&o.Keep, "keep", false, "leave the functions deployed after the replay")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	return cmd
}

func newBenchTraceCmd(g *globals) *cobra.Command {
	var o bench.TraceOptions
	var out string
	cmd := &cobra.Command{
		Use:   "trace [--functions N] [--duration D] [--seed S] [-o trace.csv]",
		Short: "Generate a synthetic trace after the Azure Functions 2019 characterisation",
		Long: `Write a synthetic trace of per-function arrivals for wisp bench replay.
Its distributions follow Shahrad et al., "Serverless in the Wild" (USENIX
ATC'20): log-normal daily invocation counts per function (log10 mean 1.60,
sd 1.77, fitted to 45% of functions invoked at most hourly and 81% at most
once a minute), 15.6% timer-triggered (periodic) functions, the rest
Poisson-like or bursty (hyper-exponential, CV 3), and log-normal execution
times (ln-mean -0.38 s, ln-sd 2.36) scaled by --exec-scale. --rate-scale 48
maps a day's calls onto 30 minutes.`,
		Args: cobra.NoArgs,
		// -o is the root's --output (table|json); here it names the CSV
		// file, so the root's check of its value is replaced.
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error { return nil },
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" && g.output != "table" && g.output != "json" {
				out = g.output
			}
			tr, profiles, err := bench.GenerateTrace(o)
			if err != nil {
				return err
			}
			w := g.stdout
			if out != "" && out != "-" {
				f, err := os.Create(out)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			if err := bench.WriteTrace(w, tr); err != nil {
				return fmt.Errorf("write trace: %w", err)
			}
			if out != "" && out != "-" {
				counts := map[string]int{}
				for _, a := range tr.Arrivals {
					counts[a.Function]++
				}
				tw := tabwriter.NewWriter(g.stderr, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "FUNCTION\tPATTERN\tRATE/MIN\tEXEC\tCALLS")
				for _, p := range profiles {
					fmt.Fprintf(tw, "%s\t%s\t%.3g\t%s\t%d\n", p.Name, p.Pattern, p.Rate*60, p.Exec.Round(time.Millisecond), counts[p.Name])
				}
				_ = tw.Flush()
				fmt.Fprintf(g.stderr, "wrote %d calls of %d functions over %s to %s\n", len(tr.Arrivals), len(profiles), o.Duration, out)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&o.Functions, "functions", 20, "number of functions")
	cmd.Flags().DurationVar(&o.Duration, "duration", 30*time.Minute, "trace length")
	cmd.Flags().Uint64Var(&o.Seed, "seed", 1, "random seed (the same seed gives the same trace)")
	cmd.Flags().Float64Var(&o.RateScale, "rate-scale", 1, "multiply every function's rate (48: a day's calls in 30 minutes)")
	cmd.Flags().Float64Var(&o.MaxRate, "max-rate", 1, "cap on one function's mean calls per second")
	cmd.Flags().Float64Var(&o.ExecScale, "exec-scale", 0.1, "scale execution times (0.1: a median of 68 ms)")
	cmd.Flags().DurationVar(&o.MaxExec, "max-exec", 2*time.Second, "cap on one call's execution time")
	cmd.Flags().StringVar(&out, "out", "", "write the CSV here (also -o FILE; default stdout)")
	return cmd
}

func newBenchHostCmd(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "host -f function.yaml [--listen ADDR]",
		Short: "Serve one function's runtime host directly over HTTP, without wisp (the overhead baseline)",
		Long: `Start the function's runtime host as a plain process (no sandbox,
scheduler, store or gateway) behind a minimal HTTP handler. Load it with wrk
beside the same function served by wisp to measure wisp's own overhead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			file, _ := cmd.Flags().GetString("file")
			b, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			spec, err := function.Parse(b, function.Baseline{})
			if err != nil {
				return err
			}
			dir, err := filepath.Abs(filepath.Dir(file))
			if err != nil {
				return err
			}
			host, err := bench.StartDirectHost(cmd.Context(), spec, dir)
			if err != nil {
				return err
			}
			defer host.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "serving %s directly on http://%s/ (Ctrl-C stops)\n", spec.Name, ln.Addr())
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			srv := &http.Server{Handler: host, ReadHeaderTimeout: 10 * time.Second}
			go func() { <-ctx.Done(); _ = srv.Close() }()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringP("file", "f", "function.yaml", "function spec")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:18081", "address to serve on")
	return cmd
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.3fms", float64(d.Microseconds())/1000)
}
