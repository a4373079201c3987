package process

import (
	"context"
	"fmt"
	"os"
	goruntime "runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// BenchmarkZygoteColdStartFigures measures the Python hello's cold start
// (Start and the first call, as keep_alive 0 does; Close reported apart)
// forked from a zygote and made on demand, interleaved in one run, with
// where the time goes. One pass is the whole measurement, so run it once;
// WISP_ZYGOTE_BENCH_N sets the number of cold starts of each kind (50).
//
//	go test -v -run '^$' -bench ZygoteColdStartFigures -benchtime 1x ./internal/sandbox/process/
func BenchmarkZygoteColdStartFigures(b *testing.B) { zygoteColdStartFigures(b) }

func zygoteColdStartFigures(t testing.TB) {
	n := 50
	if v, err := strconv.Atoi(os.Getenv("WISP_ZYGOTE_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	testenv.RequireFile(t, "/usr/bin/python3", "python3")
	zb := zygoteBackend(t)
	pb := testBackend(t)
	s := spec(t, "python3", "handler.py", func(s *function.Spec) { s.KeepAlive = 0 })
	code := codeDir(t, map[string]string{"handler.py": "def handle(req):\n    return 'hello ' + req.text\n"})
	req := &sandbox.Request{Method: "POST", Path: "/", Body: []byte("ada")}

	type sample struct {
		total, close, call time.Duration
		stages             sandbox.StartStages
		zt                 zygoteTimes
	}
	seq := 0
	once := func(b *Backend) sample {
		seq++
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		t0 := time.Now()
		inst, err := b.Start(ctx, sandbox.StartOptions{ID: fmt.Sprintf("bench-%d", seq), Spec: s, CodeDir: code})
		if err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		resp, err := inst.Invoke(ctx, req)
		if err != nil || string(resp.Body) != "hello ada" {
			t.Fatalf("invoke: %v %v", resp, err)
		}
		sm := sample{total: time.Since(t0), call: time.Since(started), stages: inst.(*instance).stages}
		if zc := inst.(*instance).sb.zc; zc != nil {
			sm.zt = zc.times
		} else if b == zb {
			t.Fatal("a zygote cold start took the ordinary path")
		}
		t1 := time.Now()
		if err := inst.Close(); err != nil {
			t.Fatal(err)
		}
		sm.close = time.Since(t1)
		return sm
	}
	// A few of each first: page cache, the zygote's first children.
	for range 3 {
		once(zb)
		once(pb)
	}
	var zs, ps []sample
	for range n {
		zs = append(zs, once(zb))
		ps = append(ps, once(pb))
	}
	line := func(name string, all []sample, get func(sample) time.Duration) {
		ds := make([]time.Duration, len(all))
		for i, sm := range all {
			ds[i] = get(sm)
		}
		slices.Sort(ds)
		q := func(p float64) float64 {
			return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
		}
		t.Logf("%-52s p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms", name, q(0.50), q(0.99), q(1))
	}
	t.Logf("Python hello, %d cold starts of each kind, interleaved; GOMAXPROCS %d, %d CPUs", n, goruntime.GOMAXPROCS(0), goruntime.NumCPU())
	line("zygote: Start + first call", zs, func(s sample) time.Duration { return s.total })
	line("  fork request -> pid (Go + zygote + clone)", zs, func(s sample) time.Duration { return s.zt.fork })
	line("    of which clone(2) in the zygote", zs, func(s sample) time.Duration { return s.zt.clone })
	line("  start -> load frame sent", zs, func(s sample) time.Duration { return s.zt.load })
	line("  load sent -> ready (child set-up left + import)", zs, func(s sample) time.Duration { return s.zt.ready - s.zt.load })
	line("    of which the host's init + handler import", zs, func(s sample) time.Duration { return s.stages.Import })
	line("  first call", zs, func(s sample) time.Duration { return s.call })
	line("  Close (not on the call's path)", zs, func(s sample) time.Duration { return s.close })
	line("on demand: Start + first call", ps, func(s sample) time.Duration { return s.total })
	line("  sandbox (spawn: clone, init, mounts)", ps, func(s sample) time.Duration { return s.stages.Sandbox })
	line("  interpreter start", ps, func(s sample) time.Duration { return s.stages.Runtime })
	line("  host init + handler import", ps, func(s sample) time.Duration { return s.stages.Import })
	line("  first call", ps, func(s sample) time.Duration { return s.call })
	line("  Close (not on the call's path)", ps, func(s sample) time.Duration { return s.close })
}
