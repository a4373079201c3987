package config

import (
	"fmt"
	"math"
	"net"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

// keyError marks a validation error with the dotted key it is about, so Load
// can add the key's line in the file. It unwraps to an *errdefs.Error.
type keyError struct {
	key string
	err error
}

func (e *keyError) Error() string { return e.err.Error() }
func (e *keyError) Unwrap() error { return e.err }

// bad returns an ErrInvalid error "key: msg" carrying hint.
func bad(key, hint, format string, args ...any) error {
	return &keyError{key: key, err: errdefs.Invalidf(hint, "%s: %s", key, fmt.Sprintf(format, args...))}
}

var (
	// containerd's identifier rule (namespaces, container ids).
	containerdIDRE = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)
	cgroupNameRE   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)
)

// maxUID is the largest uid an instance may get: 2^32-2, since (uid_t)-1
// means "no change" to the kernel.
const maxUID = math.MaxUint32 - 1

// Validate checks every field and returns the first problem as an ErrInvalid
// error naming the key (`execution.default_mode: unknown mode "fast"; use
// process, container, microvm or auto`) with a hint.
func (c *Config) Validate() error {
	for _, check := range []func() error{
		c.Execution.validate, c.Process.validate, c.Container.validate,
		c.Gateway.validate, c.Store.validate, c.Cache.validate, c.Async.validate, c.Triggers.validate,
		c.Energy.validate, c.Log.validate,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	p, k := c.Process, c.Container
	if p.UIDBase < k.UIDBase+k.UIDCount && k.UIDBase < p.UIDBase+p.UIDCount {
		return bad("container.uid_base", "give process and container mode separate uid ranges (defaults: 200000 and 300000)",
			"uids %d+%d overlap process mode's %d+%d", k.UIDBase, k.UIDCount, p.UIDBase, p.UIDCount)
	}
	return nil
}

func positiveDuration(key string, d function.Duration, max time.Duration) error {
	switch {
	case d.D() <= 0:
		return bad(key, "use a positive duration like 30s", "must be positive")
	case max > 0 && d.D() > max:
		return bad(key, fmt.Sprintf("use at most %s", max), "%s is too long", d)
	}
	return nil
}

func (e *Execution) validate() error {
	switch e.DefaultMode {
	case function.ModeProcess, function.ModeContainer, function.ModeMicroVM, function.ModeAuto:
	default:
		return bad("execution.default_mode", "use process, container, microvm or auto",
			"unknown mode %q; use process, container, microvm or auto", e.DefaultMode)
	}
	if e.MaxConcurrentFunctions < 1 || e.MaxConcurrentFunctions > 1_000_000 {
		return bad("execution.max_concurrent_functions", "use a number of calls between 1 and 1000000",
			"%d is out of range", e.MaxConcurrentFunctions)
	}
	if err := positiveDuration("execution.cold_start_timeout", e.ColdStartTimeout, time.Hour); err != nil {
		return err
	}
	if e.WarmInstanceTTL.D() > 7*24*time.Hour {
		return bad("execution.warm_instance_ttl", "use at most 168h; 0 means never reuse an instance",
			"%s is too long", e.WarmInstanceTTL)
	}
	if e.MaxQueue < 0 || e.MaxQueue > 1_000_000 {
		return bad("execution.max_queue", "use a number of waiting calls between 0 (no queue) and 1000000",
			"%d is out of range", e.MaxQueue)
	}
	if e.PipelineDepth < 0 || e.PipelineDepth > 64 {
		return bad("execution.pipeline_depth", "use a number of calls between 0 (no pipelining) and 64",
			"%d is out of range", e.PipelineDepth)
	}
	if e.PipelineMaxWait.D() < 0 || e.PipelineMaxWait.D() > time.Second {
		return bad("execution.pipeline_max_wait", "use a duration between 0 and 1s, such as 2ms",
			"%s is out of range", e.PipelineMaxWait)
	}
	return positiveDuration("execution.queue_timeout", e.QueueTimeout, time.Hour)
}

var namespaceNames = []string{NamespacePID, NamespaceMount, NamespaceIPC, NamespaceUTS, NamespaceNet, NamespaceUser, NamespaceCgroup}

func (p *Process) validate() error {
	switch p.IsolationLevel {
	case IsolationStrict, IsolationLightweight:
	default:
		return bad("process.isolation_level", "use strict or lightweight",
			"unknown isolation level %q; use strict or lightweight", p.IsolationLevel)
	}
	seen := map[string]bool{}
	for i, ns := range p.NamespaceTypes {
		key := fmt.Sprintf("process.namespace_types[%d]", i)
		known := false
		for _, n := range namespaceNames {
			known = known || ns == n
		}
		switch {
		case ns == "mnt":
			return bad(key, `write "mount"`, `unknown namespace "mnt"; wisp calls it "mount"`)
		case ns == "network":
			return bad(key, `write "net"`, `unknown namespace "network"; wisp calls it "net"`)
		case !known:
			return bad(key, "use "+strings.Join(namespaceNames, ", "), "unknown namespace %q", ns)
		case seen[ns]:
			return bad(key, "list each namespace once", "%q is listed twice", ns)
		}
		seen[ns] = true
	}
	for _, req := range []string{NamespacePID, NamespaceMount} {
		if !seen[req] {
			return bad("process.namespace_types", fmt.Sprintf("add %q to the list", req),
				"%q is required: the sandbox needs it to contain and clean up instances", req)
		}
	}
	if p.MemoryLimit < function.MinMemory {
		return bad("process.memory_limit", "use at least 16Mi", "%s is too small", p.MemoryLimit)
	}
	if p.CPULimit <= 0 {
		return bad("process.cpu_limit", "use a positive quantity like 500m or 1", "must be positive")
	}
	if p.Provisioned < 0 || p.Provisioned > 1000 {
		return bad("process.provisioned", "use a number of spare sandboxes between 0 (off) and 1000", "%d is out of range", p.Provisioned)
	}
	if p.PidsLimit < 1 || p.PidsLimit > 32768 {
		return bad("process.pids_limit", "use a number of processes between 1 and 32768", "%d is out of range", p.PidsLimit)
	}
	if p.TmpSize < 1<<20 {
		return bad("process.tmp_size", "use at least 1Mi", "%s is too small", p.TmpSize)
	}
	if p.UIDBase < 1000 {
		return bad("process.uid_base", "use a uid of 1000 or more that no account on this machine uses, like 200000",
			"%d would share uids with system accounts", p.UIDBase)
	}
	if p.UIDCount < 1 {
		return bad("process.uid_count", "use at least 1 (the most instances alive at once)", "must be positive")
	}
	if int64(p.UIDBase)+int64(p.UIDCount)-1 > maxUID {
		return bad("process.uid_count", fmt.Sprintf("keep uid_base + uid_count below %d", int64(maxUID)+1),
			"uid range %d..%d is beyond the largest uid", p.UIDBase, int64(p.UIDBase)+int64(p.UIDCount)-1)
	}
	cg := p.CgroupRoot
	if cg == "" || path.IsAbs(cg) || path.Clean(cg) != cg {
		return bad("process.cgroup_root", `use a relative directory name like "wisp"`, "%q is not a relative cgroup path", cg)
	}
	for _, part := range strings.Split(cg, "/") {
		if !cgroupNameRE.MatchString(part) {
			return bad("process.cgroup_root", "use letters, digits, '.', '_' and '-' in each path element",
				"%q is not a valid cgroup name", part)
		}
	}
	for _, f := range []struct{ key, val string }{{"process.python", p.Python}, {"process.node", p.Node}} {
		if !path.IsAbs(f.val) {
			return bad(f.key, "give the interpreter's absolute path, like /usr/bin/python3 (see `command -v`)",
				"%q is not an absolute path", f.val)
		}
	}
	return nil
}

func (c *Container) validate() error {
	switch {
	case c.Runtime == "runc" || c.Runtime == "crun" || strings.HasPrefix(c.Runtime, "io.containerd."):
	case c.Runtime == "docker" || c.Runtime == "containerd":
		return bad("container.runtime", "use runc or crun (apt-get install runc)",
			"%q is not an OCI runtime: wisp drives containerd itself and needs the runtime containerd starts containers with", c.Runtime)
	default:
		return bad("container.runtime", "use runc or crun, or a containerd shim name like io.containerd.runc.v2",
			"unknown runtime %q", c.Runtime)
	}
	if !path.IsAbs(strings.TrimPrefix(c.Address, "unix://")) {
		return bad("container.address", "give the path of containerd's socket, like /run/containerd/containerd.sock",
			"%q is not an absolute socket path", c.Address)
	}
	if len(c.Namespace) > 76 || !containerdIDRE.MatchString(c.Namespace) {
		return bad("container.namespace", "use letters and digits, separated by single '.', '_' or '-'",
			"%q is not a valid containerd namespace", c.Namespace)
	}
	if strings.ContainsAny(c.BaseImage, " \t\n") {
		return bad("container.base_image", `give an image reference like "python:3.11-slim", or "" for a local base`,
			"%q is not an image reference", c.BaseImage)
	}
	if c.MemoryLimit < function.MinMemory {
		return bad("container.memory_limit", "use at least 16Mi", "%s is too small", c.MemoryLimit)
	}
	if c.CPULimit <= 0 {
		return bad("container.cpu_limit", "use a positive quantity like 500m or 1", "must be positive")
	}
	if c.Provisioned < 0 || c.Provisioned > 64 {
		return bad("container.provisioned", "use a number of containers between 0 and 64", "%d is out of range", c.Provisioned)
	}
	if c.TmpSize < 1<<20 {
		return bad("container.tmp_size", "use at least 1Mi", "%s is too small", c.TmpSize)
	}
	if c.UIDBase < 1000 || c.UIDCount < 1 || c.UIDBase+c.UIDCount > 1<<31-2 {
		return bad("container.uid_base", "use a range above 1000 that holds no real users, like 300000 with uid_count 65536",
			"uids %d+%d are not usable", c.UIDBase, c.UIDCount)
	}
	return nil
}

func (g *Gateway) validate() error {
	_, port, err := net.SplitHostPort(g.Listen)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return bad("gateway.listen", "write host:port, like 127.0.0.1:8080 or 0.0.0.0:8080",
			"%q is not a host:port address", g.Listen)
	}
	if g.MaxBodySize < 1 {
		return bad("gateway.max_body_size", "use a size like 6Mi", "must be positive")
	}
	if err := positiveDuration("gateway.read_header_timeout", g.ReadHeaderTimeout, 10*time.Minute); err != nil {
		return err
	}
	if g.ShutdownTimeout.D() > time.Hour {
		return bad("gateway.shutdown_timeout", "use at most 1h", "%s is too long", g.ShutdownTimeout)
	}
	if g.Procs < 0 || g.Procs > 4096 {
		return bad("gateway.procs", "use 0 (auto) or a number of CPUs", "%d is out of range", g.Procs)
	}
	return nil
}

func (e *Energy) validate() error {
	switch {
	case e.Interval.D() < 100*time.Millisecond || e.Interval.D() > time.Minute:
		return bad("energy.interval", "use a duration between 100ms and 1m, like 1s", "%s is out of range", e.Interval)
	case e.History.D() < e.Interval.D() || e.History.D() > 7*24*time.Hour:
		return bad("energy.history", "use a duration between energy.interval and 168h, like 1h", "%s is out of range", e.History)
	case e.IdleWatts < 0:
		return bad("energy.idle_watts", "use 0 (unknown) or the node's measured idle power in watts", "must not be negative")
	case e.ModelIdleWatts < 0 || e.ModelMaxWatts < e.ModelIdleWatts:
		return bad("energy.model_max_watts", "set 0 ≤ model_idle_watts ≤ model_max_watts, or both 0 for the defaults", "%g W idle, %g W max", e.ModelIdleWatts, e.ModelMaxWatts)
	}
	return nil
}

func (a *Async) validate() error {
	switch {
	case a.Workers < 1 || a.Workers > 10000:
		return bad("async.workers", "use 1 to 10000", "%d is out of range", a.Workers)
	case a.MaxQueued < 1 || a.MaxQueued > 100_000_000:
		return bad("async.max_queued", "use 1 to 100000000", "%d is out of range", a.MaxQueued)
	}
	if err := positiveDuration("async.backoff_base", a.BackoffBase, time.Hour); err != nil {
		return err
	}
	if err := positiveDuration("async.backoff_max", a.BackoffMax, 24*time.Hour); err != nil {
		return err
	}
	if a.BackoffMax.D() < a.BackoffBase.D() {
		return bad("async.backoff_max", "make it at least async.backoff_base", "%s is below backoff_base %s", a.BackoffMax, a.BackoffBase)
	}
	return positiveDuration("async.done_retention", a.DoneRetention, 30*24*time.Hour)
}

func (t *Triggers) validate() error {
	if t.NATSURL == "" {
		return nil
	}
	for _, u := range strings.Split(t.NATSURL, ",") {
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			return bad("triggers.nats_url", "write nats://HOST:4222 (several separated by commas), or \"\" for no NATS triggers",
				"%q is not a nats:// URL", u)
		}
	}
	return nil
}

func (c *Cache) validate() error {
	switch {
	case c.MaxEntries < 0 || c.MaxEntries > 10_000_000:
		return bad("cache.max_entries", "use 0 (off) up to 10000000", "%d is out of range", c.MaxEntries)
	case c.MaxEntrySize < 0 || c.MaxEntrySize > 64<<20:
		return bad("cache.max_entry_size", "use a size up to 64Mi", "%s is out of range", c.MaxEntrySize)
	case c.MaxEntries > 0 && c.TTL.D() <= 0:
		return bad("cache.ttl", "use a positive duration like 5m", "must be positive")
	}
	return nil
}

func (s *Store) validate() error {
	if s.MaxCodeSize < 1<<10 {
		return bad("store.max_code_size", "use a size like 50Mi", "%s is too small", s.MaxCodeSize)
	}
	if s.MaxUnpackedSize != 0 && s.MaxUnpackedSize < s.MaxCodeSize {
		return bad("store.max_unpacked_size", "use 0 (10 x max_code_size) or at least max_code_size",
			"%s is smaller than max_code_size (%s)", s.MaxUnpackedSize, s.MaxCodeSize)
	}
	if s.ActivationRetention < 1 || s.ActivationRetention > 100_000_000 {
		return bad("store.activation_retention", "use a number of records between 1 and 100000000",
			"%d is out of range", s.ActivationRetention)
	}
	for _, l := range []struct {
		key string
		v   function.Size
	}{{"store.log_limit", s.LogLimit}, {"store.result_limit", s.ResultLimit}} {
		switch {
		case l.v < 1:
			return bad(l.key, "use a positive size like 64Ki", "must be positive")
		case l.v > 64<<20:
			return bad(l.key, "use at most 64Mi", "%s is too large", l.v)
		}
	}
	return nil
}

func (l *Log) validate() error {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "use debug, info, warn or error", "unknown level %q", l.Level)
	}
	switch l.Format {
	case LogJSON, LogText:
	default:
		return bad("log.format", "use json or text", "unknown format %q", l.Format)
	}
	return nil
}
