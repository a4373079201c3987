package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/store"
)

// Deploy requests are multipart/form-data with a "spec" part (the function
// spec, YAML or JSON) followed by an optional "code" part (a gzip-compressed
// tar of the function directory, as `wisp deploy` packs it). A request whose
// body is just a spec (Content-Type application/json or application/yaml)
// deploys a function without code (an exec function naming a system
// command) or, on update, keeps the current code.
const (
	PartSpec = "spec"
	PartCode = "code"
)

// FunctionView is the API representation of a deployed function.
type FunctionView struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Ref is how the function is called across namespaces:
	// /function/{ref} (function.Ref).
	Ref       string        `json:"ref"`
	Version   int64         `json:"version"`
	Digest    string        `json:"digest,omitempty"`
	CodeSize  int64         `json:"code_size"`
	CreatedAt time.Time     `json:"created_at"`
	UpdatedAt time.Time     `json:"updated_at"`
	Spec      function.Spec `json:"spec"`
	Instances InstanceCount `json:"instances"`
}

// InstanceCount counts a function's instances by state.
type InstanceCount struct {
	Starting int `json:"starting"`
	Idle     int `json:"idle"`
	Busy     int `json:"busy"`
	Queued   int `json:"queued"`
}

func (g *Gateway) view(rec *store.FunctionRecord) FunctionView {
	v := FunctionView{Name: rec.Spec.Name, Namespace: function.NamespaceOf(rec.Namespace), Ref: rec.Ref(), Version: rec.Version, Digest: rec.CodeDigest, CodeSize: rec.CodeSize,
		CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, Spec: rec.Spec}
	for _, st := range g.sched.Stats() {
		if st.Function == rec.Ref() {
			v.Instances = InstanceCount{Starting: st.Starting, Idle: st.Idle, Busy: st.Busy, Queued: st.Queued}
		}
	}
	return v
}

// listFunctions lists the functions of the request's namespace; an admin's
// ?all=true lists every namespace's.
func (g *Gateway) listFunctions(w http.ResponseWriter, r *http.Request) {
	ns, err := g.scope(r)
	if err != nil {
		writeError(w, err)
		return
	}
	all := r.URL.Query().Get("all") == "true" && callerOf(r.Context()).admin
	recs, err := g.store.ListFunctions(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]FunctionView, 0, len(recs))
	for _, rec := range recs {
		if all || function.NamespaceOf(rec.Namespace) == ns {
			out = append(out, g.view(rec))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) getFunction(w http.ResponseWriter, r *http.Request) {
	ref, _, err := g.resolve(r, r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	rec, err := g.store.GetFunction(r.Context(), ref)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, g.view(rec))
}

func (g *Gateway) createFunction(w http.ResponseWriter, r *http.Request) {
	g.deploy(w, r, "", true)
}

func (g *Gateway) putFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if strings.Contains(name, ".") {
		// PUT /v1/functions/hello.team-a: deploy into that namespace.
		ref, ns, err := g.resolve(r, name)
		if err != nil {
			writeError(w, err)
			return
		}
		_, name = function.SplitRef(ref)
		r.Header.Set(HeaderNamespace, ns)
	}
	g.deploy(w, r, name, false)
}

func (g *Gateway) deleteFunction(w http.ResponseWriter, r *http.Request) {
	ref, _, err := g.resolve(r, r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	g.deployMu.Lock()
	defer g.deployMu.Unlock()
	if err := g.store.DeleteFunction(r.Context(), ref); err != nil {
		writeError(w, err)
		return
	}
	g.retire(ref)
	g.gc(r.Context())
	g.log.Info("function deleted", "function", ref)
	w.WriteHeader(http.StatusNoContent)
}

// retire forgets everything the node holds for a deleted function: its
// catalog entry, cached results, rate bucket, pool and metric series.
// Calls in flight finish. Hold deployMu.
func (g *Gateway) retire(ref string) {
	g.catalog.remove(ref)
	g.cfg.Cache.Purge(ref)
	g.limits.forget(ref)
	g.sched.Forget(ref)
	g.metrics.Forget(ref)
	if g.cfg.Triggers != nil {
		g.cfg.Triggers.Remove(scheduleID(ref))
	}
}

// deploy handles create (POST, must not exist) and create-or-replace (PUT).
// Nothing is stored unless every check passes: a code blob uploaded for a
// deploy that fails validation is garbage-collected before the response.
func (g *Gateway) deploy(w http.ResponseWriter, r *http.Request, urlName string, createOnly bool) {
	ctx := r.Context()
	// The upload is read in full before deployMu is taken: a client that
	// trickles its upload must not hold every deploy, trigger and key
	// change of the node.
	spool, err := spoolBody(w, r, g.cfg.MaxCodeSize+1<<20)
	if err != nil {
		writeError(w, fmt.Errorf("deploy: %w", err))
		return
	}
	defer spool.Close()
	r.Body = spool
	g.deployMu.Lock()
	defer g.deployMu.Unlock()

	ns, err := g.scope(r)
	if err != nil {
		writeError(w, fmt.Errorf("deploy: %w", err))
		return
	}
	rec, err := g.readDeploy(ctx, r, ns, urlName)
	if err != nil && rec != nil && rec.CodeDigest != "" {
		// The upload is stored content-addressed before validation ends:
		// drop it again unless something else uses the same code.
		keep := append(g.catalog.digests(), g.sched.LiveDigests()...)
		if derr := g.store.DiscardCode(ctx, rec.CodeDigest, keep); derr != nil {
			g.log.Warn("discard code of a failed deploy", "digest", rec.CodeDigest, "err", derr)
		}
	}
	if err != nil {
		writeError(w, fmt.Errorf("deploy: %w", err))
		return
	}
	var stored *store.FunctionRecord
	if createOnly {
		stored, err = g.store.CreateFunction(ctx, rec)
	} else {
		stored, err = g.store.PutFunction(ctx, rec)
	}
	if err != nil {
		if rec.CodeDigest != "" {
			_ = g.store.DiscardCode(ctx, rec.CodeDigest, append(g.catalog.digests(), g.sched.LiveDigests()...))
		}
		writeError(w, fmt.Errorf("deploy %s: %w", rec.Ref(), err))
		return
	}
	t, err := targetFor(ctx, g.store, stored)
	if err != nil {
		writeError(w, fmt.Errorf("deploy %s: %w", rec.Ref(), err))
		return
	}
	g.catalog.set(t)
	if err := g.syncSchedule(t); err != nil {
		g.log.Error("schedule not started", "function", t.Name, "err", err)
	}
	g.cfg.Cache.Purge(t.Name) // the old version's results are unreachable now; free them
	g.sched.Forget(t.Name)    // retire the old version's pool; its calls in flight finish
	g.gc(ctx)
	g.log.Info("function deployed", "function", t.Name, "version", stored.Version, "digest", stored.CodeDigest)
	status := http.StatusOK
	if stored.Version == 1 {
		status = http.StatusCreated
	}
	writeJSON(w, status, g.view(stored))
}

// spoolBody reads a deploy request's body, at most limit bytes, into an
// unlinked temporary file and returns it at its start.
func spoolBody(w http.ResponseWriter, r *http.Request, limit int64) (*os.File, error) {
	f, err := os.CreateTemp("", "wisp-deploy-*")
	if err != nil {
		return nil, fmt.Errorf("spool the upload: %w", err)
	}
	_ = os.Remove(f.Name()) // gone with its last descriptor
	if _, err := io.Copy(f, http.MaxBytesReader(w, r.Body, limit)); err != nil {
		f.Close()
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errdefs.New(errdefs.ErrTooLarge, "add a .wispignore for files the function does not need, or raise store.max_code_size",
				"code archive exceeds the limit of %d bytes", limit-1<<20)
		}
		return nil, errdefs.WithHint(fmt.Errorf("read the upload: %v: %w", err, errdefs.ErrInvalid), "resend the request")
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool the upload: %w", err)
	}
	return f, nil
}

// readDeploy parses and validates a deploy request into a record ready to
// store.
func (g *Gateway) readDeploy(ctx context.Context, r *http.Request, ns, urlName string) (*store.FunctionRecord, error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return nil, errdefs.Invalidf("send multipart/form-data with a spec part and a code part (wisp deploy does)",
			"missing or invalid Content-Type: %v", err)
	}
	var specData []byte
	var code io.Reader
	var mr *multipart.Reader
	isJSON := false
	switch mt {
	case "multipart/form-data":
		mr = multipart.NewReader(r.Body, params["boundary"])
		p, err := mr.NextPart()
		if err != nil || p.FormName() != PartSpec {
			return nil, errdefs.Invalidf("put the spec part first, then the code part",
				"deploy request: first part must be %q", PartSpec)
		}
		isJSON = strings.Contains(p.Header.Get("Content-Type"), "json")
		if specData, err = io.ReadAll(io.LimitReader(p, 1<<20)); err != nil {
			return nil, fmt.Errorf("read spec: %w", err)
		}
		if p, err = mr.NextPart(); err == nil {
			if p.FormName() != PartCode {
				return nil, errdefs.Invalidf("send only spec and code parts", "deploy request: unexpected part %q", p.FormName())
			}
			code = p
		} else if err != io.EOF {
			return nil, errdefs.Invalidf("resend the request", "deploy request: %v", err)
		}
	case "application/json", "application/yaml", "application/x-yaml", "text/yaml":
		isJSON = mt == "application/json"
		if specData, err = io.ReadAll(io.LimitReader(r.Body, 1<<20)); err != nil {
			return nil, fmt.Errorf("read spec: %w", err)
		}
	default:
		return nil, errdefs.Invalidf("send multipart/form-data with a spec part and a code part (wisp deploy does)",
			"unsupported Content-Type %q", mt)
	}

	var spec *function.Spec
	if isJSON {
		spec, err = function.ParseJSON(specData, g.cfg.Baseline)
	} else {
		spec, err = function.Parse(specData, g.cfg.Baseline)
	}
	if err != nil {
		return nil, err
	}
	if urlName != "" && spec.Name != urlName {
		return nil, errdefs.Invalidf("make the URL and the spec's name agree",
			"field name: spec names %q but the URL names %q", spec.Name, urlName)
	}
	rec := &store.FunctionRecord{Namespace: function.StoredNamespace(ns), Spec: *spec}
	if spec.IsSequence() {
		// A sequence runs its steps' code, never its own: whatever came
		// with it is dropped unread. Its steps may be deployed later.
		if code != nil {
			_, _ = io.Copy(io.Discard, code)
		}
		return rec, g.checkSchedule(spec)
	}
	if err := g.checkSpec(spec); err != nil {
		return nil, err
	}
	if spec.Network == function.NetworkHost && !callerOf(ctx).admin {
		// The host's network reaches whatever listens on the host's
		// loopback: a tenant's function must not.
		return nil, errdefs.New(errdefs.ErrForbidden, "use network: none, or have an admin deploy it",
			"field network: host networking needs an admin key")
	}
	if code != nil {
		digest, size, err := g.store.PutCode(ctx, code)
		if err != nil {
			return nil, err
		}
		rec.CodeDigest, rec.CodeSize = digest, size
	} else if old, err := g.store.GetFunction(ctx, rec.Ref()); err == nil {
		rec.CodeDigest, rec.CodeSize = old.CodeDigest, old.CodeSize
	}
	dir := ""
	if rec.CodeDigest != "" {
		if dir, err = g.store.CodeDir(ctx, rec.CodeDigest); err != nil {
			return rec, err
		}
	} else if function.Family(spec.Runtime) != function.RuntimeExec {
		return rec, errdefs.Invalidf("deploy with wisp deploy -f function.yaml, which uploads the directory holding the spec",
			"function %s has no code: %s functions need their handler file", spec.Name, spec.Runtime)
	}
	if err := spec.ValidateCode(dir); err != nil {
		return rec, err
	}
	return rec, nil
}

// checkSpec checks what only the server knows: is the mode available, can
// the runtime run here.
func (g *Gateway) checkSpec(spec *function.Spec) error {
	mode := spec.ExecutionMode
	if mode == function.ModeAuto {
		mode = function.ModeProcess
	}
	why, ok := g.cfg.Modes[mode]
	if !ok {
		return errdefs.Invalidf("use execution_mode: process",
			"field execution_mode: %s is not supported by this wisp server yet", mode)
	}
	if why != nil {
		return errdefs.WithHint(fmt.Errorf("field execution_mode: %s is not available on this node: %w", mode, why),
			errdefs.Hint(why))
	}
	if len(spec.Dependencies) > 0 {
		return errdefs.Invalidf("vendor them into the function directory (pip install -t . PACKAGE, or npm install) and remove dependencies from the spec",
			"field dependencies: this node cannot install packages at deploy time")
	}
	if g.cfg.CheckRuntime != nil {
		if err := g.cfg.CheckRuntime(spec); err != nil {
			return fmt.Errorf("field runtime: %w", err)
		}
	}
	return g.checkSchedule(spec)
}

// gc removes code no deployed function references.
func (g *Gateway) gc(ctx context.Context) {
	keep := append(g.catalog.digests(), g.sched.LiveDigests()...)
	if _, err := g.store.GCCode(ctx, keep); err != nil {
		g.log.Warn("code garbage collection", "err", err)
	}
}

// listActivations lists the activations of the request's namespace; an
// admin's ?all=true lists every namespace's.
func (g *Gateway) listActivations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if state := q.Get("state"); state != "" {
		// Async calls by state (state=failed: the dead letters) come from
		// the queue.
		g.listJobs(w, r, state)
		return
	}
	ns, err := g.scope(r)
	if err != nil {
		writeError(w, err)
		return
	}
	f := store.ActivationFilter{Namespace: ns, Before: q.Get("before"), Status: q.Get("status")}
	if q.Get("all") == "true" && callerOf(r.Context()).admin {
		f.Namespace = ""
	}
	if fn := q.Get("function"); fn != "" {
		if f.Function, ns, err = g.resolve(r, fn); err != nil {
			writeError(w, err)
			return
		}
		f.Namespace = ns
	}
	if f.Limit, err = queryLimit(q); err != nil {
		writeError(w, err)
		return
	}
	acts, err := g.store.ListActivations(r.Context(), f)
	if err != nil {
		writeError(w, err)
		return
	}
	if acts == nil {
		acts = []*store.Activation{}
	}
	writeJSON(w, http.StatusOK, acts)
}

func (g *Gateway) getActivation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a, err := g.store.GetActivation(r.Context(), id)
	if err == nil && (!visible(r, a.Namespace) || !g.tenants.current(a.Namespace, a.Start)) {
		a, err = nil, errdefs.New(errdefs.ErrNotFound, "wisp activations lists yours", "activation %q not found", id)
	}
	if m := g.asyncView(r.Context(), r, id, a); m != nil {
		a, err = m, nil
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// Health is the /healthz body.
type Health struct {
	Status    string            `json:"status"`
	Version   string            `json:"version"`
	Modes     map[string]string `json:"modes"`
	Functions int               `json:"functions"`
}

func (g *Gateway) healthz(w http.ResponseWriter, r *http.Request) {
	h := Health{Status: "ok", Version: g.cfg.Version, Modes: map[string]string{}}
	for m, err := range g.cfg.Modes {
		if err != nil {
			h.Modes[m] = err.Error()
		} else {
			h.Modes[m] = "ready"
		}
	}
	g.catalog.mu.RLock()
	h.Functions = len(g.catalog.targets)
	g.catalog.mu.RUnlock()
	writeJSON(w, http.StatusOK, h)
}

// ScaleRequest is the body of POST /v1/functions/{name}/scale.
type ScaleRequest struct {
	// Instances is how many ready instances the function should have (at
	// most its max_instances); they stay while its keep-alive allows.
	Instances int `json:"instances"`
}

// scaleFunction starts instances ahead of calls, in the background, and
// answers 202 at once; GET /v1/functions/{name} shows them come up.
func (g *Gateway) scaleFunction(w http.ResponseWriter, r *http.Request) {
	t, err := g.target(r)
	if err != nil {
		writeError(w, err)
		return
	}
	name := t.Name
	var req ScaleRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&req); err != nil || req.Instances < 1 {
		writeError(w, errdefs.Invalidf(`send {"instances": N} with N ≥ 1`, "scale %s: bad request body", name))
		return
	}
	if t.Spec.IsSequence() {
		writeError(w, errdefs.Invalidf("scale its steps instead", "scale %s: a sequence has no instances of its own", name))
		return
	}
	if t.Spec.KeepAlive.D() == 0 && !t.Spec.KeepAliveAuto {
		writeError(w, errdefs.Invalidf("set keep_alive above 0: scaled instances wait for calls",
			"scale %s: keep_alive 0 instances serve one call and are never idle", name))
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		// Starts run two per CPU at most: a burst of sandbox creations
		// would slow every one of them down.
		if err := g.sched.Scale(ctx, t, req.Instances, 2*goruntime.NumCPU()); err != nil {
			g.log.Warn("scale function", "function", name, "instances", req.Instances, "err", err)
			return
		}
		g.log.Info("function scaled", "function", name, "instances", req.Instances)
	}()
	writeJSON(w, http.StatusAccepted, map[string]any{"function": name, "instances": min(req.Instances, t.Spec.MaxInstances)})
}

// queryLimit reads ?limit= of a list request: 0 when absent (the list's
// default), an error naming it when it is not a positive number.
func queryLimit(q url.Values) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, errdefs.Invalidf("use a positive number", "limit %q is not a positive number", s)
	}
	return n, nil
}
