// Package cli implements the wisp command line: `wisp serve` starts the
// platform; the other commands talk to a running server over its HTTP API
// (WISP_URL, default http://127.0.0.1:8080) with "Authorization: Bearer
// KEY", the key from WISP_TOKEN or else ./.wisp-data/admin.key. Output is a
// human table by default and JSON with -o json.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/auth"
	"github.com/wisp-faas/wisp/internal/client"
)

// Version is the wisp version, set at build time with -ldflags.
var Version = "dev"

type globals struct {
	url       string
	token     string
	namespace string
	output    string
	stdout    io.Writer
	stderr    io.Writer
	stdin     io.Reader
}

func (g *globals) client(maxConns int) *client.Client {
	return client.New(g.url, g.token, maxConns).WithNamespace(g.namespace)
}

func (g *globals) jsonOut() bool { return g.output == "json" }

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (g *globals) table(header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

// NewRoot returns the wisp root command.
func NewRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr, stdin: stdin}
	root := &cobra.Command{
		Use:           "wisp",
		Short:         "wisp runs functions in isolated sandboxes on your own machines",
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.output != "table" && g.output != "json" {
				return fmt.Errorf("--output %q: use table or json", g.output)
			}
			return nil
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	defURL := os.Getenv("WISP_URL")
	if defURL == "" {
		defURL = client.DefaultURL
	}
	root.PersistentFlags().StringVar(&g.url, "url", defURL, "wisp server URL (env WISP_URL)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().StringVar(&g.namespace, "namespace", os.Getenv("WISP_NAMESPACE"),
		"namespace to act in, for admin keys (env WISP_NAMESPACE; default: the default namespace; a tenant key always acts in its own)")
	g.token = os.Getenv("WISP_TOKEN")
	if g.token == "" {
		// A server started here with the default data directory keeps its
		// admin key there; root (who runs it) can read it.
		g.token, _ = auth.ReadKeyFile(filepath.Join(".wisp-data", auth.AdminKeyFile))
	}

	root.AddCommand(
		newServeCmd(g),
		newDeployCmd(g),
		newInvokeCmd(g),
		newListCmd(g),
		newGetCmd(g),
		newRemoveCmd(g),
		newScaleCmd(g),
		newLogsCmd(g),
		newActivationsCmd(g),
		newBenchCmd(g),
		newImageCmd(g),
		newEnergyCmd(g),
		newNamespaceCmd(g),
		newTriggerCmd(g),
		NewExperimentCmd(g),
	)
	return root
}

// Main runs the CLI with os.Args and returns the process exit code.
func Main() int {
	root := NewRoot(os.Stdin, os.Stdout, os.Stderr)
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "wisp:", err)
		return 1
	}
	return 0
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}
