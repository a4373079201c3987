// Package stage puts a function's code into a sandbox made ahead of demand:
// the sandbox sees an empty directory of its own at /code (a read-only
// bind), and claiming it for a function recreates the code's tree in that
// directory with hard links. Process and container modes share it.
package stage

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// LinkTree recreates src's tree under dst with hard links to src's files
// (copies where src and dst are on different file systems, or where the
// kernel refuses the link). The code store keeps files root-owned and
// read-only to sandboxes, so sharing inodes shares nothing writable.
func LinkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			if rel == "." {
				return nil
			}
			return os.Mkdir(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			err := os.Link(p, target)
			if errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) {
				return copyFile(p, target)
			}
			return err
		default:
			return nil // the store admits no other kinds
		}
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
