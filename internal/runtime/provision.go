package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

// A pre-provisioned host is started before any function is known, with
// WaitCommand's argv. It writes one idle frame ({"idle": true, "pid": N}),
// then waits for one load frame ({"load": Load}) that binds it to a
// function; after that it sends the usual ready frame and serves calls, so
// the worker wraps the channel in a Conn only after SendLoad.

// Load binds a waiting host to a function.
type Load struct {
	CodeDir string            `json:"code_dir"`
	Handler string            `json:"handler"`
	Env     map[string]string `json:"env"`
}

// WaitCommand returns the argv of a host that waits for a Load, or (nil,
// nil) for runtimes that cannot wait (python3 and node hosts can; exec is
// served by the sandbox init itself).
func (l Launcher) WaitCommand(runtime, runtimeDir string) ([]string, error) {
	fam := function.Family(runtime)
	if fam != function.RuntimePython && fam != function.RuntimeNode {
		return nil, nil
	}
	bin, err := l.Interpreter(runtime)
	if err != nil {
		return nil, err
	}
	if fam == function.RuntimeNode {
		return []string{bin, path.Join(runtimeDir, NodeHost), "--wait"}, nil
	}
	return []string{bin, "-B", "-S", path.Join(runtimeDir, PythonHost), "--wait"}, nil
}

// ReadIdle reads a waiting host's idle frame straight from r, without
// buffering past it, and returns the host's pid.
func ReadIdle(r io.Reader) (int, error) {
	var prefix [prefixLen]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return 0, fmt.Errorf("read idle frame: %w", crashed(err, "runtime host exited before it was idle"))
	}
	hl := int(prefix[0])<<24 | int(prefix[1])<<16 | int(prefix[2])<<8 | int(prefix[3])
	bl := int(prefix[4])<<24 | int(prefix[5])<<16 | int(prefix[6])<<8 | int(prefix[7])
	if hl > 4<<10 || bl != 0 {
		return 0, fmt.Errorf("read idle frame: header %d bytes, body %d bytes: %w", hl, bl, errdefs.ErrCrashed)
	}
	hdr := make([]byte, hl)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, fmt.Errorf("read idle frame: %w", crashed(err, "runtime host exited before it was idle"))
	}
	var idle struct {
		Idle bool `json:"idle"`
		PID  int  `json:"pid"`
	}
	if err := json.Unmarshal(hdr, &idle); err != nil || !idle.Idle {
		return 0, fmt.Errorf("read idle frame: unexpected %q: %w", hdr, errdefs.ErrCrashed)
	}
	return idle.PID, nil
}

// AwaitIdle waits for a waiting host's idle frame on r, bounded by ctx.
// When ctx ends first it calls abort (which must make the read return, by
// killing the host or closing r) and returns ctx's error.
func AwaitIdle(ctx context.Context, r io.Reader, abort func()) error {
	idle := make(chan error, 1)
	go func() { _, err := ReadIdle(r); idle <- err }()
	select {
	case err := <-idle:
		return err
	case <-ctx.Done():
		abort()
		<-idle
		return ctx.Err()
	}
}

// SendLoad binds a waiting host to a function.
func SendLoad(w io.Writer, l Load) error {
	if err := WriteFrame(w, map[string]Load{"load": l}, nil); err != nil {
		return fmt.Errorf("send load frame: %w", err)
	}
	return nil
}

// EnvMap turns KEY=VALUE entries into a map (later entries win).
func EnvMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		m[k] = v
	}
	return m
}
