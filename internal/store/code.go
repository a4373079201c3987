package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// DigestPrefix starts every code digest.
const DigestPrefix = "sha256:"

var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// parseDigest returns the hex of "sha256:<hex>".
func parseDigest(d string) (string, error) {
	h, ok := strings.CutPrefix(d, DigestPrefix)
	if !ok || !hexRE.MatchString(h) {
		return "", errdefs.Invalidf("code digests look like sha256:<64 hex digits>", "%q is not a code digest", d)
	}
	return h, nil
}

func (s *Store) blobPath(hex string) string { return filepath.Join(s.dir, "blobs", "sha256", hex) }
func (s *Store) codePath(hex string) string { return filepath.Join(s.dir, "code", hex) }

func (s *Store) limits() unpackLimits {
	return unpackLimits{maxBytes: s.opts.MaxUnpackedSize, maxEntries: MaxEntries}
}

// formatSize writes n in the largest binary unit it reaches ("50Mi",
// "73.4Mi", "512 bytes").
func formatSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		switch {
		case n < u.m:
			continue
		case n%u.m == 0:
			return fmt.Sprintf("%d%s", n/u.m, u.s)
		default:
			return fmt.Sprintf("%.1f%s", float64(n)/float64(u.m), u.s)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// ctxReader fails reads once ctx is done, so an abandoned upload stops.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// PutCode stores a gzip-compressed tar archive of a function's code read
// from r and returns its digest ("sha256:<hex>") and size. The archive is
// streamed to a temporary file while hashed, refused beyond
// Options.MaxCodeSize (ErrTooLarge), checked to be a readable tar.gz whose
// entries CodeDir will accept (ErrInvalid), and only then moved to
// blobs/sha256/<hex>. Storing content that is already there keeps the
// existing blob. Nothing is left behind on failure.
//
// The blob is not referenced until a PutFunction names it; GCCode leaves it
// alone for Options.GCGracePeriod.
func (s *Store) PutCode(ctx context.Context, r io.Reader) (digest string, size int64, err error) {
	const op = "store code"
	if err := live(ctx, op); err != nil {
		return "", 0, err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "blobs", "ingest"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", op, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(tmp)
		}
	}()

	limit := s.opts.MaxCodeSize
	h := sha256.New()
	in := ctxReader{ctx, r}
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(in, limit+1))
	if err != nil {
		return "", 0, fmt.Errorf("%s: read upload: %w", op, err)
	}
	if n > limit {
		// Say how large it is, reading at most another limit's worth.
		rest, _ := io.Copy(io.Discard, io.LimitReader(in, limit))
		what := formatSize(n + rest)
		if n+rest > 2*limit {
			what = "more than " + formatSize(2*limit)
		}
		return "", 0, errdefs.New(errdefs.ErrTooLarge,
			"add a .wispignore next to the spec to leave out what the function does not need (node_modules/, tests, data), or raise store.max_code_size in the server config",
			"%s: code archive is %s; the limit is %s (store.max_code_size)", op, what, formatSize(limit))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, fmt.Errorf("%s: %w", op, err)
	}
	if err := checkArchive(ctx, f, s.limits()); err != nil {
		return "", 0, fmt.Errorf("%s: %w", op, err)
	}
	if err := f.Chmod(0o444); err != nil {
		return "", 0, fmt.Errorf("%s: %w", op, err)
	}
	if err := f.Sync(); err != nil {
		return "", 0, fmt.Errorf("%s: %w", op, err)
	}
	if err := f.Close(); err != nil {
		f = nil
		return "", 0, fmt.Errorf("%s: %w", op, err)
	}
	f = nil

	sum := hex.EncodeToString(h.Sum(nil))
	dst := s.blobPath(sum)
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	if _, serr := os.Stat(dst); serr == nil {
		now := time.Now()
		_ = os.Chtimes(dst, now, now) // a fresh upload: restart the grace period
		os.Remove(tmp)
		return DigestPrefix + sum, n, nil
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", 0, fmt.Errorf("%s: %w", op, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return "", 0, fmt.Errorf("%s: %w", op, err)
	}
	return DigestPrefix + sum, n, nil
}

// OpenCode opens the archive of digest for reading (to export it, or to
// import it as a container image layer). The caller closes it.
func (s *Store) OpenCode(ctx context.Context, digest string) (io.ReadCloser, int64, error) {
	op := "open code " + digest
	if err := live(ctx, op); err != nil {
		return nil, 0, err
	}
	h, err := parseDigest(digest)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	f, err := os.Open(s.blobPath(h))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, 0, fmt.Errorf("%s: %w", op, codeNotFound(digest))
		}
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	return f, st.Size(), nil
}

func codeNotFound(digest string) error {
	return errdefs.New(errdefs.ErrNotFound, "deploy the function again (wisp deploy) to upload its code",
		"code %s is not in the store", digest)
}

// flight is an extraction in progress; callers for the same digest wait
// for it.
type flight struct {
	done chan struct{}
	dir  string
	err  error
}

// CodeDir returns the directory holding the unpacked code of digest,
// unpacking the blob on first use: into a temporary directory, renamed to
// code/<hex> when complete, so a directory that exists is whole.
// Concurrent callers for one digest share one extraction. The tree is
// readable by every uid but writable only by its owner (see the package
// comment), and each call refreshes its modification time, which GCCode's
// grace period counts from.
func (s *Store) CodeDir(ctx context.Context, digest string) (string, error) {
	op := "unpack code " + digest
	if err := live(ctx, op); err != nil {
		return "", err
	}
	h, err := parseDigest(digest)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	if dir, ok := s.touchCodeDir(h); ok {
		return dir, nil
	}
	s.flightMu.Lock()
	f, ok := s.flights[h]
	if !ok {
		f = &flight{done: make(chan struct{})}
		s.flights[h] = f
		// The extraction is not tied to the first caller's context: others
		// may be waiting for it, and its size is bounded.
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			f.dir, f.err = s.extract(h, digest)
			s.flightMu.Lock()
			delete(s.flights, h)
			s.flightMu.Unlock()
			close(f.done)
		}()
	}
	s.flightMu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			return "", fmt.Errorf("%s: %w", op, f.err)
		}
		return f.dir, nil
	case <-ctx.Done():
		return "", fmt.Errorf("%s: %w", op, ctx.Err())
	}
}

// touchCodeDir refreshes and returns code/<hex> if it exists.
func (s *Store) touchCodeDir(h string) (string, bool) {
	dir := s.codePath(h)
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	now := time.Now()
	if err := os.Chtimes(dir, now, now); err != nil {
		return "", false
	}
	return dir, true
}

func (s *Store) extract(h, digest string) (string, error) {
	blob, err := os.Open(s.blobPath(h))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", codeNotFound(digest)
		}
		return "", err
	}
	defer blob.Close()
	codeRoot := filepath.Join(s.dir, "code")
	tmp, err := os.MkdirTemp(codeRoot, ".extract-"+h+"-")
	if err != nil {
		return "", err
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(tmp)
		}
	}()
	if err := unpack(context.Background(), blob, tmp, s.limits()); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	// One syncfs instead of an fsync per file: after a crash the renamed
	// directory must not hold empty files.
	if d, err := os.Open(tmp); err == nil {
		_ = unix.Syncfs(int(d.Fd()))
		d.Close()
	}
	dst := s.codePath(h)
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	if err := os.Rename(tmp, dst); err != nil {
		if _, serr := os.Stat(dst); serr == nil {
			return dst, nil // unpacked meanwhile; ours is removed
		}
		return "", err
	}
	keep = true
	_ = syncDir(codeRoot)
	return dst, nil
}

// GCResult says what GCCode removed.
type GCResult struct {
	Blobs int   // archives removed
	Dirs  int   // unpacked directories removed
	Bytes int64 // archive bytes freed
}

// GCCode removes the archives and unpacked directories that no function
// record references and that are not named in keep (digests, "sha256:<hex>",
// still used by live instances: a directory removed under a running
// instance would vanish from its view). Those modified within
// Options.GCGracePeriod are also kept: an archive uploaded and not yet
// named by PutFunction, a directory CodeDir just returned. Call it after
// DeleteFunction or an update, or periodically.
func (s *Store) GCCode(ctx context.Context, keep []string) (GCResult, error) {
	const op = "collect unused code"
	var res GCResult
	if err := live(ctx, op); err != nil {
		return res, err
	}
	s.gcMu.Lock()
	refs, err := s.referencedDigests()
	if err != nil {
		s.gcMu.Unlock()
		return res, fmt.Errorf("%s: %w", op, err)
	}
	for _, d := range keep {
		h, err := parseDigest(d)
		if err != nil {
			s.gcMu.Unlock()
			return res, fmt.Errorf("%s: keep: %w", op, err)
		}
		refs[h] = true
	}
	cutoff := time.Now().Add(-s.opts.GCGracePeriod)
	unused := func(name string, info fs.FileInfo) bool {
		return hexRE.MatchString(name) && !refs[name] && info.ModTime().Before(cutoff)
	}
	var trash []string
	var firstErr error
	blobs, _ := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256"))
	for _, e := range blobs {
		info, err := e.Info()
		if err != nil || !unused(e.Name(), info) {
			continue
		}
		if err := os.Remove(s.blobPath(e.Name())); err != nil {
			firstErr = cmpErr(firstErr, err)
			continue
		}
		res.Blobs++
		res.Bytes += info.Size()
	}
	dirs, _ := os.ReadDir(filepath.Join(s.dir, "code"))
	for _, e := range dirs {
		info, err := e.Info()
		if err != nil || !e.IsDir() || !unused(e.Name(), info) {
			continue
		}
		// Rename first (CodeDir never looks at dot names), remove after
		// unlocking: a large tree takes a while to delete.
		t, err := os.MkdirTemp(filepath.Join(s.dir, "code"), ".trash-")
		if err == nil {
			err = os.Rename(s.codePath(e.Name()), filepath.Join(t, e.Name()))
		}
		if err != nil {
			if t != "" {
				os.Remove(t)
			}
			firstErr = cmpErr(firstErr, err)
			continue
		}
		trash = append(trash, t)
		res.Dirs++
	}
	s.gcMu.Unlock()
	for _, t := range trash {
		if err := os.RemoveAll(t); err != nil {
			firstErr = cmpErr(firstErr, err)
		}
	}
	if firstErr != nil {
		return res, fmt.Errorf("%s: %w", op, firstErr)
	}
	return res, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
