package bench

// Replay drives a running wisp server with a trace of per-function arrivals
// under one keep-alive policy and reports cold starts and idle warm
// instance-seconds (`wisp bench replay`).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/client"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/store"
)

// replayHandler sleeps the milliseconds in the request body.
const replayHandler = `import time


def handle(req):
    ms = float(req.text or 0)
    if ms > 0:
        time.sleep(ms / 1000.0)
    return "ok"
`

// ReplayOptions describe one replay.
type ReplayOptions struct {
	// URL and Token reach the server's /metrics (the client has no call
	// for it).
	URL, Token string
	// KeepAlive is the policy under test, in trace time: "auto", or a
	// duration ("10m", "0"). Durations are divided by Speedup before they
	// are deployed, so that the policy covers the same share of the trace.
	KeepAlive string
	// Fallback is keep_alive auto's fixed keep-alive while it learns, in
	// trace time (default 10m, the server's default warm_instance_ttl).
	Fallback time.Duration
	// Speedup divides every arrival offset and duration (default 1).
	Speedup float64
	// MaxInFlight bounds calls in flight (default 64); a call that would
	// exceed it is sent late and counted in Late.
	MaxInFlight int
	// Poll is how often /metrics is read to integrate idle instances
	// (default 250ms).
	Poll time.Duration
	// Keep leaves the functions deployed afterwards.
	Keep bool
	Log  *slog.Logger
	// Progress, if set, is called after every call with the number done.
	Progress func(done int)
}

// ReplayResult is one policy's outcome.
type ReplayResult struct {
	KeepAlive string `json:"keep_alive"`
	// Deployed is the spec's keep_alive as deployed (scaled by Speedup).
	Deployed  string  `json:"deployed_keep_alive"`
	Speedup   float64 `json:"speedup"`
	Functions int     `json:"functions"`
	Calls     int     `json:"calls"`
	Cold      int     `json:"cold"`
	Errors    int     `json:"errors"`
	Late      int     `json:"late"` // calls sent more than 100ms after their time
	// ColdPercent is Cold over the calls that succeeded.
	ColdPercent float64 `json:"cold_percent"`
	// IdleInstanceSeconds is wisp_instances{state="idle"} of the trace's
	// functions integrated over the replay window (wall-clock seconds);
	// TraceIdleInstanceSeconds scales it back to trace time (× Speedup).
	IdleInstanceSeconds      float64       `json:"idle_instance_seconds"`
	TraceIdleInstanceSeconds float64       `json:"trace_idle_instance_seconds"`
	Window                   time.Duration `json:"window_ns"` // the replay window the integral covers
	Latency                  Percentiles   `json:"latency"`
}

// Replay deploys the trace's functions with opts.KeepAlive (replacing any of
// the same name; they are deleted first so that no learned state carries
// over), replays the arrivals, and deletes the functions unless opts.Keep.
func Replay(ctx context.Context, c *client.Client, tr *Trace, opts ReplayOptions) (*ReplayResult, error) {
	if opts.Speedup <= 0 {
		opts.Speedup = 1
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 64
	}
	if opts.Poll <= 0 {
		opts.Poll = 250 * time.Millisecond
	}
	if opts.Fallback <= 0 {
		opts.Fallback = function.DefaultKeepAlive
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) / opts.Speedup) }
	var kaLines, deployed string
	if function.KeepAliveAutoValue == strings.ToLower(strings.TrimSpace(opts.KeepAlive)) {
		fb := scale(opts.Fallback).Round(time.Millisecond)
		kaLines = fmt.Sprintf("keep_alive: %s\nkeep_alive_auto: true\n", fb)
		deployed = "auto (fallback " + fb.String() + ")"
	} else {
		d, err := function.ParseDuration(opts.KeepAlive)
		if err != nil {
			return nil, fmt.Errorf("--keep-alive: %w (or auto)", err)
		}
		ka := scale(d.D()).Round(time.Millisecond)
		kaLines = fmt.Sprintf("keep_alive: %s\n", ka)
		deployed = ka.String()
	}
	names := tr.Functions()
	code, err := packHandler()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if err := c.Delete(ctx, n); err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("delete %s before the replay: %w", n, err)
		}
		spec := fmt.Sprintf("name: %s\nruntime: python3\nhandler: handler.py\ntimeout: 120s\n%s", n, kaLines)
		if _, err := c.Deploy(ctx, n, []byte(spec), bytes.NewReader(code)); err != nil {
			return nil, fmt.Errorf("deploy %s: %w", n, err)
		}
	}
	if !opts.Keep {
		defer func() {
			for _, n := range names {
				if err := c.Delete(context.WithoutCancel(ctx), n); err != nil {
					opts.Log.Warn("delete replay function", "function", n, "err", err)
				}
			}
		}()
	}

	window := scale(tr.Span())
	res := &ReplayResult{KeepAlive: opts.KeepAlive, Deployed: deployed, Speedup: opts.Speedup,
		Functions: len(names), Calls: len(tr.Arrivals), Window: window}

	// Integrate idle instances over the window by polling /metrics.
	fnSet := make(map[string]bool, len(names))
	for _, n := range names {
		fnSet[n] = true
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	idleCh := make(chan float64, 1)
	t0 := time.Now()
	go func() {
		idleCh <- integrateIdle(pollCtx, opts, fnSet, t0, window)
	}()

	samples := make([]Sample, len(tr.Arrivals))
	sem := make(chan struct{}, opts.MaxInFlight)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for k, a := range tr.Arrivals {
		at := t0.Add(scale(a.At))
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				wg.Wait()
				return nil, ctx.Err()
			}
		}
		sem <- struct{}{}
		if time.Since(at) > 100*time.Millisecond {
			res.Late++
		}
		body := []byte(strconv.FormatFloat(float64(scale(a.Duration))/float64(time.Millisecond), 'f', 1, 64))
		wg.Go(func() {
			defer func() { <-sem }()
			t := time.Now()
			r, err := c.Invoke(ctx, a.Function, http.MethodPost, "", nil, body)
			s := Sample{Latency: time.Since(t), Err: err}
			if err == nil {
				s.Status, s.Cold = r.Status, r.Cold
			}
			samples[k] = s
			if opts.Progress != nil {
				mu.Lock()
				done++
				n := done
				mu.Unlock()
				opts.Progress(n)
			}
		})
	}
	wg.Wait()
	idle := <-idleCh
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var lat []time.Duration
	ok := 0
	for _, s := range samples {
		if s.Err != nil || s.Status/100 != 2 {
			res.Errors++
			continue
		}
		ok++
		lat = append(lat, s.Latency)
		if s.Cold {
			res.Cold++
		}
	}
	if ok > 0 {
		res.ColdPercent = 100 * float64(res.Cold) / float64(ok)
	}
	res.Latency = Compute(lat)
	res.IdleInstanceSeconds = idle
	res.TraceIdleInstanceSeconds = idle * opts.Speedup
	return res, nil
}

// integrateIdle sums idle instances of fns × poll interval from t0 until
// t0+window (left Riemann sum over the polls; each poll's value holds until
// the next).
func integrateIdle(ctx context.Context, o ReplayOptions, fns map[string]bool, t0 time.Time, window time.Duration) float64 {
	hc := &http.Client{Timeout: 5 * time.Second}
	end := t0.Add(window)
	var sum float64
	last, lastVal := t0, 0.0
	tick := time.NewTicker(o.Poll)
	defer tick.Stop()
	for {
		v, err := idleInstances(ctx, hc, o, fns)
		now := time.Now()
		if now.After(end) {
			now = end
		}
		sum += lastVal * now.Sub(last).Seconds()
		last = now
		if err != nil {
			o.Log.Warn("read /metrics", "err", err)
		} else {
			lastVal = v
		}
		if !now.Before(end) {
			return sum
		}
		select {
		case <-ctx.Done():
			return sum
		case <-tick.C:
		}
	}
}

// idleInstances reads wisp_instances{state="idle"} for fns from /metrics.
func idleInstances(ctx context.Context, hc *http.Client, o ReplayOptions, fns map[string]bool) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(o.URL, "/")+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return sumIdle(resp.Body, fns)
}

// sumIdle sums the samples of wisp_instances with state="idle" whose
// function label is in fns, from Prometheus text exposition.
func sumIdle(r io.Reader, fns map[string]bool) (float64, error) {
	var sum float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "wisp_instances{") {
			continue
		}
		labels, value, ok := strings.Cut(line[len("wisp_instances{"):], "} ")
		if !ok {
			continue
		}
		l := parseLabels(labels)
		if l["state"] != "idle" || !fns[l["function"]] {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// parseLabels parses `a="x",b="y"` (values without escaped quotes, as
// wisp's labels are).
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		k, rest, ok := strings.Cut(s, `="`)
		if !ok {
			break
		}
		v, rest, _ := strings.Cut(rest, `"`)
		out[strings.TrimSpace(k)] = v
		s = strings.TrimPrefix(rest, ",")
	}
	return out
}

func packHandler() ([]byte, error) {
	dir, err := os.MkdirTemp("", "wisp-replay-")
	if err != nil {
		return nil, fmt.Errorf("replay handler: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "handler.py"), []byte(replayHandler), 0o644); err != nil {
		return nil, fmt.Errorf("replay handler: %w", err)
	}
	var buf bytes.Buffer
	if err := store.Pack(dir, &buf, nil); err != nil {
		return nil, fmt.Errorf("pack the replay handler: %w", err)
	}
	return buf.Bytes(), nil
}

func isNotFound(err error) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}
