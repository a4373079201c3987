package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// DefaultRoot is where the kernel's cgroup filesystems are mounted.
const DefaultRoot = "/sys/fs/cgroup"

// DefaultName is the parent group wisp creates its sandbox groups under.
const DefaultName = "wisp"

// CPUPeriod is the CFS period CPU quotas are expressed over.
const CPUPeriod = 100 * time.Millisecond

// Version is the cgroup hierarchy version in use.
type Version int

// Cgroup versions.
const (
	V1 Version = 1 // one hierarchy per controller (legacy, or hybrid hosts)
	V2 Version = 2 // the unified hierarchy
)

func (v Version) String() string { return "v" + strconv.Itoa(int(v)) }

// v1 controllers wisp uses. memory is required; the others are used when
// mounted.
var v1Controllers = []string{"memory", "cpu", "cpuacct", "pids", "freezer"}

// v2 controllers wisp enables for its groups. memory is required.
var v2Controllers = []string{"memory", "cpu", "pids"}

// Limits are the resource caps of one group. A zero field means no limit.
type Limits struct {
	MemoryBytes int64 // RAM in bytes; swap is disabled where possible
	MilliCPU    int64 // CPU in thousandths of a core (500 = half a core)
	Pids        int64 // maximum number of processes and threads
}

// Usage is a group's resource use since it was created.
type Usage struct {
	CPUTime     time.Duration // user + system CPU time
	MemoryBytes int64         // current memory use
	MemoryPeak  int64         // high-water mark
	OOMKills    int           // processes the OOM killer killed in the group
}

// Manager creates and removes sandbox groups below one parent group. It is
// safe for concurrent use: it holds no mutable state of its own.
type Manager struct {
	root    string
	name    string
	version Version
	// v1: controller name → its hierarchy's mount directory (symlinks
	// resolved, so co-mounted controllers such as cpu,cpuacct share one).
	hier map[string]string
	ops  fsOps
}

// fsOps are the two directory operations whose behaviour differs between
// cgroupfs and an ordinary directory tree: on cgroupfs mkdir creates the
// interface files and rmdir removes a directory full of them. Tests replace
// them to simulate the kernel.
type fsOps struct {
	mkdir func(dir string) error
	rmdir func(dir string) error
}

var kernelOps = fsOps{
	mkdir: func(dir string) error { return os.Mkdir(dir, 0o755) },
	rmdir: func(dir string) error { return syscall.Rmdir(dir) },
}

// New detects the cgroup version of this machine and creates the parent
// group name ("wisp" when empty; a relative path such as "system.slice/wisp"
// nests it) in every hierarchy wisp uses.
func New(name string) (*Manager, error) {
	return newManager(DefaultRoot, name, kernelOps)
}

func newManager(root, name string, ops fsOps) (*Manager, error) {
	if name == "" {
		name = DefaultName
	}
	if err := validName(name, true); err != nil {
		return nil, err
	}
	m := &Manager{root: root, name: name, ops: ops}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		m.version = V2
		if err := m.initV2(); err != nil {
			return nil, err
		}
		return m, nil
	}
	m.version = V1
	if err := m.initV1(); err != nil {
		return nil, err
	}
	return m, nil
}

func validName(name string, nested bool) error {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == "." ||
		strings.HasPrefix(name, "../") || name == ".." || (!nested && strings.Contains(name, "/")) {
		return errdefs.Invalidf("use letters, digits, '-' and '_'", "cgroup name %q is not a plain relative name", name)
	}
	return nil
}

func (m *Manager) initV2() error {
	avail, err := os.ReadFile(filepath.Join(m.root, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	if have := strings.Fields(string(avail)); !slices.Contains(have, "memory") {
		return errdefs.New(errdefs.ErrUnavailable,
			"boot with the memory controller enabled (remove cgroup_disable=memory from the kernel command line)",
			"cgroup v2 at %s has no memory controller (available: %q)", m.root, have)
	}
	// Walk down from the hierarchy root: each level enables the controllers
	// for its children, then the next level is created.
	dir := m.root
	for _, part := range strings.Split(m.name, "/") {
		if err := enableControllers(dir); err != nil {
			return err
		}
		dir = filepath.Join(dir, part)
		if err := m.ops.mkdir(dir); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
	}
	return enableControllers(dir)
}

// enableControllers writes "+memory +cpu +pids" (those dir has and has not
// enabled yet) to dir's cgroup.subtree_control. When the kernel refuses the
// set, it retries one by one: only memory is required; Create reports a
// missing cpu or pids controller when a limit needs it.
func enableControllers(dir string) error {
	avail, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("enable cgroup controllers in %s: %w", dir, err)
	}
	file := filepath.Join(dir, "cgroup.subtree_control")
	cur, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("enable cgroup controllers in %s: %w", dir, err)
	}
	enabled := strings.Fields(string(cur))
	var want []string
	for _, c := range v2Controllers {
		if !slices.Contains(enabled, c) && slices.Contains(strings.Fields(string(avail)), c) {
			want = append(want, "+"+c)
		}
	}
	if len(want) == 0 || writeFile(file, strings.Join(want, " ")) == nil {
		return nil
	}
	for _, c := range want {
		err := writeFile(file, c)
		if err == nil || c != "+memory" {
			continue
		}
		if errors.Is(err, syscall.EBUSY) {
			return errdefs.New(errdefs.ErrUnavailable,
				"processes live in this cgroup, so it cannot delegate controllers (the no-internal-processes rule); "+
					"move them to a leaf first, e.g. mkdir "+filepath.Join(dir, "init")+" and write each pid of "+
					filepath.Join(dir, "cgroup.procs")+" to its cgroup.procs, as docker-in-docker does",
				"enable the memory controller in %s: %v", dir, err)
		}
		return fmt.Errorf("enable the memory controller in %s: %w", dir, err)
	}
	return nil
}

func (m *Manager) initV1() error {
	m.hier = make(map[string]string)
	for _, c := range v1Controllers {
		dir, err := filepath.EvalSymlinks(filepath.Join(m.root, c))
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
			continue
		}
		m.hier[c] = dir
	}
	if m.hier["memory"] == "" {
		return errdefs.New(errdefs.ErrUnavailable,
			"mount the memory controller (mount -t cgroup -o memory cgroup /sys/fs/cgroup/memory) or boot with cgroup v2",
			"no cgroup v2 at %s and no cgroup v1 memory hierarchy at %s", m.root, filepath.Join(m.root, "memory"))
	}
	for _, dir := range m.hierarchies() {
		p := dir
		for _, part := range strings.Split(m.name, "/") {
			p = filepath.Join(p, part)
			if err := m.ops.mkdir(p); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("create cgroup %s: %w", p, err)
			}
		}
	}
	return nil
}

// hierarchies returns the distinct v1 hierarchy mount directories in use.
func (m *Manager) hierarchies() []string {
	var dirs []string
	for _, c := range v1Controllers {
		if d := m.hier[c]; d != "" && !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// Version reports whether this machine uses cgroup v1 or v2.
func (m *Manager) Version() Version { return m.version }

// Name returns the parent group's name.
func (m *Manager) Name() string { return m.name }

// Controllers lists the controllers sandbox groups get.
func (m *Manager) Controllers() []string {
	if m.version == V2 {
		data, err := os.ReadFile(filepath.Join(m.root, m.name, "cgroup.subtree_control"))
		if err != nil {
			return nil
		}
		return strings.Fields(string(data))
	}
	var cs []string
	for _, c := range v1Controllers {
		if m.hier[c] != "" {
			cs = append(cs, c)
		}
	}
	return cs
}

// Create makes the group for sandbox id and applies its limits. It fails
// with errdefs.ErrConflict when the group already exists.
func (m *Manager) Create(id string, lim Limits) (*Group, error) {
	if err := validName(id, false); err != nil {
		return nil, err
	}
	g := m.group(id)
	var made []string
	for _, dir := range g.dirs() {
		if err := m.ops.mkdir(dir); err != nil {
			for _, d := range made {
				_ = m.ops.rmdir(d)
			}
			if errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("create cgroup %s: %w", dir, errdefs.ErrConflict)
			}
			return nil, fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		made = append(made, dir)
	}
	var err error
	if m.version == V2 {
		err = g.limitV2(lim)
	} else {
		err = g.limitV1(lim)
	}
	if err != nil {
		_ = g.Remove()
		return nil, fmt.Errorf("limit cgroup %s: %w", id, err)
	}
	return g, nil
}

// Open returns the existing group of sandbox id without changing it (used
// to reach groups an earlier run created).
func (m *Manager) Open(id string) (*Group, error) {
	if err := validName(id, false); err != nil {
		return nil, err
	}
	g := m.group(id)
	for _, dir := range g.dirs() {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("open cgroup %s: %w", id, err)
		}
	}
	return g, nil
}

// List returns the ids of the groups below the parent group.
func (m *Manager) List() ([]string, error) {
	var parents []string
	if m.version == V2 {
		parents = []string{filepath.Join(m.root, m.name)}
	} else {
		for _, h := range m.hierarchies() {
			parents = append(parents, filepath.Join(h, m.name))
		}
	}
	var ids []string
	for _, p := range parents {
		entries, err := os.ReadDir(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("list cgroups in %s: %w", p, err)
		}
		for _, e := range entries {
			if e.IsDir() && !slices.Contains(ids, e.Name()) {
				ids = append(ids, e.Name())
			}
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Cleanup kills the processes of every group below the parent group and
// removes the groups: what a crashed run left behind. Call it at startup,
// before creating groups.
func (m *Manager) Cleanup() error {
	ids, err := m.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		g := m.group(id)
		if err := g.Kill(); err != nil {
			errs = append(errs, err)
		}
		if err := g.Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) group(id string) *Group {
	g := &Group{m: m, id: id}
	if m.version == V2 {
		g.dir = filepath.Join(m.root, m.name, id)
		return g
	}
	g.v1 = make(map[string]string, len(m.hier))
	for c, h := range m.hier {
		g.v1[c] = filepath.Join(h, m.name, id)
	}
	return g
}

// Group is one sandbox's control group. Its methods may be called from any
// goroutine.
type Group struct {
	m   *Manager
	id  string
	dir string            // v2
	v1  map[string]string // v1: controller → directory
}

// ID returns the sandbox id the group was created for.
func (g *Group) ID() string { return g.id }

// Dir returns the group's directory: on v1, the one in the memory hierarchy.
func (g *Group) Dir() string {
	if g.m.version == V2 {
		return g.dir
	}
	return g.v1["memory"]
}

// dirs returns the group's distinct directories, one per hierarchy.
func (g *Group) dirs() []string {
	if g.m.version == V2 {
		return []string{g.dir}
	}
	var ds []string
	for _, h := range g.m.hierarchies() {
		ds = append(ds, filepath.Join(h, g.m.name, g.id))
	}
	return ds
}

// FD opens the group's directory for clone3's CLONE_INTO_CGROUP
// (syscall.SysProcAttr.UseCgroupFD and CgroupFD), which places a child in
// the group atomically at creation. The caller closes the file once the
// child has started. On v1 it fails with errors.ErrUnsupported: use AddProc.
func (g *Group) FD() (*os.File, error) {
	if g.m.version != V2 {
		return nil, fmt.Errorf("cgroup %s: clone into a cgroup needs cgroup v2: %w", g.id, errors.ErrUnsupported)
	}
	f, err := os.OpenFile(g.dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", g.id, err)
	}
	return f, nil
}

// ProcsFiles opens the group's cgroup.procs files for writing, one per
// hierarchy, so that a process given them can move itself into the group
// (by writing "0") before it runs anything it should be limited in. The
// caller closes them.
func (g *Group) ProcsFiles() ([]*os.File, error) {
	var out []*os.File
	for _, dir := range g.dirs() {
		f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY, 0)
		if err != nil {
			for _, o := range out {
				_ = o.Close()
			}
			return nil, fmt.Errorf("cgroup %s: %w", g.id, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// AddProc moves process pid (all its threads) into the group.
func (g *Group) AddProc(pid int) error {
	for _, dir := range g.dirs() {
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("add pid %d to cgroup %s: %w", pid, g.id, err)
		}
	}
	return nil
}

// Procs lists the processes in the group (on v1, in any of its hierarchies).
func (g *Group) Procs() ([]int, error) {
	var pids []int
	for _, dir := range g.dirs() {
		ps, err := readPids(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			return nil, fmt.Errorf("list processes of cgroup %s: %w", g.id, err)
		}
		for _, p := range ps {
			if !slices.Contains(pids, p) {
				pids = append(pids, p)
			}
		}
	}
	return pids, nil
}

// Usage reads the group's resource use.
func (g *Group) Usage() (Usage, error) {
	var (
		u   Usage
		err error
	)
	if g.m.version == V2 {
		u, err = g.usageV2()
	} else {
		u, err = g.usageV1()
	}
	if err != nil {
		return u, fmt.Errorf("read usage of cgroup %s: %w", g.id, err)
	}
	return u, nil
}

// killTimeout bounds how long Kill waits for the group to empty.
const killTimeout = 5 * time.Second

// Kill sends SIGKILL to every process in the group and waits until the
// group is empty. On v2 it uses cgroup.kill (kernel 5.14+), which cannot
// race with forks; otherwise it freezes the group first (when a freezer is
// available) so that a fork bomb cannot outrun the kill loop.
func (g *Group) Kill() error {
	if g.m.version == V2 {
		if err := writeFile(filepath.Join(g.dir, "cgroup.kill"), "1"); err == nil {
			return g.waitEmpty(killTimeout)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("kill cgroup %s: %w", g.id, err)
		}
	}
	deadline := time.Now().Add(killTimeout)
	for {
		pids, err := g.Procs()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // already removed
			}
			return fmt.Errorf("kill cgroup %s: %w", g.id, err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: %d processes still alive after %s", g.id, len(pids), killTimeout)
		}
		thaw := g.freeze()
		if thaw != nil {
			// Re-read under the freeze: nothing can fork now.
			if ps, err := g.Procs(); err == nil {
				pids = ps
			}
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if thaw != nil {
			thaw() // a frozen process dies only once thawed
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// freeze stops every process in the group and returns a function that
// thaws it, or nil when no freezer is available.
func (g *Group) freeze() func() {
	var file, frozen, thawed string
	if g.m.version == V2 {
		file, frozen, thawed = filepath.Join(g.dir, "cgroup.freeze"), "1", "0"
	} else if d := g.v1["freezer"]; d != "" {
		file, frozen, thawed = filepath.Join(d, "freezer.state"), "FROZEN", "THAWED"
	} else {
		return nil
	}
	if err := writeFile(file, frozen); err != nil {
		return nil
	}
	if g.m.version == V1 {
		// FREEZING becomes FROZEN once every task has stopped.
		for i := 0; i < 50; i++ {
			b, err := os.ReadFile(file)
			if err != nil || strings.TrimSpace(string(b)) == "FROZEN" {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	return func() { _ = writeFile(file, thawed) }
}

func (g *Group) waitEmpty(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := g.Procs()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("kill cgroup %s: %w", g.id, err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: %d processes still alive after %s", g.id, len(pids), timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// removeTimeout bounds how long Remove retries while processes exit.
const removeTimeout = 2 * time.Second

// Remove deletes the group. It fails while processes are in the group (kill
// them first) and retries for a short while when the group is empty but
// still busy (dying processes leave it asynchronously). Removing a group that does not exist is not an
// error.
func (g *Group) Remove() error {
	var errs []error
	for _, dir := range g.dirs() {
		deadline := time.Now().Add(removeTimeout)
		for {
			err := g.m.ops.rmdir(dir)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				break
			}
			if errors.Is(err, syscall.EBUSY) && time.Now().Before(deadline) && g.empty(dir) {
				time.Sleep(2 * time.Millisecond)
				continue
			}
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
			break
		}
	}
	return errors.Join(errs...)
}

// empty reports whether no process is listed in dir: a busy directory with
// no processes is one whose last processes are still exiting.
func (g *Group) empty(dir string) bool {
	pids, err := readPids(filepath.Join(dir, "cgroup.procs"))
	return err == nil && len(pids) == 0
}

// writeFile writes one value to a cgroup interface file. It never creates
// files: cgroupfs does not allow it, and a typo must not go unnoticed.
func writeFile(file, value string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return fmt.Errorf("write %q to %s: %w", value, file, err)
	}
	return f.Close()
}

func exists(file string) bool {
	_, err := os.Stat(file)
	return err == nil
}

func readInt(file string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", file, err)
	}
	return n, nil
}

// readKey returns the value of "key N" in a flat-keyed file (cpu.stat,
// memory.events, memory.oom_control) and whether the key was there.
func readKey(file, key string) (int64, bool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("parse %s: %s: %w", file, key, err)
		}
		return n, true, nil
	}
	return 0, false, nil
}

func readPids(file string) ([]int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", file, err)
		}
		pids = append(pids, p)
	}
	return pids, nil
}

// Destroy kills and removes every group below the parent group, then the
// parent group itself (and the levels of a nested name that are empty). Use
// it when the parent group was private to one run, as in tests.
func (m *Manager) Destroy() error {
	if err := m.Cleanup(); err != nil {
		return err
	}
	var tops []string
	if m.version == V2 {
		tops = []string{m.root}
	} else {
		tops = m.hierarchies()
	}
	var errs []error
	for _, top := range tops {
		parts := strings.Split(m.name, "/")
		for i := len(parts); i > 0; i-- {
			dir := filepath.Join(append([]string{top}, parts[:i]...)...)
			if err := m.ops.rmdir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
				if i == len(parts) {
					errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
				}
				break // a shared ancestor still in use is not ours to remove
			}
		}
	}
	return errors.Join(errs...)
}

// SetLimits changes a live group's limits, as when a pre-provisioned
// sandbox is claimed by a function. Zero fields are left as they are; a
// memory limit below the group's current use fails.
func (g *Group) SetLimits(lim Limits) error {
	var err error
	if g.m.version == V2 {
		err = g.limitV2(lim)
	} else {
		err = g.limitV1(lim)
	}
	if err != nil {
		return fmt.Errorf("limit cgroup %s: %w", g.id, err)
	}
	return nil
}
