package queue

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Results the fake invoker gives.
var (
	ok = Result{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: []byte(`{"ok":true}`)}
	crashed   = Result{StatusCode: 502, Err: errdefs.ErrCrashed, Retry: true}
	gone      = Result{StatusCode: 404, Err: errdefs.ErrNotFound, Body: []byte("no such function")}
	throttled = Result{StatusCode: 429, Err: errdefs.ErrLimit, Throttled: true, RetryAfter: 3 * time.Second}
)

// script is a fake Invoker: it answers the attempts of each job with
// results in turn (the last one repeating), and records when it was called.
type script struct {
	results []Result

	mu    sync.Mutex
	calls map[string][]time.Time // per job id
}

func newScript(results ...Result) *script {
	return &script{results: results, calls: map[string][]time.Time{}}
}

func (s *script) InvokeAsync(_ context.Context, j *Job) Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.calls[j.ID])
	s.calls[j.ID] = append(s.calls[j.ID], time.Now())
	return s.results[min(n, len(s.results)-1)]
}

func (s *script) times(id string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.calls[id]...)
}

var _ Invoker = (*script)(nil)

// finishes records the calls of Options.Finished.
type finishes struct {
	mu   sync.Mutex
	jobs []*Job
}

func (f *finishes) hook(j *Job, _ Result) {
	f.mu.Lock()
	f.jobs = append(f.jobs, j)
	f.mu.Unlock()
}

func (f *finishes) states(id string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, j := range f.jobs {
		if j.ID == id {
			out = append(out, j.State)
		}
	}
	return out
}

func TestAttempts(t *testing.T) {
	for _, tt := range []struct {
		name       string
		maxRetries int
		results    []Result
		state      string
		attempts   int
		calls      int
		lastError  string
		result     string
	}{
		{"success", 0, []Result{ok}, StateSucceeded, 1, 1, "", `{"ok":true}`},
		{"retried until it succeeds", 3, []Result{crashed, crashed, ok}, StateSucceeded, 3, 3, "", `{"ok":true}`},
		{"retries exhausted", 2, []Result{crashed}, StateFailed, 3, 3, "function crashed", ""},
		{"not retryable fails at once", 5, []Result{gone}, StateFailed, 1, 1, "not found", "no such function"},
		{"throttled spends no attempt", 0, []Result{throttled, throttled, ok}, StateSucceeded, 1, 3, "", `{"ok":true}`},
		{"throttled, then out of attempts", 0, []Result{throttled, crashed}, StateFailed, 1, 2, "function crashed", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fin := &finishes{}
				inv := newScript(tt.results...)
				q := openQueue(t, Options{Finished: fin.hook})
				q.Start(inv)
				j := newJob("hello")
				j.MaxRetries = tt.maxRetries
				enqueue(t, q, j)
				got := waitState(t, q, j.ID, tt.state)
				if got.Attempts != tt.attempts || got.LastError != tt.lastError || string(got.Result) != tt.result {
					t.Errorf("job = attempts %d, last error %q, result %q; want %d, %q, %q",
						got.Attempts, got.LastError, got.Result, tt.attempts, tt.lastError, tt.result)
				}
				if n := len(inv.times(j.ID)); n != tt.calls {
					t.Errorf("invoked %d times, want %d", n, tt.calls)
				}
				if s := fin.states(j.ID); len(s) != 1 || s[0] != tt.state {
					t.Errorf("Finished saw %v, want one %s", s, tt.state)
				}
				if tt.state == StateSucceeded {
					wantStats(t, q, 0, 0, 1, 0)
				} else {
					wantStats(t, q, 0, 0, 0, 1)
				}
			})
		})
	}
}

func TestResultLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		big := ok
		big.Body = []byte(strings.Repeat("x", 100))
		q := openQueue(t, Options{ResultLimit: 10})
		q.Start(newScript(big))
		j := waitState(t, q, enqueue(t, q, newJob("hello")).ID, StateSucceeded)
		if string(j.Result) != "xxxxxxxxxx" || !j.ResultTruncated || j.ContentType != "application/json" || j.LastStatus != 200 {
			t.Fatalf("job = result %q truncated %v type %q status %d", j.Result, j.ResultTruncated, j.ContentType, j.LastStatus)
		}
	})
}

func TestBackoffSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inv := newScript(crashed)
		q := openQueue(t, Options{BackoffBase: time.Second, BackoffMax: 10 * time.Second})
		q.Start(inv)
		j := newJob("hello")
		j.MaxRetries = 6
		enqueue(t, q, j)
		waitState(t, q, j.ID, StateFailed)
		times := inv.times(j.ID)
		want := []time.Duration{1, 2, 4, 8, 10, 10} // seconds, before jitter
		if len(times) != len(want)+1 {
			t.Fatalf("%d attempts, want %d", len(times), len(want)+1)
		}
		for i, d := range want {
			d *= time.Second
			// Equal jitter: between half the delay and all of it (plus the
			// commit's batching delay, in fake time).
			if gap := times[i+1].Sub(times[i]); gap < d/2 || gap > d+50*time.Millisecond {
				t.Errorf("retry %d came %s after attempt %d; want between %s and %s", i+1, gap, i+1, d/2, d)
			}
		}
	})
}

func TestBackoffJitter(t *testing.T) {
	q := &Queue{opts: Options{BackoffBase: time.Second, BackoffMax: time.Minute}}
	for n, d := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 6: 32 * time.Second, 7: time.Minute, 1000: time.Minute} {
		lo, hi := d, time.Duration(0)
		for range 1000 {
			b := q.backoff(n)
			lo, hi = min(lo, b), max(hi, b)
		}
		if lo < d/2 || hi > d || lo > d*6/10 || hi < d*9/10 {
			t.Errorf("backoff(%d) ranged over [%s, %s]; want [%s, %s], spread out", n, lo, hi, d/2, d)
		}
	}
}

func TestThrottleDelay(t *testing.T) {
	for _, tt := range []struct {
		name       string
		retryAfter time.Duration
		want       time.Duration
	}{
		{"as told", 3 * time.Second, 3 * time.Second},
		{"at least the floor", 0, minThrottleDelay},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				th := throttled
				th.RetryAfter = tt.retryAfter
				inv := newScript(th, ok)
				q := openQueue(t, Options{})
				q.Start(inv)
				j := waitState(t, q, enqueue(t, q, newJob("hello")).ID, StateSucceeded)
				times := inv.times(j.ID)
				if gap := times[1].Sub(times[0]); gap < tt.want || gap > tt.want+50*time.Millisecond {
					t.Fatalf("throttled job ran again after %s, want %s", gap, tt.want)
				}
			})
		})
	}
}

func TestRedriveAndPurge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fin := &finishes{}
		inv := newScript(gone, ok)
		q := openQueue(t, Options{Finished: fin.hook})
		ctx := context.Background()

		queued := enqueue(t, q, newJob("hello"))
		for _, err := range []error{q.Redrive(ctx, queued.ID), q.Purge(ctx, queued.ID)} {
			if !errors.Is(err, errdefs.ErrConflict) || errdefs.Hint(err) == "" {
				t.Fatalf("Redrive or Purge of a queued job = %v, want ErrConflict with a hint", err)
			}
		}
		for _, err := range []error{q.Redrive(ctx, "unknown"), q.Purge(ctx, "unknown")} {
			if !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("Redrive or Purge of an unknown job = %v, want ErrNotFound", err)
			}
		}

		q.Start(inv)
		j := waitState(t, q, queued.ID, StateFailed)
		if j.Attempts != 1 {
			t.Fatalf("attempts %d", j.Attempts)
		}
		wantStats(t, q, 0, 0, 0, 1)
		if err := q.Redrive(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
		j = waitState(t, q, j.ID, StateSucceeded)
		if j.Attempts != 1 || j.LastError != "" {
			t.Fatalf("redriven job: attempts %d, last error %q; want 1 and none", j.Attempts, j.LastError)
		}
		if s := fin.states(j.ID); len(s) != 2 || s[0] != StateFailed || s[1] != StateSucceeded {
			t.Fatalf("Finished saw %v; want failed, then succeeded", s)
		}
		wantStats(t, q, 0, 0, 1, 0)
		if err := q.Purge(ctx, j.ID); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("Purge of a succeeded job = %v, want ErrConflict", err)
		}

		dead := enqueue(t, q, newJob("hello"))
		inv.mu.Lock()
		inv.results = []Result{gone}
		inv.mu.Unlock()
		waitState(t, q, dead.ID, StateFailed)
		if err := q.Purge(ctx, dead.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Get(ctx, dead.ID); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Get after Purge = %v, want ErrNotFound", err)
		}
		wantStats(t, q, 0, 0, 1, 0)
	})
}

func TestRedriveFullQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := openQueue(t, Options{MaxQueued: 1})
		q.Start(newScript(gone))
		dead := waitState(t, q, enqueue(t, q, newJob("hello")).ID, StateFailed)
		q.Close(context.Background())
		q = openQueue(t, Options{MaxQueued: 1}, q.path) // not started: what is enqueued stays
		enqueue(t, q, newJob("hello"))
		if err := q.Redrive(context.Background(), dead.ID); !errors.Is(err, errdefs.ErrLimit) {
			t.Fatalf("Redrive into a full queue = %v, want ErrLimit", err)
		}
		wantStats(t, q, 1, 0, 0, 1)
	})
}

func TestPrune(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := openQueue(t, Options{DoneRetention: time.Minute})
		inv := newScript(ok)
		q.Start(inv)
		done := waitState(t, q, enqueue(t, q, newJob("hello")).ID, StateSucceeded)
		inv.mu.Lock()
		inv.results = []Result{gone}
		inv.mu.Unlock()
		dead := waitState(t, q, enqueue(t, q, newJob("hello")).ID, StateFailed)

		time.Sleep(30 * time.Second)
		get(t, q, done.ID) // still kept
		time.Sleep(2 * time.Minute)
		if _, err := q.Get(context.Background(), done.ID); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Get of a succeeded job past retention = %v, want ErrNotFound", err)
		}
		get(t, q, dead.ID) // dead letters stay
		wantStats(t, q, 0, 0, 0, 1)
	})
}

func TestDelayedJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inv := newScript(ok)
		q := openQueue(t, Options{})
		q.Start(inv)
		start := time.Now()
		j := newJob("hello")
		j.NextAt = start.Add(time.Hour)
		enqueue(t, q, j)
		time.Sleep(time.Hour - time.Second)
		if n := len(inv.times(j.ID)); n != 0 {
			t.Fatal("the job ran before its NextAt")
		}
		waitState(t, q, j.ID, StateSucceeded)
		if at := inv.times(j.ID)[0]; at.Before(j.NextAt) || at.After(j.NextAt.Add(time.Second)) {
			t.Fatalf("ran %s after enqueue; want at NextAt, an hour after", at.Sub(start))
		}
	})
}

func TestWorkersBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		running, most := 0, 0
		inv := invokerFunc(func(context.Context, *Job) Result {
			mu.Lock()
			running++
			most = max(most, running)
			mu.Unlock()
			time.Sleep(time.Second)
			mu.Lock()
			running--
			mu.Unlock()
			return ok
		})
		q := openQueue(t, Options{Workers: 3})
		for range 10 {
			enqueue(t, q, newJob("hello"))
		}
		q.Start(inv)
		waitFor(t, time.Hour, "all jobs to succeed", func() bool { return q.Stats()[StateSucceeded] == 10 })
		if most != 3 {
			t.Fatalf("at most %d attempts ran at once; want Workers, 3", most)
		}
		wantStats(t, q, 0, 0, 10, 0)
	})
}

func TestClose(t *testing.T) {
	t.Run("waits for attempts in flight", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			release := make(chan struct{})
			started := make(chan struct{})
			inv := invokerFunc(func(context.Context, *Job) Result {
				close(started)
				<-release
				return ok
			})
			path := filepath.Join(t.TempDir(), "queue.db")
			q := openQueue(t, Options{}, path)
			q.Start(inv)
			j := enqueue(t, q, newJob("hello"))
			<-started
			closed := make(chan error)
			go func() { closed <- q.Close(context.Background()) }()
			synctest.Wait()
			select {
			case err := <-closed:
				t.Fatalf("Close returned (%v) while an attempt ran", err)
			default:
			}
			close(release)
			if err := <-closed; err != nil {
				t.Fatal(err)
			}
			q = openQueue(t, Options{}, path)
			if got := get(t, q, j.ID); got.State != StateSucceeded {
				t.Fatalf("after Close, job is %s; want succeeded", got.State)
			}
		})
	})
	t.Run("cancels attempts at its deadline; they run again after Open", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fin := &finishes{}
			started := make(chan struct{})
			inv := invokerFunc(func(ctx context.Context, _ *Job) Result {
				close(started)
				<-ctx.Done()
				return Result{Err: ctx.Err(), Retry: true}
			})
			path := filepath.Join(t.TempDir(), "queue.db")
			q := openQueue(t, Options{Finished: fin.hook}, path)
			q.Start(inv)
			j := enqueue(t, q, newJob("hello"))
			<-started
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := q.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Close = %v, want DeadlineExceeded", err)
			}
			if len(fin.jobs) != 0 {
				t.Fatal("Finished was called for a cancelled attempt")
			}
			q = openQueue(t, Options{Finished: fin.hook}, path)
			wantStats(t, q, 1, 0, 0, 0)
			if got := get(t, q, j.ID); got.State != StateQueued || got.Attempts != 0 {
				t.Fatalf("after reopening, job is %s with %d attempts; want queued with 0", got.State, got.Attempts)
			}
			q.Start(newScript(ok))
			waitState(t, q, j.ID, StateSucceeded)
		})
	})
	t.Run("twice, and before Start", func(t *testing.T) {
		q := openQueue(t, Options{})
		for range 2 {
			if err := q.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		q.Start(newScript(ok)) // does nothing
		if _, err := q.Get(context.Background(), "x"); !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("Get after Close = %v, want ErrUnavailable", err)
		}
	})
}
