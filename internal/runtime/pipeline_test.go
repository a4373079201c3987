package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/testenv"
	"golang.org/x/sys/unix"
)

// markHandler leaves a file named after ?n in $MARKS when it starts, then
// sleeps ?sleep seconds; ?exit makes the host die instead.
const markHandler = `import os, time

def handle(req):
    n = req.query.get("n", "x")
    open(os.path.join(os.environ["MARKS"], n), "w").close()
    if req.query.get("exit"):
        os._exit(3)
    time.sleep(float(req.query.get("sleep", "0")))
    return n
`

func startMarkHost(t *testing.T, env ...string) (*testHost, string) {
	t.Helper()
	marks := t.TempDir()
	h := startHost(t, "python3", "handler.py", map[string]string{"handler.py": markHandler}, append(env, "MARKS="+marks)...)
	return h, marks
}

func marked(marks, n string) bool {
	_, err := os.Stat(filepath.Join(marks, n))
	return err == nil
}

type outcome struct {
	resp *sandbox.Response
	err  error
}

// goCall starts a call and waits until its frame is in the channel, so
// calls queue in the order they are started.
func goCall(t *testing.T, c *Conn, ctx context.Context, query string) <-chan outcome {
	t.Helper()
	return goCallWith(t, c, ctx, query, nil)
}

func TestSerialFlag(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		code   string
		env    []string
		serial bool
	}{
		{"sync handler, concurrency 1", "handler.py", "def handle(req):\n    return 'ok'\n", nil, true},
		{"sync handler, concurrency 2", "handler.py", "def handle(req):\n    return 'ok'\n", []string{"WISP_CONCURRENCY=2"}, false},
		{"async handler", "handler.py", "async def handle(req):\n    return 'ok'\n", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHost(t, "python3", tt.file, map[string]string{tt.file: tt.code}, tt.env...)
			if r := h.ready(t); r.Serial != tt.serial || h.conn.Serial() != tt.serial {
				t.Fatalf("serial = %v (conn %v), want %v", r.Serial, h.conn.Serial(), tt.serial)
			}
		})
	}
}

// Calls queued behind a running one are served in order, and each says how
// long it waited and ran.
func TestPipelineOrder(t *testing.T) {
	h, marks := startMarkHost(t)
	h.ready(t)
	ctx := ctxTimeout(t, 10*time.Second)
	head := goCall(t, h.conn, ctx, "n=a&sleep=0.3")
	var queued []<-chan outcome
	for _, n := range []string{"b", "c", "d"} {
		queued = append(queued, goCall(t, h.conn, ctx, "n="+n))
	}
	if o := <-head; o.err != nil || string(o.resp.Body) != "a" || o.resp.Queued != 0 {
		t.Fatalf("head: %v %+v", o.err, o.resp)
	}
	for i, ch := range queued {
		o := <-ch
		if o.err != nil {
			t.Fatalf("queued call %d: %v", i, o.err)
		}
		if want := string(rune('b' + i)); string(o.resp.Body) != want {
			t.Errorf("queued call %d answered %q, want %q", i, o.resp.Body, want)
		}
		if o.resp.Queued < 200*time.Millisecond || o.resp.Ran <= 0 || o.resp.Ran > 200*time.Millisecond {
			t.Errorf("queued call %d: queued %v ran %v; want queued ≥ 200ms behind the head, ran short", i, o.resp.Queued, o.resp.Ran)
		}
	}
	for _, n := range []string{"a", "b", "c", "d"} {
		if !marked(marks, n) {
			t.Errorf("call %s did not run", n)
		}
	}
}

// A queued call whose caller gives up fails at once without harming the
// running call, and never runs: the host skips it at its turn.
func TestPipelineAbandonQueued(t *testing.T) {
	h, marks := startMarkHost(t)
	h.ready(t)
	head := goCall(t, h.conn, ctxTimeout(t, 10*time.Second), "n=a&sleep=0.5")
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	o := <-goCall(t, h.conn, short, "n=b")
	if !errors.Is(o.err, sandbox.ErrNotStarted) || !errors.Is(o.err, errdefs.ErrTimeout) {
		t.Fatalf("abandoned queued call: err = %v; want ErrNotStarted and ErrTimeout", o.err)
	}
	if d := time.Since(t0); d > 400*time.Millisecond {
		t.Errorf("abandoned queued call took %v to fail; want about its 100ms timeout", d)
	}
	if o := <-head; o.err != nil || string(o.resp.Body) != "a" {
		t.Fatalf("running call after a queued one gave up: %v", o.err)
	}
	if r := invoke(t, h.conn, "/", "n=c"); string(r.Body) != "c" {
		t.Fatalf("next call: %q", r.Body)
	}
	if marked(marks, "b") {
		t.Error("the abandoned call ran after its deadline; the host must skip it")
	}
	select {
	case <-h.conn.Done():
		t.Fatalf("channel broke: %v", h.conn.Err())
	default:
	}
}

// When the host dies during the running call, the calls queued behind it
// fail with ErrNotStarted (and not a timeout), so they can go elsewhere.
func TestPipelineHostDiesWithQueue(t *testing.T) {
	h, marks := startMarkHost(t)
	h.ready(t)
	ctx := ctxTimeout(t, 10*time.Second)
	head := goCall(t, h.conn, ctx, "n=a&sleep=0.2&exit=1")
	b := goCall(t, h.conn, ctx, "n=b")
	c := goCall(t, h.conn, ctx, "n=c")
	if o := <-head; !errors.Is(o.err, errdefs.ErrCrashed) || errors.Is(o.err, sandbox.ErrNotStarted) {
		t.Fatalf("running call: err = %v; want a crash, not ErrNotStarted", o.err)
	}
	for n, ch := range map[string]<-chan outcome{"b": b, "c": c} {
		o := <-ch
		if !errors.Is(o.err, sandbox.ErrNotStarted) || errors.Is(o.err, errdefs.ErrTimeout) {
			t.Errorf("queued call %s: err = %v; want ErrNotStarted, not a timeout", n, o.err)
		}
		if marked(marks, n) {
			t.Errorf("queued call %s ran", n)
		}
	}
}

// A queued call given up before its deadline (its context cancelled) does
// run when its turn comes; if it then runs past its deadline, the Conn
// kills the host.
func TestPipelineAbandonedCallOverrunsDeadline(t *testing.T) {
	h, marks := startMarkHost(t)
	h.ready(t)
	var killed atomic.Bool
	h.conn.SetKill(func() {
		killed.Store(true)
		_ = h.cmd.Process.Kill()
	})
	head := goCall(t, h.conn, ctxTimeout(t, 10*time.Second), "n=a&sleep=0.2")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	b := goCall(t, h.conn, ctx, "n=b&sleep=30")
	cancel()
	if o := <-b; !errors.Is(o.err, sandbox.ErrNotStarted) {
		t.Fatalf("cancelled queued call: err = %v; want ErrNotStarted", o.err)
	}
	if o := <-head; o.err != nil {
		t.Fatalf("running call: %v", o.err)
	}
	t0 := time.Now()
	select {
	case <-h.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("host still running an abandoned call 5s after its 1s deadline")
	}
	if !killed.Load() {
		t.Error("the host exited but not through SetKill's kill")
	}
	if !marked(marks, "b") {
		t.Error("the cancelled call never started; this test needs it to run")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("killed %v after the head finished; want within the deadline plus %v", d, reapGrace)
	}
}

// Queued calls with bodies that would fill a default 64 KiB pipe neither
// block the channel nor let one caller's timeout break it: the pipe is
// enlarged, queued frames are bounded by its capacity, and a queued call
// that gives up is abandoned as any other.
func TestPipelineLargeQueuedBodies(t *testing.T) {
	h, marks := startMarkHost(t)
	h.ready(t)
	if h.conn.pipeRoom < 512<<10 {
		t.Logf("request pipe room %d (F_SETPIPE_SZ refused)", h.conn.pipeRoom)
	}
	ctx := ctxTimeout(t, 10*time.Second)
	head := goCall(t, h.conn, ctx, "n=a&sleep=0.5")
	body := make([]byte, 16<<10)
	var queued []<-chan outcome
	for i := range 8 {
		queued = append(queued, goCallWith(t, h.conn, ctx, "n=q"+string(rune('0'+i)), body))
	}
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if o := <-goCallWith(t, h.conn, short, "n=x", body); !errors.Is(o.err, sandbox.ErrNotStarted) || !errors.Is(o.err, errdefs.ErrTimeout) {
		t.Fatalf("queued call that gave up: err = %v; want ErrNotStarted and ErrTimeout", o.err)
	}
	if o := <-head; o.err != nil {
		t.Fatalf("running call: %v", o.err)
	}
	for i, ch := range queued {
		if o := <-ch; o.err != nil {
			t.Errorf("queued call %d: %v", i, o.err)
		}
	}
	if marked(marks, "x") {
		t.Error("the call that gave up ran")
	}
}

// goCallWith is goCall with a request body.
func goCallWith(t *testing.T, c *Conn, ctx context.Context, query string, body []byte) <-chan outcome {
	t.Helper()
	ch := make(chan outcome, 1)
	c.mu.Lock()
	before := len(c.fifo)
	c.mu.Unlock()
	go func() {
		resp, err := c.RoundTrip(ctx, &sandbox.Request{Method: "POST", Path: "/", RawQuery: query, Body: body})
		ch <- outcome{resp, err}
	}()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		c.mu.Lock()
		n := len(c.fifo)
		c.mu.Unlock()
		if n > before {
			break
		}
	}
	return ch
}

// pipeRoomOf holds whatever the frames' sizes: frames that add up to it go
// into an unread pipe without a write ever blocking.
func TestPipeRoom(t *testing.T) {
	for _, size := range []int{10, 300, 2049, 4095, 4096, 4097, 8193, 16<<10 + 300, 40000} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			pipeCap, known := pipeCapacity(w)
			if !known {
				testenv.Missing(t, "the kernel does not report the pipe's capacity (F_GETPIPE_SZ, Linux 2.6.35 or newer)")
			}
			fd := int(w.Fd()) // blocking mode; set non-blocking below
			if err := unix.SetNonblock(fd, true); err != nil {
				t.Fatal(err)
			}
			frame := make([]byte, size)
			total := 0
			for total+size <= pipeRoomOf(pipeCap) {
				n, err := unix.Write(fd, frame)
				if err != nil || n != size {
					t.Fatalf("capacity %d: write %d of %d bytes after %d: %d, %v", pipeCap, size, size, total, n, err)
				}
				total += size
			}
		})
	}
}
