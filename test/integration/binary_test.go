package integration

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/wisp-faas/wisp/internal/client"
	"github.com/wisp-faas/wisp/internal/config"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/server"
	"github.com/wisp-faas/wisp/internal/testenv"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildWisp builds cmd/wisp once per test run.
func buildWisp(t *testing.T) string {
	t.Helper()
	requireSandboxes(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wisp-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "wisp")
		cmd := exec.Command("go", "build", "-o", builtBin, "../../cmd/wisp")
		cmd.Stderr = os.Stderr
		buildErr = cmd.Run()
	})
	if buildErr != nil {
		t.Fatalf("build wisp: %v", buildErr)
	}
	return builtBin
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startBinary runs `wisp serve` as a separate process and waits for healthz.
func startBinary(t *testing.T, bin, dataDir, cfgFile, addr string, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--data", dataDir, "--config", cfgFile, "--listen", addr}, extra...)...)
	if os.Getenv("WISP_TEST_LOGS") != "" {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
			if !slices.Contains(extra, "--insecure-no-auth") {
				rememberKey(t, addr, dataDir)
			}
			return cmd
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("wisp serve did not answer on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countCgroups counts instance cgroups under root in every hierarchy.
// liveSandboxes returns the ids of the sandboxes of a server with cfg that
// exist now: cgroups in process mode, containerd containers in container
// mode.
func liveSandboxes(t *testing.T, cfg config.Config) map[string]bool {
	t.Helper()
	live := map[string]bool{}
	if cfg.Execution.DefaultMode != function.ModeContainer {
		v1, _ := filepath.Glob("/sys/fs/cgroup/*/" + cfg.Process.CgroupRoot + "/*")
		v2, _ := filepath.Glob("/sys/fs/cgroup/" + cfg.Process.CgroupRoot + "/*")
		for _, d := range append(v1, v2...) {
			if st, err := os.Stat(d); err == nil && st.IsDir() {
				live[filepath.Base(d)] = true
			}
		}
		return live
	}
	c, err := containerd.New(cfg.Container.Address)
	if err != nil {
		t.Fatalf("connect to containerd: %v", err)
	}
	defer c.Close()
	cs, err := c.Containers(namespaces.WithNamespace(context.Background(), cfg.Container.Namespace))
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	for _, ct := range cs {
		live[ct.ID()] = true
	}
	return live
}

func countCgroups(root string) int {
	v1, _ := filepath.Glob("/sys/fs/cgroup/*/" + root + "/*")
	v2, _ := filepath.Glob("/sys/fs/cgroup/" + root + "/*")
	n := 0
	for _, d := range append(v1, v2...) {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			n++
		}
	}
	return n
}

// WriteExamplesTo copies the embedded examples into dir.
func WriteExamplesTo(dir string) error { return server.WriteExamples(dir) }

// startBinaryOut is startBinary with stdout captured into out.
func startBinaryOut(t *testing.T, bin, dataDir, cfgFile, addr string, extra ...string) (*exec.Cmd, *testenv.Buffer) {
	t.Helper()
	w := &testenv.Buffer{}
	cmd := exec.Command(bin, append([]string{"serve", "--data", dataDir, "--config", cfgFile, "--listen", addr}, extra...)...)
	cmd.Stdout = w
	if os.Getenv("WISP_TEST_LOGS") != "" {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, w
}

func newClient(url string) *client.Client { return client.New(url, tokenFor(url), 4) }
