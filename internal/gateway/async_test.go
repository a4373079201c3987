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
	"sync/atomic"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/queue"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/scheduler"
	"github.com/wisp-faas/wisp/internal/store"
	"github.com/wisp-faas/wisp/internal/telemetry"
)

// newAsyncGateway is a gateway over a real store and a real queue, with a
// fake scheduler.
func newAsyncGateway(t *testing.T, sch *fakeScheduler) (*Gateway, *store.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var g *Gateway
	q, err := queue.Open(filepath.Join(dir, "queue.db"), queue.Options{Workers: 2,
		BackoffBase: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		Finished: func(j *queue.Job, r queue.Result) { g.AsyncFinished(j, r) }})
	if err != nil {
		t.Fatal(err)
	}
	g, err = New(context.Background(), Config{
		MaxBodySize: 1 << 10, MaxCodeSize: 1 << 20,
		Modes: map[string]error{function.ModeProcess: nil},
		Queue: q,
	}, st, sch, telemetry.NewMetrics(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	q.Start(g)
	t.Cleanup(func() {
		q.Close(context.Background())
		st.Close()
	})
	return g, st
}

func waitAsync(t *testing.T, g *Gateway, id string) *store.Activation {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		w := serve(g, httptest.NewRequest(http.MethodGet, "/v1/activations/"+id, nil))
		var a store.Activation
		if w.Code == 200 && json.Unmarshal(w.Body.Bytes(), &a) == nil && (a.State == "succeeded" || a.State == "failed") {
			return &a
		}
		if time.Now().After(deadline) {
			t.Fatalf("activation %s: %d %s", id, w.Code, w.Body)
		}
	}
}

func TestAsyncOutcomes(t *testing.T) {
	var calls, busy atomic.Int64
	sch := &fakeScheduler{invoke: func(_ context.Context, t *scheduler.Target, req *sandbox.Request) (*scheduler.Result, error) {
		n := calls.Add(1)
		switch t.Name {
		case "crashy": // crashes twice, then succeeds
			if n <= 2 {
				return nil, errdefs.ErrCrashed
			}
		case "full": // its instances are busy for the first two tries
			if busy.Add(1) <= 2 {
				return nil, errdefs.New(errdefs.ErrLimit, "later", "queue full")
			}
		case "teapot":
			return &scheduler.Result{Response: &sandbox.Response{Status: 418, Body: []byte("no")}}, nil
		}
		return &scheduler.Result{Response: &sandbox.Response{Status: 200, Body: append([]byte("ok:"), req.Body...)}}, nil
	}}
	g, _ := newAsyncGateway(t, sch)
	for _, spec := range []string{
		"name: crashy\nruntime: python3\nhandler: h.py\nretries: 3\n",
		"name: full\nruntime: python3\nhandler: h.py\n",
		"name: teapot\nruntime: python3\nhandler: h.py\nretries: 3\n",
	} {
		name := strings.TrimPrefix(strings.SplitN(spec, "\n", 2)[0], "name: ")
		if w := serve(g, deployReq(t, name, spec, map[string]string{"h.py": ""})); w.Code != http.StatusCreated {
			t.Fatalf("deploy %s: %d %s", name, w.Code, w.Body)
		}
	}
	accept := func(name string) string {
		t.Helper()
		w := serve(g, httptest.NewRequest(http.MethodPost, "/async-function/"+name, strings.NewReader("in")))
		var a AsyncAccepted
		if w.Code != http.StatusAccepted || json.Unmarshal(w.Body.Bytes(), &a) != nil || a.ActivationID == "" ||
			w.Header().Get(HeaderActivationID) != a.ActivationID {
			t.Fatalf("async %s: %d %s", name, w.Code, w.Body)
		}
		return a.ActivationID
	}

	tests := []struct {
		name     string
		state    string
		attempts int
		status   int
	}{
		{"crashy", "succeeded", 3, 200}, // two crashes retried
		{"full", "succeeded", 1, 200},   // throttled twice: no attempt spent
		{"teapot", "failed", 1, 418},    // a 4xx is not retried
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls.Store(0)
			a := waitAsync(t, g, accept(tt.name))
			if a.State != tt.state || a.Attempts != tt.attempts || a.StatusCode != tt.status || a.Source != "api" {
				t.Fatalf("activation: state %s, %d attempts, HTTP %d, source %q; want %s, %d, %d",
					a.State, a.Attempts, a.StatusCode, a.Source, tt.state, tt.attempts, tt.status)
			}
		})
	}
	// The dead letter is listed, and a tenant-less 404 for unknown ids.
	w := serve(g, httptest.NewRequest(http.MethodGet, "/v1/activations?state=failed", nil))
	var dead []store.Activation
	if err := json.Unmarshal(w.Body.Bytes(), &dead); err != nil || len(dead) != 1 || dead[0].Function != "teapot" {
		t.Fatalf("dead letters: %s", w.Body)
	}
	if w := serve(g, httptest.NewRequest(http.MethodPost, "/v1/activations/nope/redrive", nil)); w.Code != 404 {
		t.Fatalf("redrive unknown: %d", w.Code)
	}
}
