package gateway

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/scheduler"
)

// limiters holds a token bucket per function with a rate_limit, made for
// the deployed version (a redeploy may change the limit).
type limiters struct {
	mu sync.Mutex
	m  map[string]*limiter
}

type limiter struct {
	version int64
	lim     *rate.Limiter
}

// allow takes a token for a call of t, or returns an ErrLimit error and how
// long until one is free.
func (l *limiters) allow(t *scheduler.Target) (time.Duration, error) {
	if t.Spec.RateLimit == "" {
		return 0, nil
	}
	l.mu.Lock()
	e := l.m[t.Name]
	if e == nil || e.version != t.Version {
		// Parsed once per deployed version, not per call.
		perSecond, burst, err := t.Spec.Rate()
		if err != nil {
			l.mu.Unlock()
			return 0, nil // validated at deploy
		}
		if l.m == nil {
			l.m = map[string]*limiter{}
		}
		e = &limiter{version: t.Version, lim: rate.NewLimiter(rate.Limit(perSecond), burst)}
		l.m[t.Name] = e
	}
	l.mu.Unlock()
	now := time.Now()
	r := e.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, errdefs.New(errdefs.ErrLimit,
			"retry after the time in Retry-After, or raise the function's rate_limit (or rate_burst)",
			"function %s is over its rate limit of %s", t.Name, t.Spec.RateLimit)
	}
	return 0, nil
}

// forget drops a deleted function's bucket.
func (l *limiters) forget(name string) {
	l.mu.Lock()
	delete(l.m, name)
	l.mu.Unlock()
}

// retryAfter sets Retry-After to d rounded up to whole seconds (at least 1).
func retryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))))
}
