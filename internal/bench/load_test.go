package bench

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, x := range n {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"median odd", ms(1, 2, 3, 4, 5), 0.5, 3 * time.Millisecond},
		{"median even nearest rank", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of 100", ms(seq(100)...), 0.99, 99 * time.Millisecond},
		{"p90 of 10", ms(seq(10)...), 0.9, 9 * time.Millisecond},
		{"max", ms(1, 2, 3), 1, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Quantile(tt.in, tt.q); got != tt.want {
				t.Fatalf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestSummarise(t *testing.T) {
	samples := []Sample{
		{Latency: 50 * time.Millisecond, Status: 200, Cold: true},
		{Latency: time.Millisecond, Status: 200},
		{Latency: 2 * time.Millisecond, Status: 200},
		{Latency: 3 * time.Millisecond, Status: 502},
	}
	s := Summarise(Options{Function: "f", Concurrency: 1}, samples, time.Second)
	if s.Errors != 1 || s.Cold != 1 || s.Throughput != 4 {
		t.Fatalf("summary = %+v", s)
	}
	if s.ColdLatency.P50 != 50*time.Millisecond || s.WarmLatency.P50 != 2*time.Millisecond {
		t.Fatalf("cold/warm split wrong: %+v %+v", s.ColdLatency, s.WarmLatency)
	}
	if s.Statuses[200] != 3 || s.Statuses[502] != 1 {
		t.Fatalf("statuses = %v", s.Statuses)
	}
}
