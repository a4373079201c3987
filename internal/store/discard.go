package store

import (
	"context"
	"fmt"
	"os"
)

// DiscardCode removes one archive and its unpacked directory at once, grace
// period or not, unless a function record references it or it is named in
// keep. A deploy that uploaded code and then failed validation calls it, so
// a failed deploy stores nothing.
func (s *Store) DiscardCode(ctx context.Context, digest string, keep []string) error {
	const op = "discard code"
	if err := live(ctx, op); err != nil {
		return err
	}
	h, err := parseDigest(digest)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	refs, err := s.referencedDigests()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	for _, d := range keep {
		if k, err := parseDigest(d); err == nil {
			refs[k] = true
		}
	}
	if refs[h] {
		return nil
	}
	if err := os.Remove(s.blobPath(h)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("%s %s: %w", op, digest, err)
	}
	if err := os.RemoveAll(s.codePath(h)); err != nil {
		return fmt.Errorf("%s %s: %w", op, digest, err)
	}
	return nil
}
