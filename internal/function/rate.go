package function

import (
	"strconv"
	"strings"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Rate returns the function's rate limit as events per second and the
// bucket size, or 0, 0 when it has none. An invalid rate_limit or
// rate_burst is an ErrInvalid error naming the field.
func (s *Spec) Rate() (perSecond float64, burst int, err error) {
	return ParseRate(s.RateLimit, s.RateBurst)
}

// ParseRate parses a rate_limit ("5/s", "100/m", "1000/h") and its
// rate_burst (0: the N of the rate) into events per second and a bucket
// size; "" is no limit (0, 0).
func ParseRate(limit string, rateBurst int) (perSecond float64, burst int, err error) {
	if limit == "" {
		if rateBurst != 0 {
			return 0, 0, errdefs.Invalidf("set rate_limit too, like rate_limit: 5/s", "field rate_burst: given without rate_limit")
		}
		return 0, 0, nil
	}
	bad := errdefs.Invalidf("write calls per unit: 5/s, 100/m or 1000/h",
		"field rate_limit: %q is not a rate", limit)
	n, unit, ok := strings.Cut(strings.TrimSpace(limit), "/")
	if !ok {
		return 0, 0, bad
	}
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || count < 1 || count > 1_000_000 {
		return 0, 0, bad
	}
	var per time.Duration
	switch strings.TrimSpace(unit) {
	case "s", "sec", "second":
		per = time.Second
	case "m", "min", "minute":
		per = time.Minute
	case "h", "hour":
		per = time.Hour
	default:
		return 0, 0, bad
	}
	burst = count
	if rateBurst != 0 {
		if rateBurst < 1 || rateBurst > 1_000_000 {
			return 0, 0, errdefs.Invalidf("use a bucket size between 1 and 1000000", "field rate_burst: %d is out of range", rateBurst)
		}
		burst = rateBurst
	}
	return float64(count) / per.Seconds(), burst, nil
}
