// Package boltschema versions the schema of a bbolt database: a decimal
// version under meta/version, brought forward by an append-only list of
// migrations. The store (wisp.db) and the async queue (queue.db) both use
// it, each with its own list.
package boltschema

import (
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Bucket and key of the version.
var (
	BucketMeta = []byte("meta")
	KeyVersion = []byte("version")
)

// Migration brings the schema from Version-1 to Version.
type Migration struct {
	Version int
	Name    string
	Migrate func(tx *bolt.Tx) error
}

// CreateBuckets is a migration step: it creates the named buckets where
// they do not exist yet.
func CreateBuckets(tx *bolt.Tx, names ...[]byte) error {
	for _, b := range names {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	return nil
}

// Latest is the version migrations bring a database to.
func Latest(migrations []Migration) int {
	if len(migrations) == 0 {
		return 0
	}
	return migrations[len(migrations)-1].Version
}

// Apply brings the database of tx to Latest(migrations): a database with no
// version is new and gets every migration; an older one those above its
// version, in order; a newer one is refused (an older wisp must not rewrite
// a schema it does not know). what names the database in that error ("the
// data directory", "the queue"). The meta bucket must be created by the
// first migration.
func Apply(tx *bolt.Tx, migrations []Migration, what string) error {
	v := 0
	if meta := tx.Bucket(BucketMeta); meta != nil {
		if s := meta.Get(KeyVersion); s != nil {
			n, err := strconv.Atoi(string(s))
			if err != nil {
				return fmt.Errorf("meta key %s: %q is not a number", KeyVersion, s)
			}
			v = n
		}
	}
	if latest := Latest(migrations); v > latest {
		return errdefs.New(errdefs.ErrUnavailable, "upgrade wisp, or use another data directory",
			"%s was written by a newer wisp (schema %d; this wisp knows schema %d)", what, v, latest)
	}
	for _, m := range migrations {
		if m.Version <= v {
			continue
		}
		if err := m.Migrate(tx); err != nil {
			return fmt.Errorf("migrate schema to %d (%s): %w", m.Version, m.Name, err)
		}
		v = m.Version
	}
	return tx.Bucket(BucketMeta).Put(KeyVersion, strconv.AppendInt(nil, int64(v), 10))
}
