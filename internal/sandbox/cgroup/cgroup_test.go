package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeFiles are the interface files the fake kernel creates in every new
// directory, with the kernel's initial contents.
var fakeFiles = map[Version]map[string]string{
	V2: {
		"cgroup.controllers":     "cpu memory pids",
		"cgroup.subtree_control": "",
		"cgroup.procs":           "",
		"cgroup.kill":            "",
		"cgroup.freeze":          "0",
		"memory.max":             "max",
		"memory.swap.max":        "max",
		"memory.current":         "0",
		"memory.peak":            "0",
		"memory.events":          "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
		"cpu.max":                "max 100000",
		"cpu.stat":               "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
		"pids.max":               "max",
	},
	V1: {
		"cgroup.procs":                "",
		"memory.limit_in_bytes":       "9223372036854771712",
		"memory.memsw.limit_in_bytes": "9223372036854771712",
		"memory.swappiness":           "60",
		"memory.usage_in_bytes":       "0",
		"memory.max_usage_in_bytes":   "0",
		"memory.oom_control":          "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
		"memory.failcnt":              "0",
		"cpu.cfs_period_us":           "100000",
		"cpu.cfs_quota_us":            "-1",
		"cpuacct.usage":               "0",
		"pids.max":                    "max",
		"freezer.state":               "THAWED",
	},
}

// fakeKernel returns a directory tree laid out like /sys/fs/cgroup of the
// given version and the mkdir/rmdir that make it behave like cgroupfs:
// mkdir populates interface files, rmdir refuses while cgroup.procs lists a
// process.
func fakeKernel(t *testing.T, v Version) (string, fsOps) {
	t.Helper()
	root := t.TempDir()
	populate := func(dir string) error {
		for name, content := range fakeFiles[v] {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	ops := fsOps{
		mkdir: func(dir string) error {
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			return populate(dir)
		},
		rmdir: func(dir string) error {
			b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(b)) != "" {
				return &os.PathError{Op: "rmdir", Path: dir, Err: syscall.EBUSY}
			}
			return os.RemoveAll(dir)
		},
	}
	switch v {
	case V2:
		if err := populate(root); err != nil {
			t.Fatal(err)
		}
	case V1:
		// cpu and cpuacct co-mounted, as systemd does it.
		for _, h := range []string{"memory", "cpu,cpuacct", "pids", "freezer"} {
			if err := ops.mkdir(filepath.Join(root, h)); err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range []string{"cpu", "cpuacct"} {
			if err := os.Symlink("cpu,cpuacct", filepath.Join(root, l)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root, ops
}

func read(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestNewV2EnablesControllers(t *testing.T) {
	for _, name := range []string{"", "wisp", "system.slice/wisp"} {
		t.Run(name, func(t *testing.T) {
			root, ops := fakeKernel(t, V2)
			m, err := newManager(root, name, ops)
			if err != nil {
				t.Fatal(err)
			}
			if m.Version() != V2 {
				t.Fatalf("version = %v, want v2", m.Version())
			}
			if name == "" {
				name = DefaultName
			}
			// Every level from the root to the parent group delegates.
			dir := root
			for _, part := range append(strings.Split(name, "/"), "") {
				if got := read(t, filepath.Join(dir, "cgroup.subtree_control")); got != "+memory +cpu +pids" {
					t.Errorf("%s/cgroup.subtree_control = %q, want +memory +cpu +pids", dir, got)
				}
				dir = filepath.Join(dir, part)
			}
			// A second New over the same tree is fine (restart).
			if _, err := newManager(root, name, ops); err != nil {
				t.Fatalf("second New: %v", err)
			}
		})
	}
}

func TestNewV2WithoutMemoryController(t *testing.T) {
	root, ops := fakeKernel(t, V2)
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu pids"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := newManager(root, "wisp", ops)
	if !errors.Is(err, errdefs.ErrUnavailable) || errdefs.Hint(err) == "" {
		t.Fatalf("err = %v, want ErrUnavailable with a hint", err)
	}
}

func TestNewV1WithoutMemory(t *testing.T) {
	_, err := newManager(t.TempDir(), "wisp", kernelOps)
	if !errors.Is(err, errdefs.ErrUnavailable) || errdefs.Hint(err) == "" {
		t.Fatalf("err = %v, want ErrUnavailable with a hint", err)
	}
}

func TestInvalidNames(t *testing.T) {
	root, ops := fakeKernel(t, V2)
	for _, name := range []string{"/abs", "../up", "a/../b", ".", "a//b"} {
		if _, err := newManager(root, name, ops); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("New(%q) err = %v, want ErrInvalid", name, err)
		}
	}
	m, err := newManager(root, "wisp", ops)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "a/b", "..", "."} {
		if _, err := m.Create(id, Limits{}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Create(%q) err = %v, want ErrInvalid", id, err)
		}
	}
}

func TestCreateLimits(t *testing.T) {
	tests := []struct {
		name string
		lim  Limits
		v2   map[string]string // file → content after Create
		v1   map[string]string // "hierarchy/file" → content
	}{
		{
			name: "all",
			lim:  Limits{MemoryBytes: 64 << 20, MilliCPU: 500, Pids: 32},
			v2:   map[string]string{"memory.max": "67108864", "memory.swap.max": "0", "cpu.max": "50000 100000", "pids.max": "32"},
			v1: map[string]string{
				"memory/memory.limit_in_bytes": "67108864", "memory/memory.memsw.limit_in_bytes": "67108864",
				"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000", "pids/pids.max": "32",
			},
		},
		{
			name: "two cores",
			lim:  Limits{MilliCPU: 2000},
			v2:   map[string]string{"memory.max": "max", "memory.swap.max": "max", "cpu.max": "200000 100000", "pids.max": "max"},
			v1:   map[string]string{"cpu/cpu.cfs_quota_us": "200000", "memory/memory.limit_in_bytes": "9223372036854771712"},
		},
		{
			name: "tiny cpu is clamped to the kernel minimum",
			lim:  Limits{MilliCPU: 1},
			v2:   map[string]string{"cpu.max": "1000 100000"},
			v1:   map[string]string{"cpu/cpu.cfs_quota_us": "1000"},
		},
		{
			name: "no limits",
			lim:  Limits{},
			v2:   map[string]string{"memory.max": "max", "cpu.max": "max 100000", "pids.max": "max"},
			v1:   map[string]string{"pids/pids.max": "max", "cpu/cpu.cfs_quota_us": "-1"},
		},
	}
	for _, v := range []Version{V2, V1} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%v/%s", v, tc.name), func(t *testing.T) {
				root, ops := fakeKernel(t, v)
				m, err := newManager(root, "wisp", ops)
				if err != nil {
					t.Fatal(err)
				}
				g, err := m.Create("abc", tc.lim)
				if err != nil {
					t.Fatal(err)
				}
				want, base := tc.v2, filepath.Join(root, "wisp", "abc")
				if v == V1 {
					want = tc.v1
				}
				for file, content := range want {
					p := filepath.Join(base, file)
					if v == V1 {
						h, f, _ := strings.Cut(file, "/")
						p = filepath.Join(root, h, "wisp", "abc", f)
					}
					if got := read(t, p); got != content {
						t.Errorf("%s = %q, want %q", file, got, content)
					}
				}
				if _, err := m.Create("abc", tc.lim); !errors.Is(err, errdefs.ErrConflict) {
					t.Errorf("second Create err = %v, want ErrConflict", err)
				}
				if err := g.Remove(); err != nil {
					t.Fatal(err)
				}
				if ids, _ := m.List(); len(ids) != 0 {
					t.Errorf("after Remove, List = %v", ids)
				}
			})
		}
	}
}

func TestV1CoMountedHierarchiesShareADirectory(t *testing.T) {
	root, ops := fakeKernel(t, V1)
	m, err := newManager(root, "wisp", ops)
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Create("x", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(g.dirs()), 4; got != want { // memory, cpu,cpuacct, pids, freezer
		t.Fatalf("dirs = %v, want %d", g.dirs(), want)
	}
	if err := g.AddProc(1234); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"memory", "cpu,cpuacct", "pids", "freezer"} {
		if got := read(t, filepath.Join(root, h, "wisp", "x", "cgroup.procs")); got != "1234" {
			t.Errorf("%s cgroup.procs = %q", h, got)
		}
	}
	if _, err := g.FD(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("FD on v1: err = %v, want ErrUnsupported", err)
	}
}

func TestUsageParse(t *testing.T) {
	tests := []struct {
		v     Version
		files map[string]string
		want  Usage
	}{
		{
			v: V2,
			files: map[string]string{
				"cpu.stat":       "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
				"memory.current": "4096\n", "memory.peak": "8192\n",
				"memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n",
			},
			want: Usage{CPUTime: 1500 * time.Microsecond, MemoryBytes: 4096, MemoryPeak: 8192, OOMKills: 2},
		},
		{
			v: V1,
			files: map[string]string{
				"cpu,cpuacct/cpuacct.usage":        "2000000\n",
				"memory/memory.usage_in_bytes":     "4096\n",
				"memory/memory.max_usage_in_bytes": "8192\n",
				"memory/memory.oom_control":        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
			},
			want: Usage{CPUTime: 2 * time.Millisecond, MemoryBytes: 4096, MemoryPeak: 8192, OOMKills: 1},
		},
		{
			v: V1, // before Linux 4.13: no oom_kill line, failcnt instead
			files: map[string]string{
				"memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n",
				"memory/memory.failcnt":     "7\n",
			},
			want: Usage{OOMKills: 7},
		},
	}
	for _, tc := range tests {
		t.Run(tc.v.String(), func(t *testing.T) {
			root, ops := fakeKernel(t, tc.v)
			m, err := newManager(root, "wisp", ops)
			if err != nil {
				t.Fatal(err)
			}
			g, err := m.Create("u", Limits{})
			if err != nil {
				t.Fatal(err)
			}
			for file, content := range tc.files {
				p := filepath.Join(root, "wisp", "u", file)
				if tc.v == V1 {
					h, f, _ := strings.Cut(file, "/")
					p = filepath.Join(root, h, "wisp", "u", f)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := g.Usage()
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Usage = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestV2KillAndCleanup(t *testing.T) {
	root, ops := fakeKernel(t, V2)
	m, err := newManager(root, "wisp", ops)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := m.Create(id, Limits{}); err != nil {
			t.Fatal(err)
		}
	}
	g, _ := m.Open("a")
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "wisp", "a", "cgroup.kill")); got != "1" {
		t.Errorf("cgroup.kill = %q, want 1", got)
	}
	f, err := g.FD()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := m.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if ids, _ := m.List(); len(ids) != 0 {
		t.Errorf("after Cleanup, List = %v", ids)
	}
	if err := m.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "wisp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("parent group survived Destroy: %v", err)
	}
}

// requireCgroups gates a test on a real cgroup filesystem it can write.
func requireCgroups(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	if !testenv.Exists(DefaultRoot) {
		testenv.Missing(t, "no cgroup filesystem at %s", DefaultRoot)
	}
}

// testManager returns a manager with a parent group private to this test.
func testManager(t *testing.T) *Manager {
	t.Helper()
	requireCgroups(t)
	m, err := New(fmt.Sprintf("wisp-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(); err != nil {
			t.Errorf("destroy: %v", err)
		}
	})
	return m
}

// startSleeper starts a long sleep and returns it with a function that
// waits for it to end and returns its Wait error.
func startSleeper(t *testing.T) (*exec.Cmd, func() error) {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var werr error
	go func() { werr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return cmd, func() error { <-done; return werr }
}

func TestRealGroupLifecycle(t *testing.T) {
	m := testManager(t)
	lim := Limits{MemoryBytes: 64 << 20, MilliCPU: 250, Pids: 16}
	g, err := m.Create("life", lim)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel took the limits.
	var checks map[string]string
	if m.Version() == V2 {
		checks = map[string]string{
			filepath.Join(g.dir, "memory.max"): "67108864",
			filepath.Join(g.dir, "cpu.max"):    "25000 100000",
			filepath.Join(g.dir, "pids.max"):   "16",
		}
	} else {
		checks = map[string]string{
			filepath.Join(g.v1["memory"], "memory.limit_in_bytes"): "67108864",
			filepath.Join(g.v1["cpu"], "cpu.cfs_quota_us"):         "25000",
			filepath.Join(g.v1["cpu"], "cpu.cfs_period_us"):        "100000",
			filepath.Join(g.v1["pids"], "pids.max"):                "16",
		}
	}
	for file, want := range checks {
		if got := read(t, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}

	cmd, wait := startSleeper(t)
	if err := g.AddProc(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	pids, err := g.Procs()
	if err != nil || !slices.Contains(pids, cmd.Process.Pid) {
		t.Fatalf("Procs = %v, %v; want %d", pids, err, cmd.Process.Pid)
	}
	if err := g.Remove(); err == nil {
		t.Fatal("Remove succeeded with a live process in the group")
	}
	u, err := g.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.OOMKills != 0 {
		t.Errorf("OOMKills = %d", u.OOMKills)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	err = wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("sleeper ended with %v, want SIGKILL", err)
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, d := range g.dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived Remove", d)
		}
	}
	if err := g.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestRealCleanupRemovesOrphans(t *testing.T) {
	m := testManager(t)
	cmd, wait := startSleeper(t)
	g, err := m.Create("orphan", Limits{MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.AddProc(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// A new run finds the group by name alone.
	m2, err := New(m.Name())
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := m2.List(); !slices.Equal(ids, []string{"orphan"}) {
		t.Fatalf("List = %v, want [orphan]", ids)
	}
	if err := m2.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if ids, _ := m2.List(); len(ids) != 0 {
		t.Errorf("after Cleanup, List = %v", ids)
	}
	ended := make(chan struct{})
	go func() { _ = wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("orphaned process survived Cleanup")
	}
}
