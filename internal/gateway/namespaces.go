package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/wisp-faas/wisp/internal/auth"
	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/store"
)

// HeaderNamespace lets an admin key act in another namespace than the
// default (wisp --namespace NAME). A tenant key always acts in its own.
const HeaderNamespace = "X-Wisp-Namespace"

// caller is who made a request: the namespace of its key, or an admin.
type caller struct {
	admin bool
	ns    string // the key's namespace (tenants)
}

type callerKey struct{}

// admin is the caller of a server without authentication.
var admin = &caller{admin: true}

func callerOf(ctx context.Context) *caller {
	if c, ok := ctx.Value(callerKey{}).(*caller); ok {
		return c
	}
	return admin
}

func withCaller(r *http.Request, k *store.APIKey) *http.Request {
	c := &caller{admin: k.Admin, ns: function.NamespaceOf(k.Namespace)}
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
}

// scope returns the namespace a request acts in: a tenant's own, or for an
// admin the X-Wisp-Namespace header (default: the default namespace).
func (g *Gateway) scope(r *http.Request) (string, error) {
	c := callerOf(r.Context())
	h := r.Header.Get(HeaderNamespace)
	if !c.admin {
		if h != "" && h != c.ns {
			return "", g.tenants.notFound(h)
		}
		return c.ns, nil
	}
	if h == "" || h == function.DefaultNamespace {
		return function.DefaultNamespace, nil
	}
	if !g.tenants.exists(h) {
		return "", g.tenants.notFound(h)
	}
	return h, nil
}

// resolve turns the name in a URL into a function reference: a plain name
// is looked up in the request's scope; "name.namespace" names its
// namespace, which a tenant may only do for its own. Another tenant's
// function is "not found", never "forbidden", so names do not leak.
func (g *Gateway) resolve(r *http.Request, name string) (ref, ns string, err error) {
	if strings.Contains(name, ".") {
		ns, plain := function.SplitRef(name)
		c := callerOf(r.Context())
		if (!c.admin && ns != c.ns) || (ns != function.DefaultNamespace && !g.tenants.exists(ns)) {
			return "", "", functionNotFound(name)
		}
		return function.Ref(ns, plain), ns, nil
	}
	ns, err = g.scope(r)
	if err != nil {
		return "", "", err
	}
	return function.Ref(ns, name), ns, nil
}

func functionNotFound(name string) error {
	return errdefs.New(errdefs.ErrNotFound,
		"wisp ls lists deployed functions; deploy one with wisp deploy -f function.yaml",
		"function %q not found", name)
}

// visible reports whether the caller may see something of namespace ns.
func visible(r *http.Request, ns string) bool {
	c := callerOf(r.Context())
	return c.admin || c.ns == function.NamespaceOf(ns)
}

// current reports whether something of namespace ns that began at start
// belongs to the namespace as it is now: not to one removed since (maybe
// made again under the same name, which must start empty).
func (ts *tenants) current(ns string, start time.Time) bool {
	ns = function.NamespaceOf(ns)
	if ns == function.DefaultNamespace {
		return true
	}
	t := ts.get(ns)
	return t != nil && !start.Before(t.ns.Created)
}

// tenants holds each namespace's quota state, kept in step with the store.
type tenants struct {
	mu sync.RWMutex
	m  map[string]*tenant
}

type tenant struct {
	ns  store.Namespace
	lim *rate.Limiter // nil: no rate quota
	// inflight counts the namespace's calls in flight. It is shared by the
	// tenant values that replace each other as quotas change, so that calls
	// admitted under the old quotas are released from the same count.
	inflight *atomic.Int64
	// queued counts its async calls waiting or running, shared the same
	// way (from the queue at start; Enqueue adds, AsyncFinished takes away).
	queued *atomic.Int64
}

func newTenant(ns *store.Namespace) *tenant {
	t := &tenant{ns: *ns, inflight: new(atomic.Int64), queued: new(atomic.Int64)}
	if perSecond, burst, err := function.ParseRate(ns.RateLimit, ns.RateBurst); err == nil && perSecond > 0 {
		t.lim = rate.NewLimiter(rate.Limit(perSecond), burst)
	}
	return t
}

func (ts *tenants) load(ctx context.Context, st Store) error {
	list, err := st.ListNamespaces(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]*tenant, len(list))
	for _, ns := range list {
		m[ns.Name] = newTenant(ns)
	}
	ts.mu.Lock()
	ts.m = m
	ts.mu.Unlock()
	return nil
}

// set installs a namespace's quotas; calls in flight keep counting.
func (ts *tenants) set(ns *store.Namespace) {
	t := newTenant(ns)
	ts.mu.Lock()
	if old := ts.m[ns.Name]; old != nil {
		t.inflight, t.queued = old.inflight, old.queued
		if old.ns.RateLimit == ns.RateLimit && old.ns.RateBurst == ns.RateBurst {
			t.lim = old.lim // the same rate: the bucket keeps its level
		}
	}
	ts.m[ns.Name] = t
	ts.mu.Unlock()
}

func (ts *tenants) remove(name string) {
	ts.mu.Lock()
	delete(ts.m, name)
	ts.mu.Unlock()
}

func (ts *tenants) get(name string) *tenant {
	ts.mu.RLock()
	defer ts.mu.RUnlock()
	return ts.m[name]
}

func (ts *tenants) exists(name string) bool { return ts.get(name) != nil }

func (ts *tenants) notFound(name string) error {
	return errdefs.New(errdefs.ErrNotFound, "wisp ns ls lists the namespaces", "namespace %q not found", name)
}

func (ts *tenants) list() []store.Namespace {
	ts.mu.RLock()
	defer ts.mu.RUnlock()
	out := make([]store.Namespace, 0, len(ts.m))
	for _, t := range ts.m {
		out = append(out, t.ns)
	}
	return out
}

// admit applies namespace ns's quotas to one call. It returns a release
// func to call when the call ends, or an ErrLimit error and how long to
// wait before retrying.
func (ts *tenants) admit(ns string) (release func(), wait time.Duration, err error) {
	t := ts.get(ns)
	if t == nil {
		return func() {}, 0, nil
	}
	if max := t.ns.MaxConcurrency; max > 0 {
		if n := t.inflight.Add(1); n > int64(max) {
			t.inflight.Add(-1)
			return nil, time.Second, errdefs.New(errdefs.ErrLimit,
				"retry later, or raise the namespace's quota (wisp ns set "+ns+" --max-concurrency N)",
				"namespace %s is at its quota of %d concurrent calls", ns, max)
		}
	} else {
		t.inflight.Add(1)
	}
	if t.lim != nil {
		now := time.Now()
		r := t.lim.ReserveN(now, 1)
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			t.inflight.Add(-1)
			return nil, d, errdefs.New(errdefs.ErrLimit,
				"retry after the time in Retry-After, or raise the namespace's quota (wisp ns set "+ns+" --rate N/s)",
				"namespace %s is over its rate quota of %s", ns, t.ns.RateLimit)
		}
	}
	var once sync.Once
	return func() { once.Do(func() { t.inflight.Add(-1) }) }, 0, nil
}

// admitQueued counts one more async call of namespace ns, or refuses it
// with an ErrLimit error when the namespace has max_queued waiting or
// running. Call the returned undo when the call was not queued after all.
func (ts *tenants) admitQueued(ns string) (undo func(), err error) {
	t := ts.get(ns)
	if t == nil {
		return func() {}, nil
	}
	if max := int64(t.ns.MaxQueued); max > 0 {
		if n := t.queued.Add(1); n > max {
			t.queued.Add(-1)
			return nil, errdefs.New(errdefs.ErrLimit,
				"wait for its async calls to run, or raise the namespace's quota (wisp ns set "+ns+" --max-queued N)",
				"namespace %s has %d async calls waiting or running, its quota", ns, max)
		}
	} else {
		t.queued.Add(1)
	}
	return func() { t.queued.Add(-1) }, nil
}

// finishedQueued counts one async call of namespace ns less.
func (ts *tenants) finishedQueued(ns string) {
	if t := ts.get(ns); t != nil {
		t.queued.Add(-1)
	}
}

// waitRate takes one token of namespace ns's rate quota (for a step of a
// sequence after the first), waiting for it as long as ctx allows; past
// that it returns an ErrLimit error.
func (ts *tenants) waitRate(ctx context.Context, ns string) error {
	t := ts.get(ns)
	if t == nil || t.lim == nil {
		return nil
	}
	now := time.Now()
	r := t.lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d == 0 {
		return nil
	}
	if deadline, ok := ctx.Deadline(); !r.OK() || (ok && now.Add(d).After(deadline)) {
		r.CancelAt(now)
		return errdefs.New(errdefs.ErrLimit,
			"raise the namespace's quota (wisp ns set "+ns+" --rate N/s), or the sequence's timeout",
			"namespace %s's rate quota of %s leaves no room for the sequence's next step within its timeout", ns, t.ns.RateLimit)
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return errdefs.New(errdefs.ErrLimit, "retry later", "namespace %s: %v while waiting for its rate quota", ns, ctx.Err())
	}
}

// NamespaceView is the API representation of a namespace. Key is set only
// in the answer that made it (create, rotate): it is never stored.
type NamespaceView struct {
	store.Namespace
	Key       string `json:"key,omitempty"`
	Functions int    `json:"functions"`
	InFlight  int64  `json:"in_flight"`
	// Queued counts its async calls waiting or running.
	Queued int64 `json:"queued"`
}

func (g *Gateway) nsView(ns store.Namespace) NamespaceView {
	v := NamespaceView{Namespace: ns}
	if t := g.tenants.get(ns.Name); t != nil {
		v.InFlight, v.Queued = t.inflight.Load(), t.queued.Load()
	}
	g.catalog.mu.RLock()
	for ref := range g.catalog.targets {
		if n, _ := function.SplitRef(ref); n == ns.Name {
			v.Functions++
		}
	}
	g.catalog.mu.RUnlock()
	return v
}

func forbidden(what string) error {
	return errdefs.New(errdefs.ErrForbidden, "use the admin key (<data>/admin.key)", "%s needs an admin key", what)
}

// mayManage reports whether the caller may read or change namespace name:
// admins any, a tenant its own.
func mayManage(r *http.Request, name string) bool {
	c := callerOf(r.Context())
	return c.admin || c.ns == name
}

func (g *Gateway) createNamespace(w http.ResponseWriter, r *http.Request) {
	if !callerOf(r.Context()).admin {
		writeError(w, forbidden("creating a namespace"))
		return
	}
	var ns store.Namespace
	if err := decodeBody(r, &ns); err != nil {
		writeError(w, err)
		return
	}
	key, err := auth.New()
	if err != nil {
		writeError(w, err)
		return
	}
	ns.Created = time.Now().UTC()
	k := &store.APIKey{Hash: auth.Hash(key), Name: ns.Name, Namespace: ns.Name, Created: ns.Created}
	// Serialised with deletes, so a namespace removed meanwhile stays removed.
	g.deployMu.Lock()
	defer g.deployMu.Unlock()
	if err := g.store.CreateNamespace(r.Context(), &ns, k); err != nil {
		writeError(w, err)
		return
	}
	g.tenants.set(&ns)
	if err := g.reloadKeys(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	g.log.Info("namespace created", "namespace", ns.Name, "rate_limit", ns.RateLimit, "max_concurrency", ns.MaxConcurrency)
	v := g.nsView(ns)
	v.Key = key
	writeJSON(w, http.StatusCreated, v)
}

func (g *Gateway) listNamespaces(w http.ResponseWriter, r *http.Request) {
	out := []NamespaceView{}
	for _, ns := range g.tenants.list() {
		if mayManage(r, ns.Name) {
			out = append(out, g.nsView(ns))
		}
	}
	slices.SortFunc(out, func(a, b NamespaceView) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) getNamespace(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	t := g.tenants.get(name)
	if t == nil || !mayManage(r, name) {
		writeError(w, g.tenants.notFound(name))
		return
	}
	writeJSON(w, http.StatusOK, g.nsView(t.ns))
}

// updateNamespace replaces a namespace's quotas (admins only: a tenant
// cannot raise its own).
func (g *Gateway) updateNamespace(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !callerOf(r.Context()).admin {
		writeError(w, forbidden("changing a namespace's quotas"))
		return
	}
	var ns store.Namespace
	if err := decodeBody(r, &ns); err != nil {
		writeError(w, err)
		return
	}
	if ns.Name != "" && ns.Name != name {
		writeError(w, errdefs.Invalidf("make the URL and the body agree", "body names namespace %q but the URL names %q", ns.Name, name))
		return
	}
	ns.Name = name
	// Serialised with deletes, so a namespace removed meanwhile stays removed.
	g.deployMu.Lock()
	defer g.deployMu.Unlock()
	if err := g.store.UpdateNamespace(r.Context(), &ns); err != nil {
		writeError(w, err)
		return
	}
	g.tenants.set(&ns)
	g.log.Info("namespace quotas changed", "namespace", name, "rate_limit", ns.RateLimit, "max_concurrency", ns.MaxConcurrency)
	writeJSON(w, http.StatusOK, g.nsView(ns))
}

func (g *Gateway) deleteNamespace(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !callerOf(r.Context()).admin {
		writeError(w, forbidden("removing a namespace"))
		return
	}
	g.deployMu.Lock()
	defer g.deployMu.Unlock()
	trgs, err := g.store.ListTriggers(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	removed, err := g.store.DeleteNamespace(r.Context(), name, r.URL.Query().Get("force") == "true")
	if err != nil {
		writeError(w, err)
		return
	}
	for _, t := range trgs {
		if t.Namespace == name && g.cfg.Triggers != nil {
			g.cfg.Triggers.Remove(t.ID)
		}
	}
	for _, ref := range removed {
		g.retire(ref)
	}
	g.tenants.remove(name)
	if g.cfg.Queue != nil {
		// Its queued calls and dead letters go too.
		if _, err := g.cfg.Queue.PurgeNamespace(context.WithoutCancel(r.Context()), name); err != nil {
			g.log.Error("purge the async calls of a removed namespace", "namespace", name, "err", err)
		}
	}
	if err := g.reloadKeys(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	g.gc(r.Context())
	g.log.Info("namespace deleted", "namespace", name, "functions", len(removed))
	w.WriteHeader(http.StatusNoContent)
}

// rotateKey makes a new key for a namespace and revokes its old ones. A
// tenant may rotate its own key.
func (g *Gateway) rotateKey(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	t := g.tenants.get(name)
	if t == nil || !mayManage(r, name) {
		writeError(w, g.tenants.notFound(name))
		return
	}
	key, err := auth.New()
	if err != nil {
		writeError(w, err)
		return
	}
	k := &store.APIKey{Hash: auth.Hash(key), Name: name, Namespace: name, Created: time.Now().UTC()}
	// Serialised with deletes, so a namespace removed meanwhile stays removed.
	g.deployMu.Lock()
	defer g.deployMu.Unlock()
	if err := g.store.RotateKey(r.Context(), name, k); err != nil {
		writeError(w, err)
		return
	}
	if err := g.reloadKeys(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	g.log.Info("namespace key rotated", "namespace", name)
	v := g.nsView(t.ns)
	v.Key = key
	writeJSON(w, http.StatusOK, v)
}

// reloadKeys refreshes the authenticator after a committed key change. It
// runs to the end even when the client hung up: the store has changed, and
// a revoked key must stop working.
func (g *Gateway) reloadKeys(ctx context.Context) error {
	if g.cfg.Auth == nil {
		return nil
	}
	return g.cfg.Auth.Reload(context.WithoutCancel(ctx))
}

// decodeBody reads a small JSON request body into v, refusing unknown
// fields.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errdefs.Invalidf("send a JSON object like {\"name\":\"team-a\",\"rate_limit\":\"100/s\",\"max_concurrency\":10}",
			"bad request body: %v", err)
	}
	return nil
}
