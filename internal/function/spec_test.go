package function

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func TestParseDefaultsAndFields(t *testing.T) {
	s, err := Parse([]byte("name: hello\nruntime: python3\nhandler: handler.py\n"), Baseline{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Timeout.D() != DefaultTimeout || s.Memory != DefaultMemory || s.KeepAlive.D() != DefaultKeepAlive ||
		s.MaxInstances != DefaultMaxInstances || s.Concurrency != 1 || s.ExecutionMode != ModeProcess || s.Network != NetworkNone {
		t.Fatalf("defaults not applied: %+v", s)
	}
	full := `
name: my-function
runtime: python3.11
handler: handler.py
execution_mode: process
timeout: 1m30s
memory: 256Mi
cpu: 500m
keep_alive: 0
max_instances: 3
concurrency: 4
environment: ["API_KEY=secret", "EMPTY="]
deterministic: true
`
	s, err = Parse([]byte(full), Baseline{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Timeout.D() != 90*time.Second || s.Memory != 256<<20 || s.CPU != 500 || s.KeepAlive != 0 ||
		s.MaxInstances != 3 || s.Concurrency != 4 || !s.Deterministic || s.Env()["API_KEY"] != "secret" {
		t.Fatalf("fields wrong: %+v", s)
	}
}

func TestParseBaseline(t *testing.T) {
	ka := 30 * time.Second
	s, err := Parse([]byte("name: a\nruntime: exec\nhandler: cat\n"), Baseline{Memory: 64 << 20, KeepAlive: &ka, Mode: ModeProcess})
	if err != nil {
		t.Fatal(err)
	}
	if s.Memory != 64<<20 || s.KeepAlive.D() != ka {
		t.Fatalf("baseline not applied: %+v", s)
	}
}

// A mode with limits of its own (container.memory_limit) gives them to
// functions of that mode that set none; what a spec sets wins.
func TestParseBaselinePerMode(t *testing.T) {
	base := Baseline{Memory: 128 << 20, CPU: 1000, PerMode: map[string]ModeLimits{ModeContainer: {Memory: 256 << 20}}}
	tests := []struct {
		name, spec string
		wantMem    Size
		wantCPU    MilliCPU
	}{
		{"process keeps the baseline", "name: a\nruntime: exec\nhandler: cat\n", 128 << 20, 1000},
		{"container gets its own", "name: a\nruntime: exec\nhandler: cat\nexecution_mode: container\n", 256 << 20, 1000},
		{"spec wins", "name: a\nruntime: exec\nhandler: cat\nexecution_mode: container\nmemory: 64Mi\n", 64 << 20, 1000},
		{"json too", `{"name":"a","runtime":"exec","handler":"cat","execution_mode":"container"}`, 256 << 20, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parse := Parse
			if strings.HasPrefix(tt.spec, "{") {
				parse = ParseJSON
			}
			s, err := parse([]byte(tt.spec), base)
			if err != nil {
				t.Fatal(err)
			}
			if s.Memory != tt.wantMem || s.CPU != tt.wantCPU {
				t.Errorf("memory %s cpu %s, want %s %s", s.Memory, s.CPU, tt.wantMem, tt.wantCPU)
			}
		})
	}
}

// environment is a list of NAME=value or, as OpenFaaS writes it, a mapping.
func TestEnvironmentForms(t *testing.T) {
	tests := []struct{ name, spec string }{
		{"list", "name: a\nruntime: exec\nhandler: cat\nenvironment: [B=2, A=1]\n"},
		{"mapping", "name: a\nruntime: exec\nhandler: cat\nenvironment:\n  B: \"2\"\n  A: 1\n"},
		{"json list", `{"name":"a","runtime":"exec","handler":"cat","environment":["B=2","A=1"]}`},
		{"json object", `{"name":"a","runtime":"exec","handler":"cat","environment":{"B":"2","A":"1"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parse := Parse
			if strings.HasPrefix(tt.spec, "{") {
				parse = ParseJSON
			}
			s, err := parse([]byte(tt.spec), Baseline{})
			if err != nil {
				t.Fatal(err)
			}
			if env := s.Env(); env["A"] != "1" || env["B"] != "2" || len(env) != 2 {
				t.Errorf("Env() = %v", env)
			}
		})
	}
}

func TestImageReferences(t *testing.T) {
	for _, ref := range []string{"python:3.11", "docker.io/library/python:3.11-slim", "localhost:5000/team/fn:v1",
		"wisp.local/runtime/python3:abc", "alpine@sha256:" + strings.Repeat("a", 64)} {
		spec := "name: a\nruntime: python3\nhandler: h.py\nexecution_mode: container\nimage: " + ref + "\n"
		if _, err := Parse([]byte(spec), Baseline{}); err != nil {
			t.Errorf("%s: %v", ref, err)
		}
	}
}

// Seed 003 §4.2's example loads as is.
func TestParseSeedLayout(t *testing.T) {
	seed := `
function:
  name: "my-function"
  runtime: "python3.11"
  handler: handler.py
  execution_mode: "process"
  timeout: "30s"
  memory: "256Mi"
  environment:
    - "API_KEY=secret"
  dependencies:
    - "requests==2.28.0"
    - "numpy==1.21.0"
`
	s, err := Parse([]byte(seed), Baseline{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "my-function" || len(s.Dependencies) != 2 {
		t.Fatalf("seed layout: %+v", s)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, spec, want string
	}{
		{"empty", "", "empty"},
		{"syntax", "name: [", "line 1"},
		{"missing name", "runtime: python3\nhandler: h.py\n", "field name"},
		{"bad name", "name: Hello_World\nruntime: python3\nhandler: h.py\n", "field name"},
		{"long name", "name: " + strings.Repeat("a", 64) + "\nruntime: python3\nhandler: h.py\n", "field name"},
		{"unknown runtime", "name: a\nruntime: ruby\nhandler: h.rb\n", "unknown runtime \"ruby\""},
		{"missing handler", "name: a\nruntime: python3\n", "field handler"},
		{"absolute handler", "name: a\nruntime: python3\nhandler: /etc/passwd\n", "field handler"},
		{"escaping handler", "name: a\nruntime: python3\nhandler: ../x.py\n", "field handler"},
		{"bad duration", "name: a\nruntime: python3\nhandler: h.py\ntimeout: soon\n", "field timeout"},
		{"negative duration", "name: a\nruntime: python3\nhandler: h.py\nkeep_alive: -5s\n", "field keep_alive"},
		{"zero timeout", "name: a\nruntime: python3\nhandler: h.py\ntimeout: 0\n", "field timeout"},
		{"bad size", "name: a\nruntime: python3\nhandler: h.py\nmemory: lots\n", "field memory"},
		{"tiny memory", "name: a\nruntime: python3\nhandler: h.py\nmemory: 1Mi\n", "field memory"},
		{"bad cpu", "name: a\nruntime: python3\nhandler: h.py\ncpu: fast\n", "field cpu"},
		{"bad mode", "name: a\nruntime: python3\nhandler: h.py\nexecution_mode: fast\n", "field execution_mode"},
		{"bad network", "name: a\nruntime: python3\nhandler: h.py\nnetwork: wifi\n", "field network"},
		{"bad env", "name: a\nruntime: python3\nhandler: h.py\nenvironment: [NOEQUALS]\n", "field environment[0]"},
		{"unknown field", "name: a\nruntime: python3\nhandler: h.py\nmemroy: 1Gi\n", "memroy"},
		{"max_instances", "name: a\nruntime: python3\nhandler: h.py\nmax_instances: 0\n", "field max_instances"},
		{"concurrency", "name: a\nruntime: python3\nhandler: h.py\nconcurrency: -1\n", "field concurrency"},
		{"env of numbers", "name: a\nruntime: python3\nhandler: h.py\nenvironment: 5\n", "field environment"},
		{"env nested", "name: a\nruntime: python3\nhandler: h.py\nenvironment: {A: [1]}\n", "field environment"},
		{"pids type", "name: a\nruntime: python3\nhandler: h.py\npids: many\n", "field pids"},
		{"image on process", "name: a\nruntime: python3\nhandler: h.py\nimage: python:3.11\n", "field image"},
		{"bad image", "name: a\nruntime: python3\nhandler: h.py\nexecution_mode: container\nimage: Not An Image\n", "field image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.spec), Baseline{})
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %q, want it to contain %q", err, tt.want)
			}
			if errdefs.Hint(err) == "" {
				t.Fatalf("err %q has no hint", err)
			}
		})
	}
}

func TestParseJSON(t *testing.T) {
	s, err := ParseJSON([]byte(`{"name":"j","runtime":"node","handler":"h.js","timeout":5,"memory":"64Mi"}`), Baseline{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Timeout.D() != 5*time.Second || s.Memory != 64<<20 {
		t.Fatalf("json: %+v", s)
	}
	if _, err := ParseJSON([]byte(`{"name":"j","runtime":"node","handler":"h.js","bogus":1}`), Baseline{}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("unknown JSON field: %v", err)
	}
}

func TestValidateCode(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "h.py"), []byte("def handle(r): return 1"), 0o644)
	os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\ncat"), 0o755)
	os.WriteFile(filepath.Join(dir, "noexec.sh"), []byte("#!/bin/sh\ncat"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	tests := []struct {
		runtime, handler string
		ok               bool
	}{
		{"python3", "h.py", true},
		{"python3", "missing.py", false},
		{"python3", "sub", false},
		{"exec", "run.sh", true},
		{"exec", "./run.sh --flag", true},
		{"exec", "noexec.sh", false},
		{"exec", "cat", true},
		{"exec", "/bin/cat", true},
		{"exec", "no-such-command-xyz", false},
		{"exec", "/no/such/bin", false},
	}
	for _, tt := range tests {
		s := Spec{Name: "a", Runtime: tt.runtime, Handler: tt.handler}
		err := s.ValidateCode(dir)
		if (err == nil) != tt.ok {
			t.Errorf("%s %q: err = %v, want ok=%v", tt.runtime, tt.handler, err, tt.ok)
		}
	}
}

func TestQuantities(t *testing.T) {
	sizes := map[string]Size{"64Mi": 64 << 20, "1Gi": 1 << 30, "512Ki": 512 << 10, "128M": 128e6, "100": 100, "1.5Gi": 3 << 29}
	for in, want := range sizes {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if Size(64<<20).String() != "64Mi" || Size(1000).String() != "1000" {
		t.Error("Size.String")
	}
	cpus := map[string]MilliCPU{"500m": 500, "1": 1000, "0.25": 250, "2": 2000}
	for in, want := range cpus {
		got, err := ParseMilliCPU(in)
		if err != nil || got != want {
			t.Errorf("ParseMilliCPU(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	durs := map[string]time.Duration{"30s": 30 * time.Second, "10m": 10 * time.Minute, "0": 0, "1.5": 1500 * time.Millisecond}
	for in, want := range durs {
		got, err := ParseDuration(in)
		if err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1s", "1 parsec"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("name: a\nruntime: python3\nhandler: h.py\ntimeout: 5s\nmemory: 64Mi\n"))
	f.Add([]byte("function:\n  name: b\n  runtime: exec\n  handler: cat\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data, Baseline{})
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error of the wrong kind: %v", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Parse returned a spec that does not validate: %v", err)
		}
	})
}

// keep_alive: auto turns on the adaptive policy; keep_alive keeps its
// default (the fallback) unless keep_alive_auto is set beside a duration.
func TestKeepAliveAuto(t *testing.T) {
	ka := 30 * time.Second
	base := Baseline{KeepAlive: &ka}
	const head = "name: a\nruntime: exec\nhandler: cat\n"
	tests := []struct {
		name     string
		spec     string
		json     bool // ParseJSON instead of Parse
		wantAuto bool
		wantKA   time.Duration
	}{
		{"yaml auto", head + "keep_alive: auto\n", false, true, ka},
		{"yaml AUTO quoted", head + "keep_alive: \"AUTO\"\n", false, true, ka},
		{"yaml fixed", head + "keep_alive: 2m\n", false, false, 2 * time.Minute},
		{"yaml auto with a fallback", head + "keep_alive: 2m\nkeep_alive_auto: true\n", false, true, 2 * time.Minute},
		{"seed 003 layout", "function:\n  name: a\n  runtime: exec\n  handler: cat\n  keep_alive: auto\n", false, true, ka},
		{"json auto", `{"name":"a","runtime":"exec","handler":"cat","keep_alive":"auto"}`, true, true, ka},
		{"json read as yaml", `{"name":"a","runtime":"exec","handler":"cat","keep_alive":"auto"}`, false, true, ka},
		{"json fixed number", `{"name":"a","runtime":"exec","handler":"cat","keep_alive":0}`, true, false, 0},
		{"json stored form", `{"name":"a","runtime":"exec","handler":"cat","keep_alive":"1m0s","keep_alive_auto":true}`, true, true, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parse := Parse
			if tt.json {
				parse = ParseJSON
			}
			s, err := parse([]byte(tt.spec), base)
			if err != nil {
				t.Fatal(err)
			}
			if s.KeepAliveAuto != tt.wantAuto || s.KeepAlive.D() != tt.wantKA {
				t.Fatalf("auto=%v keep_alive=%s, want %v %s", s.KeepAliveAuto, s.KeepAlive, tt.wantAuto, tt.wantKA)
			}
		})
	}
}

func TestKeepAliveAutoRoundTrip(t *testing.T) {
	s, err := Parse([]byte("name: a\nruntime: exec\nhandler: cat\nkeep_alive: auto\n"), Baseline{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.KeepAliveAuto || back.KeepAlive.D() != DefaultKeepAlive {
		t.Fatalf("after a JSON round trip: %s", b)
	}
	if got := back.KeepAliveString(); got != "auto (fallback 10m0s)" {
		t.Fatalf("KeepAliveString() = %q", got)
	}
	y, err := yaml.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(y, Baseline{})
	if err != nil {
		t.Fatalf("re-parse %s: %v", y, err)
	}
	if !again.KeepAliveAuto {
		t.Fatalf("after a YAML round trip: %s", y)
	}
}

// Errors still name the field, also in a document that says auto.
func TestKeepAliveAutoErrors(t *testing.T) {
	const head = "name: a\nruntime: exec\nhandler: cat\n"
	tests := []struct{ name, spec, field string }{
		{"not a duration nor auto", head + "keep_alive: automatic\n", "field keep_alive"},
		{"another field after auto", head + "keep_alive: auto\nmemory: lots\n", "field memory"},
		{"another field before auto", head + "timeout: soon\nkeep_alive: auto\n", "field timeout"},
		{"unknown field beside auto", head + "keep_alive: auto\nkeepalive: 1m\n", "keepalive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.spec), Baseline{})
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("err = %v, want ErrInvalid naming %q", err, tt.field)
			}
		})
	}
	_, err := ParseJSON([]byte(`{"name":"a","runtime":"exec","handler":"cat","keep_alive":"sometimes"}`), Baseline{})
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("json: err = %v, want ErrInvalid", err)
	}
}
