package function

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Execution modes.
const (
	ModeProcess   = "process"
	ModeContainer = "container"
	ModeMicroVM   = "microvm"
	ModeAuto      = "auto"
)

// Runtime families. A spec names python3, python3.N, node, nodeN or exec.
const (
	RuntimePython = "python3"
	RuntimeNode   = "node"
	RuntimeExec   = "exec"
)

// Network settings.
const (
	NetworkNone = "none" // loopback only (default)
	NetworkHost = "host" // share the host's network namespace
)

// Defaults applied to fields a spec leaves out.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultMemory       = Size(128 << 20)
	DefaultCPU          = MilliCPU(1000)
	DefaultKeepAlive    = 10 * time.Minute
	DefaultMaxInstances = 20
	DefaultConcurrency  = 1
	DefaultPids         = 64

	MinMemory  = Size(16 << 20)
	MaxTimeout = 24 * time.Hour
)

// Spec is a function as the user describes it (DESIGN §2, seed 003 §4.2).
// The zero value is not valid; use Parse or Defaults.
type Spec struct {
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	// Kind is KindFunction (code that runs in a sandbox; "" means it) or
	// KindSequence (a chain of other functions: Steps).
	Kind string `yaml:"kind,omitempty" json:"kind,omitempty"`
	// Steps are the functions of a sequence, by name in its namespace:
	// each step's response body is the next step's request body, and the
	// last step's response is the sequence's. A sequence has no runtime,
	// handler or code; its timeout bounds the whole chain.
	Steps         []string `yaml:"steps,omitempty" json:"steps,omitempty"`
	Runtime       string   `yaml:"runtime" json:"runtime"`
	Handler       string   `yaml:"handler" json:"handler"`
	ExecutionMode string   `yaml:"execution_mode" json:"execution_mode"`
	Timeout       Duration `yaml:"timeout" json:"timeout"`
	Memory        Size     `yaml:"memory" json:"memory"`
	CPU           MilliCPU `yaml:"cpu" json:"cpu"`
	Pids          int      `yaml:"pids" json:"pids"`
	KeepAlive     Duration `yaml:"keep_alive" json:"keep_alive"`
	// KeepAliveAuto is set by `keep_alive: auto`: the scheduler learns the
	// keep-alive and pre-warm windows from the function's idle times
	// (internal/keepalive) and uses KeepAlive (then the server default,
	// execution.warm_instance_ttl) as the fixed fallback while it has not
	// learned enough. `keep_alive_auto: true` beside `keep_alive: 2m` says
	// the same with a fallback of 2m; it is also how the stored spec keeps
	// the setting.
	KeepAliveAuto bool    `yaml:"keep_alive_auto,omitempty" json:"keep_alive_auto,omitempty"`
	MaxInstances  int     `yaml:"max_instances" json:"max_instances"`
	Concurrency   int     `yaml:"concurrency" json:"concurrency"`
	Network       string  `yaml:"network" json:"network"`
	Environment   EnvList `yaml:"environment,omitempty" json:"environment,omitempty"`
	// Image is the OCI image a container function runs on (a reference,
	// "docker.io/library/python:3.11-slim", or an image imported with wisp
	// image import); "" means the runtime's base image built locally.
	Image         string   `yaml:"image,omitempty" json:"image,omitempty"`
	Dependencies  []string `yaml:"dependencies,omitempty" json:"dependencies,omitempty"`
	Deterministic bool     `yaml:"deterministic" json:"deterministic"`
	// RateLimit caps the calls the function accepts: "5/s", "100/m",
	// "1000/h" (a token bucket; "" = no limit). Calls beyond it get 429
	// with Retry-After.
	RateLimit string `yaml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
	// RateBurst is the bucket's size: calls accepted at once after a quiet
	// spell (default: the N of rate_limit).
	RateBurst int `yaml:"rate_burst,omitempty" json:"rate_burst,omitempty"`
	// Retries is how many times an asynchronous call (POST
	// /async-function/{name}, a schedule) is tried again after it fails
	// (crash, timeout, error status), with exponential backoff, before it
	// goes to the dead-letter list. Synchronous calls are never retried.
	Retries int `yaml:"retries,omitempty" json:"retries,omitempty"`
	// Schedule calls the function asynchronously on a cron schedule:
	// "*/5 * * * *", "@hourly", "@every 30s" (internal/trigger).
	Schedule string `yaml:"schedule,omitempty" json:"schedule,omitempty"`
}

// Function kinds.
const (
	KindFunction = "function"
	KindSequence = "sequence"
)

// MaxSteps bounds a sequence's steps.
const MaxSteps = 32

// MaxRetries bounds a function's retries.
const MaxRetries = 20

// IsSequence reports whether the spec is a sequence.
func (s *Spec) IsSequence() bool { return s.Kind == KindSequence }

// Baseline holds the server-wide defaults for fields a spec leaves out (the
// system config's execution.default_mode, warm_instance_ttl,
// process.memory_limit, process.cpu_limit, ...). The zero value of each
// field means the built-in default.
type Baseline struct {
	Mode      string
	Timeout   time.Duration
	Memory    Size
	CPU       MilliCPU
	Pids      int
	KeepAlive *time.Duration // nil: DefaultKeepAlive (0 is a valid keep-alive)
	// PerMode replaces Memory and CPU for functions of one execution mode
	// (the system config's container.memory_limit, container.cpu_limit).
	PerMode map[string]ModeLimits
}

// ModeLimits are one execution mode's defaults for memory and CPU (zero:
// the Baseline's).
type ModeLimits struct {
	Memory Size
	CPU    MilliCPU
}

// forMode returns the baseline a function of mode gets.
func (b Baseline) forMode(mode string) (Baseline, bool) {
	l, ok := b.PerMode[mode]
	if !ok {
		return b, false
	}
	if l.Memory > 0 {
		b.Memory = l.Memory
	}
	if l.CPU > 0 {
		b.CPU = l.CPU
	}
	return b, true
}

// Defaults returns a spec holding the default of every optional field.
func Defaults(b Baseline) Spec {
	s := Spec{
		ExecutionMode: ModeProcess,
		Timeout:       Duration(DefaultTimeout),
		Memory:        DefaultMemory,
		CPU:           DefaultCPU,
		Pids:          DefaultPids,
		KeepAlive:     Duration(DefaultKeepAlive),
		MaxInstances:  DefaultMaxInstances,
		Concurrency:   DefaultConcurrency,
		Network:       NetworkNone,
	}
	if b.Mode != "" {
		s.ExecutionMode = b.Mode
	}
	if b.Timeout > 0 {
		s.Timeout = Duration(b.Timeout)
	}
	if b.Memory > 0 {
		s.Memory = b.Memory
	}
	if b.CPU > 0 {
		s.CPU = b.CPU
	}
	if b.Pids > 0 {
		s.Pids = b.Pids
	}
	if b.KeepAlive != nil {
		s.KeepAlive = Duration(*b.KeepAlive)
	}
	return s
}

// Parse decodes a YAML (or JSON, which is YAML) spec over the defaults and
// validates it. Unknown fields are errors that name the field. A document
// whose only key is "function" (seed 003 §4.2's layout) is unwrapped.
func Parse(data []byte, base Baseline) (*Spec, error) {
	var probe map[string]yaml.Node
	if err := yaml.Unmarshal(data, &probe); err != nil {
		return nil, errdefs.Invalidf("check the YAML syntax", "function spec: %v", err)
	}
	if len(probe) == 0 {
		return nil, errdefs.Invalidf("a spec needs at least name, runtime and handler", "function spec is empty")
	}
	if inner, ok := probe["function"]; ok && len(probe) == 1 {
		b, err := yaml.Marshal(&inner)
		if err != nil {
			return nil, fmt.Errorf("function spec: %w", err)
		}
		data = b
		probe = nil
		if err := yaml.Unmarshal(data, &probe); err != nil {
			return nil, errdefs.Invalidf("check the YAML syntax", "function spec: %v", err)
		}
	}
	// keep_alive: auto is not a duration: take it out of the document (so
	// that keep_alive keeps its default, the fallback) and remember it.
	auto := false
	if v, ok := probe[keepAliveField]; ok && v.Kind == yaml.ScalarNode && isAuto(v.Value) {
		b, err := dropYAMLKey(data, keepAliveField)
		if err != nil {
			return nil, fmt.Errorf("function spec: %w", err)
		}
		data, probe, auto = b, nil, true
		if err := yaml.Unmarshal(data, &probe); err != nil {
			return nil, errdefs.Invalidf("check the YAML syntax", "function spec: %v", err)
		}
	}
	decode := func(base Baseline) (Spec, error) {
		s := Defaults(base)
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&s); err != nil && !errors.Is(err, io.EOF) {
			var le *LineError
			if errors.As(err, &le) {
				for k, v := range probe {
					if v.Line == le.Line {
						hint := "see the function spec reference in the README"
						if k == keepAliveField {
							hint = "write a duration like 10m, 0 for a fresh instance per call, or auto to learn it from the function's idle times"
						}
						return s, errdefs.Invalidf(hint, "field %s: %v", k, le.Err)
					}
				}
			}
			var te *yaml.TypeError
			if errors.As(err, &te) {
				if msg, ok := fieldTypeError(te, probe); ok {
					return s, msg
				}
			}
			return s, errdefs.Invalidf("see the function spec reference in the README for the accepted fields",
				"function spec: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return s, nil
	}
	s, err := decode(base)
	if err != nil {
		return nil, err
	}
	// A mode with defaults of its own: decode again over them, so that
	// what the spec sets still wins.
	if mb, ok := base.forMode(s.ExecutionMode); ok {
		if s, err = decode(mb); err != nil {
			return nil, err
		}
	}
	if auto {
		s.KeepAliveAuto = true
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// ParseJSON decodes a JSON spec over the defaults and validates it.
func ParseJSON(data []byte, base Baseline) (*Spec, error) {
	auto := false
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) == nil {
		var v string
		if raw, ok := fields[keepAliveField]; ok && json.Unmarshal(raw, &v) == nil && isAuto(v) {
			delete(fields, keepAliveField)
			b, err := json.Marshal(fields)
			if err != nil {
				return nil, fmt.Errorf("function spec: %w", err)
			}
			data, auto = b, true
		}
	}
	decode := func(base Baseline) (Spec, error) {
		s := Defaults(base)
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return s, errdefs.Invalidf("see the function spec reference in the README for the accepted fields",
				"function spec: %v", err)
		}
		return s, nil
	}
	s, err := decode(base)
	if err != nil {
		return nil, err
	}
	if mb, ok := base.forMode(s.ExecutionMode); ok {
		if s, err = decode(mb); err != nil {
			return nil, err
		}
	}
	if auto {
		s.KeepAliveAuto = true
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// keepAliveField is the spec field that accepts "auto" besides a duration.
const keepAliveField = "keep_alive"

// KeepAliveAutoValue is the keep_alive value that turns on the adaptive
// policy.
const KeepAliveAutoValue = "auto"

func isAuto(v string) bool { return strings.EqualFold(strings.TrimSpace(v), KeepAliveAutoValue) }

// dropYAMLKey re-encodes a YAML mapping document without key.
func dropYAMLKey(data []byte, key string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return data, nil
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			break
		}
	}
	return yaml.Marshal(&doc)
}

// KeepAliveString renders the keep-alive as a user wrote it: "10m0s", or
// "auto (fallback 10m0s)".
func (s *Spec) KeepAliveString() string {
	if s.KeepAliveAuto {
		return KeepAliveAutoValue + " (fallback " + s.KeepAlive.String() + ")"
	}
	return s.KeepAlive.String()
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	runtimeRE = regexp.MustCompile(`^(python3(\.[0-9]{1,2})?|node([0-9]{1,2})?|exec)$`)
	envKeyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// imageRE is the shape of an OCI image reference: [host[:port]/]path[:tag][@digest].
	imageRE = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[a-z0-9]+:[a-f0-9]{32,})?$`)
)

// Family returns the runtime family of a runtime name: python3, node or exec.
func Family(runtime string) string {
	switch {
	case strings.HasPrefix(runtime, "python3"):
		return RuntimePython
	case strings.HasPrefix(runtime, "node"):
		return RuntimeNode
	default:
		return runtime
	}
}

// Validate checks every field and returns the first problem as an ErrInvalid
// error naming the field and the fix.
func (s *Spec) Validate() error {
	bad := func(field, hint, format string, args ...any) error {
		return errdefs.Invalidf(hint, "field %s: %s", field, fmt.Sprintf(format, args...))
	}
	switch {
	case s.Name == "":
		return bad("name", "add name: my-function", "is required")
	case !nameRE.MatchString(s.Name):
		return bad("name", "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit",
			"%q is not a valid function name", s.Name)
	case s.Retries < 0 || s.Retries > MaxRetries:
		return bad("retries", fmt.Sprintf("use a number of retries between 0 and %d", MaxRetries), "%d is out of range", s.Retries)
	}
	switch s.Kind {
	case "", KindFunction:
		if len(s.Steps) > 0 {
			return bad("steps", "set kind: sequence, or remove steps", "only a sequence has steps")
		}
	case KindSequence:
		return s.validateSequence(bad)
	default:
		return bad("kind", "use function (the default) or sequence", "unknown kind %q", s.Kind)
	}
	switch {
	case s.Runtime == "":
		return bad("runtime", "add runtime: python3, node or exec", "is required")
	case !runtimeRE.MatchString(s.Runtime):
		return bad("runtime", "use one of python3, python3.11, node, exec", "unknown runtime %q", s.Runtime)
	case strings.TrimSpace(s.Handler) == "":
		return bad("handler", "name the handler file (handler.py, handler.js) or, for exec, the command", "is required")
	}
	if Family(s.Runtime) != RuntimeExec {
		clean := path.Clean(s.Handler)
		if path.IsAbs(clean) || strings.HasPrefix(clean, "../") || clean == ".." || strings.ContainsAny(s.Handler, " \t") {
			return bad("handler", "give a file path relative to the function directory, like handler.py",
				"%q is not a relative file path", s.Handler)
		}
	}
	switch s.ExecutionMode {
	case ModeProcess, ModeContainer, ModeMicroVM, ModeAuto:
	default:
		return bad("execution_mode", "use process, container, microvm or auto", "unknown execution mode %q", s.ExecutionMode)
	}
	switch {
	case s.Timeout.D() <= 0:
		return bad("timeout", "use a positive duration like 30s", "must be positive")
	case s.Timeout.D() > MaxTimeout:
		return bad("timeout", "use at most 24h; run longer work asynchronously", "%s is too long", s.Timeout)
	case s.Memory < MinMemory:
		return bad("memory", "use at least 16Mi", "%s is too small", s.Memory)
	case s.CPU <= 0:
		return bad("cpu", "use a positive quantity like 500m or 1", "must be positive")
	case s.Pids < 1 || s.Pids > 32768:
		return bad("pids", "use a number of processes between 1 and 32768", "%d is out of range", s.Pids)
	case s.MaxInstances < 1 || s.MaxInstances > 10000:
		return bad("max_instances", "use a number between 1 and 10000", "%d is out of range", s.MaxInstances)
	case s.Concurrency < 1 || s.Concurrency > 1000:
		return bad("concurrency", "use a number of requests per instance between 1 and 1000", "%d is out of range", s.Concurrency)
	}
	switch s.Network {
	case NetworkNone, NetworkHost:
	default:
		return bad("network", "use none (loopback only) or host", "unknown network %q", s.Network)
	}
	if s.RateLimit != "" || s.RateBurst != 0 {
		if _, _, err := s.Rate(); err != nil {
			return err
		}
	}
	if s.Image != "" {
		switch {
		case s.ExecutionMode != ModeContainer:
			return bad("image", "set execution_mode: container, or remove image (process functions run on the host's runtimes)",
				"only container functions run on an image")
		case len(s.Image) > 255 || strings.ContainsAny(s.Image, " \t\n") || !imageRE.MatchString(s.Image):
			return bad("image", "write an image reference like docker.io/library/python:3.11-slim or myimage:1.0",
				"%q is not an image reference", s.Image)
		}
	}
	for i, e := range s.Environment {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !envKeyRE.MatchString(k) {
			return bad(fmt.Sprintf("environment[%d]", i), "write entries as NAME=value", "%q is not NAME=value", e)
		}
	}
	return nil
}

// validateSequence checks a sequence: its steps, and none of the fields
// that only code has.
func (s *Spec) validateSequence(bad func(field, hint, format string, args ...any) error) error {
	switch {
	case len(s.Steps) == 0:
		return bad("steps", "list the functions to call in order, like steps: [resize, watermark, store]", "a sequence needs at least one step")
	case len(s.Steps) > MaxSteps:
		return bad("steps", fmt.Sprintf("use at most %d steps, or nest sequences", MaxSteps), "%d steps are too many", len(s.Steps))
	case s.Runtime != "" || s.Handler != "":
		return bad("runtime", "remove runtime and handler: a sequence runs its steps' code, not its own", "a sequence has no runtime or handler")
	case s.Image != "":
		return bad("image", "remove image: a sequence runs its steps' code, not its own", "a sequence has no image")
	case s.Timeout.D() <= 0 || s.Timeout.D() > MaxTimeout:
		return bad("timeout", "use a positive duration up to 24h; it bounds the whole chain", "%s is out of range", s.Timeout)
	}
	for i, st := range s.Steps {
		switch {
		case !nameRE.MatchString(st):
			return bad(fmt.Sprintf("steps[%d]", i), "name a function of the sequence's namespace, like resize", "%q is not a function name", st)
		case st == s.Name:
			return bad(fmt.Sprintf("steps[%d]", i), "a sequence cannot call itself; name another function", "step %q is the sequence itself", st)
		}
	}
	if s.RateLimit != "" || s.RateBurst != 0 {
		if _, _, err := s.Rate(); err != nil {
			return err
		}
	}
	return nil
}

// ValidateCode checks the spec against the function's unpacked code in dir:
// the handler file must exist (for exec, the command's first word, when it is
// a relative path).
func (s *Spec) ValidateCode(dir string) error {
	file := s.Handler
	if Family(s.Runtime) == RuntimeExec {
		file = strings.Fields(s.Handler)[0]
		if filepath.IsAbs(file) {
			if _, err := os.Stat(file); err != nil {
				return errdefs.Invalidf("install the program or ship it in the function directory",
					"field handler: command %q does not exist", file)
			}
			return nil
		}
		if !strings.Contains(file, "/") {
			if _, err := os.Stat(filepath.Join(dir, file)); err != nil {
				// A bare command is looked up on the sandbox's PATH, which is
				// the host's read-only /usr/bin and /bin.
				for _, d := range ExecPath() {
					if _, err := os.Stat(filepath.Join(d, file)); err == nil {
						return nil
					}
				}
				return errdefs.Invalidf("ship the program in the function directory or name one in /usr/bin",
					"field handler: command %q is neither in the function's code nor on PATH", file)
			}
		}
	}
	p := filepath.Join(dir, filepath.FromSlash(path.Clean(file)))
	st, err := os.Stat(p)
	if err != nil {
		return errdefs.Invalidf(fmt.Sprintf("put %s next to the spec file, or fix the handler field", file),
			"field handler: file %q is not in the function's code", file)
	}
	if st.IsDir() {
		return errdefs.Invalidf("name a file, not a directory", "field handler: %q is a directory", file)
	}
	if Family(s.Runtime) == RuntimeExec && st.Mode()&0o111 == 0 {
		return errdefs.Invalidf(fmt.Sprintf("chmod +x %s", file), "field handler: %q is not executable", file)
	}
	return nil
}

// ExecPath is the PATH inside a sandbox, where exec handlers that name a bare
// command are looked up.
func ExecPath() []string { return []string{"/usr/local/bin", "/usr/bin", "/bin"} }

// Env returns the environment as a map.
func (s *Spec) Env() map[string]string {
	m := make(map[string]string, len(s.Environment))
	for _, e := range s.Environment {
		k, v, _ := strings.Cut(e, "=")
		m[k] = v
	}
	return m
}
