package stage

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLinkTree(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	files := map[string]string{"handler.py": "def handle(req): pass\n", "lib/util.py": "X = 1\n", "lib/deep/data.txt": "d"}
	for name, body := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("lib/util.py", filepath.Join(src, "link.py")); err != nil {
		t.Fatal(err)
	}
	if err := LinkTree(src, dst); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(got) != body {
			t.Errorf("%s: %q, %v", name, got, err)
		}
		a, _ := os.Stat(filepath.Join(src, name))
		b, _ := os.Stat(filepath.Join(dst, name))
		if !os.SameFile(a, b) {
			t.Errorf("%s is a copy, want a hard link on the same file system", name)
		}
	}
	if l, err := os.Readlink(filepath.Join(dst, "link.py")); err != nil || l != "lib/util.py" {
		t.Errorf("symlink: %q, %v", l, err)
	}
	// A second stage into a used directory fails rather than mixing trees.
	if err := LinkTree(src, dst); err == nil {
		t.Error("staging over existing files succeeded")
	}
}
