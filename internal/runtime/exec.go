package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/wisp-faas/wisp/internal/function"
)

// ExecConfig configures the exec host. Build it with NewExecConfig.
type ExecConfig struct {
	// Argv is the handler command. Argv[0] is an absolute path, a path
	// relative to Dir ("./bin/handler"), or a bare name found in Dir or else
	// on the PATH of Env (function.ExecPath() when Env has none).
	Argv []string
	// Dir is the function's code directory and the handler's working
	// directory.
	Dir string
	// Env is the handler's base environment (HostEnv); each call adds the
	// Http_* variables.
	Env []string
	// Concurrency is how many handler processes may run at once (1 when 0).
	Concurrency int
	// LogLimit bounds each call's captured stderr (DefaultLogLimit when 0).
	LogLimit int
	// MaxBody bounds request bodies and the handler's stdout
	// (DefaultMaxBody when 0).
	MaxBody int
	// ContentType is the Content-Type of every response (the function's
	// content_type variable, as in OpenFaaS's classic watchdog). When empty
	// it is "text/plain; charset=utf-8" if the output is valid UTF-8 and
	// "application/octet-stream" otherwise.
	ContentType string
}

// ServeExec is the exec runtime host. It runs inside the sandbox, in the
// init process after it has dropped privileges, and serves the channel
// itself: in is the request pipe (fd 3 in other hosts), out the response
// pipe (fd 4).
//
// It resolves the command and sends the ready frame (a failed ready frame,
// then an error, when the command does not exist), then runs one child
// process per request, like OpenFaaS's classic watchdog:
//
//   - the request body is the child's stdin; its stdout is the response
//     body, status 200, Content-Type per ExecConfig.ContentType;
//   - its stderr is the call's logs (truncated to LogLimit);
//   - a non-zero exit is status 500 with Error "exit status N" (stdout is
//     still the body); a child still running after the request's timeout_ms
//     has its process group killed and gives status 504;
//   - the environment is Env plus Http_Method, Http_Path, Http_Query,
//     Http_ContentLength and Http_<Header_Name> for each request header
//     (canonical name, "-" → "_", values joined with ", ").
//
// Each child runs in its own process group, killed when the child exits so
// that nothing it started outlives the call.
//
// ServeExec returns nil when in ends (the worker closed the channel), after
// the calls in flight have been answered. When ctx ends it kills the running
// children and returns ctx's error; a read blocked on in stays blocked
// until in is closed.
func ServeExec(ctx context.Context, in io.Reader, out io.Writer, cfg ExecConfig) error {
	start := time.Now()
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.LogLimit <= 0 {
		cfg.LogLimit = DefaultLogLimit
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	s := &execServer{cfg: cfg, out: out}
	bin, err := s.resolve()
	if err != nil {
		_ = s.write(Ready{Ready: false, Error: err.Error()}, nil)
		return fmt.Errorf("exec host: %w", err)
	}
	s.bin = bin
	if err := s.write(Ready{
		Ready:  true,
		InitMS: float64(time.Since(start).Microseconds()) / 1000,
		PID:    os.Getpid(),
	}, nil); err != nil {
		return fmt.Errorf("exec host: send ready: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	frames := make(chan execFrame)
	stopped := make(chan struct{})
	defer close(stopped)
	go readFrames(in, cfg.MaxBody, frames, stopped)

	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var f execFrame
		select {
		case f = <-frames:
		case <-ctx.Done():
			return ctx.Err()
		}
		if f.hdr == nil {
			if errors.Is(f.err, io.EOF) {
				return nil
			}
			return fmt.Errorf("exec host: %w", f.err)
		}
		var h RequestHeader
		if err := json.Unmarshal(f.hdr, &h); err != nil {
			return fmt.Errorf("exec host: bad request header: %w", err)
		}
		if f.err != nil { // body over MaxBody, skipped
			if err := s.write(ResponseHeader{ID: h.ID, Status: http.StatusRequestEntityTooLarge, Error: f.err.Error()}, nil); err != nil {
				return fmt.Errorf("exec host: %w", err)
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			hdr, body := s.serve(ctx, &h, f.body)
			if err := s.write(hdr, body); err != nil {
				// The worker is gone; it will not read other responses
				// either, and the next read of in ends the loop.
				return
			}
		}()
	}
}

type execFrame struct {
	hdr, body []byte
	err       error
}

// readFrames feeds frames from in to ch until a read error (sent too) or
// stop.
func readFrames(in io.Reader, maxBody int, ch chan<- execFrame, stop <-chan struct{}) {
	br := bufio.NewReaderSize(in, 64<<10)
	for {
		hdr, body, err := ReadFrame(br, DefaultMaxHeader, maxBody)
		select {
		case ch <- execFrame{hdr, body, err}:
		case <-stop:
			return
		}
		if err != nil && hdr == nil {
			return
		}
	}
}

// execServer is one ServeExec. mu serialises frame writes on out.
type execServer struct {
	cfg ExecConfig
	bin string
	mu  sync.Mutex
	out io.Writer
}

func (s *execServer) write(hdr any, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return WriteFrame(s.out, hdr, body)
}

// resolve finds the handler command the way function.Spec.ValidateCode
// checks it.
func (s *execServer) resolve() (string, error) {
	if len(s.cfg.Argv) == 0 || s.cfg.Argv[0] == "" {
		return "", errors.New("exec handler: no command")
	}
	name := s.cfg.Argv[0]
	var candidates []string
	switch {
	case filepath.IsAbs(name):
		candidates = []string{name}
	case strings.Contains(name, "/"):
		candidates = []string{filepath.Join(s.cfg.Dir, name)}
	default:
		candidates = append(candidates, filepath.Join(s.cfg.Dir, name))
		for _, d := range s.searchPath() {
			candidates = append(candidates, filepath.Join(d, name))
		}
	}
	for _, c := range candidates {
		st, err := os.Stat(c)
		if err != nil || st.IsDir() {
			continue
		}
		if st.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("exec handler: %s is not executable (chmod +x %s)", c, name)
		}
		return c, nil
	}
	return "", fmt.Errorf("exec handler: command %q not found in the function's code or on PATH (%s)",
		name, strings.Join(s.searchPath(), ":"))
}

func (s *execServer) searchPath() []string {
	for _, kv := range s.cfg.Env {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			return filepath.SplitList(p)
		}
	}
	return function.ExecPath()
}

// serve runs the handler once and returns the response frame.
func (s *execServer) serve(ctx context.Context, h *RequestHeader, body []byte) (ResponseHeader, []byte) {
	cctx := ctx
	var timeout time.Duration
	if h.TimeoutMS > 0 {
		timeout = time.Duration(h.TimeoutMS) * time.Millisecond
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	stdout := &cappedBuffer{limit: s.cfg.MaxBody}
	stderr := &cappedBuffer{limit: s.cfg.LogLimit}
	cmd := exec.CommandContext(cctx, s.bin, s.cfg.Argv[1:]...)
	cmd.Args[0] = s.cfg.Argv[0]
	cmd.Dir = s.cfg.Dir
	cmd.Env = s.env(h, len(body))
	cmd.Stdin = bytes.NewReader(body)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.SysProcAttr = newProcessGroup()
	cmd.Cancel = func() error { return killProcessGroup(cmd.Process.Pid) }
	// Grandchildren that keep stdout open must not hold the call.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		_ = killProcessGroup(cmd.Process.Pid) // background leftovers
	}

	resp := ResponseHeader{ID: h.ID, Status: http.StatusOK}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case timeout > 0 && errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		resp.Status = http.StatusGatewayTimeout
		resp.Error = fmt.Sprintf("timeout: handler still running after %s; killed", timeout)
	case errors.As(err, &exitErr):
		resp.Status = http.StatusInternalServerError
		resp.Error = exitErr.Error() // "exit status 3", "signal: killed"
	default:
		resp.Status = http.StatusInternalServerError
		resp.Error = fmt.Sprintf("run %s: %v", s.cfg.Argv[0], err)
	}
	out := stdout.Bytes()
	if stdout.dropped > 0 {
		resp.Status = http.StatusInternalServerError
		resp.Error = fmt.Sprintf("response body over the limit of %d bytes (%d bytes more)", s.cfg.MaxBody, stdout.dropped)
		out = nil
	}
	ctype := s.cfg.ContentType
	if ctype == "" {
		ctype = "text/plain; charset=utf-8"
		if !utf8.Valid(out) {
			ctype = "application/octet-stream"
		}
	}
	resp.Headers = map[string][]string{"Content-Type": {ctype}}
	resp.Logs = stderr.String()
	if stderr.dropped > 0 {
		resp.Logs += "\n...[truncated " + strconv.Itoa(stderr.dropped) + " bytes]\n"
	}
	return resp, out
}

// env is the handler's environment for one call: the base, a default PATH,
// then the request in OpenFaaS classic watchdog names.
func (s *execServer) env(h *RequestHeader, bodyLen int) []string {
	env := make([]string, 0, len(s.cfg.Env)+5+len(h.Headers))
	env = append(env, s.cfg.Env...)
	hasPath := false
	for _, kv := range s.cfg.Env {
		if strings.HasPrefix(kv, "PATH=") {
			hasPath = true
			break
		}
	}
	if !hasPath {
		env = append(env, "PATH="+strings.Join(function.ExecPath(), ":"))
	}
	env = append(env,
		"Http_Method="+h.Method,
		"Http_Path="+h.Path,
		"Http_Query="+h.Query,
		"Http_ContentLength="+strconv.Itoa(bodyLen),
	)
	for name, values := range h.Headers {
		key := "Http_" + strings.ReplaceAll(http.CanonicalHeaderKey(name), "-", "_")
		env = append(env, key+"="+strings.ReplaceAll(strings.Join(values, ", "), "\x00", ""))
	}
	return env
}

// cappedBuffer keeps the first limit bytes written and counts the rest.
type cappedBuffer struct {
	bytes.Buffer
	limit   int
	dropped int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := b.limit - b.Len()
	if room >= len(p) {
		return b.Buffer.Write(p)
	}
	if room > 0 {
		b.Buffer.Write(p[:room])
		b.dropped += len(p) - room
	} else {
		b.dropped += len(p)
	}
	return len(p), nil
}
