package trigger

import (
	"errors"
	"strings"
	"testing"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func cronTrigger(id, schedule string) Trigger {
	return Trigger{ID: id, Function: "hello", Type: TypeCron, Schedule: schedule}
}

func natsTrigger(id, subject string) Trigger {
	return Trigger{ID: id, Function: "hello", Type: TypeNATS, Subject: subject}
}

func TestValidate(t *testing.T) {
	with := func(tr Trigger, f func(*Trigger)) Trigger { f(&tr); return tr }
	cronT := cronTrigger("team-a/nightly", "0 3 * * *")
	natsT := natsTrigger("team-a/orders", "orders.*.created")
	for _, tr := range []Trigger{
		cronT,
		with(cronT, func(t *Trigger) { t.ID = "fn:hello.team-a"; t.Namespace = "team-a"; t.Body = `{"x":1}` }),
		with(cronT, func(t *Trigger) { t.Namespace = "default"; t.Schedule = "CRON_TZ=Europe/Paris @every 10s" }),
		natsT,
		with(natsT, func(t *Trigger) { t.Subject = "orders.>" }),
		with(natsT, func(t *Trigger) { t.Subject = "*" }),
	} {
		if err := tr.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", tr, err)
		}
	}

	for _, tc := range []struct {
		tr   Trigger
		want string
	}{
		{with(cronT, func(t *Trigger) { t.ID = "" }), `trigger "": field id: is required`},
		{with(cronT, func(t *Trigger) { t.ID = "a b" }), `field id: must not contain spaces`},
		{with(cronT, func(t *Trigger) { t.ID = strings.Repeat("x", 300) }), `field id: is longer than 256 bytes`},
		{with(cronT, func(t *Trigger) { t.Function = "" }), `field function: is required`},
		{with(cronT, func(t *Trigger) { t.Function = "hello.team-a" }), `field function: "hello.team-a" is a reference, not a plain function name`},
		{with(cronT, func(t *Trigger) { t.Function = "Hello" }), `field function: "Hello" is not a valid function name`},
		{with(cronT, func(t *Trigger) { t.Namespace = "Team A" }), `trigger "team-a/nightly": field namespace: "Team A" is not a valid namespace name`},
		{with(cronT, func(t *Trigger) { t.Type = "" }), `field type: is required`},
		{with(cronT, func(t *Trigger) { t.Type = "kafka" }), `field type: unknown trigger type "kafka"`},
		{with(cronT, func(t *Trigger) { t.Schedule = "" }), `field schedule: is required for a cron trigger`},
		{with(cronT, func(t *Trigger) { t.Schedule = "*/5 * *" }), `trigger "team-a/nightly": schedule "*/5 * *": expected 5 fields`},
		{with(cronT, func(t *Trigger) { t.Subject = "orders" }), `field subject: is only for nats triggers`},
		{with(natsT, func(t *Trigger) { t.Subject = "" }), `field subject: is required for a nats trigger`},
		{with(natsT, func(t *Trigger) { t.Schedule = "@hourly" }), `field schedule: is only for cron triggers`},
		{with(natsT, func(t *Trigger) { t.Body = "x" }), `field body: is only for cron triggers`},
		{with(natsT, func(t *Trigger) { t.Subject = "orders..created" }), `"orders..created" has an empty token`},
		{with(natsT, func(t *Trigger) { t.Subject = ".orders" }), `has an empty token`},
		{with(natsT, func(t *Trigger) { t.Subject = "orders.>.created" }), `has > before its last token`},
		{with(natsT, func(t *Trigger) { t.Subject = "orders.new*" }), `a wildcard must be a whole token`},
		{with(natsT, func(t *Trigger) { t.Subject = "orders created" }), `must not contain spaces`},
	} {
		err := tc.tr.Validate()
		switch {
		case err == nil:
			t.Errorf("Validate(%+v) = nil; want %q", tc.tr, tc.want)
		case !errors.Is(err, errdefs.ErrInvalid):
			t.Errorf("Validate(%+v) = %v; want ErrInvalid", tc.tr, err)
		case !strings.Contains(err.Error(), tc.want):
			t.Errorf("Validate(%+v) = %q; want %q", tc.tr, err, tc.want)
		case errdefs.Hint(err) == "":
			t.Errorf("Validate(%+v) = %q: no hint", tc.tr, err)
		}
	}
}

// fakeSource is a hand-written fake Source.
type fakeSource struct {
	set     map[string]Trigger
	removed []string
	closed  bool
	err     error
}

func (s *fakeSource) Set(t Trigger) error {
	if s.set == nil {
		s.set = map[string]Trigger{}
	}
	s.set[t.ID] = t
	return s.err
}
func (s *fakeSource) Remove(id string) { delete(s.set, id); s.removed = append(s.removed, id) }
func (s *fakeSource) Close() error     { s.closed = true; return s.err }

func TestMuxRoutesByType(t *testing.T) {
	c, n := &fakeSource{}, &fakeSource{}
	m := Mux{TypeCron: c, TypeNATS: n}

	if err := m.Set(cronTrigger("a", "@hourly")); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.set["a"]; !ok {
		t.Fatalf("cron source did not get the cron trigger")
	}
	// The same ID turned into a NATS trigger moves to the NATS source.
	if err := m.Set(natsTrigger("a", "orders")); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.set["a"]; ok {
		t.Error("cron source still runs a trigger that became a nats trigger")
	}
	if _, ok := n.set["a"]; !ok {
		t.Error("nats source did not get the nats trigger")
	}
	if err := m.Set(cronTrigger("bad", "")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Set(invalid) = %v; want ErrInvalid", err)
	}
	m.Remove("a")
	if len(n.set) != 0 || len(c.set) != 0 {
		t.Errorf("after Remove: cron %v, nats %v; want both empty", c.set, n.set)
	}
	n.err = errors.New("boom")
	if err := m.Close(); err == nil || !c.closed || !n.closed {
		t.Errorf("Close = %v, closed cron %v nats %v; want boom and both closed", err, c.closed, n.closed)
	}

	// A server without NATS refuses nats triggers as unavailable, with a hint.
	err := Mux{TypeCron: c}.Set(natsTrigger("b", "orders"))
	if !errors.Is(err, errdefs.ErrUnavailable) || errdefs.Hint(err) == "" {
		t.Errorf("Set(nats) without a NATS source = %v (hint %q); want ErrUnavailable with a hint", err, errdefs.Hint(err))
	}
}
