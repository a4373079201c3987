package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

// The reference must parse to Default(), and list every field: decoding it
// over a zero Config (not over the defaults) must also give Default().
func TestReferenceIsDefault(t *testing.T) {
	got, err := Parse("example.yaml", []byte(Reference))
	if err != nil {
		t.Fatalf("Parse(Reference) = %v", err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("Reference parses to\n%+v\nwant Default()\n%+v", got, Default())
	}
	var zero Config
	if err := yaml.Unmarshal([]byte(Reference), &zero); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(zero, Default()) {
		t.Fatalf("Reference over a zero Config gives\n%+v\nwant\n%+v", zero, Default())
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(Reference), &doc); err != nil {
		t.Fatal(err)
	}
	lines := map[string]int{}
	if err := check(doc.Content[0], reflect.TypeFor[Config](), "", lines, nil); err != nil {
		t.Fatal(err)
	}
	var missing []string
	var walk func(reflect.Type, string)
	walk = func(rt reflect.Type, prefix string) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			key := prefix + name
			if _, ok := lines[key]; !ok {
				missing = append(missing, key)
			}
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, key+".")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	if len(missing) > 0 {
		t.Fatalf("Reference does not list %v", missing)
	}
	for i, line := range strings.Split(Reference, "\n") {
		if strings.Contains(line, ": ") && strings.HasPrefix(line, "  ") && !strings.Contains(line, "#") {
			t.Errorf("Reference line %d has no comment: %q", i+1, line)
		}
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    func(*Config)
		wantErr string // substring of the message; "" means success
		kind    error
	}{
		{name: "empty", yaml: "", want: func(*Config) {}},
		{name: "comment only", yaml: "# nothing\n", want: func(*Config) {}},
		{name: "empty section keeps defaults", yaml: "execution:\n", want: func(*Config) {}},
		{
			name: "overrides",
			yaml: "execution:\n  default_mode: auto\n  max_queue: 0\n  warm_instance_ttl: 0\nprocess:\n  memory_limit: 256Mi\n  cpu_limit: 500m\n  namespace_types: [pid, mount, user, cgroup]\ngateway:\n  listen: ':9000'\n",
			want: func(c *Config) {
				c.Execution.DefaultMode = "auto"
				c.Execution.MaxQueue = 0
				c.Execution.WarmInstanceTTL = 0
				c.Process.MemoryLimit = 256 << 20
				c.Process.CPULimit = 500
				c.Process.NamespaceTypes = []string{"pid", "mount", "user", "cgroup"}
				c.Gateway.Listen = ":9000"
			},
		},
		{
			name: "seed 003 4.1 layout with runc",
			yaml: `execution:
  default_mode: "process"
  max_concurrent_functions: 1000
  cold_start_timeout: "30s"
  warm_instance_ttl: "10m"
container:
  runtime: "runc"
  base_image: "python:3.11-slim"
  memory_limit: "128Mi"
  cpu_limit: "100m"
process:
  isolation_level: "strict"
  namespace_types: ["pid", "mount", "user"]
  memory_limit: "128Mi"
  cpu_limit: "100m"
`,
			want: func(c *Config) {
				c.Container.BaseImage = "python:3.11-slim"
				c.Container.CPULimit = 100
				c.Process.NamespaceTypes = []string{"pid", "mount", "user"}
				c.Process.CPULimit = 100
			},
		},
		{
			name:    "unknown field names key and line",
			yaml:    "# system\nexecution:\n  default_mode: process\n  max_concurent_functions: 10\n",
			wantErr: `config wisp.yaml line 4: unknown field "max_concurent_functions" in execution`,
			kind:    errdefs.ErrInvalid,
		},
		{name: "unknown section", yaml: "executon:\n  default_mode: process\n", wantErr: `line 1: unknown section "executon"`, kind: errdefs.ErrInvalid},
		{name: "bad mode", yaml: "execution:\n  default_mode: fast\n",
			wantErr: `config wisp.yaml line 2: execution.default_mode: unknown mode "fast"; use process, container, microvm or auto`, kind: errdefs.ErrInvalid},
		{name: "bad duration", yaml: "execution:\n  cold_start_timeout: soon\n", wantErr: `line 2: execution.cold_start_timeout: duration "soon"`, kind: errdefs.ErrInvalid},
		{name: "bad int", yaml: "execution:\n\n  max_queue: lots\n", wantErr: "line 3: execution.max_queue: cannot unmarshal", kind: errdefs.ErrInvalid},
		{name: "bad size", yaml: "store:\n  max_code_size: big\n", wantErr: "line 2: store.max_code_size: size", kind: errdefs.ErrInvalid},
		{name: "duplicate key", yaml: "log:\n  level: info\n  level: debug\n", wantErr: "line 3: log.level is set twice", kind: errdefs.ErrInvalid},
		{name: "section not a mapping", yaml: "log: loud\n", wantErr: "line 1: log must be a mapping", kind: errdefs.ErrInvalid},
		{name: "top level not a mapping", yaml: "- a\n", wantErr: "the file must be a mapping", kind: errdefs.ErrInvalid},
		{name: "syntax", yaml: "log:\n  level: [\n", wantErr: "config wisp.yaml: line", kind: errdefs.ErrInvalid},
		{name: "unknown namespace", yaml: "process:\n  namespace_types:\n    - pid\n    - mount\n    - time\n",
			wantErr: `line 5: process.namespace_types[2]: unknown namespace "time"`, kind: errdefs.ErrInvalid},
		{name: "mnt", yaml: "process:\n  namespace_types: [pid, mnt]\n", wantErr: `wisp calls it "mount"`, kind: errdefs.ErrInvalid},
		{name: "pid required", yaml: "process:\n  namespace_types: [mount]\n", wantErr: `line 2: process.namespace_types: "pid" is required`, kind: errdefs.ErrInvalid},
		{name: "duplicate namespace", yaml: "process:\n  namespace_types: [pid, mount, pid]\n", wantErr: `"pid" is listed twice`, kind: errdefs.ErrInvalid},
		{name: "isolation", yaml: "process:\n  isolation_level: paranoid\n", wantErr: "process.isolation_level: unknown isolation level", kind: errdefs.ErrInvalid},
		{name: "docker runtime", yaml: "container:\n  runtime: docker\n", wantErr: "container.runtime: \"docker\" is not an OCI runtime", kind: errdefs.ErrInvalid},
		{name: "uid range", yaml: "process:\n  uid_base: 4294967000\n  uid_count: 1000\n", wantErr: "process.uid_count: uid range", kind: errdefs.ErrInvalid},
		{name: "root uid", yaml: "process:\n  uid_base: 0\n", wantErr: "process.uid_base", kind: errdefs.ErrInvalid},
		{name: "cgroup escape", yaml: "process:\n  cgroup_root: ../x\n", wantErr: "process.cgroup_root", kind: errdefs.ErrInvalid},
		{name: "relative python", yaml: "process:\n  python: python3\n", wantErr: "process.python", kind: errdefs.ErrInvalid},
		{name: "listen", yaml: "gateway:\n  listen: localhost\n", wantErr: "gateway.listen", kind: errdefs.ErrInvalid},
		{name: "listen port", yaml: "gateway:\n  listen: 'localhost:99999'\n", wantErr: "gateway.listen", kind: errdefs.ErrInvalid},
		{name: "memory", yaml: "process:\n  memory_limit: 1Mi\n", wantErr: "process.memory_limit: 1Mi is too small", kind: errdefs.ErrInvalid},
		{name: "retention", yaml: "store:\n  activation_retention: 0\n", wantErr: "store.activation_retention", kind: errdefs.ErrInvalid},
		{name: "unpacked", yaml: "store:\n  max_unpacked_size: 1Mi\n", wantErr: "store.max_unpacked_size", kind: errdefs.ErrInvalid},
		{name: "log limit zero", yaml: "store:\n  log_limit: 0\n", wantErr: "store.log_limit: must be positive", kind: errdefs.ErrInvalid},
		{name: "result limit", yaml: "store:\n  result_limit: 1Gi\n", wantErr: "store.result_limit: 1Gi is too large", kind: errdefs.ErrInvalid},
		{name: "log level", yaml: "log:\n  level: verbose\n", wantErr: "log.level", kind: errdefs.ErrInvalid},
		{name: "log format", yaml: "log:\n  format: xml\n", wantErr: "log.format", kind: errdefs.ErrInvalid},
		{name: "queue timeout", yaml: "execution:\n  queue_timeout: 0s\n", wantErr: "execution.queue_timeout: must be positive", kind: errdefs.ErrInvalid},
		{
			name:    "anchors and merge keys",
			yaml:    "limits: &l\n  memory_limit: 256Mi\n",
			wantErr: `unknown section "limits"`, kind: errdefs.ErrInvalid,
		},
		{name: "merge key refers to itself", yaml: "execution: &a {<<: *a}\n", wantErr: "refers to the mapping", kind: errdefs.ErrInvalid},
		{name: "merge nested", yaml: "execution: &a\n  process: {<<: *a}\n", wantErr: `unknown field "process" in execution`, kind: errdefs.ErrInvalid},
		{
			name:    "merge key inside a section",
			yaml:    "process: &p\n  memory_limit: 256Mi\ncontainer:\n  <<: *p\n",
			wantErr: "", want: func(c *Config) {
				c.Process.MemoryLimit = 256 << 20
				c.Container.MemoryLimit = 256 << 20
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "wisp.yaml")
			if err := os.WriteFile(p, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := Load(p)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Load = nil error, want %q", tt.wantErr)
				}
				msg := strings.ReplaceAll(err.Error(), p, "wisp.yaml")
				if !strings.Contains(msg, tt.wantErr) {
					t.Fatalf("Load error = %q, want it to contain %q", msg, tt.wantErr)
				}
				if !errors.Is(err, tt.kind) {
					t.Fatalf("Load error %v is not %v", err, tt.kind)
				}
				if errdefs.Hint(err) == "" {
					t.Fatalf("Load error %q has no hint", msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load = %v", err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Load =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestUnknownFieldHint(t *testing.T) {
	_, err := Parse("wisp.yaml", []byte("execution:\n  max_concurent_functions: 10\n"))
	if h := errdefs.Hint(err); !strings.Contains(h, `did you mean "max_concurrent_functions"?`) {
		t.Fatalf("hint = %q", h)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, errdefs.ErrNotFound) || errdefs.Hint(err) == "" {
		t.Fatalf("Load(missing) = %v, want ErrNotFound with a hint", err)
	}
}

func TestBaseline(t *testing.T) {
	c := Default()
	c.Execution.DefaultMode = function.ModeContainer
	c.Execution.WarmInstanceTTL = 0
	c.Process.MemoryLimit = 256 << 20
	c.Process.CPULimit = 250
	c.Process.PidsLimit = 32
	b := c.Baseline()
	spec := function.Defaults(b)
	if spec.ExecutionMode != "container" || spec.Memory != 256<<20 || spec.CPU != 250 || spec.Pids != 32 || spec.KeepAlive != 0 {
		t.Fatalf("Defaults(Baseline()) = %+v", spec)
	}
	if spec.Timeout.D() != function.DefaultTimeout {
		t.Fatalf("timeout = %s", spec.Timeout)
	}
	if d := Default().Baseline(); *d.KeepAlive != 10*time.Minute {
		t.Fatalf("keep-alive = %s", *d.KeepAlive)
	}
}

func TestNamespaces(t *testing.T) {
	tests := []struct {
		level   string
		want    []string
		seccomp bool
	}{
		{IsolationStrict, []string{"pid", "mount", "ipc", "uts", "net"}, true},
		{IsolationLightweight, []string{"pid", "mount", "ipc", "uts"}, false},
	}
	for _, tt := range tests {
		p := Default().Process
		p.IsolationLevel = tt.level
		if got := p.Namespaces(); !reflect.DeepEqual(got, tt.want) || p.Seccomp() != tt.seccomp {
			t.Errorf("%s: Namespaces() = %v, Seccomp() = %v", tt.level, got, p.Seccomp())
		}
	}
}

func TestUnpackedLimit(t *testing.T) {
	s := Default().Store
	if s.UnpackedLimit() != 500<<20 {
		t.Fatalf("UnpackedLimit = %s", s.UnpackedLimit())
	}
	s.MaxUnpackedSize = 1 << 30
	if s.UnpackedLimit() != 1<<30 {
		t.Fatalf("UnpackedLimit = %s", s.UnpackedLimit())
	}
}

// A Config marshalled back to YAML loads to the same value.
func TestRoundTrip(t *testing.T) {
	c := Default()
	c.Process.CPULimit = 1500
	c.Gateway.ShutdownTimeout = function.Duration(90 * time.Second)
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("rt.yaml", b)
	if err != nil {
		t.Fatalf("Parse(%s) = %v", b, err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip: %+v", got)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(Reference))
	f.Add([]byte("execution:\n  default_mode: fast\n"))
	f.Add([]byte("process: &p\n  memory_limit: 256Mi\ncontainer:\n  <<: *p\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("execution: &a {<<: *a}\n"))
	f.Add([]byte("log: {level: debug, format: text}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config Validate rejects: %v", err)
		}
		b, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		c2, err := Parse("fuzz2.yaml", b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip differs:\n%+v\n%+v", c, c2)
		}
	})
}

// The README's "System configuration" block is the reference, word for
// word, so the documented defaults cannot drift from the real ones.
func TestREADMEShowsReference(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```yaml\n"+Reference+"```") {
		t.Fatal("README.md's configuration block differs from internal/config/example.yaml: copy example.yaml into it")
	}
}
