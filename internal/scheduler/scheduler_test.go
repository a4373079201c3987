package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/keepalive"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBackend is a hand-written fake: each field may override behaviour.
type fakeBackend struct {
	startDelay time.Duration
	startErr   error
	invoke     func(ctx context.Context, req *sandbox.Request) (*sandbox.Response, error)
	serial     bool // instances say they are serial (may pipeline)

	mu       sync.Mutex
	starts   int
	live     map[string]*fakeInstance
	closedN  int
	maxAlive int
}

func (b *fakeBackend) Name() string                  { return "fake" }
func (b *fakeBackend) Check(context.Context) error   { return nil }
func (b *fakeBackend) Cleanup(context.Context) error { return nil }

func (b *fakeBackend) Start(ctx context.Context, o sandbox.StartOptions) (sandbox.Instance, error) {
	b.mu.Lock()
	b.starts++
	b.mu.Unlock()
	if b.startDelay > 0 {
		select {
		case <-time.After(b.startDelay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if b.startErr != nil {
		return nil, b.startErr
	}
	i := &fakeInstance{id: o.ID, b: b, done: make(chan struct{})}
	b.mu.Lock()
	if b.live == nil {
		b.live = map[string]*fakeInstance{}
	}
	b.live[o.ID] = i
	if len(b.live) > b.maxAlive {
		b.maxAlive = len(b.live)
	}
	b.mu.Unlock()
	return i, nil
}

func (b *fakeBackend) counts() (starts, live, closed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.starts, len(b.live), b.closedN
}

type fakeInstance struct {
	id   string
	b    *fakeBackend
	done chan struct{}
	once sync.Once
}

func (i *fakeInstance) ID() string            { return i.id }
func (i *fakeInstance) Done() <-chan struct{} { return i.done }
func (i *fakeInstance) Usage() sandbox.Usage  { return sandbox.Usage{} }
func (i *fakeInstance) Serial() bool          { return i.b.serial }
func (i *fakeInstance) die()                  { i.once.Do(func() { close(i.done) }) }
func (i *fakeInstance) Invoke(ctx context.Context, req *sandbox.Request) (*sandbox.Response, error) {
	if i.b.invoke != nil {
		return i.b.invoke(ctx, req)
	}
	return &sandbox.Response{Status: 200, Body: []byte(i.id)}, nil
}
func (i *fakeInstance) Close() error {
	i.die()
	i.b.mu.Lock()
	if _, ok := i.b.live[i.id]; ok {
		delete(i.b.live, i.id)
		i.b.closedN++
	}
	i.b.mu.Unlock()
	return nil
}

func target(name string, mutate func(*function.Spec)) *Target {
	s := function.Defaults(function.Baseline{})
	s.Name, s.Runtime, s.Handler = name, "python3", "handler.py"
	if mutate != nil {
		mutate(&s)
	}
	return &Target{Name: name, Version: 1, Digest: "sha256:x", Spec: &s}
}

func newSched(t *testing.T, b *fakeBackend, cfg Config) *Scheduler {
	t.Helper()
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = 100
	}
	s := New(cfg, map[string]sandbox.Backend{function.ModeProcess: b}, nil, Observer{})
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
		if _, live, _ := b.counts(); live != 0 {
			t.Errorf("%d instances still live after Close", live)
		}
	})
	return s
}

func call(t *testing.T, s *Scheduler, tg *Target) *Result {
	t.Helper()
	r, err := s.Invoke(context.Background(), tg, &sandbox.Request{Method: "GET", Path: "/"})
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	return r
}

func TestWarmReuse(t *testing.T) {
	b := &fakeBackend{}
	s := newSched(t, b, Config{})
	tg := target("hello", nil)
	r1 := call(t, s, tg)
	r2 := call(t, s, tg)
	if !r1.Cold || r2.Cold {
		t.Fatalf("cold flags = %v, %v; want true, false", r1.Cold, r2.Cold)
	}
	if r1.InstanceID != r2.InstanceID {
		t.Fatalf("second call used %s, want the warm %s", r2.InstanceID, r1.InstanceID)
	}
	if starts, _, _ := b.counts(); starts != 1 {
		t.Fatalf("starts = %d, want 1", starts)
	}
}

func TestKeepAliveZeroEveryCallCold(t *testing.T) {
	b := &fakeBackend{}
	s := newSched(t, b, Config{})
	tg := target("fresh", func(s *function.Spec) { s.KeepAlive = 0 })
	seen := map[string]bool{}
	for range 5 {
		r := call(t, s, tg)
		if !r.Cold {
			t.Fatal("call was warm with keep_alive 0")
		}
		if seen[r.InstanceID] {
			t.Fatalf("instance %s reused", r.InstanceID)
		}
		seen[r.InstanceID] = true
	}
	synctestWaitClosed(t, b, 5)
}

func synctestWaitClosed(t *testing.T, b *fakeBackend, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, closed := b.counts(); closed >= want {
			return
		}
		time.Sleep(time.Millisecond)
	}
	_, _, closed := b.counts()
	t.Fatalf("closed = %d, want %d", closed, want)
}

func TestNoStampede(t *testing.T) {
	release := make(chan struct{})
	b := &fakeBackend{startDelay: 20 * time.Millisecond}
	b.invoke = func(ctx context.Context, _ *sandbox.Request) (*sandbox.Response, error) {
		<-release
		return &sandbox.Response{Status: 200}, nil
	}
	s := newSched(t, b, Config{})
	tg := target("burst", func(s *function.Spec) { s.MaxInstances = 5 })
	var wg sync.WaitGroup
	var cold atomic.Int32
	for range 30 {
		wg.Go(func() {
			r, err := s.Invoke(context.Background(), tg, &sandbox.Request{})
			if err != nil {
				t.Errorf("invoke: %v", err)
				return
			}
			if r.Cold {
				cold.Add(1)
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	if starts, _, _ := b.counts(); starts != 5 {
		t.Fatalf("30 concurrent calls started %d instances, want max_instances = 5", starts)
	}
	if b.maxAlive > 5 {
		t.Fatalf("max alive %d > max_instances", b.maxAlive)
	}
	if c := cold.Load(); c != 5 {
		t.Fatalf("%d calls reported cold, want 5 (one per started instance)", c)
	}
}

func TestQueueBoundAndLimit(t *testing.T) {
	release := make(chan struct{})
	b := &fakeBackend{}
	b.invoke = func(ctx context.Context, _ *sandbox.Request) (*sandbox.Response, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &sandbox.Response{Status: 200}, nil
	}
	s := newSched(t, b, Config{MaxQueue: 2, QueueTimeout: 5 * time.Second})
	tg := target("q", func(s *function.Spec) { s.MaxInstances = 1 })
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	// One call runs, two queue.
	for range 3 {
		wg.Go(func() {
			_, err := s.Invoke(context.Background(), tg, &sandbox.Request{})
			errs <- err
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Stats()
		if len(st) == 1 && st[0].Busy == 1 && st[0].Queued == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool never reached 1 busy + 2 queued: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	_, err := s.Invoke(context.Background(), tg, &sandbox.Request{})
	if !errors.Is(err, errdefs.ErrLimit) {
		t.Fatalf("fourth call: err = %v, want ErrLimit", err)
	}
	if errdefs.Hint(err) == "" {
		t.Fatal("limit error has no hint")
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("queued call failed: %v", err)
		}
	}
}

func TestQueueTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		block := make(chan struct{})
		b := &fakeBackend{}
		b.invoke = func(ctx context.Context, _ *sandbox.Request) (*sandbox.Response, error) {
			<-block
			return &sandbox.Response{Status: 200}, nil
		}
		s := New(Config{MaxQueue: 10, QueueTimeout: 3 * time.Second}, map[string]sandbox.Backend{"process": b}, nil, Observer{})
		tg := target("slow", func(s *function.Spec) { s.MaxInstances = 1 })
		go s.Invoke(context.Background(), tg, &sandbox.Request{})
		synctest.Wait()
		t0 := time.Now()
		_, err := s.Invoke(context.Background(), tg, &sandbox.Request{})
		if !errors.Is(err, errdefs.ErrLimit) || time.Since(t0) != 3*time.Second {
			t.Fatalf("err = %v after %s; want ErrLimit after 3s", err, time.Since(t0))
		}
		close(block)
		s.Close(context.Background())
	})
}

func TestCrashReplacesInstance(t *testing.T) {
	b := &fakeBackend{}
	var fail atomic.Bool
	b.invoke = func(ctx context.Context, _ *sandbox.Request) (*sandbox.Response, error) {
		if fail.Load() {
			return nil, fmt.Errorf("exited with status 1: %w", errdefs.ErrCrashed)
		}
		return &sandbox.Response{Status: 200}, nil
	}
	s := newSched(t, b, Config{})
	tg := target("crashy", nil)
	r1 := call(t, s, tg)
	fail.Store(true)
	_, err := s.Invoke(context.Background(), tg, &sandbox.Request{})
	if !errors.Is(err, errdefs.ErrCrashed) {
		t.Fatalf("err = %v, want ErrCrashed", err)
	}
	fail.Store(false)
	r3 := call(t, s, tg)
	if !r3.Cold || r3.InstanceID == r1.InstanceID {
		t.Fatalf("after a crash the call used %s (cold=%v); want a new instance", r3.InstanceID, r3.Cold)
	}
}

func TestIdleDeathRemovesInstance(t *testing.T) {
	b := &fakeBackend{}
	s := newSched(t, b, Config{})
	tg := target("dies", nil)
	r1 := call(t, s, tg)
	b.mu.Lock()
	inst := b.live[r1.InstanceID]
	b.mu.Unlock()
	inst.die()
	deadline := time.Now().Add(2 * time.Second)
	for {
		st := s.Stats()
		if len(st) == 1 && st[0].Idle == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead instance still in pool: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	if r := call(t, s, tg); !r.Cold || r.InstanceID == r1.InstanceID {
		t.Fatal("dead instance was reused")
	}
}

func TestTimeoutClosesInstance(t *testing.T) {
	b := &fakeBackend{}
	b.invoke = func(ctx context.Context, _ *sandbox.Request) (*sandbox.Response, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("call: %w", errdefs.ErrTimeout)
	}
	s := newSched(t, b, Config{})
	tg := target("hang", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Invoke(ctx, tg, &sandbox.Request{})
	if !errors.Is(err, errdefs.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	synctestWaitClosed(t, b, 1)
}

func TestStartFailureReachesCaller(t *testing.T) {
	b := &fakeBackend{startErr: fmt.Errorf("SyntaxError: invalid syntax: %w", errdefs.ErrCrashed)}
	s := newSched(t, b, Config{})
	tg := target("broken", nil)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			_, err := s.Invoke(context.Background(), tg, &sandbox.Request{})
			if !errors.Is(err, errdefs.ErrCrashed) {
				t.Errorf("err = %v, want ErrCrashed", err)
			}
		})
	}
	wg.Wait()
}

func TestKeepAliveEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{}
		s := New(Config{EvictInterval: time.Second}, map[string]sandbox.Backend{"process": b}, nil, Observer{})
		tg := target("ka", func(s *function.Spec) { s.KeepAlive = function.Duration(10 * time.Second) })
		if _, err := s.Invoke(context.Background(), tg, &sandbox.Request{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if _, live, _ := b.counts(); live != 1 {
			t.Fatalf("instance evicted before keep_alive: live = %d", live)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if _, live, _ := b.counts(); live != 0 {
			t.Fatalf("instance not evicted after keep_alive: live = %d", live)
		}
		s.Close(context.Background())
	})
}

func TestRedeployKeepsCallsInFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	b := &fakeBackend{}
	var first atomic.Bool
	b.invoke = func(ctx context.Context, req *sandbox.Request) (*sandbox.Response, error) {
		if first.CompareAndSwap(false, true) {
			close(started)
			<-release
		}
		return &sandbox.Response{Status: 200}, nil
	}
	s := newSched(t, b, Config{})
	v1 := target("fn", nil)
	done := make(chan error, 1)
	go func() {
		_, err := s.Invoke(context.Background(), v1, &sandbox.Request{})
		done <- err
	}()
	<-started
	v2 := target("fn", nil)
	v2.Version, v2.Digest = 2, "sha256:y"
	r := call(t, s, v2)
	if !r.Cold {
		t.Fatal("new version served warm by the old version's instance")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("in-flight call on the old version failed: %v", err)
	}
	synctestWaitClosed(t, b, 1) // the old version's instance closes once idle
}

func TestCloseDrainsInFlight(t *testing.T) {
	b := &fakeBackend{}
	b.invoke = func(ctx context.Context, _ *sandbox.Request) (*sandbox.Response, error) {
		time.Sleep(50 * time.Millisecond)
		return &sandbox.Response{Status: 200}, nil
	}
	s := New(Config{}, map[string]sandbox.Backend{"process": b}, nil, Observer{})
	tg := target("drain", nil)
	done := make(chan error, 1)
	go func() {
		_, err := s.Invoke(context.Background(), tg, &sandbox.Request{})
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("in-flight call failed during drain: %v", err)
	}
	if _, live, _ := b.counts(); live != 0 {
		t.Fatalf("%d instances live after Close", live)
	}
	if _, err := s.Invoke(context.Background(), tg, &sandbox.Request{}); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("invoke after Close: %v, want ErrUnavailable", err)
	}
}

func TestUnknownModeIsUnavailable(t *testing.T) {
	s := newSched(t, &fakeBackend{}, Config{})
	tg := target("c", func(s *function.Spec) { s.ExecutionMode = function.ModeContainer })
	_, err := s.Invoke(context.Background(), tg, &sandbox.Request{})
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func BenchmarkWarmAcquireRelease(b *testing.B) {
	fb := &fakeBackend{}
	s := New(Config{}, map[string]sandbox.Backend{"process": fb}, nil, Observer{})
	defer s.Close(context.Background())
	tg := target("bench", func(s *function.Spec) { s.MaxInstances = 64 })
	req := &sandbox.Request{}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Invoke(context.Background(), tg, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// keep_alive auto: an idle instance stays for the fixed fallback until the
// policy has learned the function's idle times, then for the learned window.
func TestKeepAliveAutoEvictsAfterLearnedWindow(t *testing.T) {
	s := time.Second
	tests := []struct {
		name     string
		fallback time.Duration
		idle     []time.Duration // between consecutive calls
		// after the last call the instance must still be live at alive and
		// gone at gone.
		alive, gone time.Duration
	}{
		{
			name:     "not representative: the fixed fallback",
			fallback: 10 * time.Minute,
			idle:     []time.Duration{5 * s, 10 * s},
			alive:    10*time.Minute - s, gone: 10*time.Minute + 2*s,
		},
		{
			name:     "not representative, fallback 0: closed after each call",
			fallback: 0,
			idle:     []time.Duration{5 * s, 10 * s},
			alive:    -1, gone: 0,
		},
		{
			// head (5th percentile) in bin 0: no pre-warm; tail 20 s bin,
			// upper edge 21 s +10% -> 24 s.
			name:     "learned: keep-alive window at the 99th percentile",
			fallback: 10 * time.Minute,
			idle: []time.Duration{s / 2, s / 2, 5 * s, 5 * s, 10 * s, 10 * s, 15 * s, 15 * s,
				20 * s, 20 * s},
			alive: 23 * s, gone: 26 * s,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := &fakeBackend{}
				sc := New(Config{EvictInterval: time.Second}, map[string]sandbox.Backend{"process": b}, nil, Observer{})
				defer sc.Close(context.Background())
				tg := target("auto", func(sp *function.Spec) {
					sp.KeepAlive, sp.KeepAliveAuto = function.Duration(tt.fallback), true
				})
				call(t, sc, tg)
				for _, d := range tt.idle {
					time.Sleep(d)
					call(t, sc, tg)
				}
				t0 := time.Now()
				if tt.alive >= 0 {
					time.Sleep(tt.alive)
					synctest.Wait()
					if _, live, _ := b.counts(); live != 1 {
						t.Fatalf("instance gone %s after the last call, want it kept", time.Since(t0))
					}
				}
				time.Sleep(tt.gone - time.Since(t0))
				synctest.Wait()
				if _, live, _ := b.counts(); live != 0 {
					t.Fatalf("instance still live %s after the last call", time.Since(t0))
				}
			})
		})
	}
}

// keep_alive auto with a timer-like function: once the policy has learned
// the period it unloads the instance after each call and pre-warms one just
// before the next expected call, which then runs warm without a start on its
// path; a pre-warmed instance no call uses is evicted after its window.
func TestKeepAliveAutoPreWarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{startDelay: 100 * time.Millisecond}
		sc := New(Config{EvictInterval: time.Second}, map[string]sandbox.Backend{"process": b}, nil, Observer{})
		defer sc.Close(context.Background())
		tg := target("timer", func(sp *function.Spec) { sp.KeepAliveAuto = true })
		const period = time.Minute
		var cold []bool
		// 6 calls: 5 idle times, enough to learn (the fallback, 10m,
		// keeps the instance warm meanwhile).
		for n := range 6 {
			if n > 0 {
				time.Sleep(period)
			}
			cold = append(cold, call(t, sc, tg).Cold)
		}
		if !cold[0] || slices.Contains(cold[1:], true) {
			t.Fatalf("cold flags while learning = %v, want only the first cold", cold)
		}
		// Learned: idle ~60 s -> pre-warm at 54 s, keep until 68 s.
		synctest.Wait()
		if _, live, _ := b.counts(); live != 0 {
			t.Fatalf("live = %d right after the call, want the instance unloaded until the pre-warm", live)
		}
		time.Sleep(50 * time.Second)
		synctest.Wait()
		if _, live, _ := b.counts(); live != 0 {
			t.Fatalf("live = %d 50 s after the call, want 0 before the pre-warm", live)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		starts, live, _ := b.counts()
		if live != 1 {
			t.Fatalf("live = %d 55 s after the call, want the pre-warmed instance", live)
		}
		time.Sleep(period - 55*time.Second)
		if r := call(t, sc, tg); r.Cold {
			t.Fatal("the call after a pre-warm was cold")
		}
		if s2, _, _ := b.counts(); s2 != starts {
			t.Fatalf("the call after a pre-warm started an instance (%d -> %d)", starts, s2)
		}
		// No further call: the next pre-warmed instance lives until the
		// end of its keep-alive window (68 s after the call), then goes.
		time.Sleep(56 * time.Second)
		synctest.Wait()
		if _, live, _ := b.counts(); live != 1 {
			t.Fatalf("live = %d 56 s after the last call, want the pre-warmed instance", live)
		}
		time.Sleep(14 * time.Second)
		synctest.Wait()
		if _, live, _ := b.counts(); live != 0 {
			t.Fatalf("live = %d 70 s after the last call, want the pre-warmed instance evicted", live)
		}
		ps := sc.KeepAlivePolicies()
		want := keepalive.Decision{PreWarm: 54 * time.Second, KeepAlive: 14 * time.Second, Representative: true}
		if len(ps) != 1 || ps[0].Function != "timer" || ps[0].Decision != want || ps[0].Stats.Samples != 6 {
			t.Fatalf("KeepAlivePolicies() = %+v, want %+v after 6 idle times", ps, want)
		}
	})
}

// A call that arrives before the pre-warm cancels it and starts cold; the
// learned histogram survives a redeploy.
func TestKeepAliveAutoEarlyCallAndRedeploy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{}
		sc := New(Config{EvictInterval: time.Second}, map[string]sandbox.Backend{"process": b}, nil, Observer{})
		defer sc.Close(context.Background())
		tg := target("timer", func(sp *function.Spec) { sp.KeepAliveAuto = true })
		call(t, sc, tg)
		for range 20 { // 20 idle times of 60 s: pre-warm at 54 s
			time.Sleep(time.Minute)
			call(t, sc, tg)
		}
		// Redeploy: a new version's pool keeps what was learned.
		v2 := target("timer", func(sp *function.Spec) { sp.KeepAliveAuto = true })
		v2.Version, v2.Digest = 2, "sha256:y"
		time.Sleep(10 * time.Second)
		base, _, _ := b.counts() // the first start and the pre-warms so far
		if r := call(t, sc, v2); !r.Cold {
			t.Fatal("early call on the new version was warm")
		}
		synctest.Wait()
		if _, live, _ := b.counts(); live != 0 {
			t.Fatalf("live = %d after the call, want unloaded (the new version kept the learned pre-warm)", live)
		}
		// One early idle time of 21 leaves the head (rank 2) at 60 s: the
		// pre-warm is due 54 s after this call; a call at 30 s beats it.
		time.Sleep(30 * time.Second)
		if r := call(t, sc, v2); !r.Cold {
			t.Fatal("call before the pre-warm was warm")
		}
		if starts, _, _ := b.counts(); starts != base+2 {
			t.Fatalf("starts = %d, want %d (one per early call)", starts, base+2)
		}
		// The cancelled pre-warm (due 24 s from now) must not start one; the
		// new decision (head now the 30 s bin: pre-warm at 27 s) does.
		time.Sleep(25 * time.Second)
		synctest.Wait()
		if starts, _, _ := b.counts(); starts != base+2 {
			t.Fatalf("starts = %d at 25 s, want %d: the cancelled pre-warm ran", starts, base+2)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if starts, live, _ := b.counts(); starts != base+3 || live != 1 {
			t.Fatalf("starts = %d, live = %d at 28 s, want the new pre-warm (%d, 1)", starts, live, base+3)
		}
	})
}
