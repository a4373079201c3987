package cli

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/gateway"
	"github.com/wisp-faas/wisp/internal/store"
)

func newDeployCmd(g *globals) *cobra.Command {
	var file, runtime, handler, dir string
	cmd := &cobra.Command{
		Use:   "deploy [-f function.yaml | NAME --runtime R --handler H [--dir DIR]]",
		Short: "Deploy a function: pack the directory holding its spec and upload it",
		Long: `Deploy a function. With -f, the spec file's directory is packed (honouring
.wispignore) and uploaded with the spec; redeploying replaces the code for new
calls while calls in flight finish on the old version. Without -f, a spec is
made from NAME, --runtime and --handler, and --dir (default .) is packed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var spec []byte
			var err error
			switch {
			case file != "" && len(args) == 0:
				if spec, err = os.ReadFile(file); err != nil {
					return fmt.Errorf("read spec: %w", err)
				}
				dir = filepath.Dir(file)
			case file == "" && len(args) == 1:
				if runtime == "" || handler == "" {
					return fmt.Errorf("deploy %s: --runtime and --handler are required without -f", args[0])
				}
				spec = fmt.Appendf(nil, "name: %s\nruntime: %s\nhandler: %q\n", args[0], runtime, handler)
			default:
				return fmt.Errorf("give either -f function.yaml or NAME with --runtime and --handler")
			}
			// Parse locally for the name and an early, offline error.
			s, err := function.Parse(spec, function.Baseline{})
			if err != nil {
				return fmt.Errorf("%s: %w", displayName(file, args), err)
			}
			var code io.Reader
			if !s.IsSequence() { // a sequence has no code of its own
				var buf bytes.Buffer
				if err := store.Pack(dir, &buf, nil); err != nil {
					return fmt.Errorf("pack %s: %w", dir, err)
				}
				code = &buf
			}
			v, err := g.client(1).Deploy(cmd.Context(), s.Name, spec, code)
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(v)
			}
			fmt.Fprintf(g.stdout, "deployed %s version %d (%s, %d bytes)\ncall it: wisp invoke %s -d '...'   or   curl -d '...' %s/function/%s\n",
				v.Name, v.Version, shortDigest(v.Digest), v.CodeSize, v.Name, g.url, v.Name)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "function spec (YAML)")
	cmd.Flags().StringVar(&runtime, "runtime", "", "runtime without -f: python3, node or exec")
	cmd.Flags().StringVar(&handler, "handler", "", "handler without -f: file or command")
	cmd.Flags().StringVar(&dir, "dir", ".", "code directory without -f")
	return cmd
}

func displayName(file string, args []string) string {
	if file != "" {
		return file
	}
	return args[0]
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		return "sha256:" + d[:12]
	}
	if d == "" {
		return "no code"
	}
	return d
}

func newInvokeCmd(g *globals) *cobra.Command {
	var data, method, path, callback string
	var headers []string
	var verbose, async bool
	cmd := &cobra.Command{
		Use:   "invoke NAME [-d DATA | -d @file | < stdin]",
		Short: "Call a function and print its response",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var body []byte
			var err error
			switch {
			case strings.HasPrefix(data, "@"):
				if body, err = os.ReadFile(data[1:]); err != nil {
					return fmt.Errorf("read %s: %w", data[1:], err)
				}
			case cmd.Flags().Changed("data"):
				body = []byte(data)
			case !isTerminal(g.stdin):
				if body, err = io.ReadAll(g.stdin); err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
			}
			h := http.Header{}
			for _, kv := range headers {
				k, v, ok := strings.Cut(kv, ":")
				if !ok {
					return fmt.Errorf("header %q: write it as Name: value", kv)
				}
				h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
			if method == "" {
				method = http.MethodPost
				if body == nil {
					method = http.MethodGet
				}
			}
			if async {
				if callback != "" {
					h.Set(gateway.HeaderCallbackURL, callback)
				}
				id, err := g.client(1).InvokeAsync(cmd.Context(), args[0], path, h, body)
				if err != nil {
					return err
				}
				if g.jsonOut() {
					return g.printJSON(gateway.AsyncAccepted{ActivationID: id})
				}
				fmt.Fprintf(g.stdout, "queued: activation %s\nsee it: wisp activations %s\n", id, id)
				return nil
			}
			res, err := g.client(1).Invoke(cmd.Context(), args[0], method, path, h, body)
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(map[string]any{
					"status": res.Status, "activation_id": res.ActivationID, "cold_start": res.Cold,
					"duration_ms": res.Header.Get("X-Wisp-Duration-Ms"), "content_type": res.Header.Get("Content-Type"),
					"body": string(res.Body),
				})
			}
			if verbose {
				fmt.Fprintf(g.stderr, "HTTP %d  activation %s  cold=%v  %s ms\n", res.Status, res.ActivationID, res.Cold,
					res.Header.Get("X-Wisp-Duration-Ms"))
			}
			g.stdout.Write(res.Body)
			if len(res.Body) > 0 && res.Body[len(res.Body)-1] != '\n' {
				fmt.Fprintln(g.stdout)
			}
			if res.Status/100 != 2 {
				return fmt.Errorf("function %s answered HTTP %d (activation %s)", args[0], res.Status, res.ActivationID)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&data, "data", "d", "", "request body, or @file to send a file")
	cmd.Flags().StringVarP(&method, "method", "X", "", "HTTP method (default POST with a body, GET without)")
	cmd.Flags().StringVar(&path, "path", "", "path below /function/NAME")
	cmd.Flags().StringArrayVarP(&headers, "header", "H", nil, "request header 'Name: value' (repeatable)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print status, activation id and timing to stderr")
	cmd.Flags().BoolVar(&async, "async", false, "queue the call (POST /async-function/NAME) and print its activation id")
	cmd.Flags().StringVar(&callback, "callback", "", "with --async: a URL that receives the outcome (X-Callback-Url)")
	return cmd
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newListCmd(g *globals) *cobra.Command {
	var allNS bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List deployed functions",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client(1)
			list := c.List
			if allNS {
				list = c.ListAll
			}
			fns, err := list(cmd.Context())
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(fns)
			}
			tw := g.table("NAME", "NAMESPACE", "RUNTIME", "MODE", "VERSION", "INSTANCES", "KEEP_ALIVE", "MEMORY", "UPDATED")
			for _, f := range fns {
				if f.Spec.IsSequence() {
					fmt.Fprintf(tw, "%s\t%s\tsequence\t-\t%d\t%s\t-\t-\t%s\n", f.Name, f.Namespace, f.Version,
						strings.Join(f.Spec.Steps, " → "), age(f.UpdatedAt))
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d idle, %d busy\t%s\t%s\t%s\n", f.Name, f.Namespace, f.Spec.Runtime, f.Spec.ExecutionMode,
					f.Version, f.Instances.Idle, f.Instances.Busy, f.Spec.KeepAliveString(), f.Spec.Memory, age(f.UpdatedAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&allNS, "all-namespaces", "A", false, "list every namespace's functions (admin keys)")
	return cmd
}

func newGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show one function's spec, version and instances",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := g.client(1).Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(f)
			}
			s := f.Spec
			tw := g.table("FIELD", "VALUE")
			rows := [][2]string{
				{"name", f.Name}, {"version", fmt.Sprint(f.Version)}, {"code", fmt.Sprintf("%s (%d bytes)", shortDigest(f.Digest), f.CodeSize)},
				{"runtime", s.Runtime}, {"handler", s.Handler}, {"execution_mode", s.ExecutionMode},
				{"timeout", s.Timeout.String()}, {"memory", s.Memory.String()}, {"cpu", s.CPU.String()}, {"pids", fmt.Sprint(s.Pids)},
				{"keep_alive", s.KeepAliveString()}, {"max_instances", fmt.Sprint(s.MaxInstances)},
				{"concurrency", fmt.Sprint(s.Concurrency)}, {"network", s.Network},
				{"environment", strings.Join(envNames(s.Environment), ", ")},
				{"instances", fmt.Sprintf("%d starting, %d idle, %d busy, %d queued", f.Instances.Starting, f.Instances.Idle, f.Instances.Busy, f.Instances.Queued)},
				{"updated", f.UpdatedAt.Format("2006-01-02 15:04:05")},
			}
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
			}
			return tw.Flush()
		},
	}
}

// envNames shows environment variable names only: values may be secrets.
func envNames(env []string) []string {
	out := make([]string, 0, len(env))
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		out = append(out, k)
	}
	return out
}

func newRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove", "delete"},
		Short:   "Delete functions (calls in flight finish first)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				if err := g.client(1).Delete(cmd.Context(), name); err != nil {
					return err
				}
				if !g.jsonOut() {
					fmt.Fprintf(g.stdout, "removed %s\n", name)
				}
			}
			return nil
		},
	}
}

func newScaleCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "scale NAME N",
		Short: "Start instances of a function ahead of calls until N are ready (at most its max_instances)",
		Long: `Asks the server to start instances until N are ready; they come up in the
background (wisp get NAME shows them) and stay while the function's
keep_alive allows, serving calls warm.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[1])
			if err != nil || n < 1 {
				return fmt.Errorf("N %q: give a number of instances, 1 or more", args[1])
			}
			if err := g.client(1).Scale(cmd.Context(), args[0], n); err != nil {
				return err
			}
			if !g.jsonOut() {
				fmt.Fprintf(g.stdout, "scaling %s to %d ready instances; wisp get %s shows them come up\n", args[0], n, args[0])
			}
			return nil
		},
	}
}
