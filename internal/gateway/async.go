package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/queue"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/store"
)

// HeaderCallbackURL names a URL that receives an async call's outcome.
const HeaderCallbackURL = "X-Callback-Url"

// AsyncQueue is what the gateway needs from the durable queue of async
// calls (internal/queue).
type AsyncQueue interface {
	Enqueue(ctx context.Context, j *queue.Job) error
	Get(ctx context.Context, id string) (*queue.Job, error)
	List(ctx context.Context, f queue.Filter) ([]*queue.Job, error)
	Redrive(ctx context.Context, id string) error
	PurgeNamespace(ctx context.Context, ns string) (int, error)
	Unfinished(ctx context.Context) (map[string]int, error)
}

// enqueue puts j in the queue within its namespace's max_queued quota.
func (g *Gateway) enqueue(ctx context.Context, j *queue.Job) error {
	ns := function.NamespaceOf(j.Namespace)
	if ns != function.DefaultNamespace && !g.tenants.exists(ns) {
		return g.tenants.notFound(ns) // removed while the call was read
	}
	undo, err := g.tenants.admitQueued(ns)
	if err != nil {
		return err
	}
	if err := g.cfg.Queue.Enqueue(ctx, j); err != nil {
		undo()
		return err
	}
	g.metrics.AsyncEnqueued(j.Ref)
	return nil
}

// AsyncAccepted is the body of a 202 answer to an async call.
type AsyncAccepted struct {
	ActivationID string `json:"activation_id"`
}

// invokeAsync serves POST /async-function/{name}: the call is stored in the
// durable queue before the 202, and runs when a worker takes it.
func (g *Gateway) invokeAsync(w http.ResponseWriter, r *http.Request) {
	if g.cfg.Queue == nil {
		writeError(w, errdefs.New(errdefs.ErrUnavailable, "see the server's log", "async calls are off on this server"))
		return
	}
	t, err := g.target(r)
	if err != nil {
		writeError(w, err)
		return
	}
	cb := r.Header.Get(HeaderCallbackURL)
	if cb != "" {
		if err := g.checkCallback(t.Namespace(), cb); err != nil {
			writeError(w, fmt.Errorf("header %s: %w", HeaderCallbackURL, err))
			return
		}
	}
	var body bytes.Buffer
	if err := g.readBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	header := forwardHeader(r)
	id := store.NewActivationID()
	j := &queue.Job{
		ID: id, Namespace: t.Namespace(), Function: t.Spec.Name, Ref: t.Name,
		Method: r.Method, Path: "/" + r.PathValue("rest"), RawQuery: r.URL.RawQuery, Header: header, Body: body.Bytes(),
		CallbackURL: cb, MaxRetries: t.Spec.Retries, Source: "api",
	}
	if err := g.enqueue(r.Context(), j); err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set(HeaderActivationID, id)
	w.Header().Set("Location", "/v1/activations/"+id)
	writeJSON(w, http.StatusAccepted, AsyncAccepted{ActivationID: id})
}

// pending holds the activation each async job's latest attempt built, until
// the queue says the job is finished (AsyncFinished) and it is recorded.
type pending struct{ m sync.Map } // id → *store.Activation

// InvokeAsync runs one attempt of an async job (queue.Invoker). A call that
// is refused for capacity (a rate limit, a namespace quota, a full
// instance queue) is throttled: the queue tries it again later without
// spending an attempt. A crash, a timeout, an exception or a 5xx may be
// retried; a 4xx, or a function deleted meanwhile, fails at once.
func (g *Gateway) InvokeAsync(ctx context.Context, j *queue.Job) queue.Result {
	arrived := time.Now()
	t := g.catalog.get(j.Ref)
	if t == nil || !g.tenants.current(j.Namespace, j.Enqueued) {
		// Deleted since it was queued, or its namespace removed (and maybe
		// made again: a new namespace of the same name must not run the
		// old one's calls). Whatever an earlier attempt left is not this
		// attempt's outcome.
		g.async.m.Delete(j.ID)
		err := functionNotFound(j.Ref)
		return queue.Result{StatusCode: statusFor(err), Err: err}
	}
	if d, err := g.limits.allow(t); err != nil {
		return queue.Result{StatusCode: http.StatusTooManyRequests, Err: err, Throttled: true, RetryAfter: d}
	}
	release, d, err := g.tenants.admit(function.NamespaceOf(j.Namespace))
	if err != nil {
		return queue.Result{StatusCode: http.StatusTooManyRequests, Err: err, Throttled: true, RetryAfter: d}
	}
	defer release()
	req := &sandbox.Request{ActivationID: j.ID, Method: j.Method, Path: j.Path, RawQuery: j.RawQuery, Header: j.Header, Body: j.Body}
	cctx, cancel := context.WithTimeout(ctx, t.Spec.Timeout.D())
	res, steps, err := g.run(cctx, t, req, 0)
	cancel()
	if err != nil && errors.Is(err, errdefs.ErrLimit) && len(steps) == 0 {
		// The function's instances and wait queue are full, and nothing
		// ran: not an attempt. (A sequence refused at a later step did run
		// its first steps: that is an attempt, retried as any failure.)
		return queue.Result{StatusCode: http.StatusTooManyRequests, Err: err, Throttled: true, RetryAfter: time.Second}
	}
	if err != nil && ctx.Err() != nil {
		// The server is stopping: the job stays queued on disk.
		return queue.Result{Err: err, Retry: true}
	}
	act, resp := g.activation(t, j.ID, j.Ref, arrived, res, err, links{children: steps})
	act.RequestBytes = int64(len(j.Body))
	act.DurationMs = ms(time.Since(arrived))
	act.Attempts = j.Attempts + 1
	g.async.m.Store(j.ID, act)

	out := queue.Result{StatusCode: act.StatusCode}
	switch {
	case err != nil:
		out.Err = err
		out.Retry = !errors.Is(err, errdefs.ErrInvalid) && !errors.Is(err, errdefs.ErrNotFound) &&
			!errors.Is(err, errdefs.ErrTooLarge)
	case act.StatusCode >= 400 && act.StatusCode < 500:
		// The function (or a sequence's step) refused the request: trying
		// it again would not help.
		out.Err = errors.New(act.Error)
		if act.Error == "" {
			out.Err = fmt.Errorf("function %s answered HTTP %d", j.Ref, act.StatusCode)
		}
		out.Header, out.Body = resp.Header, resp.Body
	case resp.Error != "" || act.StatusCode >= 500:
		out.Err = errors.New(act.Error)
		if act.Error == "" {
			out.Err = fmt.Errorf("function %s answered HTTP %d", j.Ref, act.StatusCode)
		}
		out.Retry = true
		out.Header, out.Body = resp.Header, resp.Body
	default:
		out.Header, out.Body = resp.Header, resp.Body
	}
	return out
}

// AsyncFinished records the activation of an async job that reached its
// final state (queue.Options.Finished): the latest attempt's record, with
// the job's state and attempts.
func (g *Gateway) AsyncFinished(j *queue.Job, r queue.Result) {
	v, ok := g.async.m.LoadAndDelete(j.ID)
	act, _ := v.(*store.Activation)
	if !ok || act == nil {
		// It never ran (the function was deleted before its first attempt).
		act = &store.Activation{ID: j.ID, Namespace: j.Namespace, Function: j.Ref, Start: j.Enqueued,
			Status: StatusRejected, StatusCode: r.StatusCode, RequestBytes: int64(len(j.Body))}
		if r.Err != nil {
			act.Error, act.Hint = r.Err.Error(), errdefs.Hint(r.Err)
		}
	}
	act.State, act.Attempts, act.Source = j.State, j.Attempts, j.Source
	if !g.tenants.current(j.Namespace, j.Enqueued) {
		// Its namespace was removed: neither its record nor its count
		// belongs to a namespace of the same name made since.
		return
	}
	g.tenants.finishedQueued(function.NamespaceOf(j.Namespace))
	g.store.RecordActivation(act)
	g.metrics.Invocation(act.Function, act.Status, act.ColdStart, act.StatusCode, time.Duration(act.DurationMs*float64(time.Millisecond)))
	g.metrics.AsyncFinished(act.Function, j.State)
	if j.State != queue.StateSucceeded {
		g.log.Warn("async call failed for good", "function", j.Ref, "activation", j.ID, "attempts", j.Attempts, "err", act.Error)
	}
}

// jobActivation shows a job that has no activation record yet (queued, or
// running its first attempt) as one.
func jobActivation(j *queue.Job) *store.Activation {
	return &store.Activation{ID: j.ID, Namespace: j.Namespace, Function: j.Ref, Start: j.Enqueued,
		State: j.State, Attempts: j.Attempts, Source: j.Source, StatusCode: j.LastStatus, Error: j.LastError,
		Result: j.Result, ResultTruncated: j.ResultTruncated, RequestBytes: int64(len(j.Body))}
}

// asyncView merges what the queue knows of activation id into a (nil when
// the store has no record).
func (g *Gateway) asyncView(ctx context.Context, r *http.Request, id string, a *store.Activation) *store.Activation {
	if g.cfg.Queue == nil {
		return a
	}
	j, err := g.cfg.Queue.Get(ctx, id)
	if err != nil || !visible(r, j.Namespace) || !g.tenants.current(j.Namespace, j.Enqueued) {
		return a
	}
	switch {
	case a == nil:
		return jobActivation(j)
	case j.State == queue.StateQueued || j.State == queue.StateRunning:
		// A retry is pending or running: the queue is ahead of the record.
		a.State, a.Attempts = j.State, j.Attempts
	}
	return a
}

// listFailed serves GET /v1/activations?state=failed: the dead letters.
func (g *Gateway) listJobs(w http.ResponseWriter, r *http.Request, state string) {
	if g.cfg.Queue == nil {
		writeJSON(w, http.StatusOK, []*store.Activation{})
		return
	}
	ns, err := g.scope(r)
	if err != nil {
		writeError(w, err)
		return
	}
	f := queue.Filter{Namespace: ns, State: state}
	q := r.URL.Query()
	if q.Get("all") == "true" && callerOf(r.Context()).admin {
		f.AllNamespaces = true
	}
	if fn := q.Get("function"); fn != "" {
		ref, fns, err := g.resolve(r, fn)
		if err != nil {
			writeError(w, err)
			return
		}
		_, f.Function = function.SplitRef(ref)
		f.Namespace, f.AllNamespaces = fns, false
	}
	f.Before = q.Get("before")
	if f.Limit, err = queryLimit(q); err != nil {
		writeError(w, err)
		return
	}
	jobs, err := g.cfg.Queue.List(r.Context(), f)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]*store.Activation, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, jobActivation(j))
	}
	writeJSON(w, http.StatusOK, out)
}

// redrive serves POST /v1/activations/{id}/redrive: a failed async call
// (a dead letter) goes back to the queue with its attempts reset.
func (g *Gateway) redrive(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if g.cfg.Queue == nil {
		writeError(w, errdefs.New(errdefs.ErrUnavailable, "see the server's log", "async calls are off on this server"))
		return
	}
	j, err := g.cfg.Queue.Get(r.Context(), id)
	if err != nil || !visible(r, j.Namespace) || !g.tenants.current(j.Namespace, j.Enqueued) {
		writeError(w, errdefs.New(errdefs.ErrNotFound, "wisp activations --failed lists the dead letters",
			"async activation %q not found", id))
		return
	}
	undo, err := g.tenants.admitQueued(function.NamespaceOf(j.Namespace))
	if err != nil {
		writeError(w, err)
		return
	}
	if err := g.cfg.Queue.Redrive(r.Context(), id); err != nil {
		undo()
		writeError(w, err)
		return
	}
	g.log.Info("async call redriven", "function", j.Ref, "activation", id)
	writeJSON(w, http.StatusAccepted, AsyncAccepted{ActivationID: id})
}

// checkCallback validates the callback URL of a call of namespace ns. A
// tenant namespace's may not name a loopback, link-local or private address
// (the server's dialer refuses names that resolve to one, too: the job's
// namespace decides, whoever queued it).
func (g *Gateway) checkCallback(ns, cb string) error {
	if err := queue.ValidateCallbackURL(cb); err != nil {
		return err
	}
	if function.NamespaceOf(ns) == function.DefaultNamespace {
		return nil
	}
	u, _ := url.Parse(cb)
	host := u.Hostname()
	ip := net.ParseIP(host)
	if (ip != nil && !queue.PublicOnly(ip)) || strings.Contains(host, "%") || strings.EqualFold(host, "localhost") {
		return errdefs.New(errdefs.ErrForbidden, "give a public address for the callback",
			"%s is not a public address: a tenant's callbacks may not reach the wisp host or its private network", host)
	}
	return nil
}
