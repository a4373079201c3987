package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openQueue opens a queue in a new temporary directory (or at path, when
// given) and closes it when the test ends.
func openQueue(t *testing.T, opts Options, path ...string) *Queue {
	t.Helper()
	p := filepath.Join(t.TempDir(), "queue.db")
	if len(path) > 0 {
		p = path[0]
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	q, err := Open(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	return q
}

func newJob(fn string) *Job {
	return &Job{ID: uuid.Must(uuid.NewV7()).String(), Function: fn, Body: []byte("hello"), Source: "api"}
}

func enqueue(t *testing.T, q *Queue, j *Job) *Job {
	t.Helper()
	if err := q.Enqueue(context.Background(), j); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return j
}

func get(t *testing.T, q *Queue, id string) *Job {
	t.Helper()
	j, err := q.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return j
}

// waitFor polls cond every 5ms (of fake time, in a bubble) until it holds.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: still waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitState waits until job id is in state.
func waitState(t *testing.T, q *Queue, id, state string) *Job {
	t.Helper()
	var j *Job
	waitFor(t, time.Hour, "job "+id+" to be "+state, func() bool {
		j = get(t, q, id)
		return j.State == state
	})
	return j
}

// invokerFunc adapts a function to Invoker.
type invokerFunc func(ctx context.Context, j *Job) Result

func (f invokerFunc) InvokeAsync(ctx context.Context, j *Job) Result { return f(ctx, j) }

var _ Invoker = invokerFunc(nil)

func wantStats(t *testing.T, q *Queue, queued, running, succeeded, failed int) {
	t.Helper()
	want := map[string]int{StateQueued: queued, StateRunning: running, StateSucceeded: succeeded, StateFailed: failed}
	if got := q.Stats(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Stats() = %v, want %v", got, want)
	}
}

func TestEnqueueGetListStats(t *testing.T) {
	q := openQueue(t, Options{})
	a := enqueue(t, q, newJob("hello"))
	b := enqueue(t, q, &Job{ID: uuid.Must(uuid.NewV7()).String(), Namespace: "team-a", Function: "hello",
		Method: http.MethodPut, Path: "/x", RawQuery: "a=1", Header: http.Header{"X-A": {"1"}}, MaxRetries: 3})
	c := enqueue(t, q, newJob("other"))

	got := get(t, q, b.ID)
	if got.State != StateQueued || got.Ref != "hello.team-a" || got.Method != http.MethodPut || got.Path != "/x" ||
		got.RawQuery != "a=1" || got.Header.Get("X-A") != "1" || got.MaxRetries != 3 || got.Attempts != 0 ||
		got.Enqueued.IsZero() || got.NextAt.Before(got.Enqueued) {
		t.Fatalf("Get(b) = %+v", got)
	}
	if got := get(t, q, a.ID); got.Ref != "hello" || got.Method != http.MethodPost || got.Path != "/" ||
		string(got.Body) != "hello" || got.Source != "api" {
		t.Fatalf("Get(a) = %+v; want the defaults filled in", got)
	}
	if _, err := q.Get(context.Background(), "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
	}
	wantStats(t, q, 3, 0, 0, 0)

	ids := func(js []*Job) []string {
		var out []string
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}
	for _, tt := range []struct {
		name string
		f    Filter
		want []string
	}{
		{"default namespace, newest first", Filter{}, []string{c.ID, a.ID}},
		{"default by name", Filter{Namespace: "default"}, []string{c.ID, a.ID}},
		{"one namespace", Filter{Namespace: "team-a"}, []string{b.ID}},
		{"all namespaces", Filter{AllNamespaces: true}, []string{c.ID, b.ID, a.ID}},
		{"function", Filter{AllNamespaces: true, Function: "hello"}, []string{b.ID, a.ID}},
		{"state", Filter{AllNamespaces: true, State: StateQueued}, []string{c.ID, b.ID, a.ID}},
		{"no match", Filter{AllNamespaces: true, State: StateFailed}, nil},
		{"limit", Filter{AllNamespaces: true, Limit: 2}, []string{c.ID, b.ID}},
		{"next page", Filter{AllNamespaces: true, Limit: 2, Before: b.ID}, []string{a.ID}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			js, err := q.List(context.Background(), tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(js); !slices.Equal(got, tt.want) {
				t.Fatalf("List(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}
	for _, f := range []Filter{{State: "sleeping"}, {Limit: -1}} {
		if _, err := q.List(context.Background(), f); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("List(%+v) = %v, want ErrInvalid", f, err)
		}
	}
}

func TestEnqueueRejects(t *testing.T) {
	q := openQueue(t, Options{MaxQueued: 2})
	taken := enqueue(t, q, newJob("hello"))
	for _, tt := range []struct {
		name string
		job  *Job
		want error
	}{
		{"duplicate id", &Job{ID: taken.ID, Function: "hello"}, errdefs.ErrConflict},
		{"no id", &Job{Function: "hello"}, errdefs.ErrInvalid},
		{"id with a slash", &Job{ID: "a/b", Function: "hello"}, errdefs.ErrInvalid},
		{"no function", &Job{ID: "x1"}, errdefs.ErrInvalid},
		{"negative retries", &Job{ID: "x2", Function: "hello", MaxRetries: -1}, errdefs.ErrInvalid},
		{"too many retries", &Job{ID: "x3", Function: "hello", MaxRetries: MaxRetriesLimit + 1}, errdefs.ErrInvalid},
		{"bad callback", &Job{ID: "x4", Function: "hello", CallbackURL: "ftp://example.com"}, errdefs.ErrInvalid},
		{"nil", nil, errdefs.ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := q.Enqueue(context.Background(), tt.job); !errors.Is(err, tt.want) {
				t.Fatalf("Enqueue = %v, want %v", err, tt.want)
			}
		})
	}
	wantStats(t, q, 1, 0, 0, 0)

	enqueue(t, q, newJob("hello"))
	err := q.Enqueue(context.Background(), newJob("hello"))
	if !errors.Is(err, errdefs.ErrLimit) || errdefs.Hint(err) == "" {
		t.Fatalf("Enqueue on a full queue = %v (hint %q), want ErrLimit with a hint", err, errdefs.Hint(err))
	}
	wantStats(t, q, 2, 0, 0, 0)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Enqueue(ctx, newJob("hello")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Enqueue with a cancelled ctx = %v", err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(context.Background(), newJob("hello")); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Enqueue after Close = %v, want ErrUnavailable", err)
	}
}

func TestConcurrentEnqueues(t *testing.T) {
	q := openQueue(t, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			// Every id twice: one of each pair must be refused.
			errs <- q.Enqueue(context.Background(), &Job{ID: "job-" + strconv.Itoa(i/2), Function: "f"})
		})
	}
	wg.Wait()
	close(errs)
	var ok, conflicts int
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, errdefs.ErrConflict):
			conflicts++
		default:
			t.Fatal(err)
		}
	}
	if ok != 100 || conflicts != 100 {
		t.Fatalf("%d enqueued, %d conflicts; want 100 and 100", ok, conflicts)
	}
	wantStats(t, q, 100, 0, 0, 0)
}

func TestValidateCallbackURL(t *testing.T) {
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"https://example.com/hook", true},
		{"http://10.0.0.1:8080/hook?x=1", true},
		{"http://[::1]:9/", true},
		{"", false},
		{"/relative", false},
		{"example.com/hook", false},
		{"ftp://example.com/", false},
		{"https://", false},
		{"http://:80/", false},
		{"https://user:pass@example.com/", false},
		{"http://exa mple.com/", false},
		{"https://example.com/" + string(make([]byte, maxURLLen)), false},
	} {
		err := ValidateCallbackURL(tt.url)
		if tt.ok != (err == nil) {
			t.Errorf("ValidateCallbackURL(%.40q) = %v, want ok=%v", tt.url, err, tt.ok)
		}
		if err != nil && (!errors.Is(err, errdefs.ErrInvalid) || errdefs.Hint(err) == "") {
			t.Errorf("ValidateCallbackURL(%.40q) = %v: want ErrInvalid with a hint", tt.url, err)
		}
	}
}

func TestOpen(t *testing.T) {
	t.Run("reopens with the same jobs", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "queue.db")
		q := openQueue(t, Options{}, path)
		j := enqueue(t, q, newJob("hello"))
		if err := q.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		q = openQueue(t, Options{}, path)
		if got := get(t, q, j.ID); got.State != StateQueued {
			t.Fatalf("after reopening, job is %s", got.State)
		}
		wantStats(t, q, 1, 0, 0, 0)
	})
	t.Run("refuses a newer schema", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "queue.db")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			return b.Put(keyVersion, []byte(strconv.Itoa(schemaVersion+1)))
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if _, err := Open(path, Options{}); !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("Open = %v, want ErrUnavailable", err)
		}
	})
	t.Run("one process at a time", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "queue.db")
			openQueue(t, Options{}, path)
			if _, err := Open(path, Options{}); !errors.Is(err, errdefs.ErrUnavailable) || errdefs.Hint(err) == "" {
				t.Fatalf("second Open = %v, want ErrUnavailable with a hint", err)
			}
		})
	})
	t.Run("no path", func(t *testing.T) {
		if _, err := Open("", Options{}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("Open(\"\") = %v", err)
		}
	})
}

func TestPurgeNamespace(t *testing.T) {
	ctx := context.Background()
	q, err := Open(filepath.Join(t.TempDir(), "q.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close(ctx)
	for i, ns := range []string{"team-a", "team-a", "", "team-b"} {
		if err := q.Enqueue(ctx, &Job{ID: fmt.Sprintf("j%d", i), Namespace: ns, Function: "f"}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := q.PurgeNamespace(ctx, "team-a")
	if err != nil || n != 2 {
		t.Fatalf("PurgeNamespace = %d, %v; want 2", n, err)
	}
	for id, want := range map[string]bool{"j0": false, "j1": false, "j2": true, "j3": true} {
		if _, err := q.Get(ctx, id); (err == nil) != want {
			t.Errorf("job %s after the purge: %v", id, err)
		}
	}
	if got := q.Stats()[StateQueued]; got != 2 {
		t.Errorf("queued count %d after the purge, want 2", got)
	}
	counts, err := q.Unfinished(ctx)
	if err != nil || len(counts) != 2 || counts[""] != 1 || counts["team-b"] != 1 {
		t.Errorf("Unfinished = %v, %v; want one each in the default namespace and team-b", counts, err)
	}
}
