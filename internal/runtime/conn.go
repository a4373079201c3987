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
	"net/textproto"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// ConnOptions configure the worker side of a channel. The zero value uses
// the defaults.
type ConnOptions struct {
	// MaxBody is the largest response body accepted (DefaultMaxBody when
	// 0). A bigger response fails its call with an errdefs.ErrTooLarge
	// error; the channel stays usable.
	MaxBody int
	// LogLimit is the per-call log limit the host was started with
	// (DefaultLogLimit when 0). Logs longer than that are cut again here,
	// and it bounds the response header size.
	LogLimit int
}

// Conn is the worker's end of the channel to one runtime host: it sends
// request frames and matches response frames to callers by id.
//
// RoundTrip is safe for concurrent use; the host decides how many calls it
// serves at once (WISP_CONCURRENCY) and answers in any order. One reader
// goroutine, started by NewConn, owns the read side: it decodes each
// response and hands it to the waiting caller. Writers take turns on wsem.
type Conn struct {
	w    io.WriteCloser
	r    io.ReadCloser
	br   *bufio.Reader
	opts ConnOptions

	maxHeader int
	nextID    atomic.Uint64

	// wsem (capacity 1) serialises frame writes and guards wbuf and enc. It
	// is a channel rather than a mutex so that a caller can stop waiting for
	// it when its context ends.
	wsem chan struct{}
	wbuf *bytes.Buffer
	enc  *json.Encoder

	readyCh  chan struct{} // closed by the reader once ready/readyErr are set
	ready    Ready
	readyErr error

	done chan struct{} // closed when the reader goroutine exits

	mu      sync.Mutex // guards pending and err
	pending map[uint64]*call
	err     error // why the channel broke; set once, never cleared

	closeOnce sync.Once
	closeErr  error
}

// call is one caller waiting for its response. ch has room for exactly one
// result, so the reader never blocks on a caller that has given up.
type call struct {
	ch chan result
}

type result struct {
	resp *sandbox.Response
	err  error
}

var callPool = sync.Pool{New: func() any { return &call{ch: make(chan result, 1)} }}

// NewConn starts the reader goroutine on r (the host's fd 4) and returns a
// Conn that writes requests to w (the host's fd 3). The Conn owns both; Close
// closes them. When w and r are *os.File pipes (pollable), a RoundTrip whose
// context ends while it is blocked writing is interrupted too.
func NewConn(w io.WriteCloser, r io.ReadCloser, opts ConnOptions) *Conn {
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.LogLimit <= 0 {
		opts.LogLimit = DefaultLogLimit
	}
	buf := new(bytes.Buffer)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	c := &Conn{
		w:    w,
		r:    r,
		br:   bufio.NewReaderSize(r, 64<<10),
		opts: opts,
		// Logs are JSON strings: control characters take 6 bytes each.
		maxHeader: 6*opts.LogLimit + DefaultMaxHeader,
		wsem:      make(chan struct{}, 1),
		wbuf:      buf,
		enc:       enc,
		readyCh:   make(chan struct{}),
		done:      make(chan struct{}),
		pending:   make(map[uint64]*call),
	}
	go c.readLoop()
	return c
}

// LoadError is the error of a host that could not load the handler: a
// syntax error, an exception at import, no handle function. It wraps
// errdefs.ErrCrashed; its message is the host's one-line reason.
type LoadError struct {
	Message string // "SyntaxError: invalid syntax (handler.py line 3)"
	Logs    string // the traceback
}

func (e *LoadError) Error() string { return e.Message }
func (e *LoadError) Unwrap() error { return errdefs.ErrCrashed }

// crashError reports a broken channel: it wraps errdefs.ErrCrashed and the
// underlying cause (io.EOF, a write error).
type crashError struct {
	msg   string
	cause error
}

func (e *crashError) Error() string   { return e.msg }
func (e *crashError) Unwrap() []error { return []error{errdefs.ErrCrashed, e.cause} }

func crashed(cause error, format string, args ...any) error {
	return &crashError{msg: fmt.Sprintf(format, args...), cause: cause}
}

// errClosed is the cause after Close.
var errClosed = errors.New("runtime connection closed")

// WaitReady waits for the host's ready frame. A host that failed to load the
// handler gives a *LoadError (errdefs.ErrCrashed); a host that exits or
// closes the channel first gives an errdefs.ErrCrashed error; when ctx ends
// first the error wraps errdefs.ErrTimeout.
func (c *Conn) WaitReady(ctx context.Context) (Ready, error) {
	select {
	case <-c.readyCh:
		return c.ready, c.readyErr
	case <-c.done:
		select {
		case <-c.readyCh:
			return c.ready, c.readyErr
		default:
		}
		return Ready{}, c.brokenErr()
	case <-ctx.Done():
		return Ready{}, fmt.Errorf("runtime host did not load the handler in time: %w: %w", errdefs.ErrTimeout, context.Cause(ctx))
	}
}

// Done is closed when the reader stops: the host closed its end (exited,
// crashed), sent something that is not a frame, or Close was called.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the channel broke, or nil while it works.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Conn) brokenErr() error {
	if err := c.Err(); err != nil {
		return err
	}
	return crashed(errClosed, "runtime host channel closed")
}

// RoundTrip sends req to the host and waits for the response. Handler
// exceptions are responses (Status 500, Error set); errors are reserved for
// the channel:
//
//   - errdefs.ErrCrashed: the host died or closed the channel before it
//     answered (every later call fails the same way);
//   - errdefs.ErrTimeout: ctx ended first; the caller should stop the
//     instance, which may still be running the handler;
//   - errdefs.ErrTooLarge: the response body exceeded MaxBody (the channel
//     stays usable).
//
// The request's deadline is sent to the host as timeout_ms.
func (c *Conn) RoundTrip(ctx context.Context, req *sandbox.Request) (*sandbox.Response, error) {
	id := c.nextID.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, c.timeoutErr(ctx, id)
	}
	if len(req.Body) > c.opts.MaxBody {
		return nil, fmt.Errorf("call %d: request body of %d bytes exceeds the limit of %d bytes: %w",
			id, len(req.Body), c.opts.MaxBody, errdefs.ErrTooLarge)
	}
	cl := callPool.Get().(*call)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		callPool.Put(cl)
		return nil, err
	}
	c.pending[id] = cl
	c.mu.Unlock()

	if err := c.send(ctx, id, req); err != nil {
		if c.forget(id) {
			callPool.Put(cl)
		}
		return nil, err
	}
	select {
	case res := <-cl.ch:
		callPool.Put(cl)
		return res.resp, res.err
	case <-ctx.Done():
		// A response that arrives later is dropped by the reader. cl goes
		// back to the pool only if the reader can no longer reach it.
		if c.forget(id) {
			callPool.Put(cl)
		}
		return nil, c.timeoutErr(ctx, id)
	}
}

func (c *Conn) timeoutErr(ctx context.Context, id uint64) error {
	return fmt.Errorf("call %d: no response from the runtime host: %w: %w", id, errdefs.ErrTimeout, context.Cause(ctx))
}

// forget removes a pending call and reports whether it was still there
// (then no result was or will be delivered to it).
func (c *Conn) forget(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[id]; ok {
		delete(c.pending, id)
		return true
	}
	return false
}

// deadliner is implemented by pollable *os.File pipes.
type deadliner interface {
	SetWriteDeadline(t time.Time) error
}

// aLongTimeAgo is a deadline in the past, to interrupt a blocked write.
var aLongTimeAgo = time.Unix(1, 0)

// send writes one request frame. Frames never interleave; a write cut short
// (by ctx or a dead host) leaves the stream mid-frame, so it breaks the
// channel.
func (c *Conn) send(ctx context.Context, id uint64, req *sandbox.Request) error {
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return c.timeoutErr(ctx, id)
	}
	defer func() { <-c.wsem }()

	var idBuf [20]byte
	hdr := RequestHeader{
		ID:           string(strconv.AppendUint(idBuf[:0], id, 10)),
		ActivationID: req.ActivationID,
		Method:       req.Method,
		Path:         req.Path,
		Query:        req.RawQuery,
		Headers:      req.Header,
	}
	if dl, ok := ctx.Deadline(); ok {
		hdr.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
	}
	// Reserve the prefix, encode the header after it, then fill it in.
	var zero [prefixLen]byte
	c.wbuf.Reset()
	c.wbuf.Write(zero[:])
	if err := c.enc.Encode(&hdr); err != nil {
		return fmt.Errorf("call %d: encode request header: %w", id, err)
	}
	c.wbuf.Truncate(c.wbuf.Len() - 1) // Encode's trailing newline
	hlen := c.wbuf.Len() - prefixLen
	big := len(req.Body) > copyLimit
	if !big {
		c.wbuf.Write(req.Body)
	}
	frame := c.wbuf.Bytes()
	putPrefix(frame, hlen, len(req.Body))

	// Let ctx interrupt a write that blocks on a full pipe (a host busy
	// with other calls, a large body).
	var stop func() bool
	var fired chan struct{}
	if d, ok := c.w.(deadliner); ok && ctx.Done() != nil {
		fired = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			_ = d.SetWriteDeadline(aLongTimeAgo)
			close(fired)
		})
	}
	_, err := c.w.Write(frame)
	if err == nil && big {
		_, err = c.w.Write(req.Body)
	}
	if stop != nil && !stop() {
		<-fired
		_ = c.w.(deadliner).SetWriteDeadline(time.Time{})
	}
	if c.wbuf.Cap() > 1<<20 {
		c.wbuf = new(bytes.Buffer) // do not pin a large request's buffer
		c.enc = json.NewEncoder(c.wbuf)
		c.enc.SetEscapeHTML(false)
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			c.fail(crashed(err, "runtime channel abandoned mid-frame after a timeout"))
			return c.timeoutErr(ctx, id)
		}
		// The host is gone. Let the reader drain what it wrote before it
		// died (a load error frame says why), so that cause wins over the
		// bare broken pipe.
		select {
		case <-c.done:
		case <-time.After(250 * time.Millisecond):
		}
		c.fail(crashed(err, "runtime host stopped reading requests: %v", err))
		c.mu.Lock()
		err = c.err
		c.mu.Unlock()
		return fmt.Errorf("call %d: %w", id, err)
	}
	return nil
}

func putPrefix(b []byte, h, body int) {
	b[0], b[1], b[2], b[3] = byte(h>>24), byte(h>>16), byte(h>>8), byte(h)
	b[4], b[5], b[6], b[7] = byte(body>>24), byte(body>>16), byte(body>>8), byte(body)
}

// fail breaks the channel with err (the first cause wins) and hands the
// error to every pending call.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	err = c.err
	pending := c.pending
	c.pending = make(map[uint64]*call)
	c.mu.Unlock()
	for _, cl := range pending {
		cl.ch <- result{err: err}
	}
}

// readLoop owns the read side: the ready frame first, then responses.
func (c *Conn) readLoop() {
	defer close(c.done)
	scratch := make([]byte, 0, 4<<10)
	readyDone := false
	defer func() {
		if !readyDone {
			c.readyErr = c.brokenErr()
			c.ready = Ready{}
			close(c.readyCh)
		}
	}()
	for {
		hdr, body, err := readFrame(c.br, c.maxHeader, c.opts.MaxBody, scratch)
		if err != nil && hdr == nil {
			switch {
			case errors.Is(err, io.EOF):
				c.fail(crashed(err, "runtime host exited or closed its channel"))
			case errors.Is(err, os.ErrClosed):
				c.fail(crashed(errClosed, "runtime connection closed"))
			default:
				c.fail(crashed(err, "runtime host channel broken: %v", err))
			}
			return
		}
		if !readyDone {
			readyDone = true
			if err := c.handleReady(hdr); err != nil {
				c.readyErr = err
				close(c.readyCh)
				c.fail(err)
				return
			}
			close(c.readyCh)
			continue
		}
		if err := c.deliver(hdr, body, err); err != nil {
			c.fail(err)
			return
		}
	}
}

func (c *Conn) handleReady(hdr []byte) error {
	var r Ready
	if err := json.Unmarshal(hdr, &r); err != nil {
		return crashed(err, "runtime host sent a bad ready frame: %v", err)
	}
	if !r.Ready {
		if r.Error == "" {
			r.Error = "runtime host could not load the handler"
		}
		return &LoadError{Message: r.Error, Logs: r.Logs}
	}
	c.ready = r
	return nil
}

// deliver decodes one response and hands it to its caller. readErr is a
// body-too-large error for this frame, if any. Only protocol violations
// return an error (they break the channel).
func (c *Conn) deliver(hdr, body []byte, readErr error) error {
	var h ResponseHeader
	if err := json.Unmarshal(hdr, &h); err != nil {
		return crashed(err, "runtime host sent a bad response header: %v", err)
	}
	id, err := strconv.ParseUint(h.ID, 10, 64)
	if err != nil {
		return crashed(err, "runtime host sent a response with unknown id %q", h.ID)
	}
	c.mu.Lock()
	cl, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if !ok {
		return nil // its caller gave up (timeout)
	}
	if readErr != nil {
		cl.ch <- result{err: fmt.Errorf("call %d: response %w", id, readErr)}
		return nil
	}
	resp := &sandbox.Response{
		Status: h.Status,
		Header: canonicalHeader(h.Headers),
		Body:   body,
		Error:  h.Error,
	}
	if h.Logs != "" {
		resp.Logs = TruncateLogs([]byte(h.Logs), c.opts.LogLimit+128)
	}
	if resp.Status < 100 || resp.Status > 999 {
		resp.Status = http.StatusInternalServerError
		if resp.Error == "" {
			resp.Error = fmt.Sprintf("runtime host returned invalid status %d", h.Status)
		}
	}
	cl.ch <- result{resp: resp}
	return nil
}

// canonicalHeader turns the host's header names ("content-type") into
// http.Header's canonical form, in place when they already are.
func canonicalHeader(m map[string][]string) http.Header {
	if m == nil {
		return http.Header{}
	}
	for k, v := range m {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck != k {
			delete(m, k)
			m[ck] = append(m[ck], v...)
		}
	}
	return http.Header(m)
}

// Close closes both ends of the channel: the host sees end of input and
// exits, pending calls fail with an errdefs.ErrCrashed error. It does not
// wait for the host; use Done. Safe to call more than once.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.fail(crashed(errClosed, "runtime connection closed"))
		c.closeErr = errors.Join(c.w.Close(), c.r.Close())
	})
	return c.closeErr
}
