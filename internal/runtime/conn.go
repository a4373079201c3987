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
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"golang.org/x/sys/unix"
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
// serves at once (WISP_CONCURRENCY) and answers in any order. There is no
// reader goroutine: callers take turns reading (leader/follower). The
// caller holding rsem reads frames and hands each response to its caller
// until its own arrives, then gives rsem up to the next waiter. With one
// call in flight, the common case, the caller reads its own response and no
// goroutine hand-off sits on the call path. Writers take turns on wsem.
//
// A serial host (Ready.Serial) serves calls one at a time in the order
// sent, so the Conn knows which call runs: the oldest unanswered one, the
// head of fifo. A call behind it has not started. When such a call's ctx
// ends it is abandoned, not killed (the instance goes on with the head);
// the host skips it if its deadline passed by its turn, and if it runs
// past its deadline anyway the Conn kills the instance (SetKill). When the
// channel breaks, every call but the head fails with ErrNotStarted.
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

	// rsem (capacity 1) is held by the caller reading frames; it guards br,
	// scratch and readyRead.
	rsem      chan struct{}
	scratch   []byte
	readyRead bool // the first frame (ready or load error) has been read

	readyCh  chan struct{} // closed once ready/readyErr are set (under mu)
	ready    Ready
	readyErr error

	done chan struct{} // closed (under mu) when the channel breaks

	serial atomic.Bool // the host is serial (set from the ready frame)

	mu          sync.Mutex // guards pending, fifo, kill, err, readyClosed and the calls' serial fields
	pending     map[uint64]*call
	fifo        []*call // serial hosts: calls sent and not yet answered, oldest (running) first
	fifoBytes   int     // the frames' sizes of the calls in fifo
	pipeRoom    int     // bytes of frames the request pipe always holds (pipeRoomOf): queued frames must fit, so a write never blocks
	kill        func()  // stops the host when an abandoned call overruns (SetKill)
	err         error   // why the channel broke; set once, never cleared
	readyClosed bool

	closeOnce sync.Once
	closeErr  error
}

// call is one caller waiting for its response. ch has room for exactly one
// result, so a reader never blocks on a caller that has given up.
type call struct {
	ch chan result

	// Serial channels only, guarded by Conn.mu.
	id        uint64
	sent      time.Time // when its frame was written; zero until then
	headAt    time.Time // when it became the oldest call in flight
	deadline  time.Time // zero: none
	abandoned bool      // its caller gave up while it waited its turn
	reap      *time.Timer
	size      int // its frame's size
}

type result struct {
	resp *sandbox.Response
	err  error
}

var callPool = sync.Pool{New: func() any { return &call{ch: make(chan result, 1)} }}

// getCall takes a call from the pool, reset.
func getCall(id uint64) *call {
	cl := callPool.Get().(*call)
	cl.id, cl.sent, cl.headAt, cl.deadline, cl.abandoned, cl.reap, cl.size = id, time.Time{}, time.Time{}, time.Time{}, false, nil, 0
	return cl
}

// NewConn returns a Conn that writes requests to w (the host's fd 3) and
// reads responses from r (its fd 4). The Conn owns both; Close closes them.
// When w and r are *os.File pipes (pollable), a call whose context ends
// while it is blocked writing or reading is interrupted.
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
		rsem:      make(chan struct{}, 1),
		scratch:   make([]byte, 0, 4<<10),
		readyCh:   make(chan struct{}),
		done:      make(chan struct{}),
		pending:   make(map[uint64]*call),
	}
	pipeCap, _ := pipeCapacity(w)
	c.pipeRoom = pipeRoomOf(pipeCap)
	return c
}

// pipeRoomOf is how many bytes of frames a pipe of capacity n holds
// without a write blocking, however they were written: half its capacity.
// The kernel fills a pipe in pages and starts a new page for a write that
// does not fit in the last one's tail, so frames of just over half a page
// (or of a page) each waste nearly as much as they hold.
func pipeRoomOf(n int) int { return n / 2 }

// defaultPipeCap is a Linux pipe's default capacity.
const defaultPipeCap = 64 << 10

// pipeCapacity raises the capacity of the request pipe w to 1 MiB (the
// unprivileged maximum, so room for a serial host's queued calls) and
// returns it, and whether the kernel reported it; defaultPipeCap and false
// when w is not a pipe or cannot say.
func pipeCapacity(w io.Writer) (int, bool) {
	f, ok := w.(*os.File)
	if !ok {
		return defaultPipeCap, false
	}
	sc, err := f.SyscallConn() // not Fd: that would make the pipe blocking
	if err != nil {
		return defaultPipeCap, false
	}
	n, known := defaultPipeCap, false
	_ = sc.Control(func(fd uintptr) {
		_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 1<<20)
		if got, err := unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0); err == nil && got > 0 {
			n, known = got, true
		}
	})
	return n, known
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

// notStarted marks err, the reason a serial channel broke, for a call that
// was still waiting its turn.
func notStarted(id uint64, err error) error {
	return fmt.Errorf("call %d waited behind another call and did not start: %w: %w", id, sandbox.ErrNotStarted, err)
}

func crashed(cause error, format string, args ...any) error {
	return &crashError{msg: fmt.Sprintf(format, args...), cause: cause}
}

// errClosed is the cause after Close.
var errClosed = errors.New("runtime connection closed")

// WaitReady waits for the host's ready frame. A host that failed to load the
// handler gives a *LoadError (errdefs.ErrCrashed); a host that exits or
// closes the channel first gives an errdefs.ErrCrashed error; when ctx ends
// first the error wraps errdefs.ErrTimeout (the channel stays usable).
func (c *Conn) WaitReady(ctx context.Context) (Ready, error) {
	for {
		select {
		case <-c.readyCh:
			return c.ready, c.readyErr
		case <-ctx.Done():
			return Ready{}, fmt.Errorf("runtime host did not load the handler in time: %w: %w", errdefs.ErrTimeout, context.Cause(ctx))
		case c.rsem <- struct{}{}:
			// A broken channel closes readyCh; an interrupted read ends
			// in the ctx case above.
			if !c.readyRead {
				_ = c.readOne(ctx)
			}
			<-c.rsem
		}
	}
}

// setReady records the outcome of the first frame; the first call wins.
func (c *Conn) setReady(r Ready, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readyClosed {
		return
	}
	c.ready, c.readyErr, c.readyClosed = r, err, true
	close(c.readyCh)
}

// Done is closed when the channel breaks: a reader found that the host
// closed its end (exited, crashed) or sent something that is not a frame,
// a call was abandoned mid-frame, or Close was called. A host that dies
// while no call is reading is noticed by the next call; backends watch the
// process itself for that.
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
	cl := getCall(id)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		callPool.Put(cl)
		if c.serial.Load() {
			return nil, notStarted(id, err)
		}
		return nil, err
	}
	c.pending[id] = cl
	c.mu.Unlock()

	if err := c.send(ctx, cl, req); err != nil {
		if c.forget(id) {
			callPool.Put(cl)
		}
		return nil, err
	}
	for {
		select {
		case res := <-cl.ch:
			callPool.Put(cl)
			return res.resp, res.err
		case <-ctx.Done():
			return c.abandon(ctx, id, cl)
		case c.rsem <- struct{}{}:
			// This caller reads until its own response arrives (or the
			// channel breaks, which delivers an error to it too).
			var err error
			for err == nil {
				select {
				case res := <-cl.ch:
					<-c.rsem
					callPool.Put(cl)
					return res.resp, res.err
				default:
				}
				err = c.readOne(ctx)
			}
			<-c.rsem
			if ctx.Err() != nil {
				return c.abandon(ctx, id, cl)
			}
		}
	}
}

// abandon gives up on call id after its context ended. A response that
// arrives later is dropped by whoever reads it. cl goes back to the pool
// only if no reader can reach it any more.
//
// On a serial channel a call waiting behind the running one stays in fifo,
// marked abandoned, and its error wraps ErrNotStarted: the instance stays
// usable.
func (c *Conn) abandon(ctx context.Context, id uint64, cl *call) (*sandbox.Response, error) {
	if c.serial.Load() {
		c.mu.Lock()
		_, pending := c.pending[id]
		if !pending {
			// Its result is delivered, or being delivered (a skip, a
			// response, the channel's failure): that is the outcome.
			c.mu.Unlock()
			res := <-cl.ch
			callPool.Put(cl)
			return res.resp, res.err
		}
		head := len(c.fifo) > 0 && c.fifo[0] == cl
		// A call that became the head only just before its deadline (or
		// after it) may well have been skipped: the host checks the
		// deadline a moment after this side read the answer before it.
		// It is not the running call to kill for; the reap timer reads
		// the skip, or stops the host if it did start the call.
		late := head && !cl.deadline.IsZero() && cl.deadline.Sub(cl.headAt) < skipWindow
		queued := !cl.sent.IsZero() && (!head || late)
		if queued {
			cl.abandoned = true
			if late && cl.reap == nil {
				cl.reap = time.AfterFunc(0, func() { c.reap(cl) })
			}
		} else {
			delete(c.pending, id)
		}
		c.mu.Unlock()
		if queued {
			return nil, c.notStartedTimeout(ctx, id)
		}
		// cl may still be in fifo: it does not go back to the pool.
		return nil, c.timeoutErr(ctx, id)
	}
	if c.forget(id) {
		callPool.Put(cl)
	}
	return nil, c.timeoutErr(ctx, id)
}

// notStartedTimeout is the error of a call on a serial channel whose ctx
// ended before it started.
func (c *Conn) notStartedTimeout(ctx context.Context, id uint64) error {
	return fmt.Errorf("call %d: %w while it waited behind another call: %w", id, sandbox.ErrNotStarted, c.timeoutErr(ctx, id))
}

// errChannelFull is why a call was not queued on a serial channel: the
// calls already queued fill the request pipe, and a write could block
// behind the running call.
var errChannelFull = errors.New("the calls queued in this instance fill its request pipe")

// SetKill sets what stops the host when a call abandoned on a serial
// channel runs past its deadline (the backend's kill). Without it the
// channel is closed instead.
func (c *Conn) SetKill(kill func()) {
	c.mu.Lock()
	c.kill = kill
	c.mu.Unlock()
}

// Serial reports whether the host serves calls one at a time in order
// (Ready.Serial); it is known once WaitReady returned.
func (c *Conn) Serial() bool { return c.serial.Load() }

// skipWindow is how close to its deadline a queued call may become the
// running one and still be taken for skipped when its caller gives up.
const skipWindow = 20 * time.Millisecond

// reapGrace is how long an abandoned call that became the running one may
// go unanswered after its deadline before the instance is killed: the host
// answers a skipped call at once.
const reapGrace = 500 * time.Millisecond

// popLocked takes the call with id out of fifo and returns how long it
// waited there behind others and how long it ran. When the head goes, the
// next call starts running; if its caller has given up, a timer watches
// that it ends by its deadline.
func (c *Conn) popLocked(id uint64, now time.Time) (queued, ran time.Duration) {
	i := slices.IndexFunc(c.fifo, func(cl *call) bool { return cl.id == id })
	if i < 0 {
		return 0, 0
	}
	cl := c.fifo[i]
	c.fifo = slices.Delete(c.fifo, i, i+1)
	c.fifoBytes -= cl.size
	if cl.reap != nil {
		cl.reap.Stop()
	}
	if !cl.headAt.IsZero() {
		queued, ran = cl.headAt.Sub(cl.sent), now.Sub(cl.headAt)
	}
	if i == 0 && len(c.fifo) > 0 {
		h := c.fifo[0]
		h.headAt = now
		if h.abandoned && !h.deadline.IsZero() {
			h.reap = time.AfterFunc(max(h.deadline.Sub(now), 0), func() { c.reap(h) })
		}
	}
	return queued, ran
}

// reap runs at the deadline of an abandoned call that became the running
// one: it reads what the host answered (a skipped call's response is
// there at once) and kills the host if the call is still running after
// reapGrace.
func (c *Conn) reap(h *call) {
	running := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.fifo) > 0 && c.fifo[0] == h && c.err == nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), reapGrace)
	defer cancel()
	select {
	case c.rsem <- struct{}{}:
		for running() && c.readOne(ctx) == nil {
		}
		<-c.rsem
	case <-ctx.Done():
	}
	if !running() {
		return
	}
	c.mu.Lock()
	kill := c.kill
	c.mu.Unlock()
	if kill != nil {
		kill()
	}
	_ = c.Close()
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
func (c *Conn) send(ctx context.Context, cl *call, req *sandbox.Request) error {
	id := cl.id
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		if c.serial.Load() {
			return c.notStartedTimeout(ctx, id)
		}
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
	now := time.Now() // one reading for the timeout, the deadline and fifo
	dl, hasDL := ctx.Deadline()
	serial := c.serial.Load()
	if hasDL {
		hdr.TimeoutMS = max(dl.Sub(now).Milliseconds(), 1)
		if serial {
			hdr.Deadline = monotonicAt(dl)
		}
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

	if serial {
		// Queue it in fifo, unless the calls queued already fill the pipe
		// (its write could then block behind the running call).
		size := len(frame)
		if big {
			size += len(req.Body)
		}
		c.mu.Lock()
		if c.err != nil {
			// It broke since RoundTrip looked: fifo no longer counts what
			// is in the pipe.
			err := c.err
			c.mu.Unlock()
			return notStarted(id, err)
		}
		if len(c.fifo) > 0 && c.fifoBytes+size > c.pipeRoom {
			c.mu.Unlock()
			return notStarted(id, errChannelFull)
		}
		cl.size, cl.sent = size, now
		c.fifoBytes += size
		if hasDL {
			cl.deadline = dl
		}
		if len(c.fifo) == 0 {
			cl.headAt = now
		}
		c.fifo = append(c.fifo, cl)
		c.mu.Unlock()
	}

	// Let ctx interrupt a write that blocks on a full pipe (a host busy
	// with other calls, a large body). Even a frame that fits by fifo's
	// count is guarded: fifo trusts the host's answers, and function code
	// in the host can forge answers or stop reading.
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
			if serial {
				return c.notStartedTimeout(ctx, id) // its frame never arrived whole
			}
			return c.timeoutErr(ctx, id)
		}
		// The host is gone. Read what it wrote before it died (a load
		// error frame says why), so that cause wins over the bare broken
		// pipe.
		c.drain(250 * time.Millisecond)
		c.fail(crashed(err, "runtime host stopped reading requests: %v", err))
		c.mu.Lock()
		err = c.err
		c.mu.Unlock()
		if serial {
			return notStarted(id, err) // its frame never arrived whole
		}
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
	var head *call
	if len(c.fifo) > 0 {
		head = c.fifo[0]
	}
	for _, cl := range c.fifo {
		if cl.reap != nil {
			cl.reap.Stop()
		}
	}
	c.fifo = nil
	c.fifoBytes = 0
	serial := c.serial.Load()
	if !c.readyClosed {
		c.ready, c.readyErr, c.readyClosed = Ready{}, err, true
		close(c.readyCh)
	}
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	c.mu.Unlock()
	for id, cl := range pending {
		if serial && cl != head {
			cl.ch <- result{err: notStarted(id, err)}
		} else {
			cl.ch <- result{err: err}
		}
	}
}

// readerDeadliner is implemented by pollable *os.File pipes.
type readerDeadliner interface {
	SetReadDeadline(t time.Time) error
}

// readOne reads one frame and acts on it: the first is the ready (or load
// error) frame, every later one a response for a pending call. The caller
// holds rsem. A read that ctx interrupts before any byte of the frame was
// consumed leaves the channel intact; any other failure breaks it (and
// every pending call, the reader's own included, gets the error).
func (c *Conn) readOne(ctx context.Context) error {
	if err := c.Err(); err != nil {
		return err
	}
	var stop func() bool
	var fired chan struct{}
	if ctx.Done() != nil {
		d, ok := c.r.(readerDeadliner)
		fired = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			if ok {
				_ = d.SetReadDeadline(aLongTimeAgo)
			} else {
				// Not interruptible: break the channel so the read ends.
				c.fail(crashed(context.Cause(ctx), "runtime channel abandoned after a timeout"))
				_ = c.r.Close()
			}
			close(fired)
		})
	}
	if _, err := c.br.Peek(prefixLen); err != nil && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
		// Nothing of the next frame is consumed: the channel goes on.
		c.disarm(stop, fired)
		return fmt.Errorf("no frame from the runtime host: %w: %w", errdefs.ErrTimeout, context.Cause(ctx))
	}
	hdr, body, err := readFrame(c.br, c.maxHeader, c.opts.MaxBody, c.scratch)
	c.disarm(stop, fired)
	if err != nil && hdr == nil {
		switch {
		case errors.Is(err, io.EOF):
			err = crashed(err, "runtime host exited or closed its channel")
		case errors.Is(err, os.ErrClosed):
			err = crashed(errClosed, "runtime connection closed")
		case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
			err = crashed(err, "runtime channel abandoned mid-frame after a timeout")
		default:
			err = crashed(err, "runtime host channel broken: %v", err)
		}
		c.fail(err)
		return err
	}
	if !c.readyRead {
		c.readyRead = true
		r, err := c.handleReady(hdr)
		c.setReady(r, err)
		if err != nil {
			c.fail(err)
		}
		return err
	}
	if err := c.deliver(hdr, body, err); err != nil {
		c.fail(err)
		return err
	}
	return nil
}

// disarm stops a read interruption armed by readOne and clears the read
// deadline if it fired.
func (c *Conn) disarm(stop func() bool, fired chan struct{}) {
	if stop == nil || stop() {
		return
	}
	<-fired
	if d, ok := c.r.(readerDeadliner); ok {
		_ = d.SetReadDeadline(time.Time{})
	}
}

// drain reads and acts on what the host wrote before it went away, for at
// most d: the frame that says why it stopped wins over a bare broken pipe.
func (c *Conn) drain(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	select {
	case c.rsem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-c.rsem }()
	for c.readOne(ctx) == nil {
	}
}

func (c *Conn) handleReady(hdr []byte) (Ready, error) {
	var r Ready
	if err := json.Unmarshal(hdr, &r); err != nil {
		return Ready{}, crashed(err, "runtime host sent a bad ready frame: %v", err)
	}
	if !r.Ready {
		if r.Error == "" {
			r.Error = "runtime host could not load the handler"
		}
		return Ready{}, &LoadError{Message: r.Error, Logs: r.Logs}
	}
	c.serial.Store(r.Serial)
	return r, nil
}

// deliver decodes one response and hands it to its caller. readErr is a
// body-too-large error for this frame, if any. Only protocol violations
// return an error (they break the channel).
func (c *Conn) deliver(hdr, body []byte, readErr error) error {
	var h ResponseHeader
	if err := decodeResponseHeader(hdr, &h); err != nil {
		return crashed(err, "runtime host sent a bad response header: %v", err)
	}
	id, err := strconv.ParseUint(h.ID, 10, 64)
	if err != nil {
		return crashed(err, "runtime host sent a response with unknown id %q", h.ID)
	}
	var queued, ran time.Duration
	c.mu.Lock()
	cl, ok := c.pending[id]
	delete(c.pending, id)
	if c.serial.Load() {
		queued, ran = c.popLocked(id, time.Now())
	}
	c.mu.Unlock()
	if !ok || cl.abandoned {
		return nil // its caller gave up (timeout)
	}
	if h.Skipped {
		cl.ch <- result{err: fmt.Errorf("call %d: %w: its deadline passed while it waited behind another call: %w",
			id, sandbox.ErrNotStarted, errdefs.ErrTimeout)}
		return nil
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
		Queued: queued,
		Ran:    ran,
	}
	if h.RunUS > 0 {
		resp.Ran = time.Duration(h.RunUS) * time.Microsecond
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
//
// On a serial channel with calls in flight it stops the host first (SetKill)
// and reads what the host wrote before it died, so that a call the host
// started after answering the one before it is known to have run (it fails
// as the running call, not with ErrNotStarted, and is never sent again).
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		kill, busy := c.kill, len(c.fifo) > 0 && c.err == nil
		c.mu.Unlock()
		if busy && c.serial.Load() && kill != nil {
			kill()
			c.drain(250 * time.Millisecond)
		}
		c.fail(crashed(errClosed, "runtime connection closed"))
		c.closeErr = errors.Join(c.w.Close(), c.r.Close())
	})
	return c.closeErr
}

// monotonicAt is t on CLOCK_MONOTONIC in nanoseconds: the clock a host
// compares a request's Deadline with (Python's time.monotonic_ns). It is
// the clock of Go's monotonic readings too, so one ClockGettime system call
// at start-up gives the offset, and t (a reading with its monotonic part,
// such as a context's deadline) needs no clock reading at all; 0 when the
// clock is not there.
func monotonicAt(t time.Time) int64 {
	if monoBase == 0 {
		return 0
	}
	return monoBase + int64(t.Sub(monoAt))
}

var monoBase, monoAt = func() (int64, time.Time) {
	var ts unix.Timespec
	at := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, at
	}
	return ts.Nano(), at
}()
