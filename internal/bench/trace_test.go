package bench

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestGenerateTraceDeterministic(t *testing.T) {
	o := TraceOptions{Functions: 20, Duration: 30 * time.Minute, Seed: 7, RateScale: 48}
	a, pa, err := GenerateTrace(o)
	if err != nil {
		t.Fatal(err)
	}
	b, pb, err := GenerateTrace(o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(pa, pb) {
		t.Fatal("same seed gave different traces")
	}
	o.Seed = 8
	c, _, err := GenerateTrace(o)
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(a, c) {
		t.Fatal("different seeds gave the same trace")
	}
	// It survives a CSV round trip.
	var buf bytes.Buffer
	if err := WriteTrace(&buf, a); err != nil {
		t.Fatal(err)
	}
	back, err := ParseTrace(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Arrivals, back.Arrivals) {
		t.Fatal("CSV round trip changed the trace")
	}
}

// Rates follow the log-normal of daily counts (within the cap), arrivals lie
// within the trace, timers are periodic, and the patterns are mixed.
func TestGenerateTraceRates(t *testing.T) {
	o := TraceOptions{Functions: 2000, Duration: 10 * time.Second, Seed: 1, MaxRate: 1e9, ExecScale: 1, MaxExec: time.Hour}
	tr, profiles, err := GenerateTrace(o)
	if err != nil {
		t.Fatal(err)
	}
	var logs []float64
	patterns := map[Pattern]int{}
	var execBelow1s int
	for _, p := range profiles {
		patterns[p.Pattern]++
		if p.Pattern != PatternTimer { // timers snap to a cron period
			logs = append(logs, math.Log10(p.Rate*86400))
		}
		if p.Exec < time.Second {
			execBelow1s++
		}
	}
	mean, sd := meanSD(logs)
	if math.Abs(mean-DailyLog10Mean) > 0.15 || math.Abs(sd-DailyLog10Sigma) > 0.15 {
		t.Errorf("log10 daily calls: mean %.2f sd %.2f, want about %.2f %.2f", mean, sd, DailyLog10Mean, DailyLog10Sigma)
	}
	if f := float64(patterns[PatternTimer]) / 2000; math.Abs(f-TimerShare) > 0.03 {
		t.Errorf("timer share %.3f, want about %.3f", f, TimerShare)
	}
	if patterns[PatternBursty] == 0 || patterns[PatternPoisson] == 0 {
		t.Errorf("patterns %v, want all three", patterns)
	}
	// Fig. 8: about half the functions run under 1 s on average.
	if f := float64(execBelow1s) / 2000; f < 0.5 || f > 0.62 {
		t.Errorf("%.2f of functions under 1 s, want about 0.56 (ln-mean -0.38)", f)
	}
	for _, a := range tr.Arrivals {
		if a.At < 0 || a.At >= o.Duration {
			t.Fatalf("arrival %s outside the trace", a.At)
		}
	}
}

func TestGenerateTraceCapsAndPeriods(t *testing.T) {
	o := TraceOptions{Functions: 200, Duration: 10 * time.Minute, Seed: 3, RateScale: 1000, MaxRate: 0.5, MaxExec: 300 * time.Millisecond}
	tr, profiles, err := GenerateTrace(o)
	if err != nil {
		t.Fatal(err)
	}
	byFn := map[string][]time.Duration{}
	for _, a := range tr.Arrivals {
		byFn[a.Function] = append(byFn[a.Function], a.At)
		if a.Duration > o.MaxExec {
			t.Fatalf("duration %s above MaxExec", a.Duration)
		}
	}
	for _, p := range profiles {
		if p.Rate > o.MaxRate+1e-9 {
			t.Fatalf("%s: rate %.3f above the cap", p.Name, p.Rate)
		}
		at := byFn[p.Name]
		if p.Pattern != PatternTimer || len(at) < 3 {
			continue
		}
		period := time.Duration(float64(time.Second) / p.Rate)
		for i := 1; i < len(at); i++ {
			if gap := at[i] - at[i-1]; math.Abs(float64(gap-period)) > 0.1*float64(period) {
				t.Fatalf("%s: timer gap %s, want about %s", p.Name, gap, period)
			}
		}
	}
}

func TestGenerateTraceOptionErrors(t *testing.T) {
	for _, o := range []TraceOptions{{Functions: 0, Duration: time.Minute}, {Functions: 3}} {
		if _, _, err := GenerateTrace(o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func meanSD(xs []float64) (float64, float64) {
	var s, s2 float64
	for _, x := range xs {
		s += x
		s2 += x * x
	}
	n := float64(len(xs))
	m := s / n
	return m, math.Sqrt(s2/n - m*m)
}

func TestParseTrace(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Arrival
		wantErr string // substring; "" for success
	}{
		{
			name: "header, comments, blank lines, unsorted",
			in:   "function,arrival_ms,duration_ms\n# a comment\n\nb,20,5\na,10\na,15.5,\n",
			want: []Arrival{
				{Function: "a", At: 10 * time.Millisecond},
				{Function: "a", At: 15500 * time.Microsecond},
				{Function: "b", At: 20 * time.Millisecond, Duration: 5 * time.Millisecond},
			},
		},
		{name: "bad arrival names its line", in: "function,arrival_ms\na,10\na,soon\n", wantErr: "line 3: arrival_ms \"soon\""},
		{name: "negative duration", in: "a,10,-1\n", wantErr: "line 1: duration_ms \"-1\" is negative"},
		{name: "bad name", in: "a,1\nNot_A_Name,2\n", wantErr: "line 2: function \"Not_A_Name\""},
		{name: "too many fields", in: "a,1\n\na,1,2,3\n", wantErr: "line 3: 4 fields"},
		{name: "one field", in: "a\n", wantErr: "line 1: 1 fields"},
		{name: "bad quoting", in: "a,1\n\"a,2\n", wantErr: "line 2"},
		{name: "empty", in: "function,arrival_ms\n", wantErr: "no arrivals"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := ParseTrace(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tr.Arrivals, tt.want) {
				t.Fatalf("arrivals = %+v, want %+v", tr.Arrivals, tt.want)
			}
		})
	}
}

func FuzzParseTrace(f *testing.F) {
	f.Add("function,arrival_ms,duration_ms\na,1,2\n")
	f.Add("a,1e3\n#x\nb,2,\n")
	f.Fuzz(func(t *testing.T, s string) {
		tr, err := ParseTrace(strings.NewReader(s))
		if err != nil {
			return
		}
		for i, a := range tr.Arrivals {
			if a.At < 0 || a.Duration < 0 || (i > 0 && a.At < tr.Arrivals[i-1].At) {
				t.Fatalf("bad arrival %+v", a)
			}
		}
	})
}

func TestSumIdle(t *testing.T) {
	metrics := `# HELP wisp_instances Instances by function and state.
# TYPE wisp_instances gauge
wisp_instances{function="a",state="idle"} 2
wisp_instances{function="a",state="busy"} 5
wisp_instances{function="b",state="idle"} 1
wisp_instances{state="idle",function="c"} 3
wisp_instances{function="other",state="idle"} 100
wisp_instances_total 7
`
	got, err := sumIdle(strings.NewReader(metrics), map[string]bool{"a": true, "b": true, "c": true})
	if err != nil {
		t.Fatal(err)
	}
	if got != 6 {
		t.Fatalf("sumIdle = %v, want 6", got)
	}
}
