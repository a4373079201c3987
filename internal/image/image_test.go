package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images/archive"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/platforms"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// testNamespace holds this package's test images between runs (the cache).
const testNamespace = "wisp-test-image"

const socket = "/run/containerd/containerd.sock"

func TestCollect(t *testing.T) {
	testenv.RequireFile(t, "/usr/bin/python3", "python3")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		runtime string
		want    []string // paths the image must hold
	}{
		{"python3", []string{"/usr/bin/python3", "/usr/lib/python3.11/os.py", "/usr/lib/python3.11/json/__init__.py", "/lib64/ld-linux-x86-64.so.2"}},
		{"exec", []string{"/bin/sh", "/usr/bin/tr", "/usr/bin/wc"}},
	}
	for _, tc := range tests {
		t.Run(tc.runtime, func(t *testing.T) {
			c, err := collect(tc.runtime, runtime.DefaultLauncher(), exe)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range append(tc.want, "/code", "/wisp", "/tmp", "/etc/passwd", "/etc/hosts") {
				if !strings.HasPrefix(p, "/usr/lib/python3.11") || testenv.Exists(p) {
					if _, ok := c.entries[resolve(c, p)]; !ok {
						t.Errorf("image of %s lacks %s", tc.runtime, p)
					}
				}
			}
			if _, ok := c.entries["/usr/lib/python3.11/test"]; ok {
				t.Error("python's test suite is in the image")
			}
			// Every file's directory is in the image, and libc is.
			libc := false
			for p := range c.entries {
				if d := filepath.Dir(p); d != "/" {
					if _, ok := c.entries[d]; !ok {
						t.Errorf("%s is in the image but its directory is not", p)
					}
				}
				if strings.HasSuffix(p, "/libc.so.6") {
					libc = true
				}
			}
			if !libc {
				t.Error("no libc.so.6 in the image")
			}
			again, err := collect(tc.runtime, runtime.DefaultLauncher(), exe)
			if err != nil {
				t.Fatal(err)
			}
			if c.key(tc.runtime) != again.key(tc.runtime) {
				t.Error("the cache key changes between two collections of unchanged files")
			}
		})
	}
}

func testClient(t *testing.T) (*containerd.Client, context.Context) {
	t.Helper()
	testenv.RequireRoot(t)
	if !testenv.Exists(socket) {
		testenv.Missing(t, "containerd is not running at %s (apt-get install containerd runc; containerd &)", socket)
	}
	client, err := containerd.New(socket, containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), testNamespace), 5*time.Minute)
	t.Cleanup(cancel)
	return client, ctx
}

func TestBuildCachedAndImport(t *testing.T) {
	client, ctx := testClient(t)
	var stages []string
	b := &Builder{Client: client, Progress: func(p Progress) {
		if len(stages) == 0 || stages[len(stages)-1] != p.Stage {
			stages = append(stages, p.Stage)
		}
	}}
	img, err := b.Runtime(ctx, "exec")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(img.Name(), RuntimeRepo+"exec:") {
		t.Errorf("image name %q", img.Name())
	}
	if ok, err := img.IsUnpacked(ctx, DefaultSnapshotter); err != nil || !ok {
		t.Fatalf("image not unpacked: %v", err)
	}
	t.Logf("build stages: %v", stages)

	// The second time, nothing changed: the same image, fast.
	start := time.Now()
	again, err := b.Runtime(ctx, "exec")
	if err != nil {
		t.Fatal(err)
	}
	if again.Name() != img.Name() || again.Target().Digest != img.Target().Digest {
		t.Errorf("rebuilt: %s (%s), then %s (%s)", img.Name(), img.Target().Digest, again.Name(), again.Target().Digest)
	}
	t.Logf("cached lookup: %v", time.Since(start))

	// Export as an OCI archive, remove, import back.
	archivePath := filepath.Join(t.TempDir(), "exec.tar")
	f, err := os.Create(archivePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Export(ctx, f, archive.WithImage(client.ImageService(), img.Name()), archive.WithPlatform(platforms.Default())); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := client.ImageService().Delete(ctx, img.Name()); err != nil {
		t.Fatal(err)
	}
	names, err := ImportFile(ctx, client, archivePath, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("import returned no image")
	}
	t.Logf("imported %v", names)
	found := false
	for _, n := range names {
		im, err := client.GetImage(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if im.Target().Digest == img.Target().Digest {
			found = true
		}
	}
	if !found {
		t.Errorf("imported images %v do not hold the exported manifest %s", names, img.Target().Digest)
	}

	if _, err := ImportFile(ctx, client, filepath.Join(t.TempDir(), "missing.tar"), ""); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("import of a missing file: %v, want ErrInvalid", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.tar")
	os.WriteFile(bad, []byte("not a tar file"), 0o644)
	if _, err := ImportFile(ctx, client, bad, ""); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("import of a non-archive: %v, want ErrInvalid", err)
	}
}

func TestEnsureWithoutRegistry(t *testing.T) {
	client, ctx := testClient(t)
	// A registry on a closed loopback port: refused at once, no traffic
	// leaves the machine.
	_, err := Ensure(ctx, client, "127.0.0.1:1/wisp/absent:1", "")
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(errdefs.Hint(err), "wisp image import") {
		t.Fatalf("Ensure = %v (hint %q), want ErrUnavailable naming wisp image import", err, errdefs.Hint(err))
	}
	if _, err := Normalize("Not A Reference"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Normalize of garbage: %v", err)
	}
	if n, _ := Normalize("python:3.11"); n != "docker.io/library/python:3.11" {
		t.Errorf("Normalize(python:3.11) = %q", n)
	}
}

// resolve follows the image's symbolic links on the way to p.
func resolve(c *collector, p string) string {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := "/"
	for i := 0; i < len(parts); i++ {
		next := filepath.Join(cur, parts[i])
		if e, ok := c.entries[next]; ok && e.link != "" {
			target := e.link
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			return resolve(c, filepath.Join(append([]string{target}, parts[i+1:]...)...))
		}
		cur = next
	}
	return cur
}
