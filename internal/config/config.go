package config

import (
	_ "embed"
	"log/slog"
	"strings"
	"time"

	"github.com/wisp-faas/wisp/internal/function"
)

// Reference is the annotated configuration file that lists every field with
// its default and a one-line comment. It parses to exactly Default(); the
// README includes it, and `wisp serve --print-config` may print it.
//
//go:embed example.yaml
var Reference string

// Isolation levels of the process execution mode.
const (
	// IsolationStrict gives each instance every namespace in
	// process.namespace_types, a seccomp filter, its own unprivileged uid, no
	// capabilities, no_new_privs, a read-only root with a private /tmp and
	// its own cgroup.
	IsolationStrict = "strict"
	// IsolationLightweight is IsolationStrict without the network namespace
	// ("net" in namespace_types is ignored: instances share the host's
	// network and can reach whatever the host can) and without the seccomp
	// filter (instances may make any system call the kernel allows an
	// unprivileged user). The uid, capabilities, no_new_privs, read-only
	// root, private /tmp and cgroup limits stay. It starts instances faster
	// (no network namespace to create, no filter to load) and is meant for
	// trusted code on a single-tenant node.
	IsolationLightweight = "lightweight"
)

// Namespace names accepted in process.namespace_types, as in
// /proc/PID/ns (except "mount", which the kernel calls "mnt").
const (
	NamespacePID    = "pid"
	NamespaceMount  = "mount"
	NamespaceIPC    = "ipc"
	NamespaceUTS    = "uts"
	NamespaceNet    = "net"
	NamespaceUser   = "user"
	NamespaceCgroup = "cgroup"
)

// Log formats.
const (
	LogJSON = "json"
	LogText = "text"
)

// Config is the whole system configuration. The zero value is not useful;
// start from Default or Load.
type Config struct {
	Execution Execution `yaml:"execution" json:"execution"`
	Process   Process   `yaml:"process" json:"process"`
	Container Container `yaml:"container" json:"container"`
	Gateway   Gateway   `yaml:"gateway" json:"gateway"`
	Store     Store     `yaml:"store" json:"store"`
	Cache     Cache     `yaml:"cache" json:"cache"`
	Async     Async     `yaml:"async" json:"async"`
	Triggers  Triggers  `yaml:"triggers" json:"triggers"`
	Energy    Energy    `yaml:"energy" json:"energy"`
	Log       Log       `yaml:"log" json:"log"`
}

// Energy configures energy accounting (internal/energy, internal/meter).
type Energy struct {
	// Interval between samples of the node's energy and CPU times.
	Interval function.Duration `yaml:"interval" json:"interval"`
	// History is how long per-interval reports are kept for /v1/energy.
	History function.Duration `yaml:"history" json:"history"`
	// IdleWatts is the node's power when idle, for a hardware counter
	// (RAPL, perf): 0 = unknown, all energy is shared out by CPU time. The
	// model uses its own idle coefficient.
	IdleWatts float64 `yaml:"idle_watts" json:"idle_watts"`
	// ModelIdleWatts and ModelMaxWatts are the whole node's power at 0 %
	// and 100 % CPU for the model source; 0 = the documented per-CPU
	// defaults (internal/energy), or fit them with wisp energy calibrate.
	ModelIdleWatts float64 `yaml:"model_idle_watts" json:"model_idle_watts"`
	ModelMaxWatts  float64 `yaml:"model_max_watts" json:"model_max_watts"`
}

// Async configures the durable queue of asynchronous calls
// (internal/queue): POST /async-function/{name}, schedules and triggers.
type Async struct {
	// Workers is how many async calls run at once.
	Workers int `yaml:"workers" json:"workers"`
	// MaxQueued is how many async calls may wait or run; beyond it POST
	// /async-function answers 429.
	MaxQueued int `yaml:"max_queued" json:"max_queued"`
	// BackoffBase is the delay before a failed call's first retry; it
	// doubles per attempt up to BackoffMax (with jitter).
	BackoffBase function.Duration `yaml:"backoff_base" json:"backoff_base"`
	BackoffMax  function.Duration `yaml:"backoff_max" json:"backoff_max"`
	// DoneRetention is how long a succeeded call's queue entry is kept
	// (its activation record stays as store.activation_retention says).
	DoneRetention function.Duration `yaml:"done_retention" json:"done_retention"`
}

// Triggers configures event sources (internal/trigger).
type Triggers struct {
	// NATSURL is the NATS server NATS triggers subscribe on
	// (nats://127.0.0.1:4222); "" turns NATS triggers off.
	NATSURL string `yaml:"nats_url" json:"nats_url"`
}

// Cache configures the result cache of deterministic functions
// (internal/cache).
type Cache struct {
	// MaxEntries is how many responses are kept (0 turns the cache off).
	MaxEntries int `yaml:"max_entries" json:"max_entries"`
	// MaxEntrySize is the largest response body cached.
	MaxEntrySize function.Size `yaml:"max_entry_size" json:"max_entry_size"`
	// TTL is how long a cached response is served.
	TTL function.Duration `yaml:"ttl" json:"ttl"`
}

// Execution holds node-wide limits of the data path (scheduler and pools).
type Execution struct {
	// DefaultMode is the execution mode of functions whose spec sets none:
	// process, container, microvm or auto.
	DefaultMode string `yaml:"default_mode" json:"default_mode"`
	// MaxConcurrentFunctions caps the calls in flight on the node, across
	// all functions.
	MaxConcurrentFunctions int `yaml:"max_concurrent_functions" json:"max_concurrent_functions"`
	// ColdStartTimeout is the most time a new instance may take to become
	// ready.
	ColdStartTimeout function.Duration `yaml:"cold_start_timeout" json:"cold_start_timeout"`
	// WarmInstanceTTL is the keep_alive of functions whose spec sets none
	// (0: never reuse an instance).
	WarmInstanceTTL function.Duration `yaml:"warm_instance_ttl" json:"warm_instance_ttl"`
	// MaxQueue is the length of each function's wait queue when all its
	// instances are busy; a call beyond it is refused with 429 (0: no queue).
	MaxQueue int `yaml:"max_queue" json:"max_queue"`
	// QueueTimeout is how long a queued call waits before it is refused
	// with 429.
	QueueTimeout function.Duration `yaml:"queue_timeout" json:"queue_timeout"`
	// PipelineDepth is how many calls may wait inside one busy instance,
	// behind the call it runs, when the function's instances serve one
	// call at a time (concurrency 1, a sync Python handler); 0 turns
	// pipelining off. A call waiting there has not started: if the
	// instance dies it goes to another one.
	PipelineDepth int `yaml:"pipeline_depth" json:"pipeline_depth"`
	// PipelineMaxWait bounds the wait of a call queued inside an instance:
	// it may queue only while the calls ahead of it, times the function's
	// average call time, plus how long the running call has run so far,
	// take at most this long. Functions whose calls take longer than this
	// are never pipelined.
	PipelineMaxWait function.Duration `yaml:"pipeline_max_wait" json:"pipeline_max_wait"`
}

// Process configures the process execution mode (internal/sandbox/process).
type Process struct {
	// IsolationLevel is IsolationStrict or IsolationLightweight; see their
	// comments for exactly what each turns on.
	IsolationLevel string `yaml:"isolation_level" json:"isolation_level"`
	// NamespaceTypes lists the namespaces each instance is given. "pid" and
	// "mount" are required (the sandbox relies on them to kill an instance's
	// whole tree and to mount its read-only root and private /tmp).
	NamespaceTypes []string `yaml:"namespace_types" json:"namespace_types"`
	// MemoryLimit, CPULimit and PidsLimit are the cgroup limits of
	// functions whose spec sets no memory, cpu or pids.
	MemoryLimit function.Size     `yaml:"memory_limit" json:"memory_limit"`
	CPULimit    function.MilliCPU `yaml:"cpu_limit" json:"cpu_limit"`
	PidsLimit   int               `yaml:"pids_limit" json:"pids_limit"`
	// Provisioned is how many pre-provisioned sandboxes (namespaces,
	// cgroup, uid and a started Python host, waiting for a function) are
	// kept ready per Python or Node runtime; 0 makes every sandbox on demand.
	Provisioned int `yaml:"provisioned" json:"provisioned"`
	// Zygote makes Python cold starts that find no pre-provisioned sandbox
	// fork from a pre-initialised interpreter (one root zygote per Python
	// runtime) straight into a fresh sandbox, instead of starting a new
	// interpreter.
	Zygote bool `yaml:"zygote" json:"zygote"`
	// TmpSize is the size of each instance's private writable /tmp (tmpfs).
	TmpSize function.Size `yaml:"tmp_size" json:"tmp_size"`
	// UIDBase and UIDCount give the range [UIDBase, UIDBase+UIDCount) of
	// unprivileged uids (and equal gids) handed out to instances.
	UIDBase  int `yaml:"uid_base" json:"uid_base"`
	UIDCount int `yaml:"uid_count" json:"uid_count"`
	// CgroupRoot is the cgroup directory, relative to the hierarchy's root
	// (/sys/fs/cgroup), under which wisp creates one cgroup per instance.
	CgroupRoot string `yaml:"cgroup_root" json:"cgroup_root"`
	// Python and Node are the interpreters of the python3 and node runtimes.
	Python string `yaml:"python" json:"python"`
	Node   string `yaml:"node" json:"node"`
}

// Container configures the container execution mode (the container
// backend's Options, and the limits container functions get by default).
type Container struct {
	// Runtime is the OCI runtime containerd runs containers with.
	Runtime string `yaml:"runtime" json:"runtime"`
	// Address is containerd's socket.
	Address string `yaml:"address" json:"address"`
	// Namespace is the containerd namespace that holds wisp's images and
	// containers.
	Namespace string `yaml:"namespace" json:"namespace"`
	// BaseImage is the image functions are layered on; "" means a base built
	// locally from the host's runtimes (no registry needed).
	BaseImage   string            `yaml:"base_image" json:"base_image"`
	MemoryLimit function.Size     `yaml:"memory_limit" json:"memory_limit"`
	CPULimit    function.MilliCPU `yaml:"cpu_limit" json:"cpu_limit"`
	// Provisioned is how many started containers wait per Python or Node
	// runtime for cold starts.
	Provisioned int `yaml:"provisioned" json:"provisioned"`
	// TmpSize is the size of each container's writable /tmp (tmpfs).
	TmpSize function.Size `yaml:"tmp_size" json:"tmp_size"`
	// UIDBase and UIDCount are the uids containers run as, one per live
	// container; the range must not overlap process mode's.
	UIDBase  int `yaml:"uid_base" json:"uid_base"`
	UIDCount int `yaml:"uid_count" json:"uid_count"`
}

// Gateway configures the HTTP API.
type Gateway struct {
	// Listen is the host:port the API listens on.
	Listen string `yaml:"listen" json:"listen"`
	// MaxBodySize is the largest request body of a call (413 beyond).
	MaxBodySize function.Size `yaml:"max_body_size" json:"max_body_size"`
	// ReadHeaderTimeout is http.Server.ReadHeaderTimeout.
	ReadHeaderTimeout function.Duration `yaml:"read_header_timeout" json:"read_header_timeout"`
	// ShutdownTimeout is how long SIGTERM waits for calls in flight.
	ShutdownTimeout function.Duration `yaml:"shutdown_timeout" json:"shutdown_timeout"`
	// Procs is how many CPUs the wisp server process itself runs Go code
	// on at once (GOMAXPROCS); 0 means auto, see ServerProcs. The functions'
	// sandboxes are separate processes and are not bound by it.
	Procs int `yaml:"procs" json:"procs"`
}

// ServerProcs resolves Procs for a machine with ncpu CPUs: the configured
// value, or for 0 a quarter of the CPUs (at least 1). The server's work
// per call is a few syscalls and some bookkeeping while the sandboxes do
// the computing; on a 2-CPU machine one P serves calls at half the latency
// and with 40 % more throughput than two, whose idle Ps are woken and put
// back to sleep on every call (BENCHMARKS.md).
func (g Gateway) ServerProcs(ncpu int) int {
	if g.Procs > 0 {
		return g.Procs
	}
	return max(1, ncpu/4)
}

// Store configures internal/store; the fields map one to one onto
// store.Options.
type Store struct {
	// MaxCodeSize is the largest code archive (compressed) accepted.
	MaxCodeSize function.Size `yaml:"max_code_size" json:"max_code_size"`
	// MaxUnpackedSize is the largest total size of an archive's files once
	// unpacked; 0 means 10 × MaxCodeSize. See UnpackedLimit.
	MaxUnpackedSize function.Size `yaml:"max_unpacked_size" json:"max_unpacked_size"`
	// ActivationRetention is how many activation records are kept (the
	// newest).
	ActivationRetention int `yaml:"activation_retention" json:"activation_retention"`
	// LogLimit is how much of an activation's logs is kept (the tail).
	LogLimit function.Size `yaml:"log_limit" json:"log_limit"`
	// ResultLimit is how much of the response body is kept in the record.
	ResultLimit function.Size `yaml:"result_limit" json:"result_limit"`
}

// UnpackedLimit returns MaxUnpackedSize, or 10 × MaxCodeSize when it is 0.
func (s Store) UnpackedLimit() function.Size {
	if s.MaxUnpackedSize > 0 {
		return s.MaxUnpackedSize
	}
	return 10 * s.MaxCodeSize
}

// Log configures the node's structured log (log/slog).
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level" json:"level"`
	// Format is json or text.
	Format string `yaml:"format" json:"format"`
}

// SlogLevel returns Level as a slog.Level (info when Level is not valid).
func (l Log) SlogLevel() slog.Level {
	switch strings.ToLower(l.Level) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Default returns the configuration used when no file is given; every field
// a file leaves out keeps its value from here. Reference documents it.
func Default() Config {
	return Config{
		Execution: Execution{
			DefaultMode:            function.ModeProcess,
			MaxConcurrentFunctions: 1000,
			ColdStartTimeout:       function.Duration(30 * time.Second),
			WarmInstanceTTL:        function.Duration(10 * time.Minute),
			MaxQueue:               100,
			QueueTimeout:           function.Duration(10 * time.Second),
			PipelineDepth:          32,
			PipelineMaxWait:        function.Duration(2 * time.Millisecond),
		},
		Process: Process{
			IsolationLevel: IsolationStrict,
			NamespaceTypes: []string{NamespacePID, NamespaceMount, NamespaceIPC, NamespaceUTS, NamespaceNet},
			MemoryLimit:    128 << 20,
			CPULimit:       1000,
			PidsLimit:      64,
			Provisioned:    2,
			Zygote:         true,
			TmpSize:        64 << 20,
			UIDBase:        200000,
			UIDCount:       10000,
			CgroupRoot:     "wisp",
			Python:         "/usr/bin/python3",
			Node:           "/usr/bin/node",
		},
		Container: Container{
			Runtime:     "runc",
			Address:     "/run/containerd/containerd.sock",
			Namespace:   "wisp",
			BaseImage:   "",
			MemoryLimit: 128 << 20,
			CPULimit:    1000,
			Provisioned: 2,
			TmpSize:     64 << 20,
			UIDBase:     300000,
			UIDCount:    65536,
		},
		Gateway: Gateway{
			Listen:            "127.0.0.1:8080",
			MaxBodySize:       6 << 20,
			ReadHeaderTimeout: function.Duration(10 * time.Second),
			ShutdownTimeout:   function.Duration(30 * time.Second),
		},
		Store: Store{
			MaxCodeSize:         50 << 20,
			MaxUnpackedSize:     0,
			ActivationRetention: 10000,
			LogLimit:            64 << 10,
			ResultLimit:         64 << 10,
		},
		Cache: Cache{MaxEntries: 10000, MaxEntrySize: 1 << 20, TTL: function.Duration(5 * time.Minute)},
		Async: Async{Workers: 16, MaxQueued: 100000, BackoffBase: function.Duration(time.Second),
			BackoffMax: function.Duration(5 * time.Minute), DoneRetention: function.Duration(time.Hour)},
		Energy: Energy{Interval: function.Duration(time.Second), History: function.Duration(time.Hour)},
		Log:    Log{Level: "info", Format: LogJSON},
	}
}

// Baseline returns the server-wide defaults for fields a function spec
// leaves out: execution.default_mode, execution.warm_instance_ttl (as
// keep_alive), the process section's memory, cpu and pids limits, and the
// container section's memory and cpu limits for container functions.
func (c Config) Baseline() function.Baseline {
	ttl := c.Execution.WarmInstanceTTL.D()
	return function.Baseline{
		Mode:      c.Execution.DefaultMode,
		Memory:    c.Process.MemoryLimit,
		CPU:       c.Process.CPULimit,
		Pids:      c.Process.PidsLimit,
		KeepAlive: &ttl,
		PerMode: map[string]function.ModeLimits{
			function.ModeContainer: {Memory: c.Container.MemoryLimit, CPU: c.Container.CPULimit},
		},
	}
}

// Namespaces returns the namespaces an instance actually gets: the
// configured namespace_types, less "net" at the lightweight level.
func (p Process) Namespaces() []string {
	out := make([]string, 0, len(p.NamespaceTypes))
	for _, ns := range p.NamespaceTypes {
		if ns == NamespaceNet && p.IsolationLevel == IsolationLightweight {
			continue
		}
		out = append(out, ns)
	}
	return out
}

// Seccomp reports whether instances get the seccomp filter (strict only).
func (p Process) Seccomp() bool { return p.IsolationLevel != IsolationLightweight }
