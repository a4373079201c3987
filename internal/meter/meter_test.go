package meter

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/energy"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// fakeSource is a counter the test advances.
type fakeSource struct {
	mu sync.Mutex
	j  float64
}

func (f *fakeSource) Kind() energy.Kind { return energy.KindRAPL }
func (f *fakeSource) Read() (energy.Reading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return energy.Reading{Source: energy.KindRAPL, Joules: f.j, Time: time.Now()}, nil
}
func (f *fakeSource) Describe() string { return "fake counter" }
func (f *fakeSource) Close() error     { return nil }
func (f *fakeSource) add(j float64)    { f.mu.Lock(); f.j += j; f.mu.Unlock() }

// fakeBackend makes instances whose CPU time the test sets.
type fakeBackend struct {
	mu  sync.Mutex
	cpu map[string]time.Duration
	n   int
}

func (b *fakeBackend) Name() string                   { return "fake" }
func (b *fakeBackend) Check(context.Context) error    { return nil }
func (b *fakeBackend) Cleanup(context.Context) error  { return nil }
func (b *fakeBackend) set(id string, d time.Duration) { b.mu.Lock(); b.cpu[id] = d; b.mu.Unlock() }
func (b *fakeBackend) Start(_ context.Context, o sandbox.StartOptions) (sandbox.Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n++
	return &fakeInstance{b: b, id: o.ID}, nil
}

type fakeInstance struct {
	b  *fakeBackend
	id string
}

func (i *fakeInstance) ID() string { return i.id }
func (i *fakeInstance) Invoke(context.Context, *sandbox.Request) (*sandbox.Response, error) {
	return &sandbox.Response{Status: 200}, nil
}
func (i *fakeInstance) Done() <-chan struct{} { return nil }
func (i *fakeInstance) Serial() bool          { return false }

func (i *fakeInstance) Usage() sandbox.Usage {
	i.b.mu.Lock()
	defer i.b.mu.Unlock()
	return sandbox.Usage{CPUTime: i.b.cpu[i.id]}
}
func (i *fakeInstance) Close() error { return nil }

// procStat writes a /proc/stat whose busy time is busy (USER_HZ ticks).
func procStat(t *testing.T, path string, busyTicks, idleTicks uint64) {
	t.Helper()
	data := fmt.Sprintf("cpu  %d 0 0 %d 0 0 0 0 0 0\ncpu0 %d 0 0 %d 0 0 0 0 0 0\n", busyTicks, idleTicks, busyTicks, idleTicks)
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestAttributionAcrossALifetime(t *testing.T) {
	src := &fakeSource{}
	stat := filepath.Join(t.TempDir(), "stat")
	procStat(t, stat, 0, 0)
	m, err := New(Options{Source: src, ProcStat: stat, IdleWatts: 0})
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBackend{cpu: map[string]time.Duration{}}
	b := m.WrapBackend(fb)
	spec := &function.Spec{Name: "f"}
	m.Sample() // baseline

	// Window 1: an instance starts (300 ms of CPU to get ready) and serves
	// a call (another 200 ms). The node was busy 1 s and used 10 J.
	fb.set("i1", 300*time.Millisecond)
	inst, err := b.Start(context.Background(), sandbox.StartOptions{ID: "i1", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Invoke(context.Background(), &sandbox.Request{}); err != nil {
		t.Fatal(err)
	}
	fb.set("i1", 500*time.Millisecond)
	if j, _ := m.ObserveCall("f", 200*time.Millisecond); j != 0 {
		t.Fatalf("estimate before any window = %g; want none", j)
	}
	procStat(t, stat, 100, 100) // 1 s busy
	src.add(10)
	m.Sample()

	// Window 2: the instance idles (50 ms of CPU), then is closed having
	// used 20 ms more. Node busy 0.5 s, 4 J.
	fb.set("i1", 570*time.Millisecond)
	if err := inst.Close(); err != nil {
		t.Fatal(err)
	}
	procStat(t, stat, 150, 250)
	src.add(4)
	m.Sample()

	s := m.Summarize(time.Hour)
	// Window 1: 10 J shared by CPU: cold start 0.3/1, execution 0.2/1.
	// Window 2: 4 J: idle instance 0.07/0.5.
	want := map[string]float64{"node": 14, "cold": 3, "exec": 2, "idle": 4 * 0.07 / 0.5}
	got := map[string]float64{"node": s.Node, "cold": s.ColdStart, "exec": s.Function, "idle": s.IdleInst}
	for k, w := range want {
		if math.Abs(got[k]-w) > 1e-9 {
			t.Errorf("%s = %g J, want %g", k, got[k], w)
		}
	}
	parts := s.Idle + s.Function + s.ColdStart + s.IdleInst + s.Platform + s.Other
	if math.Abs(parts-s.Node) > 1e-9*s.Node {
		t.Errorf("parts add up to %g J, node %g J", parts, s.Node)
	}
	if math.Abs(s.SPUE-7) > 1e-9 {
		t.Errorf("sPUE = %g, want 14/2", s.SPUE)
	}
	if math.Abs(s.Functions["f"]-(3+2+4*0.07/0.5)) > 1e-9 {
		t.Errorf("function f = %g J", s.Functions["f"])
	}
	// A call after window 1: 2 J per 0.2 s of execution.
	if j, src := m.ObserveCall("f", 100*time.Millisecond); math.Abs(j-1) > 1e-9 || src != energy.KindRAPL {
		t.Errorf("estimate = %g J from %q; want 1 J from rapl", j, src)
	}
}

func TestStagesPassThrough(t *testing.T) {
	m, err := New(Options{Source: &fakeSource{}})
	if err != nil {
		t.Fatal(err)
	}
	b := m.WrapBackend(&fakeBackend{cpu: map[string]time.Duration{}})
	inst, _ := b.Start(context.Background(), sandbox.StartOptions{ID: "x", Spec: &function.Spec{Name: "f"}})
	if _, ok := inst.(sandbox.StageReporter); !ok {
		t.Fatal("wrapped instance hides the stage breakdown")
	}
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without a source succeeded")
	}
}
