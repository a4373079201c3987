package experiment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wisp-faas/wisp/internal/energy"
)

// api is the part of the HTTP API that internal/client does not cover yet:
// activation records with their energy fields, and /v1/energy.
type api struct {
	base  string
	token string
	http  *http.Client
}

// errNotFound is returned for a 404 (an endpoint the server lacks).
var errNotFound = errors.New("not found")

func (a *api) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		_, _ = io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("GET %s: %w", path, errNotFound)
	}
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: decode: %w", path, err)
	}
	return nil
}

// activation is the part of an activation record the harness reads;
// energy_j and energy_source are read when the server sends them.
type activation struct {
	ID           string             `json:"id"`
	Function     string             `json:"function"`
	ColdStart    bool               `json:"cold_start"`
	InstanceID   string             `json:"instance_id"`
	Start        time.Time          `json:"start"`
	DurationMs   float64            `json:"duration_ms"`
	Timings      map[string]float64 `json:"timings"`
	EnergyJ      *float64           `json:"energy_j"`
	EnergySource string             `json:"energy_source"`
}

// activations returns the records of function newer than since, following
// pages of 1000.
func (a *api) activations(ctx context.Context, function string, since time.Time) (map[string]activation, error) {
	out := map[string]activation{}
	before := ""
	for {
		q := url.Values{"function": {function}, "limit": {"1000"}}
		if before != "" {
			q.Set("before", before)
		}
		var page []activation
		if err := a.getJSON(ctx, "/v1/activations?"+q.Encode(), &page); err != nil {
			return out, fmt.Errorf("activations of %s: %w", function, err)
		}
		for _, r := range page {
			out[r.ID] = r
		}
		if len(page) < 1000 || page[len(page)-1].Start.Before(since) {
			return out, nil
		}
		before = page[len(page)-1].ID
	}
}

// ServerEnergy is the answer of GET /v1/energy?window=DURATION.
type ServerEnergy struct {
	Source    string             `json:"source"`
	Describe  string             `json:"describe"`
	NodeJ     float64            `json:"node_j"`
	FunctionJ float64            `json:"function_j"`
	OverheadJ float64            `json:"overhead_j"`
	SPUE      float64            `json:"spue"`
	Functions map[string]float64 `json:"functions"`
}

func (a *api) energy(ctx context.Context, window time.Duration) (*ServerEnergy, error) {
	if window < time.Millisecond {
		window = time.Millisecond
	}
	var e ServerEnergy
	w := window.Round(time.Millisecond).String()
	if err := a.getJSON(ctx, "/v1/energy?window="+url.QueryEscape(w), &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// meter measures a window's energy: from the server when it has
// /v1/energy, else from the harness's model over /proc/stat.
type meter struct {
	api    *api
	server bool
	model  *energy.Model
	cfg    energy.ModelConfig
	source string
	desc   string
	// remote says the server is not on this machine, so the harness's model
	// sees the wrong node.
	remote bool
}

// openMeter probes the server's /v1/energy (unless the plan says model) and
// falls back to the model with the plan's or internal/energy's coefficients.
func openMeter(ctx context.Context, a *api, ep EnergyPlan, procStat string) (*meter, error) {
	m := &meter{api: a}
	u, err := url.Parse(a.base)
	if err == nil {
		h := u.Hostname()
		m.remote = h != "127.0.0.1" && h != "localhost" && h != "::1"
	}
	if ep.Source == "auto" {
		e, err := a.energy(ctx, time.Second)
		switch {
		case err == nil:
			m.server, m.source, m.desc = true, e.Source, e.Describe
			return m, nil
		case errors.Is(err, errNotFound):
			// The server has no energy accounting: estimate here.
		default:
			return nil, fmt.Errorf("probe the server's energy endpoint: %w", err)
		}
	}
	model, err := energy.OpenModel(energy.Options{ProcStat: procStat,
		Model: energy.ModelConfig{IdleWatts: ep.IdleWatts, MaxWatts: ep.MaxWatts}})
	if err != nil {
		return nil, fmt.Errorf("open the energy model: %w", err)
	}
	m.model, m.cfg, m.source = model, model.Config(), string(energy.KindModel)
	m.desc = "harness " + model.Describe() +
		"; E_function is estimated as the per-CPU active power (max − idle)/CPUs × each call's exec_ms"
	if m.remote {
		m.desc += "; WARNING: the server is not on this machine, so /proc/stat here is not its node"
	}
	return m, nil
}

// mark is a meter reading at a window's start.
type mark struct {
	at      time.Time
	reading energy.Reading
}

func (m *meter) begin() (mark, error) {
	mk := mark{at: time.Now()}
	if m.model != nil {
		r, err := m.model.Read()
		if err != nil {
			return mk, fmt.Errorf("energy at window start: %w", err)
		}
		mk.reading = r
	}
	return mk, nil
}

// stop fills w's node energy since mk, and with the server's attribution
// the named functions' energy. Call it as soon as the window ends: the
// server's figure is for a window that ends now.
func (m *meter) stop(ctx context.Context, mk mark, w *Window, functions []string) error {
	w.NodeJ, w.FunctionJ, w.Source = math.NaN(), math.NaN(), m.source
	w.EnergyEnd = time.Now()
	if m.server {
		e, err := m.api.energy(ctx, w.EnergyEnd.Sub(mk.at))
		if err != nil {
			return fmt.Errorf("energy of window %s %s: %w", w.Scenario, w.Variant, err)
		}
		w.NodeJ, w.Source = e.NodeJ, e.Source
		fj := 0.0
		for _, f := range functions {
			fj += e.Functions[f]
		}
		w.FunctionJ = fj
		return nil
	}
	r, err := m.model.Read()
	if err != nil {
		return fmt.Errorf("energy at window end: %w", err)
	}
	node, err := energy.Between(mk.reading, r)
	if err != nil {
		return fmt.Errorf("energy of window %s %s: %w", w.Scenario, w.Variant, err)
	}
	w.NodeJ = node
	return nil
}

// attribute estimates, for the model, the functions' energy in w and each
// call's: one CPU's active power while the call executes (its exec_ms),
// scaled down if the calls would add up to more than the node's active
// energy. Calls that carry the server's energy_j keep it.
func (m *meter) attribute(mk mark, w *Window, calls []Call) {
	if m.server {
		return
	}
	w.FunctionJ = ModelFunctionEnergy(m.cfg, w.NodeJ, w.EnergyEnd.Sub(mk.at), calls)
}

// ModelFunctionEnergy is the harness's model attribution (see attribute):
// it writes each call's EnergyJ (when unknown) and returns their sum.
func ModelFunctionEnergy(cfg energy.ModelConfig, nodeJ float64, window time.Duration, calls []Call) float64 {
	perCPU := (cfg.MaxWatts - cfg.IdleWatts) / float64(max(1, cfg.CPUs))
	active := math.Max(0, nodeJ-cfg.IdleWatts*window.Seconds())
	sum := 0.0
	for i := range calls {
		if !math.IsNaN(calls[i].ExecMs) {
			sum += perCPU * calls[i].ExecMs / 1000
		}
	}
	scale := 1.0
	if sum > active && sum > 0 {
		scale = active / sum
	}
	for i := range calls {
		c := &calls[i]
		if math.IsNaN(c.EnergyJ) && !math.IsNaN(c.ExecMs) {
			c.EnergyJ = perCPU * c.ExecMs / 1000 * scale
			c.EnergySource = string(energy.KindModel)
		}
	}
	return sum * scale
}

// Describe says where energy figures come from, with the coefficients.
func (m *meter) Describe() string { return m.desc }
