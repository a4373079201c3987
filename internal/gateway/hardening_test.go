package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/scheduler"
	"github.com/wisp-faas/wisp/internal/store"
)

// What a tenant key may not reach through the side doors: metrics that
// name every function, NATS subjects of others, callbacks into the host.
func TestTenantSideDoors(t *testing.T) {
	tn := newTenancy(t, echoTarget())
	key := tn.namespace(`{"name":"team-a"}`)
	tn.deploy(key, "f")
	if w := tn.req(key, http.MethodGet, "/metrics", ""); w.Code != http.StatusForbidden {
		t.Errorf("tenant /metrics: HTTP %d", w.Code)
	}
	if w := tn.req(tn.admin, http.MethodGet, "/metrics", ""); w.Code != http.StatusOK {
		t.Errorf("admin /metrics: HTTP %d", w.Code)
	}
	for subject, want := range map[string]int{">": 403, "orders.created": 403, "team-b.orders": 403, "team-a.orders.>": 201} {
		body := `{"name":"n` + strings.NewReplacer(".", "-", ">", "all").Replace(subject) + `","function":"f","type":"nats","subject":"` + subject + `"}`
		if w := tn.req(key, http.MethodPost, "/v1/triggers", body); w.Code != want {
			t.Errorf("tenant NATS trigger on %q: HTTP %d %s, want %d", subject, w.Code, w.Body, want)
		}
	}
	for cb, want := range map[string]int{
		"http://127.0.0.1:9/x": 403, "http://localhost/x": 403, "http://169.254.169.254/latest": 403,
		"http://10.0.0.1/hook": 403, "http://[::1]/x": 403, "http://[fe80::1%25eth0]/x": 403, "https://hooks.example.com/x": 202,
	} {
		r := httptest.NewRequest(http.MethodPost, "/async-function/f", nil)
		r.Header.Set(HeaderCallbackURL, cb)
		if w := tn.do(key, r); w.Code != want {
			t.Errorf("tenant callback %s: HTTP %d %s, want %d", cb, w.Code, w.Body, want)
		}
	}
	// The job's namespace decides: calls of the default namespace may call
	// back local services, a tenant's may not, whoever queues them.
	tn.deploy(tn.admin, "f")
	for path, want := range map[string]int{"/async-function/f": 202, "/async-function/f.team-a": 403} {
		r := httptest.NewRequest(http.MethodPost, path, nil)
		r.Header.Set(HeaderCallbackURL, "http://127.0.0.1:9/x")
		if w := tn.do(tn.admin, r); w.Code != want {
			t.Errorf("admin %s with a local callback: HTTP %d %s, want %d", path, w.Code, w.Body, want)
		}
	}
}

// A refused duplicate trigger leaves the running one alone; a namespace's
// removal stops its triggers and forgets its activations and queued calls.
func TestTriggersAndNamespaceRemoval(t *testing.T) {
	tn := newTenancy(t, echoTarget())
	key := tn.namespace(`{"name":"team-a"}`)
	tn.deploy(key, "f")
	tn.deploy(key, "g")
	if w := tn.req(key, http.MethodPost, "/v1/triggers", `{"name":"nightly","function":"f","type":"cron","schedule":"@hourly"}`); w.Code != 201 {
		t.Fatalf("create: HTTP %d %s", w.Code, w.Body)
	}
	if w := tn.req(key, http.MethodPost, "/v1/triggers", `{"name":"nightly","function":"g","type":"cron","schedule":"@every 1s"}`); w.Code != http.StatusConflict {
		t.Fatalf("duplicate: HTTP %d %s", w.Code, w.Body)
	}
	if tr, ok := tn.triggers.get("team-a/nightly"); !ok || tr.Function != "f" || tr.Schedule != "@hourly" {
		t.Fatalf("the running trigger after a refused duplicate: %+v %v", tr, ok)
	}
	var list []TriggerView
	w := tn.req(key, http.MethodGet, "/v1/triggers", "")
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list) != 1 {
		t.Fatalf("list: %s", w.Body)
	}
	other := tn.namespace(`{"name":"team-b"}`)
	if w := tn.req(other, http.MethodGet, "/v1/triggers", ""); strings.Contains(w.Body.String(), "nightly") {
		t.Fatalf("team-b sees team-a's trigger: %s", w.Body)
	}
	if w := tn.req(other, http.MethodDelete, "/v1/triggers/nightly", ""); w.Code != 404 {
		t.Fatalf("team-b deletes team-a's trigger: HTTP %d", w.Code)
	}
	// A call leaves an activation.
	call := tn.req(key, http.MethodPost, "/function/f", "")
	id := call.Header().Get(HeaderActivationID)
	tn.st.Flush(context.Background())

	if w := tn.req(tn.admin, http.MethodDelete, "/v1/namespaces/team-a?force=true", ""); w.Code != 204 {
		t.Fatalf("remove: HTTP %d %s", w.Code, w.Body)
	}
	if _, ok := tn.triggers.get("team-a/nightly"); ok {
		t.Error("the removed namespace's trigger still runs")
	}
	// A namespace made again under the same name starts empty.
	again := tn.namespace(`{"name":"team-a"}`)
	if w := tn.req(again, http.MethodGet, "/v1/activations/"+id, ""); w.Code != 404 {
		t.Errorf("the new team-a reads the old one's activation: HTTP %d", w.Code)
	}
	if w := tn.req(again, http.MethodGet, "/v1/triggers", ""); strings.Contains(w.Body.String(), "nightly") {
		t.Errorf("the new team-a has the old one's trigger: %s", w.Body)
	}
}

// Raising a quota while calls run keeps counting them: they are released
// from the same count, and later calls get in.
func TestQuotaUpdateWithCallsInFlight(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	sch := &fakeScheduler{invoke: func(_ context.Context, t *scheduler.Target, _ *sandbox.Request) (*scheduler.Result, error) {
		if strings.HasPrefix(t.Name, "slow.") {
			entered <- struct{}{}
			<-release
		}
		return &scheduler.Result{Response: &sandbox.Response{Status: 200}}, nil
	}}
	tn := newTenancy(t, sch)
	key := tn.namespace(`{"name":"q","max_concurrency":1}`)
	tn.deploy(key, "slow")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); tn.req(key, http.MethodPost, "/function/slow", "") }()
	<-entered
	if w := tn.req(tn.admin, http.MethodPut, "/v1/namespaces/q", `{"max_concurrency":2}`); w.Code != 200 {
		t.Fatalf("update: HTTP %d %s", w.Code, w.Body)
	}
	close(release)
	wg.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var v NamespaceView
		w := tn.req(key, http.MethodGet, "/v1/namespaces/q", "")
		if json.Unmarshal(w.Body.Bytes(), &v) == nil && v.InFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("in_flight never came back to 0: %s", w.Body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		if w := tn.req(key, http.MethodPost, "/function/slow", ""); w.Code != 200 {
			t.Fatalf("a call after the update: HTTP %d %s", w.Code, w.Body)
		}
	}
}

// A sequence whose step answers 4xx answers that status, and its async
// call fails at once rather than being retried.
func TestSequenceStepClientError(t *testing.T) {
	sch := &fakeScheduler{invoke: func(_ context.Context, t *scheduler.Target, req *sandbox.Request) (*scheduler.Result, error) {
		if t.Name == "picky" {
			return &scheduler.Result{Response: &sandbox.Response{Status: 422, Body: []byte("bad")}}, nil
		}
		return &scheduler.Result{Response: &sandbox.Response{Status: 200, Body: req.Body}}, nil
	}}
	g, _ := newAsyncGateway(t, sch)
	serve(g, deployReq(t, "a", "name: a\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""}))
	serve(g, deployReq(t, "picky", "name: picky\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""}))
	deploySpec(t, g, "chain", "name: chain\nkind: sequence\nsteps: [a, picky]\nretries: 3\n")
	w := serve(g, httptest.NewRequest(http.MethodPost, "/function/chain", strings.NewReader("x")))
	if w.Code != 422 || !strings.Contains(w.Body.String(), "step 2 (picky)") {
		t.Fatalf("sync: HTTP %d %s", w.Code, w.Body)
	}
	w = serve(g, httptest.NewRequest(http.MethodPost, "/async-function/chain", strings.NewReader("x")))
	var acc AsyncAccepted
	json.Unmarshal(w.Body.Bytes(), &acc)
	a := waitAsync(t, g, acc.ActivationID)
	if a.State != "failed" || a.Attempts != 1 || a.StatusCode != 422 {
		t.Fatalf("async: state %s, %d attempts, HTTP %d", a.State, a.Attempts, a.StatusCode)
	}
	// The dead letter is found by the sequence's name.
	w = serve(g, httptest.NewRequest(http.MethodGet, "/v1/activations?state=failed&function=chain", nil))
	var dead []store.Activation
	if err := json.Unmarshal(w.Body.Bytes(), &dead); err != nil || len(dead) != 1 {
		t.Fatalf("dead letters of chain: %s", w.Body)
	}
}

// The caller's key, wisp's own headers and hop-by-hop headers never reach
// the function.
func TestForwardedHeaders(t *testing.T) {
	var got http.Header
	sch := &fakeScheduler{invoke: func(_ context.Context, _ *scheduler.Target, req *sandbox.Request) (*scheduler.Result, error) {
		got = req.Header
		return &scheduler.Result{Response: &sandbox.Response{Status: 200}}, nil
	}}
	g, _ := newGateway(t, sch)
	serve(g, deployReq(t, "f", "name: f\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""}))
	r := httptest.NewRequest(http.MethodPost, "/function/f", nil)
	for k, v := range map[string]string{"Authorization": "Bearer secret", HeaderNamespace: "default",
		HeaderCallbackURL: "http://x/", "Connection": "close", "X-Custom": "kept"} {
		r.Header.Set(k, v)
	}
	if w := serve(g, r); w.Code != 200 {
		t.Fatalf("HTTP %d", w.Code)
	}
	for _, k := range []string{"Authorization", HeaderNamespace, HeaderCallbackURL, "Connection"} {
		if got.Get(k) != "" {
			t.Errorf("the function saw %s: %q", k, got.Get(k))
		}
	}
	if got.Get("X-Custom") != "kept" {
		t.Errorf("X-Custom was not forwarded: %v", got)
	}
}

// A namespace's max_queued bounds its async calls waiting or running, so
// one tenant cannot fill the node's queue; finished calls free places.
func TestNamespaceMaxQueued(t *testing.T) {
	release := make(chan struct{})
	sch := &fakeScheduler{invoke: func(context.Context, *scheduler.Target, *sandbox.Request) (*scheduler.Result, error) {
		<-release
		return &scheduler.Result{Response: &sandbox.Response{Status: 200}}, nil
	}}
	tn := newTenancy(t, sch)
	key := tn.namespace(`{"name":"busy","max_queued":3}`)
	other := tn.namespace(`{"name":"calm"}`)
	tn.deploy(key, "f")
	tn.deploy(other, "f")
	var ids []string
	for i := range 4 {
		w := tn.req(key, http.MethodPost, "/async-function/f", "")
		want := http.StatusAccepted
		if i == 3 {
			want = http.StatusTooManyRequests
		}
		if w.Code != want {
			t.Fatalf("async call %d: HTTP %d %s, want %d", i, w.Code, w.Body, want)
		}
		ids = append(ids, w.Header().Get(HeaderActivationID))
	}
	if w := tn.req(other, http.MethodPost, "/async-function/f", ""); w.Code != http.StatusAccepted {
		t.Fatalf("another namespace's async call: HTTP %d", w.Code)
	}
	close(release)
	for _, id := range ids[:3] {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var a store.Activation
			w := tn.req(key, http.MethodGet, "/v1/activations/"+id, "")
			if json.Unmarshal(w.Body.Bytes(), &a) == nil && a.State == "succeeded" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("activation %s: %s", id, w.Body)
			}
		}
	}
	if w := tn.req(key, http.MethodPost, "/async-function/f", ""); w.Code != http.StatusAccepted {
		t.Fatalf("async call after the others finished: HTTP %d %s", w.Code, w.Body)
	}
}

// A sequence takes one rate token per step and waits for the later ones
// within its timeout rather than fail half done; sequences that name each
// other cost the cache key one entry each, not a power of their steps.
func TestSequenceQuotaAndCacheKey(t *testing.T) {
	tn := newTenancy(t, echoTarget())
	key := tn.namespace(`{"name":"paced","rate_limit":"2/s"}`)
	for _, n := range []string{"a", "b", "c"} {
		tn.deploy(key, n)
	}
	r := httptest.NewRequest(http.MethodPut, "/v1/functions/abc", strings.NewReader("name: abc\nkind: sequence\nsteps: [a, b, c]\n"))
	r.Header.Set("Content-Type", "application/yaml")
	if w := tn.do(key, r); w.Code != http.StatusCreated {
		t.Fatalf("deploy: HTTP %d %s", w.Code, w.Body)
	}
	// Three steps, a bucket of two: the third step waits about half a
	// second for its token.
	if w := tn.req(key, http.MethodPost, "/function/abc", ""); w.Code != 200 || w.Body.String() != "c.paced" {
		t.Fatalf("paced sequence: HTTP %d %s", w.Code, w.Body)
	}

	g, _ := newGateway(t, echoTarget())
	steps := strings.TrimSuffix(strings.Repeat("y, ", 31), ", ")
	deploySpec(t, g, "x", "name: x\nkind: sequence\ndeterministic: true\nsteps: ["+steps+"]\n")
	deploySpec(t, g, "y", "name: y\nkind: sequence\ndeterministic: true\nsteps: [x]\n")
	if v := g.cacheVersion(g.catalog.get("x")); strings.Count(v, "|") != 1 {
		t.Fatalf("cache version of two sequences naming each other: %d parts", strings.Count(v, "|")+1)
	}
}

// An async sequence refused for capacity at its first step did not run: it
// waits and tries again without spending an attempt (retries: 0 here).
func TestAsyncSequenceThrottledAtFirstStep(t *testing.T) {
	var refusals atomic.Int64
	sch := &fakeScheduler{invoke: func(_ context.Context, t *scheduler.Target, req *sandbox.Request) (*scheduler.Result, error) {
		if t.Name == "a" && refusals.Add(1) <= 1 {
			return nil, errdefs.New(errdefs.ErrLimit, "later", "queue full")
		}
		return &scheduler.Result{Response: &sandbox.Response{Status: 200, Body: append(req.Body, t.Name...)}}, nil
	}}
	g, _ := newAsyncGateway(t, sch)
	serve(g, deployReq(t, "a", "name: a\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""}))
	serve(g, deployReq(t, "b", "name: b\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""}))
	deploySpec(t, g, "ab", "name: ab\nkind: sequence\nsteps: [a, b]\n")
	w := serve(g, httptest.NewRequest(http.MethodPost, "/async-function/ab", strings.NewReader(">")))
	var acc AsyncAccepted
	json.Unmarshal(w.Body.Bytes(), &acc)
	a := waitAsync(t, g, acc.ActivationID)
	if a.State != "succeeded" || a.Attempts != 1 || string(a.Result) != ">ab" || len(a.Children) != 2 {
		t.Fatalf("state %s, %d attempts, result %q, %d steps", a.State, a.Attempts, a.Result, len(a.Children))
	}
}

// A function's response cannot set wisp's own headers or the framing: the
// caller sees the activation's id, cold flag and timings, and the length
// of the body it gets.
func TestFunctionCannotSetWispHeaders(t *testing.T) {
	sch := &fakeScheduler{invoke: func(context.Context, *scheduler.Target, *sandbox.Request) (*scheduler.Result, error) {
		return &scheduler.Result{Cold: true, Timings: scheduler.Timings{Start: 1500 * time.Microsecond},
			Response: &sandbox.Response{Status: 201, Body: []byte("hi"), Header: http.Header{
				HeaderActivationID: {"forged"}, HeaderColdStart: {"false"}, HeaderInitMs: {"999"},
				HeaderDurationMs: {"999"}, "Content-Length": {"100"}, "Transfer-Encoding": {"chunked"},
				"Connection": {"close"}, "X-Custom": {"kept"},
			}}}, nil
	}}
	g, _ := newGateway(t, sch)
	serve(g, deployReq(t, "f", "name: f\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""}))
	w := serve(g, httptest.NewRequest(http.MethodPost, "/function/f", nil))
	h := w.Result().Header
	if w.Code != 201 || w.Body.String() != "hi" {
		t.Fatalf("HTTP %d %q", w.Code, w.Body)
	}
	if id := h.Get(HeaderActivationID); id == "forged" || len(h.Values(HeaderActivationID)) != 1 {
		t.Errorf("activation id %v", h.Values(HeaderActivationID))
	}
	if h.Get(HeaderColdStart) != "true" || h.Get(HeaderInitMs) != "1.500" {
		t.Errorf("cold start %q, init ms %q; want true, 1.500", h.Get(HeaderColdStart), h.Get(HeaderInitMs))
	}
	if d := h.Get(HeaderDurationMs); d == "999" || d == "" || len(h.Values(HeaderDurationMs)) != 1 {
		t.Errorf("duration %v", h.Values(HeaderDurationMs))
	}
	if h.Get("Content-Length") != "2" || h.Get("Transfer-Encoding") != "" || h.Get("Connection") != "" {
		t.Errorf("framing headers: %v", h)
	}
	if h.Get("X-Custom") != "kept" {
		t.Errorf("X-Custom was dropped: %v", h)
	}
}
