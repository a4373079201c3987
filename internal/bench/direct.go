package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"

	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// DirectHost is one runtime host started as a plain child process (no
// sandbox, no scheduler, no store) behind a minimal HTTP handler. It is the
// baseline that wisp's own overhead is measured against: the same host, the
// same wire protocol, nothing else.
type DirectHost struct {
	conn *runtime.Conn
	cmd  *exec.Cmd
	seq  atomic.Uint64
}

// StartDirectHost starts the runtime host of spec over the code in codeDir.
func StartDirectHost(ctx context.Context, spec *function.Spec, codeDir string) (*DirectHost, error) {
	rtDir, err := os.MkdirTemp("", "wisp-direct-")
	if err != nil {
		return nil, err
	}
	if err := runtime.Extract(rtDir); err != nil {
		return nil, err
	}
	argv, err := runtime.DefaultLauncher().Command(spec, codeDir, rtDir)
	if err != nil {
		return nil, err
	}
	if argv == nil {
		return nil, fmt.Errorf("direct host: runtime %s has no host process", spec.Runtime)
	}
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = runtime.HostEnv(spec, 0)
	cmd.ExtraFiles = []*os.File{reqR, respW} // fds 3 and 4
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Dir = codeDir
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	reqR.Close()
	respW.Close()
	d := &DirectHost{conn: runtime.NewConn(reqW, respR, runtime.ConnOptions{}), cmd: cmd}
	d.conn.SetKill(func() { _ = cmd.Process.Kill() })
	if _, err := d.conn.WaitReady(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// ServeHTTP forwards one HTTP request to the host.
func (d *DirectHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, err := d.conn.RoundTrip(r.Context(), &sandbox.Request{
		ActivationID: strconv.FormatUint(d.seq.Add(1), 10),
		Method:       r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Header: r.Header, Body: body,
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// Close stops the host.
func (d *DirectHost) Close() error {
	_ = d.conn.Close()
	_ = d.cmd.Process.Kill()
	_ = d.cmd.Wait()
	return nil
}
