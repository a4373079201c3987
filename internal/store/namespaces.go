package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

// Namespace is a tenant: its functions, activations and keys are its own,
// and its quotas bound what all its functions together may take.
type Namespace struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// RateLimit caps the invocations of all the namespace's functions
	// together ("100/s", function.ParseRate; "" = no limit), RateBurst is
	// the bucket's size (default: the N of RateLimit).
	RateLimit string `json:"rate_limit,omitempty"`
	RateBurst int    `json:"rate_burst,omitempty"`
	// MaxConcurrency caps the namespace's calls in flight (0 = no limit).
	MaxConcurrency int `json:"max_concurrency,omitempty"`
	// MaxQueued caps the namespace's async calls waiting or running (0 =
	// only the node's async.max_queued).
	MaxQueued int `json:"max_queued,omitempty"`
}

// Validate checks the name and the quotas.
func (n *Namespace) Validate() error {
	if err := function.ValidateNamespace(n.Name); err != nil {
		return err
	}
	if _, _, err := function.ParseRate(n.RateLimit, n.RateBurst); err != nil {
		return fmt.Errorf("namespace %s: %w", n.Name, err)
	}
	if n.MaxQueued < 0 {
		return errdefs.Invalidf("use 1 or more, or 0 for no limit", "namespace %s: max_queued %d is negative", n.Name, n.MaxQueued)
	}
	if n.MaxConcurrency < 0 {
		return errdefs.Invalidf("use 1 or more, or 0 for no limit", "namespace %s: max_concurrency %d is negative", n.Name, n.MaxConcurrency)
	}
	return nil
}

func namespaceNotFound(name string) error {
	return errdefs.New(errdefs.ErrNotFound, "wisp ns ls lists the namespaces", "namespace %q not found", name)
}

// CreateNamespace stores ns and its first key in one transaction
// (ErrConflict when the namespace exists).
func (s *Store) CreateNamespace(ctx context.Context, ns *Namespace, key *APIKey) error {
	op := fmt.Sprintf("create namespace %q", ns.Name)
	if err := live(ctx, op); err != nil {
		return err
	}
	if err := ns.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNamespaces)
		if b.Get([]byte(ns.Name)) != nil {
			return errdefs.New(errdefs.ErrConflict, "choose another name, or rotate its key with wisp ns rotate "+ns.Name,
				"namespace %q already exists", ns.Name)
		}
		if err := putJSON(b, ns.Name, ns); err != nil {
			return err
		}
		return putKey(tx, key)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// UpdateNamespace replaces the quotas of an existing namespace.
func (s *Store) UpdateNamespace(ctx context.Context, ns *Namespace) error {
	op := fmt.Sprintf("update namespace %q", ns.Name)
	if err := live(ctx, op); err != nil {
		return err
	}
	if err := ns.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNamespaces)
		v := b.Get([]byte(ns.Name))
		if v == nil {
			return namespaceNotFound(ns.Name)
		}
		var old Namespace
		if err := json.Unmarshal(v, &old); err != nil {
			return fmt.Errorf("decode stored namespace: %w", err)
		}
		ns.Created = old.Created
		return putJSON(b, ns.Name, ns)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// GetNamespace returns the namespace called name, or ErrNotFound.
func (s *Store) GetNamespace(ctx context.Context, name string) (*Namespace, error) {
	op := fmt.Sprintf("get namespace %q", name)
	if err := live(ctx, op); err != nil {
		return nil, err
	}
	ns := new(Namespace)
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketNamespaces).Get([]byte(name))
		if v == nil {
			return namespaceNotFound(name)
		}
		return json.Unmarshal(v, ns)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return ns, nil
}

// ListNamespaces returns the stored namespaces (not the implicit default),
// sorted by name.
func (s *Store) ListNamespaces(ctx context.Context) ([]*Namespace, error) {
	return listJSON[Namespace](ctx, s, bucketNamespaces, "namespaces")
}

// DeleteNamespace removes a namespace, its keys, its triggers and its
// activation records in one transaction, so that nothing of it reaches a
// namespace created later under the same name. A
// namespace that still has functions is ErrConflict unless force is set,
// which removes them too; their references are returned so the caller can
// retire their instances.
func (s *Store) DeleteNamespace(ctx context.Context, name string, force bool) (removed []string, err error) {
	op := fmt.Sprintf("delete namespace %q", name)
	if err := live(ctx, op); err != nil {
		return nil, err
	}
	// Its activations go too: commit the queued ones first.
	if err := s.Flush(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNamespaces)
		if b.Get([]byte(name)) == nil {
			return namespaceNotFound(name)
		}
		if err := deleteActivationsOf(tx, name); err != nil {
			return err
		}
		fns := tx.Bucket(bucketFunctions)
		var refs []string
		if err := fns.ForEach(func(k, _ []byte) error {
			if ns, _ := function.SplitRef(string(k)); ns == name {
				refs = append(refs, string(k))
			}
			return nil
		}); err != nil {
			return err
		}
		if len(refs) > 0 && !force {
			return errdefs.New(errdefs.ErrConflict, "remove its functions first, or pass --force to remove them with it",
				"namespace %q still has %d function(s)", name, len(refs))
		}
		for _, ref := range refs {
			if err := fns.Delete([]byte(ref)); err != nil {
				return err
			}
		}
		if err := deleteKeysOf(tx, name); err != nil {
			return err
		}
		// Its triggers go with it.
		trg := tx.Bucket(bucketTriggers)
		var tids [][]byte
		prefix := []byte(name + "/")
		c := trg.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			tids = append(tids, append([]byte(nil), k...))
		}
		for _, k := range tids {
			if err := trg.Delete(k); err != nil {
				return err
			}
		}
		removed = refs
		return b.Delete([]byte(name))
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return removed, nil
}

// RotateKey replaces every key of namespace name with key, in one
// transaction: the old keys stop working at once.
func (s *Store) RotateKey(ctx context.Context, name string, key *APIKey) error {
	op := fmt.Sprintf("rotate key of namespace %q", name)
	if err := live(ctx, op); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketNamespaces).Get([]byte(name)) == nil {
			return namespaceNotFound(name)
		}
		if err := deleteKeysOf(tx, name); err != nil {
			return err
		}
		return putKey(tx, key)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func deleteKeysOf(tx *bolt.Tx, ns string) error {
	keys := tx.Bucket(bucketKeys)
	var victims [][]byte
	if err := keys.ForEach(func(k, v []byte) error {
		var key APIKey
		if err := json.Unmarshal(v, &key); err != nil {
			return fmt.Errorf("decode key: %w", err)
		}
		if !key.Admin && key.Namespace == ns {
			victims = append(victims, append([]byte(nil), k...))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range victims {
		if err := keys.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return b.Put([]byte(key), data)
}

// deleteActivationsOf deletes the activation records of namespace ns (its
// functions' references end in ".ns") and their index entries.
func deleteActivationsOf(tx *bolt.Tx, ns string) error {
	acts, idx, meta := tx.Bucket(bucketActivations), tx.Bucket(bucketActByFn), tx.Bucket(bucketMeta)
	type victim struct{ id, fn string }
	var victims []victim
	if err := acts.ForEach(func(k, v []byte) error {
		fn := functionOf(v)
		if n, _ := function.SplitRef(fn); n == ns {
			victims = append(victims, victim{string(k), fn})
		}
		return nil
	}); err != nil {
		return err
	}
	for _, vi := range victims {
		if err := acts.Delete([]byte(vi.id)); err != nil {
			return err
		}
		if err := idx.Delete(idxKey(vi.fn, vi.id)); err != nil {
			return err
		}
	}
	count, err := getInt(meta, keyActivationCount)
	if err != nil {
		return err
	}
	return putInt(meta, keyActivationCount, max(count-int64(len(victims)), 0))
}
