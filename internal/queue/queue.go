package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/wisp-faas/wisp/internal/boltschema"
	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Defaults of Options.
const (
	DefaultWorkers         = 16
	DefaultMaxQueued       = 100_000
	DefaultBackoffBase     = time.Second
	DefaultBackoffMax      = 5 * time.Minute
	DefaultDoneRetention   = time.Hour
	DefaultResultLimit     = 64 << 10
	DefaultCallbackTimeout = 10 * time.Second
)

const (
	// minThrottleDelay is the least a throttled job waits before it is
	// tried again, so a Result with no RetryAfter does not spin.
	minThrottleDelay = 500 * time.Millisecond
	// lockTimeout is how long Open waits for another process to release
	// the file.
	lockTimeout = time.Second
	// pruneBatch bounds the jobs one pruning transaction deletes.
	pruneBatch = 1000
)

// Options tune a Queue. The zero value of every field means its default.
type Options struct {
	// Workers is how many attempts run at once.
	Workers int
	// MaxQueued is how many jobs may be queued or running; Enqueue and
	// Redrive beyond it fail with errdefs.ErrLimit.
	MaxQueued int
	// BackoffBase is the delay before the first retry; it doubles with each
	// attempt up to BackoffMax. The delay is drawn at random between half
	// of that and all of it (equal jitter), so failing jobs spread out.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// DoneRetention is how long succeeded jobs are kept so that their
	// outcome can be read. Failed jobs (dead letters) are kept until they
	// are redriven or purged.
	DoneRetention time.Duration
	// ResultLimit is how many bytes of the final response body are kept in
	// Job.Result (the head). Negative means keep none.
	ResultLimit int
	// Finished, if set, is called once per job when it reaches succeeded or
	// failed, before that state is committed (so a crash makes the job run
	// again rather than lose its outcome). The gateway records the
	// activation here. It must not call back into the Queue's methods that
	// wait for attempts (Close).
	Finished func(j *Job, r Result)
	// HTTPClient posts callbacks. The default has a 10s timeout and does
	// not follow redirects (a redirect could lead a callback to a host the
	// URL did not name).
	HTTPClient *http.Client
	// ClientFor, if set, picks the client that posts job j's callback (nil:
	// HTTPClient). The server gives tenants' jobs one that refuses to dial
	// loopback, link-local and private addresses.
	ClientFor func(j *Job) *http.Client
	// Logger receives what cannot be returned to a caller: failed commits
	// of outcomes, failed callbacks.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = DefaultMaxQueued
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = DefaultBackoffBase
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	o.BackoffMax = max(o.BackoffMax, o.BackoffBase)
	if o.DoneRetention <= 0 {
		o.DoneRetention = DefaultDoneRetention
	}
	if o.ResultLimit == 0 {
		o.ResultLimit = DefaultResultLimit
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{
			Timeout: DefaultCallbackTimeout,
			// A transport of its own: http.DefaultTransport may have been
			// replaced by something that is not an *http.Transport.
			Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 4,
				IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Queue is the durable queue of asynchronous invocations in one bbolt file.
// Create it with Open, start its workers with Start, and Close it.
type Queue struct {
	path string
	db   *bolt.DB
	opts Options
	log  *slog.Logger

	// mu guards everything below it.
	mu      sync.Mutex
	counts  map[string]int // jobs per state; queued includes Enqueues being committed
	closed  bool           // Close was called: refuse new calls
	started bool           // Start was called
	ops     sync.WaitGroup // public calls using db; Add only under mu while !closed

	wake       chan struct{} // buffered 1: Enqueue, Redrive and finished attempts poke the dispatcher
	stop       chan struct{} // closed by Close: the dispatcher returns
	dispatched chan struct{} // closed when the dispatcher has returned

	// runCtx is the context of attempts and callbacks; Close cancels it
	// when its own context ends before they do.
	runCtx    context.Context
	cancelRun context.CancelFunc
	inflight  atomic.Int32   // attempts and callback deliveries holding a worker slot
	work      sync.WaitGroup // their goroutines; Add only by the dispatcher

	// callbacks lists the jobs a previous process left with a callback to
	// deliver. Set by Open, then owned by the dispatcher.
	callbacks []string
	// callbackBackoff is the delay before the second try of a callback;
	// it doubles with each try (tests shorten it).
	callbackBackoff time.Duration
	ownClient       bool // opts.HTTPClient is ours: Close closes its idle connections

	closeOnce sync.Once
	closeErr  error
}

// Job states.
const (
	StateQueued    = "queued"    // waiting for its NextAt and a free worker
	StateRunning   = "running"   // an attempt is in flight
	StateSucceeded = "succeeded" // an attempt succeeded
	StateFailed    = "failed"    // dead letter: not retryable, or out of attempts
)

var states = []string{StateQueued, StateRunning, StateSucceeded, StateFailed}

// Bucket and key names of the schema drawn in the package comment. The
// index bucket of each state is named for it.
var (
	bucketMeta      = boltschema.BucketMeta
	bucketJobs      = []byte("jobs")
	bucketCallbacks = []byte("callbacks")

	keyVersion = boltschema.KeyVersion
)

// schemaVersion is the version this binary writes: its last migration's.
var schemaVersion = boltschema.Latest(migrations)

var migrations = []boltschema.Migration{
	{Version: 1, Name: "create buckets", Migrate: func(tx *bolt.Tx) error {
		names := [][]byte{bucketMeta, bucketJobs, bucketCallbacks}
		for _, s := range states {
			names = append(names, []byte(s))
		}
		return boltschema.CreateBuckets(tx, names...)
	}},
}

// Open opens (creating if needed) the queue file at path. Jobs a previous
// process left running (it died, or Close gave up on them, mid-attempt) are
// queued again: they run again after Start. Only one process may have the
// file open; another gets an ErrUnavailable error after a second.
func Open(path string, opts Options) (*Queue, error) {
	if path == "" {
		return nil, errdefs.Invalidf("give the queue file, like /var/lib/wisp/queue.db", "open queue: path is empty")
	}
	ownClient := opts.HTTPClient == nil
	opts = opts.withDefaults()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// As the store does: a hashmap freelist stays fast with the pages
		// that finished jobs free, and not writing the freelist makes each
		// commit cheaper (Open rebuilds it by a scan).
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, errdefs.New(errdefs.ErrUnavailable,
				"stop the other wisp serve, or give this one another data directory",
				"queue %s is in use by another process", path)
		}
		return nil, fmt.Errorf("open queue %s: %w", path, err)
	}
	// bbolt's default batch delay, 10ms, would add as much to every 202 and
	// cap each worker slot at 100 outcomes a second; 2ms shares commits as
	// well under concurrent load (BenchmarkEnqueue, BenchmarkDrain).
	db.MaxBatchDelay = 2 * time.Millisecond
	runCtx, cancel := context.WithCancel(context.Background())
	q := &Queue{
		path:            path,
		db:              db,
		opts:            opts,
		log:             opts.Logger,
		wake:            make(chan struct{}, 1),
		stop:            make(chan struct{}),
		dispatched:      make(chan struct{}),
		runCtx:          runCtx,
		cancelRun:       cancel,
		callbackBackoff: 500 * time.Millisecond,
		ownClient:       ownClient,
	}
	if err := q.load(); err != nil {
		cancel()
		db.Close()
		return nil, fmt.Errorf("open queue %s: %w", path, err)
	}
	return q, nil
}

// load brings the schema forward, queues again the jobs a previous process
// left running, and reads the counts and the undelivered callbacks.
func (q *Queue) load() error {
	var requeued int
	if err := q.db.Update(func(tx *bolt.Tx) error {
		if err := migrate(tx); err != nil {
			return err
		}
		var err error
		requeued, err = requeueRunning(tx, time.Now().UTC())
		return err
	}); err != nil {
		return err
	}
	if requeued > 0 {
		q.log.Info("queued again the jobs whose attempt was cut short", "jobs", requeued)
	}
	// Bucket.Stats counts committed pages only, hence a second transaction.
	return q.db.View(func(tx *bolt.Tx) error {
		q.counts = map[string]int{}
		for _, s := range states {
			q.counts[s] = tx.Bucket([]byte(s)).Stats().KeyN
		}
		return tx.Bucket(bucketCallbacks).ForEach(func(k, _ []byte) error {
			q.callbacks = append(q.callbacks, string(k))
			return nil
		})
	})
}

// migrate brings the schema to schemaVersion.
func migrate(tx *bolt.Tx) error { return boltschema.Apply(tx, migrations, "the queue") }

// requeueRunning moves the jobs in running/ back to queued/, keeping their
// NextAt (which has passed), so they are the first to run again.
func requeueRunning(tx *bolt.Tx, now time.Time) (int, error) {
	b := bucketsOf(tx)
	var ids [][]byte
	if err := b.state[StateRunning].ForEach(func(k, _ []byte) error {
		ids = append(ids, bytes.Clone(k))
		return nil
	}); err != nil {
		return 0, err
	}
	for _, id := range ids {
		old, err := b.job(id)
		if err != nil {
			return 0, err
		}
		if old == nil || old.State != StateRunning { // a stale index key: drop it
			if err := b.state[StateRunning].Delete(id); err != nil {
				return 0, err
			}
			continue
		}
		j := *old
		j.State, j.Updated = StateQueued, now
		if err := b.replace(old, &j); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// Start starts the dispatcher, which runs the jobs through inv. Calls after
// the first, and calls after Close, do nothing.
func (q *Queue) Start(inv Invoker) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.started || q.closed {
		return
	}
	q.started = true
	go q.dispatch(inv)
}

// Close stops taking jobs and waits for the attempts in flight (and their
// callbacks) until ctx is done; then it cancels them and waits for them to
// return (so the Invoker must honour its ctx). A cancelled attempt leaves
// its job running on disk, and the next Open queues it again. Close then
// closes the file. It returns ctx's error when it had to cancel attempts.
// Calls after the first return the first's result.
func (q *Queue) Close(ctx context.Context) error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closed = true
		started := q.started
		q.mu.Unlock()

		var cerr error
		if started {
			close(q.stop)
			<-q.dispatched // no attempt starts after this
			idle := make(chan struct{})
			go func() { q.work.Wait(); close(idle) }()
			select {
			case <-idle:
			case <-ctx.Done():
				q.cancelRun()
				<-idle
				cerr = fmt.Errorf("close queue: attempts in flight were cancelled and will run again after restart: %w", ctx.Err())
			}
		}
		q.cancelRun()
		q.ops.Wait()
		if q.ownClient {
			q.opts.HTTPClient.CloseIdleConnections()
		}
		if err := q.db.Close(); err != nil {
			cerr = errors.Join(cerr, fmt.Errorf("close queue %s: %w", q.path, err))
		}
		q.closeErr = cerr
	})
	return q.closeErr
}

// begin admits a public call that uses the database: it fails once Close
// has been called, and Close waits for the calls it admitted.
func (q *Queue) begin(ctx context.Context, op string) (done func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, fmt.Errorf("%s: %w", op, errdefs.New(errdefs.ErrUnavailable,
			"wisp is shutting down; try again when it is back", "the queue is closed"))
	}
	q.ops.Add(1)
	return q.ops.Done, nil
}

// poke wakes the dispatcher without blocking.
func (q *Queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Stats returns the number of jobs in each state (every state is present).
func (q *Queue) Stats() map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]int, len(q.counts))
	for s, n := range q.counts {
		out[s] = n
	}
	return out
}

// buckets are the buckets of one transaction.
type buckets struct {
	jobs      *bolt.Bucket
	callbacks *bolt.Bucket
	state     map[string]*bolt.Bucket // the index of each state
}

func bucketsOf(tx *bolt.Tx) buckets {
	b := buckets{
		jobs:      tx.Bucket(bucketJobs),
		callbacks: tx.Bucket(bucketCallbacks),
		state:     make(map[string]*bolt.Bucket, len(states)),
	}
	for _, s := range states {
		b.state[s] = tx.Bucket([]byte(s))
	}
	return b
}

// job returns the job id, or nil when there is none.
func (b buckets) job(id []byte) (*Job, error) {
	v := b.jobs.Get(id)
	if v == nil {
		return nil, nil
	}
	j := new(Job)
	if err := json.Unmarshal(v, j); err != nil {
		return nil, fmt.Errorf("decode job %s: %w", id, err)
	}
	return j, nil
}

// put writes j and its index key for j.State. Use replace when the job
// is stored already.
func (b buckets) put(j *Job) error {
	v, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	if err := b.state[j.State].Put(indexKey(j), []byte{}); err != nil {
		return err
	}
	return b.jobs.Put([]byte(j.ID), v)
}

// replace writes j in place of old, the stored record of the same job,
// moving its index key.
func (b buckets) replace(old, j *Job) error {
	if err := b.state[old.State].Delete(indexKey(old)); err != nil {
		return err
	}
	return b.put(j)
}

// has reports whether bucket b holds key (index values are empty, so Get
// cannot tell).
func has(b *bolt.Bucket, key []byte) bool {
	k, _ := b.Cursor().Seek(key)
	return bytes.Equal(k, key)
}

// indexKey is j's key in the index of its state.
func indexKey(j *Job) []byte {
	switch j.State {
	case StateQueued:
		return timeKey(j.NextAt, j.ID)
	case StateSucceeded:
		return timeKey(j.Updated, j.ID)
	default:
		return []byte(j.ID)
	}
}

// timeKey is t in Unix nanoseconds, 8 bytes big-endian (0 before 1970),
// followed by id: keys sort by time, then id.
func timeKey(t time.Time, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(max(0, t.UnixNano())))
	return append(k, id...)
}

// keyTime is the time of a timeKey.
func keyTime(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC()
}
