package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/wisp-faas/wisp/internal/boltschema"
	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Defaults of Options (the system config's store section has the same
// defaults).
const (
	DefaultMaxCodeSize         = 50 << 20
	DefaultActivationRetention = 10000
	DefaultLogLimit            = 64 << 10
	DefaultResultLimit         = 64 << 10
	DefaultFlushInterval       = 50 * time.Millisecond
	DefaultBatchSize           = 512
	DefaultQueueSize           = 8192
	DefaultGCGracePeriod       = 15 * time.Minute
	DefaultLockTimeout         = time.Second

	// MaxEntries caps the number of entries in a code archive, so an
	// archive of millions of empty files cannot exhaust inodes.
	MaxEntries = 100_000
)

// Options tune a Store. The zero value of every field means its default.
type Options struct {
	// MaxCodeSize is the largest compressed code archive PutCode accepts
	// (store.max_code_size).
	MaxCodeSize int64
	// MaxUnpackedSize caps the total size of an archive's files once
	// unpacked (store.max_unpacked_size); default 10 × MaxCodeSize.
	MaxUnpackedSize int64
	// ActivationRetention is how many activation records are kept, newest
	// first (store.activation_retention).
	ActivationRetention int
	// LogLimit and ResultLimit cap an activation's Logs (the tail is kept)
	// and Result (the head is kept). Negative means keep none.
	LogLimit    int
	ResultLimit int
	// FlushInterval and BatchSize decide when queued activations are
	// committed: after FlushInterval, or as soon as BatchSize are waiting.
	FlushInterval time.Duration
	BatchSize     int
	// QueueSize is how many activations may wait; RecordActivation blocks
	// beyond it.
	QueueSize int
	// GCGracePeriod protects blobs and code directories younger than it
	// from GCCode.
	GCGracePeriod time.Duration
	// LockTimeout is how long Open waits for another process to release
	// the data directory.
	LockTimeout time.Duration
	// Logger receives background errors (a failed activation batch).
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxCodeSize, DefaultMaxCodeSize)
	def(&o.MaxUnpackedSize, 10*o.MaxCodeSize)
	defInt(&o.LogLimit, DefaultLogLimit)
	defInt(&o.ResultLimit, DefaultResultLimit)
	if o.ActivationRetention <= 0 {
		o.ActivationRetention = DefaultActivationRetention
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.GCGracePeriod == 0 {
		o.GCGracePeriod = DefaultGCGracePeriod
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Store is the registry, code store and activation log of one data
// directory. Create it with Open; Close it to flush queued activations.
type Store struct {
	dir  string
	db   *bolt.DB
	opts Options

	// gcMu is held for writing by GCCode while it decides what is
	// unreferenced and removes it, and for reading by PutFunction (while it
	// checks the blob it names and commits) and CodeDir (while it installs
	// or touches a directory), so GC never removes what is being referenced.
	gcMu sync.RWMutex

	// flightMu guards flights: one extraction per digest at a time.
	flightMu sync.Mutex
	flights  map[string]*flight
	bg       sync.WaitGroup // extractions in progress; Close waits for them

	acts *activationQueue
	// encBuf holds a batch's encoded activations until its commit, and is
	// kept for the next batch; only the activation writer touches it.
	encBuf []byte

	closeOnce sync.Once
	closeErr  error
}

// Bucket and key names of the schema drawn in the package comment.
var (
	bucketMeta        = boltschema.BucketMeta
	bucketFunctions   = []byte("functions")
	bucketActivations = []byte("activations")
	bucketActByFn     = []byte("activations_by_function")
	bucketKeys        = []byte("keys")
	bucketNamespaces  = []byte("namespaces")
	bucketTriggers    = []byte("triggers")

	keyVersion         = boltschema.KeyVersion
	keyActivationCount = []byte("activation_count")
)

// schemaVersion is the version this binary writes: its last migration's.
var schemaVersion = boltschema.Latest(migrations)

var migrations = []boltschema.Migration{
	{Version: 1, Name: "create buckets", Migrate: func(tx *bolt.Tx) error {
		if err := boltschema.CreateBuckets(tx, bucketMeta, bucketFunctions, bucketActivations, bucketActByFn); err != nil {
			return err
		}
		return putInt(tx.Bucket(bucketMeta), keyActivationCount, 0)
	}},
	{Version: 2, Name: "API keys", Migrate: func(tx *bolt.Tx) error {
		return boltschema.CreateBuckets(tx, bucketKeys)
	}},
	{Version: 3, Name: "namespaces", Migrate: func(tx *bolt.Tx) error {
		return boltschema.CreateBuckets(tx, bucketNamespaces)
	}},
	{Version: 4, Name: "triggers", Migrate: func(tx *bolt.Tx) error {
		return boltschema.CreateBuckets(tx, bucketTriggers)
	}},
}

// Open opens (creating if needed) the data directory dir. Only one process
// may have a directory open; another gets an ErrUnavailable error naming
// the holder's pid after Options.LockTimeout.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errdefs.Invalidf("give the data directory, like /var/lib/wisp", "data directory is empty")
	}
	opts = opts.withDefaults()
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o711},
		{filepath.Join(dir, "blobs"), 0o700},
		{filepath.Join(dir, "blobs", "sha256"), 0o700},
		{filepath.Join(dir, "blobs", "ingest"), 0o700},
		{filepath.Join(dir, "code"), 0o711},
	} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("open data directory %s: %w", dir, err)
		}
	}
	dbPath := filepath.Join(dir, "wisp.db")
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{
		Timeout: opts.LockTimeout,
		// As etcd does: a hashmap freelist stays fast with the many pages
		// that pruning activations frees, and not writing the freelist
		// makes each commit cheaper (Open rebuilds it by a scan).
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			who := "another wisp serve"
			hint := "stop the other wisp serve, or give this one another data directory"
			if pid := lockHolder(dbPath); pid > 0 {
				who = fmt.Sprintf("another wisp serve (pid %d)", pid)
				hint = fmt.Sprintf("stop the other wisp serve (kill %d), or give this one another data directory", pid)
			}
			return nil, errdefs.New(errdefs.ErrUnavailable, hint, "data directory %s is in use by %s", dir, who)
		}
		return nil, fmt.Errorf("open %s: %w", dbPath, err)
	}
	if err := migrate(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", dbPath, err)
	}
	s := &Store{dir: dir, db: db, opts: opts, flights: map[string]*flight{}}
	s.removeLeftovers()
	s.acts = newActivationQueue(s)
	return s, nil
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Close commits the queued activations, stops the writer and closes the
// database. Calls after the first return the first's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		werr := s.acts.close()
		s.bg.Wait()
		derr := s.db.Close()
		s.closeErr = errors.Join(werr, derr)
	})
	return s.closeErr
}

// migrate brings the database to schemaVersion.
func migrate(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error { return boltschema.Apply(tx, migrations, "the data directory") })
}

func getInt(b *bolt.Bucket, key []byte) (int64, error) {
	v := b.Get(key)
	if v == nil {
		return 0, nil
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("meta key %s: %q is not a number", key, v)
	}
	return n, nil
}

func putInt(b *bolt.Bucket, key []byte, n int64) error {
	return b.Put(key, strconv.AppendInt(nil, n, 10))
}

// removeLeftovers deletes uploads and extractions a previous process left
// half done. Nobody else uses them: we hold the database lock.
func (s *Store) removeLeftovers() {
	ingest := filepath.Join(s.dir, "blobs", "ingest")
	if ents, err := os.ReadDir(ingest); err == nil {
		for _, e := range ents {
			_ = os.RemoveAll(filepath.Join(ingest, e.Name()))
		}
	}
	code := filepath.Join(s.dir, "code")
	if ents, err := os.ReadDir(code); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				_ = os.RemoveAll(filepath.Join(code, e.Name()))
			}
		}
	}
}

// lockHolder returns the pid holding a flock on path, from /proc/locks, or
// 0 when it cannot tell.
func lockHolder(path string) int {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	// "1: FLOCK  ADVISORY  WRITE 12345 fd:01:1234567 0 EOF"
	dev := uint64(sys.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, sys.Ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}

// live returns ctx's error, wrapped, when the call should not start.
func live(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// listJSON decodes every value of bucket, in key order, as a T.
func listJSON[T any](ctx context.Context, s *Store, bucket []byte, what string) ([]*T, error) {
	op := "list " + what
	if err := live(ctx, op); err != nil {
		return nil, err
	}
	var out []*T
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			item := new(T)
			if err := json.Unmarshal(v, item); err != nil {
				return fmt.Errorf("decode %q: %w", k, err)
			}
			out = append(out, item)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}
