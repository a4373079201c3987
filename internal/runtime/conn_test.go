package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// fakeHost is the host end of a channel, scripted by the test.
type fakeHost struct {
	in  *bufio.Reader // requests
	out *os.File      // responses
	inF *os.File
}

func newFakeConn(t *testing.T, opts ConnOptions) (*Conn, *fakeHost) {
	t.Helper()
	reqR, reqW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(reqW, respR, opts)
	h := &fakeHost{in: bufio.NewReader(reqR), out: respW, inF: reqR}
	t.Cleanup(func() {
		c.Close()
		h.out.Close()
		h.inF.Close()
		<-c.Done()
	})
	return c, h
}

func (h *fakeHost) send(t *testing.T, hdr any, body []byte) {
	t.Helper()
	if err := WriteFrame(h.out, hdr, body); err != nil {
		t.Errorf("host write: %v", err)
	}
}

func (h *fakeHost) recv(t *testing.T) (RequestHeader, []byte) {
	t.Helper()
	hdr, body, err := ReadFrame(h.in, DefaultMaxHeader, DefaultMaxBody)
	if err != nil {
		t.Fatalf("host read: %v", err)
	}
	var rh RequestHeader
	if err := json.Unmarshal(hdr, &rh); err != nil {
		t.Fatalf("host decode %s: %v", hdr, err)
	}
	return rh, body
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestConnRequestEncoding(t *testing.T) {
	c, h := newFakeConn(t, ConnOptions{})
	h.send(t, Ready{Ready: true, PID: 42, InitMS: 1.5}, nil)
	r, err := c.WaitReady(ctxTimeout(t, 5*time.Second))
	if err != nil || r.PID != 42 || r.InitMS != 1.5 {
		t.Fatalf("WaitReady = %+v, %v", r, err)
	}
	done := make(chan *sandbox.Response)
	go func() {
		resp, err := c.RoundTrip(ctxTimeout(t, 5*time.Second), &sandbox.Request{
			ActivationID: "a1", Method: "POST", Path: "/p", RawQuery: "x=1",
			Header: map[string][]string{"X-A": {"1", "2"}}, Body: []byte("body"),
		})
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	req, body := h.recv(t)
	if req.ActivationID != "a1" || req.Method != "POST" || req.Path != "/p" || req.Query != "x=1" ||
		strings.Join(req.Headers["X-A"], ",") != "1,2" || string(body) != "body" {
		t.Errorf("host got %+v %q", req, body)
	}
	if req.TimeoutMS <= 0 || req.TimeoutMS > 5000 {
		t.Errorf("timeout_ms = %d, want the time left (≤ 5000)", req.TimeoutMS)
	}
	h.send(t, ResponseHeader{ID: req.ID, Status: 201, Headers: map[string][]string{"content-type": {"text/x"}},
		Error: "E", Logs: "L"}, []byte("out"))
	resp := <-done
	if resp.Status != 201 || resp.Header.Get("Content-Type") != "text/x" || string(resp.Body) != "out" ||
		resp.Error != "E" || string(resp.Logs) != "L" {
		t.Errorf("response = %+v", resp)
	}
}

// Responses come back in any order and reach the right callers.
func TestConnOutOfOrder(t *testing.T) {
	c, h := newFakeConn(t, ConnOptions{})
	h.send(t, Ready{Ready: true}, nil)
	const n = 5
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p := "/" + string(rune('a'+i))
			resp, err := c.RoundTrip(ctxTimeout(t, 5*time.Second), &sandbox.Request{Path: p})
			if err != nil {
				t.Error(err)
				return
			}
			if string(resp.Body) != p {
				t.Errorf("call %s got %q", p, resp.Body)
			}
		})
	}
	var reqs []RequestHeader
	for range n {
		r, _ := h.recv(t)
		reqs = append(reqs, r)
	}
	for i := n - 1; i >= 0; i-- {
		h.send(t, ResponseHeader{ID: reqs[i].ID, Status: 200}, []byte(reqs[i].Path))
	}
	wg.Wait()
}

func TestConnResponseTooLarge(t *testing.T) {
	c, h := newFakeConn(t, ConnOptions{MaxBody: 10})
	h.send(t, Ready{Ready: true}, nil)
	go func() {
		for i := 0; ; i++ {
			hdr, _, err := ReadFrame(h.in, DefaultMaxHeader, DefaultMaxBody)
			if err != nil {
				return
			}
			var r RequestHeader
			_ = json.Unmarshal(hdr, &r)
			body := []byte("small")
			if i == 0 {
				body = []byte(strings.Repeat("big", 10))
			}
			_ = WriteFrame(h.out, ResponseHeader{ID: r.ID, Status: 200}, body)
		}
	}()
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := c.RoundTrip(ctx, &sandbox.Request{Path: "/"}); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	resp, err := c.RoundTrip(ctx, &sandbox.Request{Path: "/"})
	if err != nil || string(resp.Body) != "small" {
		t.Fatalf("next call: %v %v; the channel should still work", resp, err)
	}
	if _, err := c.RoundTrip(ctx, &sandbox.Request{Path: "/", Body: []byte("01234567890")}); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("request over MaxBody: err = %v, want ErrTooLarge", err)
	}
}

func TestConnBroken(t *testing.T) {
	tests := []struct {
		name    string
		host    func(t *testing.T, h *fakeHost)
		wantMsg string
	}{
		{"host exits before ready", func(t *testing.T, h *fakeHost) { h.out.Close() }, "exited or closed its channel"},
		{"garbage instead of a frame", func(t *testing.T, h *fakeHost) {
			_, _ = h.out.Write([]byte("Traceback (most recent call last):\n"))
			h.out.Close()
		}, "channel broken"},
		{"bad ready JSON", func(t *testing.T, h *fakeHost) { h.send(t, []byte("{nope"), nil) }, "bad ready frame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, h := newFakeConn(t, ConnOptions{})
			tt.host(t, h)
			_, err := c.WaitReady(ctxTimeout(t, 5*time.Second))
			if !errors.Is(err, errdefs.ErrCrashed) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("WaitReady err = %v, want ErrCrashed containing %q", err, tt.wantMsg)
			}
			<-c.Done()
			if _, err := c.RoundTrip(ctxTimeout(t, time.Second), &sandbox.Request{}); !errors.Is(err, errdefs.ErrCrashed) {
				t.Errorf("RoundTrip err = %v, want ErrCrashed", err)
			}
		})
	}
}

func TestConnLoadError(t *testing.T) {
	c, h := newFakeConn(t, ConnOptions{})
	h.send(t, Ready{Ready: false, Error: "SyntaxError: invalid syntax (handler.py line 3)", Logs: "Traceback..."}, nil)
	_, err := c.WaitReady(ctxTimeout(t, 5*time.Second))
	var le *LoadError
	if !errors.As(err, &le) || !errors.Is(err, errdefs.ErrCrashed) {
		t.Fatalf("err = %v (%T), want *LoadError", err, err)
	}
	if err.Error() != "SyntaxError: invalid syntax (handler.py line 3)" || le.Logs != "Traceback..." {
		t.Errorf("LoadError = %q, logs %q", err, le.Logs)
	}
}

func TestConnWaitReadyTimeout(t *testing.T) {
	c, _ := newFakeConn(t, ConnOptions{})
	_, err := c.WaitReady(ctxTimeout(t, 50*time.Millisecond))
	if !errors.Is(err, errdefs.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
}

// A host that stops reading fills the pipe; ctx still bounds RoundTrip, and
// the channel, now mid-frame, is broken.
func TestConnTimeoutWhileWriting(t *testing.T) {
	c, h := newFakeConn(t, ConnOptions{})
	h.send(t, Ready{Ready: true}, nil)
	body := make([]byte, 4<<20) // far more than a pipe holds
	start := time.Now()
	_, err := c.RoundTrip(ctxTimeout(t, 200*time.Millisecond), &sandbox.Request{Body: body})
	if !errors.Is(err, errdefs.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("RoundTrip took %s", d)
	}
	if _, err := c.RoundTrip(ctxTimeout(t, time.Second), &sandbox.Request{}); !errors.Is(err, errdefs.ErrCrashed) {
		t.Errorf("after a cut frame: err = %v, want ErrCrashed", err)
	}
}

// A response that arrives after its caller gave up is dropped, and the
// channel goes on.
func TestConnLateResponse(t *testing.T) {
	c, h := newFakeConn(t, ConnOptions{})
	h.send(t, Ready{Ready: true}, nil)
	if _, err := c.RoundTrip(ctxTimeout(t, 50*time.Millisecond), &sandbox.Request{Path: "/slow"}); !errors.Is(err, errdefs.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	slow, _ := h.recv(t)
	h.send(t, ResponseHeader{ID: slow.ID, Status: 200}, []byte("late"))
	done := make(chan error, 1)
	go func() {
		resp, err := c.RoundTrip(ctxTimeout(t, 5*time.Second), &sandbox.Request{Path: "/next"})
		if err == nil && string(resp.Body) != "next" {
			err = errors.New("got body " + string(resp.Body))
		}
		done <- err
	}()
	next, _ := h.recv(t)
	h.send(t, ResponseHeader{ID: next.ID, Status: 200}, []byte("next"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestConnClose(t *testing.T) {
	c, h := newFakeConn(t, ConnOptions{})
	h.send(t, Ready{Ready: true}, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := c.RoundTrip(ctxTimeout(t, 5*time.Second), &sandbox.Request{})
		errc <- err
	}()
	h.recv(t)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, errdefs.ErrCrashed) {
		t.Errorf("pending call after Close: %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after Close")
	}
	// The host sees end of input.
	if _, _, err := ReadFrame(h.in, DefaultMaxHeader, DefaultMaxBody); err == nil {
		t.Error("host read a frame after Close")
	}
}
