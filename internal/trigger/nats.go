package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// DefaultQueueGroup prefixes the queue group of every NATS trigger when
// NATSOptions.QueueGroup is empty.
const DefaultQueueGroup = "wisp"

// NATSOptions configures a NATS source. The zero value is ready to use.
type NATSOptions struct {
	// QueueGroup prefixes the queue group each trigger subscribes in:
	// trigger ID's group is QueueGroup + "." + ID. Wisp nodes that share
	// a prefix share the work: each message is fired once per trigger
	// across them. Default DefaultQueueGroup.
	QueueGroup string
	// Name is the connection's name, shown by the NATS server's monitoring.
	// Default "wisp".
	Name   string
	Logger *slog.Logger // nil: slog.Default()
}

// NATS fires NATS triggers: each trigger subscribes to its subject, and
// each message becomes an Event. Messages of one trigger are fired one at
// a time, in order; NATS buffers those that wait (up to its pending limits,
// beyond which it drops them and reports a slow consumer, logged).
//
// Delivery is core NATS: at most once. A message published while no wisp
// is subscribed, or received by a wisp that dies before Fire returns, is
// lost. A publisher that needs to know uses a request (nats request, or
// nc.Request): the reply, sent once Fire returned, is {"queued":true}, or
// {"error":"...","hint":"..."} when the call could not be queued.
type NATS struct {
	nc    *nats.Conn
	f     Firer
	group string
	log   *slog.Logger

	// ctx is the context of Fire calls; Close cancels it once the
	// connection has drained.
	ctx    context.Context
	cancel context.CancelFunc

	closed    chan struct{} // closed by the connection's ClosedHandler
	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex // guards subs and closing
	subs    map[string]*nats.Subscription
	closing bool
}

// NewNATS connects to the NATS server(s) at url (nats://host:4222, or
// several separated by commas). It fails with errdefs.ErrUnavailable if no
// server answers; once connected, it reconnects forever after a loss (the
// subscriptions are restored by nats.go) and logs disconnects and
// reconnects.
func NewNATS(url string, f Firer, opts NATSOptions) (*NATS, error) {
	if opts.QueueGroup == "" {
		opts.QueueGroup = DefaultQueueGroup
	}
	if opts.Name == "" {
		opts.Name = "wisp"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &NATS{
		f:      f,
		group:  opts.QueueGroup,
		log:    opts.Logger,
		ctx:    ctx,
		cancel: cancel,
		closed: make(chan struct{}),
		subs:   make(map[string]*nats.Subscription),
	}
	log := opts.Logger
	nc, err := nats.Connect(url,
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats trigger source: disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats trigger source: reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Debug("nats trigger source: reconnect attempt failed", "err", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats trigger source: error", "subject", subject, "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(n.closed) }),
	)
	if err != nil {
		cancel()
		return nil, errdefs.New(errdefs.ErrUnavailable,
			"start nats-server (apt-get install nats-server) or point wisp at a running one",
			"connect to NATS at %s: %v", redact(url), err)
	}
	n.nc = nc
	return n, nil
}

// Set subscribes t to its subject, or replaces the trigger with its ID. It
// validates t first. A replacement subscribes before it unsubscribes the
// old subscription, so no message falls between them, and the old one
// still fires the messages it already received.
func (n *NATS) Set(t Trigger) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if err := checkType(t, TypeNATS); err != nil {
		return err
	}
	n.mu.Lock()
	if n.closing {
		n.mu.Unlock()
		return errdefs.New(errdefs.ErrUnavailable, "", "trigger %q: the NATS source is closed", t.ID)
	}
	sub, err := n.nc.QueueSubscribe(t.Subject, n.group+"."+t.ID, func(m *nats.Msg) { n.handle(t, m) })
	if err != nil {
		n.mu.Unlock()
		return errdefs.New(errdefs.ErrUnavailable, "", "trigger %q: subscribe to %q: %v", t.ID, t.Subject, err)
	}
	if old, ok := n.subs[t.ID]; ok {
		n.drain(t.ID, old)
	}
	n.subs[t.ID] = sub
	n.mu.Unlock()
	n.flush(t.ID)
	return nil
}

// Remove unsubscribes the trigger with this ID. Messages it already
// received are still fired.
func (n *NATS) Remove(id string) {
	n.mu.Lock()
	sub, ok := n.subs[id]
	if ok {
		delete(n.subs, id)
		n.drain(id, sub)
	}
	n.mu.Unlock()
	if ok {
		n.flush(id)
	}
}

// drain unsubscribes sub but fires the messages it already received
// (Unsubscribe would drop them, and no other member of the queue group
// gets them).
func (n *NATS) drain(id string, sub *nats.Subscription) {
	if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		n.log.Warn("nats trigger source: unsubscribe", "trigger", id, "err", err)
	}
}

// flush makes a subscription change known to the server before Set or
// Remove returns, so a message published afterwards is (or is not)
// delivered. While disconnected the change is sent on reconnect; that is
// not an error.
func (n *NATS) flush(id string) {
	if !n.nc.IsConnected() {
		return
	}
	if err := n.nc.FlushTimeout(5 * time.Second); err != nil {
		n.log.Warn("nats trigger source: subscription change not confirmed by the server yet", "trigger", id, "err", err)
	}
}

// Close drains the connection: it stops taking messages, fires those
// already received (bounded by nats.go's drain timeout, 30s), then closes
// it and cancels the context of any Fire still running.
func (n *NATS) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closing = true
		n.mu.Unlock()
		if err := n.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionReconnecting) {
			// Not connected (a reconnecting connection is closed by Drain
			// itself): close without draining.
			n.nc.Close()
		}
		select {
		case <-n.closed:
		case <-time.After(nats.DefaultDrainTimeout + 5*time.Second):
			n.closeErr = errors.New("nats trigger source: connection did not close")
		}
		n.cancel()
	})
	return n.closeErr
}

// handle fires one message of trigger t and acknowledges it.
func (n *NATS) handle(t Trigger, m *nats.Msg) {
	ev := Event{
		Trigger:   t.ID,
		Namespace: t.Namespace,
		Function:  t.Function,
		Source:    "nats:" + m.Subject,
		Body:      m.Data,
		Header:    make(http.Header, len(m.Header)),
		Time:      time.Now(),
	}
	for k, vs := range m.Header {
		for _, v := range vs {
			ev.Header.Add(k, v)
		}
	}
	err := n.f.Fire(n.ctx, ev)
	if err != nil {
		n.log.Error("nats trigger: fire failed", "trigger", t.ID, "function", t.Function,
			"namespace", t.Namespace, "subject", m.Subject, "err", err)
	}
	if m.Reply == "" {
		return
	}
	if rerr := m.Respond(ackBody(err)); rerr != nil {
		n.log.Warn("nats trigger: reply failed", "trigger", t.ID, "subject", m.Subject, "err", rerr)
	}
}

// ackBody is the reply to a request: {"queued":true}, or the error.
func ackBody(err error) []byte {
	var v any = struct {
		Queued bool `json:"queued"`
	}{true}
	if err != nil {
		v = struct {
			Error string `json:"error"`
			Hint  string `json:"hint,omitempty"`
		}{err.Error(), errdefs.Hint(err)}
	}
	b, _ := json.Marshal(v)
	return b
}

// redact hides the passwords and tokens of NATS URLs in error messages.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
