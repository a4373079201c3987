package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/queue"
	"github.com/wisp-faas/wisp/internal/scheduler"
	"github.com/wisp-faas/wisp/internal/store"
	"github.com/wisp-faas/wisp/internal/trigger"
)

// Triggers is what the gateway needs from the running event sources
// (trigger.Mux over cron and NATS).
type Triggers interface {
	Set(t trigger.Trigger) error
	Remove(id string)
}

// NextFirer tells when a cron trigger fires next (trigger.Cron.Next).
type NextFirer interface {
	Next(id string) (time.Time, bool)
}

// scheduleID is the trigger ID of a function's own schedule: field.
func scheduleID(ref string) string { return "fn:" + ref }

// syncSchedule starts, changes or stops the cron trigger of t's schedule.
func (g *Gateway) syncSchedule(t *scheduler.Target) error {
	if g.cfg.Triggers == nil {
		return nil
	}
	id := scheduleID(t.Name)
	if t.Spec.Schedule == "" {
		g.cfg.Triggers.Remove(id)
		return nil
	}
	return g.cfg.Triggers.Set(trigger.Trigger{ID: id, Namespace: t.Namespace(), Function: t.Spec.Name,
		Type: trigger.TypeCron, Schedule: t.Spec.Schedule})
}

// checkSchedule checks a spec's schedule: field (400 at deploy, not a
// silent trigger that never fires).
func (g *Gateway) checkSchedule(spec *function.Spec) error {
	if spec.Schedule == "" {
		return nil
	}
	if g.cfg.Triggers == nil || g.cfg.Queue == nil {
		return errdefs.New(errdefs.ErrUnavailable, "remove schedule, or run a server with async calls on",
			"field schedule: this server runs no triggers")
	}
	if _, err := trigger.ParseSchedule(spec.Schedule); err != nil {
		return fmt.Errorf("field schedule: %w", err)
	}
	return nil
}

// Fire turns a trigger's event into an async call (trigger.Firer): it
// returns once the call is in the durable queue.
func (g *Gateway) Fire(ctx context.Context, ev trigger.Event) error {
	if g.cfg.Queue == nil {
		return errdefs.New(errdefs.ErrUnavailable, "see the server's log", "async calls are off on this server")
	}
	ref := function.Ref(ev.Namespace, ev.Function)
	t := g.catalog.get(ref)
	if t == nil {
		return functionNotFound(ref)
	}
	j := &queue.Job{ID: store.NewActivationID(), Namespace: t.Namespace(), Function: t.Spec.Name, Ref: ref,
		Method: http.MethodPost, Path: "/", Header: ev.Header, Body: ev.Body, MaxRetries: t.Spec.Retries, Source: ev.Source}
	return g.enqueue(ctx, j)
}

// TriggerRequest is the body of POST /v1/triggers.
type TriggerRequest struct {
	Name     string `json:"name"`
	Function string `json:"function"`
	Type     string `json:"type"`
	Schedule string `json:"schedule,omitempty"`
	Subject  string `json:"subject,omitempty"`
	Body     string `json:"body,omitempty"`
}

// TriggerView is the API representation of a trigger.
type TriggerView struct {
	store.TriggerRecord
	// Next is a cron trigger's next firing.
	Next *time.Time `json:"next,omitempty"`
}

func (g *Gateway) triggerView(t *store.TriggerRecord) TriggerView {
	v := TriggerView{TriggerRecord: *t}
	if n, ok := g.cfg.Triggers.(NextFirer); ok {
		if at, ok := n.Next(t.ID); ok {
			v.Next = &at
		}
	}
	return v
}

func (g *Gateway) triggersOff(w http.ResponseWriter) bool {
	if g.cfg.Triggers == nil || g.cfg.Queue == nil {
		writeError(w, errdefs.New(errdefs.ErrUnavailable, "see the server's log", "triggers are off on this server"))
		return true
	}
	return false
}

func (g *Gateway) createTrigger(w http.ResponseWriter, r *http.Request) {
	if g.triggersOff(w) {
		return
	}
	ns, err := g.scope(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req TriggerRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if !function.ValidName(req.Name) {
		writeError(w, errdefs.Invalidf("use 1-63 lowercase letters, digits and '-', like nightly-report",
			"field name: %q is not a valid trigger name", req.Name))
		return
	}
	if g.catalog.get(function.Ref(ns, req.Function)) == nil {
		writeError(w, fmt.Errorf("field function: %w", functionNotFound(req.Function)))
		return
	}
	rec := &store.TriggerRecord{Name: req.Name, Created: time.Now().UTC(), Trigger: trigger.Trigger{
		ID: ns + "/" + req.Name, Namespace: function.StoredNamespace(ns), Function: req.Function, Type: req.Type,
		Schedule: req.Schedule, Subject: req.Subject, Body: req.Body}}
	if err := rec.Validate(); err != nil {
		writeError(w, err)
		return
	}
	if rec.Type == trigger.TypeNATS && !callerOf(r.Context()).admin && !strings.HasPrefix(rec.Subject, ns+".") {
		// A NATS server is shared: a tenant listens on its own subjects only.
		writeError(w, errdefs.New(errdefs.ErrForbidden, fmt.Sprintf("use a subject under %s., like %s.orders.created", ns, ns),
			"field subject: a tenant's NATS subjects start with its namespace and a dot"))
		return
	}
	g.deployMu.Lock()
	defer g.deployMu.Unlock()
	if err := g.store.CreateTrigger(r.Context(), rec); err != nil {
		writeError(w, err)
		return
	}
	// A trigger that cannot start (a NATS trigger on a server without NATS)
	// is not kept.
	if err := g.cfg.Triggers.Set(rec.Trigger); err != nil {
		if derr := g.store.DeleteTrigger(context.WithoutCancel(r.Context()), rec.ID); derr != nil {
			g.log.Error("remove a trigger that did not start", "trigger", rec.ID, "err", derr)
		}
		writeError(w, err)
		return
	}
	g.log.Info("trigger created", "trigger", rec.ID, "type", rec.Type, "function", rec.Function)
	writeJSON(w, http.StatusCreated, g.triggerView(rec))
}

func (g *Gateway) listTriggers(w http.ResponseWriter, r *http.Request) {
	ns, err := g.scope(r)
	if err != nil {
		writeError(w, err)
		return
	}
	all := r.URL.Query().Get("all") == "true" && callerOf(r.Context()).admin
	list, err := g.store.ListTriggers(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := []TriggerView{}
	for _, t := range list {
		if all || function.NamespaceOf(t.Namespace) == ns {
			out = append(out, g.triggerView(t))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) deleteTrigger(w http.ResponseWriter, r *http.Request) {
	ns, err := g.scope(r)
	if err != nil {
		writeError(w, err)
		return
	}
	id := ns + "/" + r.PathValue("name")
	g.deployMu.Lock()
	defer g.deployMu.Unlock()
	if err := g.store.DeleteTrigger(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	if g.cfg.Triggers != nil {
		g.cfg.Triggers.Remove(id)
	}
	g.log.Info("trigger deleted", "trigger", id)
	w.WriteHeader(http.StatusNoContent)
}

// StartTriggers starts the stored triggers and the functions' schedules.
// The server calls it once, after New, when the gateway can take their
// firings. A trigger that cannot start (NATS is off) is logged, not fatal:
// the rest of the node serves.
func (g *Gateway) StartTriggers(ctx context.Context) error {
	if g.cfg.Triggers == nil {
		return nil
	}
	list, err := g.store.ListTriggers(ctx)
	if err != nil {
		return err
	}
	for _, t := range list {
		if t.Type == trigger.TypeNATS && t.Namespace != "" && !strings.HasPrefix(t.Subject, t.Namespace+".") {
			// Made before tenants were held to their own subjects.
			g.log.Error("tenant NATS trigger not started: its subject is outside the namespace's",
				"trigger", t.ID, "subject", t.Subject, "hint", "remove it and make it again on a subject under "+t.Namespace+".")
			continue
		}
		if err := g.cfg.Triggers.Set(t.Trigger); err != nil {
			g.log.Error("trigger not started", "trigger", t.ID, "err", err, "hint", errdefs.Hint(err))
		}
	}
	g.catalog.mu.RLock()
	targets := make([]*scheduler.Target, 0, len(g.catalog.targets))
	for _, t := range g.catalog.targets {
		targets = append(targets, t)
	}
	g.catalog.mu.RUnlock()
	for _, t := range targets {
		if err := g.syncSchedule(t); err != nil {
			g.log.Error("schedule not started", "function", t.Name, "err", err)
		}
	}
	return nil
}
