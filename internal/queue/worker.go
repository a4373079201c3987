package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Result is what one attempt produced.
type Result struct {
	StatusCode int
	Header     http.Header
	Body       []byte
	// Err is nil when the attempt succeeded; the fields below are read
	// only when it is not.
	Err error
	// Retry says the failure may pass if the job is tried again (a crash, a
	// timeout, a 5xx). When it is false the job fails at once (the function
	// was deleted, the request is invalid).
	Retry bool
	// Throttled says the call was refused for capacity (a 429) and never
	// ran: the job is tried again after RetryAfter (at least half a second)
	// without spending an attempt.
	Throttled  bool
	RetryAfter time.Duration
}

// Invoker runs one attempt of a job. The gateway implements it. InvokeAsync
// must return soon after ctx is cancelled (Close waits for it); j is the
// Invoker's own copy.
type Invoker interface {
	InvokeAsync(ctx context.Context, j *Job) Result
}

// errNothing rolls back a write transaction that found nothing to do, so
// it costs no commit.
var errNothing = errors.New("nothing to do")

// dispatch is the dispatcher goroutine: it claims ready jobs while worker
// slots are free, and sleeps until it is poked or the next job is due.
func (q *Queue) dispatch(inv Invoker) {
	defer close(q.dispatched)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	pruneTick := time.NewTicker(pruneInterval(q.opts.DoneRetention))
	defer pruneTick.Stop()
	q.prune(time.Now())
	for {
		wait := time.Duration(-1) // no timer: only a poke brings more work
		for len(q.callbacks) > 0 && q.free() > 0 {
			id := q.callbacks[0]
			q.callbacks = q.callbacks[1:]
			q.startWork(func() { q.redeliver(id) })
		}
		if free := q.free(); free > 0 {
			now := time.Now()
			jobs, next, err := q.claim(free, now)
			switch {
			case err != nil:
				q.log.Error("take jobs; trying again in a second", "err", err)
				wait = time.Second
			case len(jobs) < free && !next.IsZero():
				wait = next.Sub(now)
			}
			for _, j := range jobs {
				q.startWork(func() { q.attempt(inv, j) })
			}
		}
		var due <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			due = timer.C
		}
		select {
		case <-q.stop:
			return
		case <-q.wake:
		case <-due:
		case <-pruneTick.C:
			q.prune(time.Now())
		}
		timer.Stop()
	}
}

// free returns the number of free worker slots.
func (q *Queue) free() int { return q.opts.Workers - int(q.inflight.Load()) }

// startWork runs f in a goroutine that holds a worker slot. Only the
// dispatcher calls it.
func (q *Queue) startWork(f func()) {
	q.inflight.Add(1)
	q.work.Add(1)
	go func() {
		defer q.work.Done()
		defer func() {
			q.inflight.Add(-1)
			q.poke()
		}()
		f()
	}()
}

// claim marks up to n ready jobs running, oldest NextAt first, in one
// commit, and returns them with the NextAt of the first job it left queued
// (zero when none is left).
func (q *Queue) claim(n int, now time.Time) (jobs []*Job, next time.Time, err error) {
	err = q.db.Update(func(tx *bolt.Tx) error {
		jobs, next = nil, time.Time{}
		b := bucketsOf(tx)
		queued := b.state[StateQueued]
		var keys [][]byte
		c := queued.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if at := keyTime(k); len(keys) == n || at.After(now) {
				next = at
				break
			}
			keys = append(keys, bytes.Clone(k))
		}
		if len(keys) == 0 {
			return errNothing
		}
		for _, k := range keys {
			if err := queued.Delete(k); err != nil {
				return err
			}
			old, err := b.job(k[8:])
			if err != nil {
				return err
			}
			if old == nil || old.State != StateQueued {
				continue // a stale index key, now deleted
			}
			j := *old
			j.State, j.Updated = StateRunning, now.UTC()
			if err := b.put(&j); err != nil {
				return err
			}
			jobs = append(jobs, &j)
		}
		return nil
	})
	if errors.Is(err, errNothing) {
		return nil, next, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("claim jobs: %w", err)
	}
	q.count(StateQueued, -len(jobs))
	q.count(StateRunning, len(jobs))
	return jobs, next, nil
}

// attempt runs one attempt of the running job j and records its outcome.
func (q *Queue) attempt(inv Invoker, j *Job) {
	r := inv.InvokeAsync(q.runCtx, j.clone())
	if r.Err != nil && q.runCtx.Err() != nil {
		// Close cancelled it: the job stays running on disk, and the next
		// Open queues it again.
		return
	}
	n := q.outcome(j, r, time.Now().UTC())
	if finished(n.State) && q.opts.Finished != nil {
		q.opts.Finished(n.clone(), r)
	}
	if err := q.commit(n); err != nil {
		q.log.Error("record the outcome of an attempt; the job runs again after a restart",
			"id", j.ID, "function", j.Ref, "err", err)
		return
	}
	if finished(n.State) && n.CallbackURL != "" {
		q.callback(n, r.Body, r.Header.Get("Content-Type"), false)
	}
}

// outcome returns the running job j as attempt r leaves it.
func (q *Queue) outcome(j *Job, r Result, now time.Time) *Job {
	n := j.clone()
	n.Updated, n.LastStatus, n.LastError = now, r.StatusCode, ""
	if r.Err != nil {
		n.LastError = r.Err.Error()
	}
	switch {
	case r.Err == nil:
		n.State = StateSucceeded
	case r.Throttled:
		n.State, n.NextAt = StateQueued, now.Add(max(r.RetryAfter, minThrottleDelay))
		return n // it did not run: keep the last attempt's result
	case r.Retry && n.Attempts < n.MaxRetries: // this was attempt Attempts+1 of 1+MaxRetries
		n.State, n.NextAt = StateQueued, now.Add(q.backoff(n.Attempts+1))
	default:
		n.State = StateFailed
	}
	n.Attempts++
	n.Result, n.ResultTruncated = head(r.Body, q.opts.ResultLimit)
	n.ContentType = r.Header.Get("Content-Type")
	return n
}

// backoff returns the delay after failed attempt n (1 for the first):
// BackoffBase doubled n-1 times, at most BackoffMax, with equal jitter
// (between half of it and all of it).
func (q *Queue) backoff(n int) time.Duration {
	d := q.opts.BackoffBase
	for i := 1; i < n; i++ {
		if d >= q.opts.BackoffMax/2 {
			d = q.opts.BackoffMax
			break
		}
		d *= 2
	}
	d = min(d, q.opts.BackoffMax)
	half := d / 2
	return half + rand.N(d-half+1)
}

// head returns the first limit bytes of b (none when limit is negative),
// and whether that cut anything.
func head(b []byte, limit int) ([]byte, bool) {
	limit = max(limit, 0)
	if len(b) > limit {
		return bytes.Clone(b[:limit]), true
	}
	return bytes.Clone(b), false
}

// commit records the outcome n of a running job, sharing the commit with
// other attempts that end at the same time.
func (q *Queue) commit(n *Job) error {
	err := q.db.Batch(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		id := []byte(n.ID)
		if !has(b.state[StateRunning], id) {
			return fmt.Errorf("job %q is no longer running", n.ID)
		}
		if finished(n.State) && n.CallbackURL != "" {
			if err := b.callbacks.Put(id, []byte{}); err != nil {
				return err
			}
		}
		return b.replace(&Job{ID: n.ID, State: StateRunning}, n)
	})
	if err != nil {
		return fmt.Errorf("commit job %q: %w", n.ID, err)
	}
	q.count(StateRunning, -1)
	q.count(n.State, 1)
	return nil
}

// count adds delta to the count of jobs in state.
func (q *Queue) count(state string, delta int) {
	q.mu.Lock()
	q.counts[state] += delta
	q.mu.Unlock()
}

// pruneInterval is how often succeeded jobs past retention are deleted: a
// tenth of the retention, between a second and a minute.
func pruneInterval(retention time.Duration) time.Duration {
	return min(max(retention/10, time.Second), time.Minute)
}

// prune deletes the succeeded jobs that finished before now -
// DoneRetention, pruneBatch per transaction.
func (q *Queue) prune(now time.Time) {
	cutoff := now.Add(-q.opts.DoneRetention)
	for {
		var n int
		err := q.db.Update(func(tx *bolt.Tx) error {
			b := bucketsOf(tx)
			succeeded := b.state[StateSucceeded]
			var keys [][]byte
			c := succeeded.Cursor()
			for k, _ := c.First(); k != nil && len(keys) < pruneBatch && keyTime(k).Before(cutoff); k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
			if len(keys) == 0 {
				return errNothing
			}
			for _, k := range keys {
				id := k[8:]
				if err := errors.Join(succeeded.Delete(k), b.jobs.Delete(id), b.callbacks.Delete(id)); err != nil {
					return err
				}
			}
			n = len(keys)
			return nil
		})
		if errors.Is(err, errNothing) {
			return
		}
		if err != nil {
			q.log.Error("prune succeeded jobs", "err", err)
			return
		}
		q.count(StateSucceeded, -n)
		if n < pruneBatch {
			return
		}
	}
}
