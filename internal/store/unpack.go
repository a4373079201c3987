package store

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Limits of an archive entry's name and link target (PATH_MAX), and of the
// symbolic links followed while checking where one points (the kernel's
// MAXSYMLINKS).
const (
	maxNameLen  = 4096
	maxSymlinks = 40
	// maxTrailing is how much data after the tar end marker is read to
	// reach the gzip checksum; more is refused.
	maxTrailing = 1 << 20
)

// unpackLimits bounds what an archive may expand to.
type unpackLimits struct {
	maxBytes   int64 // total size of regular files
	maxEntries int
}

type nodeKind uint8

const (
	kindDir nodeKind = iota + 1
	kindFile
	kindSymlink
)

type treeNode struct {
	kind   nodeKind
	target string // symlink target, as written
}

// archiveTree is the archive's file tree by cleaned relative path, built
// while scanning so that links can be checked before anything is created.
type archiveTree map[string]treeNode

// archiveEntry is one entry handed to a scan visitor.
type archiveEntry struct {
	name string // cleaned, relative, slash separated
	kind nodeKind
	link string // hard link: the cleaned name of the file it links to
	exec bool   // a regular file with any exec bit set
	size int64
}

func invalidArchive(format string, args ...any) error {
	return errdefs.New(errdefs.ErrInvalid,
		"upload a gzip-compressed tar of the function directory (wisp deploy makes one)",
		"code archive: "+format, args...)
}

func unsafeEntry(name, why string) error {
	return errdefs.New(errdefs.ErrInvalid,
		"pack the function directory with wisp deploy; archives may hold only regular files, directories and symlinks that stay inside",
		"code archive: entry %q %s", name, why)
}

func tooLargeUnpacked(limit int64) error {
	return errdefs.New(errdefs.ErrTooLarge,
		"leave large files out with a .wispignore, or raise store.max_unpacked_size",
		"code archive: unpacks to more than %s (store.max_unpacked_size)", formatSize(limit))
}

// cleanName checks an entry name or hard-link target and returns it
// cleaned; "" means the archive's root.
func cleanName(name string) (string, error) {
	if len(name) > maxNameLen || strings.IndexByte(name, 0) >= 0 {
		return "", unsafeEntry(truncate(name), "has an invalid name")
	}
	if strings.HasPrefix(name, "/") {
		return "", unsafeEntry(name, "has an absolute path")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", unsafeEntry(name, "leaves the archive (..)")
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// scanArchive reads a gzip-compressed tar from r, checks every entry and
// calls visit (if not nil) for each in archive order, with the file's
// contents for regular files. Symlinks are checked once the whole tree is
// known (a link may point at an entry that comes later) and are returned,
// not visited: creating them last means no entry is ever written through a
// link. It fails with ErrInvalid for anything unsafe or malformed and
// ErrTooLarge beyond the limits.
func scanArchive(ctx context.Context, r io.Reader, lim unpackLimits, visit func(e *archiveEntry, body io.Reader) error) (archiveTree, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, invalidArchive("not gzip-compressed: %v", err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	tree := archiveTree{}
	var total int64
	entries := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalidArchive("not a readable tar: %v", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if entries++; entries > lim.maxEntries {
			return nil, errdefs.New(errdefs.ErrTooLarge, "leave generated files out with a .wispignore",
				"code archive: more than %d entries", lim.maxEntries)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if hdr.Size < 0 || hdr.Size > lim.maxBytes-total {
			return nil, tooLargeUnpacked(lim.maxBytes)
		}
		if name == "" {
			if hdr.Typeflag != tar.TypeDir {
				return nil, unsafeEntry(hdr.Name, "names the archive's root but is not a directory")
			}
			continue
		}
		e := &archiveEntry{name: name, size: hdr.Size}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			e.kind, e.exec = kindFile, hdr.Mode&0o111 != 0
			total += hdr.Size
		case tar.TypeDir:
			e.kind = kindDir
		case tar.TypeSymlink:
			t := hdr.Linkname
			switch {
			case t == "" || len(t) > maxNameLen || strings.IndexByte(t, 0) >= 0:
				return nil, unsafeEntry(name, "is a symlink with an invalid target")
			case strings.HasPrefix(t, "/"):
				return nil, unsafeEntry(name, fmt.Sprintf("is a symlink to an absolute path (%s)", truncate(t)))
			}
			if j := path.Join(path.Dir(name), t); j == ".." || strings.HasPrefix(j, "../") {
				return nil, unsafeEntry(name, fmt.Sprintf("is a symlink that points outside the archive (%s)", truncate(t)))
			}
			e.kind = kindSymlink
		case tar.TypeLink:
			target, err := cleanName(hdr.Linkname)
			if err != nil {
				return nil, unsafeEntry(name, "is a hard link outside the archive")
			}
			if n, ok := tree[target]; !ok || n.kind != kindFile {
				return nil, unsafeEntry(name, fmt.Sprintf("is a hard link to %q, which is not a regular file earlier in the archive", truncate(hdr.Linkname)))
			}
			e.kind, e.link = kindFile, target
		case tar.TypeChar, tar.TypeBlock:
			return nil, unsafeEntry(name, "is a device node")
		case tar.TypeFifo:
			return nil, unsafeEntry(name, "is a named pipe")
		default:
			return nil, unsafeEntry(name, fmt.Sprintf("has an unsupported type %q", hdr.Typeflag))
		}
		if err := tree.add(e); err != nil {
			return nil, err
		}
		if e.kind == kindSymlink {
			tree[name] = treeNode{kind: kindSymlink, target: hdr.Linkname}
			continue
		}
		if visit != nil {
			if err := visit(e, tr); err != nil {
				return nil, err
			}
		}
	}
	// Read on to the gzip trailer, so its checksum is verified, but not
	// through an unbounded tail hidden after the tar end marker.
	if n, err := io.Copy(io.Discard, io.LimitReader(zr, maxTrailing+1)); err != nil {
		return nil, invalidArchive("corrupt gzip stream: %v", err)
	} else if n > maxTrailing {
		return nil, invalidArchive("more than %s of data after the end of the tar", formatSize(maxTrailing))
	}
	for name, n := range tree {
		if n.kind == kindSymlink {
			if err := tree.checkLink(name); err != nil {
				return nil, err
			}
		}
	}
	return tree, nil
}

// add records e, creating its parent directories; an entry may not appear
// twice (except a directory), nor live under a file or a symlink.
func (t archiveTree) add(e *archiveEntry) error {
	parts := strings.Split(e.name, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		switch n, ok := t[p]; {
		case !ok:
			t[p] = treeNode{kind: kindDir}
		case n.kind != kindDir:
			return unsafeEntry(e.name, fmt.Sprintf("is under %q, which is not a directory", p))
		}
	}
	if n, ok := t[e.name]; ok {
		if n.kind == kindDir && e.kind == kindDir {
			return nil
		}
		return unsafeEntry(e.name, "appears twice")
	}
	t[e.name] = treeNode{kind: e.kind}
	return nil
}

// checkLink resolves the symlink name through the tree as the kernel would
// (following other symlinks, ".." after a link applies to the link's
// target) and fails if any step leaves the archive's root. This catches
// chains no lexical check sees, like a -> "." and b -> "a/..".
func (t archiveTree) checkLink(name string) error {
	stack := strings.Split(path.Dir(name), "/")
	if stack[0] == "." {
		stack = nil
	}
	todo := strings.Split(t[name].target, "/")
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return unsafeEntry(name, fmt.Sprintf("is a symlink that resolves outside the archive (%s)", truncate(t[name].target)))
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		n, ok := t[strings.Join(stack, "/")]
		if !ok || n.kind != kindSymlink {
			continue
		}
		if hops++; hops > maxSymlinks {
			return unsafeEntry(name, "is a symlink loop")
		}
		stack = stack[:len(stack)-1]
		if strings.HasPrefix(n.target, "/") {
			return unsafeEntry(name, "is a symlink that resolves to an absolute path")
		}
		todo = append(strings.Split(n.target, "/"), todo...)
	}
	return nil
}

// checkArchive validates an archive without writing anything.
func checkArchive(ctx context.Context, r io.Reader, lim unpackLimits) error {
	_, err := scanArchive(ctx, r, lim, func(e *archiveEntry, body io.Reader) error {
		if e.kind == kindFile && e.link == "" {
			if _, err := io.Copy(io.Discard, body); err != nil {
				return invalidArchive("entry %q: %v", e.name, err)
			}
		}
		return nil
	})
	return err
}

// unpack extracts the archive into the existing empty directory dst:
// directories 0755, files 0644 (0755 if the archive gave them any exec
// bit), owned by the caller; names, link targets, types and sizes are
// checked as described at scanArchive. On error dst holds a partial tree
// that the caller removes.
func unpack(ctx context.Context, r io.Reader, dst string, lim unpackLimits) error {
	mkdir := func(rel string) error {
		p := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.Mkdir(p, 0o755); err != nil {
			if errors.Is(err, os.ErrExist) {
				return nil
			}
			return err
		}
		return os.Chmod(p, 0o755) // whatever the umask
	}
	mkdirAll := func(rel string) error {
		if rel == "." || rel == "" {
			return nil
		}
		parts := strings.Split(rel, "/")
		for i := 1; i <= len(parts); i++ {
			if err := mkdir(strings.Join(parts[:i], "/")); err != nil {
				return err
			}
		}
		return nil
	}
	var written int64
	tree, err := scanArchive(ctx, r, lim, func(e *archiveEntry, body io.Reader) error {
		p := filepath.Join(dst, filepath.FromSlash(e.name))
		switch {
		case e.kind == kindDir:
			if err := mkdirAll(e.name); err != nil {
				return fmt.Errorf("unpack %q: %w", e.name, err)
			}
		case e.link != "":
			if err := mkdirAll(path.Dir(e.name)); err != nil {
				return fmt.Errorf("unpack %q: %w", e.name, err)
			}
			if err := os.Link(filepath.Join(dst, filepath.FromSlash(e.link)), p); err != nil {
				return fmt.Errorf("unpack %q: %w", e.name, err)
			}
		default:
			if err := mkdirAll(path.Dir(e.name)); err != nil {
				return fmt.Errorf("unpack %q: %w", e.name, err)
			}
			mode := os.FileMode(0o644)
			if e.exec {
				mode = 0o755
			}
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
			if err != nil {
				return fmt.Errorf("unpack %q: %w", e.name, err)
			}
			n, err := io.Copy(f, io.LimitReader(body, lim.maxBytes-written+1))
			written += n
			if err == nil && written > lim.maxBytes {
				err = tooLargeUnpacked(lim.maxBytes)
			} else if err != nil {
				err = invalidArchive("entry %q: %v", e.name, err)
			}
			if err == nil {
				err = f.Chmod(mode)
			}
			if cerr := f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("unpack %q: %w", e.name, cerr)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Symlinks last, in name order, now that no more files are written.
	var links []string
	for name, n := range tree {
		if n.kind == kindSymlink {
			links = append(links, name)
		}
	}
	sort.Strings(links)
	for _, name := range links {
		if err := mkdirAll(path.Dir(name)); err != nil {
			return fmt.Errorf("unpack %q: %w", name, err)
		}
		if err := os.Symlink(tree[name].target, filepath.Join(dst, filepath.FromSlash(name))); err != nil {
			return fmt.Errorf("unpack %q: %w", name, err)
		}
	}
	return nil
}
