package scheduler

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
)

func TestScale(t *testing.T) {
	tests := []struct {
		name     string
		backend  *fakeBackend
		spec     func(*function.Spec)
		n        int
		wantErr  error
		wantLive int
	}{
		{"starts n and keeps them warm", &fakeBackend{startDelay: 100 * time.Millisecond}, nil, 10, nil, 10},
		{"capped at max_instances", &fakeBackend{}, func(s *function.Spec) { s.MaxInstances = 3 }, 10, nil, 3},
		{"keep_alive 0 cannot scale", &fakeBackend{}, func(s *function.Spec) { s.KeepAlive = 0 }, 2, errdefs.ErrInvalid, 0},
		{"failing starts end it", &fakeBackend{startErr: errors.New("no interpreter")}, nil, 2, errdefs.ErrUnavailable, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newSched(t, tt.backend, Config{})
				tgt := target("f", tt.spec)
				start := time.Now()
				err := s.Scale(context.Background(), tgt, tt.n, 4)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Scale = %v, want %v", err, tt.wantErr)
				}
				_, live, _ := tt.backend.counts()
				if live != tt.wantLive {
					t.Fatalf("%d instances live, want %d", live, tt.wantLive)
				}
				if tt.wantErr == nil && tt.backend.startDelay > 0 {
					// 10 starts, 4 at a time, 100 ms each: 3 rounds.
					if d := time.Since(start); d < 300*time.Millisecond || d > 400*time.Millisecond {
						t.Fatalf("Scale took %s; want 3 rounds of parallel starts", d)
					}
					// The scaled instances serve calls warm.
					res, err := s.Invoke(context.Background(), tgt, nil)
					if err != nil || res.Cold {
						t.Fatalf("call after Scale: %+v, %v; want warm", res, err)
					}
				}
			})
		})
	}
}
