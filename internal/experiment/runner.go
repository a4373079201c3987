package experiment

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/client"
	"github.com/wisp-faas/wisp/internal/gateway"
	"github.com/wisp-faas/wisp/internal/store"
)

//go:embed functions
var functionsFS embed.FS

// Options configure a run.
type Options struct {
	URL   string // the server (default client.DefaultURL)
	Token string // its API key
	// Progress, when set, is called with the number of calls (or idle
	// seconds) just done; Describe with what runs now.
	Progress func(n int)
	Describe func(what string)
	Logger   *slog.Logger
	// ProcStat is the /proc/stat the harness's energy model reads
	// (default /proc/stat).
	ProcStat string
}

// Result is everything a run measured: the input of WriteOutputs.
type Result struct {
	Plan     *Plan             `json:"plan"`
	Machine  Machine           `json:"machine"`
	Modes    []string          `json:"modes"`   // the modes that ran
	Skipped  map[string]string `json:"skipped"` // mode → why it did not run
	Energy   string            `json:"energy"`  // the energy source and its coefficients
	Source   string            `json:"energy_source"`
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Notes    []string          `json:"notes,omitempty"` // scenarios that failed, and why
	Calls    []Call            `json:"-"`
	Windows  []Window          `json:"windows"`
}

// Machine describes where the run happened.
type Machine struct {
	Hostname      string `json:"hostname"`
	OS            string `json:"os"`
	Kernel        string `json:"kernel"`
	CPUModel      string `json:"cpu_model"`
	CPUs          int    `json:"cpus"`
	MemoryMiB     int64  `json:"memory_mib"`
	ServerURL     string `json:"server_url"`
	ServerVersion string `json:"server_version"`
	GoVersion     string `json:"go_version"`
}

type runner struct {
	plan  *Plan
	opts  Options
	c     *client.Client
	api   *api
	meter *meter
	log   *slog.Logger

	mu      sync.Mutex // guards res.Calls and res.Windows
	res     *Result
	workdir string
}

// Run executes plan against the server in opts and returns what it
// measured. A scenario that fails on a mode is logged and noted in the
// result; the run goes on with the next one. Only a cancelled ctx, an
// unreachable server or no runnable mode stop it.
func Run(ctx context.Context, plan *Plan, opts Options) (*Result, error) {
	if opts.URL == "" {
		opts.URL = client.DefaultURL
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Progress == nil {
		opts.Progress = func(int) {}
	}
	if opts.Describe == nil {
		opts.Describe = func(string) {}
	}
	maxConc := 64
	for _, s := range plan.Scenarios {
		for _, c := range s.Concurrency {
			maxConc = max(maxConc, c)
		}
		maxConc = max(maxConc, min(s.MaxInFlight, 512))
	}
	r := &runner{plan: plan, opts: opts, log: opts.Logger,
		c:   client.New(opts.URL, opts.Token, maxConc),
		api: &api{base: strings.TrimRight(opts.URL, "/"), token: opts.Token, http: &http.Client{Timeout: 60 * time.Second}},
		res: &Result{Plan: plan, Skipped: map[string]string{}, Started: time.Now()}}
	h, err := r.c.Health(ctx)
	if err != nil {
		return nil, fmt.Errorf("reach the server: %w", err)
	}
	r.res.Machine = describeMachine(opts.URL, h.Version)
	for _, m := range plan.Modes {
		state, ok := h.Modes[m]
		switch {
		case ok && state == "ready":
			r.res.Modes = append(r.res.Modes, m)
		case plan.SkipUnavailable:
			why := state
			if !ok {
				why = "the server does not offer it"
			}
			r.res.Skipped[m] = why
			r.log.Warn("skipping a mode the server has not ready", "mode", m, "why", why)
		default:
			return nil, fmt.Errorf("mode %s is not ready on the server (%s): fix it or set skip_unavailable: true", m, state)
		}
	}
	if len(r.res.Modes) == 0 {
		return nil, fmt.Errorf("none of the plan's modes %v is ready on the server: %v", plan.Modes, r.res.Skipped)
	}
	r.meter, err = openMeter(ctx, r.api, plan.Energy, opts.ProcStat)
	if err != nil {
		return nil, err
	}
	r.res.Energy, r.res.Source = r.meter.Describe(), r.meter.source
	r.workdir, err = os.MkdirTemp("", "wisp-experiment-")
	if err != nil {
		return nil, fmt.Errorf("make a work directory: %w", err)
	}
	defer os.RemoveAll(r.workdir)

	for i := range plan.Scenarios {
		sc := &plan.Scenarios[i]
		for _, mode := range r.res.Modes {
			if err := ctx.Err(); err != nil {
				return r.res, fmt.Errorf("run stopped at scenario %s: %w", sc.Name, err)
			}
			opts.Describe(fmt.Sprintf("%s (%s)", sc.Name, mode))
			r.log.Info("scenario", "name", sc.Name, "kind", sc.Kind, "mode", mode)
			if err := r.scenario(ctx, sc, mode); err != nil {
				if ctx.Err() != nil {
					return r.res, fmt.Errorf("run stopped at scenario %s: %w", sc.Name, ctx.Err())
				}
				r.log.Error("scenario failed", "name", sc.Name, "mode", mode, "err", err)
				r.res.Notes = append(r.res.Notes, fmt.Sprintf("scenario %s on %s failed: %v", sc.Name, mode, err))
			}
			sleepCtx(ctx, plan.Settle.D())
		}
	}
	r.res.Finished = time.Now()
	return r.res, nil
}

func (r *runner) scenario(ctx context.Context, sc *Scenario, mode string) error {
	switch sc.Kind {
	case KindIdle:
		return r.idle(ctx, sc, mode)
	case KindCold:
		return r.cold(ctx, sc, mode)
	case KindWarm:
		return r.warm(ctx, sc, mode)
	case KindPoisson, KindKeepAlive:
		return r.arrivals(ctx, sc, mode)
	case KindBreakdown:
		return r.breakdown(ctx, sc, mode)
	case KindChain:
		return r.chain(ctx, sc, mode)
	case KindStateless:
		return r.stateless(ctx, sc, mode)
	case KindParallel:
		return r.parallel(ctx, sc, mode)
	}
	return fmt.Errorf("scenario %s: unknown kind %q", sc.Name, sc.Kind)
}

// fnDeploy describes one function the harness deploys.
type fnDeploy struct {
	code      string // directory under functions/: small, medium, large, chain, state
	keepAlive time.Duration
	maxInst   int
	extra     map[string][]byte // more files in the code directory
}

// fnName is the name of a deployed function: prefix-scenario-code-m<variant>.
func (r *runner) fnName(sc *Scenario, code, mode string, variant int) string {
	return fmt.Sprintf("%s-%s-%s-%c%d", r.plan.Prefix, sc.Name, code, mode[0], variant)
}

func (r *runner) deploy(ctx context.Context, name, mode string, d fnDeploy) error {
	if d.maxInst <= 0 {
		d.maxInst = 20
	}
	spec := fmt.Sprintf(`name: %s
runtime: python3
handler: handler.py
execution_mode: %s
timeout: 60s
memory: %s
cpu: %s
keep_alive: %s
max_instances: %d
concurrency: 1
environment: {LARGE_MB: "%d"}
`, name, mode, r.plan.Memory, r.plan.CPU, d.keepAlive, d.maxInst, r.plan.LargeMB)
	dir := filepath.Join(r.workdir, name)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("deploy %s: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("deploy %s: %w", name, err)
	}
	src := path.Join("functions", d.code)
	entries, err := fs.ReadDir(functionsFS, src)
	if err != nil {
		return fmt.Errorf("deploy %s: embedded code %s: %w", name, d.code, err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		b, err := functionsFS.ReadFile(path.Join(src, e.Name()))
		if err != nil {
			return fmt.Errorf("deploy %s: %w", name, err)
		}
		files[e.Name()] = b
	}
	for k, v := range d.extra {
		files[k] = v
	}
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o644); err != nil {
			return fmt.Errorf("deploy %s: %w", name, err)
		}
	}
	var code bytes.Buffer
	if err := store.Pack(dir, &code, nil); err != nil {
		return fmt.Errorf("deploy %s: pack code: %w", name, err)
	}
	if _, err := r.c.Deploy(ctx, name, []byte(spec), &code); err != nil {
		return fmt.Errorf("deploy %s (%s mode): %w", name, mode, err)
	}
	return nil
}

// remove deletes a function, so that its instances stop before the next
// window. Failures are logged: they do not spoil what was measured.
func (r *runner) remove(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.c.Delete(ctx, name); err != nil {
		r.log.Warn("delete function", "name", name, "err", err)
	}
}

// invoke makes one call and fills what the response headers say.
func (r *runner) invoke(ctx context.Context, c *Call, name, query string, body []byte) []byte {
	c.Start = time.Now()
	p := ""
	if query != "" {
		p = "run?" + query
	}
	res, err := r.c.Invoke(ctx, name, http.MethodPost, p, nil, body)
	c.LatencyMs = float64(time.Since(c.Start)) / float64(time.Millisecond)
	r.opts.Progress(1)
	if err != nil {
		c.Error = err.Error()
		return nil
	}
	c.Status, c.Cold, c.ActivationID = res.Status, res.Cold, res.ActivationID
	c.InitMs = headerMs(res.Header, gateway.HeaderInitMs)
	c.ServerMs = headerMs(res.Header, gateway.HeaderDurationMs)
	if res.Status/100 != 2 {
		c.Error = strings.TrimSpace(string(res.Body))
		if len(c.Error) > 200 {
			c.Error = c.Error[:200]
		}
	}
	return res.Body
}

func headerMs(h http.Header, k string) float64 {
	v, err := strconv.ParseFloat(h.Get(k), 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// window runs body between an energy mark and the end of the window, then
// joins the activation records of functions into the calls and records
// both.
func (r *runner) window(ctx context.Context, w Window, functions []string, body func() ([]Call, error)) error {
	mk, err := r.meter.begin()
	if err != nil {
		return err
	}
	w.Start = mk.at
	calls, err := body()
	w.End = time.Now()
	if err != nil {
		return err
	}
	// Pad short windows, and give the server's sampler time to cover the end.
	sleepCtx(ctx, time.Until(w.Start.Add(r.plan.Energy.MinWindow.D())))
	if r.meter.server {
		sleepCtx(ctx, r.plan.Energy.SampleLag.D())
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.meter.stop(ctx, mk, &w, functions); err != nil {
		return err
	}
	r.join(ctx, functions, w.Start, calls)
	r.meter.attribute(mk, &w, calls)
	r.mu.Lock()
	r.res.Calls = append(r.res.Calls, calls...)
	r.res.Windows = append(r.res.Windows, w)
	r.mu.Unlock()
	return nil
}

// join copies stage timings, instance ids and energy from the activation
// records into calls.
func (r *runner) join(ctx context.Context, functions []string, since time.Time, calls []Call) {
	recs := map[string]activation{}
	for _, f := range functions {
		m, err := r.api.activations(ctx, f, since.Add(-time.Second))
		if err != nil {
			r.log.Warn("activation records", "function", f, "err", err)
		}
		for k, v := range m {
			recs[k] = v
		}
	}
	get := func(t map[string]float64, k string) float64 {
		if v, ok := t[k]; ok {
			return v
		}
		return math.NaN()
	}
	for i := range calls {
		c := &calls[i]
		a, ok := recs[c.ActivationID]
		if !ok {
			continue
		}
		c.InstanceID = a.InstanceID
		c.QueueMs, c.StartMs = get(a.Timings, "queue_ms"), get(a.Timings, "start_ms")
		c.SandboxMs, c.RuntimeMs = get(a.Timings, "sandbox_ms"), get(a.Timings, "runtime_ms")
		c.ImportMs, c.ExecMs = get(a.Timings, "import_ms"), get(a.Timings, "exec_ms")
		if a.EnergyJ != nil {
			c.EnergyJ, c.EnergySource = *a.EnergyJ, a.EnergySource
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func noKA() time.Duration { return -1 }

// idle measures the node with nothing running, or with warm_instances
// instances of the small function kept warm and idle.
func (r *runner) idle(ctx context.Context, sc *Scenario, mode string) error {
	w := Window{Scenario: sc.Name, Kind: sc.Kind, Mode: mode, KeepAlive: noKA(), Param: float64(sc.WarmInstances)}
	var fns []string
	if n := sc.WarmInstances; n > 0 {
		name := r.fnName(sc, "small", mode, 0)
		if err := r.deploy(ctx, name, mode, fnDeploy{code: "small", keepAlive: 24 * time.Hour, maxInst: n}); err != nil {
			return err
		}
		defer r.remove(name)
		// n overlapping calls need n instances.
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				c := newCall(sc, "", mode, "small", i)
				r.invoke(ctx, &c, name, "sleep_ms=1000", nil)
			})
		}
		wg.Wait()
		fns = []string{name}
		w.Variant = fmt.Sprintf("warm=%d", n)
	}
	return r.window(ctx, w, fns, func() ([]Call, error) {
		end := time.Now().Add(sc.Duration.D())
		for time.Now().Before(end) {
			sleepCtx(ctx, min(time.Second, time.Until(end)))
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			r.opts.Progress(1)
		}
		return nil, nil
	})
}

// sequential makes n calls one after another.
func (r *runner) sequential(ctx context.Context, sc *Scenario, variant, mode, label, name, query string, n int, gap time.Duration) ([]Call, error) {
	calls := make([]Call, 0, n)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return calls, err
		}
		c := newCall(sc, variant, mode, label, i)
		r.invoke(ctx, &c, name, query, nil)
		calls = append(calls, c)
		if i+1 < n {
			sleepCtx(ctx, gap)
		}
	}
	return calls, nil
}

// closedLoop makes n calls with conc callers, each sending its next call
// when the previous one returns.
func (r *runner) closedLoop(ctx context.Context, sc *Scenario, variant, mode, label, name, query string, n, conc int) ([]Call, error) {
	calls := make([]Call, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for range min(conc, n) {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n || ctx.Err() != nil {
					return
				}
				c := newCall(sc, variant, mode, label, i)
				r.invoke(ctx, &c, name, query, nil)
				calls[i] = c
			}
		})
	}
	wg.Wait()
	return calls, ctx.Err()
}

func workQuery(sc *Scenario) string {
	if sc.WorkMs > 0 {
		return "work_ms=" + strconv.FormatFloat(sc.WorkMs, 'f', -1, 64)
	}
	return ""
}

func (r *runner) cold(ctx context.Context, sc *Scenario, mode string) error {
	var errs []error
	for vi, fn := range sc.Functions {
		name := r.fnName(sc, fn, mode, vi)
		if err := r.deploy(ctx, name, mode, fnDeploy{code: fn, keepAlive: 0}); err != nil {
			errs = append(errs, err)
			continue
		}
		w := Window{Scenario: sc.Name, Kind: sc.Kind, Variant: fn, Mode: mode, KeepAlive: 0}
		err := r.window(ctx, w, []string{name}, func() ([]Call, error) {
			return r.sequential(ctx, sc, fn, mode, fn, name, "", sc.Calls, sc.Interval.D())
		})
		r.remove(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", fn, err))
		}
	}
	return errors.Join(errs...)
}

func (r *runner) warm(ctx context.Context, sc *Scenario, mode string) error {
	name := r.fnName(sc, sc.Function, mode, 0)
	conc := sc.Concurrency[0]
	ka := sc.KeepAlive.D()
	if err := r.deploy(ctx, name, mode, fnDeploy{code: sc.Function, keepAlive: ka, maxInst: max(20, conc)}); err != nil {
		return err
	}
	defer r.remove(name)
	q := workQuery(sc)
	if _, err := r.closedLoop(ctx, sc, "warmup", mode, sc.Function, name, q, sc.Warmup*conc, conc); err != nil {
		return err
	}
	w := Window{Scenario: sc.Name, Kind: sc.Kind, Variant: sc.Function, Mode: mode, KeepAlive: ka, Param: float64(conc)}
	return r.window(ctx, w, []string{name}, func() ([]Call, error) {
		return r.closedLoop(ctx, sc, sc.Function, mode, sc.Function, name, q, sc.Calls, conc)
	})
}

// arrivals runs the poisson (one variant per rate) and keepalive (one per
// keep-alive) scenarios: open-loop arrivals for the scenario's duration.
func (r *runner) arrivals(ctx context.Context, sc *Scenario, mode string) error {
	type variant struct {
		label string
		rate  float64 // per minute
		ka    time.Duration
	}
	var vs []variant
	if sc.Kind == KindPoisson {
		for _, rate := range sc.Rates {
			vs = append(vs, variant{fmt.Sprintf("rate=%g/min", rate), rate, sc.KeepAlive.D()})
		}
	} else {
		for _, ka := range sc.KeepAlives {
			vs = append(vs, variant{"keep_alive=" + ka.String(), sc.Rate, ka.D()})
		}
	}
	var errs []error
	for vi, v := range vs {
		name := r.fnName(sc, sc.Function, mode, vi)
		if err := r.deploy(ctx, name, mode, fnDeploy{code: sc.Function, keepAlive: v.ka}); err != nil {
			errs = append(errs, err)
			continue
		}
		h := fnv.New64a()
		fmt.Fprintf(h, "%s/%s/%s", sc.Name, v.label, mode)
		rng := rand.New(rand.NewPCG(r.plan.Seed, h.Sum64()))
		param := v.rate
		if sc.Kind == KindKeepAlive {
			param = v.ka.Seconds()
		}
		w := Window{Scenario: sc.Name, Kind: sc.Kind, Variant: v.label, Mode: mode, KeepAlive: v.ka, Param: param}
		err := r.window(ctx, w, []string{name}, func() ([]Call, error) {
			return r.openLoop(ctx, sc, v.label, mode, name, v.rate, sc.Duration.D(), rng)
		})
		r.remove(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", v.label, err))
		}
	}
	return errors.Join(errs...)
}

// Arrivals returns the send times (offsets from the start) of calls at
// ratePerMin over d: exponential gaps for poisson, even gaps for constant.
func Arrivals(arrival string, ratePerMin float64, d time.Duration, rng *rand.Rand) []time.Duration {
	perSec := ratePerMin / 60
	var out []time.Duration
	t := 0.0
	for {
		if arrival == ArrivalConstant {
			t += 1 / perSec
		} else {
			t += rng.ExpFloat64() / perSec
		}
		at := time.Duration(t * float64(time.Second))
		if at >= d {
			return out
		}
		out = append(out, at)
	}
}

func (r *runner) openLoop(ctx context.Context, sc *Scenario, variant, mode, name string, rate float64, d time.Duration, rng *rand.Rand) ([]Call, error) {
	times := Arrivals(sc.Arrival, rate, d, rng)
	calls := make([]Call, len(times))
	sem := make(chan struct{}, sc.MaxInFlight)
	var wg sync.WaitGroup
	q := workQuery(sc)
	t0 := time.Now()
	for i, at := range times {
		sleepCtx(ctx, time.Until(t0.Add(at)))
		if ctx.Err() != nil {
			break
		}
		c := newCall(sc, variant, mode, sc.Function, i)
		select {
		case sem <- struct{}{}:
		default:
			// The harness must not become the bottleneck of an open loop:
			// a call past the bound is counted as dropped, not delayed.
			c.Start = time.Now()
			c.Error = fmt.Sprintf("harness: %d calls in flight (max_in_flight), call dropped", sc.MaxInFlight)
			c.LatencyMs = math.NaN()
			calls[i] = c
			r.opts.Progress(1)
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			r.invoke(ctx, &c, name, q, nil)
			calls[i] = c
		})
	}
	wg.Wait()
	// Stay until the window's nominal end, so that energy covers it all.
	sleepCtx(ctx, time.Until(t0.Add(d)))
	return calls, ctx.Err()
}

// breakdown makes calls cold starts (keep_alive 0) and then warm calls of
// each function, for the stage table.
func (r *runner) breakdown(ctx context.Context, sc *Scenario, mode string) error {
	var errs []error
	for vi, fn := range sc.Functions {
		for k, ka := range []time.Duration{0, time.Hour} {
			name := r.fnName(sc, fn, mode, 2*vi+k)
			if err := r.deploy(ctx, name, mode, fnDeploy{code: fn, keepAlive: ka}); err != nil {
				errs = append(errs, err)
				continue
			}
			label := fn + "/cold"
			if ka > 0 {
				label = fn + "/warm"
				c := newCall(sc, "warmup", mode, fn, 0)
				r.invoke(ctx, &c, name, "", nil)
			}
			w := Window{Scenario: sc.Name, Kind: sc.Kind, Variant: label, Mode: mode, KeepAlive: ka}
			err := r.window(ctx, w, []string{name}, func() ([]Call, error) {
				return r.sequential(ctx, sc, label, mode, fn, name, "", sc.Calls, sc.Interval.D())
			})
			r.remove(name)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", label, err))
			}
		}
	}
	return errors.Join(errs...)
}

// chain calls function A for a payload of each size and feeds its output
// to function B; rows chain-a, chain-b and chain (A + B end to end).
func (r *runner) chain(ctx context.Context, sc *Scenario, mode string) error {
	a, b := r.fnName(sc, "chain", mode, 0), r.fnName(sc, "chain", mode, 1)
	for _, n := range []string{a, b} {
		if err := r.deploy(ctx, n, mode, fnDeploy{code: "chain", keepAlive: time.Hour}); err != nil {
			return err
		}
		defer r.remove(n)
	}
	one := func(variant string, i int, size Size) []Call {
		ca := newCall(sc, variant, mode, "chain-a", i)
		out := r.invoke(ctx, &ca, a, fmt.Sprintf("role=produce&size=%d", size), nil)
		ca.Bytes = int64(len(out))
		cb := newCall(sc, variant, mode, "chain-b", i)
		cb.Bytes = int64(len(out))
		if ca.OK() {
			r.invoke(ctx, &cb, b, "role=consume", out)
		} else {
			cb.Error, cb.Start, cb.LatencyMs = "skipped: function A failed", time.Now(), math.NaN()
		}
		total := newCall(sc, variant, mode, "chain", i)
		total.Start, total.Bytes, total.Cold = ca.Start, ca.Bytes, ca.Cold || cb.Cold
		total.LatencyMs = ca.LatencyMs + cb.LatencyMs
		total.Status, total.Error = cb.Status, cmpOr(ca.Error, cb.Error)
		total.ServerMs = ca.ServerMs + cb.ServerMs
		return []Call{ca, cb, total}
	}
	var errs []error
	for _, size := range sc.Sizes {
		variant := "size=" + size.String()
		for i := range sc.Warmup {
			one("warmup", i, size)
		}
		w := Window{Scenario: sc.Name, Kind: sc.Kind, Variant: variant, Mode: mode, KeepAlive: time.Hour, Param: float64(size)}
		err := r.window(ctx, w, []string{a, b}, func() ([]Call, error) {
			var calls []Call
			for i := range sc.Calls {
				if err := ctx.Err(); err != nil {
					return calls, err
				}
				calls = append(calls, one(variant, i, size)...)
			}
			return calls, nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", variant, err))
		}
	}
	return errors.Join(errs...)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// StateDocument returns a JSON document of about size bytes:
// {"items": [{"id": 0, "name": "item-0", "value": …}, …]}.
func StateDocument(size int64) []byte {
	type item struct {
		ID    int     `json:"id"`
		Name  string  `json:"name"`
		Value float64 `json:"value"`
		Tags  string  `json:"tags"`
	}
	const per = 80 // about the size of one item
	n := max(1, int(size/per))
	items := make([]item, n)
	for i := range items {
		items[i] = item{ID: i, Name: fmt.Sprintf("item-%d", i), Value: float64(i) * 1.5, Tags: "alpha,beta,gamma"}
	}
	b, _ := json.Marshal(map[string]any{"items": items})
	return b
}

func (r *runner) stateless(ctx context.Context, sc *Scenario, mode string) error {
	doc := StateDocument(int64(sc.StateSize))
	var errs []error
	for vi, v := range sc.Variants {
		name := r.fnName(sc, "state", mode, vi)
		if err := r.deploy(ctx, name, mode, fnDeploy{code: "state", keepAlive: time.Hour,
			extra: map[string][]byte{"state.json": doc}}); err != nil {
			errs = append(errs, err)
			continue
		}
		var body []byte
		if v == "passed" {
			body = doc
		}
		run := func(variant string, n int) []Call {
			calls := make([]Call, 0, n)
			for i := range n {
				if ctx.Err() != nil {
					break
				}
				c := newCall(sc, variant, mode, "state", i)
				c.Bytes = int64(len(body))
				r.invoke(ctx, &c, name, "mode="+v, body)
				calls = append(calls, c)
			}
			return calls
		}
		run("warmup", sc.Warmup)
		w := Window{Scenario: sc.Name, Kind: sc.Kind, Variant: v, Mode: mode, KeepAlive: time.Hour, Param: float64(len(doc))}
		err := r.window(ctx, w, []string{name}, func() ([]Call, error) { return run(v, sc.Calls), ctx.Err() })
		r.remove(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", v, err))
		}
	}
	return errors.Join(errs...)
}

func (r *runner) parallel(ctx context.Context, sc *Scenario, mode string) error {
	name := r.fnName(sc, sc.Function, mode, 0)
	top := slices.Max(sc.Concurrency)
	if err := r.deploy(ctx, name, mode, fnDeploy{code: sc.Function, keepAlive: time.Hour, maxInst: top}); err != nil {
		return err
	}
	defer r.remove(name)
	q := workQuery(sc)
	var errs []error
	for _, c := range sc.Concurrency {
		variant := fmt.Sprintf("c=%d", c)
		if _, err := r.closedLoop(ctx, sc, "warmup", mode, sc.Function, name, q, sc.Warmup*c, c); err != nil {
			return err
		}
		w := Window{Scenario: sc.Name, Kind: sc.Kind, Variant: variant, Mode: mode, KeepAlive: time.Hour, Param: float64(c)}
		if err := r.window(ctx, w, []string{name}, func() ([]Call, error) {
			return r.closedLoop(ctx, sc, variant, mode, sc.Function, name, q, sc.Calls, c)
		}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", variant, err))
		}
	}
	return errors.Join(errs...)
}

func describeMachine(url, serverVersion string) Machine {
	m := Machine{OS: runtime.GOOS + "/" + runtime.GOARCH, CPUs: runtime.NumCPU(), ServerURL: url,
		ServerVersion: serverVersion, GoVersion: runtime.Version()}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				m.MemoryMiB = kb / 1024
			}
		}
	}
	return m
}
