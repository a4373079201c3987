package cli

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/config"
	"github.com/wisp-faas/wisp/internal/image"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox/container"
)

// newImageCmd is `wisp image`: container images in containerd, managed on
// this machine directly (not through the server), as root.
func newImageCmd(g *globals) *cobra.Command {
	var cfgPath, dataDir string
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build and import the container images container-mode functions run on",
		Long: `Container-mode functions run on a runtime base image that wisp builds
locally from this machine's interpreters (no registry needed), or on an
image their spec names (image: REF). These commands talk to containerd
directly (container.address and container.namespace of the system config)
and need root.`,
	}
	cmd.PersistentFlags().StringVar(&cfgPath, "config", "", "system config file (YAML); defaults apply when absent")
	cmd.PersistentFlags().StringVar(&dataDir, "data", ".wisp-data", "data directory of the server the images are for")

	backend := func(progress func(image.Progress)) (*container.Backend, error) {
		cfg := config.Default()
		if cfgPath != "" {
			var err error
			if cfg, err = config.Load(cfgPath); err != nil {
				return nil, err
			}
		}
		dir, err := filepath.Abs(dataDir)
		if err != nil {
			return nil, fmt.Errorf("data directory %s: %w", dataDir, err)
		}
		return container.New(container.Options{
			Address:   cfg.Container.Address,
			Namespace: cfg.Container.Namespace,
			Runtime:   cfg.Container.Runtime,
			StateDir:  filepath.Join(dir, "container"),
			Launcher:  runtime.Launcher{Python: cfg.Process.Python, Node: cfg.Process.Node},
			Progress:  progress,
			// The progress bar says what happens; only problems are logged.
			Log: slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
	}

	importCmd := &cobra.Command{
		Use:   "import FILE.tar",
		Short: "Import an OCI or Docker image archive (docker save, skopeo copy oci-archive:) into wisp's containerd namespace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cb, err := backend(nil)
			if err != nil {
				return err
			}
			ctx := cb.WithNamespace(cmd.Context())
			client, err := cb.Client(ctx)
			if err != nil {
				return err
			}
			names, err := image.ImportFile(ctx, client, args[0], "")
			if err != nil {
				return err
			}
			if g.jsonOut() {
				return g.printJSON(map[string][]string{"images": names})
			}
			for _, n := range names {
				fmt.Fprintf(g.stdout, "imported %s\n", n)
			}
			fmt.Fprintln(g.stdout, "use it in a spec with execution_mode: container and image: NAME")
			return nil
		},
	}

	buildCmd := &cobra.Command{
		Use:   "build [RUNTIME...]",
		Short: "Build (or find cached) the runtime base images: python3, node, exec (default: all three)",
		Long: `Build the base image of each runtime from this machine's installed
interpreters and libraries, as an OCI image in containerd. A server builds
an image the first time a container function of that runtime starts; run
this ahead to take that off the first call. Cached images are reused until
the interpreter or its libraries change.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"python3", "node", "exec"}
			}
			var bar *progressbar.ProgressBar
			progress := func(p image.Progress) {
				switch p.Stage {
				case "layer":
					if bar == nil {
						bar = progressbar.NewOptions64(p.Total, progressbar.OptionSetWriter(g.stderr),
							progressbar.OptionSetDescription("write "+p.Image), progressbar.OptionShowBytes(true),
							progressbar.OptionClearOnFinish())
					}
					_ = bar.Set64(p.Done)
				case "done":
					if bar != nil {
						_ = bar.Finish()
						bar = nil
					}
				default:
					fmt.Fprintf(g.stderr, "%s: %s\n", p.Image, p.Stage)
				}
			}
			cb, err := backend(progress)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			for _, rt := range args {
				if err := cb.Prepare(ctx, rt); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "%s: ready\n", rt)
			}
			return nil
		},
	}
	cmd.AddCommand(importCmd, buildCmd)
	return cmd
}
