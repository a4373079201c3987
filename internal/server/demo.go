package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/wisp-faas/wisp/examples"
	"github.com/wisp-faas/wisp/internal/client"
	"github.com/wisp-faas/wisp/internal/store"
)

// deployDemo deploys the embedded example functions through the server's own
// API, exactly as `wisp deploy -f` would, and prints how to call them.
// token is the admin key ("" without authentication) and keyFile where it is.
func deployDemo(ctx context.Context, baseURL, token, keyFile string, out io.Writer) error {
	tmp, err := os.MkdirTemp("", "wisp-examples-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := WriteExamples(tmp); err != nil {
		return err
	}
	c := client.New(baseURL, token, 1)
	fmt.Fprintf(out, "\nwisp is serving on %s with the example functions:\n\n", baseURL)
	for _, name := range examples.Names {
		dir := filepath.Join(tmp, name)
		spec, err := os.ReadFile(filepath.Join(dir, "function.yaml"))
		if err != nil {
			return err
		}
		var code bytes.Buffer
		if err := store.Pack(dir, &code, nil); err != nil {
			return fmt.Errorf("pack example %s: %w", name, err)
		}
		v, err := c.Deploy(ctx, name, spec, &code)
		if err != nil {
			fmt.Fprintf(out, "  %-14s NOT DEPLOYED: %v\n", name, err)
			continue
		}
		if v.Spec.IsSequence() {
			fmt.Fprintf(out, "  %-14s sequence of %s\n", v.Name, strings.Join(v.Spec.Steps, ", "))
			continue
		}
		fmt.Fprintf(out, "  %-14s %s, %s mode\n", v.Name, v.Spec.Runtime, v.Spec.ExecutionMode)
	}
	auth := ""
	if token != "" {
		fmt.Fprintf(out, "\nEvery call needs the admin key, which is in %s:\n  export WISP_TOKEN=$(cat %s)\n", keyFile, keyFile)
		auth = ` -H "Authorization: Bearer $WISP_TOKEN"`
	}
	fmt.Fprintf(out, `
Call them:
  curl -s%[2]s '%[1]s/function/hello-python?name=Ada'
  curl -s%[2]s -d '{"name": "Grace"}' %[1]s/function/hello-node
  curl -s%[2]s -d 'quiet please' %[1]s/function/shout-exec
  curl -s%[2]s -d '{"name": "Ada"}' %[1]s/function/greet-loud    (a sequence: hello-python, then shout-exec)
  wisp invoke hello-python -d '{"name": "Ada"}' -v    (bin/wisp; WISP_URL=%[1]s)
  wisp ls    wisp logs hello-python    wisp activations    wisp bench hello-python -n 2000 -c 8

Press Ctrl-C to stop: calls in flight finish, every sandbox is removed.

`, baseURL, auth)
	return nil
}

// WriteExamples copies the embedded examples into dir, restoring the
// executable bit of scripts (embed does not keep file modes).
func WriteExamples(dir string) error {
	return fs.WalkDir(examples.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := fs.ReadFile(examples.FS, p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if path.Ext(p) == ".sh" || strings.HasPrefix(string(b), "#!") {
			mode = 0o755
		}
		return os.WriteFile(dst, b, mode)
	})
}
