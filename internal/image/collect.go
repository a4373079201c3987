package image

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/runtime"
)

// builderVersion goes into every cache key: bump it when what the builder
// puts into an image changes.
const builderVersion = "wisp-image-builder/1"

// Mount points the container backend binds into; they exist in every base
// image so that containers can run on a read-only view of it.
var mountPoints = []string{"/code", runtime.SandboxRuntimeDir, "/run", "/run/wisp", "/tmp", "/proc", "/sys", "/dev", "/etc"}

// execPackages are the Debian packages whose programs an exec function's
// base image holds.
var execPackages = []string{"dash", "coreutils", "grep", "sed", "mawk", "findutils"}

// execFallback is what the exec base holds where dpkg is missing.
var execFallback = []string{"/bin/sh", "/bin/cat", "/bin/echo", "/usr/bin/tr", "/usr/bin/wc", "/usr/bin/env",
	"/bin/sed", "/bin/grep", "/usr/bin/awk", "/usr/bin/head", "/usr/bin/tail", "/usr/bin/sort"}

// stdlibSkip are the directories of Python's standard library left out of
// the image: test suites and GUI toolkits no function uses.
var stdlibSkip = []string{"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3/tests"}

// entry is one file, directory or symbolic link of an image.
type entry struct {
	path  string      // absolute path in the image (and on the host, unless data is set)
	mode  fs.FileMode // type and permission bits
	size  int64
	mtime time.Time
	link  string // symlink target
	data  []byte // generated content (not read from the host)
}

// collector gathers the files of one image.
type collector struct {
	entries map[string]*entry
	elfSeen map[string]bool
	libDirs []string
}

func newCollector() *collector {
	return &collector{entries: map[string]*entry{}, elfSeen: map[string]bool{}, libDirs: libDirs()}
}

// libDirs are the directories the dynamic loader searches, multiarch first.
func libDirs() []string {
	triple := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu",
		"386": "i386-linux-gnu", "arm": "arm-linux-gnueabihf", "riscv64": "riscv64-linux-gnu",
		"ppc64le": "powerpc64le-linux-gnu", "s390x": "s390x-linux-gnu"}[goruntime.GOARCH]
	var dirs []string
	if triple != "" {
		dirs = append(dirs, "/lib/"+triple, "/usr/lib/"+triple)
	}
	return append(dirs, "/lib64", "/usr/lib64", "/lib", "/usr/lib")
}

// add puts host path p into the image with every symbolic link on its way
// (as links) and every directory above it. Links are followed at most 40
// times, like the kernel does.
func (c *collector) add(p string) error { return c.addDepth(p, 0) }

func (c *collector) addDepth(p string, depth int) error {
	if depth > 40 {
		return fmt.Errorf("add %s: too many levels of symbolic links", p)
	}
	p = filepath.Clean(p)
	if !filepath.IsAbs(p) {
		return fmt.Errorf("add %s: not an absolute path", p)
	}
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := "/"
	for i, part := range parts {
		if part == "" {
			continue
		}
		next := filepath.Join(cur, part)
		st, err := os.Lstat(next)
		if err != nil {
			return fmt.Errorf("add %s: %w", p, err)
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(next)
			if err != nil {
				return fmt.Errorf("add %s: %w", p, err)
			}
			c.put(next, st, target)
			abs := target
			if !filepath.IsAbs(abs) {
				abs = filepath.Join(cur, target)
			}
			return c.addDepth(filepath.Join(append([]string{abs}, parts[i+1:]...)...), depth+1)
		}
		if i < len(parts)-1 && !st.IsDir() {
			return fmt.Errorf("add %s: %s is not a directory", p, next)
		}
		c.put(next, st, "")
		cur = next
	}
	return nil
}

func (c *collector) put(p string, st fs.FileInfo, link string) {
	if _, ok := c.entries[p]; ok {
		return
	}
	e := &entry{path: p, mode: st.Mode(), mtime: st.ModTime(), link: link}
	if st.Mode().IsRegular() {
		e.size = st.Size()
	}
	c.entries[p] = e
}

// addTree adds dir and everything below it, except the subdirectories
// named in skip (relative to dir). Symbolic links inside are kept, and
// their targets added when they exist.
func (c *collector) addTree(dir string, skip []string) error {
	if err := c.add(dir); err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("add %s: %w", dir, err)
	}
	return filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(real, p)
		if d.IsDir() && slices.Contains(skip, filepath.ToSlash(rel)) {
			return filepath.SkipDir
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			c.put(p, st, target)
			abs := target
			if !filepath.IsAbs(abs) {
				abs = filepath.Join(filepath.Dir(p), target)
			}
			if _, err := os.Stat(abs); err == nil && !strings.HasPrefix(abs+"/", real+"/") {
				return c.add(abs)
			}
		case st.IsDir() || st.Mode().IsRegular():
			c.put(p, st, "")
		}
		return nil // sockets, devices, FIFOs: not in an image
	})
}

// addELFClosure adds the shared libraries every ELF file in the image
// needs, and the ones those need, until nothing new turns up.
func (c *collector) addELFClosure() error {
	for {
		var todo []string
		for p, e := range c.entries {
			if e.mode.IsRegular() && e.data == nil && !c.elfSeen[p] {
				todo = append(todo, p)
			}
		}
		if len(todo) == 0 {
			return nil
		}
		slices.Sort(todo)
		for _, p := range todo {
			c.elfSeen[p] = true
			if err := c.addELFDeps(p); err != nil {
				return err
			}
		}
	}
}

// addELFDeps adds the program interpreter and DT_NEEDED libraries of file
// p, when p is an ELF file.
func (c *collector) addELFDeps(p string) error {
	if !isELF(p) {
		return nil
	}
	f, err := elf.Open(p)
	if err != nil {
		return nil // not a loadable ELF file after all (a core dump, an object)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(prog.Open())
		if err != nil {
			return fmt.Errorf("read interpreter of %s: %w", p, err)
		}
		if err := c.add(strings.TrimRight(string(b), "\x00")); err != nil {
			return fmt.Errorf("interpreter of %s: %w", p, err)
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return nil // a static binary or a file without a dynamic section
	}
	for _, lib := range needed {
		found := false
		for _, d := range c.libDirs {
			cand := filepath.Join(d, lib)
			if _, err := os.Stat(cand); err == nil {
				if err := c.add(cand); err != nil {
					return fmt.Errorf("library %s of %s: %w", lib, p, err)
				}
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("library %s needed by %s is not in %s", lib, p, strings.Join(c.libDirs, ", "))
		}
	}
	return nil
}

func isELF(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == elf.ELFMAG
}

// addGenerated puts a file with the given content into the image.
func (c *collector) addGenerated(p string, mode fs.FileMode, data []byte) {
	c.entries[p] = &entry{path: p, mode: mode, size: int64(len(data)), mtime: time.Unix(0, 0), data: data}
}

// addDir puts an empty directory (a mount point) into the image, unless
// the path is already there.
func (c *collector) addDir(p string, mode fs.FileMode) {
	if _, ok := c.entries[p]; !ok {
		c.entries[p] = &entry{path: p, mode: fs.ModeDir | mode, mtime: time.Unix(0, 0)}
	}
}

// complete adds the parent directories every entry needs, with the host's
// modes where they exist.
func (c *collector) complete() {
	for p := range c.entries {
		for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
			if _, ok := c.entries[d]; ok {
				continue
			}
			if st, err := os.Lstat(d); err == nil && st.IsDir() {
				c.put(d, st, "")
			} else {
				c.addDir(d, 0o755)
			}
		}
	}
}

// sorted returns the entries in path order: every directory before what it
// holds.
func (c *collector) sorted() []*entry {
	out := make([]*entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *entry) int { return strings.Compare(a.path, b.path) })
	return out
}

// key digests everything that decides the image's content.
func (c *collector) key(rt string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", builderVersion, rt, goruntime.GOARCH)
	for _, e := range c.sorted() {
		fmt.Fprintf(h, "%s %o %d %d %s\n", e.path, uint32(e.mode), e.size, e.mtime.UnixNano(), e.link)
		h.Write(e.data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// size is the total size of the regular files.
func (c *collector) size() int64 {
	var n int64
	for _, e := range c.entries {
		n += e.size
	}
	return n
}

// collect gathers the files of runtime rt's base image. shim is the binary
// the backend mounts into containers ("" for none): its libraries go in.
func collect(rt string, l runtime.Launcher, shim string) (*collector, error) {
	c := newCollector()
	switch function.Family(rt) {
	case function.RuntimePython:
		bin, err := l.Interpreter(rt)
		if err != nil {
			return nil, err
		}
		if err := c.add(bin); err != nil {
			return nil, err
		}
		real, err := filepath.EvalSymlinks(bin)
		if err != nil {
			return nil, fmt.Errorf("runtime %s: %w", rt, err)
		}
		// Debian's layout: /usr/bin/python3.11 → /usr/lib/python3.11.
		stdlib := filepath.Join(filepath.Dir(filepath.Dir(real)), "lib", filepath.Base(real))
		if err := c.addTree(stdlib, stdlibSkip); err != nil {
			return nil, fmt.Errorf("runtime %s: standard library: %w", rt, err)
		}
	case function.RuntimeNode:
		bin, err := l.Interpreter(rt)
		if err != nil {
			return nil, err
		}
		if err := c.add(bin); err != nil {
			return nil, err
		}
	case function.RuntimeExec:
		files, err := dpkgFiles(execPackages)
		if err != nil || len(files) == 0 {
			files = execFallback
		}
		for _, f := range append(files, "/bin/sh") {
			if _, err := os.Lstat(f); err != nil {
				continue // listed by dpkg but diverted or removed
			}
			if err := c.add(f); err != nil {
				return nil, fmt.Errorf("runtime exec: %w", err)
			}
		}
	default:
		return nil, fmt.Errorf("no base image for runtime %q", rt)
	}
	if shim != "" {
		if err := c.addELFDeps(shim); err != nil {
			return nil, fmt.Errorf("libraries of %s: %w", shim, err)
		}
	}
	if err := c.addELFClosure(); err != nil {
		return nil, fmt.Errorf("runtime %s: %w", rt, err)
	}
	for _, d := range mountPoints {
		c.addDir(d, 0o755)
	}
	if e := c.entries["/tmp"]; e != nil {
		e.mode = fs.ModeDir | fs.ModeSticky | 0o777
	}
	c.addGenerated("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/usr/sbin/nologin\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"))
	c.addGenerated("/etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	// Mount points for functions with the host's network.
	c.addGenerated("/etc/hosts", 0o644, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost\n"))
	c.addGenerated("/etc/resolv.conf", 0o644, []byte{})
	c.complete()
	return c, nil
}

// dpkgFiles lists the programs and libraries of installed Debian packages
// (not their documentation). Packages that are not installed are skipped.
func dpkgFiles(pkgs []string) ([]string, error) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		return nil, err
	}
	var files []string
	for _, p := range pkgs {
		out, err := exec.Command("dpkg-query", "-L", p).Output()
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := sc.Text()
			if !strings.HasPrefix(f, "/") || strings.HasPrefix(f, "/usr/share/") {
				continue
			}
			if st, err := os.Lstat(f); err == nil && !st.IsDir() {
				files = append(files, f)
			}
		}
	}
	return files, nil
}

// repoName is the image repository of runtime rt's base.
func repoName(rt string) string { return RuntimeRepo + rt }

// sanitizeRuntime rejects runtime names that would not make an image name.
func sanitizeRuntime(rt string) error {
	for _, r := range rt {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return errors.New("runtime " + strconv.Quote(rt) + " is not a valid image name")
		}
	}
	return nil
}
