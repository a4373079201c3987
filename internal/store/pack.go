package store

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// IgnoreFile is the file in a function directory that lists what Pack
// leaves out.
const IgnoreFile = ".wispignore"

// Pack writes a gzip-compressed tar of the directory dir to w, for PutCode
// (wisp deploy uses it). The archive depends only on the tree's content:
// entries are sorted by path; times, owners and names of owners are zeroed;
// modes are normalised to 0755 for directories and executable files and
// 0644 for the rest. (The gzip stream also depends on the Go version's
// compressor, which rarely changes.)
//
// Left out: .git/ directories always, at any depth; what dir/.wispignore matches, then what the
// extra ignore patterns match. Patterns follow .gitignore: one per line;
// blank lines and lines starting with # are skipped; a pattern without a
// slash matches a name at any depth (*.pyc, __pycache__); one with a slash
// is anchored at dir (/build, docs/*.md); a trailing slash matches only
// directories (node_modules/); * and ? do not cross a slash, ** does
// (**/test, logs/**); a leading ! brings back what an earlier pattern left
// out, except inside a left-out directory; the last matching pattern wins.
//
// Symlinks are kept as links and must stay inside dir; sockets, pipes and
// devices are an error (leave them out with .wispignore).
func Pack(dir string, w io.Writer, ignore []string) error {
	root, err := filepath.Abs(dir)
	if err == nil {
		root, err = filepath.EvalSymlinks(root) // dir itself may be a link
	}
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if st, err := os.Stat(root); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	} else if !st.IsDir() {
		return errdefs.Invalidf("give the function's directory", "pack %s: not a directory", dir)
	}
	var patterns []string
	if b, err := os.ReadFile(filepath.Join(root, IgnoreFile)); err == nil {
		patterns = append(patterns, strings.Split(string(b), "\n")...)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	patterns = append(patterns, ignore...)
	m, err := newIgnoreMatcher(patterns)
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}

	bw := bufio.NewWriterSize(w, 64<<10)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	epoch := time.Unix(0, 0)
	// WalkDir visits entries in lexical order, so the archive is sorted.
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if m.ignored(rel, d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: rel, ModTime: epoch, Format: tar.FormatPAX}
		switch mode := info.Mode(); {
		case mode.IsDir():
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, rel+"/", 0o755
		case mode.IsRegular():
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, info.Size()
			if mode&0o111 != 0 {
				hdr.Mode = 0o755
			}
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			j := path.Join(path.Dir(rel), filepath.ToSlash(target))
			if filepath.IsAbs(target) || j == ".." || strings.HasPrefix(j, "../") {
				return errdefs.Invalidf("copy what it points to into the directory, or list it in "+IgnoreFile,
					"%s is a symlink to %s, outside the function directory", rel, target)
			}
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, filepath.ToSlash(target), 0o777
		default:
			return errdefs.Invalidf("list it in "+IgnoreFile,
				"%s is a %s; a function's code may hold only files, directories and symlinks", rel, kindOf(mode))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(tw, f)
		if err != nil {
			return err
		}
		if n != hdr.Size {
			return fmt.Errorf("%s changed while being packed", rel)
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return nil
}

func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// ignoreRule is one compiled .wispignore pattern.
type ignoreRule struct {
	re      *regexp.Regexp
	negate  bool
	dirOnly bool
}

type ignoreMatcher []ignoreRule

// newIgnoreMatcher compiles .gitignore-style patterns (see Pack).
func newIgnoreMatcher(lines []string) (ignoreMatcher, error) {
	var m ignoreMatcher
	for _, line := range lines {
		line = strings.TrimRight(line, " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var r ignoreRule
		if strings.HasPrefix(line, "!") {
			r.negate, line = true, line[1:]
		} else if strings.HasPrefix(line, `\`) {
			line = line[1:] // \# and \! stand for themselves
		}
		if strings.HasSuffix(line, "/") {
			r.dirOnly, line = true, strings.TrimRight(line, "/")
		}
		if line == "" {
			continue
		}
		anchored := strings.Contains(line, "/")
		line = strings.TrimPrefix(line, "/")
		expr, err := globRegexp(line)
		if err != nil {
			return nil, errdefs.Invalidf("fix the pattern in "+IgnoreFile, "%s: pattern %q: %v", IgnoreFile, line, err)
		}
		if !anchored {
			expr = "(?:.*/)?" + expr
		}
		re, err := regexp.Compile("^" + expr + "$")
		if err != nil {
			return nil, errdefs.Invalidf("fix the pattern in "+IgnoreFile, "%s: pattern %q: %v", IgnoreFile, line, err)
		}
		r.re = re
		m = append(m, r)
	}
	return m, nil
}

// globRegexp translates a glob to a regular expression.
func globRegexp(g string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch {
		case strings.HasPrefix(g[i:], "**/"):
			b.WriteString("(?:.*/)?")
			i += 2
		case strings.HasPrefix(g[i:], "/**") && i+3 == len(g):
			b.WriteString("/.*")
			i += 2
		case strings.HasPrefix(g[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '[':
			j := strings.IndexByte(g[i+1:], ']')
			if j < 0 {
				return "", fmt.Errorf("unclosed [")
			}
			class := g[i+1 : i+1+j]
			if class == "" {
				return "", fmt.Errorf("empty []")
			}
			if class[0] == '!' {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += j + 1
		case c == '\\' && i+1 < len(g):
			i++
			b.WriteString(regexp.QuoteMeta(g[i : i+1]))
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return b.String(), nil
}

// ignored reports whether the slash-separated relative path rel is left
// out; the walk does not descend into ignored directories, so a path's
// parents are known to be kept.
func (m ignoreMatcher) ignored(rel string, isDir bool) bool {
	out := false
	for _, r := range m {
		if r.dirOnly && !isDir {
			continue
		}
		if r.re.MatchString(rel) {
			out = !r.negate
		}
	}
	return out
}
