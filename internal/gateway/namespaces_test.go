package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wisp-faas/wisp/internal/auth"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/queue"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/scheduler"
	"github.com/wisp-faas/wisp/internal/store"
	"github.com/wisp-faas/wisp/internal/telemetry"
	"github.com/wisp-faas/wisp/internal/trigger"
)

// tenancy is a gateway with authentication on, its admin key, and helpers
// to call it as a given key.
type tenancy struct {
	t        *testing.T
	g        *Gateway
	st       *store.Store
	admin    string
	triggers *fakeTriggers
}

func newTenancy(t *testing.T, sch *fakeScheduler) *tenancy {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	path, _, err := auth.EnsureAdminKey(ctx, st, dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := auth.ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewAuthenticator(ctx, st, "the admin key is in admin.key")
	if err != nil {
		t.Fatal(err)
	}
	var g *Gateway
	q, err := queue.Open(filepath.Join(dir, "queue.db"), queue.Options{Workers: 2,
		Finished: func(j *queue.Job, r queue.Result) { g.AsyncFinished(j, r) }})
	if err != nil {
		t.Fatal(err)
	}
	trg := &fakeTriggers{set: map[string]trigger.Trigger{}}
	g, err = New(ctx, Config{
		MaxBodySize: 1 << 10,
		MaxCodeSize: 1 << 20,
		Modes:       map[string]error{function.ModeProcess: nil},
		Auth:        a,
		Queue:       q,
		Triggers:    trg,
	}, st, sch, telemetry.NewMetrics(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	q.Start(g)
	t.Cleanup(func() { q.Close(context.Background()) })
	return &tenancy{t: t, g: g, st: st, admin: key, triggers: trg}
}

// fakeTriggers records the triggers the gateway runs.
type fakeTriggers struct {
	mu  sync.Mutex
	set map[string]trigger.Trigger
}

func (f *fakeTriggers) Set(t trigger.Trigger) error {
	if err := t.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	f.set[t.ID] = t
	f.mu.Unlock()
	return nil
}

func (f *fakeTriggers) Remove(id string) {
	f.mu.Lock()
	delete(f.set, id)
	f.mu.Unlock()
}

func (f *fakeTriggers) get(id string) (trigger.Trigger, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.set[id]
	return t, ok
}

func (tn *tenancy) do(key string, r *http.Request) *httptest.ResponseRecorder {
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	return serve(tn.g, r)
}

func (tn *tenancy) req(key, method, path, body string) *httptest.ResponseRecorder {
	return tn.do(key, httptest.NewRequest(method, path, strings.NewReader(body)))
}

// namespace creates ns with the quotas in body and returns its key.
func (tn *tenancy) namespace(body string) string {
	tn.t.Helper()
	w := tn.req(tn.admin, http.MethodPost, "/v1/namespaces", body)
	if w.Code != http.StatusCreated {
		tn.t.Fatalf("create namespace %s: HTTP %d %s", body, w.Code, w.Body)
	}
	var v NamespaceView
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || v.Key == "" || v.Name == "" {
		tn.t.Fatalf("create namespace answered %s (%v)", w.Body, err)
	}
	return v.Key
}

func (tn *tenancy) deploy(key, name string) {
	tn.t.Helper()
	r := deployReq(tn.t, name, "name: "+name+"\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""})
	if w := tn.do(key, r); w.Code != http.StatusCreated {
		tn.t.Fatalf("deploy %s: HTTP %d %s", name, w.Code, w.Body)
	}
}

func echoTarget() *fakeScheduler {
	return &fakeScheduler{invoke: func(_ context.Context, t *scheduler.Target, _ *sandbox.Request) (*scheduler.Result, error) {
		return &scheduler.Result{Response: &sandbox.Response{Status: 200, Body: []byte(t.Name)}}, nil
	}}
}

func TestTenantIsolation(t *testing.T) {
	tn := newTenancy(t, echoTarget())
	keyA := tn.namespace(`{"name":"team-a"}`)
	keyB := tn.namespace(`{"name":"team-b"}`)
	tn.deploy(keyA, "hello")
	tn.deploy(keyB, "hello")
	tn.deploy(keyB, "secret")
	tn.deploy(tn.admin, "hello") // the default namespace's

	// Each tenant calls its own hello by its plain name.
	for key, want := range map[string]string{keyA: "hello.team-a", keyB: "hello.team-b", tn.admin: "hello"} {
		w := tn.req(key, http.MethodPost, "/function/hello", "")
		if w.Code != 200 || w.Body.String() != want {
			t.Fatalf("invoke hello: HTTP %d %q, want the function %s", w.Code, w.Body, want)
		}
	}

	// Team A cannot list, get, invoke, update, scale or delete team B's.
	w := tn.req(keyA, http.MethodGet, "/v1/functions", "")
	var list []FunctionView
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list) != 1 || list[0].Ref != "hello.team-a" || list[0].Namespace != "team-a" {
		t.Fatalf("team-a's list = %s", w.Body)
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/functions/secret"},
		{http.MethodGet, "/v1/functions/secret.team-b"},
		{http.MethodPost, "/function/secret.team-b"},
		{http.MethodPost, "/function/hello.team-b"},
		{http.MethodDelete, "/v1/functions/hello.team-b"},
		{http.MethodPost, "/v1/functions/hello.team-b/scale"},
		{http.MethodGet, "/v1/namespaces/team-b"},
		{http.MethodPost, "/v1/namespaces/team-b/keys"},
	} {
		w := tn.req(keyA, c.method, c.path, `{"instances":1}`)
		if w.Code != http.StatusNotFound {
			t.Errorf("team-a %s %s: HTTP %d %s, want 404", c.method, c.path, w.Code, w.Body)
		}
	}
	// ... nor act in its namespace with the header.
	r := httptest.NewRequest(http.MethodGet, "/v1/functions", nil)
	r.Header.Set(HeaderNamespace, "team-b")
	if w := tn.do(keyA, r); w.Code != http.StatusNotFound {
		t.Errorf("team-a with X-Wisp-Namespace: team-b: HTTP %d %s", w.Code, w.Body)
	}
	// ... nor deploy over it.
	r = deployReq(t, "hello.team-b", "name: hello\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""})
	if w := tn.do(keyA, r); w.Code != http.StatusNotFound {
		t.Errorf("team-a PUT hello.team-b: HTTP %d %s", w.Code, w.Body)
	}
	// A tenant's function may not share the host's network.
	r = deployReq(t, "net", "name: net\nruntime: python3\nhandler: h.py\nnetwork: host\n", map[string]string{"h.py": ""})
	if w := tn.do(keyA, r); w.Code != http.StatusForbidden {
		t.Errorf("team-a deploys network: host: HTTP %d %s, want 403", w.Code, w.Body)
	}
	// Namespace management needs an admin key.
	for _, c := range []struct{ method, path, body string }{
		{http.MethodPost, "/v1/namespaces", `{"name":"team-c"}`},
		{http.MethodPut, "/v1/namespaces/team-a", `{"rate_limit":"1000/s"}`},
		{http.MethodDelete, "/v1/namespaces/team-b", ""},
	} {
		if w := tn.req(keyA, c.method, c.path, c.body); w.Code != http.StatusForbidden {
			t.Errorf("team-a %s %s: HTTP %d %s, want 403", c.method, c.path, w.Code, w.Body)
		}
	}

	// Activations: team A sees its own and not team B's.
	wb := tn.req(keyB, http.MethodPost, "/function/secret", "")
	idB := wb.Header().Get(HeaderActivationID)
	tn.st.Flush(context.Background())
	if w := tn.req(keyA, http.MethodGet, "/v1/activations/"+idB, ""); w.Code != http.StatusNotFound {
		t.Errorf("team-a reads team-b's activation: HTTP %d", w.Code)
	}
	if w := tn.req(keyB, http.MethodGet, "/v1/activations/"+idB, ""); w.Code != http.StatusOK {
		t.Errorf("team-b reads its activation: HTTP %d %s", w.Code, w.Body)
	}
	var acts []store.Activation
	w = tn.req(keyA, http.MethodGet, "/v1/activations", "")
	if err := json.Unmarshal(w.Body.Bytes(), &acts); err != nil || len(acts) != 1 || acts[0].Function != "hello.team-a" || acts[0].Namespace != "team-a" {
		t.Fatalf("team-a's activations = %s", w.Body)
	}

	// The admin acts across namespaces: by reference, by header, or all.
	if w := tn.req(tn.admin, http.MethodPost, "/function/secret.team-b", ""); w.Code != 200 || w.Body.String() != "secret.team-b" {
		t.Errorf("admin invokes secret.team-b: HTTP %d %s", w.Code, w.Body)
	}
	r = httptest.NewRequest(http.MethodGet, "/v1/functions", nil)
	r.Header.Set(HeaderNamespace, "team-b")
	w = tn.do(tn.admin, r)
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list) != 2 {
		t.Errorf("admin lists team-b: %s", w.Body)
	}
	w = tn.req(tn.admin, http.MethodGet, "/v1/functions?all=true", "")
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list) != 4 {
		t.Errorf("admin lists all: %s", w.Body)
	}
	// A tenant's ?all=true is its own namespace still.
	w = tn.req(keyA, http.MethodGet, "/v1/functions?all=true", "")
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list) != 1 {
		t.Errorf("team-a lists all: %s", w.Body)
	}

	// Team A deletes its own hello; team B's stays.
	if w := tn.req(keyA, http.MethodDelete, "/v1/functions/hello", ""); w.Code != http.StatusNoContent {
		t.Fatalf("team-a deletes its hello: HTTP %d %s", w.Code, w.Body)
	}
	if w := tn.req(keyB, http.MethodPost, "/function/hello", ""); w.Code != 200 {
		t.Fatalf("team-b's hello after team-a's delete: HTTP %d", w.Code)
	}
}

func TestNamespaceKeysAndRemoval(t *testing.T) {
	tn := newTenancy(t, echoTarget())
	if w := tn.req("", http.MethodGet, "/v1/functions", ""); w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("no key: HTTP %d", w.Code)
	}
	key := tn.namespace(`{"name":"team-a"}`)
	if w := tn.req(tn.admin, http.MethodPost, "/v1/namespaces", `{"name":"team-a"}`); w.Code != http.StatusConflict {
		t.Errorf("duplicate namespace: HTTP %d", w.Code)
	}
	for _, body := range []string{`{"name":"default"}`, `{"name":"Team A"}`, `{"name":"x","rate_limit":"fast"}`, `{"name":"y","colour":"red"}`} {
		w := tn.req(tn.admin, http.MethodPost, "/v1/namespaces", body)
		if w.Code != http.StatusBadRequest {
			t.Errorf("create %s: HTTP %d, want 400", body, w.Code)
		}
		errBody(t, w)
	}
	tn.deploy(key, "f")

	// Rotation: the old key stops working, the new one works; a tenant
	// may rotate its own.
	w := tn.req(key, http.MethodPost, "/v1/namespaces/team-a/keys", "")
	var v NamespaceView
	if err := json.Unmarshal(w.Body.Bytes(), &v); w.Code != 200 || err != nil || v.Key == "" || v.Key == key {
		t.Fatalf("rotate: HTTP %d %s", w.Code, w.Body)
	}
	if w := tn.req(key, http.MethodPost, "/function/f", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("old key after rotation: HTTP %d", w.Code)
	}
	if w := tn.req(v.Key, http.MethodPost, "/function/f", ""); w.Code != 200 {
		t.Errorf("new key: HTTP %d", w.Code)
	}

	// Removal: refused while it has functions, unless forced; its key dies
	// with it and its functions are gone.
	if w := tn.req(tn.admin, http.MethodDelete, "/v1/namespaces/team-a", ""); w.Code != http.StatusConflict {
		t.Fatalf("remove a namespace with functions: HTTP %d", w.Code)
	}
	if w := tn.req(tn.admin, http.MethodDelete, "/v1/namespaces/team-a?force=true", ""); w.Code != http.StatusNoContent {
		t.Fatalf("force remove: HTTP %d %s", w.Code, w.Body)
	}
	if w := tn.req(v.Key, http.MethodGet, "/v1/functions", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("key of a removed namespace: HTTP %d", w.Code)
	}
	if w := tn.req(tn.admin, http.MethodPost, "/function/f.team-a", ""); w.Code != http.StatusNotFound {
		t.Errorf("function of a removed namespace: HTTP %d", w.Code)
	}
	if _, err := tn.st.GetFunction(context.Background(), "f.team-a"); err == nil {
		t.Error("function of a removed namespace is still stored")
	}
}

func TestNamespaceQuotas(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	sch := &fakeScheduler{invoke: func(_ context.Context, t *scheduler.Target, _ *sandbox.Request) (*scheduler.Result, error) {
		if strings.HasPrefix(t.Name, "slow.") {
			entered <- struct{}{}
			<-release
		}
		return &scheduler.Result{Response: &sandbox.Response{Status: 200}}, nil
	}}
	tn := newTenancy(t, sch)
	conc := tn.namespace(`{"name":"conc","max_concurrency":2}`)
	rated := tn.namespace(`{"name":"rated","rate_limit":"3/m"}`)
	free := tn.namespace(`{"name":"free"}`)
	tn.deploy(conc, "slow")
	tn.deploy(rated, "f")
	tn.deploy(free, "f")

	// Concurrency: two calls in flight, the third is refused with 429.
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tn.req(conc, http.MethodPost, "/function/slow", "")
		}()
	}
	<-entered
	<-entered
	w := tn.req(conc, http.MethodPost, "/function/slow", "")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("third concurrent call: HTTP %d (Retry-After %q)", w.Code, w.Header().Get("Retry-After"))
	}
	errBody(t, w)
	close(release)
	wg.Wait()
	if w := tn.req(conc, http.MethodPost, "/function/slow", ""); w.Code != 200 {
		t.Fatalf("call after the others ended: HTTP %d", w.Code)
	}

	// Rate: 3 per minute, the fourth is refused with a Retry-After near
	// 20 s; another namespace is not affected.
	for i := range 3 {
		if w := tn.req(rated, http.MethodPost, "/function/f", ""); w.Code != 200 {
			t.Fatalf("call %d within the rate: HTTP %d", i, w.Code)
		}
	}
	w = tn.req(rated, http.MethodPost, "/function/f", "")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "20" {
		t.Fatalf("call beyond the rate: HTTP %d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	for range 5 {
		if w := tn.req(free, http.MethodPost, "/function/f", ""); w.Code != 200 {
			t.Fatalf("another namespace: HTTP %d", w.Code)
		}
	}
	// Raising the quota takes effect at once.
	if w := tn.req(tn.admin, http.MethodPut, "/v1/namespaces/rated", `{"rate_limit":"1000/s"}`); w.Code != 200 {
		t.Fatalf("update quota: HTTP %d %s", w.Code, w.Body)
	}
	if w := tn.req(rated, http.MethodPost, "/function/f", ""); w.Code != 200 {
		t.Fatalf("call after raising the quota: HTTP %d", w.Code)
	}
}
