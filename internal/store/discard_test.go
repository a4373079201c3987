package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/wisp-faas/wisp/internal/function"
)

func TestDiscardCode(t *testing.T) {
	ctx := context.Background()
	st, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "h.py"), []byte("def handle(r): return 1\n"), 0o644)
	var buf bytes.Buffer
	if err := Pack(src, &buf, nil); err != nil {
		t.Fatal(err)
	}
	archive := buf.Bytes()
	digest, _, err := st.PutCode(ctx, bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := st.CodeDir(ctx, digest)
	if err != nil {
		t.Fatal(err)
	}
	// Kept while named in keep.
	if err := st.DiscardCode(ctx, digest, []string{digest}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("kept code removed: %v", err)
	}
	// Kept while a function references it.
	spec := function.Defaults(function.Baseline{})
	spec.Name, spec.Runtime, spec.Handler = "f", "python3", "h.py"
	if _, err := st.PutFunction(ctx, &FunctionRecord{Spec: spec, CodeDigest: digest}); err != nil {
		t.Fatal(err)
	}
	if err := st.DiscardCode(ctx, digest, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("referenced code removed: %v", err)
	}
	// Removed once unreferenced, however young.
	if err := st.DeleteFunction(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	if err := st.DiscardCode(ctx, digest, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("unreferenced code still unpacked: %v", err)
	}
	if _, err := os.Stat(st.blobPath(digest[len("sha256:"):])); !os.IsNotExist(err) {
		t.Fatalf("unreferenced blob still stored: %v", err)
	}
}
