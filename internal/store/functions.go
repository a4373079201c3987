package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

// FunctionRecord is a deployed function: its spec, the code it runs and its
// version. It is stored as JSON under functions/<name>.
type FunctionRecord struct {
	// Namespace is the tenant the function belongs to ("" or "default":
	// the default namespace).
	Namespace string        `json:"namespace,omitempty"`
	Spec      function.Spec `json:"spec"`
	// CodeDigest names the code archive ("sha256:<hex>", from PutCode);
	// empty for a function with no code (an exec handler on the host).
	CodeDigest string `json:"code_digest,omitempty"`
	// CodeSize is the archive's size in bytes.
	CodeSize int64 `json:"code_size,omitempty"`
	// Version starts at 1 and increments on every update.
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Name returns the function's name (Spec.Name).
func (r *FunctionRecord) Name() string { return r.Spec.Name }

// Ref returns the function's reference (function.Ref): the key it is
// stored under and the name the rest of the node knows it by.
func (r *FunctionRecord) Ref() string { return function.Ref(r.Namespace, r.Spec.Name) }

func notFound(name string) error {
	return errdefs.New(errdefs.ErrNotFound, "wisp ls lists deployed functions", "function %q not found", name)
}

// PutFunction creates rec, or replaces the function of the same name. It
// validates the spec, checks that the code it names is in the store, sets
// Version (1, or the stored version + 1) and the timestamps, and returns the
// stored copy.
//
// When rec.Version is not 0 the update is conditional: it fails with
// ErrConflict unless the stored version is rec.Version (the version the
// caller read), so two concurrent updates cannot silently overwrite each
// other.
func (s *Store) PutFunction(ctx context.Context, rec *FunctionRecord) (*FunctionRecord, error) {
	return s.putFunction(ctx, rec, false)
}

// CreateFunction is PutFunction that fails with ErrConflict when a function
// of that name exists.
func (s *Store) CreateFunction(ctx context.Context, rec *FunctionRecord) (*FunctionRecord, error) {
	return s.putFunction(ctx, rec, true)
}

func (s *Store) putFunction(ctx context.Context, rec *FunctionRecord, create bool) (*FunctionRecord, error) {
	if rec == nil {
		return nil, errdefs.Invalidf("pass a function record", "put function: nil record")
	}
	name := rec.Ref()
	op := fmt.Sprintf("put function %q", name)
	if err := live(ctx, op); err != nil {
		return nil, err
	}
	if err := rec.Spec.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if ns := rec.Namespace; ns != "" && ns != function.DefaultNamespace {
		if err := function.ValidateNamespace(ns); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	out := *rec
	out.Namespace = function.StoredNamespace(out.Namespace)
	out.Spec.Environment = append([]string(nil), rec.Spec.Environment...)
	out.Spec.Dependencies = append([]string(nil), rec.Spec.Dependencies...)

	// Hold off GCCode from checking the blob until the record naming it is
	// committed.
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	if out.CodeDigest != "" {
		hex, err := parseDigest(out.CodeDigest)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		st, err := os.Stat(s.blobPath(hex))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, errdefs.New(errdefs.ErrInvalid,
				"upload the code first (wisp deploy does both)", "code %s is not in the store", out.CodeDigest))
		}
		out.CodeSize = st.Size()
		now := time.Now()
		_ = os.Chtimes(s.blobPath(hex), now, now) // GC's grace period starts again
	} else {
		out.CodeSize = 0
	}

	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFunctions)
		now := time.Now().UTC()
		out.CreatedAt, out.UpdatedAt, out.Version = now, now, 1
		if v := b.Get([]byte(name)); v != nil {
			if create {
				return errdefs.New(errdefs.ErrConflict,
					fmt.Sprintf("choose another name, or update it (wisp deploy replaces a function; wisp rm %s removes it)", name),
					"function %q already exists", name)
			}
			var old FunctionRecord
			if err := json.Unmarshal(v, &old); err != nil {
				return fmt.Errorf("decode stored record: %w", err)
			}
			if rec.Version != 0 && rec.Version != old.Version {
				return errdefs.New(errdefs.ErrConflict, "read the function again and retry the update",
					"function %q changed: it is at version %d, the update was made from version %d", name, old.Version, rec.Version)
			}
			out.CreatedAt, out.Version = old.CreatedAt, old.Version+1
		} else if rec.Version != 0 {
			return notFound(name)
		}
		v, err := json.Marshal(&out)
		if err != nil {
			return fmt.Errorf("encode record: %w", err)
		}
		return b.Put([]byte(name), v)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return &out, nil
}

// GetFunction returns the function whose reference (FunctionRecord.Ref) is
// name, or ErrNotFound.
func (s *Store) GetFunction(ctx context.Context, name string) (*FunctionRecord, error) {
	op := fmt.Sprintf("get function %q", name)
	if err := live(ctx, op); err != nil {
		return nil, err
	}
	var rec *FunctionRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketFunctions).Get([]byte(name))
		if v == nil {
			return notFound(name)
		}
		rec = new(FunctionRecord)
		return json.Unmarshal(v, rec)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return rec, nil
}

// ListFunctions returns every function of every namespace, sorted by
// reference.
func (s *Store) ListFunctions(ctx context.Context) ([]*FunctionRecord, error) {
	return listJSON[FunctionRecord](ctx, s, bucketFunctions, "functions") // key order: sorted by reference
}

// DeleteFunction removes the function whose reference is name (ErrNotFound
// if there is none). Its activation records stay until retention prunes them; its code
// stays until GCCode.
func (s *Store) DeleteFunction(ctx context.Context, name string) error {
	op := fmt.Sprintf("delete function %q", name)
	if err := live(ctx, op); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFunctions)
		if b.Get([]byte(name)) == nil {
			return notFound(name)
		}
		return b.Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// referencedDigests returns the hex of every digest a function names.
func (s *Store) referencedDigests() (map[string]bool, error) {
	refs := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFunctions).ForEach(func(k, v []byte) error {
			var rec struct {
				CodeDigest string `json:"code_digest"`
			}
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode function %q: %w", k, err)
			}
			if hex, err := parseDigest(rec.CodeDigest); err == nil {
				refs[hex] = true
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return refs, nil
}
