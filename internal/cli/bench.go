package cli

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
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
	cmd.AddCommand(newBenchHostCmd(g))
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
