package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/client"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/store"
)

// waitActivation polls an async activation until its state is final.
func waitActivation(t *testing.T, c *client.Client, id string, within time.Duration) *store.Activation {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		a, err := c.Activation(context.Background(), id)
		if err == nil && (a.State == "succeeded" || a.State == "failed") {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("activation %s not finished within %s: %+v %v", id, within, a, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// callbackSink records the callbacks it receives.
type callbackSink struct {
	mu   sync.Mutex
	got  []http.Header
	body []string
	srv  *httptest.Server
}

func newCallbackSink(t *testing.T) *callbackSink {
	s := &callbackSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.got = append(s.got, r.Header.Clone())
		s.body = append(s.body, string(b))
		s.mu.Unlock()
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *callbackSink) wait(t *testing.T, id string) (http.Header, string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for i, h := range s.got {
			if h.Get("X-Wisp-Activation-Id") == id {
				b := s.body[i]
				s.mu.Unlock()
				return h, b
			}
		}
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no callback for %s", id)
	return nil, ""
}

func TestAsyncRetriesAndDeadLetters(t *testing.T) {
	cfg := testConfig(t, function.ModeProcess)
	cfg.Async.BackoffBase = function.Duration(50 * time.Millisecond)
	cfg.Async.BackoffMax = function.Duration(200 * time.Millisecond)
	h := startServer(t, cfg, "")
	ctx := context.Background()
	sink := newCallbackSink(t)
	cb := http.Header{"X-Callback-Url": {sink.srv.URL + "/done"}}

	// A call that succeeds: 202 at once, then the result and a callback.
	h.mustDeploy(fn{spec: "name: upper\nruntime: python3\nhandler: h.py\n",
		files: map[string]string{"h.py": "def handle(req):\n    return req.text.upper()\n"}})
	id, err := h.c.InvokeAsync(ctx, "upper", "", cb, []byte("queued call"))
	if err != nil {
		t.Fatal(err)
	}
	a := waitActivation(t, h.c, id, 20*time.Second)
	if a.State != "succeeded" || a.Attempts != 1 || string(a.Result) != "QUEUED CALL" || a.Source != "api" {
		t.Fatalf("async success: %+v", a)
	}
	hdr, body := sink.wait(t, id)
	if body != "QUEUED CALL" || hdr.Get("X-Wisp-Status") != "succeeded" || hdr.Get("X-Wisp-Function") == "" {
		t.Fatalf("callback: %q %v", body, hdr)
	}

	// A function that always raises, with retries: 2, runs three times and
	// ends in the dead-letter list; the callback says failed.
	h.mustDeploy(fn{spec: "name: flaky\nruntime: python3\nhandler: h.py\nretries: 2\n",
		files: map[string]string{"h.py": "def handle(req):\n    raise RuntimeError('downstream is down')\n"}})
	id, err = h.c.InvokeAsync(ctx, "flaky", "", cb, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	a = waitActivation(t, h.c, id, 20*time.Second)
	if a.State != "failed" || a.Attempts != 3 || a.Status != "error" || !strings.Contains(a.Error, "downstream is down") {
		t.Fatalf("retried failure: %+v", a)
	}
	if hdr, _ := sink.wait(t, id); hdr.Get("X-Wisp-Status") != "failed" {
		t.Fatalf("failure callback: %v", hdr)
	}
	dead, err := h.c.AsyncActivations(ctx, store.ActivationFilter{}, "failed")
	if err != nil || len(dead) != 1 || dead[0].ID != id {
		t.Fatalf("dead letters: %+v %v", dead, err)
	}

	// A 4xx is not retried.
	h.mustDeploy(fn{spec: "name: picky\nruntime: python3\nhandler: h.py\nretries: 5\n",
		files: map[string]string{"h.py": "def handle(req):\n    return (422, 'bad input')\n"}})
	pid, _ := h.c.InvokeAsync(ctx, "picky", "", nil, nil)
	if a := waitActivation(t, h.c, pid, 20*time.Second); a.State != "failed" || a.Attempts != 1 || a.StatusCode != 422 {
		t.Fatalf("4xx: %+v", a)
	}

	// Fix the function and redrive the dead letter: it runs again, once.
	h.mustDeploy(fn{spec: "name: flaky\nruntime: python3\nhandler: h.py\nretries: 2\n",
		files: map[string]string{"h.py": "def handle(req):\n    return 'recovered'\n"}})
	if err := h.c.Redrive(ctx, id); err != nil {
		t.Fatal(err)
	}
	a = waitActivation(t, h.c, id, 20*time.Second)
	if a.State != "succeeded" || a.Attempts != 1 || string(a.Result) != "recovered" {
		t.Fatalf("after redrive: %+v", a)
	}
	if err := h.c.Redrive(ctx, id); err == nil {
		t.Fatal("redriving a succeeded call was accepted")
	}

	// Bad requests are refused before anything is queued.
	for _, c := range []struct {
		name   string
		header http.Header
		want   int
	}{
		{"nope", nil, 404},
		{"upper", http.Header{"X-Callback-Url": {"ftp://example.com/x"}}, 400},
		{"upper", http.Header{"X-Callback-Url": {"not a url"}}, 400},
	} {
		_, err := h.c.InvokeAsync(ctx, c.name, "", c.header, nil)
		if ce, ok := err.(*client.Error); !ok || ce.Status != c.want {
			t.Errorf("async %s %v: %v, want HTTP %d", c.name, c.header, err, c.want)
		}
	}
	res := h.call("upper", "", "")
	req, _ := http.NewRequest(http.MethodPost, h.url+"/async-function/upper", strings.NewReader(strings.Repeat("x", int(cfg.Gateway.MaxBodySize)+1)))
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 413 {
		t.Errorf("oversized async body: %v %v", r.StatusCode, err)
	}
	_ = res
}

// TestAsyncSurvivesKill9 queues 1000 calls, kills the server with SIGKILL
// while they run, restarts it and checks every call completes: none lost,
// and a call runs more than once only if it was running at the kill (the
// documented at-least-once delivery).
func TestAsyncSurvivesKill9(t *testing.T) {
	const calls, workers = 1000, 4
	seen := map[string]int{}
	var mu sync.Mutex
	report := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen[string(b)]++
		mu.Unlock()
	}))
	defer report.Close()

	cfg := testConfig(t, function.ModeProcess)
	bin := buildWisp(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(t.TempDir(), "wisp.yaml")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf("process:\n  cgroup_root: %s\nasync:\n  workers: %d\nlog:\n  level: warn\n",
		cfg.Process.CgroupRoot, workers)), 0o644)
	port := freePort(t)
	srv := startBinary(t, bin, dir, cfgFile, port)
	c := newClient("http://" + port)
	h := &harness{t: t, c: c, url: "http://" + port, dataDir: dir, cfg: cfg}
	// Each run reports its activation id to the test, then takes 20 ms.
	h.mustDeploy(fn{spec: fmt.Sprintf("name: work\nruntime: python3\nhandler: h.py\nnetwork: host\nmax_instances: %d\n"+
		"environment: [\"REPORT=%s\"]\n", workers, report.URL),
		files: map[string]string{"h.py": "import os, time, urllib.request\n" +
			"def handle(req):\n" +
			"    urllib.request.urlopen(os.environ['REPORT'], data=req.activation_id.encode(), timeout=5).read()\n" +
			"    time.sleep(0.02)\n" +
			"    return 'done'\n"}})

	ids := make([]string, calls)
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < calls; i += 16 {
				id, err := c.InvokeAsync(context.Background(), "work", "", nil, []byte(fmt.Sprint(i)))
				if err != nil {
					errs <- err
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("enqueue: %v", err)
	}
	srv.Process.Kill() // kill -9 while calls run
	srv.Wait()
	mu.Lock()
	before := 0
	for _, n := range seen {
		before += n
	}
	mu.Unlock()
	t.Logf("%d of %d calls had started when the server was killed", before, calls)
	if before >= calls {
		t.Fatalf("every call ran before the kill (%d); the test needs queued calls at the kill", before)
	}

	srv2 := startBinary(t, bin, dir, cfgFile, port)
	defer func() {
		srv2.Process.Signal(syscall.SIGTERM)
		srv2.Wait()
		assertNoLeftovers(t, cfg.Process.CgroupRoot)
	}()
	deadline := time.Now().Add(3 * time.Minute)
	for _, id := range ids {
		a := waitActivation(t, c, id, time.Until(deadline))
		if a.State != "succeeded" || string(a.Result) != "done" {
			t.Fatalf("activation %s after restart: %+v", id, a)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, id := range ids {
		switch n := seen[id]; {
		case n == 0:
			t.Errorf("call %s never ran", id)
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("after restart: all %d calls succeeded; %d ran twice (running at the kill)", calls, dups)
	if dups > workers {
		t.Errorf("%d duplicate runs; at most the %d running at the kill may run again", dups, workers)
	}
}
