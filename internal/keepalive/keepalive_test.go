package keepalive

import (
	"strings"
	"testing"
	"time"
)

// fakeClock is a settable clock for Config.Now.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func join(parts ...[]time.Duration) []time.Duration {
	var out []time.Duration
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestDecide(t *testing.T) {
	m := time.Minute
	var spread []time.Duration // 10m, 11m, ..., 29m: 20 bins of 240
	for i := range 20 {
		spread = append(spread, time.Duration(10+i)*m+30*time.Second)
	}
	var flat []time.Duration // one idle time in every bin: CV 0
	for i := range 240 {
		flat = append(flat, time.Duration(i)*m+time.Second)
	}
	tests := []struct {
		name     string
		cfg      Config
		idle     []time.Duration
		want     Decision
		whyMatch string // substring of Reason when not representative
	}{
		{
			name: "periodic: pre-warm at the head, keep-alive to the tail",
			cfg:  Config{Fallback: 10 * m},
			idle: repeat(10*m+30*time.Second, 20),
			// head bin 10 (10m) -10% = 9m; tail bin 10's upper edge 11m +10% = 12.1m -> 13m.
			want: Decision{PreWarm: 9 * m, KeepAlive: 4 * m, Representative: true},
		},
		{
			name: "spread over 20 bins: 5th and 99th percentiles",
			cfg:  Config{Fallback: 10 * m},
			idle: spread,
			// head rank 1 -> 10m -> 9m; tail rank 20 -> bin 29, upper 30m -> 33m.
			want: Decision{PreWarm: 9 * m, KeepAlive: 24 * m, Representative: true},
		},
		{
			name: "percentiles by rank: 100 samples, 5 early, 1 late",
			cfg:  Config{Fallback: 10 * m},
			idle: join(repeat(2*m, 5), repeat(20*m, 94), repeat(60*m, 1)),
			// 5th pct = rank 5 -> 2m -> 1.8m -> 1m; 99th = rank 99 -> 20m bin, upper 21m -> 23.1m -> 24m.
			want: Decision{PreWarm: m, KeepAlive: 23 * m, Representative: true},
		},
		{
			name: "head in the first bin: keep loaded, no pre-warm",
			cfg:  Config{Fallback: 10 * m},
			idle: repeat(30*time.Second, 10),
			// tail: bin 0's upper edge 1m -> 1.1m -> 2m.
			want: Decision{PreWarm: 0, KeepAlive: 2 * m, Representative: true},
		},
		{
			name: "pre-warm below MinPreWarm is 0",
			cfg:  Config{Fallback: 10 * m, MinPreWarm: 10 * m},
			idle: repeat(5*m, 10),
			want: Decision{PreWarm: 0, KeepAlive: 7 * m, Representative: true},
		},
		{
			name: "no margin",
			cfg:  Config{Fallback: 10 * m, Margin: -1},
			idle: repeat(10*m+30*time.Second, 20),
			want: Decision{PreWarm: 10 * m, KeepAlive: m, Representative: true},
		},
		{
			name: "1-second bins for sub-minute idle times",
			cfg:  Config{Fallback: 10 * m, BinWidth: time.Second},
			idle: repeat(20*time.Second+300*time.Millisecond, 10),
			// head 20s -> 18s; tail upper 21s -> 23.1s -> 24s.
			want: Decision{PreWarm: 18 * time.Second, KeepAlive: 6 * time.Second, Representative: true},
		},
		{
			name:     "too few samples: fixed fallback",
			cfg:      Config{Fallback: 10 * m},
			idle:     repeat(10*m, 4),
			want:     Decision{KeepAlive: 10 * m},
			whyMatch: "fewer than 5",
		},
		{
			name:     "no samples at all",
			cfg:      Config{Fallback: 7 * m},
			want:     Decision{KeepAlive: 7 * m},
			whyMatch: "0 idle times",
		},
		{
			name:     "flat histogram (CV 0): fixed fallback",
			cfg:      Config{Fallback: 10 * m},
			idle:     flat,
			want:     Decision{KeepAlive: 10 * m},
			whyMatch: "coefficient of variation",
		},
		{
			name:     "fallback 0 stays 0",
			cfg:      Config{},
			idle:     flat,
			want:     Decision{KeepAlive: 0},
			whyMatch: "coefficient of variation",
		},
		{
			name:     "most idle times out of range: fixed fallback",
			cfg:      Config{Fallback: 10 * m},
			idle:     join(repeat(5*time.Hour, 6), repeat(10*m, 4)),
			want:     Decision{KeepAlive: 10 * m},
			whyMatch: "longer than the histogram's range",
		},
		{
			name: "a few out of range: the tail is the whole range",
			cfg:  Config{Fallback: 10 * m},
			idle: join(repeat(10*m, 8), repeat(5*time.Hour, 2)),
			// tail rank 10 is out of range -> Range (4h); head 10m -> 9m.
			want: Decision{PreWarm: 9 * m, KeepAlive: 4*time.Hour - 9*m, Representative: true},
		},
		{
			name: "tail plus margin is capped at the range",
			cfg:  Config{Fallback: 10 * m, Range: time.Hour},
			idle: repeat(59*m, 10),
			// tail upper 60m -> 66m, capped at 1h; head 59m -> 53.1m -> 53m.
			want: Decision{PreWarm: 53 * m, KeepAlive: 7 * m, Representative: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(tt.cfg)
			for _, d := range tt.idle {
				p.Observe(d)
			}
			got := p.Decide()
			why := got.Reason
			got.Reason = ""
			if got != tt.want {
				t.Fatalf("Decide() = %+v, want %+v (reason %q, stats %+v)", got, tt.want, why, p.Stats())
			}
			if !got.Representative && !strings.Contains(why, tt.whyMatch) {
				t.Fatalf("reason %q does not mention %q", why, tt.whyMatch)
			}
			if got.Representative && why != "" {
				t.Fatalf("representative decision has a reason: %q", why)
			}
		})
	}
}

// Idle times land in the bin whose lower edge is at or below them; one equal
// to the range is out of it.
func TestBinEdges(t *testing.T) {
	m := time.Minute
	tests := []struct {
		name      string
		idle      time.Duration
		wantBin   int // -1: out of range
		wantLower time.Duration
	}{
		{"zero", 0, 0, 0},
		{"negative clamps to zero", -time.Second, 0, 0},
		{"just below an edge", m - time.Nanosecond, 0, 0},
		{"on an edge", m, 1, m},
		{"just above an edge", m + time.Nanosecond, 1, m},
		{"last bin", 4*time.Hour - time.Nanosecond, 239, 239 * m},
		{"equal to the range", 4 * time.Hour, -1, 0},
		{"beyond the range", 5 * time.Hour, -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{})
			p.Observe(tt.idle)
			st := p.Stats()
			if tt.wantBin < 0 {
				if st.OutOfRange != 1 {
					t.Fatalf("stats %+v, want 1 out of range", st)
				}
				return
			}
			if st.OutOfRange != 0 || len(p.keys) != 1 || p.keys[0] != tt.wantBin {
				t.Fatalf("bins %v, stats %+v; want bin %d", p.keys, st, tt.wantBin)
			}
			if got := p.percentileLocked(50, false); got != tt.wantLower {
				t.Fatalf("lower edge %s, want %s", got, tt.wantLower)
			}
			if got := p.percentileLocked(50, true); got != tt.wantLower+m {
				t.Fatalf("upper edge %s, want %s", got, tt.wantLower+m)
			}
		})
	}
}

// Arrive and Finish measure idle times from the end of the last call that
// left the function idle to the next arrival, on the injected clock.
func TestArriveFinishMeasuresIdleTimes(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := New(Config{BinWidth: time.Second, Fallback: time.Minute, Now: clk.Now})

	type step struct {
		op       string // "arrive" or "finish"
		advance  time.Duration
		wantIdle time.Duration
		wantOK   bool // arrive: an idle time was recorded; finish: the function is idle
	}
	steps := []step{
		{op: "arrive", wantOK: false},                                 // first call ever: no idle time
		{op: "finish", advance: 100 * time.Millisecond, wantOK: true}, // idle from here
		{op: "arrive", advance: 20 * time.Second, wantIdle: 20 * time.Second, wantOK: true},
		{op: "arrive", advance: time.Second, wantOK: false}, // overlapping call: not idle
		{op: "finish", advance: time.Second, wantOK: false}, // one still in flight
		{op: "finish", advance: time.Second, wantOK: true},
		{op: "arrive", advance: 15 * time.Second, wantIdle: 15 * time.Second, wantOK: true},
		{op: "finish", wantOK: true},
	}
	for n, s := range steps {
		clk.Advance(s.advance)
		switch s.op {
		case "arrive":
			idle, ok := p.Arrive()
			if ok != s.wantOK || idle != s.wantIdle {
				t.Fatalf("step %d: Arrive() = %s, %v; want %s, %v", n, idle, ok, s.wantIdle, s.wantOK)
			}
		case "finish":
			if _, idle := p.Finish(); idle != s.wantOK {
				t.Fatalf("step %d: Finish() idle = %v, want %v", n, idle, s.wantOK)
			}
		}
	}
	if st := p.Stats(); st.Samples != 2 {
		t.Fatalf("samples = %d, want 2", st.Samples)
	}
	// Three more 20 s idle times make it representative.
	for range 3 {
		clk.Advance(20 * time.Second)
		p.Arrive()
		p.Finish()
	}
	d := p.Decide()
	// Head (5th pct, rank 1) is the 15 s bin -> 13.5 s -> 13 s; tail (rank 5)
	// is the 20 s bin, upper edge 21 s -> 23.1 s -> 24 s.
	want := Decision{PreWarm: 13 * time.Second, KeepAlive: 11 * time.Second, Representative: true}
	if d != want {
		t.Fatalf("Decide() = %+v, want %+v", d, want)
	}
}

func TestSetFallback(t *testing.T) {
	p := New(Config{Fallback: time.Minute})
	p.SetFallback(3 * time.Minute)
	if d := p.Decide(); d.KeepAlive != 3*time.Minute || d.Representative {
		t.Fatalf("Decide() = %+v, want the new fallback", d)
	}
}

func TestCV(t *testing.T) {
	tests := []struct {
		name string
		idle []time.Duration
		want float64
	}{
		{"empty", nil, 0},
		// one bin of N=240 holds everything: CV = sqrt(N-1).
		{"one bin", repeat(time.Minute, 7), 15.4596},
		// spread over k=20 bins evenly: CV = sqrt(N/k - 1) = sqrt(11).
		{"20 bins", func() []time.Duration {
			var out []time.Duration
			for i := range 20 {
				out = append(out, time.Duration(i)*time.Minute)
			}
			return out
		}(), 3.3166},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{})
			for _, d := range tt.idle {
				p.Observe(d)
			}
			if got := p.Stats().CV; got < tt.want-0.001 || got > tt.want+0.001 {
				t.Fatalf("CV = %.4f, want %.4f", got, tt.want)
			}
		})
	}
}
