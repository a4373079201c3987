package bench

// Traces of per-function arrivals for `wisp bench replay`, and a synthetic
// generator for `wisp bench trace`.

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Arrival is one call in a trace.
type Arrival struct {
	Function string
	At       time.Duration // offset from the trace's start
	Duration time.Duration // how long the handler should run (0: return at once)
}

// Trace is a list of arrivals, sorted by At.
type Trace struct {
	Arrivals []Arrival
}

// Functions returns the trace's function names, sorted.
func (t *Trace) Functions() []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range t.Arrivals {
		if !seen[a.Function] {
			seen[a.Function] = true
			out = append(out, a.Function)
		}
	}
	slices.Sort(out)
	return out
}

// Span is the offset of the last arrival plus its duration.
func (t *Trace) Span() time.Duration {
	var end time.Duration
	for _, a := range t.Arrivals {
		end = max(end, a.At+a.Duration)
	}
	return end
}

// traceHeader is the CSV header WriteTrace writes and ParseTrace skips.
var traceHeader = []string{"function", "arrival_ms", "duration_ms"}

var traceNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ParseTrace reads a trace CSV: one call per line, "function,arrival_ms" or
// "function,arrival_ms,duration_ms" (milliseconds, decimals allowed, from
// the trace's start). A header line (first field "function"), blank lines
// and lines starting with # are skipped. Lines need not be sorted. An error
// names the line.
func ParseTrace(r io.Reader) (*Trace, error) {
	cr := csv.NewReader(bufio.NewReader(r))
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	var t Trace
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("trace line %d: %w", pe.Line, pe.Err)
			}
			return nil, fmt.Errorf("read trace: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if strings.EqualFold(strings.TrimSpace(rec[0]), traceHeader[0]) {
			continue
		}
		a, err := parseArrival(rec)
		if err != nil {
			return nil, fmt.Errorf("trace line %d: %w", line, err)
		}
		t.Arrivals = append(t.Arrivals, a)
	}
	if len(t.Arrivals) == 0 {
		return nil, fmt.Errorf("trace has no arrivals: write lines of function,arrival_ms[,duration_ms]")
	}
	slices.SortStableFunc(t.Arrivals, func(a, b Arrival) int { return cmp.Compare(a.At, b.At) })
	return &t, nil
}

func parseArrival(rec []string) (Arrival, error) {
	if len(rec) < 2 || len(rec) > 3 {
		return Arrival{}, fmt.Errorf("%d fields, want function,arrival_ms[,duration_ms]", len(rec))
	}
	name := strings.TrimSpace(rec[0])
	if !traceNameRE.MatchString(name) {
		return Arrival{}, fmt.Errorf("function %q is not a valid function name (1-63 of a-z, 0-9, '-')", name)
	}
	at, err := parseMillis("arrival_ms", rec[1])
	if err != nil {
		return Arrival{}, err
	}
	a := Arrival{Function: name, At: at}
	if len(rec) == 3 && strings.TrimSpace(rec[2]) != "" {
		if a.Duration, err = parseMillis("duration_ms", rec[2]); err != nil {
			return Arrival{}, err
		}
	}
	return a, nil
}

func parseMillis(field, s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%s %q is not a number of milliseconds", field, s)
	}
	if f < 0 {
		return 0, fmt.Errorf("%s %q is negative", field, s)
	}
	if f > float64(math.MaxInt64/int64(time.Millisecond)) {
		return 0, fmt.Errorf("%s %q is too large", field, s)
	}
	return time.Duration(f * float64(time.Millisecond)), nil
}

// WriteTrace writes t as CSV with a header.
func WriteTrace(w io.Writer, t *Trace) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(traceHeader); err != nil {
		return err
	}
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64)
	}
	for _, a := range t.Arrivals {
		if err := cw.Write([]string{a.Function, ms(a.At), ms(a.Duration)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// Synthetic traces after the Azure Functions 2019 characterisation:
// M. Shahrad et al., "Serverless in the Wild: Characterizing and Optimizing
// the Serverless Workload at a Large Cloud Provider", USENIX ATC'20, §3.
// Each parameter below names the figure it comes from; where the paper
// gives a shape but no fitted number, the value is ours and says so.
const (
	// Daily invocations per function are log-normal: log10(calls/day) ~
	// N(DailyLog10Mean, DailyLog10Sigma). Fitted to §3.3/Fig. 5's two
	// published points: 45% of applications are invoked at most once per
	// hour (24/day) and 81% at most once per minute (1440/day) on average,
	// which give a 45th percentile of log10 24 = 1.38 and an 81st of
	// log10 1440 = 3.16: sigma = 1.78/(z(.81) - z(.45)) = 1.78/1.004 =
	// 1.77, mean = 1.38 + 0.126*1.77 = 1.60 (a median of ~40 calls a day).
	// Invocation rates then span the paper's 8 orders of magnitude.
	DailyLog10Mean  = 1.60
	DailyLog10Sigma = 1.77

	// Timer-triggered share of functions (§3.2/Fig. 3: 15.6% of functions
	// have timer triggers). Timers fire periodically: inter-arrival CV ~0
	// (Fig. 7's spike at CV 0); TimerJitter is ours (a small scheduling
	// jitter, as a fraction of the period).
	TimerShare  = 0.156
	TimerJitter = 0.01

	// Of the other functions, BurstyShare have bursty arrivals (Fig. 7: a
	// large share of applications have an inter-arrival CV above 1); the
	// rest are Poisson-like (CV 1). The paper shows the CDF but publishes no
	// split; 0.3 and a CV of BurstyCV = 3 (a balanced two-phase
	// hyper-exponential) are ours, read off the figure's shape.
	BurstyShare = 0.3
	BurstyCV    = 3.0

	// Execution times are log-normal (§3.5/Fig. 8: the average execution
	// time per function fits a log-normal with ln-mean -0.38 and ln-sigma
	// 2.36 seconds: a median of 0.68 s, 50% of functions run under 1 s on
	// average). Per call, the time varies around the function's average
	// with ln-sigma CallSigma (ours).
	ExecLnMean  = -0.38
	ExecLnSigma = 2.36
	CallSigma   = 0.25
)

// TraceOptions parameterise the generator.
type TraceOptions struct {
	Functions int
	Duration  time.Duration // trace length
	Seed      uint64
	// RateScale multiplies every function's rate (default 1: calls per day
	// as the paper; 48 maps a day's calls onto 30 minutes, so that a short
	// trace holds enough calls to learn from).
	RateScale float64
	// MaxRate caps one function's mean rate, calls per second (default 1),
	// so that the heaviest functions do not swamp a small machine.
	MaxRate float64
	// ExecScale scales execution times down (default 0.1: a median of 68
	// ms) and MaxExec caps them (default 2 s), to keep the replay's load
	// modest; the keep-alive policies are about idle times, not these.
	ExecScale float64
	MaxExec   time.Duration
}

func (o TraceOptions) withDefaults() TraceOptions {
	if o.RateScale <= 0 {
		o.RateScale = 1
	}
	if o.MaxRate <= 0 {
		o.MaxRate = 1
	}
	if o.ExecScale <= 0 {
		o.ExecScale = 0.1
	}
	if o.MaxExec <= 0 {
		o.MaxExec = 2 * time.Second
	}
	return o
}

// Pattern is a function's arrival process in a synthetic trace.
type Pattern string

// Arrival patterns.
const (
	PatternTimer   Pattern = "timer"
	PatternPoisson Pattern = "poisson"
	PatternBursty  Pattern = "bursty"
)

// FunctionProfile is what the generator drew for one function.
type FunctionProfile struct {
	Name    string
	Pattern Pattern
	Rate    float64       // mean calls per second of trace time
	Exec    time.Duration // average execution time (scaled)
}

// timerPeriods are the periods a timer function snaps to (common cron
// schedules), so that its rate is the nearest one.
var timerPeriods = []time.Duration{
	10 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute,
	10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour,
	6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// GenerateTrace draws a synthetic trace; the same options (seed included)
// give the same trace.
func GenerateTrace(o TraceOptions) (*Trace, []FunctionProfile, error) {
	o = o.withDefaults()
	if o.Functions < 1 || o.Functions > 10000 {
		return nil, nil, fmt.Errorf("functions %d: use 1 to 10000", o.Functions)
	}
	if o.Duration <= 0 {
		return nil, nil, fmt.Errorf("duration %s: must be positive", o.Duration)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x7769737021)) // "wisp!"
	var t Trace
	profiles := make([]FunctionProfile, 0, o.Functions)
	width := len(strconv.Itoa(o.Functions - 1))
	for n := range o.Functions {
		p := FunctionProfile{Name: fmt.Sprintf("trace-fn-%0*d", width, n)}
		daily := math.Pow(10, DailyLog10Mean+DailyLog10Sigma*rng.NormFloat64())
		p.Rate = math.Min(daily/86400*o.RateScale, o.MaxRate)
		switch u := rng.Float64(); {
		case u < TimerShare:
			p.Pattern = PatternTimer
		case u < TimerShare+(1-TimerShare)*BurstyShare:
			p.Pattern = PatternBursty
		default:
			p.Pattern = PatternPoisson
		}
		exec := math.Exp(ExecLnMean+ExecLnSigma*rng.NormFloat64()) * o.ExecScale
		p.Exec = min(time.Duration(exec*float64(time.Second)), o.MaxExec)
		var at []time.Duration
		switch p.Pattern {
		case PatternTimer:
			period := nearestPeriod(1 / p.Rate)
			p.Rate = 1 / period.Seconds()
			phase := time.Duration(rng.Float64() * float64(period))
			for x := phase; x < o.Duration; x += period {
				j := time.Duration(rng.NormFloat64() * TimerJitter * float64(period))
				at = append(at, max(x+j, 0))
			}
		case PatternPoisson:
			at = poissonArrivals(rng, p.Rate, o.Duration, func() float64 { return rng.ExpFloat64() / p.Rate })
		case PatternBursty:
			// Balanced two-phase hyper-exponential with mean 1/rate and CV
			// BurstyCV (the standard moment fit).
			c2 := BurstyCV * BurstyCV
			p1 := 0.5 * (1 + math.Sqrt((c2-1)/(c2+1)))
			m := 1 / p.Rate
			m1, m2 := m/(2*p1), m/(2*(1-p1))
			at = poissonArrivals(rng, p.Rate, o.Duration, func() float64 {
				if rng.Float64() < p1 {
					return rng.ExpFloat64() * m1
				}
				return rng.ExpFloat64() * m2
			})
		}
		for _, x := range at {
			if x >= o.Duration {
				continue
			}
			d := time.Duration(float64(p.Exec) * math.Exp(CallSigma*rng.NormFloat64()))
			t.Arrivals = append(t.Arrivals, Arrival{Function: p.Name, At: x.Round(time.Millisecond),
				Duration: min(d, o.MaxExec).Round(time.Millisecond)})
		}
		profiles = append(profiles, p)
	}
	slices.SortStableFunc(t.Arrivals, func(a, b Arrival) int { return cmp.Compare(a.At, b.At) })
	return &t, profiles, nil
}

// poissonArrivals draws arrivals from a renewal process whose gaps come
// from gap (seconds), starting at a random point of the first gap (so the
// trace does not start with every function's call at 0).
func poissonArrivals(rng *rand.Rand, rate float64, span time.Duration, gap func() float64) []time.Duration {
	var out []time.Duration
	x := rng.ExpFloat64() / rate
	for x < span.Seconds() {
		out = append(out, time.Duration(x*float64(time.Second)))
		x += gap()
	}
	return out
}

func nearestPeriod(sec float64) time.Duration {
	best := timerPeriods[0]
	for _, p := range timerPeriods {
		if math.Abs(math.Log(p.Seconds()/sec)) < math.Abs(math.Log(best.Seconds()/sec)) {
			best = p
		}
	}
	return best
}
