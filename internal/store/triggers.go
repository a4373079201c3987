package store

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/trigger"
)

// TriggerRecord is a stored trigger: a cron schedule or a NATS subject
// that calls a function asynchronously. Its ID is "<namespace>/<name>".
type TriggerRecord struct {
	Name string `json:"name"`
	trigger.Trigger
	Created time.Time `json:"created"`
}

func triggerNotFound(id string) error {
	return errdefs.New(errdefs.ErrNotFound, "wisp trigger ls lists the triggers", "trigger %q not found", id)
}

// CreateTrigger stores t (ErrConflict when its ID exists).
func (s *Store) CreateTrigger(ctx context.Context, t *TriggerRecord) error {
	op := fmt.Sprintf("create trigger %q", t.ID)
	if err := live(ctx, op); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTriggers)
		if b.Get([]byte(t.ID)) != nil {
			return errdefs.New(errdefs.ErrConflict, "choose another name, or remove it first (wisp trigger rm)",
				"trigger %q already exists", t.Name)
		}
		return putJSON(b, t.ID, t)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// DeleteTrigger removes the trigger id (ErrNotFound when there is none).
func (s *Store) DeleteTrigger(ctx context.Context, id string) error {
	op := fmt.Sprintf("delete trigger %q", id)
	if err := live(ctx, op); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTriggers)
		if b.Get([]byte(id)) == nil {
			return triggerNotFound(id)
		}
		return b.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// ListTriggers returns every stored trigger, sorted by ID.
func (s *Store) ListTriggers(ctx context.Context) ([]*TriggerRecord, error) {
	return listJSON[TriggerRecord](ctx, s, bucketTriggers, "triggers")
}
