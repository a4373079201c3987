package store

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// unsafeArchives are refused by both PutCode (nothing stored) and unpack.
func unsafeArchives(t testing.TB) []struct {
	name string
	data []byte
	kind error
	msg  string
} {
	withTrailer := func() []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})
		tw.Write([]byte("a"))
		tw.Close()
		zw.Write(make([]byte, 2<<20))
		zw.Close()
		return buf.Bytes()
	}
	return []struct {
		name string
		data []byte
		kind error
		msg  string
	}{
		{"path traversal", makeArchive(t, tarEntry{name: "../evil", body: "x"}), errdefs.ErrInvalid, "leaves the archive"},
		{"nested traversal", makeArchive(t, tarEntry{name: "a/../../evil", body: "x"}), errdefs.ErrInvalid, "leaves the archive"},
		{"traversal that cleans inside", makeArchive(t, tarEntry{name: "a/../b", body: "x"}), errdefs.ErrInvalid, "leaves the archive"},
		{"absolute path", makeArchive(t, tarEntry{name: "/etc/evil", body: "x"}), errdefs.ErrInvalid, "absolute path"},
		{"symlink escape", makeArchive(t, tarEntry{name: "lib/link", typ: tar.TypeSymlink, link: "../../etc/passwd"}), errdefs.ErrInvalid, "outside the archive"},
		{"absolute symlink", makeArchive(t, tarEntry{name: "link", typ: tar.TypeSymlink, link: "/etc/passwd"}), errdefs.ErrInvalid, "absolute path"},
		{"symlink chain escape", makeArchive(t,
			tarEntry{name: "a", typ: tar.TypeSymlink, link: "."},
			tarEntry{name: "b", typ: tar.TypeSymlink, link: "a/.."}), errdefs.ErrInvalid, "resolves outside"},
		{"symlink chain escape, link declared later", makeArchive(t,
			tarEntry{name: "d/b", typ: tar.TypeSymlink, link: "../x/.."},
			tarEntry{name: "x", typ: tar.TypeSymlink, link: "."}), errdefs.ErrInvalid, "resolves outside"},
		{"symlink loop", makeArchive(t,
			tarEntry{name: "a", typ: tar.TypeSymlink, link: "b"},
			tarEntry{name: "b", typ: tar.TypeSymlink, link: "a"}), errdefs.ErrInvalid, "loop"},
		{"write through symlink", makeArchive(t,
			tarEntry{name: "sub/", typ: tar.TypeDir},
			tarEntry{name: "link", typ: tar.TypeSymlink, link: "sub"},
			tarEntry{name: "link/x", body: "x"}), errdefs.ErrInvalid, "not a directory"},
		{"hard link outside", makeArchive(t, tarEntry{name: "h", typ: tar.TypeLink, link: "../../etc/shadow"}), errdefs.ErrInvalid, "hard link"},
		{"hard link absolute", makeArchive(t, tarEntry{name: "h", typ: tar.TypeLink, link: "/etc/shadow"}), errdefs.ErrInvalid, "hard link"},
		{"hard link to a later entry", makeArchive(t, tarEntry{name: "h", typ: tar.TypeLink, link: "f"}, tarEntry{name: "f", body: "x"}), errdefs.ErrInvalid, "hard link"},
		{"hard link to a symlink", makeArchive(t, tarEntry{name: "s", typ: tar.TypeSymlink, link: "f"}, tarEntry{name: "h", typ: tar.TypeLink, link: "s"}), errdefs.ErrInvalid, "hard link"},
		{"char device", makeArchive(t, tarEntry{name: "null", typ: tar.TypeChar}), errdefs.ErrInvalid, "device node"},
		{"block device", makeArchive(t, tarEntry{name: "sda", typ: tar.TypeBlock}), errdefs.ErrInvalid, "device node"},
		{"fifo", makeArchive(t, tarEntry{name: "pipe", typ: tar.TypeFifo}), errdefs.ErrInvalid, "named pipe"},
		{"duplicate file", makeArchive(t, tarEntry{name: "f", body: "1"}, tarEntry{name: "f", body: "2"}), errdefs.ErrInvalid, "appears twice"},
		{"file over directory", makeArchive(t, tarEntry{name: "d/x", body: "1"}, tarEntry{name: "d", body: "2"}), errdefs.ErrInvalid, "appears twice"},
		{"zip bomb", makeArchive(t, tarEntry{name: "zeros", size: 3 << 20}), errdefs.ErrTooLarge, "unpacks to more than 2Mi"},
		{"zip bomb in many files", makeArchive(t,
			tarEntry{name: "z1", size: 1 << 20}, tarEntry{name: "z2", size: 1 << 20}, tarEntry{name: "z3", size: 1 << 20}), errdefs.ErrTooLarge, "unpacks to more than 2Mi"},
		{"trailing data after the tar", withTrailer(), errdefs.ErrInvalid, "after the end of the tar"},
	}
}

func TestUnpackRejects(t *testing.T) {
	for _, tt := range unsafeArchives(t) {
		t.Run(tt.name, func(t *testing.T) {
			// Through PutCode: refused, nothing stored.
			s, dir := openStore(t, Options{MaxCodeSize: 1 << 20, MaxUnpackedSize: 2 << 20})
			_, _, err := s.PutCode(context.Background(), bytes.NewReader(tt.data))
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("PutCode = %v, want %v containing %q", err, tt.kind, tt.msg)
			}
			if errdefs.Hint(err) == "" {
				t.Errorf("%v has no hint", err)
			}
			for _, d := range []string{"blobs/sha256", "blobs/ingest", "code"} {
				if names := dirNames(t, filepath.Join(dir, d)); len(names) != 0 {
					t.Errorf("%s holds %v", d, names)
				}
			}
			// Through unpack: refused, nothing outside the destination.
			root := t.TempDir()
			dst := filepath.Join(root, "dst")
			os.Mkdir(dst, 0o755)
			err = unpack(context.Background(), bytes.NewReader(tt.data), dst, unpackLimits{maxBytes: 2 << 20, maxEntries: 100})
			if !errors.Is(err, tt.kind) {
				t.Fatalf("unpack = %v, want %v", err, tt.kind)
			}
			if names := dirNames(t, root); len(names) != 1 {
				t.Fatalf("unpack wrote outside its destination: %v", names)
			}
		})
	}
}

func TestUnpackTooManyEntries(t *testing.T) {
	var entries []tarEntry
	for i := range 20 {
		entries = append(entries, tarEntry{name: strings.Repeat("d", i+1), typ: tar.TypeDir})
	}
	err := unpack(context.Background(), bytes.NewReader(makeArchive(t, entries...)), t.TempDir(), unpackLimits{maxBytes: 1 << 20, maxEntries: 10})
	if !errors.Is(err, errdefs.ErrTooLarge) || !strings.Contains(err.Error(), "more than 10 entries") {
		t.Fatalf("unpack = %v", err)
	}
}

func TestUnpackAccepts(t *testing.T) {
	tests := []struct {
		name  string
		data  []byte
		check map[string]string // path -> content ("" for a dir)
	}{
		{"root entry and ./ prefixes", makeArchive(t,
			tarEntry{name: "./", typ: tar.TypeDir},
			tarEntry{name: "./a.py", body: "a"},
			tarEntry{name: "./d/", typ: tar.TypeDir},
			tarEntry{name: "d//b.py", body: "b"}), map[string]string{"a.py": "a", "d/b.py": "b"}},
		{"implicit parents", makeArchive(t, tarEntry{name: "x/y/z.txt", body: "z"}), map[string]string{"x/y/z.txt": "z"}},
		{"dir entry after its files", makeArchive(t, tarEntry{name: "d/f", body: "f"}, tarEntry{name: "d/", typ: tar.TypeDir}), map[string]string{"d/f": "f"}},
		{"symlinks inside", makeArchive(t,
			tarEntry{name: "lib/v1/mod.py", body: "m"},
			tarEntry{name: "lib/current", typ: tar.TypeSymlink, link: "v1"},
			tarEntry{name: "mod.py", typ: tar.TypeSymlink, link: "lib/current/mod.py"},
			tarEntry{name: "dangling", typ: tar.TypeSymlink, link: "nowhere"}), map[string]string{"mod.py": "m"}},
		{"empty archive", makeArchive(t), map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := t.TempDir()
			if err := unpack(context.Background(), bytes.NewReader(tt.data), dst, unpackLimits{maxBytes: 1 << 20, maxEntries: 100}); err != nil {
				t.Fatal(err)
			}
			for p, want := range tt.check {
				b, err := os.ReadFile(filepath.Join(dst, p))
				if err != nil || string(b) != want {
					t.Errorf("%s = %q, %v; want %q", p, b, err, want)
				}
			}
		})
	}
}

func FuzzUnpack(f *testing.F) {
	f.Add(helloArchive(f))
	for _, tt := range unsafeArchives(f) {
		if len(tt.data) < 64<<10 {
			f.Add(tt.data)
		}
	}
	f.Add(makeArchive(f, tarEntry{name: "a/b", typ: tar.TypeSymlink, link: "../c"}, tarEntry{name: "c", body: "x"}, tarEntry{name: "h", typ: tar.TypeLink, link: "c"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		dst := filepath.Join(root, "dst")
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		lim := unpackLimits{maxBytes: 1 << 20, maxEntries: 1000}
		err := unpack(context.Background(), bytes.NewReader(data), dst, lim)
		if names := dirNames(t, root); len(names) != 1 {
			t.Fatalf("unpack wrote outside its destination: %v", names)
		}
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) && !errors.Is(err, errdefs.ErrTooLarge) {
				t.Fatalf("unpack error %v is neither ErrInvalid nor ErrTooLarge", err)
			}
			return
		}
		// What was accepted must be safe: every symlink resolves inside,
		// every file and dir has the normalised modes, nothing special.
		var total int64
		err = filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			switch m := info.Mode(); {
			case m.IsDir():
				if m.Perm() != 0o755 {
					t.Errorf("%s: dir mode %v", p, m)
				}
			case m.IsRegular():
				total += info.Size()
				if m.Perm() != 0o644 && m.Perm() != 0o755 {
					t.Errorf("%s: file mode %v", p, m)
				}
			case m&fs.ModeSymlink != 0:
				if real, err := filepath.EvalSymlinks(p); err == nil {
					if rel, err := filepath.Rel(dst, real); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
						t.Errorf("%s resolves to %s, outside", p, real)
					}
				}
			default:
				t.Errorf("%s: special file %v", p, m)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if total > lim.maxBytes {
			t.Errorf("unpacked %d bytes, limit %d", total, lim.maxBytes)
		}
		// checkArchive (PutCode's check) agrees with unpack.
		if err := checkArchive(context.Background(), bytes.NewReader(data), lim); err != nil {
			t.Errorf("unpack accepted what checkArchive refuses: %v", err)
		}
	})
}
