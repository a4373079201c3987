package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wisp-faas/wisp/internal/sandbox/cgroup"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// childEnv selects a helper role for the re-executed test binary (see
// TestOrphansDieWithTheirParent).
const childEnv = "WISP_PROCESS_TEST_CHILD"

func TestMain(m *testing.M) {
	MaybeRunInit()
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChildRole(role))
	}
	goleak.VerifyTestMain(m)
}

var cgroupSeq atomic.Int64

// testCgroupName returns a parent cgroup name private to one test.
func testCgroupName() string {
	return fmt.Sprintf("wisp-test-%d-%d", os.Getpid(), cgroupSeq.Add(1))
}

// testCgroups returns a cgroup manager whose parent group is private to the
// test and removed (with anything left in it) when the test ends.
func testCgroups(t testing.TB) *cgroup.Manager {
	t.Helper()
	testenv.RequireCgroups(t)
	m, err := cgroup.New(testCgroupName())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(); err != nil {
			t.Errorf("destroy test cgroups: %v", err)
		}
	})
	return m
}

var uidSeq atomic.Int64

// testUID returns a uid no other sandbox of this test binary uses.
func testUID() int { return 250000 + int(uidSeq.Add(1)) }

// codeDir writes files into a fresh directory readable by sandbox uids.
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

// strictConfig returns a strict sandbox configuration running argv.
func strictConfig(t testing.TB, cg *cgroup.Manager, argv ...string) SpawnConfig {
	uid := testUID()
	return SpawnConfig{
		ID:      fmt.Sprintf("t%d", uid),
		Argv:    argv,
		Cgroups: cg,
		UID:     uid,
		GID:     uid,
		Seccomp: true,
		TmpSize: 8 << 20,
		Limits:  cgroup.Limits{MemoryBytes: 128 << 20, MilliCPU: 1000, Pids: 64},
	}
}

// result is how a sandbox ended and what it wrote.
type result struct {
	stdout, stderr string
	err            error // Wait's
	sb             *Sandbox
}

// run spawns cfg, waits for it to exit (at most a minute), closes it and
// returns its output.
func run(t testing.TB, cfg SpawnConfig) result {
	t.Helper()
	var stdout, stderr testenv.Buffer
	cfg.Stdout, cfg.Stderr = &stdout, &stderr
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sb, err := Spawn(ctx, cfg)
	if err != nil {
		t.Fatalf("spawn: %v", err)
	}
	defer func() {
		if err := sb.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	select {
	case <-sb.Exited():
	case <-ctx.Done():
		t.Fatalf("sandbox still running after a minute; stdout %q stderr %q", stdout.String(), stderr.String())
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), err: sb.Wait(), sb: sb}
}

// sh runs a shell script in a strict sandbox.
func sh(t testing.TB, script string, mod ...func(*SpawnConfig)) result {
	t.Helper()
	cfg := strictConfig(t, testCgroups(t), "/bin/sh", "-c", script)
	for _, f := range mod {
		f(&cfg)
	}
	return run(t, cfg)
}

// lines returns the non-empty lines of s, trimmed.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
