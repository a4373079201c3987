package cli

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/store"
)

func newLogsCmd(g *globals) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Show what a function printed (stdout, stderr, tracebacks), oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			acts, err := g.client(1).Activations(cmd.Context(), store.ActivationFilter{Function: args[0], Limit: limit})
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(acts)
			}
			for i := len(acts) - 1; i >= 0; i-- {
				a := acts[i]
				if a.Logs == "" && a.Error == "" {
					continue
				}
				fmt.Fprintf(g.stdout, "--- %s %s %s (%d, %.1f ms)\n", a.Start.Format("15:04:05.000"), a.ID, a.Status, a.StatusCode, a.DurationMs)
				if a.Error != "" {
					fmt.Fprintf(g.stdout, "error: %s\n", a.Error)
				}
				if a.Logs != "" {
					fmt.Fprint(g.stdout, a.Logs)
					if !strings.HasSuffix(a.Logs, "\n") {
						fmt.Fprintln(g.stdout)
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "how many recent activations to read")
	return cmd
}

func newActivationsCmd(g *globals) *cobra.Command {
	var f store.ActivationFilter
	var allNS, failed bool
	var state string
	cmd := &cobra.Command{
		Use:   "activations [ID]",
		Short: "List recent activations, or show one with its result and logs",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client(1)
			if len(args) == 1 {
				a, err := c.Activation(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if g.jsonOut() {
					return g.printJSON(a)
				}
				b, _ := json.MarshalIndent(a.Timings, "", "  ")
				fmt.Fprintf(g.stdout, "id:        %s\nfunction:  %s (version %d)\nstatus:    %s (HTTP %d)\ncold:      %v\ninstance:  %s\nstart:     %s\nduration:  %.3f ms\ntimings:   %s\n",
					a.ID, a.Function, a.Version, a.Status, a.StatusCode, a.ColdStart, a.InstanceID, a.Start.Format("2006-01-02 15:04:05.000"), a.DurationMs, b)
				if a.State != "" {
					fmt.Fprintf(g.stdout, "async:     %s after %d attempt(s), from %s\n", a.State, a.Attempts, a.Source)
				}
				if a.Parent != "" {
					fmt.Fprintf(g.stdout, "sequence:  step of activation %s\n", a.Parent)
				}
				for i, c := range a.Children {
					fmt.Fprintf(g.stdout, "step %d:    activation %s\n", i+1, c)
				}
				if a.Error != "" {
					fmt.Fprintf(g.stdout, "error:     %s\n", a.Error)
				}
				if a.Hint != "" {
					fmt.Fprintf(g.stdout, "hint:      %s\n", a.Hint)
				}
				if len(a.Result) > 0 {
					fmt.Fprintf(g.stdout, "result:\n%s\n", a.Result)
				}
				if a.Logs != "" {
					fmt.Fprintf(g.stdout, "logs:\n%s\n", a.Logs)
				}
				return nil
			}
			if allNS {
				f.Namespace = "*"
			}
			if failed {
				state = "failed"
			}
			if state != "" {
				// Async calls by queue state: --failed lists the dead letters.
				acts, err := c.AsyncActivations(cmd.Context(), f, state)
				if err != nil {
					return err
				}
				if g.jsonOut() {
					return g.printJSON(acts)
				}
				tw := g.table("ID", "FUNCTION", "STATE", "ATTEMPTS", "LAST_CODE", "SOURCE", "AGE", "LAST_ERROR")
				for _, a := range acts {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", a.ID, a.Function, a.State, a.Attempts, a.StatusCode, a.Source,
						age(a.Start), truncate(a.Error, 60))
				}
				return tw.Flush()
			}
			acts, err := c.Activations(cmd.Context(), f)
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(acts)
			}
			tw := g.table("ID", "FUNCTION", "STATUS", "CODE", "COLD", "DURATION_MS", "AGE")
			for _, a := range acts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%v\t%.2f\t%s\n", a.ID, a.Function, a.Status, a.StatusCode, a.ColdStart, a.DurationMs, age(a.Start))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&f.Function, "function", "", "only this function's activations")
	cmd.Flags().StringVar(&f.Status, "status", "", "only this status: success, error, timeout, crashed, rejected")
	cmd.Flags().IntVarP(&f.Limit, "limit", "n", 20, "how many to list")
	cmd.Flags().BoolVarP(&allNS, "all-namespaces", "A", false, "list every namespace's activations (admin keys)")
	cmd.Flags().BoolVar(&failed, "failed", false, "list failed async calls (the dead letters); wisp activations redrive ID runs one again")
	cmd.Flags().StringVar(&state, "state", "", "list async calls in this state: queued, running, succeeded, failed")
	cmd.AddCommand(&cobra.Command{
		Use:   "redrive ID [ID...]",
		Short: "Send failed async calls (dead letters) back to the queue, attempts reset",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, id := range args {
				if err := g.client(1).Redrive(cmd.Context(), id); err != nil {
					return fmt.Errorf("redrive %s: %w", id, err)
				}
				fmt.Fprintf(g.stdout, "queued again: %s\n", id)
			}
			return nil
		},
	})
	return cmd
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
