package cli

import (
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/server"
)

func newServeCmd(g *globals) *cobra.Command {
	o := server.Options{}
	cmd := &cobra.Command{
		Use:   "serve [--listen ADDR] [--data DIR] [--config wisp.yaml] [--demo]",
		Short: "Run the wisp platform on this machine (needs root for sandboxes)",
		Long: `Run the gateway, scheduler and sandboxes in one process. Registry and
activation records live in DIR. SIGTERM or Ctrl-C drains calls in flight,
stops every sandbox and removes their cgroups; a start after a crash removes
what the crashed run left. With --demo the example functions are deployed
and the commands to call them printed.

Every API call but /healthz needs "Authorization: Bearer <key>". On first
start an admin key is made and written to DIR/admin.key (mode 0600); the
CLI reads it from there (or from WISP_TOKEN).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			o.Version = Version
			o.Stdout = g.stdout
			o.Stderr = g.stderr
			return server.Run(ctx, o)
		},
	}
	cmd.Flags().StringVar(&o.Listen, "listen", "", "address to listen on (default gateway.listen: 127.0.0.1:8080)")
	cmd.Flags().StringVar(&o.DataDir, "data", ".wisp-data", "data directory (registry, code, activations)")
	cmd.Flags().StringVar(&o.ConfigPath, "config", "", "system config file (YAML); defaults apply when absent")
	cmd.Flags().BoolVar(&o.Demo, "demo", false, "deploy the example functions and print how to call them")
	cmd.Flags().BoolVar(&o.InsecureNoAuth, "insecure-no-auth", false, "accept API calls without a key (local experiments only: anyone who reaches the address can run code)")
	cmd.Flags().StringVar(&o.DebugAddr, "debug-addr", "", "serve Go pprof profiles on this address (e.g. 127.0.0.1:6060); off by default")
	return cmd
}
