package store

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// archiveNames lists the entry names of a tar.gz, in archive order, and
// checks the header fields Pack zeroes.
func archiveNames(t *testing.T, data []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || h.ModTime.Unix() != 0 {
			t.Errorf("%s: header not normalised: %+v", h.Name, h)
		}
		names = append(names, h.Name)
	}
	return names
}

func pack(t *testing.T, dir string, ignore ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Pack(dir, &buf, ignore); err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return buf.Bytes()
}

func TestPackDeterministic(t *testing.T) {
	files := map[string]string{
		"handler.py":      "def handle(req): return 'hi'\n",
		"lib/a.py":        "A = 1\n",
		"lib/b.py":        "B = 2\n",
		"lib/sub/deep.py": "D = 3\n",
		"z.txt":           "z",
	}
	a, b := t.TempDir(), t.TempDir()
	writeTree(t, a, files)
	writeTree(t, b, files)
	// Same content, different times and non-exec permission bits.
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	os.Chtimes(filepath.Join(b, "handler.py"), old, old)
	os.Chmod(filepath.Join(b, "lib", "a.py"), 0o600)
	pa, pb := pack(t, a), pack(t, b)
	if sha256.Sum256(pa) != sha256.Sum256(pb) {
		t.Fatal("same content packed to different archives")
	}
	if again := pack(t, a); !bytes.Equal(again, pa) {
		t.Fatal("packing twice gave different archives")
	}
	names := archiveNames(t, pa)
	if !sort.StringsAreSorted(names) {
		t.Fatalf("entries not sorted: %v", names)
	}
	// Content matters, and so does the exec bit.
	os.Chmod(filepath.Join(b, "z.txt"), 0o755)
	if bytes.Equal(pack(t, b), pa) {
		t.Fatal("exec bit ignored")
	}
	os.WriteFile(filepath.Join(a, "z.txt"), []byte("Z"), 0o644)
	if bytes.Equal(pack(t, a), pa) {
		t.Fatal("content change ignored")
	}
}

func TestPackIgnore(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		".wispignore":                "# build output\n*.pyc\n__pycache__/\nnode_modules/\n/build\n!keep.pyc\ndocs/**/*.md\nlogs/**\n\\#literal\n",
		"handler.py":                 "x",
		"mod.pyc":                    "x",
		"keep.pyc":                   "x",
		"lib/other.pyc":              "x",
		"lib/__pycache__/m.cpython":  "x",
		"__pycache__":                "a file, not a dir: kept",
		"node_modules/left/index.js": "x",
		"web/node_modules/x.js":      "x",
		"build/out":                  "x",
		"lib/build/kept":             "x",
		"docs/a/b/c.md":              "x",
		"docs/readme.txt":            "x",
		"docs/top.md":                "x",
		"logs/today.log":             "x",
		"#literal":                   "x",
		".git/config":                "x",
		"vendor/.git/HEAD":           "x",
		"extra/skip.me":              "x",
	})
	names := archiveNames(t, pack(t, dir, "extra/"))
	want := []string{
		".wispignore", "__pycache__", "docs/", "docs/a/", "docs/a/b/", "docs/readme.txt", "handler.py", "keep.pyc",
		"lib/", "lib/build/", "lib/build/kept", "logs/", "vendor/", "web/",
	}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("packed %q\nwant %q", names, want)
	}
}

func TestIgnoreMatcher(t *testing.T) {
	tests := []struct {
		patterns []string
		path     string
		dir      bool
		want     bool
	}{
		{[]string{"*.pyc"}, "a/b/c.pyc", false, true},
		{[]string{"*.pyc"}, "c.py", false, false},
		{[]string{"/*.pyc"}, "a/c.pyc", false, false},
		{[]string{"/*.pyc"}, "c.pyc", false, true},
		{[]string{"cache/"}, "cache", false, false},
		{[]string{"cache/"}, "x/cache", true, true},
		{[]string{"a/*/c"}, "a/b/c", false, true},
		{[]string{"a/*/c"}, "a/b/x/c", false, false},
		{[]string{"a/**/c"}, "a/b/x/c", false, true},
		{[]string{"a/**/c"}, "a/c", false, true},
		{[]string{"**/c"}, "x/y/c", false, true},
		{[]string{"f?.txt"}, "f1.txt", false, true},
		{[]string{"f[0-9].txt"}, "f7.txt", false, true},
		{[]string{"f[!0-9].txt"}, "f7.txt", false, false},
		{[]string{"*.log", "!keep.log"}, "keep.log", false, false},
		{[]string{"!keep.log", "*.log"}, "keep.log", false, true},
		{[]string{"# comment", "", "x"}, "x", false, true},
		{[]string{`\#x`}, "#x", false, true},
		{[]string{"a.b"}, "axb", false, false},
	}
	for _, tt := range tests {
		m, err := newIgnoreMatcher(tt.patterns)
		if err != nil {
			t.Fatalf("%q: %v", tt.patterns, err)
		}
		if got := m.ignored(tt.path, tt.dir); got != tt.want {
			t.Errorf("patterns %q, path %q (dir %v): ignored = %v, want %v", tt.patterns, tt.path, tt.dir, got, tt.want)
		}
	}
	if _, err := newIgnoreMatcher([]string{"[abc"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("unclosed class: %v", err)
	}
}

func TestPackRejects(t *testing.T) {
	t.Run("symlink outside", func(t *testing.T) {
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"handler.py": "x"})
		os.Symlink("../../etc/passwd", filepath.Join(dir, "evil"))
		if err := Pack(dir, io.Discard, nil); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("Pack = %v", err)
		}
		// ... unless it is ignored.
		if err := Pack(dir, io.Discard, []string{"evil"}); err != nil {
			t.Fatalf("Pack with evil ignored = %v", err)
		}
	})
	t.Run("named pipe", func(t *testing.T) {
		dir := t.TempDir()
		if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
			t.Fatal("mkfifo:", err)
		}
		if err := Pack(dir, io.Discard, nil); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("Pack = %v", err)
		}
	})
	t.Run("not a directory", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		os.WriteFile(f, nil, 0o644)
		if err := Pack(f, io.Discard, nil); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("Pack = %v", err)
		}
	})
}

// What Pack writes, PutCode accepts and CodeDir unpacks to the same tree.
func TestPackRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	writeTree(t, src, map[string]string{"handler.py": "h", "lib/m.py": "m", "bin/run": "#!/bin/sh\n"})
	os.Chmod(filepath.Join(src, "bin", "run"), 0o755)
	os.Symlink("lib/m.py", filepath.Join(src, "m.py"))
	s, _ := openStore(t, Options{})
	digest, _, err := s.PutCode(ctx, bytes.NewReader(pack(t, src)))
	if err != nil {
		t.Fatal(err)
	}
	cd, err := s.CodeDir(ctx, digest)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"handler.py": "h", "lib/m.py": "m", "m.py": "m", "bin/run": "#!/bin/sh\n"} {
		if b, err := os.ReadFile(filepath.Join(cd, name)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v", name, b, err)
		}
	}
	if st, _ := os.Stat(filepath.Join(cd, "bin", "run")); st.Mode().Perm() != 0o755 {
		t.Errorf("bin/run mode %v", st.Mode())
	}
}
