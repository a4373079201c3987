package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/containerd"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// PullTimeout bounds a pull: a machine that reaches no registry fails
// fast (the resolver's DNS lookup or connection), one that reaches a slow
// one gets this long.
const PullTimeout = 5 * time.Minute

// importHint tells users how to bring an image to a machine without a
// registry.
const importHint = "this machine reaches no container registry: save the image where one is reachable " +
	"(docker save IMAGE -o image.tar, or skopeo copy docker://IMAGE oci-archive:image.tar) " +
	"and load it here with `wisp image import image.tar`"

// ImportFile loads the images of an OCI image layout or Docker archive
// (a tar file) into containerd and unpacks them into snapshotter (""
// for DefaultSnapshotter). It returns the names of the images.
func ImportFile(ctx context.Context, client *containerd.Client, path, snapshotter string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errdefs.New(errdefs.ErrInvalid, "pass the path of a tar file written by docker save or skopeo",
			"import image: %v", err)
	}
	defer f.Close()
	names, err := Import(ctx, client, f, snapshotter)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	return names, nil
}

// Import loads the images of an OCI or Docker archive read from r into
// containerd (this platform's manifests only) and unpacks them.
func Import(ctx context.Context, client *containerd.Client, r io.Reader, snapshotter string) ([]string, error) {
	if snapshotter == "" {
		snapshotter = DefaultSnapshotter
	}
	imgs, err := client.Import(ctx, r, containerd.WithImportPlatform(platforms.Default()),
		// An OCI layout whose index names no image still gets one.
		containerd.WithDigestRef(func(d digest.Digest) string { return "wisp.local/import@" + d.String() }),
		containerd.WithSkipDigestRef(func(name string) bool { return name != "" }))
	if err != nil {
		return nil, errdefs.WithHint(fmt.Errorf("%w: %w", errdefs.ErrInvalid, err),
			"the file must be an OCI image layout or a Docker archive (docker save), as a tar file")
	}
	if len(imgs) == 0 {
		return nil, errdefs.Invalidf("check that the archive holds an image for "+platforms.DefaultString(),
			"the archive holds no image")
	}
	var names []string
	for _, rec := range imgs {
		img := containerd.NewImageWithPlatform(client, rec, platforms.Default())
		if err := img.Unpack(ctx, snapshotter); err != nil {
			return names, fmt.Errorf("unpack %s: %w", rec.Name, err)
		}
		names = append(names, rec.Name)
	}
	return names, nil
}

// Normalize returns the full name of an image reference as containerd
// stores it: "python:3.11" is "docker.io/library/python:3.11".
func Normalize(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", errdefs.Invalidf("use a reference like python:3.11-slim or registry.example/team/image:tag",
			"image reference %q: %v", ref, err)
	}
	return named.String(), nil
}

// Ensure returns image ref unpacked into snapshotter: the local one when
// containerd has it (built, imported or pulled before), else pulled from
// its registry. A failed pull is an errdefs.ErrUnavailable error that
// says how to import the image instead.
func Ensure(ctx context.Context, client *containerd.Client, ref, snapshotter string) (containerd.Image, error) {
	if snapshotter == "" {
		snapshotter = DefaultSnapshotter
	}
	name := ref
	img, err := client.GetImage(ctx, name)
	if cerrdefs.IsNotFound(err) {
		if name, err = Normalize(ref); err != nil {
			return nil, err
		}
		img, err = client.GetImage(ctx, name)
	}
	switch {
	case err == nil:
		ok, err := img.IsUnpacked(ctx, snapshotter)
		if err == nil && !ok {
			err = img.Unpack(ctx, snapshotter)
		}
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		return img, nil
	case !cerrdefs.IsNotFound(err):
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	pctx, cancel := context.WithTimeout(ctx, PullTimeout)
	defer cancel()
	img, err = client.Pull(pctx, name, containerd.WithPullUnpack, containerd.WithPullSnapshotter(snapshotter))
	if err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return nil, fmt.Errorf("pull %s: %w", name, ctx.Err())
		}
		return nil, errdefs.New(errdefs.ErrUnavailable, importHint, "image %s is not here and cannot be pulled: %v", name, err)
	}
	return img, nil
}
