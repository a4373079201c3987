package experiment

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// Call is one invocation's record: a row of calls.csv. Figures the server
// did not report are NaN (an empty CSV cell).
type Call struct {
	Scenario string
	Kind     string
	Variant  string // the scenario's variant: a function size, rate=60/min, keep_alive=10s, size=1KiB, c=4 …
	Mode     string
	Function string // the function size or role (small, chain-a, state …)
	Index    int    // the call's index within its scenario variant
	Start    time.Time
	// LatencyMs is the round trip the harness saw (for a chain: A's call
	// plus B's call).
	LatencyMs float64
	Cold      bool
	// InitMs is X-Wisp-Init-Ms: what the call paid for an instance's start.
	InitMs float64
	// ServerMs is X-Wisp-Duration-Ms: the call's time inside the server.
	ServerMs float64
	// Stage timings from the activation record (ms).
	QueueMs, StartMs, SandboxMs, RuntimeMs, ImportMs, ExecMs float64
	Status                                                   int
	Error                                                    string
	ActivationID                                             string
	InstanceID                                               string
	Bytes                                                    int64 // payload size (chain, stateless)
	// EnergyJ is the call's energy: the activation record's energy_j when
	// the server reports it, else the harness's estimate (EnergySource
	// says which; empty when unknown).
	EnergyJ      float64
	EnergySource string
}

// OK says the call succeeded (no transport error, a 2xx status).
func (c *Call) OK() bool { return c.Error == "" && c.Status/100 == 2 }

func newCall(sc *Scenario, variant, mode, fn string, i int) Call {
	n := math.NaN()
	return Call{Scenario: sc.Name, Kind: sc.Kind, Variant: variant, Mode: mode, Function: fn, Index: i,
		InitMs: n, ServerMs: n, QueueMs: n, StartMs: n, SandboxMs: n, RuntimeMs: n, ImportMs: n, ExecMs: n, EnergyJ: n}
}

// CSVHeader is calls.csv's header row.
var CSVHeader = []string{"scenario", "kind", "variant", "mode", "function", "call", "start", "latency_ms",
	"cold", "init_ms", "server_ms", "queue_ms", "start_ms", "sandbox_ms", "runtime_ms", "import_ms", "exec_ms",
	"status", "error", "activation_id", "instance_id", "bytes", "energy_j", "energy_source"}

// WriteCSV writes calls as calls.csv: one row per call, NaN as an empty cell.
func WriteCSV(w io.Writer, calls []Call) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return fmt.Errorf("write csv header: %w", err)
	}
	f := func(v float64) string {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return ""
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	for i := range calls {
		c := &calls[i]
		row := []string{c.Scenario, c.Kind, c.Variant, c.Mode, c.Function, strconv.Itoa(c.Index),
			c.Start.UTC().Format(time.RFC3339Nano), f(c.LatencyMs), strconv.FormatBool(c.Cold), f(c.InitMs),
			f(c.ServerMs), f(c.QueueMs), f(c.StartMs), f(c.SandboxMs), f(c.RuntimeMs), f(c.ImportMs), f(c.ExecMs),
			strconv.Itoa(c.Status), c.Error, c.ActivationID, c.InstanceID, strconv.FormatInt(c.Bytes, 10),
			f(c.EnergyJ), c.EnergySource}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("write csv row %d: %w", i, err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	return nil
}

// Window is one measured stretch of a run: a scenario variant on one mode,
// with the node's energy over it.
type Window struct {
	Scenario string    `json:"scenario"`
	Kind     string    `json:"kind"`
	Variant  string    `json:"variant,omitempty"`
	Mode     string    `json:"mode"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"` // the last call's end
	// EnergyEnd is where the energy window ends: End, padded to the plan's
	// energy.min_window, plus the sample lag with the server's energy.
	EnergyEnd time.Time `json:"energy_end"`
	// Energy over the window; NaN (0 in JSON) when unknown.
	NodeJ     float64 `json:"node_j"`
	FunctionJ float64 `json:"function_j"`
	Source    string  `json:"energy_source"`
	// KeepAlive is the functions' keep_alive in this window (keepalive,
	// poisson; -1 when not applicable).
	KeepAlive time.Duration `json:"keep_alive_ns"`
	// Param is the variant's numeric parameter (rate per minute, payload
	// bytes, concurrency), for plots.
	Param float64 `json:"param"`
}

// Seconds is the length of the window's calls.
func (w *Window) Seconds() float64 { return w.End.Sub(w.Start).Seconds() }

// EnergySeconds is the length of the window's energy measurement.
func (w *Window) EnergySeconds() float64 {
	if w.EnergyEnd.IsZero() {
		return w.Seconds()
	}
	return w.EnergyEnd.Sub(w.Start).Seconds()
}
