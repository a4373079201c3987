package container

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"

	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/testenv"
)

func TestMain(m *testing.M) {
	MaybeRunInit()
	os.Exit(m.Run())
}

// testNamespace is the containerd namespace of this package's tests:
// never a server's. The base images stay in it between runs (they are the
// cache); tests run one at a time, so that each can check that it left no
// container behind.
const testNamespace = "wisp-test-container"

var (
	seq       atomic.Int64
	cleanOnce sync.Once
)

// requireContainerd gates a test on root and a running containerd.
func requireContainerd(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireFile(t, "/usr/bin/runc", "runc")
	if !testenv.Exists(DefaultAddress) {
		testenv.Missing(t, "containerd is not running at %s (apt-get install containerd runc; containerd &)", DefaultAddress)
	}
}

// testBackend returns a backend in the test binary's namespace with its own
// state directory and cgroup parent. When the test ends, it checks that no
// container, task or active snapshot was left, and removes what was.
func testBackend(t testing.TB, mod ...func(*Options)) *Backend {
	t.Helper()
	requireContainerd(t)
	n := seq.Add(1)
	opts := Options{
		Namespace:    testNamespace,
		StateDir:     filepath.Join(stateRoot(t), fmt.Sprint(n)),
		CgroupParent: fmt.Sprintf("wisp-ctest-%d-%d", os.Getpid(), n),
		UIDBase:      310000 + int(n)*100,
		UIDCount:     100,
		Log:          slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range mod {
		f(&opts)
	}
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	// What an interrupted earlier run of these tests left.
	cleanOnce.Do(func() {
		if err := b.Cleanup(context.Background()); err != nil {
			t.Fatalf("clean up the test namespace: %v", err)
		}
	})
	t.Cleanup(func() {
		ctx := namespaces.WithNamespace(context.Background(), opts.Namespace)
		_ = b.Destroy(ctx)
		if left := leftovers(t, opts.Namespace); left != "" {
			t.Errorf("left behind in namespace %s: %s", opts.Namespace, left)
		}
		if cg, err := b.cgroups(); err == nil {
			// runc removes a container's own cgroup a moment after its
			// task is gone: until then the parent cannot be removed.
			deadline := time.Now().Add(5 * time.Second)
			for err := cg.Destroy(); err != nil; err = cg.Destroy() {
				if time.Now().After(deadline) {
					t.Logf("left behind: the test's cgroup parent %s: %v", opts.CgroupParent, err)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	return b
}

// stateRoot is a directory below the data path, shared by a test's
// backends.
func stateRoot(t testing.TB) string {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}

// leftovers lists the containers and active snapshots in namespace ns.
func leftovers(t testing.TB, ns string) string {
	t.Helper()
	b, err := New(Options{Namespace: ns, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Destroy(context.Background())
	ctx := b.WithNamespace(context.Background())
	client, err := b.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ctrs, err := client.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ctrs {
		out = append(out, "container "+c.ID())
	}
	tasks, err := client.TaskService().List(ctx, nil)
	if err == nil {
		for _, tk := range tasks.Tasks {
			out = append(out, "task "+tk.ID)
		}
	}
	_ = client.SnapshotService(b.opts.Snapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind != snapshots.KindCommitted {
			out = append(out, "snapshot "+info.Name)
		}
		return nil
	})
	return strings.Join(out, ", ")
}

// testWriter sends log output to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var instSeq atomic.Int64

func instanceID() string { return fmt.Sprintf("i%d-%d", os.Getpid(), instSeq.Add(1)) }

func spec(t testing.TB, runtimeName, handler string, mod ...func(*function.Spec)) *function.Spec {
	t.Helper()
	s := function.Defaults(function.Baseline{})
	s.Name, s.Runtime, s.Handler, s.ExecutionMode = "fn", runtimeName, handler, function.ModeContainer
	for _, f := range mod {
		f(&s)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return &s
}

// codeDir writes files into a fresh directory readable by container uids.
func codeDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func timeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
