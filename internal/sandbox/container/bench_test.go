package container

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// BenchmarkColdStartFigures measures cold starts (Start and the first
// call, then Close, as keep_alive 0 does) on demand and from spares, warm
// calls, and `ctr run --rm` of the same image as the baseline. One pass is
// the whole measurement, so run it once:
//
//	go test -v -run '^$' -bench ColdStartFigures -benchtime 1x ./internal/sandbox/container/
func BenchmarkColdStartFigures(b *testing.B) { coldStartFigures(b) }

func coldStartFigures(t testing.TB) {
	const n = 30
	code := codeDir(t, map[string]string{"handler.py": "def handle(req):\n    return 'hello ' + req.text\n"})
	s := spec(t, "python3", "handler.py", func(s *function.Spec) { s.KeepAlive = 0 })
	req := &sandbox.Request{Method: "POST", Path: "/", Body: []byte("ada")}

	coldOnce := func(b *Backend) (time.Duration, Stages) {
		ctx := timeout(t, time.Minute)
		t0 := time.Now()
		inst, err := b.Start(ctx, sandbox.StartOptions{ID: instanceID(), Spec: s, CodeDir: code})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := inst.Invoke(ctx, req); err != nil {
			t.Fatal(err)
		}
		d, st := time.Since(t0), inst.(*instance).stages
		if err := inst.Close(); err != nil {
			t.Fatal(err)
		}
		return d, st
	}
	cold := func(b *Backend) (totals []time.Duration, stages []Stages) {
		for range n {
			d, st := coldOnce(b)
			totals, stages = append(totals, d), append(stages, st)
		}
		return totals, stages
	}

	b := testBackend(t)
	if err := b.Prepare(context.Background(), "python3"); err != nil {
		t.Fatal(err)
	}
	totals, stages := cold(b)
	report(t, "cold start on demand (Start + first call)", totals)
	for _, st := range []struct {
		name string
		get  func(Stages) time.Duration
	}{
		{"  image lookup", func(s Stages) time.Duration { return s.Image }},
		{"  snapshot view + container create", func(s Stages) time.Duration { return s.Container }},
		{"  task create (shim + runc create)", func(s Stages) time.Duration { return s.Task }},
		{"  task start", func(s Stages) time.Duration { return s.Start }},
		{"  shim connect", func(s Stages) time.Duration { return s.Connect }},
		{"  python start, host init, handler import", func(s Stages) time.Duration { return s.Ready }},
		{"    of which the host's own init + import", func(s Stages) time.Duration { return s.HostInit }},
	} {
		var ds []time.Duration
		for _, s := range stages {
			ds = append(ds, st.get(s))
		}
		report(t, st.name, ds)
	}

	sp := testBackend(t, func(o *Options) { o.Spares = 2 })
	if err := sp.Prepare(context.Background(), "python3"); err != nil {
		t.Fatal(err)
	}
	waitSpares(t, sp, "python3", 2)
	var spTotals, spStart, spInit []time.Duration
	for range n {
		waitSpares(t, sp, "python3", 1) // a cold start every so often, not a burst
		d, st := coldOnce(sp)
		if !st.Spare {
			t.Fatalf("started on demand: %+v", st)
		}
		spTotals, spStart, spInit = append(spTotals, d), append(spStart, st.Total), append(spInit, st.HostInit)
	}
	report(t, "cold start from a spare (Start + first call)", spTotals)
	report(t, "  Start (claim, link code, limits, load)", spStart)
	report(t, "  handler import (host's ready frame)", spInit)

	// Warm calls on one instance.
	inst, err := b.Start(timeout(t, time.Minute), sandbox.StartOptions{ID: instanceID(), Spec: s, CodeDir: code})
	if err != nil {
		t.Fatal(err)
	}
	var warm []time.Duration
	for range 2000 {
		t0 := time.Now()
		if _, err := inst.Invoke(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		warm = append(warm, time.Since(t0))
	}
	inst.Close()
	report(t, "warm call", warm)

	// Baseline: ctr run --rm of the same image, python3 -S -c pass.
	bi, err := b.imageFor(b.nsCtx(context.Background()), "python3", "")
	if err != nil {
		t.Fatal(err)
	}
	var ctr []time.Duration
	for i := range 10 {
		t0 := time.Now()
		out, err := exec.Command("ctr", "-n", testNamespace, "run", "--rm", "--read-only", bi.img.Name(),
			fmt.Sprintf("ctr-baseline-%d-%d", os.Getpid(), i), "/usr/bin/python3", "-S", "-c", "pass").CombinedOutput()
		if err != nil {
			t.Fatalf("ctr run: %v: %s", err, out)
		}
		ctr = append(ctr, time.Since(t0))
	}
	report(t, "ctr run --rm (python3 -S -c pass)", ctr)
	// ctr's containers live in cgroup /NAMESPACE/ID; runc leaves the parent.
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + testNamespace)
	dirs2, _ := filepath.Glob("/sys/fs/cgroup/" + testNamespace)
	for _, d := range append(dirs, dirs2...) {
		_ = os.Remove(d)
	}
}

// readySpares counts the ready spares of rt.
func (b *Backend) readySpares(rt string) int {
	return b.spares.Ready(rt)
}

func waitSpares(t testing.TB, b *Backend, rt string, want int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for b.readySpares(rt) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d spares of %s after a minute, want %d", b.readySpares(rt), rt, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func report(t testing.TB, what string, ds []time.Duration) {
	t.Helper()
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
	t.Logf("%-45s n=%-5d p50 %-10s p99 %-10s min %-10s max %s", what, len(s), ms(q(0.5)), ms(q(0.99)), ms(s[0]), ms(s[len(s)-1]))
}
