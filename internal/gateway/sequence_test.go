package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/scheduler"
)

func deploySpec(t *testing.T, g *Gateway, name, spec string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodPut, "/v1/functions/"+name, strings.NewReader(spec))
	r.Header.Set("Content-Type", "application/yaml")
	return serve(g, r)
}

func TestSequence(t *testing.T) {
	// Each step appends its name to the body; "boom" raises; the request
	// body of every step is the very buffer the previous step returned.
	var bodies [][]byte
	sch := &fakeScheduler{invoke: func(_ context.Context, t *scheduler.Target, req *sandbox.Request) (*scheduler.Result, error) {
		bodies = append(bodies, req.Body)
		if t.Name == "boom" {
			return &scheduler.Result{Response: &sandbox.Response{Status: 500, Error: "ValueError: no", Logs: []byte("tb")}}, nil
		}
		out := append(append([]byte(nil), req.Body...), "+"+t.Name...)
		return &scheduler.Result{Response: &sandbox.Response{Status: 200, Body: out,
			Header: http.Header{"Content-Type": {"text/plain"}}}}, nil
	}}
	g, st := newGateway(t, sch)
	for _, n := range []string{"a", "b", "c", "boom"} {
		serve(g, deployReq(t, n, "name: "+n+"\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""}))
	}
	for name, spec := range map[string]string{
		"abc":    "name: abc\nkind: sequence\nsteps: [a, b, c]\n",
		"nested": "name: nested\nkind: sequence\nsteps: [abc, a]\n",
		"broken": "name: broken\nkind: sequence\nsteps: [a, boom, c]\n",
		"gap":    "name: gap\nkind: sequence\nsteps: [a, missing]\n",
		"loop1":  "name: loop1\nkind: sequence\nsteps: [loop2]\n",
		"loop2":  "name: loop2\nkind: sequence\nsteps: [loop1]\n",
	} {
		if w := deploySpec(t, g, name, spec); w.Code != http.StatusCreated {
			t.Fatalf("deploy %s: HTTP %d %s", name, w.Code, w.Body)
		}
	}

	w := serve(g, httptest.NewRequest(http.MethodPost, "/function/abc", strings.NewReader("in")))
	if w.Code != 200 || w.Body.String() != "in+a+b+c" || w.Header().Get("Content-Type") != "text/plain" {
		t.Fatalf("abc: HTTP %d %q %v", w.Code, w.Body, w.Header())
	}
	if len(bodies) != 3 || !bytes.Equal(bodies[1], []byte("in+a")) {
		t.Fatalf("steps saw %q", bodies)
	}
	st.Flush(context.Background())
	seq, err := st.GetActivation(context.Background(), w.Header().Get(HeaderActivationID))
	if err != nil || len(seq.Children) != 3 || seq.Status != StatusSuccess {
		t.Fatalf("sequence activation %+v %v", seq, err)
	}
	for i, id := range seq.Children {
		c, err := st.GetActivation(context.Background(), id)
		if err != nil || c.Parent != seq.ID || c.Function != []string{"a", "b", "c"}[i] {
			t.Fatalf("step %d activation %+v %v", i, c, err)
		}
	}

	// A sequence of a sequence.
	if w := serve(g, httptest.NewRequest(http.MethodPost, "/function/nested", strings.NewReader("x"))); w.Body.String() != "x+a+b+c+a" {
		t.Fatalf("nested: HTTP %d %q", w.Code, w.Body)
	}

	// A failing step ends the chain and is named.
	bodies = nil
	w = serve(g, httptest.NewRequest(http.MethodPost, "/function/broken", strings.NewReader("in")))
	if w.Code != 500 || !strings.Contains(w.Body.String(), "step 2 (boom)") || len(bodies) != 2 {
		t.Fatalf("broken: HTTP %d %s after %d steps", w.Code, w.Body, len(bodies))
	}
	errBody(t, w)

	// A step that is not deployed, and a cycle, are clear errors.
	w = serve(g, httptest.NewRequest(http.MethodPost, "/function/gap", nil))
	if w.Code != 404 || !strings.Contains(w.Body.String(), "step 2 (missing) is not deployed") {
		t.Fatalf("gap: HTTP %d %s", w.Code, w.Body)
	}
	w = serve(g, httptest.NewRequest(http.MethodPost, "/function/loop1", nil))
	if w.Code != 400 || !strings.Contains(w.Body.String(), "nested more than") {
		t.Fatalf("loop: HTTP %d %s", w.Code, w.Body)
	}

	// Invalid sequences are refused at deploy and store nothing.
	for _, spec := range []string{
		"name: s1\nkind: sequence\n",
		"name: s2\nkind: sequence\nsteps: [s2]\n",
		"name: s3\nkind: sequence\nsteps: [a]\nruntime: python3\nhandler: h.py\n",
		"name: s4\nkind: sequence\nsteps: [a.other]\n",
		"name: s5\nkind: pipeline\nsteps: [a]\n",
		"name: s6\nruntime: python3\nhandler: h.py\nsteps: [a]\n",
	} {
		name := strings.TrimPrefix(strings.SplitN(spec, "\n", 2)[0], "name: ")
		w := deploySpec(t, g, name, spec)
		if w.Code != http.StatusBadRequest {
			t.Errorf("deploy %q: HTTP %d %s", spec, w.Code, w.Body)
			continue
		}
		errBody(t, w)
		if _, err := st.GetFunction(context.Background(), name); err == nil {
			t.Errorf("refused %s was stored", name)
		}
	}
	var v FunctionView
	w = serve(g, httptest.NewRequest(http.MethodGet, "/v1/functions/abc", nil))
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || v.Spec.Kind != "sequence" || v.Digest != "" {
		t.Fatalf("get abc: %s", w.Body)
	}
}

// A sequence's timeout bounds the whole chain: a step still running when
// it passes is cut off with a 504 that names the sequence and the step.
func TestSequenceTimeout(t *testing.T) {
	sch := &fakeScheduler{invoke: func(ctx context.Context, t *scheduler.Target, req *sandbox.Request) (*scheduler.Result, error) {
		if t.Name == "slow" {
			<-ctx.Done()
			return nil, errdefs.WithHint(fmt.Errorf("function slow ran past its timeout: %w", errdefs.ErrTimeout), "h")
		}
		return &scheduler.Result{Response: &sandbox.Response{Status: 200, Body: req.Body}}, nil
	}}
	g, _ := newGateway(t, sch)
	serve(g, deployReq(t, "fast", "name: fast\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""}))
	serve(g, deployReq(t, "slow", "name: slow\nruntime: python3\nhandler: h.py\ntimeout: 30s\n", map[string]string{"h.py": ""}))
	if w := deploySpec(t, g, "chain", "name: chain\nkind: sequence\nsteps: [fast, slow]\ntimeout: 200ms\n"); w.Code != http.StatusCreated {
		t.Fatalf("deploy: HTTP %d %s", w.Code, w.Body)
	}
	t0 := time.Now()
	w := serve(g, httptest.NewRequest(http.MethodPost, "/function/chain", strings.NewReader("x")))
	if w.Code != http.StatusGatewayTimeout || !strings.Contains(w.Body.String(), "sequence chain ran past its timeout of 200ms (in step 2, slow)") {
		t.Fatalf("HTTP %d %s", w.Code, w.Body)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("the chain was cut off after %s, not at its 200ms timeout", d)
	}
}
