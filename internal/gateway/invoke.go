package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/cache"
	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/scheduler"
	"github.com/wisp-faas/wisp/internal/store"
)

// Response headers set on every invocation.
const (
	HeaderActivationID = "X-Wisp-Activation-Id"
	HeaderColdStart    = "X-Wisp-Cold-Start"
	HeaderDurationMs   = "X-Wisp-Duration-Ms"
	HeaderInitMs       = "X-Wisp-Init-Ms"
	// HeaderCache says whether a deterministic function's call was
	// answered from the result cache: hit, miss, or bypass (the request
	// said Cache-Control: no-cache or no-store).
	HeaderCache = "X-Wisp-Cache"
)

// Activation statuses.
const (
	StatusSuccess  = "success"
	StatusError    = "error"
	StatusTimeout  = "timeout"
	StatusCrashed  = "crashed"
	StatusRejected = "rejected"
)

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// hopHeaders are not passed to functions.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Authorization"}

func (g *Gateway) invoke(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	id := store.NewActivationID()
	w.Header().Set(HeaderActivationID, id)

	t, err := g.target(r)
	if err != nil {
		g.finish(w, r, nil, id, "", arrived, nil, err)
		return
	}
	name, ns := t.Name, function.NamespaceOf(t.Namespace())

	if d, err := g.limits.allow(t); err != nil {
		retryAfter(w, d)
		g.finish(w, r, t, id, name, arrived, nil, err)
		return
	}
	release, d, err := g.tenants.admit(ns)
	if err != nil {
		retryAfter(w, d)
		g.finish(w, r, t, id, name, arrived, nil, err)
		return
	}
	defer release()

	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	if err := g.readBody(w, r, buf); err != nil {
		g.finish(w, r, t, id, name, arrived, nil, err)
		return
	}
	header := forwardHeader(r)
	path := "/" + r.PathValue("rest")
	req := &sandbox.Request{
		ActivationID: id,
		Method:       r.Method,
		Path:         path,
		RawQuery:     r.URL.RawQuery,
		Header:       header,
		Body:         buf.Bytes(),
	}
	var ckey string
	if g.cfg.Cache != nil && t.Spec.Deterministic {
		var hit bool
		if ckey, hit = g.lookupCache(w, r, t, id, name, arrived, req); hit {
			bufPool.Put(buf)
			return
		}
	}
	// The function's timeout bounds the whole call. A client that hangs up
	// does not cancel it: the call finishes and is recorded, and the
	// instance stays warm.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), t.Spec.Timeout.D())
	res, steps, err := g.run(ctx, t, req, 0)
	cancel()
	if ckey != "" && err == nil && res.Response.Error == "" && res.Response.Status >= 200 && res.Response.Status < 300 {
		g.cfg.Cache.Put(ckey, &cache.Entry{Status: res.Response.Status, Header: res.Response.Header,
			Body: res.Response.Body, Stored: time.Now()})
	}
	g.finishWith(w, r, t, id, name, arrived, res, err, links{children: steps})
	if err == nil && buf.Cap() <= 1<<20 {
		// After an error the instance may still hold the body; let it go.
		bufPool.Put(buf)
	}
}

// target resolves the function a call names ({name} in the URL) to its
// deployed version, or a not-found error.
func (g *Gateway) target(r *http.Request) (*scheduler.Target, error) {
	ref, _, err := g.resolve(r, r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	t := g.catalog.get(ref)
	if t == nil {
		return nil, functionNotFound(r.PathValue("name"))
	}
	return t, nil
}

// readBody reads a call's body into buf, within gateway.max_body_size.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) error {
	if r.ContentLength > g.cfg.MaxBodySize {
		return tooLarge(r.ContentLength, g.cfg.MaxBodySize)
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodySize)); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge(-1, g.cfg.MaxBodySize)
		}
		return errdefs.WithHint(fmt.Errorf("read request body: %v: %w", err, errdefs.ErrInvalid), "resend the request")
	}
	return nil
}

// forwardHeader is the part of a call's header the function sees: not the
// hop-by-hop headers, not the caller's key, not wisp's own.
func forwardHeader(r *http.Request) http.Header {
	header := r.Header.Clone()
	for _, h := range hopHeaders {
		header.Del(h)
	}
	header.Del(HeaderCallbackURL)
	header.Del(HeaderNamespace)
	return header
}

// cacheVersion names what a cached response of t depends on: its deployed
// version and code, and for a sequence every function it reaches (a step
// redeployed makes the sequence's old results unreachable). Each function
// is visited once, so sequences that name each other cost no more than
// their number.
func (g *Gateway) cacheVersion(t *scheduler.Target) string {
	if !t.Spec.IsSequence() {
		return strconv.FormatInt(t.Version, 10) + "/" + t.Digest
	}
	seen := map[string]string{}
	var visit func(t *scheduler.Target)
	visit = func(t *scheduler.Target) {
		if _, ok := seen[t.Name]; ok {
			return
		}
		seen[t.Name] = strconv.FormatInt(t.Version, 10) + "/" + t.Digest
		if !t.Spec.IsSequence() {
			return
		}
		for _, step := range t.Spec.Steps {
			if st := g.catalog.get(function.Ref(t.Namespace(), step)); st != nil {
				visit(st)
			}
		}
	}
	visit(t)
	parts := make([]string, 0, len(seen))
	for ref, v := range seen {
		parts = append(parts, ref+"@"+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, "|")
}

func tooLarge(n, limit int64) error {
	msg := fmt.Sprintf("request body exceeds the limit of %d bytes", limit)
	if n > 0 {
		msg = fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", n, limit)
	}
	return errdefs.New(errdefs.ErrTooLarge, "send a smaller body, or raise gateway.max_body_size in the server config", "%s", msg)
}

// finish writes the response, records the activation and the metrics.
func (g *Gateway) finish(w http.ResponseWriter, r *http.Request, t *scheduler.Target, id, name string,
	arrived time.Time, res *scheduler.Result, err error) {
	g.finishWith(w, r, t, id, name, arrived, res, err, links{})
}

// links ties the activations of a sequence together.
type links struct {
	parent   string   // the sequence's activation, for a step's
	children []string // the steps' activations, for a sequence's
}

func (g *Gateway) finishWith(w http.ResponseWriter, r *http.Request, t *scheduler.Target, id, name string,
	arrived time.Time, res *scheduler.Result, err error, l links) {
	if t == nil {
		// Unknown functions get no activation record or metric series, so
		// arbitrary names cannot grow either.
		writeError(w, err)
		return
	}
	act, resp := g.activation(t, id, name, arrived, res, err, l)
	h := w.Header()
	// wisp's own headers, in one allocation (the keys are canonical). The
	// activation id was set on arrival, and the function's own X-Wisp-*
	// headers are not copied, so these stand.
	own := make([]string, 3)
	own[0] = strconv.FormatBool(act.ColdStart)
	// X-Wisp-Init-Ms: what this call paid for an instance's start (0 when
	// it was served warm), as OpenWhisk's initTime.
	own[1] = "0"
	if act.ColdStart && res != nil {
		own[1] = fmtMs(res.Timings.Start)
	}
	h[HeaderColdStart], h[HeaderInitMs] = own[0:1:1], own[1:2:2]
	duration := func() { // set last, to count the response's making
		own[2] = fmtMs(time.Since(arrived))
		h[HeaderDurationMs] = own[2:3:3]
	}
	switch {
	case err != nil:
		duration()
		writeError(w, err)
	case resp.Error != "":
		duration()
		writeJSON(w, act.StatusCode, ErrorBody{Error: act.Error, Hint: act.Hint})
	default:
		for k, vs := range resp.Header {
			if !strings.HasPrefix(k, "X-Wisp-") { // wisp's own headers are wisp's
				h[k] = vs
			}
		}
		// The function may not set framing or wisp's own headers.
		for _, k := range []string{"Connection", "Transfer-Encoding", "Keep-Alive", "Upgrade", "Trailer"} {
			h.Del(k)
		}
		if h.Get("Content-Type") == "" {
			h.Set("Content-Type", "application/octet-stream")
		}
		h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
		duration()
		w.WriteHeader(act.StatusCode)
		if r.Method != http.MethodHead {
			_, _ = w.Write(resp.Body)
		}
	}
	if r.ContentLength > 0 {
		act.RequestBytes = r.ContentLength
	}
	g.record(act, arrived)
}

// record stores an activation (its duration measured from arrived) and
// counts it in the metrics.
func (g *Gateway) record(act *store.Activation, arrived time.Time) {
	dur := time.Since(arrived)
	act.DurationMs = ms(dur)
	if !g.tenants.current(act.Namespace, act.Start) {
		return // its namespace was removed while it ran
	}
	g.store.RecordActivation(act)
	g.metrics.Invocation(act.Function, act.Status, act.ColdStart, act.StatusCode, dur)
	if act.Status != StatusSuccess {
		g.log.Info("invocation failed", "function", act.Function, "activation", act.ID, "status", act.StatusCode,
			"outcome", act.Status, "err", act.Error)
	}
}

// activation builds the record of a call of t that ended with res and err
// (its duration is set by record), and returns the function's response
// when there is one.
func (g *Gateway) activation(t *scheduler.Target, id, name string, arrived time.Time, res *scheduler.Result, err error,
	l links) (*store.Activation, *sandbox.Response) {
	cold := res != nil && res.Cold
	act := &store.Activation{
		ID:        id,
		Namespace: t.Namespace(),
		Function:  name,
		Start:     arrived,
		ColdStart: cold,
		Version:   t.Version,
		Parent:    l.parent,
		Children:  l.children,
	}
	var resp *sandbox.Response
	if res != nil {
		resp = res.Response
		act.InstanceID = res.InstanceID
		act.Timings = map[string]float64{
			"queue_ms": ms(res.Timings.Queue),
			"exec_ms":  ms(res.Timings.Exec),
		}
		if g.cfg.Meter != nil && res.Response != nil && !t.Spec.IsSequence() {
			j, src := g.cfg.Meter.ObserveCall(name, res.Timings.Exec)
			act.EnergyJ, act.EnergySource = j, string(src)
		}
		if res.Cold {
			act.Timings["start_ms"] = ms(res.Timings.Start)
			if st := res.Timings.Stages; st != nil {
				act.Timings["sandbox_ms"] = ms(st.Sandbox)
				act.Timings["runtime_ms"] = ms(st.Runtime)
				act.Timings["import_ms"] = ms(st.Import)
				g.metrics.ColdStartStages(name, t.Spec.ExecutionMode, st.Provisioned, st.Sandbox, st.Runtime, st.Import)
			}
		}
	}
	switch {
	case err != nil:
		act.StatusCode = statusFor(err)
		act.Status = activationStatus(err)
		act.Error, act.Hint = err.Error(), errdefs.Hint(err)
		if resp != nil {
			act.Logs = string(resp.Logs)
		}
	case resp.Error != "":
		act.StatusCode = resp.Status
		// An exception is a 500; a sequence keeps its failed step's status.
		if act.StatusCode < 500 && !(t.Spec.IsSequence() && act.StatusCode >= 400) {
			act.StatusCode = http.StatusInternalServerError
		}
		act.Status = StatusError
		act.Error = fmt.Sprintf("function %s raised %s", name, resp.Error)
		act.Hint = fmt.Sprintf("wisp logs %s shows the traceback", name)
		if t.Spec.IsSequence() {
			act.Error = fmt.Sprintf("sequence %s failed %s", name, resp.Error)
			act.Hint = fmt.Sprintf("wisp activations %s links the steps' activations, with their logs", id)
		}
		act.Logs = string(resp.Logs)
	default:
		act.StatusCode = resp.Status
		if act.StatusCode == 0 {
			act.StatusCode = http.StatusOK
		}
		act.Status = StatusSuccess
		if act.StatusCode >= 500 {
			act.Status = StatusError
		}
		act.Logs = string(resp.Logs)
		act.Result = resp.Body
		act.ResponseBytes = int64(len(resp.Body))
	}
	return act, resp
}

func activationStatus(err error) string {
	switch {
	case errors.Is(err, errdefs.ErrTimeout):
		return StatusTimeout
	case errors.Is(err, errdefs.ErrCrashed):
		return StatusCrashed
	case errors.Is(err, errdefs.ErrLimit), errors.Is(err, errdefs.ErrUnavailable),
		errors.Is(err, errdefs.ErrNotFound), errors.Is(err, errdefs.ErrTooLarge), errors.Is(err, errdefs.ErrInvalid):
		return StatusRejected
	default:
		return StatusError
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fmtMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 3, 64)
}

// lookupCache looks req up in the result cache and answers it when it hits.
// It returns the key to store the response under after a miss ("" when the
// request said Cache-Control: no-store).
func (g *Gateway) lookupCache(w http.ResponseWriter, r *http.Request, t *scheduler.Target, id, name string,
	arrived time.Time, req *sandbox.Request) (key string, hit bool) {
	cc := strings.ToLower(r.Header.Get("Cache-Control"))
	noStore := strings.Contains(cc, "no-store")
	if !noStore {
		key = cache.Key(name, g.cacheVersion(t), req.Method, req.Path, req.RawQuery, req.Body)
	}
	if noStore || strings.Contains(cc, "no-cache") {
		w.Header().Set(HeaderCache, "bypass")
		g.metrics.CacheLookup(name, "bypass")
		return key, false
	}
	e, ok := g.cfg.Cache.Get(key)
	if !ok {
		w.Header().Set(HeaderCache, "miss")
		g.metrics.CacheLookup(name, "miss")
		return key, false
	}
	g.metrics.CacheLookup(name, "hit")
	h := w.Header()
	for k, vs := range e.Header {
		if !strings.HasPrefix(k, "X-Wisp-") {
			h[k] = vs
		}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/octet-stream")
	}
	h.Set(HeaderCache, "hit")
	h.Set(HeaderColdStart, "false")
	h.Set(HeaderInitMs, "0")
	h.Set("Age", strconv.Itoa(int(time.Since(e.Stored).Seconds())))
	h.Set("Content-Length", strconv.Itoa(len(e.Body)))
	h.Set(HeaderDurationMs, fmtMs(time.Since(arrived)))
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.Body)
	}
	dur := time.Since(arrived)
	g.store.RecordActivation(&store.Activation{
		ID: id, Namespace: t.Namespace(), Function: name, Version: t.Version, Start: arrived, Status: StatusSuccess, StatusCode: e.Status,
		CacheHit: true, DurationMs: ms(dur), Result: e.Body, ResponseBytes: int64(len(e.Body)),
		RequestBytes: int64(len(req.Body)),
	})
	g.metrics.Invocation(name, StatusSuccess, false, e.Status, dur)
	return key, true
}
