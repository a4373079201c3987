package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/gateway"
	"github.com/wisp-faas/wisp/internal/trigger"
)

func newTriggerCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "trigger",
		Aliases: []string{"triggers"},
		Short:   "Manage triggers: cron schedules and NATS subjects that call a function asynchronously",
	}
	var req gateway.TriggerRequest
	create := &cobra.Command{
		Use:   "create NAME --function F (--schedule CRON | --subject SUBJECT)",
		Short: "Create a trigger; each firing is an async call (retried per the function's retries)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			switch {
			case req.Schedule != "" && req.Subject != "":
				return fmt.Errorf("give --schedule or --subject, not both")
			case req.Schedule != "":
				req.Type = trigger.TypeCron
			case req.Subject != "":
				req.Type = trigger.TypeNATS
			default:
				return fmt.Errorf("give --schedule '*/5 * * * *' (cron) or --subject orders.created (NATS)")
			}
			v, err := g.client(1).CreateTrigger(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(v)
			}
			fmt.Fprintf(g.stdout, "trigger %s: %s calls %s\n", v.Name, describe(v), v.Function)
			return nil
		},
	}
	create.Flags().StringVar(&req.Function, "function", "", "the function to call (in your namespace)")
	create.Flags().StringVar(&req.Schedule, "schedule", "", `cron schedule: "*/5 * * * *", "@hourly", "@every 30s", "CRON_TZ=Europe/Paris 0 9 * * 1-5"`)
	create.Flags().StringVar(&req.Subject, "subject", "", `NATS subject: "orders.created", "orders.>" (needs triggers.nats_url)`)
	create.Flags().StringVar(&req.Body, "body", "", "cron: the request body (default: {\"trigger\":ID,\"scheduled\":TIME})")

	var allNS bool
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List triggers",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := g.client(1).Triggers(cmd.Context(), allNS)
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(list)
			}
			tw := g.table("NAME", "NAMESPACE", "FUNCTION", "TYPE", "ON", "NEXT", "AGE")
			for _, v := range list {
				next := "-"
				if v.Next != nil {
					next = v.Next.Local().Format("2006-01-02 15:04:05")
				}
				ns := v.Namespace
				if ns == "" {
					ns = "default"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, ns, v.Function, v.Type, describe(&v), next, age(v.Created))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVarP(&allNS, "all-namespaces", "A", false, "every namespace's triggers (admin keys)")

	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a trigger",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client(1).DeleteTrigger(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "trigger %s removed\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, ls, rm)
	return cmd
}

func describe(v *gateway.TriggerView) string {
	if v.Type == trigger.TypeCron {
		return v.Schedule
	}
	return v.Subject
}
