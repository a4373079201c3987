package trigger

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Clock is the time source of a Cron: real time by default, a fake in
// tests.
type Clock interface {
	Now() time.Time
	// NewTimer returns a channel that receives once d has passed, and a
	// function that stops the timer early.
	NewTimer(d time.Duration) (c <-chan time.Time, stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// DefaultDeadline is how late a cron firing may start when
// CronOptions.Deadline is zero.
const DefaultDeadline = time.Minute

// maxSleep bounds one sleep of the scheduling goroutine, so that it
// notices within that time a wall clock stepped forward or a machine that
// resumed from suspend (timers run on the monotonic clock, which stops
// while suspended; schedules are in wall-clock time).
const maxSleep = 30 * time.Second

// CronOptions configures a Cron. The zero value is ready to use.
type CronOptions struct {
	Clock  Clock        // nil: real time
	Logger *slog.Logger // nil: slog.Default()
	// Deadline is how late a firing may start (Kubernetes CronJob's
	// startingDeadlineSeconds): a firing found later than this, after a
	// suspend or a stalled process, is skipped and logged. Zero means
	// DefaultDeadline.
	Deadline time.Duration
}

// Cron fires cron triggers at their scheduled times. One goroutine (Start)
// sleeps until the earliest next firing, then fires every trigger that is
// due; each Fire runs in its own goroutine, so a slow Firer delays no other
// trigger. A trigger has at most one Fire in flight: a firing that comes
// due while the previous one is still being queued is skipped and logged.
//
// Only firings from Set (or Start) onwards happen: firings missed while the
// server was down are not caught up, since Cron keeps no state across
// restarts; nor are firings more than Deadline late.
type Cron struct {
	f        Firer
	clock    Clock
	log      *slog.Logger
	deadline time.Duration

	// ctx is the context of Fire calls; Stop cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	wake chan struct{} // buffered(1): Set and Remove nudge the loop to recompute its sleep
	quit chan struct{} // closed by Stop
	done chan struct{} // closed when the loop returns

	fires    sync.WaitGroup // Fire goroutines
	stopOnce sync.Once

	mu      sync.Mutex        // guards entries, started, stopped and every entry's fields
	entries map[string]*entry // by trigger ID
	started bool
	stopped bool
}

type entry struct {
	t      Trigger
	sched  cron.Schedule
	next   time.Time // zero: the schedule never fires again
	firing bool      // a Fire is in flight
}

// NewCron returns a Cron that fires through f. Call Start to run it.
func NewCron(f Firer, opts CronOptions) *Cron {
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Deadline <= 0 {
		opts.Deadline = DefaultDeadline
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Cron{
		f:        f,
		clock:    opts.Clock,
		log:      opts.Logger,
		deadline: opts.Deadline,
		ctx:      ctx,
		cancel:   cancel,
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		entries:  make(map[string]*entry),
	}
}

// Set adds t, or replaces the trigger with its ID. It validates t first.
// A replacement with the same schedule keeps its next firing time (so
// re-applying an unchanged trigger does not shift an @every cadence); a new
// schedule is timed from now.
func (c *Cron) Set(t Trigger) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if err := checkType(t, TypeCron); err != nil {
		return err
	}
	sched, err := ParseSchedule(t.Schedule)
	if err != nil {
		return err
	}
	now := c.clock.Now()
	c.mu.Lock()
	if old, ok := c.entries[t.ID]; ok && old.t.Schedule == t.Schedule {
		old.t = t
	} else {
		c.entries[t.ID] = &entry{t: t, sched: sched, next: sched.Next(now)}
	}
	c.mu.Unlock()
	c.nudge()
	return nil
}

// Remove stops the trigger with this ID. A Fire already in flight
// completes.
func (c *Cron) Remove(id string) {
	c.mu.Lock()
	delete(c.entries, id)
	c.mu.Unlock()
	c.nudge()
}

// Next returns the trigger's next scheduled firing, and false if there is
// no such trigger or it never fires again.
func (c *Cron) Next(id string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || e.next.IsZero() {
		return time.Time{}, false
	}
	return e.next, true
}

// Start starts the scheduling goroutine. Calls after the first, or after
// Stop, do nothing.
func (c *Cron) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.stopped {
		return
	}
	c.started = true
	go c.run()
}

// Stop stops the scheduling goroutine, cancels the context of Fire calls
// in flight and waits for them to return.
func (c *Cron) Stop() {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		c.stopped = true
		started := c.started
		c.mu.Unlock()
		close(c.quit)
		if started {
			<-c.done
		}
		c.cancel()
		c.fires.Wait()
	})
}

// Close is Stop, for Source.
func (c *Cron) Close() error {
	c.Stop()
	return nil
}

func (c *Cron) nudge() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Cron) run() {
	defer close(c.done)
	for {
		now := c.clock.Now()
		c.mu.Lock()
		next := c.fireDue(now)
		c.mu.Unlock()
		d := maxSleep
		if !next.IsZero() {
			d = min(d, next.Sub(now))
		}
		ch, stop := c.clock.NewTimer(d)
		select {
		case <-ch:
		case <-c.wake:
			stop()
		case <-c.quit:
			stop()
			return
		}
	}
}

// fireDue fires every entry due at now, moves each past now, and returns
// the earliest next firing (zero if none). c.mu must be held.
func (c *Cron) fireDue(now time.Time) time.Time {
	var earliest time.Time
	for _, e := range c.entries {
		if e.next.IsZero() {
			continue
		}
		if !e.next.After(now) {
			switch late := now.Sub(e.next); {
			case late > c.deadline:
				c.log.Warn("cron trigger missed a firing: skipped, not caught up",
					"trigger", e.t.ID, "scheduled", e.next, "late", late, "deadline", c.deadline)
			case e.firing:
				c.log.Warn("cron trigger skipped a firing: the previous one is still being queued",
					"trigger", e.t.ID, "scheduled", e.next)
			default:
				e.firing = true
				c.fires.Add(1)
				go c.fire(e, cronEvent(e.t, e.next))
			}
			e.next = advance(e.sched, e.next, now)
			if e.next.IsZero() {
				continue
			}
		}
		if earliest.IsZero() || e.next.Before(earliest) {
			earliest = e.next
		}
	}
	return earliest
}

// advance returns the firing of sched after prev that is after now:
// timed from the previous firing, so @every keeps its cadence, but never
// in the past, so missed firings are skipped.
func advance(sched cron.Schedule, prev, now time.Time) time.Time {
	next := sched.Next(prev)
	if !next.IsZero() && !next.After(now) {
		next = sched.Next(now)
	}
	return next
}

func (c *Cron) fire(e *entry, ev Event) {
	defer c.fires.Done()
	err := c.f.Fire(c.ctx, ev)
	c.mu.Lock()
	e.firing = false
	c.mu.Unlock()
	if err != nil {
		c.log.Error("cron trigger: fire failed", "trigger", ev.Trigger, "function", ev.Function,
			"namespace", ev.Namespace, "scheduled", ev.Time, "err", err)
	}
}

// cronEvent returns the Event of t's firing scheduled at at.
func cronEvent(t Trigger, at time.Time) Event {
	body := []byte(t.Body)
	ctype := "text/plain; charset=utf-8"
	if t.Body == "" {
		body, _ = json.Marshal(struct {
			Trigger   string `json:"trigger"`
			Scheduled string `json:"scheduled"`
		}{t.ID, at.Format(time.RFC3339)})
	}
	if json.Valid(body) {
		ctype = "application/json"
	}
	return Event{
		Trigger:   t.ID,
		Namespace: t.Namespace,
		Function:  t.Function,
		Source:    "cron:" + t.ID,
		Body:      body,
		Header:    http.Header{"Content-Type": {ctype}},
		Time:      at,
	}
}
