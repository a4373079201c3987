package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// natsServer is a real nats-server process.
type natsServer struct {
	bin  string
	port int
	url  string
	cmd  *exec.Cmd
	out  *testenv.Buffer
}

// startNATS starts nats-server on a free local port; t.Cleanup stops it.
func startNATS(t *testing.T) *natsServer {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
	}
	if !testenv.Exists(bin) {
		testenv.Missing(t, "nats-server is missing (apt-get install nats-server, or run scripts/setup.sh)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &natsServer{bin: bin, port: port, url: fmt.Sprintf("nats://127.0.0.1:%d", port)}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

func (s *natsServer) start(t *testing.T) {
	t.Helper()
	s.out = &testenv.Buffer{}
	s.cmd = exec.Command(s.bin, "-p", strconv.Itoa(s.port), "-a", "127.0.0.1")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := nats.Connect(s.url, nats.Timeout(time.Second))
		if err == nil {
			nc.Close()
			return
		}
		if time.Now().After(deadline) {
			s.stop()
			t.Fatalf("nats-server on port %d did not accept connections: %v\n%s", s.port, err, s.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *natsServer) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// client connects a publisher to s.
func (s *natsServer) client(t *testing.T) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func newNATS(t *testing.T, s *natsServer, f Firer) *NATS {
	t.Helper()
	n, err := NewNATS(s.url, f, NATSOptions{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

func receive(t *testing.T, ch <-chan fired) fired {
	t.Helper()
	select {
	case f := <-ch:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
		return fired{}
	}
}

// quiet checks that no event arrives within a short while.
func quiet(t *testing.T, ch <-chan fired) {
	t.Helper()
	select {
	case f := <-ch:
		t.Fatalf("unexpected event %+v", f.ev)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestNATSFiresEvents(t *testing.T) {
	s := startNATS(t)
	r := &recorder{ch: make(chan fired, 10)}
	n := newNATS(t, s, r)
	tr := natsTrigger("team-a/orders", "orders.*")
	tr.Namespace = "team-a"
	mustSet(t, n, tr)

	pub := s.client(t)
	msg := nats.NewMsg("orders.created")
	msg.Data = []byte(`{"id":42}`)
	msg.Header.Set("Content-Type", "application/json")
	msg.Header.Add("x-trace", "a")
	msg.Header.Add("x-trace", "b")
	before := time.Now()
	if err := pub.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	f := receive(t, r.ch)
	ev := f.ev
	if ev.Trigger != "team-a/orders" || ev.Namespace != "team-a" || ev.Function != "hello" || ev.Source != "nats:orders.created" {
		t.Errorf("event = %+v", ev)
	}
	if string(ev.Body) != `{"id":42}` {
		t.Errorf("body = %q", ev.Body)
	}
	if ev.Header.Get("Content-Type") != "application/json" || strings.Join(ev.Header.Values("X-Trace"), ",") != "a,b" {
		t.Errorf("header = %v; want Content-Type and X-Trace: a, b", ev.Header)
	}
	if ev.Time.Before(before) || ev.Time.After(f.at) {
		t.Errorf("time = %s; want between publish %s and Fire %s", ev.Time, before, f.at)
	}

	// A plain publish to a subject the trigger does not match is not fired.
	if err := pub.Publish("payments.created", nil); err != nil {
		t.Fatal(err)
	}
	pub.Flush()
	quiet(t, r.ch)
}

func TestNATSRequestGetsAck(t *testing.T) {
	s := startNATS(t)
	r := &recorder{fn: func(_ context.Context, ev Event) error {
		if string(ev.Body) == "fail" {
			return errdefs.New(errdefs.ErrLimit, "retry later", "queue of hello is full")
		}
		return nil
	}}
	n := newNATS(t, s, r)
	mustSet(t, n, natsTrigger("t", "jobs"))
	pub := s.client(t)

	reply, err := pub.Request("jobs", []byte("ok"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(reply.Data) != `{"queued":true}` {
		t.Errorf("reply = %s; want {\"queued\":true}", reply.Data)
	}

	reply, err = pub.Request("jobs", []byte("fail"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Error, Hint string }
	if err := json.Unmarshal(reply.Data, &body); err != nil || body.Error != "queue of hello is full" || body.Hint != "retry later" {
		t.Errorf("reply = %s; want the error and its hint", reply.Data)
	}
}

func TestNATSQueueGroupSharesWork(t *testing.T) {
	s := startNATS(t)
	ch := make(chan fired, 100)
	r1, r2 := &recorder{ch: ch}, &recorder{ch: ch}
	// Two wisp nodes running the same trigger.
	mustSet(t, newNATS(t, s, r1), natsTrigger("t", "work"))
	mustSet(t, newNATS(t, s, r2), natsTrigger("t", "work"))

	pub := s.client(t)
	const total = 40
	for i := range total {
		if err := pub.Publish("work", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	pub.Flush()
	seen := map[string]bool{}
	for range total {
		f := receive(t, ch)
		if seen[string(f.ev.Body)] {
			t.Errorf("message %s fired twice", f.ev.Body)
		}
		seen[string(f.ev.Body)] = true
	}
	quiet(t, ch)
	t.Logf("node 1 fired %d, node 2 fired %d", len(r1.calls("")), len(r2.calls("")))
}

func TestNATSTriggersOnOneSubjectEachFire(t *testing.T) {
	s := startNATS(t)
	r := &recorder{ch: make(chan fired, 10)}
	n := newNATS(t, s, r)
	mustSet(t, n, natsTrigger("audit", "orders.created"))
	mustSet(t, n, natsTrigger("billing", "orders.>"))

	pub := s.client(t)
	if err := pub.Publish("orders.created", []byte("x")); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	got[receive(t, r.ch).ev.Trigger] = true
	got[receive(t, r.ch).ev.Trigger] = true
	if !got["audit"] || !got["billing"] {
		t.Errorf("fired %v; want audit and billing", got)
	}
	quiet(t, r.ch)
}

func TestNATSRemoveAndReplace(t *testing.T) {
	s := startNATS(t)
	r := &recorder{ch: make(chan fired, 10)}
	n := newNATS(t, s, r)
	pub := s.client(t)
	publish := func(subject string) {
		t.Helper()
		if err := pub.Publish(subject, []byte(subject)); err != nil {
			t.Fatal(err)
		}
		pub.Flush()
	}

	mustSet(t, n, natsTrigger("t", "a"))
	publish("a")
	receive(t, r.ch)

	// Replaced: the new subject fires, the old one no longer does.
	mustSet(t, n, natsTrigger("t", "b"))
	publish("a")
	publish("b")
	if f := receive(t, r.ch); string(f.ev.Body) != "b" {
		t.Errorf("fired %q; want only b", f.ev.Body)
	}
	quiet(t, r.ch)

	n.Remove("t")
	n.Remove("unknown")
	publish("b")
	quiet(t, r.ch)
}

func TestNATSReconnects(t *testing.T) {
	s := startNATS(t)
	r := &recorder{ch: make(chan fired, 10)}
	n := newNATS(t, s, r)
	mustSet(t, n, natsTrigger("t", "a"))

	s.stop()
	s.start(t) // same port
	// nats.go reconnects (every second) and restores the subscription.
	pub := s.client(t)
	deadline := time.Now().Add(10 * time.Second)
	for n.nc.Status() != nats.CONNECTED {
		if time.Now().After(deadline) {
			t.Fatalf("not reconnected after 10s: %v", n.nc.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.nc.Flush()
	if err := pub.Publish("a", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if f := receive(t, r.ch); string(f.ev.Body) != "after" {
		t.Errorf("body = %q", f.ev.Body)
	}
}

func TestNATSClosed(t *testing.T) {
	s := startNATS(t)
	n, err := NewNATS(s.url, &recorder{}, NATSOptions{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, n, natsTrigger("t", "a"))
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Set(natsTrigger("u", "b")); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Set after Close = %v; want ErrUnavailable", err)
	}
	n.Remove("t")
}

func TestNATSSetRejects(t *testing.T) {
	s := startNATS(t)
	n := newNATS(t, s, &recorder{})
	if err := n.Set(cronTrigger("c", "@hourly")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Set(cron trigger) = %v; want ErrInvalid", err)
	}
	if err := n.Set(natsTrigger("n", "a..b")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Set(bad subject) = %v; want ErrInvalid", err)
	}
}

// TestNATSConnectFails needs no server: nothing listens on the port.
func TestNATSConnectFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	_, err = NewNATS(fmt.Sprintf("nats://wisp:s3cret@127.0.0.1:%d", port), &recorder{}, NATSOptions{Logger: discard})
	if !errors.Is(err, errdefs.ErrUnavailable) || errdefs.Hint(err) == "" {
		t.Fatalf("NewNATS = %v; want ErrUnavailable with a hint", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows the password: %v", err)
	}
}
