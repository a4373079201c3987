package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Scale starts instances of t until it has n ready (at most its
// max_instances), with at most parallel starts at once, as provisioned
// concurrency does elsewhere: the instances then serve calls warm and are
// evicted by the function's keep-alive like any other. It returns when n
// are ready, when a start fails (that error), or when ctx ends.
func (s *Scheduler) Scale(ctx context.Context, t *Target, n, parallel int) error {
	p, err := s.poolFor(t)
	if err != nil {
		return err
	}
	if p.singleUse() {
		return errdefs.Invalidf("set keep_alive above 0: scaled instances wait for calls",
			"scale %s: keep_alive 0 instances serve one call and are never idle", t.Name)
	}
	parallel = max(parallel, 1)
	launched := 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		p.mu.Lock()
		want := min(n, p.maxInst)
		switch {
		case p.down || p.retired:
			p.mu.Unlock()
			return fmt.Errorf("scale %s: %w", t.Name, ErrClosed)
		case len(p.all) >= want:
			p.mu.Unlock()
			return nil
		}
		if launched > 2*want+4*parallel {
			ready := len(p.all)
			p.mu.Unlock()
			return errdefs.WithHint(fmt.Errorf("scale %s: %d of %d instances ready after %d starts: %w", t.Name, ready, want, launched, errdefs.ErrUnavailable),
				"instances keep failing to start or dying; wisp logs and the server log say why")
		}
		for p.starting < parallel && len(p.all)+p.starting < want {
			launched++
			p.starting++
			s.bg.Add(1)
			go p.start(0)
		}
		p.notifyLocked()
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("scale %s: %d of %d instances ready: %w", t.Name, p.stats().Idle+p.stats().Busy, want, context.Cause(ctx))
		case <-tick.C:
		}
	}
}
