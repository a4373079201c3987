package integration

import (
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/function"
)

// metricValue reads one sample of /metrics (0 when absent).
func metricValue(t *testing.T, h *harness, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(h.metrics())
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Calls queued inside a busy instance (pipelining) behind a call that hangs
// are not lost when the hanging call is killed at its timeout: they never
// started, so they go to a new instance and succeed. The hanging call is
// still answered 504 within a second of its limit.
func TestPipelineBehindHangingCall(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			cfg := testConfig(t, mode)
			// Calls may queue behind one that has run for a while (the
			// default 2ms counts the running call's time too).
			cfg.Execution.PipelineMaxWait = function.Duration(time.Second)
			h := startServer(t, cfg, "")
			h.mustDeploy(probe("pipe", "timeout: 3s\nmax_instances: 1\nkeep_alive: 10m\n"))
			// The pool learns that its calls are short.
			for range 10 {
				wantStatus(t, h.call("pipe", "?op=pid", ""), 200)
			}
			series := `wisp_pipelined_calls_total{function="pipe"}`
			before := metricValue(t, h, series)

			hang := make(chan *resultAt, 1)
			go func() {
				t0 := time.Now()
				res := h.call("pipe", "?op=sleep&s=30", "")
				hang <- &resultAt{res.Status, time.Since(t0)}
			}()
			// It is running; the calls made now queue behind it (within
			// the 1s pipeline_max_wait) and have 0.8s left when it is
			// killed, for a new instance (a container's cold start).
			time.Sleep(800 * time.Millisecond)
			var wg sync.WaitGroup
			statuses := make(chan int, 6)
			for range 6 {
				wg.Go(func() { statuses <- h.call("pipe", "?op=pid", "").Status })
			}
			wg.Wait()
			close(statuses)
			for s := range statuses {
				if s != 200 {
					t.Errorf("a call queued behind the hanging one got HTTP %d; want 200 from another instance", s)
				}
			}
			r := <-hang
			if r.status != http.StatusGatewayTimeout || r.took > 4*time.Second {
				t.Errorf("hanging call: HTTP %d after %v; want 504 within a second of its 3s timeout", r.status, r.took)
			}
			if n := metricValue(t, h, series) - before; n < 1 {
				t.Errorf("%s grew by %v; the calls were not queued inside the busy instance, so this test proves nothing", series, n)
			}
			if n := metricValue(t, h, `wisp_redispatched_calls_total{function="pipe"}`); n < 1 {
				t.Errorf("no call was sent to another instance (wisp_redispatched_calls_total %v)", n)
			}
		})
	}
}

type resultAt struct {
	status int
	took   time.Duration
}
