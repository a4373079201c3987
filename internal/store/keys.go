package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// APIKey is a stored API key: its SHA-256 and what it may do. The key
// itself is shown once, when it is made, and never stored.
type APIKey struct {
	// Hash is the hex SHA-256 of the key (auth.Hash).
	Hash string `json:"hash"`
	// Name says what the key is for ("admin").
	Name string `json:"name"`
	// Namespace is the tenant the key acts in ("" for admin keys, which
	// act in every namespace).
	Namespace string `json:"namespace,omitempty"`
	// Admin keys manage namespaces and keys and act across namespaces.
	Admin   bool      `json:"admin,omitempty"`
	Created time.Time `json:"created"`
}

// PutKey stores k (replacing a key with the same hash).
func (s *Store) PutKey(ctx context.Context, k *APIKey) error {
	if err := live(ctx, "put key"); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return putKey(tx, k) })
}

func putKey(tx *bolt.Tx, k *APIKey) error {
	if len(k.Hash) != 64 {
		return errdefs.Invalidf("store auth.Hash of the key", "put key %q: hash %q is not a hex SHA-256", k.Name, k.Hash)
	}
	v, err := json.Marshal(k)
	if err != nil {
		return fmt.Errorf("put key %q: %w", k.Name, err)
	}
	return tx.Bucket(bucketKeys).Put([]byte(k.Hash), v)
}

// DeleteKey removes the key with hash; a missing key is ErrNotFound.
func (s *Store) DeleteKey(ctx context.Context, hash string) error {
	if err := live(ctx, "delete key"); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		if b.Get([]byte(hash)) == nil {
			return errdefs.New(errdefs.ErrNotFound, "list keys to see which exist", "key not found")
		}
		return b.Delete([]byte(hash))
	})
}

// ListKeys returns every stored key (hashes and attributes).
func (s *Store) ListKeys(ctx context.Context) ([]*APIKey, error) {
	return listJSON[APIKey](ctx, s, bucketKeys, "keys")
}
