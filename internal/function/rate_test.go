package function

import (
	"errors"
	"strings"
	"testing"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func TestRate(t *testing.T) {
	tests := []struct {
		limit     string
		burst     int
		perSecond float64
		wantBurst int
		errField  string
	}{
		{"", 0, 0, 0, ""},
		{"5/s", 0, 5, 5, ""},
		{"120/m", 0, 2, 120, ""},
		{"3600/h", 10, 1, 10, ""},
		{" 10 / s ", 0, 10, 10, ""},
		{"5", 0, 0, 0, "rate_limit"},
		{"five/s", 0, 0, 0, "rate_limit"},
		{"5/day", 0, 0, 0, "rate_limit"},
		{"0/s", 0, 0, 0, "rate_limit"},
		{"5/s", -1, 0, 0, "rate_burst"},
		{"", 3, 0, 0, "rate_burst"},
	}
	for _, tt := range tests {
		t.Run(tt.limit, func(t *testing.T) {
			s := &Spec{RateLimit: tt.limit, RateBurst: tt.burst}
			r, b, err := s.Rate()
			if tt.errField != "" {
				if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.errField) {
					t.Fatalf("err = %v; want ErrInvalid naming %s", err, tt.errField)
				}
				return
			}
			if err != nil || r != tt.perSecond || b != tt.wantBurst {
				t.Fatalf("Rate() = %g, %d, %v; want %g, %d", r, b, err, tt.perSecond, tt.wantBurst)
			}
		})
	}
	if _, err := Parse([]byte("name: a\nruntime: exec\nhandler: cat\nrate_limit: lots\n"), Baseline{}); err == nil {
		t.Fatal("Parse accepted rate_limit: lots")
	}
}
