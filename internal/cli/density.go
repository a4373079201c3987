package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/wisp-faas/wisp/internal/store"
)

// newBenchDensityCmd is `wisp bench density`: how many idle warm instances
// one node holds, and what each costs in memory. It runs on the node
// itself, as root: it reads the instances' cgroups and /proc.
func newBenchDensityCmd(g *globals) *cobra.Command {
	var n int
	var cgroupRoot, mode string
	var keep bool
	cmd := &cobra.Command{
		Use:   "density [-n 100] [--mode process]",
		Short: "Start N idle warm instances of a Python hello and measure each one's memory (PSS, RSS, cgroup) and the node's",
		Long: `Deploys a Python hello ("density", keep_alive 1h, max_instances N, 64Mi),
asks the server for N ready instances (POST /v1/functions/density/scale),
waits for them, then measures every instance's processes through its cgroup:
PSS (each shared page split between its sharers: the honest per-instance
cost), RSS, the cgroup's own memory usage, and the drop in the node's
MemAvailable per instance (which includes kernel memory: page tables,
namespaces, sockets). Run it on the server's machine as root. The function
is deleted at the end unless --keep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c := g.client(4)
			before, err := memAvailable()
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "wisp-density-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			spec := fmt.Sprintf("name: density\nruntime: python3\nhandler: handler.py\nexecution_mode: %s\nkeep_alive: 1h\nmax_instances: %d\nmemory: 64Mi\n", mode, n)
			if err := os.WriteFile(filepath.Join(dir, "handler.py"), []byte("def handle(req):\n    return 'hello'\n"), 0o644); err != nil {
				return err
			}
			var code bytes.Buffer
			if err := store.Pack(dir, &code, nil); err != nil {
				return err
			}
			if _, err := c.Deploy(ctx, "density", []byte(spec), &code); err != nil {
				return err
			}
			if !keep {
				defer func() { _ = c.Delete(context.WithoutCancel(ctx), "density") }()
			}
			t0 := time.Now()
			if err := c.Scale(ctx, "density", n); err != nil {
				return err
			}
			bar := progressbar.NewOptions(n, progressbar.OptionSetWriter(g.stderr), progressbar.OptionSetDescription("instances"),
				progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
			ready := 0
			for ready < n {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(500 * time.Millisecond):
				}
				v, err := c.Get(ctx, "density")
				if err != nil {
					return err
				}
				ready = v.Instances.Idle + v.Instances.Busy
				_ = bar.Set(ready)
				if time.Since(t0) > 30*time.Minute {
					return fmt.Errorf("only %d of %d instances ready after 30 minutes; the server log says why", ready, n)
				}
			}
			_ = bar.Finish()
			took := time.Since(t0)
			time.Sleep(2 * time.Second) // let start-up garbage settle
			after, err := memAvailable()
			if err != nil {
				return err
			}
			insts, err := instanceMemory(cgroupRoot, "density-")
			if err != nil {
				return err
			}
			if len(insts) == 0 {
				return fmt.Errorf("no instance cgroups of density under %s (is --cgroup-root the server's process.cgroup_root, and is this the server's machine?)", cgroupRoot)
			}
			pss, rss, cg := make([]float64, 0, len(insts)), make([]float64, 0, len(insts)), make([]float64, 0, len(insts))
			for _, m := range insts {
				pss, rss, cg = append(pss, m.pss), append(rss, m.rss), append(cg, m.cgroup)
			}
			mib := func(b float64) string { return fmt.Sprintf("%.2f MiB", b/(1<<20)) }
			p50 := func(xs []float64) float64 { slices.Sort(xs); return xs[len(xs)/2] }
			p99 := func(xs []float64) float64 { slices.Sort(xs); return xs[min(len(xs)-1, len(xs)*99/100)] }
			sum := func(xs []float64) float64 {
				t := 0.0
				for _, x := range xs {
					t += x
				}
				return t
			}
			fmt.Fprintf(g.stdout, "%d idle %s instances ready in %s (%.1f starts/s)\n", len(insts), mode, took.Round(time.Second), float64(n)/took.Seconds())
			tw := g.table("PER INSTANCE", "P50", "P99", "TOTAL")
			fmt.Fprintf(tw, "PSS\t%s\t%s\t%s\n", mib(p50(pss)), mib(p99(pss)), mib(sum(pss)))
			fmt.Fprintf(tw, "RSS\t%s\t%s\t%s\n", mib(p50(rss)), mib(p99(rss)), mib(sum(rss)))
			fmt.Fprintf(tw, "cgroup memory\t%s\t%s\t%s\n", mib(p50(cg)), mib(p99(cg)), mib(sum(cg)))
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "node MemAvailable: %s before, %s after: %s per instance\n",
				mib(float64(before)), mib(float64(after)), mib(float64(before-after)/float64(len(insts))))
			return nil
		},
	}
	cmd.Flags().IntVarP(&n, "instances", "n", 100, "idle instances to start")
	cmd.Flags().StringVar(&mode, "mode", "process", "execution mode: process or container")
	cmd.Flags().StringVar(&cgroupRoot, "cgroup-root", "wisp", "the server's process.cgroup_root (container mode: wisp-container)")
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the density function and its instances deployed")
	return cmd
}

type instMem struct{ pss, rss, cgroup float64 }

// instanceMemory measures every instance cgroup whose name starts with
// prefix under root, in the memory hierarchy (v1) or the unified one (v2).
func instanceMemory(root, prefix string) ([]instMem, error) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/memory", root, prefix+"*"))
	usageFile := "memory.usage_in_bytes"
	if len(dirs) == 0 {
		dirs, _ = filepath.Glob(filepath.Join("/sys/fs/cgroup", root, prefix+"*"))
		usageFile = "memory.current"
	}
	out := make([]instMem, 0, len(dirs))
	for _, d := range dirs {
		var m instMem
		if b, err := os.ReadFile(filepath.Join(d, usageFile)); err == nil {
			v, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
			m.cgroup = v
		}
		procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(procs)) {
			pss, rss, err := smapsRollup(f)
			if err == nil {
				m.pss += pss
				m.rss += rss
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// smapsRollup returns a process's Pss and Rss in bytes.
func smapsRollup(pid string) (pss, rss float64, err error) {
	f, err := os.Open("/proc/" + pid + "/smaps_rollup")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "Pss:":
			pss = v * 1024
		case "Rss:":
			rss = v * 1024
		}
	}
	return pss, rss, sc.Err()
}

// memAvailable is the node's MemAvailable in bytes.
func memAvailable() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no MemAvailable in /proc/meminfo")
}
