package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

// Job is one asynchronous call: the request to replay, and (set by the
// queue) where it stands. It is stored as JSON under jobs/<ID>.
type Job struct {
	// ID is the activation id, chosen by the caller (a UUIDv7 string,
	// store.NewActivationID); unique in the queue. The function sees it as
	// the request's activation id on every attempt.
	ID        string `json:"id"`
	Namespace string `json:"namespace,omitempty"`
	// Function is the plain function name; Ref is the name the gateway
	// resolves ("hello", or "hello.team-a" in namespace team-a). Enqueue
	// derives Ref when it is empty.
	Function string `json:"function"`
	Ref      string `json:"ref"`
	// The request (Method defaults to POST, Path to "/").
	Method   string      `json:"method"`
	Path     string      `json:"path"`
	RawQuery string      `json:"raw_query,omitempty"`
	Header   http.Header `json:"header,omitempty"`
	Body     []byte      `json:"body,omitempty"`
	// CallbackURL, if set, receives the outcome (see ValidateCallbackURL).
	CallbackURL string `json:"callback_url,omitempty"`
	// MaxRetries is how many times a retryable failure is tried again:
	// 1 + MaxRetries attempts in all, at most 1 + MaxRetriesLimit.
	MaxRetries int `json:"max_retries"`
	// Source says who enqueued the job: "api", "cron:<name>",
	// "nats:<subject>".
	Source string `json:"source,omitempty"`

	// Set by the queue (Enqueue overwrites what the caller put there,
	// except NextAt, which may delay the first attempt):

	State string `json:"state"`
	// Attempts counts the attempts that returned a Result and were not
	// throttled.
	Attempts int       `json:"attempts"`
	Enqueued time.Time `json:"enqueued"`
	// NextAt is when the job may run (queued), or ran (later states).
	NextAt  time.Time `json:"next_at"`
	Updated time.Time `json:"updated"`
	// LastError and LastStatus describe the last attempt: its error ("" when
	// it succeeded) and its HTTP status.
	LastError  string `json:"last_error,omitempty"`
	LastStatus int    `json:"last_status,omitempty"`
	// Result is the head of the last attempt's response body, at most
	// Options.ResultLimit bytes; ResultTruncated says the body was longer.
	// ContentType is that response's Content-Type.
	Result          []byte `json:"result,omitempty"`
	ResultTruncated bool   `json:"result_truncated,omitempty"`
	ContentType     string `json:"content_type,omitempty"`
	// CallbackError says why the callback could not be delivered ("" when
	// it was, or is not yet known).
	CallbackError string `json:"callback_error,omitempty"`
}

// Limits of a Job.
const (
	MaxRetriesLimit = 100 // most Job.MaxRetries
	maxIDLen        = 128
	maxURLLen       = 2048
)

// clone returns a deep copy of j.
func (j *Job) clone() *Job {
	c := *j
	c.Header = j.Header.Clone()
	c.Body = bytes.Clone(j.Body)
	c.Result = bytes.Clone(j.Result)
	return &c
}

// finished reports whether state is final.
func finished(state string) bool { return state == StateSucceeded || state == StateFailed }

// prepare checks j and sets the fields the queue owns for a new job.
func (j *Job) prepare(now time.Time) error {
	switch {
	case j.ID == "":
		return errdefs.Invalidf("give each job an activation id (store.NewActivationID)", "the job has no id")
	case len(j.ID) > maxIDLen || strings.IndexFunc(j.ID, badIDRune) >= 0:
		return errdefs.Invalidf("use a UUID (store.NewActivationID)",
			"job id %.40q is not an activation id: at most %d letters, digits and . _ : -", j.ID, maxIDLen)
	case j.Function == "":
		return errdefs.Invalidf("name the function to call", "job %q names no function", j.ID)
	case j.MaxRetries < 0 || j.MaxRetries > MaxRetriesLimit:
		return errdefs.Invalidf(fmt.Sprintf("allow 0 to %d retries", MaxRetriesLimit),
			"job %q: max retries %d is out of range", j.ID, j.MaxRetries)
	}
	if j.CallbackURL != "" {
		if err := ValidateCallbackURL(j.CallbackURL); err != nil {
			return fmt.Errorf("job %q: %w", j.ID, err)
		}
	}
	j.Namespace = function.StoredNamespace(j.Namespace)
	if j.Ref == "" {
		j.Ref = function.Ref(j.Namespace, j.Function)
	}
	if j.Method == "" {
		j.Method = http.MethodPost
	}
	if j.Path == "" {
		j.Path = "/"
	}
	j.State, j.Attempts = StateQueued, 0
	j.Enqueued, j.Updated = now, now
	if j.NextAt.Before(now) {
		j.NextAt = now
	}
	j.NextAt = j.NextAt.UTC()
	j.LastError, j.LastStatus = "", 0
	j.Result, j.ResultTruncated, j.ContentType = nil, false, ""
	j.CallbackError = ""
	return nil
}

func badIDRune(r rune) bool {
	return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
		r == '.' || r == '_' || r == ':' || r == '-')
}

// ValidateCallbackURL checks a callback URL: an absolute http or https URL
// with a host. The error is an ErrInvalid with a hint, so the gateway can
// answer 400 before it enqueues anything.
func ValidateCallbackURL(s string) error {
	const hint = "give an absolute http or https URL, like https://example.com/hooks/wisp"
	if len(s) > maxURLLen {
		return errdefs.Invalidf(hint, "callback URL is longer than %d bytes", maxURLLen)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errdefs.Invalidf(hint, "callback URL %q does not parse: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return errdefs.Invalidf(hint, "callback URL %q is not an http or https URL", s)
	case u.Host == "" || u.Hostname() == "":
		return errdefs.Invalidf(hint, "callback URL %q names no host", s)
	case u.User != nil:
		return errdefs.Invalidf("send credentials in the URL's path or query instead",
			"callback URL %q holds a user name or password", s)
	}
	return nil
}

// Enqueue stores j as a new queued job and wakes a worker. It returns once
// the job is committed and fsynced: from then on the job survives a crash.
// It fills in the fields the queue owns (State, Enqueued, NextAt, ...), and
// Ref, Method and Path when they are empty. A job whose id is taken is an
// ErrConflict; a full queue (Options.MaxQueued) an ErrLimit.
func (q *Queue) Enqueue(ctx context.Context, j *Job) error {
	if j == nil {
		return errdefs.Invalidf("pass a job", "enqueue: nil job")
	}
	op := fmt.Sprintf("enqueue %q", j.ID)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := j.prepare(time.Now().UTC()); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	done, err := q.begin(ctx, op)
	if err != nil {
		return err
	}
	defer done()
	if err := q.reserve(op); err != nil {
		return err
	}
	// Concurrent Enqueues share a commit. bbolt may call the closure more
	// than once; only its last call is committed.
	err = q.db.Batch(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		if b.jobs.Get([]byte(j.ID)) != nil {
			return errdefs.New(errdefs.ErrConflict, "give each job a new activation id",
				"job %q exists already", j.ID)
		}
		return b.put(j)
	})
	if err != nil {
		q.unreserve()
		return fmt.Errorf("%s: %w", op, err)
	}
	q.poke()
	return nil
}

// reserve counts a job about to be queued, if the queue has room for it.
func (q *Queue) reserve(op string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if n := q.counts[StateQueued] + q.counts[StateRunning]; n >= q.opts.MaxQueued {
		return fmt.Errorf("%s: %w", op, errdefs.New(errdefs.ErrLimit,
			"try again later, when the queue has drained; or call the function synchronously (POST /function/<name>)",
			"the async queue is full (%d jobs waiting or running)", n))
	}
	q.counts[StateQueued]++
	return nil
}

// unreserve undoes reserve when the job was not committed.
func (q *Queue) unreserve() {
	q.count(StateQueued, -1)
}

func (q *Queue) notFound(id string) error {
	return errdefs.New(errdefs.ErrNotFound,
		fmt.Sprintf("succeeded jobs are kept for %s after they finish; the activation record keeps the outcome", q.opts.DoneRetention),
		"job %q not found", id)
}

// Get returns the job id; an unknown id is an ErrNotFound.
func (q *Queue) Get(ctx context.Context, id string) (*Job, error) {
	op := fmt.Sprintf("get job %q", id)
	done, err := q.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer done()
	var j *Job
	err = q.db.View(func(tx *bolt.Tx) error {
		var err error
		if j, err = bucketsOf(tx).job([]byte(id)); err == nil && j == nil {
			err = q.notFound(id)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return j, nil
}

// Filter selects jobs for List.
type Filter struct {
	// Namespace keeps only that namespace's jobs ("" or "default": the
	// default namespace), unless AllNamespaces is set.
	Namespace     string
	AllNamespaces bool
	// State, if set, keeps only jobs in that state.
	State string
	// Function, if set, keeps only that function's jobs (its plain name).
	Function string
	// Limit is the most jobs returned: default 50, at most 1000.
	Limit int
	// Before is a cursor: only jobs whose id sorts before it. Pass the last
	// id of a page to get the next one.
	Before string
}

// Limits of Filter.Limit.
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// List returns the jobs matching f, newest first (in id order, which is
// enqueue order for UUIDv7 ids).
func (q *Queue) List(ctx context.Context, f Filter) ([]*Job, error) {
	const op = "list jobs"
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	switch {
	case f.Limit < 0:
		return nil, fmt.Errorf("%s: %w", op, errdefs.Invalidf(
			fmt.Sprintf("use a limit between 1 and %d", MaxListLimit), "limit %d is negative", f.Limit))
	case f.Limit == 0:
		f.Limit = DefaultListLimit
	case f.Limit > MaxListLimit:
		f.Limit = MaxListLimit
	}
	if f.State != "" && !slices.Contains(states, f.State) {
		return nil, fmt.Errorf("%s: %w", op, errdefs.Invalidf(
			"use one of "+strings.Join(states, ", "), "unknown state %q", f.State))
	}
	ns := function.NamespaceOf(f.Namespace)
	match := func(j *Job) bool {
		return (f.AllNamespaces || function.NamespaceOf(j.Namespace) == ns) &&
			(f.State == "" || j.State == f.State) &&
			(f.Function == "" || j.Function == f.Function)
	}
	done, err := q.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer done()
	var out []*Job
	err = q.db.View(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		c := b.jobs.Cursor()
		var k []byte
		if f.Before == "" {
			k, _ = c.Last()
		} else if k, _ = c.Seek([]byte(f.Before)); k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for ; k != nil && len(out) < f.Limit; k, _ = c.Prev() {
			j, err := b.job(k)
			if err != nil {
				return err
			}
			if match(j) {
				out = append(out, j)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

// Redrive queues a failed job (a dead letter) again, with its attempts
// reset. An unknown job is an ErrNotFound, one that is not failed an
// ErrConflict, and a full queue an ErrLimit.
func (q *Queue) Redrive(ctx context.Context, id string) error {
	op := fmt.Sprintf("redrive job %q", id)
	done, err := q.begin(ctx, op)
	if err != nil {
		return err
	}
	defer done()
	if err := q.reserve(op); err != nil {
		return err
	}
	err = q.db.Update(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		old, err := q.deadLetter(b, id, "redriven")
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		j := *old
		j.State, j.Attempts, j.NextAt, j.Updated = StateQueued, 0, now, now
		j.CallbackError = ""
		if err := b.callbacks.Delete([]byte(id)); err != nil {
			return err
		}
		return b.replace(old, &j)
	})
	if err != nil {
		q.unreserve()
		return fmt.Errorf("%s: %w", op, err)
	}
	q.count(StateFailed, -1) // and queued +1, counted by reserve
	q.poke()
	return nil
}

// Purge deletes a failed job (a dead letter). An unknown job is an
// ErrNotFound, one that is not failed an ErrConflict.
func (q *Queue) Purge(ctx context.Context, id string) error {
	op := fmt.Sprintf("purge job %q", id)
	done, err := q.begin(ctx, op)
	if err != nil {
		return err
	}
	defer done()
	err = q.db.Update(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		old, err := q.deadLetter(b, id, "purged")
		if err != nil {
			return err
		}
		if err := b.callbacks.Delete([]byte(id)); err != nil {
			return err
		}
		if err := b.state[old.State].Delete(indexKey(old)); err != nil {
			return err
		}
		return b.jobs.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	q.count(StateFailed, -1)
	return nil
}

// deadLetter returns the failed job id, for an operation only dead
// letters allow.
func (q *Queue) deadLetter(b buckets, id, verb string) (*Job, error) {
	j, err := b.job([]byte(id))
	switch {
	case err != nil:
		return nil, err
	case j == nil:
		return nil, q.notFound(id)
	case j.State != StateFailed:
		return nil, errdefs.New(errdefs.ErrConflict, "only failed jobs (dead letters) can be "+verb,
			"job %q is %s, not failed", id, j.State)
	}
	return j, nil
}

// PurgeNamespace deletes every job of namespace ns ("" or "default": the
// default namespace) that is not running, and returns how many it deleted:
// what a removed namespace leaves must not reach one created later under
// the same name. A job running at the time finishes; its function is gone
// by then, so it fails.
func (q *Queue) PurgeNamespace(ctx context.Context, ns string) (int, error) {
	op := fmt.Sprintf("purge the jobs of namespace %q", ns)
	done, err := q.begin(ctx, op)
	if err != nil {
		return 0, err
	}
	defer done()
	ns = function.NamespaceOf(ns)
	removed := map[string]int{}
	err = q.db.Update(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		var victims []*Job
		if err := b.jobs.ForEach(func(k, v []byte) error {
			j := new(Job)
			if err := json.Unmarshal(v, j); err != nil {
				return fmt.Errorf("decode job %s: %w", k, err)
			}
			if function.NamespaceOf(j.Namespace) == ns && j.State != StateRunning {
				victims = append(victims, j)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, j := range victims {
			if err := b.state[j.State].Delete(indexKey(j)); err != nil {
				return err
			}
			if err := b.callbacks.Delete([]byte(j.ID)); err != nil {
				return err
			}
			if err := b.jobs.Delete([]byte(j.ID)); err != nil {
				return err
			}
			removed[j.State]++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	n := 0
	for state, c := range removed {
		q.count(state, -c)
		n += c
	}
	return n, nil
}

// Unfinished counts the jobs of each namespace that are queued or running
// ("" for the default namespace), read from disk: the start of a per-
// namespace count that the caller then keeps.
func (q *Queue) Unfinished(ctx context.Context) (map[string]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	out := map[string]int{}
	err := q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			var j struct {
				Namespace string `json:"namespace"`
				State     string `json:"state"`
			}
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("decode job %s: %w", k, err)
			}
			if !finished(j.State) {
				out[j.Namespace]++
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	return out, nil
}
