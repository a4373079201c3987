package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/gateway"
	"github.com/wisp-faas/wisp/internal/store"
)

// quotaFlags are the quota flags of ns create and ns set.
type quotaFlags struct {
	rate        string
	burst       int
	concurrency int
	queued      int
}

func (q *quotaFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&q.rate, "rate", "", `invocation rate quota of all the namespace's functions together: "100/s", "6000/m" ("" = none)`)
	cmd.Flags().IntVar(&q.burst, "burst", 0, "calls the rate quota accepts at once after a quiet spell (default: the N of --rate)")
	cmd.Flags().IntVar(&q.concurrency, "max-concurrency", 0, "calls of the namespace in flight at once (0 = no limit)")
	cmd.Flags().IntVar(&q.queued, "max-queued", 0, "async calls of the namespace waiting or running (0 = only the node's async.max_queued)")
}

func (q *quotaFlags) namespace(name string) store.Namespace {
	return store.Namespace{Name: name, RateLimit: q.rate, RateBurst: q.burst, MaxConcurrency: q.concurrency, MaxQueued: q.queued}
}

func newNamespaceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ns",
		Aliases: []string{"namespace", "namespaces"},
		Short:   "Manage namespaces (tenants): each has its own functions, activations, key and quotas",
	}
	printNS := func(v *gateway.NamespaceView) error {
		if g.jsonOut() {
			return g.printJSON(v)
		}
		tw := g.table("FIELD", "VALUE")
		rows := [][2]string{{"name", v.Name}, {"rate_limit", orNone(v.RateLimit)}, {"rate_burst", fmt.Sprint(v.RateBurst)},
			{"max_concurrency", fmt.Sprint(v.MaxConcurrency)}, {"max_queued", fmt.Sprint(v.MaxQueued)}, {"functions", fmt.Sprint(v.Functions)},
			{"in_flight", fmt.Sprint(v.InFlight)}, {"queued", fmt.Sprint(v.Queued)}}
		if v.Key != "" {
			rows = append(rows, [2]string{"key", v.Key + "   (shown once: keep it; WISP_TOKEN=<key> makes the CLI use it)"})
		}
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
		}
		return tw.Flush()
	}

	var createQ quotaFlags
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a namespace and print its API key (admin keys)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := g.client(1).CreateNamespace(cmd.Context(), createQ.namespace(args[0]))
			if err != nil {
				return err
			}
			return printNS(v)
		},
	}
	createQ.add(create)

	var setQ quotaFlags
	set := &cobra.Command{
		Use:   "set NAME",
		Short: "Replace a namespace's quotas (admin keys); flags left out mean no limit",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := g.client(1).UpdateNamespace(cmd.Context(), setQ.namespace(args[0]))
			if err != nil {
				return err
			}
			return printNS(v)
		},
	}
	setQ.add(set)

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List namespaces",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := g.client(1).Namespaces(cmd.Context())
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(list)
			}
			tw := g.table("NAME", "FUNCTIONS", "IN_FLIGHT", "RATE_LIMIT", "MAX_CONCURRENCY", "AGE")
			for _, v := range list {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%s\n", v.Name, v.Functions, v.InFlight, orNone(v.RateLimit), v.MaxConcurrency, age(v.Created))
			}
			return tw.Flush()
		},
	}

	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show one namespace and its quotas",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := g.client(1).Namespace(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printNS(v)
		},
	}

	var force bool
	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a namespace and its keys (admin keys); --force removes its functions too",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client(1).DeleteNamespace(cmd.Context(), args[0], force); err != nil {
				return err
			}
			if !g.jsonOut() {
				fmt.Fprintf(g.stdout, "namespace %s removed\n", args[0])
			}
			return nil
		},
	}
	rm.Flags().BoolVar(&force, "force", false, "also remove the namespace's functions")

	rotate := &cobra.Command{
		Use:   "rotate NAME",
		Short: "Make a new key for a namespace and revoke its old ones",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := g.client(1).RotateKey(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printNS(v)
		},
	}
	cmd.AddCommand(create, set, ls, get, rm, rotate)
	return cmd
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
