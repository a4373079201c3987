// Package testenv gates tests on the real components they need (root,
// cgroups, an interpreter, a kernel feature) and holds the small helpers
// those tests share. A test never mocks a component that can run here: it
// runs against the real one, and when that is missing it skips with the
// reason on a developer's machine, but fails under CI=true, where every
// component is installed and a skip would hide a broken setup.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
)

// Missing reports that a component the test needs is absent: t.Fatal under
// CI=true, t.Skip otherwise. The message should say what to install or run.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: a missing component fails the test)", msg)
		return
	}
	t.Skip(msg)
}

// RequireRoot gates a test that creates namespaces, cgroups or mounts.
func RequireRoot(t testing.TB) {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		Missing(t, "needs root for namespaces, cgroups and mounts (runs as uid %d; use sudo ./test.sh)", uid)
	}
}

// RequireCgroups gates a test on root and a cgroup v2 or v1 memory
// hierarchy under /sys/fs/cgroup.
func RequireCgroups(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if !Exists("/sys/fs/cgroup/cgroup.controllers") && !Exists("/sys/fs/cgroup/memory/cgroup.procs") {
		Missing(t, "no cgroup v2 and no cgroup v1 memory hierarchy under /sys/fs/cgroup")
	}
}

// RequireFile gates a test on a program, naming the Debian package that
// provides it.
func RequireFile(t testing.TB, path, pkg string) {
	t.Helper()
	if !Exists(path) {
		Missing(t, "%s is missing (apt-get install %s, or run scripts/setup.sh)", path, pkg)
	}
}

// Exists reports whether path exists.
func Exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Buffer is a bytes.Buffer safe for concurrent use: the output of a child
// process written from one goroutine and read by the test from another.
type Buffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
