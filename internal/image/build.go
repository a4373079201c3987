package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	goruntime "runtime"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/platforms"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/wisp-faas/wisp/internal/runtime"
)

// DefaultSnapshotter is the snapshotter images are unpacked into.
const DefaultSnapshotter = "overlayfs"

// RuntimeRepo is the repository prefix of runtime base images.
const RuntimeRepo = "wisp.local/runtime/"

// Labels on the images and blobs the builder makes.
const (
	LabelRuntime = "wisp.runtime" // the runtime a base image is for
	LabelKey     = "wisp.key"     // the digest of the builder's inputs
)

// Progress is one step of a build, for a progress bar.
type Progress struct {
	Image string // the image being built
	Stage string // "collect", "layer", "unpack" or "done"
	Done  int64  // bytes written so far (layer)
	Total int64  // bytes to write (layer)
}

// Builder builds and caches runtime base images in containerd. The zero
// value is not usable: set Client. It is safe for concurrent use; builds
// of the same runtime are collapsed into one.
type Builder struct {
	Client *containerd.Client
	// Snapshotter images are unpacked into (DefaultSnapshotter when "").
	Snapshotter string
	// Launcher finds the interpreters (runtime.DefaultLauncher's paths
	// when zero).
	Launcher runtime.Launcher
	// Shim is the binary the container backend mounts into every
	// container; its shared libraries go into every image ("" for none).
	Shim string
	// Log gets a line per stage and per quarter of a layer written.
	Log *slog.Logger
	// Progress, when set, is called as a build goes.
	Progress func(Progress)

	mu    sync.Mutex // guards locks
	locks map[string]*sync.Mutex
}

func (b *Builder) snapshotter() string {
	if b.Snapshotter == "" {
		return DefaultSnapshotter
	}
	return b.Snapshotter
}

func (b *Builder) log() *slog.Logger {
	if b.Log == nil {
		return slog.Default()
	}
	return b.Log
}

func (b *Builder) lock(rt string) func() {
	b.mu.Lock()
	if b.locks == nil {
		b.locks = map[string]*sync.Mutex{}
	}
	l := b.locks[rt]
	if l == nil {
		l = new(sync.Mutex)
		b.locks[rt] = l
	}
	b.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (b *Builder) progress(p Progress) {
	if b.Progress != nil {
		b.Progress(p)
	}
}

// Runtime returns runtime rt's base image (python3, python3.N, node,
// exec), unpacked into the snapshotter: the cached one when the host's
// files have not changed since it was built, a new one otherwise.
func (b *Builder) Runtime(ctx context.Context, rt string) (containerd.Image, error) {
	if err := sanitizeRuntime(rt); err != nil {
		return nil, err
	}
	unlock := b.lock(rt)
	defer unlock()
	start := time.Now()
	c, err := collect(rt, b.Launcher, b.Shim)
	if err != nil {
		return nil, fmt.Errorf("base image for %s: %w", rt, err)
	}
	key := c.key(rt)
	name := repoName(rt) + ":" + key[:16]
	b.progress(Progress{Image: name, Stage: "collect", Total: c.size()})

	if img, err := b.Client.GetImage(ctx, name); err == nil {
		if err := b.ensureUnpacked(ctx, img); err != nil {
			return nil, err
		}
		return img, nil
	} else if !cerrdefs.IsNotFound(err) {
		return nil, fmt.Errorf("base image %s: %w", name, err)
	}

	b.log().InfoContext(ctx, "building image", "image", name, "files", len(c.entries), "bytes", c.size())
	img, err := b.build(ctx, c, rt, key, name)
	if err != nil {
		return nil, fmt.Errorf("build base image %s: %w", name, err)
	}
	b.removeOlder(ctx, rt, name)
	b.progress(Progress{Image: name, Stage: "done"})
	b.log().InfoContext(ctx, "image built", "image", name, "duration", time.Since(start).Round(time.Millisecond))
	return img, nil
}

func (b *Builder) ensureUnpacked(ctx context.Context, img containerd.Image) error {
	ok, err := img.IsUnpacked(ctx, b.snapshotter())
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Name(), err)
	}
	if ok {
		return nil
	}
	b.progress(Progress{Image: img.Name(), Stage: "unpack"})
	if err := img.Unpack(ctx, b.snapshotter()); err != nil {
		return fmt.Errorf("unpack image %s: %w", img.Name(), err)
	}
	return nil
}

// build writes the layer, config and manifest into the content store,
// records the image and unpacks it.
func (b *Builder) build(ctx context.Context, c *collector, rt, key, name string) (containerd.Image, error) {
	// A lease keeps the blobs from the garbage collector until the image
	// record references them.
	ctx, done, err := b.Client.WithLease(ctx)
	if err != nil {
		return nil, err
	}
	defer done(context.WithoutCancel(ctx))
	cs := b.Client.ContentStore()

	layer, err := b.writeLayer(ctx, cs, c, name)
	if err != nil {
		return nil, err
	}
	cfg := ocispec.Image{
		Created:  ptr(time.Now().UTC()),
		Platform: ocispec.Platform{Architecture: goruntime.GOARCH, OS: "linux"},
		Config: ocispec.ImageConfig{
			Env:        runtime.BaseEnv(),
			WorkingDir: "/tmp",
			User:       "65534:65534",
			Labels:     map[string]string{LabelRuntime: rt, LabelKey: key},
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}},
		History: []ocispec.History{{Created: ptr(time.Now().UTC()), CreatedBy: builderVersion,
			Comment: "files of the host's " + rt + " runtime"}},
	}
	if v := platforms.DefaultSpec().Variant; v != "" {
		cfg.Platform.Variant = v
	}
	cfgDesc, err := writeJSON(ctx, cs, ocispec.MediaTypeImageConfig, cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfgDesc,
		Layers:    []ocispec.Descriptor{layer},
		Annotations: map[string]string{ocispec.AnnotationRefName: name[strings.LastIndexByte(name, ':')+1:],
			LabelRuntime: rt},
	}
	mfDesc, err := writeJSON(ctx, cs, ocispec.MediaTypeImageManifest, manifest, map[string]string{
		"containerd.io/gc.ref.content.config": cfgDesc.Digest.String(),
		"containerd.io/gc.ref.content.l.0":    layer.Digest.String(),
	})
	if err != nil {
		return nil, fmt.Errorf("write manifest: %w", err)
	}
	rec := images.Image{Name: name, Target: mfDesc, Labels: map[string]string{LabelRuntime: rt, LabelKey: key}}
	is := b.Client.ImageService()
	if _, err := is.Create(ctx, rec); err != nil {
		if !cerrdefs.IsAlreadyExists(err) {
			return nil, fmt.Errorf("record image: %w", err)
		}
		if _, err := is.Update(ctx, rec); err != nil {
			return nil, fmt.Errorf("record image: %w", err)
		}
	}
	img := containerd.NewImageWithPlatform(b.Client, rec, platforms.Default())
	b.log().InfoContext(ctx, "unpacking image", "image", name, "snapshotter", b.snapshotter())
	if err := b.ensureUnpacked(ctx, img); err != nil {
		return nil, err
	}
	return img, nil
}

// writeLayer streams the uncompressed tar of c's entries into the content
// store. Its digest is both the blob digest and the diff id.
func (b *Builder) writeLayer(ctx context.Context, cs content.Store, c *collector, name string) (ocispec.Descriptor, error) {
	ref := "wisp-layer-" + name
	w, err := content.OpenWriter(ctx, cs, content.WithRef(ref))
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("open layer writer: %w", err)
	}
	defer w.Close()
	if err := w.Truncate(0); err != nil { // an interrupted build's partial write
		return ocispec.Descriptor{}, fmt.Errorf("open layer writer: %w", err)
	}
	h := sha256.New()
	pw := &progressWriter{w: io.MultiWriter(w, h), total: c.size(), report: func(done, total int64) {
		b.progress(Progress{Image: name, Stage: "layer", Done: done, Total: total})
	}, log: func(done, total int64) {
		b.log().InfoContext(ctx, "building image", "image", name, "written", done, "of", total)
	}}
	n, err := writeTar(pw, c)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("write layer: %w", err)
	}
	dgst := digest.NewDigest(digest.SHA256, hash.Hash(h))
	if err := w.Commit(ctx, n, dgst); err != nil && !cerrdefs.IsAlreadyExists(err) {
		return ocispec.Descriptor{}, fmt.Errorf("commit layer: %w", err)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: dgst, Size: n}, nil
}

// writeTar writes c's entries as a tar stream and returns its size.
func writeTar(w io.Writer, c *collector) (int64, error) {
	cw := &countWriter{w: w}
	tw := tar.NewWriter(cw)
	for _, e := range c.sorted() {
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(e.path, "/"),
			Mode:    int64(e.mode.Perm()) | modeBits(e.mode),
			ModTime: e.mtime,
			Format:  tar.FormatPAX,
		}
		switch {
		case e.mode&fs.ModeSymlink != 0:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.link
		case e.mode.IsDir():
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, e.size
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return 0, fmt.Errorf("%s: %w", e.path, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if e.data != nil {
			if _, err := tw.Write(e.data); err != nil {
				return 0, fmt.Errorf("%s: %w", e.path, err)
			}
			continue
		}
		if err := copyFile(tw, e); err != nil {
			return 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	return cw.n, nil
}

// modeBits returns the setuid, setgid and sticky bits in tar's encoding.
func modeBits(m fs.FileMode) int64 {
	var b int64
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}

func copyFile(w io.Writer, e *entry) error {
	f, err := os.Open(e.path)
	if err != nil {
		return err
	}
	defer f.Close()
	// The header promised e.size bytes: a file that changed since it was
	// collected must not corrupt the stream.
	n, err := io.Copy(w, io.LimitReader(f, e.size))
	if err != nil {
		return fmt.Errorf("%s: %w", e.path, err)
	}
	if n != e.size {
		return fmt.Errorf("%s changed while the image was built (%d bytes instead of %d): build again", e.path, n, e.size)
	}
	return nil
}

// writeJSON stores v as a blob of the given media type.
func writeJSON(ctx context.Context, cs content.Store, mediaType string, v any, labels map[string]string) (ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	var opts []content.Opt
	if labels != nil {
		opts = append(opts, content.WithLabels(labels))
	}
	if err := content.WriteBlob(ctx, cs, "wisp-"+desc.Digest.String(), bytes.NewReader(b), desc, opts...); err != nil {
		return ocispec.Descriptor{}, err
	}
	if labels != nil {
		// WriteBlob keeps an existing blob's labels; the manifest's GC
		// references must be there.
		info := content.Info{Digest: desc.Digest, Labels: labels}
		var fields []string
		for k := range labels {
			fields = append(fields, "labels."+k)
		}
		if _, err := cs.Update(ctx, info, fields...); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	return desc, nil
}

// removeOlder deletes the earlier base images of runtime rt; the garbage
// collector then frees their blobs and snapshots.
func (b *Builder) removeOlder(ctx context.Context, rt, keep string) {
	is := b.Client.ImageService()
	imgs, err := is.List(ctx, fmt.Sprintf(`labels.%q==%q`, LabelRuntime, rt))
	if err != nil {
		b.log().WarnContext(ctx, "list older images", "runtime", rt, "err", err)
		return
	}
	for _, img := range imgs {
		if img.Name == keep || !strings.HasPrefix(img.Name, repoName(rt)+":") {
			continue
		}
		if err := is.Delete(ctx, img.Name); err != nil && !cerrdefs.IsNotFound(err) {
			b.log().WarnContext(ctx, "remove older image", "image", img.Name, "err", err)
			continue
		}
		b.log().InfoContext(ctx, "removed older image", "image", img.Name)
	}
}

func ptr[T any](v T) *T { return &v }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// progressWriter reports every 4 MiB written, and logs every quarter.
type progressWriter struct {
	w           io.Writer
	total, done int64
	lastReport  int64
	lastQuarter int64
	report, log func(done, total int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.done-p.lastReport >= 4<<20 {
		p.lastReport = p.done
		p.report(p.done, p.total)
	}
	if p.total > 0 {
		if q := p.done * 4 / p.total; q > p.lastQuarter && q <= 4 {
			p.lastQuarter = q
			p.log(p.done, p.total)
		}
	}
	return n, err
}
