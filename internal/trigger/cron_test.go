package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/testenv"
)

var discard = slog.New(slog.DiscardHandler)

// fired is one Fire call: the event, and when (by the real or bubble
// clock) it was called.
type fired struct {
	at time.Time
	ev Event
}

// recorder is a Firer that records its calls; fn, if set, decides the
// result.
type recorder struct {
	fn func(ctx context.Context, ev Event) error
	ch chan fired // if set, each call is also sent here

	mu  sync.Mutex // guards got
	got []fired
}

func (r *recorder) Fire(ctx context.Context, ev Event) error {
	f := fired{time.Now(), ev}
	r.mu.Lock()
	r.got = append(r.got, f)
	r.mu.Unlock()
	if r.ch != nil {
		r.ch <- f
	}
	if r.fn != nil {
		return r.fn(ctx, ev)
	}
	return nil
}

func (r *recorder) calls(trigger string) []fired {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []fired
	for _, f := range r.got {
		if trigger == "" || f.ev.Trigger == trigger {
			out = append(out, f)
		}
	}
	return out
}

// checkFired checks that trigger fired exactly at want: each event's Time
// is the scheduled time, and (in a synctest bubble, where no time passes
// while goroutines run) Fire was called at that very time.
func checkFired(t *testing.T, r *recorder, trigger string, want ...time.Time) {
	t.Helper()
	got := r.calls(trigger)
	var times []time.Time
	for _, f := range got {
		times = append(times, f.ev.Time)
	}
	if len(got) != len(want) {
		t.Fatalf("%s fired at %v; want %v", trigger, times, want)
	}
	for i, f := range got {
		if !f.ev.Time.Equal(want[i]) || !f.at.Equal(want[i]) {
			t.Errorf("%s firing %d: scheduled %s, fired at %s; want both %s", trigger, i, f.ev.Time, f.at, want[i])
		}
	}
}

func mustSet(t *testing.T, s Source, tr Trigger) {
	t.Helper()
	if err := s.Set(tr); err != nil {
		t.Fatal(err)
	}
}

func TestCronFiresOnSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		c := NewCron(r, CronOptions{Logger: discard})
		defer c.Stop()

		// Start 30s before the next local hour, then let 15 minutes pass.
		now := time.Now()
		hour := time.Date(now.Year(), now.Month(), now.Day(), now.Hour()+1, 0, 0, 0, time.Local)
		time.Sleep(hour.Add(-30 * time.Second).Sub(now))
		mustSet(t, c, cronTrigger("every5", "*/5 * * * *"))
		c.Start()
		if next, ok := c.Next("every5"); !ok || !next.Equal(hour) {
			t.Errorf("Next = %s, %v; want %s", next, ok, hour)
		}
		time.Sleep(15 * time.Minute)
		c.Stop()

		checkFired(t, r, "every5", hour, hour.Add(5*time.Minute), hour.Add(10*time.Minute))
		ev := r.calls("every5")[0].ev
		if ev.Source != "cron:every5" || ev.Function != "hello" || ev.Header.Get("Content-Type") != "application/json" {
			t.Errorf("event = %+v", ev)
		}
		var body struct{ Trigger, Scheduled string }
		if err := json.Unmarshal(ev.Body, &body); err != nil || body.Trigger != "every5" || body.Scheduled != hour.Format(time.RFC3339) {
			t.Errorf("body = %s (%v); want trigger every5, scheduled %s", ev.Body, err, hour.Format(time.RFC3339))
		}
	})
}

func TestCronSetReplaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		c := NewCron(r, CronOptions{Logger: discard})
		defer c.Stop()
		t0 := time.Now()
		at := func(d time.Duration) time.Time { return t0.Add(d) }

		mustSet(t, c, cronTrigger("a", "@every 10s"))
		c.Start()
		time.Sleep(25 * time.Second)
		checkFired(t, r, "a", at(10*time.Second), at(20*time.Second))

		// A new schedule is timed from when it is set, and fires the new
		// function.
		tr := cronTrigger("a", "@every 1m")
		tr.Function = "other"
		mustSet(t, c, tr)
		if next, _ := c.Next("a"); !next.Equal(at(85 * time.Second)) {
			t.Errorf("Next after replace = %s; want %s", next, at(85*time.Second))
		}
		time.Sleep(75 * time.Second) // t0+100s

		// The same schedule again keeps its cadence; the new body is used.
		tr.Body = "ping"
		mustSet(t, c, tr)
		time.Sleep(50 * time.Second) // t0+150s
		c.Stop()

		checkFired(t, r, "a", at(10*time.Second), at(20*time.Second), at(85*time.Second), at(145*time.Second))
		got := r.calls("a")
		if got[2].ev.Function != "other" || string(got[2].ev.Body) == "ping" {
			t.Errorf("firing 2 = %+v; want function other and the default body", got[2].ev)
		}
		if string(got[3].ev.Body) != "ping" || got[3].ev.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("firing 3: body %q, header %v; want ping as text/plain", got[3].ev.Body, got[3].ev.Header)
		}
	})
}

func TestCronRemoveStopsFirings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		c := NewCron(r, CronOptions{Logger: discard})
		defer c.Stop()
		t0 := time.Now()
		mustSet(t, c, cronTrigger("a", "@every 10s"))
		mustSet(t, c, cronTrigger("b", "@every 10s"))
		c.Start()
		time.Sleep(15 * time.Second)
		c.Remove("a")
		c.Remove("unknown")
		if _, ok := c.Next("a"); ok {
			t.Error("Next reports a removed trigger")
		}
		time.Sleep(time.Minute)
		c.Stop()
		checkFired(t, r, "a", t0.Add(10*time.Second))
		if n := len(r.calls("b")); n != 7 {
			t.Errorf("b fired %d times in 75s; want 7", n)
		}
	})
}

func TestCronSlowFirerDelaysNoOtherTrigger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log testenv.Buffer
		r := &recorder{fn: func(ctx context.Context, ev Event) error {
			if ev.Trigger == "slow" {
				<-ctx.Done() // a Firer stuck until Stop
				return ctx.Err()
			}
			return nil
		}}
		c := NewCron(r, CronOptions{Logger: slog.New(slog.NewTextHandler(&log, nil))})
		t0 := time.Now()
		mustSet(t, c, cronTrigger("slow", "@every 5s"))
		mustSet(t, c, cronTrigger("fast", "@every 3s"))
		c.Start()
		time.Sleep(31 * time.Second)
		c.Stop() // returns although a Fire was stuck: it cancels its context

		var want []time.Time
		for i := 1; i <= 10; i++ {
			want = append(want, t0.Add(time.Duration(i)*3*time.Second))
		}
		checkFired(t, r, "fast", want...)
		// One slow Fire in flight at a time: later firings are skipped.
		checkFired(t, r, "slow", t0.Add(5*time.Second))
		out := log.String()
		if n := strings.Count(out, "the previous one is still being queued"); n != 5 {
			t.Errorf("logged %d skipped firings; want 5:\n%s", n, out)
		}
		if !strings.Contains(out, "fire failed") || !strings.Contains(out, "trigger=slow") || !strings.Contains(out, "context canceled") {
			t.Errorf("the failed Fire is not logged with its trigger:\n%s", out)
		}
	})
}

func TestCronLogsFireError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log testenv.Buffer
		r := &recorder{fn: func(context.Context, Event) error {
			return errdefs.New(errdefs.ErrLimit, "", "queue of hello is full")
		}}
		c := NewCron(r, CronOptions{Logger: slog.New(slog.NewTextHandler(&log, nil))})
		mustSet(t, c, cronTrigger("team-a/nightly", "@every 1m"))
		c.Start()
		time.Sleep(90 * time.Second)
		c.Stop()
		if out := log.String(); !strings.Contains(out, "trigger=team-a/nightly") || !strings.Contains(out, "queue of hello is full") {
			t.Errorf("log = %q; want the error with the trigger id", out)
		}
	})
}

// jumpClock is real (bubble) time plus an offset that a test moves, as a
// suspended machine or a stepped wall clock would.
type jumpClock struct {
	mu     sync.Mutex // guards offset
	offset time.Duration
}

func (c *jumpClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *jumpClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

func (c *jumpClock) Jump(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

func TestCronSkipsMissedFirings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log testenv.Buffer
		clk := &jumpClock{}
		r := &recorder{}
		c := NewCron(r, CronOptions{Clock: clk, Logger: slog.New(slog.NewTextHandler(&log, nil))})
		defer c.Stop()
		t0 := clk.Now()
		mustSet(t, c, cronTrigger("late", "@every 10m"))   // due t0+10m
		mustSet(t, c, cronTrigger("missed", "@every 10m")) // due t0+10m
		c.Start()

		time.Sleep(9 * time.Minute)
		// The clock jumps 80s: both are 20s late, within the deadline,
		// and fire at once (they are noticed within maxSleep).
		clk.Jump(80 * time.Second)
		time.Sleep(maxSleep + time.Second)
		c.Remove("late")
		for _, id := range []string{"late", "missed"} {
			if got := r.calls(id); len(got) != 1 || !got[0].ev.Time.Equal(t0.Add(10*time.Minute)) {
				t.Fatalf("%s: %v; want one firing scheduled at %s", id, got, t0.Add(10*time.Minute))
			}
		}

		// Suspended for an hour: the firings due meanwhile are skipped,
		// not caught up; the next is 10m after the machine resumed.
		clk.Jump(time.Hour)
		time.Sleep(maxSleep + time.Second)
		if n := len(r.calls("missed")); n != 1 {
			t.Fatalf("missed fired %d times after the jump; want no catch-up", n)
		}
		if !strings.Contains(log.String(), "missed a firing: skipped, not caught up") {
			t.Errorf("the skipped firing is not logged:\n%s", log.String())
		}
		next, ok := c.Next("missed")
		if now := clk.Now(); !ok || next.Before(now) || next.After(now.Add(10*time.Minute)) {
			t.Errorf("Next = %s, %v; want within 10m of %s", next, ok, now)
		}
		time.Sleep(10*time.Minute + time.Second)
		if got := r.calls("missed"); len(got) != 2 || !got[1].ev.Time.Equal(next) {
			t.Errorf("missed: %v; want a second firing at %s", got, next)
		}
	})
}

func TestCronSetRejects(t *testing.T) {
	c := NewCron(&recorder{}, CronOptions{Logger: discard})
	defer c.Stop()
	if err := c.Set(natsTrigger("n", "orders")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Set(nats trigger) = %v; want ErrInvalid", err)
	}
	if err := c.Set(cronTrigger("c", "* * *")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Set(bad schedule) = %v; want ErrInvalid", err)
	}
	if _, ok := c.Next("c"); ok {
		t.Error("a rejected trigger was added")
	}
}

func TestCronStop(t *testing.T) {
	NewCron(&recorder{}, CronOptions{}).Stop() // never started

	c := NewCron(&recorder{}, CronOptions{Logger: discard})
	mustSet(t, c, cronTrigger("a", "@hourly"))
	c.Start()
	c.Start()
	done := make(chan struct{})
	go func() {
		c.Stop()
		c.Stop()
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return")
	}
	c.Start() // after Stop: nothing
}

// TestCronRealTime runs on the real clock: a trigger fires within a second
// of its scheduled time.
func TestCronRealTime(t *testing.T) {
	for _, schedule := range []string{"@every 1s", "* * * * * *"} {
		t.Run(schedule, func(t *testing.T) {
			r := &recorder{ch: make(chan fired, 10)}
			c := NewCron(r, CronOptions{Logger: discard})
			defer c.Stop()
			mustSet(t, c, cronTrigger("rt", schedule))
			c.Start()
			select {
			case f := <-r.ch:
				if late := f.at.Sub(f.ev.Time); late < 0 || late >= time.Second {
					t.Errorf("scheduled %s, received %s: %s late; want under 1s", f.ev.Time, f.at, late)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no firing within 5s")
			}
		})
	}
}
