package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

// Activation statuses.
const (
	StatusSuccess  = "success"  // the function returned a response
	StatusError    = "error"    // the function raised or returned an error
	StatusTimeout  = "timeout"  // the call ran past the function's timeout
	StatusCrashed  = "crashed"  // the instance died (crash, OOM kill)
	StatusRejected = "rejected" // refused before running (queue full, too large)
)

var statuses = []string{StatusSuccess, StatusError, StatusTimeout, StatusCrashed, StatusRejected}

// Activation is the record of one call. It is stored as JSON under
// activations/<ID>; ID, Namespace and Function come first in the encoding,
// which pruning relies on to read the function cheaply.
type Activation struct {
	// ID is a UUIDv7 (NewActivationID), so ordering IDs orders calls by
	// start time.
	ID        string `json:"id"`
	Namespace string `json:"namespace,omitempty"`
	// Function is the function's reference (function.Ref: "name" in the
	// default namespace, "name.namespace" in another).
	Function   string    `json:"function"`
	Version    int64     `json:"version"`
	Status     string    `json:"status"`
	StatusCode int       `json:"status_code"`
	ColdStart  bool      `json:"cold_start"`
	InstanceID string    `json:"instance_id,omitempty"`
	Start      time.Time `json:"start"`
	DurationMs float64   `json:"duration_ms"`
	// Timings holds the milliseconds spent in each stage ("queue",
	// "cold_start", "run", ...).
	// EnergyJ is the call's estimated energy in joules (internal/meter: its
	// execution time × its function's execution energy per second in the
	// last measured window), and EnergySource where that came from (rapl,
	// perf, model).
	EnergyJ      float64 `json:"energy_j,omitempty"`
	EnergySource string  `json:"energy_source,omitempty"`
	// CacheHit says the call was answered from the result cache, without
	// running the function.
	CacheHit bool `json:"cache_hit,omitempty"`
	// Parent is the activation of the sequence this call was a step of;
	// Children are a sequence's steps' activations, in order.
	Parent string `json:"parent,omitempty"`
	// State, Attempts and Source are set for asynchronous calls: State is
	// queued, running, succeeded or failed (a dead letter), Attempts how
	// many times the call ran, Source who made it (api, cron:NAME,
	// nats:SUBJECT).
	State    string             `json:"state,omitempty"`
	Attempts int                `json:"attempts,omitempty"`
	Source   string             `json:"source,omitempty"`
	Children []string           `json:"children,omitempty"`
	Timings  map[string]float64 `json:"timings,omitempty"`
	Error    string             `json:"error,omitempty"`
	Hint     string             `json:"hint,omitempty"`
	// Logs holds the tail of the instance's output during the call, at
	// most Options.LogLimit bytes; LogsTruncated says earlier output was
	// dropped.
	Logs          string `json:"logs,omitempty"`
	LogsTruncated bool   `json:"logs_truncated,omitempty"`
	// Result holds the head of the response body, at most
	// Options.ResultLimit bytes.
	Result          []byte `json:"result,omitempty"`
	ResultTruncated bool   `json:"result_truncated,omitempty"`
	RequestBytes    int64  `json:"request_bytes"`
	ResponseBytes   int64  `json:"response_bytes"`
}

// maxIDLen bounds an activation id (a UUID is 36 bytes).
const maxIDLen = 128

func (a *Activation) clone() *Activation {
	c := *a
	if a.Timings != nil {
		c.Timings = make(map[string]float64, len(a.Timings))
		for k, v := range a.Timings {
			c.Timings[k] = v
		}
	}
	c.Result = bytes.Clone(a.Result)
	return &c
}

// NewActivationID returns a new activation id: a UUIDv7 string, which sorts
// by creation time (monotonic within this process).
func NewActivationID() string { return uuid.Must(uuid.NewV7()).String() }

// activationQueue holds activations between RecordActivation and their
// commit, and the writer goroutine that commits them.
type activationQueue struct {
	s *Store

	// mu guards everything below it.
	mu       sync.Mutex
	notFull  *sync.Cond                // signalled when buf is taken or the queue closes
	buf      []*Activation             // waiting, in arrival order
	byID     map[string]*Activation    // waiting or being written: latest record per id
	enqueued uint64                    // records ever queued
	written  uint64                    // records ever committed (or failed): the writer's progress
	urgent   bool                      // Flush is waiting: do not wait for FlushInterval
	closed   bool                      // Close was called: refuse new records
	lastErr  error                     // the last failed batch, reported by Flush and Close
	batchEnd chan struct{}             // closed and replaced after each batch
	write    func([]*Activation) error // commits a batch (replaced in benchmarks)

	wake    chan struct{} // cap 1: buf went from empty to not empty
	full    chan struct{} // cap 1: write now (a batch is full, Flush, Close)
	stopped chan struct{} // closed when the writer returns
}

func newActivationQueue(s *Store) *activationQueue {
	q := &activationQueue{
		s:        s,
		byID:     map[string]*Activation{},
		batchEnd: make(chan struct{}),
		wake:     make(chan struct{}, 1),
		full:     make(chan struct{}, 1),
		stopped:  make(chan struct{}),
	}
	q.write = s.writeActivations
	q.notFull = sync.NewCond(&q.mu)
	go q.run()
	return q
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// RecordActivation queues a for writing and returns at once, unless the
// queue is full (Options.QueueSize), in which case it blocks until the
// writer catches up: records are never dropped for speed. An empty ID is
// filled in with NewActivationID. Logs and Result are cut to the limits
// here, so GetActivation returns the record as it will be stored.
//
// The store takes ownership of a: do not modify it (or its Result and
// Timings) afterwards. To update a record, record a new Activation with
// the same ID; the newest wins.
func (s *Store) RecordActivation(a *Activation) {
	if a == nil {
		return
	}
	if a.ID == "" {
		a.ID = NewActivationID()
	}
	s.truncate(a)
	q := s.acts
	q.mu.Lock()
	for len(q.buf) >= s.opts.QueueSize && !q.closed {
		q.notFull.Wait()
	}
	if q.closed {
		q.mu.Unlock()
		s.opts.Logger.Warn("activation record dropped: the store is closed", "activation", a.ID, "function", a.Function)
		return
	}
	q.buf = append(q.buf, a)
	q.byID[a.ID] = a
	q.enqueued++
	n := len(q.buf)
	q.mu.Unlock()
	if n == 1 {
		signal(q.wake)
	}
	if n >= s.opts.BatchSize {
		signal(q.full)
	}
}

// truncate cuts a.Logs to its tail and a.Result to its head, copying what
// is kept so the caller's large buffers are not held.
func (s *Store) truncate(a *Activation) {
	if limit := max(s.opts.LogLimit, 0); len(a.Logs) > limit {
		cut := len(a.Logs) - limit
		for cut < len(a.Logs) && !utf8.RuneStart(a.Logs[cut]) {
			cut++
		}
		a.Logs = strings.Clone(a.Logs[cut:])
		a.LogsTruncated = true
	}
	if limit := max(s.opts.ResultLimit, 0); len(a.Result) > limit {
		a.Result = bytes.Clone(a.Result[:limit])
		a.ResultTruncated = true
	}
}

// run is the writer goroutine.
func (q *activationQueue) run() {
	defer close(q.stopped)
	opts := q.s.opts
	timer := time.NewTimer(opts.FlushInterval)
	timer.Stop()
	for {
		q.mu.Lock()
		n, closed, urgent := len(q.buf), q.closed, q.urgent
		q.mu.Unlock()
		if n == 0 {
			if closed {
				return
			}
			select {
			case <-q.wake:
			case <-q.full:
			}
			continue
		}
		if n < opts.BatchSize && !closed && !urgent {
			// Gather a batch: one transaction (and fsync) per interval.
			timer.Reset(opts.FlushInterval)
			select {
			case <-timer.C:
			case <-q.full:
				timer.Stop()
			}
		}
		q.mu.Lock()
		batch := q.buf
		q.buf = make([]*Activation, 0, min(len(batch), opts.QueueSize))
		q.urgent = false
		seq := q.enqueued
		write := q.write
		q.notFull.Broadcast()
		q.mu.Unlock()

		err := write(batch)
		if err != nil {
			opts.Logger.Error("activation records lost: writing a batch failed",
				"records", len(batch), "error", err)
		}
		q.mu.Lock()
		for _, a := range batch {
			if q.byID[a.ID] == a {
				delete(q.byID, a.ID)
			}
		}
		q.written = seq
		if err != nil {
			q.lastErr = err
		}
		close(q.batchEnd)
		q.batchEnd = make(chan struct{})
		q.mu.Unlock()
	}
}

// wait blocks until every record queued before the call is committed and
// returns (and clears) the last write error.
func (q *activationQueue) wait(ctx context.Context) error {
	q.mu.Lock()
	target := q.enqueued
	for q.written < target {
		q.urgent = true
		ch := q.batchEnd
		q.mu.Unlock()
		signal(q.full)
		select {
		case <-ch:
		case <-q.stopped:
		case <-ctx.Done():
			return ctx.Err()
		}
		q.mu.Lock()
		if q.written < target && isClosed(q.stopped) {
			break
		}
	}
	err := q.lastErr
	q.lastErr = nil
	q.mu.Unlock()
	return err
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (q *activationQueue) close() error {
	q.mu.Lock()
	q.closed = true
	q.notFull.Broadcast()
	q.mu.Unlock()
	signal(q.full)
	<-q.stopped
	q.mu.Lock()
	defer q.mu.Unlock()
	err := q.lastErr
	q.lastErr = nil
	return err
}

// Flush waits until every activation recorded before the call is
// committed. It returns the error of a batch that failed since the last
// Flush (its records are lost; the writer logs them too).
func (s *Store) Flush(ctx context.Context) error {
	if err := s.acts.wait(ctx); err != nil {
		return fmt.Errorf("flush activations: %w", err)
	}
	return nil
}

func idxKey(fn, id string) []byte {
	k := make([]byte, 0, len(fn)+1+len(id))
	k = append(k, fn...)
	k = append(k, 0)
	return append(k, id...)
}

var functionKey = []byte(`"function":"`)

// functionOf reads the "function" field of an encoded Activation, which
// comes near the start, without decoding the rest. The first `"function":"`
// in the document is the key: inside a string value every quote is
// escaped, so that sequence cannot occur there.
func functionOf(v []byte) string {
	if i := bytes.Index(v[:min(len(v), 512)], functionKey); i >= 0 {
		rest := v[i+len(functionKey):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 && bytes.IndexByte(rest[:j], '\\') < 0 {
			return string(rest[:j])
		}
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return ""
		}
		if k == "function" {
			t, _ := dec.Token()
			s, _ := t.(string)
			return s
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}

// maxEncBuf bounds the encoding buffer writeActivations keeps between
// batches.
const maxEncBuf = 4 << 20

// writeActivations commits a batch in one transaction and prunes the
// oldest records beyond the retention.
func (s *Store) writeActivations(batch []*Activation) error {
	buf := s.encBuf[:0]
	defer func() {
		// bbolt has copied the values into its pages by the time Update
		// returns, so the buffer serves the next batch (unless a burst of
		// large records made it big).
		if cap(buf) <= maxEncBuf {
			s.encBuf = buf[:0]
		}
	}()
	return s.db.Update(func(tx *bolt.Tx) error {
		acts := tx.Bucket(bucketActivations)
		acts.FillPercent = 0.9 // keys mostly arrive in order
		idx := tx.Bucket(bucketActByFn)
		meta := tx.Bucket(bucketMeta)
		count, err := getInt(meta, keyActivationCount)
		if err != nil {
			return err
		}
		// last is the greatest id in the bucket: a record with a greater
		// one is new (ids are UUIDv7, increasing), so it needs no lookup.
		last, _ := acts.Cursor().Last()
		last = bytes.Clone(last)
		for _, a := range batch {
			if a.ID == "" || len(a.ID) > maxIDLen {
				s.opts.Logger.Error("activation record dropped: bad id", "id", truncate(a.ID), "function", a.Function)
				continue
			}
			// bbolt keeps values until the commit: each record is a slice
			// of the batch's buffer (an old array stays valid when it grows).
			n := len(buf)
			buf = a.appendJSON(buf)
			v := buf[n:len(buf):len(buf)]
			key := []byte(a.ID)
			if bytes.Compare(key, last) > 0 {
				count++
				last = key
			} else if old := acts.Get(key); old != nil {
				if fn := functionOf(old); fn != a.Function {
					if err := idx.Delete(idxKey(fn, a.ID)); err != nil {
						return err
					}
				}
			} else {
				count++
			}
			if err := acts.Put(key, v); err != nil {
				return fmt.Errorf("put activation %s: %w", a.ID, err)
			}
			if err := idx.Put(idxKey(a.Function, a.ID), []byte{}); err != nil {
				return fmt.Errorf("index activation %s: %w", a.ID, err)
			}
		}
		if excess := count - int64(s.opts.ActivationRetention); excess > 0 {
			type victim struct{ id, fn string }
			victims := make([]victim, 0, excess)
			c := acts.Cursor()
			for k, v := c.First(); k != nil && int64(len(victims)) < excess; k, v = c.Next() {
				victims = append(victims, victim{string(k), functionOf(v)})
			}
			for _, vi := range victims {
				if err := acts.Delete([]byte(vi.id)); err != nil {
					return err
				}
				if err := idx.Delete(idxKey(vi.fn, vi.id)); err != nil {
					return err
				}
			}
			count -= int64(len(victims))
		}
		return putInt(meta, keyActivationCount, count)
	})
}

func activationNotFound(id string) error {
	return errdefs.New(errdefs.ErrNotFound,
		"only the newest records are kept (store.activation_retention); wisp activations lists them",
		"activation %q not found", id)
}

// GetActivation returns the activation id, including one still queued for
// writing (a client that got X-Wisp-Activation-Id may fetch it at once).
func (s *Store) GetActivation(ctx context.Context, id string) (*Activation, error) {
	op := fmt.Sprintf("get activation %q", id)
	if err := live(ctx, op); err != nil {
		return nil, err
	}
	q := s.acts
	q.mu.Lock()
	if a, ok := q.byID[id]; ok {
		c := a.clone()
		q.mu.Unlock()
		return c, nil
	}
	q.mu.Unlock()
	// Not queued: committed before we looked (the writer removes records
	// from byID only after their commit), or unknown.
	var a *Activation
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketActivations).Get([]byte(id))
		if v == nil {
			return activationNotFound(id)
		}
		a = new(Activation)
		return json.Unmarshal(v, a)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return a, nil
}

// ActivationFilter selects activations for ListActivations.
type ActivationFilter struct {
	// Function, if set, keeps only that function's activations (its
	// reference).
	Function string
	// Namespace, if set, keeps only that namespace's activations
	// ("default" for the default namespace).
	Namespace string
	// Limit is the most records returned: default 50, at most 1000.
	Limit int
	// Before is a cursor: only activations older than this id. Pass the
	// last id of a page to get the next one.
	Before string
	// Status, if set, keeps only activations with that status.
	Status string
}

// Limits of ActivationFilter.Limit.
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// ListActivations returns activations matching f, newest first, including
// those still queued for writing.
func (s *Store) ListActivations(ctx context.Context, f ActivationFilter) ([]*Activation, error) {
	const op = "list activations"
	if err := live(ctx, op); err != nil {
		return nil, err
	}
	switch {
	case f.Limit < 0:
		return nil, errdefs.Invalidf("use a limit between 1 and 1000", "%s: limit %d is negative", op, f.Limit)
	case f.Limit == 0:
		f.Limit = DefaultListLimit
	case f.Limit > MaxListLimit:
		f.Limit = MaxListLimit
	}
	if f.Status != "" && !contains(statuses, f.Status) {
		return nil, errdefs.Invalidf("use "+strings.Join(statuses, ", "), "%s: unknown status %q", op, f.Status)
	}
	if f.Before != "" {
		if _, err := uuid.Parse(f.Before); err != nil {
			return nil, errdefs.Invalidf("pass the id of the last activation of the previous page",
				"%s: before %q is not an activation id", op, f.Before)
		}
	}
	match := func(a *Activation) bool {
		return (f.Function == "" || a.Function == f.Function) &&
			(f.Namespace == "" || function.NamespaceOf(a.Namespace) == f.Namespace) &&
			(f.Status == "" || a.Status == f.Status) &&
			(f.Before == "" || a.ID < f.Before)
	}

	// Queued records first: they are newer than their committed versions.
	var out []*Activation
	queued := map[string]bool{}
	q := s.acts
	q.mu.Lock()
	for id, a := range q.byID {
		queued[id] = true
		if match(a) {
			out = append(out, a.clone())
		}
	}
	q.mu.Unlock()

	err := s.db.View(func(tx *bolt.Tx) error {
		acts := tx.Bucket(bucketActivations)
		found := 0
		take := func(id, v []byte) (bool, error) {
			if v == nil || queued[string(id)] {
				return true, nil
			}
			a := new(Activation)
			if err := json.Unmarshal(v, a); err != nil {
				return false, fmt.Errorf("decode activation %s: %w", id, err)
			}
			if match(a) {
				out = append(out, a)
				found++
			}
			return found < f.Limit, nil
		}
		if f.Function == "" {
			c := acts.Cursor()
			k, v := seekBefore(c, []byte(f.Before), f.Before == "")
			for ; k != nil; k, v = c.Prev() {
				more, err := take(k, v)
				if err != nil || !more {
					return err
				}
			}
			return nil
		}
		prefix := idxKey(f.Function, "")
		start := idxKey(f.Function, f.Before)
		if f.Before == "" {
			start = append(prefix[:len(prefix):len(prefix)], 0xff)
		}
		c := tx.Bucket(bucketActByFn).Cursor()
		for k, _ := seekBefore(c, start, false); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
			id := k[len(prefix):]
			more, err := take(id, acts.Get(id))
			if err != nil || !more {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	if len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// seekBefore positions c on the last key below key (the last key of all
// when last is set) and returns it.
func seekBefore(c *bolt.Cursor, key []byte, last bool) ([]byte, []byte) {
	if last {
		return c.Last()
	}
	if k, _ := c.Seek(key); k == nil {
		return c.Last()
	}
	return c.Prev()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
