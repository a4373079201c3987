package runtime

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

func TestExtract(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wisp")
	if err := Extract(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{PythonHost, NodeHost} {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := fs.ReadFile(Files(), name)
		if len(want) == 0 || string(got) != string(want) {
			t.Errorf("%s: extracted %d bytes, embedded %d", name, len(got), len(want))
		}
		st, _ := os.Stat(p)
		if st.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, want 0644", name, st.Mode())
		}
		dst, _ := os.Stat(filepath.Dir(p))
		if dst.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, want 0755", filepath.Dir(p), dst.Mode())
		}
	}

	// Unchanged files are not rewritten; changed ones are restored.
	py := filepath.Join(dir, PythonHost)
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(py, old, old); err != nil {
		t.Fatal(err)
	}
	js := filepath.Join(dir, NodeHost)
	if err := os.WriteFile(js, []byte("tampered"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Extract(dir); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(py); !st.ModTime().Equal(old) {
		t.Error("an up-to-date host file was rewritten")
	}
	if b, _ := os.ReadFile(js); string(b) == "tampered" {
		t.Error("a changed host file was not restored")
	}
	if st, _ := os.Stat(js); st.Mode().Perm() != 0o644 {
		t.Errorf("restored file mode %v", st.Mode())
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(js))
	if len(entries) != 1 {
		t.Errorf("node dir holds %d entries, want 1", len(entries))
	}
}

func TestLauncherCommand(t *testing.T) {
	bin := t.TempDir()
	for _, name := range []string{"python3", "python3.11", "node"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l := Launcher{Python: filepath.Join(bin, "python3"), Node: filepath.Join(bin, "node"),
		Runtimes: map[string]string{"node18": filepath.Join(bin, "python3.11")}}
	tests := []struct {
		runtime  string
		want     []string
		wantKind error
		wantHint string
	}{
		{runtime: "python3", want: []string{bin + "/python3", "-B", "-S", "/wisp/python/host.py", "/code", "h.py"}},
		{runtime: "python3.11", want: []string{bin + "/python3.11", "-B", "-S", "/wisp/python/host.py", "/code", "h.py"}},
		{runtime: "python3.99", wantKind: errdefs.ErrUnavailable, wantHint: "apt-get install python3.99"},
		{runtime: "node", want: []string{bin + "/node", "/wisp/node/host.js", "/code", "h.py"}},
		{runtime: "node20", want: []string{bin + "/node", "/wisp/node/host.js", "/code", "h.py"}},
		{runtime: "node18", want: []string{bin + "/python3.11", "/wisp/node/host.js", "/code", "h.py"}},
		{runtime: "exec", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.runtime, func(t *testing.T) {
			spec := &function.Spec{Name: "f", Runtime: tt.runtime, Handler: "h.py"}
			got, err := l.Command(spec, SandboxCodeDir, SandboxRuntimeDir)
			if tt.wantKind != nil {
				if !errors.Is(err, tt.wantKind) || errdefs.Hint(err) != tt.wantHint {
					t.Fatalf("err = %v (hint %q), want %v with hint %q", err, errdefs.Hint(err), tt.wantKind, tt.wantHint)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("Command = %q, %v; want %q", got, err, tt.want)
			}
		})
	}

	missing := Launcher{Node: filepath.Join(bin, "nope")}
	_, err := missing.Command(&function.Spec{Name: "f", Runtime: "node", Handler: "h.js"}, "/code", "/wisp")
	if !errors.Is(err, errdefs.ErrUnavailable) || errdefs.Hint(err) != "apt-get install nodejs" {
		t.Errorf("missing node: err = %v, hint %q", err, errdefs.Hint(err))
	}
}

func TestDefaultLauncherUsesDebianPaths(t *testing.T) {
	l := DefaultLauncher()
	if l.Python != "/usr/bin/python3" || l.Node != "/usr/bin/node" {
		t.Errorf("DefaultLauncher = %+v", l)
	}
}

func TestHostEnv(t *testing.T) {
	spec := &function.Spec{Name: "f", Concurrency: 4, Environment: []string{"A=1", "WISP_CONCURRENCY=99"}}
	env := HostEnv(spec, 1000)
	joined := strings.Join(env, "\n")
	for _, want := range []string{"PATH=/usr/local/bin:/usr/bin:/bin", "A=1", "WISP_LOG_LIMIT=1000", "WISP_FUNCTION=f"} {
		if !slices.Contains(env, want) {
			t.Errorf("env lacks %s:\n%s", want, joined)
		}
	}
	// The host's settings come last, so the function cannot override them.
	if i, j := slices.Index(env, "WISP_CONCURRENCY=99"), slices.Index(env, "WISP_CONCURRENCY=4"); j < i {
		t.Errorf("WISP_CONCURRENCY from the spec wins:\n%s", joined)
	}
}
