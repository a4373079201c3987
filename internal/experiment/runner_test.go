package experiment

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// fakeServer is a hand-written stand-in for wisp serve: it accepts
// deployments, answers calls (the first call of a deployed function is
// cold unless its keep_alive is 0, when every call is), keeps activation
// records and, when energy is set, serves /v1/energy.
type fakeServer struct {
	energy bool
	token  string

	mu      sync.Mutex
	ka0     map[string]bool // function → keep_alive 0
	calls   map[string]int
	acts    []map[string]any
	deploys atomic.Int32
	deletes atomic.Int32
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/healthz" && r.Header.Get("Authorization") != "Bearer "+f.token {
		http.Error(w, `{"error":"no key"}`, http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.URL.Path == "/healthz":
		json.NewEncoder(w).Encode(map[string]any{"status": "ok", "version": "fake",
			"modes": map[string]string{"process": "ready", "container": "containerd is not running"}})
	case strings.HasPrefix(r.URL.Path, "/v1/functions/") && r.Method == http.MethodPut:
		name := strings.TrimPrefix(r.URL.Path, "/v1/functions/")
		if err := r.ParseMultipartForm(32 << 20); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var spec string
		if fh := r.MultipartForm.File["spec"]; len(fh) == 1 {
			sf, err := fh[0].Open()
			if err == nil {
				b, _ := io.ReadAll(sf)
				sf.Close()
				spec = string(b)
			}
		}
		if r.MultipartForm.File["code"] == nil || !strings.Contains(spec, "name: "+name) {
			http.Error(w, `{"error":"bad deployment"}`, http.StatusBadRequest)
			return
		}
		f.ka0[name] = strings.Contains(spec, "keep_alive: 0s")
		f.calls[name] = 0
		f.deploys.Add(1)
		json.NewEncoder(w).Encode(map[string]any{"name": name})
	case strings.HasPrefix(r.URL.Path, "/v1/functions/") && r.Method == http.MethodDelete:
		f.deletes.Add(1)
		w.WriteHeader(http.StatusNoContent)
	case strings.HasPrefix(r.URL.Path, "/function/"):
		name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/function/"), "/")
		body, _ := io.ReadAll(r.Body)
		cold := f.ka0[name] || f.calls[name] == 0
		f.calls[name]++
		id := uuid.Must(uuid.NewV7()).String()
		timings := map[string]float64{"queue_ms": 0, "exec_ms": 0.5}
		if cold {
			timings = map[string]float64{"queue_ms": 20, "start_ms": 19, "sandbox_ms": 10, "runtime_ms": 0, "import_ms": 9, "exec_ms": 0.5}
		}
		act := map[string]any{"id": id, "function": name, "cold_start": cold, "start": time.Now(),
			"instance_id": fmt.Sprintf("%s-%d", name, map[bool]int{true: f.calls[name], false: 0}[f.ka0[name]]), "timings": timings}
		if f.energy {
			act["energy_j"], act["energy_source"] = 0.01, "rapl"
		}
		f.acts = append(f.acts, act)
		w.Header().Set("X-Wisp-Activation-Id", id)
		w.Header().Set("X-Wisp-Cold-Start", fmt.Sprint(cold))
		w.Header().Set("X-Wisp-Duration-Ms", "1.5")
		w.Header().Set("X-Wisp-Init-Ms", map[bool]string{true: "19", false: "0"}[cold])
		q := r.URL.Query()
		switch {
		case q.Get("role") == "produce":
			var n int
			fmt.Sscan(q.Get("size"), &n)
			w.Write([]byte(strings.Repeat("w", n)))
		default:
			fmt.Fprintf(w, `{"bytes": %d}`, len(body))
		}
	case r.URL.Path == "/v1/activations":
		fn := r.URL.Query().Get("function")
		var out []map[string]any
		for i := len(f.acts) - 1; i >= 0; i-- {
			if f.acts[i]["function"] == fn {
				out = append(out, f.acts[i])
			}
		}
		json.NewEncoder(w).Encode(out)
	case r.URL.Path == "/v1/energy" && f.energy:
		json.NewEncoder(w).Encode(ServerEnergy{Source: "rapl", Describe: "fake rapl", NodeJ: 10, FunctionJ: 1,
			Functions: map[string]float64{"exp-cold-small-p0": 1}})
	default:
		http.NotFound(w, r)
	}
}

const fakePlan = `
name: fake
modes: [process, container]
skip_unavailable: true
energy: {min_window: 0s, sample_lag: 0s}
scenarios:
  - {kind: idle, duration: 50ms}
  - {kind: cold, functions: [small], calls: 3}
  - {kind: warm, calls: 5, warmup: 1}
  - {kind: poisson, rates: [1200], duration: 200ms}
  - {kind: keepalive, keep_alives: [0s, 1m], rate: 1200, duration: 200ms, arrival: constant}
  - {kind: breakdown, functions: [small], calls: 2}
  - {kind: chain, sizes: [1KiB], calls: 2, warmup: 1}
  - {kind: stateless, variants: [reload, passed], state_size: 2KiB, calls: 2, warmup: 1}
  - {kind: parallel, concurrency: [1, 2], calls: 4, warmup: 1}
`

func TestRunAgainstFakeServer(t *testing.T) {
	tests := []struct {
		name       string
		energy     bool
		wantSource string
	}{
		{"model fallback without /v1/energy", false, "model"},
		{"server energy", true, "rapl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeServer{energy: tc.energy, token: "k", ka0: map[string]bool{}, calls: map[string]int{}}
			srv := httptest.NewServer(f)
			defer srv.Close()
			plan, err := ParsePlan([]byte(fakePlan))
			if err != nil {
				t.Fatal(err)
			}
			procStat := filepath.Join(t.TempDir(), "stat")
			if err := os.WriteFile(procStat, []byte("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0 0 0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			var progress atomic.Int64
			res, err := Run(context.Background(), plan, Options{URL: srv.URL, Token: "k", ProcStat: procStat,
				Progress: func(n int) { progress.Add(int64(n)) }})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Notes) > 0 {
				t.Errorf("failures: %v", res.Notes)
			}
			if len(res.Modes) != 1 || res.Skipped["container"] == "" {
				t.Errorf("modes %v, skipped %v: container should be skipped", res.Modes, res.Skipped)
			}
			if res.Source != tc.wantSource {
				t.Errorf("energy source %q, want %q", res.Source, tc.wantSource)
			}
			if tc.wantSource == "model" && !strings.Contains(res.Energy, "0.74 W") && !strings.Contains(res.Energy, "1.48 W") {
				t.Errorf("the model's description lacks its coefficients: %s", res.Energy)
			}
			if d, r := f.deploys.Load(), f.deletes.Load(); d == 0 || d != r {
				t.Errorf("%d deployments, %d deletions: every function must be removed", d, r)
			}
			if progress.Load() == 0 {
				t.Error("no progress reported")
			}
			kinds := map[string]int{}
			for _, c := range res.Calls {
				kinds[c.Kind]++
				if !c.OK() {
					t.Errorf("call failed: %+v", c)
				}
				if c.Function != "chain" && c.InstanceID == "" {
					t.Errorf("call not joined with its activation: %+v", c)
				}
			}
			for _, k := range Kinds {
				if k != KindIdle && kinds[k] == 0 {
					t.Errorf("no %s calls", k)
				}
			}
			for _, c := range res.Calls {
				if c.Kind == KindCold && (!c.Cold || c.SandboxMs != 10) {
					t.Errorf("cold call without its stages: %+v", c)
				}
				if tc.energy && c.Function != "chain" && c.EnergySource != "rapl" {
					t.Errorf("call energy not taken from the activation: %+v", c)
				}
			}
			s, err := WriteOutputs(t.TempDir(), res)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Groups) == 0 || len(s.Stages) == 0 || len(s.KeepAlive) != 2 {
				t.Errorf("summary: %d groups, %d stages, %d keep-alive points", len(s.Groups), len(s.Stages), len(s.KeepAlive))
			}
		})
	}
}

func TestRunUnreachableServer(t *testing.T) {
	plan, err := ParsePlan([]byte(fakePlan))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	if _, err := Run(context.Background(), plan, Options{URL: url}); err == nil || !strings.Contains(err.Error(), "reach the server") {
		t.Errorf("Run against a closed port: %v", err)
	}
}
