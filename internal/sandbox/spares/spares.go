// Package spares keeps sandboxes made ahead of demand (pre-provisioned
// sandboxes in process mode, pre-started containers in container mode),
// per runtime, for cold starts to claim. A spare serves one instance of one
// function and is never returned: Set only makes, hands out and discards.
package spares

import (
	"context"
	"log/slog"
	"sync"
)

// Set holds the spares of one backend by key (the runtime name). Fill the
// exported fields before first use; the zero Set with Size 0 makes none.
// It is safe for concurrent use.
type Set[T any] struct {
	// Size is how many spares each key keeps ready or on the way.
	Size int
	// Make provisions one spare for key.
	Make func(key string) (T, error)
	// Discard stops a spare that will serve nothing.
	Discard func(T)
	// Dead reports a spare that died while it waited (nil: never).
	Dead func(T) bool
	// Log gets a warning when provisioning fails.
	Log *slog.Logger

	mu      sync.Mutex
	ready   map[string][]T
	pending map[string]int
	closed  bool
	wg      sync.WaitGroup
	// added is closed (and replaced) whenever a spare becomes ready or a
	// provisioning attempt ends, to wake claims waiting for one.
	added chan struct{}
}

// Claim takes a live spare for key and starts making its replacement.
// When none is ready but one is being made, it waits for that one (bounded
// by ctx): it will be ready sooner than a sandbox started now, and starting
// both would only slow each other down. ok is false when key has no spare
// coming (its first claim starts them, or provisioning is failing).
func (s *Set[T]) Claim(ctx context.Context, key string) (spare T, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.closed {
		for len(s.ready[key]) > 0 {
			l := s.ready[key]
			sp := l[len(l)-1]
			s.ready[key] = l[:len(l)-1]
			if s.Dead != nil && s.Dead(sp) {
				go s.Discard(sp) // died idle
				continue
			}
			s.fillLocked(key)
			return sp, true
		}
		pending := s.pending[key]
		s.fillLocked(key)
		if pending == 0 {
			return spare, false
		}
		added := s.added
		s.mu.Unlock()
		select {
		case <-added:
		case <-ctx.Done():
			s.mu.Lock()
			return spare, false
		}
		s.mu.Lock()
	}
	return spare, false
}

// Fill starts making spares until key has Size ready or on the way.
func (s *Set[T]) Fill(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fillLocked(key)
}

func (s *Set[T]) fillLocked(key string) {
	if s.ready == nil {
		s.ready = map[string][]T{}
		s.pending = map[string]int{}
		s.added = make(chan struct{})
	}
	for !s.closed && len(s.ready[key])+s.pending[key] < s.Size {
		s.pending[key]++
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			sp, err := s.Make(key)
			s.mu.Lock()
			s.pending[key]--
			kept := false
			if err == nil && !s.closed {
				s.ready[key] = append(s.ready[key], sp)
				kept = true
			}
			close(s.added)
			s.added = make(chan struct{})
			s.mu.Unlock()
			switch {
			case err != nil:
				if s.Log != nil {
					s.Log.Warn("make a spare sandbox", "runtime", key, "err", err)
				}
			case !kept:
				s.Discard(sp) // made after Close
			}
		}()
	}
}

// Ready returns how many spares key has ready now.
func (s *Set[T]) Ready(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready[key])
}

// Close discards every ready spare, waits for those being made (which are
// discarded as they finish), and makes no more.
func (s *Set[T]) Close() {
	s.mu.Lock()
	s.closed = true
	var all []T
	for _, l := range s.ready {
		all = append(all, l...)
	}
	s.ready = nil
	if s.added != nil {
		close(s.added) // wake claims waiting for one
		s.added = make(chan struct{})
	}
	s.mu.Unlock()
	s.wg.Wait()
	for _, sp := range all {
		s.Discard(sp)
	}
}
