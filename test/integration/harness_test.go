// Package integration runs wisp end to end: a real `wisp serve` (in
// process), real sandboxes, real Python and Node hosts, driven over HTTP.
// The suite is parametrised by execution mode (modes()), so every later mode
// runs the same tests.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/wisp-faas/wisp/internal/auth"
	"github.com/wisp-faas/wisp/internal/client"
	"github.com/wisp-faas/wisp/internal/config"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox/container"
	"github.com/wisp-faas/wisp/internal/sandbox/process"
	"github.com/wisp-faas/wisp/internal/server"
	"github.com/wisp-faas/wisp/internal/store"
	"github.com/wisp-faas/wisp/internal/testenv"
)

func TestMain(m *testing.M) {
	process.MaybeRunInit()
	container.MaybeRunInit()
	// Every server the suite starts has authentication on; requests made
	// with net/http's default client carry that server's admin key.
	http.DefaultTransport = authTransport{base: plainTransport}
	os.Exit(m.Run())
}

// plainTransport sends requests as they are (for the tests of 401).
var plainTransport = http.DefaultTransport

// tokens maps a server's host:port to its admin key.
var tokens sync.Map

// authTransport adds the admin key of the server a request goes to, unless
// the request has an Authorization header already.
type authTransport struct{ base http.RoundTripper }

func (a authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		if k, ok := tokens.Load(r.URL.Host); ok {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+k.(string))
		}
	}
	return a.base.RoundTrip(r)
}

// rememberKey reads the admin key a server wrote into dataDir and uses it
// for requests to addr.
func rememberKey(t *testing.T, addr, dataDir string) string {
	t.Helper()
	key, err := auth.ReadKeyFile(filepath.Join(dataDir, auth.AdminKeyFile))
	if err != nil {
		t.Fatalf("admin key of the server at %s: %v", addr, err)
	}
	tokens.Store(addr, key)
	return key
}

// tokenFor returns the admin key of the server at url ("" if unknown).
func tokenFor(url string) string {
	k, _ := tokens.Load(strings.TrimPrefix(url, "http://"))
	s, _ := k.(string)
	return s
}

// requireSandboxes gates the suite on root, cgroups and the runtimes'
// interpreters (testenv: a skip here, a failure under CI=true).
func requireSandboxes(t *testing.T) {
	t.Helper()
	testenv.RequireCgroups(t)
	testenv.RequireFile(t, "/usr/bin/python3", "python3")
	testenv.RequireFile(t, "/usr/bin/node", "nodejs")
}

// modes lists the execution modes the suite runs against.
func modes() []string { return []string{function.ModeProcess, function.ModeContainer} }

// itNamespace is the containerd namespace of the suite's servers. They run
// one after another and share it, so the runtime images are built once
// (and kept between runs, as a user's would be).
const itNamespace = "wisp-it"

type harness struct {
	t       *testing.T
	c       *client.Client
	url     string
	dataDir string
	cfg     config.Config
	cancel  context.CancelFunc
	done    chan error
}

var harnessSeq int

func testConfig(t *testing.T, mode string) config.Config {
	cfg := config.Default()
	harnessSeq++
	cfg.Process.CgroupRoot = fmt.Sprintf("wisp-it-%d-%d", os.Getpid(), harnessSeq)
	cfg.Gateway.Listen = "127.0.0.1:0"
	cfg.Gateway.ShutdownTimeout = 10 * 1e9
	cfg.Execution.DefaultMode = mode
	cfg.Container.Namespace = itNamespace
	cfg.Log.Level = "warn"
	return cfg
}

// startServer runs wisp serve in-process on a free port with dataDir ("" for
// a fresh one) and stops it at the end of the test, checking that nothing
// of it remains.
func startServer(t *testing.T, cfg config.Config, dataDir string) *harness {
	t.Helper()
	requireSandboxes(t)
	if cfg.Execution.DefaultMode == function.ModeContainer {
		testenv.RequireFile(t, cfg.Container.Address, "containerd runc (and start it: containerd &)")
	}
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, dataDir: dataDir, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan string, 1)
	var logs io.Writer = io.Discard
	if os.Getenv("WISP_TEST_LOGS") != "" {
		logs = os.Stderr
	}
	go func() {
		h.done <- server.Run(ctx, server.Options{
			Config: &cfg, DataDir: dataDir, Version: "test",
			Stdout: io.Discard, Stderr: logs,
			Ready: func(addr string) { ready <- addr },
		})
	}()
	select {
	case addr := <-ready:
		h.url = "http://" + addr
	case err := <-h.done:
		t.Fatalf("wisp serve exited at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("wisp serve did not start within 30s")
	}
	rememberKey(t, strings.TrimPrefix(h.url, "http://"), dataDir)
	h.c = client.New(h.url, tokenFor(h.url), 64)
	t.Cleanup(func() { h.stop() })
	return h
}

// stop shuts the server down (as SIGTERM would) and checks it left nothing.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("wisp serve returned %v", err)
		}
	case <-time.After(60 * time.Second):
		h.t.Fatal("wisp serve did not stop within 60s")
	}
	assertNoLeftovers(h.t, h.cfg.Process.CgroupRoot)
	if h.cfg.Execution.DefaultMode == function.ModeContainer {
		assertNoContainers(h.t, h.cfg.Container)
	}
}

// assertNoContainers checks that no container, task or cgroup of a stopped
// server remains in its containerd namespace.
func assertNoContainers(t *testing.T, cfg config.Container) {
	t.Helper()
	c, err := containerd.New(cfg.Address)
	if err != nil {
		t.Errorf("connect to containerd: %v", err)
		return
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), cfg.Namespace)
	cs, err := c.Containers(ctx)
	if err != nil {
		t.Errorf("list containers: %v", err)
	}
	for _, ct := range cs {
		t.Errorf("container %s left behind after shutdown", ct.ID())
	}
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + container.CgroupParentFor(cfg.Namespace) + "/*")
	for _, d := range dirs {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			t.Errorf("container cgroup %s left behind after shutdown", d)
		}
	}
}

// assertNoLeftovers checks no cgroup of this server remains under any
// hierarchy, and no sandbox process is alive.
func assertNoLeftovers(t *testing.T, cgroupRoot string) {
	t.Helper()
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + cgroupRoot + "/*")
	v2, _ := filepath.Glob("/sys/fs/cgroup/" + cgroupRoot + "/*")
	for _, d := range append(dirs, v2...) {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			t.Errorf("cgroup %s left behind after shutdown", d)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), "wisp-sandbox") {
		t.Errorf("sandbox mounts visible in the host mount namespace after shutdown")
	}
}

// fn describes a function to deploy from files.
type fn struct {
	spec  string
	files map[string]string
	exec  []string // files to mark executable
}

// deploy writes the function into a temp dir, packs and deploys it.
func (h *harness) deploy(f fn) error {
	h.t.Helper()
	dir := h.t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "function.yaml"), []byte(f.spec), 0o644); err != nil {
		h.t.Fatal(err)
	}
	for name, body := range f.files {
		mode := os.FileMode(0o644)
		for _, e := range f.exec {
			if e == name {
				mode = 0o755
			}
		}
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			h.t.Fatal(err)
		}
	}
	var code bytes.Buffer
	if err := store.Pack(dir, &code, nil); err != nil {
		h.t.Fatal(err)
	}
	name := ""
	for _, line := range strings.Split(f.spec, "\n") {
		if v, ok := strings.CutPrefix(line, "name:"); ok {
			name = strings.TrimSpace(v)
		}
	}
	_, err := h.c.Deploy(context.Background(), name, []byte(f.spec), &code)
	return err
}

func (h *harness) mustDeploy(f fn) {
	h.t.Helper()
	if err := h.deploy(f); err != nil {
		h.t.Fatalf("deploy: %v", err)
	}
}

// metrics returns the text of /metrics.
func (h *harness) metrics() string {
	h.t.Helper()
	res, err := http.Get(h.url + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(res.Body)
	return b.String()
}

// call invokes name with a raw query string ("?op=uid") and returns the result.
func (h *harness) call(name, query, body string) *client.Result {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.url+"/function/"+name+query, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	t0 := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("call %s%s: %v", name, query, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return &client.Result{Status: resp.StatusCode, Header: resp.Header, Body: buf.Bytes(),
		ActivationID: resp.Header.Get("X-Wisp-Activation-Id"), Cold: resp.Header.Get("X-Wisp-Cold-Start") == "true",
		Duration: time.Since(t0)}
}

func decode[T any](t *testing.T, res *client.Result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(res.Body, &v); err != nil {
		t.Fatalf("decode %q (HTTP %d): %v", res.Body, res.Status, err)
	}
	return v
}

func wantStatus(t *testing.T, res *client.Result, status int) {
	t.Helper()
	if res.Status != status {
		t.Fatalf("HTTP %d, want %d; body: %s", res.Status, status, res.Body)
	}
}
