package store

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

// tarEntry describes one entry of a test archive.
type tarEntry struct {
	name string
	typ  byte // tar.TypeReg when 0
	body string
	link string
	mode int64
	size int64 // header size when body is not given in full (bombs)
}

// makeArchive builds a tar.gz from entries.
func makeArchive(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if e.size > 0 {
			h.Size = e.size
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.size > 0 {
			chunk := make([]byte, 1<<20)
			for left := e.size; left > 0; {
				n := min(left, int64(len(chunk)))
				if _, err := tw.Write(chunk[:n]); err != nil {
					t.Fatal(err)
				}
				left -= n
			}
		} else if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func helloArchive(t testing.TB) []byte {
	return makeArchive(t,
		tarEntry{name: "handler.py", body: "def handle(req):\n    return 'hi'\n"},
		tarEntry{name: "lib/", typ: tar.TypeDir, mode: 0o700},
		tarEntry{name: "lib/util.py", body: "X = 1\n", mode: 0o600},
		tarEntry{name: "bin/run", body: "#!/bin/sh\necho hi\n", mode: 0o700},
	)
}

// openStore opens a store in a fresh directory and closes it at the end.
func openStore(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, dir
}

func testSpec(name string) function.Spec {
	s := function.Defaults(function.Baseline{})
	s.Name, s.Runtime, s.Handler = name, "python3", "handler.py"
	return s
}

func TestOpenLayout(t *testing.T) {
	_, dir := openStore(t, Options{})
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{"wisp.db", 0o600},
		{"blobs", 0o700 | os.ModeDir},
		{"blobs/sha256", 0o700 | os.ModeDir},
		{"blobs/ingest", 0o700 | os.ModeDir},
		{"code", 0o711 | os.ModeDir},
	} {
		st, err := os.Stat(filepath.Join(dir, c.path))
		if err != nil {
			t.Fatal(err)
		}
		// The umask may only remove bits.
		if st.Mode()&^c.mode != 0 {
			t.Errorf("%s: mode %v, want at most %v", c.path, st.Mode(), c.mode)
		}
	}
}

func TestOpenInUse(t *testing.T) {
	s, dir := openStore(t, Options{})
	_ = s
	start := time.Now()
	_, err := Open(dir, Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("second Open = %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "data directory "+dir+" is in use by another wisp serve (pid ") {
		t.Errorf("message = %q", err)
	}
	if errdefs.Hint(err) == "" {
		t.Error("no hint")
	}
	if time.Since(start) > 5*time.Second {
		t.Error("lock timeout not honoured")
	}
}

func TestOpenEmptyDir(t *testing.T) {
	if _, err := Open("", Options{}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Open(\"\") = %v", err)
	}
}

func TestRestartPersistence(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	digest, size, err := s.PutCode(ctx, bytes.NewReader(helloArchive(t)))
	if err != nil {
		t.Fatal(err)
	}
	put, err := s.PutFunction(ctx, &FunctionRecord{Spec: testSpec("hello"), CodeDigest: digest})
	if err != nil {
		t.Fatal(err)
	}
	id := NewActivationID()
	s.RecordActivation(&Activation{ID: id, Function: "hello", Status: StatusSuccess, StatusCode: 200, Result: []byte("hi")})
	if err := s.Close(); err != nil { // Close must write the queued activation
		t.Fatal(err)
	}

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetFunction(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 1 || got.CodeDigest != digest || got.CodeSize != size || !got.CreatedAt.Equal(put.CreatedAt) ||
		got.Spec.Timeout != put.Spec.Timeout || got.Spec.Memory != put.Spec.Memory {
		t.Fatalf("after restart: %+v, want %+v", got, put)
	}
	a, err := s.GetActivation(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if a.Function != "hello" || string(a.Result) != "hi" {
		t.Fatalf("activation after restart: %+v", a)
	}
	cd, err := s.CodeDir(ctx, digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cd, "handler.py")); err != nil {
		t.Fatal(err)
	}
}

func TestSchemaVersion(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var v []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucketMeta).Get(keyVersion))
		return nil
	})
	if string(v) != strconv.Itoa(schemaVersion) {
		t.Fatalf("version = %q", v)
	}
	// A newer wisp wrote this directory: refuse it.
	if err := s.db.Update(func(tx *bolt.Tx) error { return putInt(tx.Bucket(bucketMeta), keyVersion, int64(schemaVersion+1)) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(dir, Options{})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "newer wisp") {
		t.Fatalf("Open(newer schema) = %v", err)
	}
}

func TestOpenRemovesLeftovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ingest := filepath.Join(dir, "blobs", "ingest", "upload-123")
	extract := filepath.Join(dir, "code", ".extract-abc-1")
	os.WriteFile(ingest, []byte("x"), 0o600)
	os.MkdirAll(extract, 0o755)
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range []string{ingest, extract} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived Open", p)
		}
	}
}
