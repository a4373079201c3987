package process

// Zygotes: Python cold starts forked from a pre-initialised interpreter.
//
// A cold start made on demand spends most of its time before the function
// matters: the sandbox init (re-executing the wisp binary, mounts,
// pivot_root), then the interpreter's start and the host's imports. A
// zygote (as in SOCK and OpenLambda) does all of that that can be shared
// once per Python runtime, and forks a child for each cold start:
//
//   - the zygote is a sandbox made by Spawn with only a mount namespace
//     and keepRoot: the init assembles the read-only root (/usr, /lib*,
//     /etc, /dev, /wisp) and execs python3 zygote.py as root, with every
//     capability. zygote.py imports host.py and the modules it uses, loads
//     libc through ctypes, receives the seccomp filters and waits on a
//     control socket (SOCK_SEQPACKET) at its fd 3.
//   - a cold start (startFromZygote) makes the instance's cgroup with the
//     function's limits, takes a uid from the pool, makes the channel and
//     log pipes and a detached read-only clone of the function's code
//     (open_tree), with the cgroup (its directory on v2, its cgroup.procs
//     files on v1), and sends them to the zygote (SCM_RIGHTS), followed at
//     once by the load frame on the request pipe. The zygote clones the
//     child with new PID, mount, IPC, UTS and network namespaces in the
//     same system call (clone3 with CLONE_INTO_CGROUP on v2: the child is
//     born in its cgroup) and answers with its pid.
//   - the child (still root) joins its cgroup first if it was not born in
//     it (v1: it writes "0" to each cgroup.procs it was given), mounts the
//     code at /code, a fresh /proc, its own /tmp and /dev/shm, sets its
//     hostname, brings lo up, clears its capability bounding set, switches
//     to the uid, sets no_new_privs, installs the same seccomp filters as
//     the sandbox init, and only then reads the load frame (host.py's
//     await_load): the function's code never runs outside its cgroup or
//     sandbox, and no round trip to the worker is on the cold start's path.
//   - the zygote reaps its children and reports each exit status, which
//     the instance's Sandbox uses as its own (Reason, Exited). Children die
//     with the zygote (parent-death signal), and a zygote that dies is
//     rebuilt in the background; cold starts meanwhile take the ordinary
//     path.
//
// Nothing writable is shared: each child has its own /tmp, /dev/shm,
// /proc, IPC objects, uid and cgroup, and the zygote's memory is shared
// copy-on-write. What children do share is the interpreter state as the
// zygote left it, including its hash seed (random is reseeded).
//
// There is one zygote per runtime, not one per function with its handler
// imported (SOCK's deeper zygote tree): importing a handler runs the
// function's code, which must never run with the zygote's privileges (root,
// every capability, the power to make namespaces), and a zygote that is
// itself sandboxed can no longer give each child namespaces of its own.
// The import after the fork costs 0.9 ms of a 4.2 ms cold start on a
// 16-core machine (BENCHMARKS.md).

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wisp-faas/wisp/internal/sandbox/hostlog"

	"golang.org/x/sys/unix"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/sandbox/cgroup"
	"github.com/wisp-faas/wisp/internal/sandbox/seccomp"
)

// pythonZygote is the zygote script relative to the runtime directory.
const pythonZygote = "python/zygote.py"

// errZygoteGone means the zygote died or was closed: the caller falls back
// to a sandbox made on demand.
var errZygoteGone = errors.New("zygote is gone")

// zygoteRebuildGap is the least time between two builds of a runtime's
// zygote, so that one that dies at once does not spin.
const zygoteRebuildGap = time.Second

// zygoteSet holds a backend's zygotes by runtime name. mu guards all.
type zygoteSet struct {
	mu        sync.Mutex
	ready     map[string]*zygote
	building  map[string]bool
	lastBuild map[string]time.Time
	closed    bool
	stop      chan struct{} // closed by closeAll: builds waiting for their gap give up
	wg        sync.WaitGroup
}

// get returns the live zygote of runtime rt, or nil while there is none, in
// which case one is being built.
func (zs *zygoteSet) get(b *Backend, rt string) *zygote {
	zs.mu.Lock()
	defer zs.mu.Unlock()
	if z := zs.ready[rt]; z != nil && !z.gone() {
		return z
	}
	zs.buildLocked(b, rt)
	return nil
}

// buildLocked starts building rt's zygote unless one is on the way.
func (zs *zygoteSet) buildLocked(b *Backend, rt string) {
	if zs.ready == nil {
		zs.ready = map[string]*zygote{}
		zs.building = map[string]bool{}
		zs.lastBuild = map[string]time.Time{}
		zs.stop = make(chan struct{})
	}
	if zs.closed || zs.building[rt] {
		return
	}
	zs.building[rt] = true
	wait := time.Until(zs.lastBuild[rt].Add(zygoteRebuildGap))
	zs.lastBuild[rt] = time.Now().Add(max(wait, 0))
	stop := zs.stop
	zs.wg.Add(1)
	go func() {
		defer zs.wg.Done()
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-stop:
			}
		}
		var z *zygote
		err := errZygoteGone
		zs.mu.Lock()
		closed := zs.closed
		zs.mu.Unlock()
		if !closed {
			z, err = b.buildZygote(rt)
		}
		zs.mu.Lock()
		zs.building[rt] = false
		if err == nil && !zs.closed {
			zs.ready[rt] = z
			live := z
			z.mu.Lock()
			z.onGone = func() { zs.lost(b, live) }
			z.mu.Unlock()
			z = nil
		}
		zs.mu.Unlock()
		if err != nil && !errors.Is(err, errZygoteGone) {
			b.log.Warn("start a zygote; Python cold starts take the ordinary path meanwhile", "runtime", rt, "err", err)
		}
		if z != nil {
			z.close()
		}
	}()
}

// lost forgets a zygote that died, removes its sandbox and builds its
// replacement.
func (zs *zygoteSet) lost(b *Backend, z *zygote) {
	zs.mu.Lock()
	mine := zs.ready[z.rt] == z
	if mine {
		delete(zs.ready, z.rt)
		zs.buildLocked(b, z.rt)
	}
	zs.mu.Unlock()
	if !mine {
		return // closed by closeAll, or already replaced
	}
	z.close()
	b.log.Warn("zygote died; rebuilding it", "runtime", z.rt, "zygote", z.sb.ID(), "reason", z.sb.Reason())
}

// closeAll stops every zygote (and so their children) and waits for builds
// in flight.
func (zs *zygoteSet) closeAll() {
	zs.mu.Lock()
	if zs.stop != nil && !zs.closed {
		close(zs.stop)
	}
	zs.closed = true
	all := zs.ready
	zs.ready = nil
	zs.mu.Unlock()
	zs.wg.Wait()
	for _, z := range all {
		z.close()
	}
}

// zygote is one running zygote and its control socket.
type zygote struct {
	b    *Backend
	rt   string
	sb   *Sandbox
	conn *net.UnixConn
	logs []*logWriter

	forkMu sync.Mutex     // one fork request in flight at a time
	wmu    sync.Mutex     // serialises writes to conn
	reply  chan zygoteMsg // the reply to the pending request, from read
	done   chan struct{}  // closed when read has ended: the zygote is gone

	mu       sync.Mutex // guards the fields below
	children map[int]*zygoteChild
	seq      uint64       // of the last fork request
	pending  *zygoteChild // the child of the fork request in flight, whose seq is seq
	onGone   func()       // called by read once the zygote is gone
}

// zygoteMsg is any message from the zygote (see zygote.py's header).
type zygoteMsg struct {
	Ready   bool    `json:"ready"`
	PID     int     `json:"pid"`
	InitMS  float64 `json:"init_ms"`
	Forked  int     `json:"forked"`
	Seq     uint64  `json:"seq"`
	CloneUS float64 `json:"clone_us"`
	Error   string  `json:"error"`
	Exit    *int    `json:"exit"`
	Status  int     `json:"status"`
}

// zygoteFork is a fork request.
type zygoteFork struct {
	Seq uint64 `json:"seq"` // echoed in the reply
	// Join says how the child gets into its cgroup before it runs a line
	// of the function's code: "clone3" (cgroup v2: the sixth descriptor is
	// the cgroup's directory, and clone3's CLONE_INTO_CGROUP creates the
	// child there) or "procs" (v1: the descriptors after the fifth are the
	// group's cgroup.procs files, and the child writes "0" to each first
	// thing).
	Join     string `json:"join"`
	ID       string `json:"id"`
	Flags    uint64 `json:"flags"`
	UID      int    `json:"uid"`
	GID      int    `json:"gid"`
	Hostname string `json:"hostname"`
	TmpSize  int64  `json:"tmp_size"`
	ShmSize  int64  `json:"shm_size"`
	Seccomp  bool   `json:"seccomp"`
}

// zygoteChild is the process side of a Sandbox forked by a zygote: its pid
// and how it ended, as the zygote reported.
type zygoteChild struct {
	z      *zygote
	sb     *Sandbox
	pid    int
	copies sync.WaitGroup // the stdout and stderr copiers

	// status and lost are written once before sb.exited is closed.
	status syscall.WaitStatus
	lost   bool // the zygote died first: status unknown (SIGKILL by the parent-death signal)

	times zygoteTimes
}

// zygoteTimes is how a fork was spent, for logs and the cold-start figures.
type zygoteTimes struct {
	fork  time.Duration // request sent → pid back (includes clone)
	clone time.Duration // the clone system call, in the zygote
	load  time.Duration // start → load frame sent (with the fork request)
	ready time.Duration // start → ready frame
}

// exited records how the child ended and releases Exited once its output
// has been copied.
func (c *zygoteChild) exited(status syscall.WaitStatus, lost bool) {
	c.status, c.lost = status, lost
	if lost {
		c.sb.waitErr = errors.New("zygote died")
	} else if status.Exited() && status.ExitStatus() == 0 {
		c.sb.waitErr = nil
	} else {
		c.sb.waitErr = fmt.Errorf("sandbox %s %s", c.sb.id, c.reason())
	}
	go func() {
		c.copies.Wait()
		close(c.sb.exited)
	}()
}

// reason describes how the child ended, as Sandbox.Reason does.
func (c *zygoteChild) reason() string {
	switch ws := c.status; {
	case c.lost:
		return "killed with its zygote"
	case ws.Signaled():
		return "killed by signal " + ws.Signal().String()
	case ws.Exited():
		return "exited with status " + strconv.Itoa(ws.ExitStatus())
	}
	return fmt.Sprintf("ended with wait status %#x", int(c.status))
}

// kill asks the zygote to SIGKILL the child (the zygote alone can do so
// without racing with the pid's reuse: it has not reaped it) and waits
// briefly for its exit, so that the cgroup kill that follows finds the
// group empty.
func (c *zygoteChild) kill() error {
	select {
	case <-c.sb.exited:
		return nil
	default:
	}
	if err := c.z.send(map[string]int{"kill": c.pid}, nil); err != nil && !errors.Is(err, errZygoteGone) {
		return err
	}
	select {
	case <-c.sb.exited:
	case <-time.After(100 * time.Millisecond):
	}
	return nil
}

// zygoteFits reports whether a cold start of spec may fork from a zygote.
func (b *Backend) zygoteFits(spec *function.Spec, codeDir string) bool {
	return b.cfg.Zygote && b.cfg.RuntimeDir != "" && codeDir != "" &&
		function.Family(spec.Runtime) == function.RuntimePython &&
		slices.Contains(b.cfg.NamespaceTypes, NamespacePID) &&
		// A cgroup namespace must be entered after joining the cgroup,
		// which the child's seccomp filter no longer allows by then.
		!slices.Contains(b.cfg.NamespaceTypes, NamespaceCgroup)
}

// startFromZygote starts an instance forked from the zygote of the spec's
// runtime. It returns (nil, nil) when no zygote fits or is ready, so that
// the caller makes a sandbox on demand.
func (b *Backend) startFromZygote(ctx context.Context, cg *cgroup.Manager, opts sandbox.StartOptions) (sandbox.Instance, error) {
	spec := opts.Spec
	if !b.zygoteFits(spec, opts.CodeDir) {
		return nil, nil
	}
	z := b.zygotes.get(b, spec.Runtime)
	if z == nil {
		return nil, nil
	}
	start := time.Now()
	load := runtime.Load{CodeDir: runtime.SandboxCodeDir, Handler: spec.Handler,
		Env: runtime.EnvMap(runtime.HostEnv(spec, b.cfg.Conn.LogLimit))}
	h, child, err := z.fork(ctx, cg, opts, load)
	if err != nil {
		if errors.Is(err, errZygoteGone) {
			b.log.Warn("zygote unavailable; starting a sandbox on demand", "runtime", spec.Runtime, "err", err)
			return nil, nil
		}
		return nil, err
	}
	inst, ready, err := b.newInstance(ctx, opts.ID, spec, h, "")
	if err != nil {
		return nil, err
	}
	child.times.ready = time.Since(start)
	hostInit := time.Duration(ready.InitMS * float64(time.Millisecond))
	inst.stages = sandbox.StartStages{Sandbox: max(child.times.ready-hostInit, 0), Import: hostInit}
	b.log.DebugContext(ctx, "instance started from a zygote", slog.String("function", spec.Name),
		slog.String("instance", opts.ID), slog.Int("pid", child.pid),
		slog.Duration("fork", child.times.fork), slog.Duration("clone", child.times.clone),
		slog.Duration("total", child.times.ready),
		slog.Float64("host_init_ms", ready.InitMS), slog.Int("uid", h.uid))
	return inst, nil
}

// fork makes the instance's cgroup, uid, pipes and code mount, and has the
// zygote fork a child into them, born in its cgroup (v2) or joining it
// before anything else (v1). The load frame is written with the fork
// request, not after the reply: the child finds it once its sandbox is
// set up, so the round trip to the zygote is off the cold start's path.
// On failure it gives everything back.
func (z *zygote) fork(ctx context.Context, cg *cgroup.Manager, opts sandbox.StartOptions, load runtime.Load) (_ *hostProc, _ *zygoteChild, err error) {
	b, spec := z.b, opts.Spec
	start := time.Now()
	uid, err := b.uids.get()
	if err != nil {
		return nil, nil, err
	}
	sc := b.spawnConfig(cg, opts.ID, uid, spec.Network, []string{"python"}, nil, nil)
	flags, icfg, err := sc.initConfig()
	if err != nil {
		b.uids.put(uid)
		return nil, nil, err
	}
	group, err := cg.Create(opts.ID, cgroup.Limits{MemoryBytes: int64(spec.Memory), MilliCPU: int64(spec.CPU), Pids: int64(spec.Pids)})
	if err != nil {
		b.uids.put(uid)
		return nil, nil, err
	}
	var toClose []*os.File // ours, closed on failure
	defer func() {
		if err != nil {
			for _, f := range toClose {
				_ = f.Close()
			}
			_ = group.Kill()
			_ = group.Remove()
			b.uids.put(uid)
		}
	}()
	tree, err := codeTree(opts.CodeDir)
	if err != nil {
		return nil, nil, err
	}
	// How the child gets into its cgroup (zygoteFork.Join).
	join, joinFiles := "clone3", []*os.File(nil)
	if cg.Version() == cgroup.V2 {
		f, ferr := group.FD()
		if ferr != nil {
			_ = tree.Close()
			return nil, nil, ferr
		}
		joinFiles = []*os.File{f}
	} else {
		join = "procs"
		if joinFiles, err = group.ProcsFiles(); err != nil {
			_ = tree.Close()
			return nil, nil, err
		}
	}
	// The child's ends: request read, response write, stdout, stderr.
	var theirs, mine [4]*os.File
	for i := range theirs {
		r, w, perr := os.Pipe()
		if perr != nil {
			for _, f := range append(theirs[:i], joinFiles...) {
				_ = f.Close()
			}
			_ = tree.Close()
			return nil, nil, fmt.Errorf("zygote fork: %w", perr)
		}
		if i == 0 {
			theirs[i], mine[i] = r, w
		} else {
			theirs[i], mine[i] = w, r
		}
	}
	toClose = append(toClose, mine[0], mine[1])
	tmpSize := min(b.cfg.TmpSize, int64(spec.Memory)/2)
	req := zygoteFork{Join: join, ID: opts.ID, Flags: uint64(flags), UID: uid, GID: uid, Hostname: hostname(opts.ID),
		TmpSize: tmpSize, ShmSize: min(tmpSize, DefaultTmpSize), Seccomp: icfg.Seccomp}

	attrs := []slog.Attr{slog.String("function", spec.Name), slog.String("instance", opts.ID)}
	stdout := newLogWriter(b.log, append(slices.Clone(attrs), slog.String("stream", "stdout"))...)
	stderrLog := newLogWriter(b.log, append(slices.Clone(attrs), slog.String("stream", "stderr"))...)
	tail := &hostlog.Tail{Next: stderrLog}
	child := &zygoteChild{z: z}
	child.sb = &Sandbox{id: opts.ID, zc: child, group: group, exited: make(chan struct{})}
	// The copiers end when the last write end closes: the child's and its
	// descendants', or the zygote's if the fork fails.
	child.copies.Add(2)
	for i, w := range []io.Writer{stdout, tail} {
		go func(r *os.File) {
			defer child.copies.Done()
			_, _ = io.Copy(w, r)
			_ = r.Close()
		}(mine[2+i])
	}

	z.forkMu.Lock()
	z.mu.Lock()
	z.seq++
	req.Seq = z.seq
	z.pending = child
	z.mu.Unlock()
	sent := append(append(theirs[:], tree), joinFiles...)
	err = z.send(map[string]zygoteFork{"fork": req}, sent)
	// The fds travel as references: the zygote has them now (or never will).
	for _, f := range sent {
		_ = f.Close()
	}
	if err == nil {
		// The child reads it only once it is in its cgroup and sandboxed;
		// one that fails to set up closes its end, and its failed ready
		// frame, read by newInstance, says why.
		_ = runtime.SendLoad(mine[0], load)
		child.times.load = time.Since(start)
	}
	var m zygoteMsg
	if err == nil {
		select {
		case m = <-z.reply:
		case <-z.done:
			err = errZygoteGone
		case <-ctx.Done():
			// The reply still comes and read drops it; the child, if any,
			// exits when it finds its channel closed.
			err = fmt.Errorf("zygote fork: %w: %w", errdefs.ErrTimeout, context.Cause(ctx))
		}
	}
	z.mu.Lock()
	z.pending = nil
	z.mu.Unlock()
	if err != nil {
		// A reply that raced with ctx's end must not be taken for the
		// next request's.
		select {
		case <-z.reply:
		default:
		}
	}
	z.forkMu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	if m.Error != "" {
		return nil, nil, fmt.Errorf("zygote fork: %s: %w", m.Error, errdefs.ErrUnavailable)
	}
	child.times.fork = time.Since(start)
	child.times.clone = time.Duration(m.CloneUS * float64(time.Microsecond))
	return &hostProc{sb: child.sb, reqW: mine[0], respR: mine[1], uid: uid, tail: tail,
		logs: []*logWriter{stdout, stderrLog}}, child, nil
}

// codeTree returns a detached, read-only, recursive clone of the mounts at
// dir (open_tree), which the child attaches at /code with move_mount: the
// zygote's root has no view of the host's directories.
func codeTree(dir string) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return nil, fmt.Errorf("function code: open_tree %s: %w", dir, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("function code: make %s read-only: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), "code-tree"), nil
}

// send writes one message, with files passed by SCM_RIGHTS.
func (z *zygote) send(msg any, files []*os.File) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("zygote: %w", err)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	z.wmu.Lock()
	defer z.wmu.Unlock()
	if z.gone() {
		return errZygoteGone
	}
	if _, _, err := z.conn.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("zygote: %w: %w", errZygoteGone, err)
	}
	return nil
}

func (z *zygote) gone() bool {
	select {
	case <-z.done:
		return true
	default:
		return false
	}
}

// read dispatches the zygote's messages until its socket closes: fork
// replies to the request in flight, exits to their children. Then every
// child left is reported dead (the parent-death signal killed it).
func (z *zygote) read() {
	buf := make([]byte, 64<<10)
	for {
		n, err := z.conn.Read(buf)
		if err != nil || n == 0 {
			break
		}
		var m zygoteMsg
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			z.b.log.Warn("zygote: bad message", "zygote", z.sb.ID(), "err", err)
			continue
		}
		z.mu.Lock()
		switch {
		case m.Exit != nil:
			if c := z.children[*m.Exit]; c != nil {
				delete(z.children, *m.Exit)
				c.exited(syscall.WaitStatus(m.Status), false)
			}
		case m.Forked > 0 || m.Error != "":
			// A reply to a request that gave up is dropped: its child
			// exits when it finds its channel closed.
			if c := z.pending; c != nil && m.Seq == z.seq {
				if m.Forked > 0 {
					c.pid = m.Forked
					z.children[c.pid] = c
				}
				z.pending = nil
				z.reply <- m // buffered, and only the pending request's reply is sent
			}
		}
		z.mu.Unlock()
	}
	z.mu.Lock()
	close(z.done)
	for pid, c := range z.children {
		delete(z.children, pid)
		c.exited(syscall.WaitStatus(0), true)
	}
	onGone := z.onGone
	z.mu.Unlock()
	if onGone != nil {
		onGone()
	}
}

// close stops the zygote: closing its socket makes it exit, which kills
// its children; then its sandbox is removed.
func (z *zygote) close() {
	_ = z.conn.Close()
	if err := z.sb.Close(); err != nil {
		z.b.log.Warn("close zygote", "zygote", z.sb.ID(), "err", err)
	}
	<-z.done
	for _, l := range z.logs {
		l.Flush()
	}
}

// buildZygote starts the zygote of runtime rt and waits until it is ready.
func (b *Backend) buildZygote(rt string) (*zygote, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	cg, err := b.cgroups()
	if err != nil {
		return nil, err
	}
	bin, err := b.cfg.Launcher.Interpreter(rt)
	if err != nil {
		return nil, err
	}
	progs, err := seccompPrograms()
	if err != nil {
		return nil, err
	}
	id := "zygote-" + strings.ReplaceAll(rt, ".", "-") + "-" + strconv.FormatUint(b.seq.Add(1), 10) + "-" + strconv.Itoa(os.Getpid())
	fail := func(err error) (*zygote, error) { return nil, fmt.Errorf("start zygote %s: %w", id, err) }
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("socketpair: %w", err))
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "zygote-control"), os.NewFile(uintptr(fds[1]), "zygote-control-child")
	defer mine.Close()
	fc, err := net.FileConn(mine)
	if err != nil {
		theirs.Close()
		return fail(err)
	}
	conn := fc.(*net.UnixConn)

	attrs := []slog.Attr{slog.String("zygote", id)}
	stdout := newLogWriter(b.log, append(slices.Clone(attrs), slog.String("stream", "stdout"))...)
	stderrLog := newLogWriter(b.log, append(slices.Clone(attrs), slog.String("stream", "stderr"))...)
	tail := &hostlog.Tail{Next: stderrLog}
	sb, err := Spawn(ctx, SpawnConfig{
		ID:   id,
		Argv: []string{bin, "-B", "-S", path.Join(runtime.SandboxRuntimeDir, pythonZygote)},
		Env:  runtime.BaseEnv(),
		// Any directory will do at /code: each child mounts its
		// function's code over it. The runtime hosts are at hand.
		CodeDir:        b.cfg.RuntimeDir,
		RuntimeDir:     b.cfg.RuntimeDir,
		ExtraFiles:     []*os.File{theirs},
		Cgroups:        cg,
		TmpSize:        1 << 20,
		Network:        function.NetworkHost,
		NamespaceTypes: []string{NamespaceMount},
		Stdout:         stdout,
		Stderr:         tail,
		keepRoot:       true,
	})
	theirs.Close()
	if err != nil {
		conn.Close()
		return fail(err)
	}
	z := &zygote{b: b, rt: rt, sb: sb, conn: conn, logs: []*logWriter{stdout, stderrLog},
		reply: make(chan zygoteMsg, 1), done: make(chan struct{}), children: map[int]*zygoteChild{}}
	abort := func(err error) (*zygote, error) {
		conn.Close()
		_ = sb.Close()
		if last := tail.LastLine(); last != "" {
			err = fmt.Errorf("%w (its last output: %s)", err, last)
		}
		return fail(err)
	}
	init := map[string]any{"init": map[string]any{
		"seccomp": progs,
		"sys": map[string]int{"clone": unix.SYS_CLONE, "clone3": unix.SYS_CLONE3, "move_mount": unix.SYS_MOVE_MOUNT,
			"seccomp": unix.SYS_SECCOMP},
	}}
	if err := z.send(init, nil); err != nil {
		return abort(err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	buf := make([]byte, 4<<10)
	n, err := conn.Read(buf)
	stop()
	var m zygoteMsg
	if err == nil {
		err = json.Unmarshal(buf[:n], &m)
	}
	if err == nil && !m.Ready {
		err = fmt.Errorf("unexpected message %q", buf[:n])
	}
	if err != nil {
		return abort(fmt.Errorf("wait for ready: %w", err))
	}
	_ = conn.SetReadDeadline(time.Time{})
	go z.read()
	b.log.Info("zygote ready", "runtime", rt, "zygote", id, "pid", sb.Pid(),
		"python_init_ms", m.InitMS, "total", time.Since(t0))
	return z, nil
}

// seccompPrograms returns the filters the sandbox init installs
// (seccomp.Install), as raw BPF in the kernel's struct sock_filter layout,
// base64: the policy, then the ABI guard.
func seccompPrograms() ([]string, error) {
	progs, err := seccomp.Programs()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, raw := range progs {
		b := make([]byte, 0, 8*len(raw))
		for _, r := range raw {
			b = binary.NativeEndian.AppendUint16(b, r.Op)
			b = append(b, r.Jt, r.Jf)
			b = binary.NativeEndian.AppendUint32(b, r.K)
		}
		out = append(out, base64.StdEncoding.EncodeToString(b))
	}
	return out, nil
}
