// Package gateway is wisp's HTTP front door: the synchronous invocation
// routes (/function/{name}), the management API (/v1/functions,
// /v1/activations), /healthz and /metrics. It validates and limits requests,
// resolves a function to its deployed version through an in-memory catalog
// (so the call path never touches the database), hands the call to the
// scheduler, records an activation for every call, and maps error kinds to
// HTTP statuses in exactly one place (statusFor).
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/auth"
	"github.com/wisp-faas/wisp/internal/cache"
	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/meter"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/scheduler"
	"github.com/wisp-faas/wisp/internal/store"
	"github.com/wisp-faas/wisp/internal/telemetry"
)

// Store is what the gateway needs from the registry and activation store.
type Store interface {
	CreateFunction(ctx context.Context, rec *store.FunctionRecord) (*store.FunctionRecord, error)
	PutFunction(ctx context.Context, rec *store.FunctionRecord) (*store.FunctionRecord, error)
	GetFunction(ctx context.Context, name string) (*store.FunctionRecord, error)
	ListFunctions(ctx context.Context) ([]*store.FunctionRecord, error)
	DeleteFunction(ctx context.Context, name string) error
	CreateNamespace(ctx context.Context, ns *store.Namespace, key *store.APIKey) error
	UpdateNamespace(ctx context.Context, ns *store.Namespace) error
	ListNamespaces(ctx context.Context) ([]*store.Namespace, error)
	DeleteNamespace(ctx context.Context, name string, force bool) ([]string, error)
	RotateKey(ctx context.Context, name string, key *store.APIKey) error
	CreateTrigger(ctx context.Context, t *store.TriggerRecord) error
	DeleteTrigger(ctx context.Context, id string) error
	ListTriggers(ctx context.Context) ([]*store.TriggerRecord, error)
	PutCode(ctx context.Context, r io.Reader) (digest string, size int64, err error)
	CodeDir(ctx context.Context, digest string) (string, error)
	GCCode(ctx context.Context, keep []string) (store.GCResult, error)
	DiscardCode(ctx context.Context, digest string, keep []string) error
	RecordActivation(a *store.Activation)
	GetActivation(ctx context.Context, id string) (*store.Activation, error)
	ListActivations(ctx context.Context, f store.ActivationFilter) ([]*store.Activation, error)
}

// Scheduler is what the gateway needs from the scheduler.
type Scheduler interface {
	Invoke(ctx context.Context, t *scheduler.Target, req *sandbox.Request) (*scheduler.Result, error)
	Scale(ctx context.Context, t *scheduler.Target, n, parallel int) error
	Forget(name string)
	Stats() []scheduler.Stats
	LiveDigests() []string
}

// RuntimeChecker reports whether a spec's runtime can run on this node (for
// example, that its interpreter is installed).
type RuntimeChecker func(spec *function.Spec) error

// Config holds the gateway's settings.
type Config struct {
	MaxBodySize  int64             // request body limit for invocations (413 beyond)
	MaxCodeSize  int64             // deploy upload limit (the store enforces it too)
	Baseline     function.Baseline // defaults for fields a spec leaves out
	Modes        map[string]error  // execution modes on this node: nil = ready, else why not
	CheckRuntime RuntimeChecker
	Version      string
	// Cache keeps the responses of deterministic functions (nil: off).
	Cache *cache.Cache
	// Auth checks API keys (nil: no authentication, --insecure-no-auth).
	Auth *auth.Authenticator
	// Meter attributes energy (nil: no energy accounting).
	Meter *meter.Meter
	// Queue holds async calls (nil: POST /async-function answers 503).
	Queue AsyncQueue
	// Triggers runs cron and NATS triggers and the functions' schedules
	// (nil: none). It may also be a NextFirer.
	Triggers Triggers
}

// Gateway serves wisp's HTTP API.
type Gateway struct {
	cfg     Config
	store   Store
	sched   Scheduler
	metrics *telemetry.Metrics
	log     *slog.Logger
	mux     *http.ServeMux

	deployMu sync.Mutex // serialises deploys and deletes (store + catalog + pools)
	catalog  catalog
	limits   limiters // per-function rate limits
	tenants  tenants  // per-namespace quotas
	async    pending  // async attempts' activations until their job finishes
}

// New builds the gateway and loads the catalog of deployed functions.
func New(ctx context.Context, cfg Config, st Store, sch Scheduler, m *telemetry.Metrics, log *slog.Logger) (*Gateway, error) {
	g := &Gateway{cfg: cfg, store: st, sched: sch, metrics: m, log: log, mux: http.NewServeMux()}
	if err := g.catalog.load(ctx, st); err != nil {
		return nil, fmt.Errorf("load function catalog: %w", err)
	}
	if err := g.tenants.load(ctx, st); err != nil {
		return nil, fmt.Errorf("load namespaces: %w", err)
	}
	if cfg.Queue != nil {
		// Each namespace's async calls still to run count against its
		// max_queued.
		counts, err := cfg.Queue.Unfinished(ctx)
		if err != nil {
			return nil, fmt.Errorf("count queued async calls: %w", err)
		}
		for ns, n := range counts {
			if t := g.tenants.get(function.NamespaceOf(ns)); t != nil {
				t.queued.Store(int64(n))
			}
		}
	}
	g.routes()
	return g, nil
}

func (g *Gateway) routes() {
	g.mux.HandleFunc("/function/{name}", g.invoke)
	g.mux.HandleFunc("/function/{name}/{rest...}", g.invoke)
	g.mux.HandleFunc("POST /async-function/{name}", g.invokeAsync)
	g.mux.HandleFunc("POST /async-function/{name}/{rest...}", g.invokeAsync)
	g.mux.HandleFunc("POST /v1/activations/{id}/redrive", g.redrive)
	g.mux.HandleFunc("GET /v1/functions", g.listFunctions)
	g.mux.HandleFunc("POST /v1/functions", g.createFunction)
	g.mux.HandleFunc("GET /v1/functions/{name}", g.getFunction)
	g.mux.HandleFunc("PUT /v1/functions/{name}", g.putFunction)
	g.mux.HandleFunc("DELETE /v1/functions/{name}", g.deleteFunction)
	g.mux.HandleFunc("POST /v1/functions/{name}/scale", g.scaleFunction)
	g.mux.HandleFunc("GET /v1/activations", g.listActivations)
	g.mux.HandleFunc("GET /v1/activations/{id}", g.getActivation)
	g.mux.HandleFunc("GET /v1/namespaces", g.listNamespaces)
	g.mux.HandleFunc("POST /v1/namespaces", g.createNamespace)
	g.mux.HandleFunc("GET /v1/namespaces/{name}", g.getNamespace)
	g.mux.HandleFunc("PUT /v1/namespaces/{name}", g.updateNamespace)
	g.mux.HandleFunc("DELETE /v1/namespaces/{name}", g.deleteNamespace)
	g.mux.HandleFunc("POST /v1/namespaces/{name}/keys", g.rotateKey)
	g.mux.HandleFunc("GET /v1/triggers", g.listTriggers)
	g.mux.HandleFunc("POST /v1/triggers", g.createTrigger)
	g.mux.HandleFunc("DELETE /v1/triggers/{name}", g.deleteTrigger)
	g.mux.HandleFunc("GET /healthz", g.healthz)
	g.mux.HandleFunc("GET /v1/energy", g.energy)
	g.mux.Handle("GET /metrics", g.metrics.Handler())
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errdefs.New(errdefs.ErrNotFound, "see the HTTP API section of the README for the routes",
			"no route for %s %s", r.Method, r.URL.Path))
	})
}

// ServeHTTP implements http.Handler. With Config.Auth set, every route but
// /healthz needs a valid key (401 otherwise).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.cfg.Auth != nil && r.URL.Path != "/healthz" {
		k, err := g.cfg.Auth.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wisp"`)
			writeError(w, err)
			return
		}
		r = withCaller(r, k)
		if !k.Admin && !g.tenants.exists(function.NamespaceOf(k.Namespace)) {
			// A key of a namespace removed a moment ago (the key list is
			// reloaded right after the removal).
			w.Header().Set("WWW-Authenticate", `Bearer realm="wisp"`)
			writeError(w, errdefs.New(errdefs.ErrUnauthorized, "ask an admin for a key of an existing namespace",
				"the API key's namespace %q no longer exists", k.Namespace))
			return
		}
		if !k.Admin && r.URL.Path == "/metrics" {
			// Metric labels name every namespace's functions.
			writeError(w, forbidden("reading /metrics"))
			return
		}
	}
	g.mux.ServeHTTP(w, r)
}

// statusFor maps an error kind to its HTTP status. It is the only place that
// does so.
func statusFor(err error) int {
	switch {
	case errors.Is(err, errdefs.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, errdefs.ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, errdefs.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, errdefs.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errdefs.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, errdefs.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errdefs.ErrLimit):
		return http.StatusTooManyRequests
	case errors.Is(err, errdefs.ErrCrashed):
		return http.StatusBadGateway
	case errors.Is(err, errdefs.ErrTimeout):
		return http.StatusGatewayTimeout
	case errors.Is(err, errdefs.ErrUnavailable):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
	Hint  string `json:"hint,omitempty"`
}

func writeError(w http.ResponseWriter, err error) {
	status := statusFor(err)
	if status == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, ErrorBody{Error: err.Error(), Hint: errdefs.Hint(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // hints say <key>, not \u003ckey\u003e
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"encode response"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// catalog maps function names to their deployed version. Guarded by mu.
type catalog struct {
	mu      sync.RWMutex
	targets map[string]*scheduler.Target
}

func (c *catalog) load(ctx context.Context, st Store) error {
	recs, err := st.ListFunctions(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]*scheduler.Target, len(recs))
	for _, rec := range recs {
		t, err := targetFor(ctx, st, rec)
		if err != nil {
			return err
		}
		m[rec.Ref()] = t
	}
	c.mu.Lock()
	c.targets = m
	c.mu.Unlock()
	return nil
}

func targetFor(ctx context.Context, st Store, rec *store.FunctionRecord) (*scheduler.Target, error) {
	spec := rec.Spec
	t := &scheduler.Target{Name: rec.Ref(), Version: rec.Version, Digest: rec.CodeDigest, Spec: &spec}
	if rec.CodeDigest != "" {
		dir, err := st.CodeDir(ctx, rec.CodeDigest)
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", t.Name, err)
		}
		t.CodeDir = dir
	}
	return t, nil
}

func (c *catalog) get(name string) *scheduler.Target {
	c.mu.RLock()
	t := c.targets[name]
	c.mu.RUnlock()
	return t
}

func (c *catalog) set(t *scheduler.Target) {
	c.mu.Lock()
	c.targets[t.Name] = t
	c.mu.Unlock()
}

func (c *catalog) remove(name string) {
	c.mu.Lock()
	delete(c.targets, name)
	c.mu.Unlock()
}

func (c *catalog) digests() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.targets))
	for _, t := range c.targets {
		if t.Digest != "" {
			out = append(out, t.Digest)
		}
	}
	return out
}

func since(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// energy serves GET /v1/energy?window=5m: the node's energy over the last
// window (default 1m) and how it was shared out.
func (g *Gateway) energy(w http.ResponseWriter, r *http.Request) {
	if g.cfg.Meter == nil {
		writeError(w, errdefs.New(errdefs.ErrUnavailable, "the server started without energy accounting; see its log",
			"energy accounting is off"))
		return
	}
	span := time.Minute
	if v := r.URL.Query().Get("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			writeError(w, errdefs.Invalidf("use a duration like 30s, 5m or 1h (at most energy.history)",
				"window %q is not a positive duration", v))
			return
		}
		span = d
	}
	sum := g.cfg.Meter.Summarize(span)
	if c := callerOf(r.Context()); !c.admin {
		// A tenant sees the node's figures and its own functions' only.
		for ref := range sum.Functions {
			if ns, _ := function.SplitRef(ref); ns != c.ns {
				delete(sum.Functions, ref)
			}
		}
		sum.Warnings = nil // they name instances of any namespace
	}
	writeJSON(w, http.StatusOK, sum)
}
