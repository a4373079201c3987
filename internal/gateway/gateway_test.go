package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/scheduler"
	"github.com/wisp-faas/wisp/internal/store"
	"github.com/wisp-faas/wisp/internal/telemetry"
)

// fakeScheduler is a hand-written fake: invoke decides each call's outcome.
type fakeScheduler struct {
	invoke func(ctx context.Context, t *scheduler.Target, req *sandbox.Request) (*scheduler.Result, error)
	forgot []string
}

func (f *fakeScheduler) Invoke(ctx context.Context, t *scheduler.Target, req *sandbox.Request) (*scheduler.Result, error) {
	return f.invoke(ctx, t, req)
}
func (f *fakeScheduler) Scale(context.Context, *scheduler.Target, int, int) error { return nil }
func (f *fakeScheduler) Forget(name string)                                       { f.forgot = append(f.forgot, name) }
func (f *fakeScheduler) Stats() []scheduler.Stats                                 { return nil }
func (f *fakeScheduler) LiveDigests() []string                                    { return nil }

func newGateway(t *testing.T, sch *fakeScheduler) (*Gateway, *store.Store) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	g, err := New(context.Background(), Config{
		MaxBodySize: 1 << 10,
		MaxCodeSize: 1 << 20,
		Modes:       map[string]error{function.ModeProcess: nil},
	}, st, sch, telemetry.NewMetrics(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return g, st
}

// deployReq builds a multipart deploy request of spec and the files.
func deployReq(t *testing.T, name, spec string, files map[string]string) *http.Request {
	t.Helper()
	dir := t.TempDir()
	for n, body := range files {
		os.WriteFile(filepath.Join(dir, n), []byte(body), 0o644)
	}
	var code bytes.Buffer
	if err := store.Pack(dir, &code, nil); err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	p, _ := mw.CreateFormField(PartSpec)
	p.Write([]byte(spec))
	p, _ = mw.CreateFormFile(PartCode, "code.tar.gz")
	p.Write(code.Bytes())
	mw.Close()
	r := httptest.NewRequest(http.MethodPut, "/v1/functions/"+name, &body)
	r.Header.Set("Content-Type", mw.FormDataContentType())
	return r
}

func serve(g *Gateway, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	g.ServeHTTP(w, r)
	return w
}

func errBody(t *testing.T, w *httptest.ResponseRecorder) ErrorBody {
	t.Helper()
	var e ErrorBody
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", w.Body, err)
	}
	if e.Error == "" || e.Hint == "" {
		t.Fatalf("error body lacks error or hint: %+v", e)
	}
	return e
}

func TestStatusFor(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{errdefs.Invalidf("h", "x"), 400},
		{fmt.Errorf("wrap: %w", errdefs.ErrNotFound), 404},
		{errdefs.ErrConflict, 409},
		{errdefs.ErrTooLarge, 413},
		{errdefs.ErrLimit, 429},
		{errdefs.ErrCrashed, 502},
		{errdefs.ErrUnavailable, 503},
		{errdefs.ErrTimeout, 504},
		{errors.New("other"), 500},
	}
	for _, tt := range tests {
		if got := statusFor(tt.err); got != tt.want {
			t.Errorf("statusFor(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestInvokeOutcomes(t *testing.T) {
	var outcome func() (*scheduler.Result, error)
	sch := &fakeScheduler{invoke: func(ctx context.Context, tg *scheduler.Target, req *sandbox.Request) (*scheduler.Result, error) {
		return outcome()
	}}
	g, st := newGateway(t, sch)
	if w := serve(g, deployReq(t, "f", "name: f\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": "def handle(r): pass"})); w.Code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", w.Code, w.Body)
	}
	ok := &sandbox.Response{Status: 201, Body: []byte("made"), Header: http.Header{"X-Custom": {"1"},
		"X-Wisp-Activation-Id": {"forged"}, "Transfer-Encoding": {"chunked"}}}
	tests := []struct {
		name     string
		res      *scheduler.Result
		err      error
		status   int
		body     string
		activity string
	}{
		{"success", &scheduler.Result{Response: ok, Cold: true, InstanceID: "i1"}, nil, 201, "made", StatusSuccess},
		{"exception", &scheduler.Result{Response: &sandbox.Response{Status: 500, Error: "ValueError: bad", Logs: []byte("Traceback")}}, nil, 500, "ValueError: bad", StatusError},
		{"crash", nil, fmt.Errorf("memory limit 64Mi exceeded: %w", errdefs.ErrCrashed), 502, "memory limit 64Mi exceeded", StatusCrashed},
		{"timeout", nil, fmt.Errorf("ran past 1s: %w", errdefs.ErrTimeout), 504, "ran past 1s", StatusTimeout},
		{"limit", nil, errdefs.WithHint(fmt.Errorf("busy: %w", errdefs.ErrLimit), "retry"), 429, "busy", StatusRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outcome = func() (*scheduler.Result, error) { return tt.res, tt.err }
			w := serve(g, httptest.NewRequest(http.MethodPost, "/function/f/sub?x=1", strings.NewReader("in")))
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.body) {
				t.Fatalf("HTTP %d %s; want %d containing %q", w.Code, w.Body, tt.status, tt.body)
			}
			id := w.Header().Get(HeaderActivationID)
			if id == "forged" || w.Header().Get("Transfer-Encoding") != "" {
				t.Fatalf("function overrode protected headers: %v", w.Header())
			}
			if id == "" || w.Header().Get(HeaderDurationMs) == "" || w.Header().Get(HeaderColdStart) == "" {
				t.Fatalf("missing wisp headers: %v", w.Header())
			}
			if tt.status == 429 && w.Header().Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
			a, err := st.GetActivation(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if a.Status != tt.activity || a.StatusCode != tt.status || a.Function != "f" {
				t.Fatalf("activation = %+v", a)
			}
		})
	}
}

func TestInvokeRejections(t *testing.T) {
	called := false
	sch := &fakeScheduler{invoke: func(context.Context, *scheduler.Target, *sandbox.Request) (*scheduler.Result, error) {
		called = true
		return &scheduler.Result{Response: &sandbox.Response{Status: 200}}, nil
	}}
	g, _ := newGateway(t, sch)
	serve(g, deployReq(t, "f", "name: f\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""}))

	w := serve(g, httptest.NewRequest(http.MethodPost, "/function/nope", nil))
	if w.Code != 404 {
		t.Fatalf("unknown function: %d", w.Code)
	}
	errBody(t, w)
	w = serve(g, httptest.NewRequest(http.MethodPost, "/function/f", strings.NewReader(strings.Repeat("x", 2<<10))))
	if w.Code != 413 {
		t.Fatalf("oversized body: %d %s", w.Code, w.Body)
	}
	errBody(t, w)
	// A body without Content-Length that grows past the limit.
	r := httptest.NewRequest(http.MethodPost, "/function/f", io.MultiReader(strings.NewReader(strings.Repeat("y", 4<<10))))
	r.ContentLength = -1
	if w = serve(g, r); w.Code != 413 {
		t.Fatalf("oversized chunked body: %d", w.Code)
	}
	if called {
		t.Fatal("rejected calls reached the scheduler")
	}
}

func TestDeployValidation(t *testing.T) {
	g, st := newGateway(t, &fakeScheduler{})
	tests := []struct {
		name, spec string
		files      map[string]string
		want       string
	}{
		{"missing handler file", "name: a\nruntime: python3\nhandler: h.py\n", map[string]string{"other.py": ""}, "h.py"},
		{"unsupported mode", "name: a\nruntime: python3\nhandler: h.py\nexecution_mode: microvm\n", map[string]string{"h.py": ""}, "microvm"},
		{"dependencies", "name: a\nruntime: python3\nhandler: h.py\ndependencies: [requests]\n", map[string]string{"h.py": ""}, "dependencies"},
		{"name mismatch", "name: b\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": ""}, "URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := serve(g, deployReq(t, "a", tt.spec, tt.files))
			if w.Code != 400 || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("HTTP %d %s; want 400 naming %q", w.Code, w.Body, tt.want)
			}
			errBody(t, w)
		})
	}
	if fns, _ := st.ListFunctions(context.Background()); len(fns) != 0 {
		t.Fatalf("failed deploys stored functions: %v", fns)
	}
	blobs, _ := os.ReadDir(filepath.Join(st.Dir(), "blobs", "sha256"))
	if len(blobs) != 0 {
		t.Fatalf("failed deploys left %d code blobs", len(blobs))
	}
}

func TestDeployLifecycle(t *testing.T) {
	sch := &fakeScheduler{}
	g, _ := newGateway(t, sch)
	if w := serve(g, deployReq(t, "f", "name: f\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": "1"})); w.Code != 201 {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	w := serve(g, deployReq(t, "f", "name: f\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": "2"}))
	var v FunctionView
	json.Unmarshal(w.Body.Bytes(), &v)
	if w.Code != 200 || v.Version != 2 {
		t.Fatalf("update: %d %s", w.Code, w.Body)
	}
	if len(sch.forgot) != 2 {
		t.Fatalf("scheduler not told to retire old versions: %v", sch.forgot)
	}
	w = serve(g, httptest.NewRequest(http.MethodGet, "/v1/functions", nil))
	var list []FunctionView
	json.Unmarshal(w.Body.Bytes(), &list)
	if len(list) != 1 || list[0].Name != "f" {
		t.Fatalf("list: %s", w.Body)
	}
	if w = serve(g, httptest.NewRequest(http.MethodDelete, "/v1/functions/f", nil)); w.Code != 204 {
		t.Fatalf("delete: %d", w.Code)
	}
	if w = serve(g, httptest.NewRequest(http.MethodGet, "/v1/functions/f", nil)); w.Code != 404 {
		t.Fatalf("get after delete: %d", w.Code)
	}
	if w = serve(g, httptest.NewRequest(http.MethodPost, "/function/f", nil)); w.Code != 404 {
		t.Fatalf("invoke after delete: %d", w.Code)
	}
}

func TestDeployCodeTooLarge(t *testing.T) {
	g, st := newGateway(t, &fakeScheduler{})
	// 3 MiB of incompressible bytes against a 1 MiB code limit.
	big := make([]byte, 3<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	w := serve(g, deployReq(t, "f", "name: f\nruntime: python3\nhandler: h.py\n", map[string]string{"h.py": "", "data.bin": string(big)}))
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("HTTP %d %s; want 413", w.Code, w.Body)
	}
	if e := errBody(t, w); !strings.Contains(e.Hint, ".wispignore") {
		t.Fatalf("hint does not suggest .wispignore: %+v", e)
	}
	if fns, _ := st.ListFunctions(context.Background()); len(fns) != 0 {
		t.Fatal("function stored after a 413")
	}
}
