package store

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestPutCodeContentAddressed(t *testing.T) {
	ctx := context.Background()
	s, dir := openStore(t, Options{})
	data := helloArchive(t)
	sum := sha256.Sum256(data)
	d1, n1, err := s.PutCode(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	d2, n2, err := s.PutCode(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if d1 != "sha256:"+hex.EncodeToString(sum[:]) || d1 != d2 || n1 != int64(len(data)) || n2 != n1 {
		t.Fatalf("digests %s %s, sizes %d %d", d1, d2, n1, n2)
	}
	if names := dirNames(t, filepath.Join(dir, "blobs", "sha256")); len(names) != 1 {
		t.Fatalf("blobs = %v, want one", names)
	}
	if names := dirNames(t, filepath.Join(dir, "blobs", "ingest")); len(names) != 0 {
		t.Fatalf("ingest = %v, want empty", names)
	}
	other := makeArchive(t, tarEntry{name: "handler.py", body: "other"})
	d3, _, err := s.PutCode(ctx, bytes.NewReader(other))
	if err != nil || d3 == d1 {
		t.Fatalf("other content: %s, %v", d3, err)
	}
	rc, size, err := s.OpenCode(ctx, d1)
	if err != nil {
		t.Fatal(err)
	}
	back, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(back, data) || size != int64(len(data)) {
		t.Fatal("OpenCode returned other bytes")
	}
	if _, _, err := s.OpenCode(ctx, "sha256:"+strings.Repeat("0", 64)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("OpenCode(missing) = %v", err)
	}
}

func TestPutCodeRejects(t *testing.T) {
	ctx := context.Background()
	big := makeArchive(t, tarEntry{name: "data.bin", body: string(randomBytes(64 << 10))})
	tests := []struct {
		name    string
		data    []byte
		kind    error
		message string
	}{
		{"too large", big, errdefs.ErrTooLarge, "; the limit is 32Ki (store.max_code_size)"},
		{"not gzip", []byte("hello, world"), errdefs.ErrInvalid, "not gzip-compressed"},
		{"gzip of not a tar", gzipBytes(t, bytes.Repeat([]byte("x"), 2000)), errdefs.ErrInvalid, "not a readable tar"},
		{"truncated", helloArchive(t)[:60], errdefs.ErrInvalid, "code archive"},
		{"traversal", makeArchive(t, tarEntry{name: "../evil", body: "x"}), errdefs.ErrInvalid, "leaves the archive"},
		{"empty", nil, errdefs.ErrInvalid, "not gzip-compressed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, dir := openStore(t, Options{MaxCodeSize: 32 << 10})
			_, _, err := s.PutCode(ctx, bytes.NewReader(tt.data))
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("PutCode = %v, want %v containing %q", err, tt.kind, tt.message)
			}
			if errdefs.Hint(err) == "" {
				t.Errorf("%v has no hint", err)
			}
			for _, d := range []string{"blobs/sha256", "blobs/ingest", "code"} {
				if names := dirNames(t, filepath.Join(dir, d)); len(names) != 0 {
					t.Errorf("%s holds %v after a failed upload", d, names)
				}
			}
		})
	}
}

func TestPutCodeTooLargeMessage(t *testing.T) {
	s, _ := openStore(t, Options{MaxCodeSize: 1 << 20})
	_, _, err := s.PutCode(context.Background(), bytes.NewReader(make([]byte, 1<<20+300<<10)))
	if err == nil || !strings.Contains(err.Error(), "code archive is 1.3Mi; the limit is 1Mi") {
		t.Fatalf("err = %v", err)
	}
	if h := errdefs.Hint(err); !strings.Contains(h, ".wispignore") || !strings.Contains(h, "store.max_code_size") {
		t.Fatalf("hint = %q", h)
	}
	_, _, err = s.PutCode(context.Background(), bytes.NewReader(make([]byte, 5<<20)))
	if err == nil || !strings.Contains(err.Error(), "code archive is more than 2Mi") {
		t.Fatalf("err = %v", err)
	}
}

func TestPutCodeCancelled(t *testing.T) {
	s, _ := openStore(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancelAfter{data: helloArchive(t), cancel: cancel}
	if _, _, err := s.PutCode(ctx, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("PutCode = %v, want context.Canceled", err)
	}
}

type cancelAfter struct {
	data   []byte
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	c.cancel()
	n := copy(p, c.data[:min(10, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}

func TestCodeDir(t *testing.T) {
	ctx := context.Background()
	s, dir := openStore(t, Options{})
	digest, _, err := s.PutCode(ctx, bytes.NewReader(makeArchive(t,
		tarEntry{name: "handler.py", body: "print(1)\n", mode: 0o600},
		tarEntry{name: "lib/", typ: tar.TypeDir, mode: 0o700},
		tarEntry{name: "lib/util.py", body: "X = 1\n", mode: 0o640},
		tarEntry{name: "bin/run", body: "#!/bin/sh\n", mode: 0o700},
		tarEntry{name: "bin/tool", body: "#!/bin/sh\n", mode: 0o610},
		tarEntry{name: "current", typ: tar.TypeSymlink, link: "lib"},
		tarEntry{name: "lib/up", typ: tar.TypeSymlink, link: "../handler.py"},
		tarEntry{name: "hard", typ: tar.TypeLink, link: "handler.py"},
	)))
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent first calls share one extraction and all get the same dir.
	var wg sync.WaitGroup
	dirs := make([]string, 16)
	errs := make([]error, 16)
	for i := range dirs {
		wg.Go(func() { dirs[i], errs[i] = s.CodeDir(ctx, digest) })
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Fatalf("CodeDir #%d = %q, %v; #0 = %q", i, dirs[i], errs[i], dirs[0])
		}
	}
	cd := dirs[0]
	if want := filepath.Join(dir, "code", strings.TrimPrefix(digest, "sha256:")); cd != want {
		t.Fatalf("CodeDir = %s, want %s", cd, want)
	}
	if names := dirNames(t, filepath.Join(dir, "code")); len(names) != 1 {
		t.Fatalf("code/ holds %v", names)
	}
	modes := map[string]os.FileMode{
		".":           0o755 | os.ModeDir,
		"handler.py":  0o644,
		"lib":         0o755 | os.ModeDir,
		"lib/util.py": 0o644,
		"bin":         0o755 | os.ModeDir,
		"bin/run":     0o755,
		"bin/tool":    0o755,
		"hard":        0o644,
	}
	for name, want := range modes {
		st, err := os.Lstat(filepath.Join(cd, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, st.Mode(), want)
		}
	}
	if target, err := os.Readlink(filepath.Join(cd, "current")); err != nil || target != "lib" {
		t.Errorf("symlink current -> %q, %v", target, err)
	}
	if b, err := os.ReadFile(filepath.Join(cd, "lib", "up")); err != nil || string(b) != "print(1)\n" {
		t.Errorf("lib/up reads %q, %v", b, err)
	}
	// Later calls return the existing directory.
	again, err := s.CodeDir(ctx, digest)
	if err != nil || again != cd {
		t.Fatalf("second CodeDir = %q, %v", again, err)
	}
	if _, err := s.CodeDir(ctx, "sha256:"+strings.Repeat("1", 64)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("CodeDir(missing) = %v", err)
	}
	if _, err := s.CodeDir(ctx, "latest"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("CodeDir(bad digest) = %v", err)
	}
}

// A blob that bypassed PutCode's checks (written by hand, or by an older
// wisp) is still refused by CodeDir, and nothing is left in code/.
func TestCodeDirRejectsUnsafeBlob(t *testing.T) {
	ctx := context.Background()
	s, dir := openStore(t, Options{})
	bad := makeArchive(t, tarEntry{name: "a", typ: tar.TypeSymlink, link: "."}, tarEntry{name: "b", typ: tar.TypeSymlink, link: "a/.."})
	sum := sha256.Sum256(bad)
	h := hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", h), bad, 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CodeDir(ctx, "sha256:"+h); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("CodeDir = %v, want ErrInvalid", err)
	}
	if names := dirNames(t, filepath.Join(dir, "code")); len(names) != 0 {
		t.Fatalf("code/ holds %v", names)
	}
}

func TestGCCode(t *testing.T) {
	ctx := context.Background()
	s, dir := openStore(t, Options{GCGracePeriod: time.Hour})
	put := func(body string) (string, string) {
		d, _, err := s.PutCode(ctx, bytes.NewReader(makeArchive(t, tarEntry{name: "handler.py", body: body})))
		if err != nil {
			t.Fatal(err)
		}
		cd, err := s.CodeDir(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		return d, cd
	}
	used, usedDir := put("used")
	inflight, inflightDir := put("in flight")
	old, oldDir := put("old")
	fresh, freshDir := put("fresh")
	if _, err := s.PutFunction(ctx, &FunctionRecord{Spec: testSpec("f"), CodeDigest: used}); err != nil {
		t.Fatal(err)
	}
	// Age everything but "fresh" past the grace period.
	past := time.Now().Add(-2 * time.Hour)
	for _, d := range []string{used, inflight, old} {
		h := strings.TrimPrefix(d, "sha256:")
		os.Chtimes(filepath.Join(dir, "blobs", "sha256", h), past, past)
		os.Chtimes(filepath.Join(dir, "code", h), past, past)
	}
	res, err := s.GCCode(ctx, []string{inflight})
	if err != nil {
		t.Fatal(err)
	}
	if res.Blobs != 1 || res.Dirs != 1 || res.Bytes == 0 {
		t.Fatalf("GCCode = %+v, want the old blob and dir", res)
	}
	for _, d := range []struct {
		digest, dir string
		kept        bool
	}{{used, usedDir, true}, {inflight, inflightDir, true}, {fresh, freshDir, true}, {old, oldDir, false}} {
		_, berr := os.Stat(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d.digest, "sha256:")))
		_, derr := os.Stat(d.dir)
		if (berr == nil) != d.kept || (derr == nil) != d.kept {
			t.Errorf("%s: blob err %v, dir err %v, want kept=%v", d.digest, berr, derr, d.kept)
		}
	}
	if names := dirNames(t, filepath.Join(dir, "code")); len(names) != 3 {
		t.Errorf("code/ holds %v (trash left behind?)", names)
	}
	if _, err := s.GCCode(ctx, []string{"nonsense"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("GCCode(bad keep) = %v", err)
	}
	// After the function is deleted its code goes too.
	if err := s.DeleteFunction(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	if res, err := s.GCCode(ctx, nil); err != nil || res.Blobs != 2 || res.Dirs != 2 {
		t.Fatalf("GCCode after delete = %+v, %v", res, err)
	}
	// A removed directory comes back from its blob only if the blob is
	// there; the fresh one still is.
	if _, err := s.CodeDir(ctx, fresh); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	x := uint64(88172645463325252)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
