// Package telemetry sets up wisp's structured logging (log/slog) and its
// Prometheus metrics. Every invocation is counted and timed here, under the
// wisp_ prefix and, for existing dashboards, under the OpenFaaS gateway's
// metric names (gateway_function_invocation_total, gateway_functions_seconds,
// gateway_service_count).
package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wisp-faas/wisp/internal/energy"
)

// NewLogger returns a slog logger writing to w in the given format ("json"
// or "text") at the given level ("debug", "info", "warn", "error").
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "", "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: use json or text", format)
	}
}

// Metrics holds wisp's Prometheus collectors on a private registry.
type Metrics struct {
	reg *prometheus.Registry

	invocations   *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	coldStart     *prometheus.HistogramVec
	coldStages    *prometheus.HistogramVec
	cacheLookups  *prometheus.CounterVec
	nodeEnergy    *prometheus.CounterVec
	fnEnergy      *prometheus.CounterVec
	overhead      *prometheus.CounterVec
	spue          prometheus.Gauge
	instanceStart *prometheus.CounterVec
	instances     *prometheus.GaugeVec
	stopped       *prometheus.CounterVec
	pipelined     *prometheus.CounterVec
	redispatched  *prometheus.CounterVec
	asyncIn       *prometheus.CounterVec
	asyncDone     *prometheus.CounterVec

	// OpenFaaS gateway names.
	ofInvocations *prometheus.CounterVec
	ofSeconds     *prometheus.HistogramVec
	ofReplicas    *prometheus.GaugeVec
}

// latencyBuckets cover 100 µs to 60 s.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// NewMetrics registers wisp's collectors, plus Go runtime and process
// collectors, on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.invocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_invocations_total",
		Help: "Function invocations by function, outcome (success, error, timeout, crashed, rejected) and start (cold, warm).",
	}, []string{"function", "status", "start"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wisp_invocation_duration_seconds",
		Help:    "Time from request arrival to response, by function and start (cold, warm).",
		Buckets: latencyBuckets,
	}, []string{"function", "start"})
	m.coldStart = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wisp_cold_start_seconds",
		Help:    "Time to create an instance and load its handler, by function and execution mode.",
		Buckets: latencyBuckets,
	}, []string{"function", "mode"})
	m.coldStages = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "wisp_cold_start_stage_seconds",
		Help: "Where the cold starts that calls waited for went, by function, execution mode, stage (sandbox, runtime, import) " +
			"and whether the sandbox was pre-provisioned (true, false).",
		Buckets: latencyBuckets,
	}, []string{"function", "mode", "stage", "provisioned"})
	m.cacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_cache_lookups_total",
		Help: "Result cache lookups of deterministic functions by function and result (hit, miss, bypass); hit ratio = hit / (hit + miss).",
	}, []string{"function", "result"})
	m.nodeEnergy = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_node_energy_joules_total",
		Help: "The node's energy by source (rapl, perf, model).",
	}, []string{"source"})
	m.fnEnergy = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_function_energy_joules_total",
		Help: "Energy attributed to each function by part (execution, cold_start, idle: warm instances between calls).",
	}, []string{"function", "part"})
	m.overhead = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_energy_overhead_joules_total",
		Help: "Node energy not spent executing functions, by part (idle_node, cold_start, idle_instances, platform, other).",
	}, []string{"part"})
	m.spue = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wisp_spue",
		Help: "Serverless PUE of the last energy window: node energy / function execution energy (0 when no function ran).",
	})
	m.instanceStart = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_instance_starts_total",
		Help: "Instance starts by function, mode and result (ok, error).",
	}, []string{"function", "mode", "result"})
	m.stopped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_instance_stops_total",
		Help: "Instance stops by function and reason (keep_alive, keep_alive 0, failed, died, retired, shutdown).",
	}, []string{"function", "reason"})
	m.pipelined = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_pipelined_calls_total",
		Help: "Calls queued inside a busy instance behind its running call (execution.pipeline_depth), by function.",
	}, []string{"function"})
	m.redispatched = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_redispatched_calls_total",
		Help: "Calls sent to another instance because the one they were queued in died, or had no room in its channel, before their turn, by function.",
	}, []string{"function"})
	m.instances = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wisp_instances",
		Help: "Instances by function and state (starting, idle, busy).",
	}, []string{"function", "state"})
	m.asyncIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_async_enqueued_total",
		Help: "Async calls accepted into the durable queue, by function.",
	}, []string{"function"})
	m.asyncDone = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wisp_async_finished_total",
		Help: "Async calls that reached a final state, by function and state (succeeded, failed: a dead letter).",
	}, []string{"function", "state"})
	m.ofInvocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_function_invocation_total",
		Help: "OpenFaaS-compatible: invocations by function_name and HTTP code.",
	}, []string{"function_name", "code"})
	m.ofSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gateway_functions_seconds",
		Help:    "OpenFaaS-compatible: invocation duration by function_name and HTTP code.",
		Buckets: latencyBuckets,
	}, []string{"function_name", "code"})
	m.ofReplicas = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gateway_service_count",
		Help: "OpenFaaS-compatible: ready instances by function_name.",
	}, []string{"function_name"})
	m.reg.MustRegister(m.invocations, m.duration, m.coldStart, m.coldStages, m.cacheLookups, m.nodeEnergy, m.fnEnergy, m.overhead, m.spue, m.instanceStart, m.stopped, m.pipelined, m.redispatched, m.instances,
		m.asyncIn, m.asyncDone, m.ofInvocations, m.ofSeconds, m.ofReplicas,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry exposes the registry so other packages can add collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Invocation records one finished call.
func (m *Metrics) Invocation(function, status string, cold bool, code int, d time.Duration) {
	start := "warm"
	if cold {
		start = "cold"
	}
	sec := d.Seconds()
	m.invocations.WithLabelValues(function, status, start).Inc()
	m.duration.WithLabelValues(function, start).Observe(sec)
	c := strconv.Itoa(code)
	m.ofInvocations.WithLabelValues(function, c).Inc()
	m.ofSeconds.WithLabelValues(function, c).Observe(sec)
}

// ColdStartStages records the breakdown of one cold start a call waited for.
func (m *Metrics) ColdStartStages(function, mode string, provisioned bool, sandbox, runtime, imp time.Duration) {
	p := strconv.FormatBool(provisioned)
	m.coldStages.WithLabelValues(function, mode, "sandbox", p).Observe(sandbox.Seconds())
	m.coldStages.WithLabelValues(function, mode, "runtime", p).Observe(runtime.Seconds())
	m.coldStages.WithLabelValues(function, mode, "import", p).Observe(imp.Seconds())
}

// Energy records one window's attribution (internal/meter).
func (m *Metrics) Energy(r energy.Report) {
	add := func(c prometheus.Counter, v float64) {
		if v > 0 { // counters only grow; attribution clamps, but never trust a float
			c.Add(v)
		}
	}
	add(m.nodeEnergy.WithLabelValues(string(r.Source)), r.Total)
	for _, f := range r.Functions {
		add(m.fnEnergy.WithLabelValues(f.Function, "execution"), f.Execution)
		add(m.fnEnergy.WithLabelValues(f.Function, "cold_start"), f.ColdStart)
		add(m.fnEnergy.WithLabelValues(f.Function, "idle"), f.IdleInstances)
	}
	add(m.overhead.WithLabelValues("idle_node"), r.Idle)
	add(m.overhead.WithLabelValues("cold_start"), r.ColdStart)
	add(m.overhead.WithLabelValues("idle_instances"), r.IdleInstances)
	add(m.overhead.WithLabelValues("platform"), r.Platform)
	add(m.overhead.WithLabelValues("other"), r.Other)
	m.spue.Set(r.SPUE)
}

// AsyncEnqueued counts an async call accepted into the queue.
func (m *Metrics) AsyncEnqueued(function string) { m.asyncIn.WithLabelValues(function).Inc() }

// AsyncFinished counts an async call that reached its final state.
func (m *Metrics) AsyncFinished(function, state string) {
	m.asyncDone.WithLabelValues(function, state).Inc()
}

// QueueDepth exports the async queue's jobs per state, read at each
// scrape from stats.
func (m *Metrics) QueueDepth(stats func() map[string]int) {
	desc := prometheus.NewDesc("wisp_async_jobs", "Async calls in the durable queue by state (queued, running, succeeded, failed).", []string{"state"}, nil)
	m.reg.MustRegister(collectorFunc{desc: desc, collect: func(ch chan<- prometheus.Metric) {
		for state, n := range stats() {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(n), state)
		}
	}})
}

// collectorFunc is a prometheus.Collector made of a description and a
// function that reads the values at scrape time.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(ch chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// CacheLookup records one result cache lookup: hit, miss or bypass.
func (m *Metrics) CacheLookup(function, result string) {
	m.cacheLookups.WithLabelValues(function, result).Inc()
}

// InstanceStarted records an instance start attempt.
func (m *Metrics) InstanceStarted(function, mode string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	} else {
		m.coldStart.WithLabelValues(function, mode).Observe(d.Seconds())
	}
	m.instanceStart.WithLabelValues(function, mode, result).Inc()
}

// InstanceStopped records an instance stop.
func (m *Metrics) InstanceStopped(function, reason string) {
	m.stopped.WithLabelValues(function, reason).Inc()
}

// Pipelined counts a call queued inside a busy instance.
func (m *Metrics) Pipelined(function string) { m.pipelined.WithLabelValues(function).Inc() }

// Redispatched counts a call sent to another instance after the one it was
// queued in died before its turn.
func (m *Metrics) Redispatched(function string) { m.redispatched.WithLabelValues(function).Inc() }

// InstancesChanged sets the per-state instance gauges of a function.
func (m *Metrics) InstancesChanged(function string, starting, idle, busy int) {
	m.instances.WithLabelValues(function, "starting").Set(float64(starting))
	m.instances.WithLabelValues(function, "idle").Set(float64(idle))
	m.instances.WithLabelValues(function, "busy").Set(float64(busy))
	m.ofReplicas.WithLabelValues(function).Set(float64(idle + busy))
}

// Forget drops a deleted function's series.
func (m *Metrics) Forget(function string) {
	for _, st := range []string{"starting", "idle", "busy"} {
		m.instances.DeleteLabelValues(function, st)
	}
	m.ofReplicas.DeleteLabelValues(function)
}
