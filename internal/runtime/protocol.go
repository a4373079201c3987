package runtime

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Limits applied when a caller leaves them at zero.
const (
	// DefaultMaxBody is the largest request or response body a channel
	// carries (the same order as AWS Lambda's 6 MB synchronous payload, with
	// room for binary data).
	DefaultMaxBody = 32 << 20
	// DefaultLogLimit is the most bytes of captured stdout/stderr (plus the
	// traceback) a host returns for one call. Beyond it the host keeps the
	// head of the output, a "...[truncated N bytes]" marker and the
	// traceback.
	DefaultLogLimit = 64 << 10
	// DefaultMaxHeader is the largest request header (method, path, query,
	// HTTP headers) a host accepts.
	DefaultMaxHeader = 1 << 20

	prefixLen = 8 // uint32 header length + uint32 body length
)

// Environment variables a runtime host reads at startup (set by HostEnv).
const (
	// EnvConcurrency is how many calls the host serves at once (default 1).
	// The python host uses a thread pool of that size for a sync handle; the
	// node host and async python handlers interleave calls on one event
	// loop; the exec host runs that many child processes.
	EnvConcurrency = "WISP_CONCURRENCY"
	// EnvLogLimit is the per-call log limit in bytes (default
	// DefaultLogLimit).
	EnvLogLimit = "WISP_LOG_LIMIT"
)

// RequestHeader is the JSON header of a request frame (worker → host). The
// frame's body is the HTTP request body, raw.
type RequestHeader struct {
	// ID names the call on this channel; the host copies it into the
	// response. Ids are unique per channel, not globally.
	ID string `json:"id"`
	// ActivationID is the platform-wide id of the call, exposed to handlers
	// (req.activation_id, req.activationId) for their own logs.
	ActivationID string `json:"activation_id,omitempty"`
	Method       string `json:"method"`
	Path         string `json:"path"`
	Query        string `json:"query"` // raw query string, without "?"
	// Headers are the HTTP request headers, canonical names.
	Headers map[string][]string `json:"headers,omitempty"`
	// TimeoutMS is the time left for this call when it was sent; 0 means no
	// deadline. The exec host kills the handler when it runs out; the
	// python and node hosts cannot stop a running handler and leave that to
	// the worker, which kills the instance.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// Deadline is when the call's time runs out, in CLOCK_MONOTONIC
	// nanoseconds (the same clock in every sandbox on the node); 0 means
	// none. A serial host (Ready.Serial) skips a call whose deadline passed
	// before it could start, answering a Skipped response, and sets the
	// handler's timeout_ms from it when the call starts.
	Deadline int64 `json:"deadline,omitempty"`
}

// Ready is the first frame a host sends (host → worker, empty body), once
// it has imported the handler or failed to.
type Ready struct {
	Ready bool `json:"ready"`
	// InitMS is how long the host took from its first line to ready
	// (interpreter start-up before that is not included), in milliseconds.
	InitMS float64 `json:"init_ms,omitempty"`
	// PID is the host's process id in its own PID namespace.
	PID int `json:"pid,omitempty"`
	// Error says why the handler could not be loaded, with the file and
	// line when known: "SyntaxError: invalid syntax (handler.py line 3)".
	// The host exits after sending a failed ready frame.
	Error string `json:"error,omitempty"`
	// Logs holds the traceback of a failed load.
	Logs string `json:"logs,omitempty"`
	// Serial says the host serves calls one at a time, in the order they
	// arrive, and skips those whose Deadline passed while they waited. The
	// worker may then queue calls in the channel behind a running one
	// (pipelining): a call behind the running one has not started, so when
	// the instance dies it can be sent to another.
	Serial bool `json:"serial,omitempty"`
}

// ResponseHeader is the JSON header of a response frame (host → worker).
// The frame's body is the HTTP response body, raw.
type ResponseHeader struct {
	ID      string              `json:"id"`
	Status  int                 `json:"status"`
	Headers map[string][]string `json:"headers,omitempty"`
	// Error is the handler's exception ("ValueError: bad input") or why its
	// return value could not be converted; empty when it returned normally.
	Error string `json:"error,omitempty"`
	// Logs is what the handler wrote to stdout and stderr during the call,
	// then the traceback if it raised, truncated by the host to its log
	// limit with a "...[truncated N bytes]" marker.
	Logs string `json:"logs,omitempty"`
	// RunUS is how long the handler ran, with the conversion of its
	// result, in microseconds, as the host measured it; 0 when it does
	// not say.
	RunUS int64 `json:"run_us,omitempty"`
	// Skipped says a serial host did not start the call: its deadline had
	// passed when its turn came. Status is then 504.
	Skipped bool `json:"skipped,omitempty"`
}

// WriteFrame writes one frame. A header of type []byte or json.RawMessage
// is written as is (it must be JSON); anything else is marshalled with
// encoding/json.
//
// WriteFrame issues at most two writes; callers sharing w between
// goroutines must serialise calls.
func WriteFrame(w io.Writer, header any, body []byte) error {
	var hdr []byte
	switch h := header.(type) {
	case []byte:
		hdr = h
	case json.RawMessage:
		hdr = h
	default:
		b, err := json.Marshal(header)
		if err != nil {
			return fmt.Errorf("write frame: encode header: %w", err)
		}
		hdr = b
	}
	buf, err := appendFrame(make([]byte, 0, prefixLen+len(hdr)+smallBody(body)), hdr, body)
	if err != nil {
		return err
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	if smallBody(body) == 0 && len(body) > 0 {
		if _, err := w.Write(body); err != nil {
			return fmt.Errorf("write frame body: %w", err)
		}
	}
	return nil
}

// copyLimit is the largest body copied next to the header so that a frame
// leaves in one write; bigger bodies are written from the caller's slice.
const copyLimit = 64 << 10

func smallBody(body []byte) int {
	if len(body) <= copyLimit {
		return len(body)
	}
	return 0
}

// appendFrame appends the length prefix and hdr to dst, and body when it is
// small (see smallBody).
func appendFrame(dst, hdr, body []byte) ([]byte, error) {
	if len(hdr) == 0 {
		return dst, errors.New("write frame: empty header")
	}
	if uint64(len(hdr)) > math.MaxUint32 || uint64(len(body)) > math.MaxUint32 {
		return dst, fmt.Errorf("write frame: %d+%d bytes do not fit a frame: %w", len(hdr), len(body), errdefs.ErrTooLarge)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(hdr)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	dst = append(dst, hdr...)
	if smallBody(body) > 0 {
		dst = append(dst, body...)
	}
	return dst, nil
}

// ReadFrame reads one frame and returns its header (JSON, not decoded) and
// body, in one fresh allocation the caller owns. A body of length 0 is nil.
//
// At a clean end of stream (no byte of a new frame) it returns io.EOF
// itself; a stream that ends inside a frame is io.ErrUnexpectedEOF.
//
// Lengths over maxHeader or maxBody are refused before anything is
// allocated, with an error wrapping errdefs.ErrTooLarge. When only the body
// is too large, ReadFrame skips it and returns the header together with the
// error, and r stays at a frame boundary, so the caller can fail that one
// call and go on. After any other error the stream is unusable.
func ReadFrame(r *bufio.Reader, maxHeader, maxBody int) (hdr []byte, body []byte, err error) {
	return readFrame(r, maxHeader, maxBody, nil)
}

// readFrame is ReadFrame with a scratch buffer for the header: when the
// header fits in cap(scratch) it is read there (the caller must be done with
// it before the next call) and only the body is allocated.
func readFrame(r *bufio.Reader, maxHeader, maxBody int, scratch []byte) (hdr []byte, body []byte, err error) {
	p, err := r.Peek(prefixLen)
	if err != nil {
		if errors.Is(err, io.EOF) {
			if len(p) == 0 {
				return nil, nil, io.EOF
			}
			err = io.ErrUnexpectedEOF
		}
		return nil, nil, fmt.Errorf("read frame: %w", err)
	}
	h := int64(binary.BigEndian.Uint32(p))
	b := int64(binary.BigEndian.Uint32(p[4:]))
	if _, err := r.Discard(prefixLen); err != nil {
		return nil, nil, fmt.Errorf("read frame: %w", err)
	}
	if h == 0 {
		return nil, nil, errors.New("read frame: empty header (not a wisp runtime frame)")
	}
	if h > int64(max(maxHeader, 0)) {
		return nil, nil, fmt.Errorf("read frame: header of %d bytes exceeds the limit of %d bytes: %w", h, maxHeader, errdefs.ErrTooLarge)
	}
	if b > int64(max(maxBody, 0)) {
		hdr = make([]byte, h)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return nil, nil, fmt.Errorf("read frame header: %w", unexpected(err))
		}
		if _, err := r.Discard(int(b)); err != nil {
			return nil, nil, fmt.Errorf("skip frame body: %w", unexpected(err))
		}
		return hdr, nil, fmt.Errorf("body of %d bytes exceeds the limit of %d bytes: %w", b, maxBody, errdefs.ErrTooLarge)
	}
	if h <= int64(cap(scratch)) {
		hdr = scratch[:h]
		if b > 0 {
			body = make([]byte, b)
		}
	} else {
		buf := make([]byte, h+b)
		hdr, body = buf[:h:h], buf[h:]
		if b == 0 {
			body = nil
		}
	}
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, nil, fmt.Errorf("read frame header: %w", unexpected(err))
	}
	if b > 0 {
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, nil, fmt.Errorf("read frame body: %w", unexpected(err))
		}
	}
	return hdr, body, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// TruncateLogs cuts logs to limit bytes, keeping the head and appending a
// "...[truncated N bytes]" marker, the same way the hosts do. Logs within
// the limit are returned unchanged.
func TruncateLogs(logs []byte, limit int) []byte {
	if limit < 0 || len(logs) <= limit {
		return logs
	}
	out := append(logs[:limit:limit], "\n...[truncated "...)
	out = strconv.AppendInt(out, int64(len(logs)-limit), 10)
	return append(out, " bytes]\n"...)
}
