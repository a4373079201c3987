package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// Which calls queue inside a busy instance (pipelining) and which wait in
// the pool: one instance, five calls at once.
func TestPipelining(t *testing.T) {
	tests := []struct {
		name       string
		serial     bool
		ran        time.Duration // each call's time inside the instance
		depth      int
		maxWait    time.Duration
		body       int
		conc       int
		wantQueued int // calls waiting in the pool while five are made
	}{
		{name: "short calls of a serial host queue inside it", serial: true, ran: 10 * time.Microsecond, depth: 32, wantQueued: 0},
		{name: "pipeline_depth bounds them", serial: true, ran: 10 * time.Microsecond, depth: 2, wantQueued: 2},
		{name: "pipeline_max_wait bounds them", serial: true, ran: 700 * time.Microsecond, depth: 32, wantQueued: 2},
		{name: "calls longer than pipeline_max_wait wait outside", serial: true, ran: 3 * time.Millisecond, depth: 32, wantQueued: 4},
		{name: "a host that is not serial is not pipelined", serial: false, ran: 10 * time.Microsecond, depth: 32, wantQueued: 4},
		{name: "pipeline_depth 0 turns it off", serial: true, ran: 10 * time.Microsecond, depth: 0, wantQueued: 4},
		{name: "large requests wait outside", serial: true, ran: 10 * time.Microsecond, depth: 32, body: pipeMaxBody + 1, wantQueued: 4},
		{name: "concurrency 2 uses its own slots only", serial: true, ran: 10 * time.Microsecond, depth: 32, conc: 2, wantQueued: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var block atomic.Bool
				gate := make(chan struct{})
				b := &fakeBackend{serial: tt.serial}
				b.invoke = func(ctx context.Context, _ *sandbox.Request) (*sandbox.Response, error) {
					if block.Load() {
						select {
						case <-gate:
						case <-ctx.Done():
							return nil, ctx.Err()
						}
					}
					return &sandbox.Response{Status: 200, Ran: tt.ran}, nil
				}
				maxWait := tt.maxWait
				if maxWait == 0 {
					maxWait = 2 * time.Millisecond
				}
				s := newSched(t, b, Config{PipelineDepth: tt.depth, PipelineMaxWait: maxWait})
				tg := target("p", func(s *function.Spec) {
					s.MaxInstances = 1
					if tt.conc > 0 {
						s.Concurrency = tt.conc
					}
				})
				// The pool learns the calls' length first.
				for range pipelineMinSamples {
					call(t, s, tg)
				}
				block.Store(true)
				var wg sync.WaitGroup
				errs := make(chan error, 5)
				for range 5 {
					wg.Go(func() {
						_, err := s.Invoke(context.Background(), tg, &sandbox.Request{Body: make([]byte, tt.body)})
						errs <- err
					})
				}
				synctest.Wait()
				st := s.Stats()
				if len(st) != 1 || st[0].Busy != 1 || st[0].Queued != tt.wantQueued {
					t.Errorf("stats %+v; want 1 busy instance and %d calls waiting in the pool", st, tt.wantQueued)
				}
				close(gate)
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Errorf("call: %v", err)
					}
				}
				if starts, _, _ := b.counts(); starts != 1 {
					t.Errorf("%d instances started, want 1", starts)
				}
			})
		})
	}
}

// A call queued inside a busy instance starts another one, up to
// max_instances, so that packing calls does not keep a busy function on
// fewer CPUs than it would have had; the next call goes to the new, idle
// instance.
func TestPipelineScalesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var block atomic.Bool
		gate := make(chan struct{})
		b := &fakeBackend{serial: true}
		b.invoke = func(ctx context.Context, _ *sandbox.Request) (*sandbox.Response, error) {
			if block.Load() {
				<-gate
			}
			return &sandbox.Response{Status: 200, Ran: 10 * time.Microsecond}, nil
		}
		s := newSched(t, b, Config{PipelineDepth: 32, PipelineMaxWait: 2 * time.Millisecond})
		tg := target("s", func(s *function.Spec) { s.MaxInstances = 3 })
		for range pipelineMinSamples {
			call(t, s, tg)
		}
		block.Store(true)
		var wg sync.WaitGroup
		for range 12 {
			wg.Go(func() {
				if _, err := s.Invoke(context.Background(), tg, &sandbox.Request{}); err != nil {
					t.Errorf("call: %v", err)
				}
			})
			synctest.Wait()
		}
		st := s.Stats()
		if starts, _, _ := b.counts(); starts != 3 || len(st) != 1 || st[0].Busy != 3 || st[0].Queued != 0 {
			t.Errorf("%d instances started, stats %+v; want max_instances 3 started, all busy, no call waiting outside", starts, st)
		}
		close(gate)
		wg.Wait()
	})
}

// A call queued inside an instance that died before its turn goes to
// another instance and succeeds there.
func TestPipelineRedispatch(t *testing.T) {
	var first atomic.Bool
	first.Store(true)
	b := &fakeBackend{serial: true}
	b.invoke = func(ctx context.Context, req *sandbox.Request) (*sandbox.Response, error) {
		if first.CompareAndSwap(true, false) {
			b.mu.Lock()
			for _, i := range b.live {
				i.die() // the instance the call was queued in died
			}
			b.mu.Unlock()
			return nil, fmt.Errorf("instance x: call 2 waited behind another call and did not start: %w: %w",
				sandbox.ErrNotStarted, errdefs.ErrCrashed)
		}
		return &sandbox.Response{Status: 200}, nil
	}
	s := newSched(t, b, Config{PipelineDepth: 4, PipelineMaxWait: 2 * time.Millisecond})
	tg := target("r", nil)
	res, err := s.Invoke(context.Background(), tg, &sandbox.Request{})
	if err != nil {
		t.Fatalf("call queued in an instance that died: %v; want it served by another", err)
	}
	// The dead instance is closed in the background.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, _, closed := b.counts(); closed == 1 {
			break
		}
	}
	starts, _, closed := b.counts()
	if starts != 2 || closed != 1 {
		t.Errorf("starts %d, closed %d; want the dead instance closed and a second one started", starts, closed)
	}
	if !res.Cold {
		t.Error("the second instance's first call is not reported cold")
	}
}

// A queued call whose caller gave up before its turn is a timeout for that
// caller only: the instance stays in service.
func TestPipelineAbandonKeepsInstance(t *testing.T) {
	var first atomic.Bool
	first.Store(true)
	b := &fakeBackend{serial: true}
	b.invoke = func(ctx context.Context, req *sandbox.Request) (*sandbox.Response, error) {
		if first.CompareAndSwap(true, false) {
			return nil, fmt.Errorf("call 2: %w while it waited behind another call: %w", sandbox.ErrNotStarted, errdefs.ErrTimeout)
		}
		return &sandbox.Response{Status: 200}, nil
	}
	s := newSched(t, b, Config{PipelineDepth: 4, PipelineMaxWait: 2 * time.Millisecond})
	tg := target("k", nil)
	_, err := s.Invoke(context.Background(), tg, &sandbox.Request{})
	if !errors.Is(err, errdefs.ErrTimeout) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if r := call(t, s, tg); r.Cold {
		t.Error("the next call was cold: the instance was taken out of service")
	}
	if starts, _, closed := b.counts(); starts != 1 || closed != 0 {
		t.Errorf("starts %d, closed %d; want the one instance kept", starts, closed)
	}
}
