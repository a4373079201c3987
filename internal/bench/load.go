// Package bench generates load against deployed functions and summarises
// latency (percentiles, cold/warm split) and throughput. `wisp bench` and
// the integration benchmarks use it; experiments (seed 000) build on it.
package bench

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wisp-faas/wisp/internal/client"
)

// Options describe one load run.
type Options struct {
	Function    string
	Requests    int // total calls
	Concurrency int // calls in flight at once
	Method      string
	// Rate, when positive, paces calls: call i is sent no earlier than
	// i/Rate seconds after the start (calls per second across all workers).
	Rate   float64
	Body   []byte
	Header http.Header
	// Progress, if set, is called after every call with the number done.
	Progress func(done int)
}

// Sample is one call's outcome.
type Sample struct {
	Latency time.Duration
	Status  int
	Cold    bool
	Err     error
}

// Summary aggregates a run.
type Summary struct {
	Function    string        `json:"function"`
	Requests    int           `json:"requests"`
	Concurrency int           `json:"concurrency"`
	Errors      int           `json:"errors"` // transport errors and non-2xx statuses
	Cold        int           `json:"cold"`   // calls served by a cold start
	Elapsed     time.Duration `json:"elapsed_ns"`
	Throughput  float64       `json:"throughput_rps"`
	All         Percentiles   `json:"latency"`
	ColdLatency *Percentiles  `json:"cold_latency,omitempty"`
	WarmLatency *Percentiles  `json:"warm_latency,omitempty"`
	Statuses    map[int]int   `json:"statuses"`
}

// Percentiles of a latency distribution.
type Percentiles struct {
	N    int           `json:"n"`
	Min  time.Duration `json:"min_ns"`
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	Max  time.Duration `json:"max_ns"`
}

// Run drives opts.Requests calls through c with opts.Concurrency workers.
func Run(ctx context.Context, c *client.Client, opts Options) (*Summary, []Sample, error) {
	if opts.Requests <= 0 {
		return nil, nil, fmt.Errorf("requests must be positive, got %d", opts.Requests)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 1
	}
	if opts.Concurrency > opts.Requests {
		opts.Concurrency = opts.Requests
	}
	samples := make([]Sample, opts.Requests)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range opts.Concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= opts.Requests || ctx.Err() != nil {
					return
				}
				if opts.Rate > 0 {
					at := t0.Add(time.Duration(float64(i) / opts.Rate * float64(time.Second)))
					if d := time.Until(at); d > 0 {
						time.Sleep(d)
					}
				}
				t := time.Now()
				res, err := c.Invoke(ctx, opts.Function, opts.Method, "", opts.Header, opts.Body)
				s := Sample{Latency: time.Since(t), Err: err}
				if err == nil {
					s.Status, s.Cold = res.Status, res.Cold
				}
				samples[i] = s
				n := done.Add(1)
				if opts.Progress != nil {
					opts.Progress(int(n))
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return Summarise(opts, samples, elapsed), samples, nil
}

// Summarise computes a Summary from samples.
func Summarise(opts Options, samples []Sample, elapsed time.Duration) *Summary {
	s := &Summary{Function: opts.Function, Requests: len(samples), Concurrency: opts.Concurrency,
		Elapsed: elapsed, Statuses: map[int]int{}}
	var all, cold, warm []time.Duration
	for _, x := range samples {
		if x.Err != nil || x.Status/100 != 2 {
			s.Errors++
		}
		s.Statuses[x.Status]++
		all = append(all, x.Latency)
		if x.Cold {
			s.Cold++
			cold = append(cold, x.Latency)
		} else {
			warm = append(warm, x.Latency)
		}
	}
	if elapsed > 0 {
		s.Throughput = float64(len(samples)) / elapsed.Seconds()
	}
	s.All = Compute(all)
	if len(cold) > 0 {
		p := Compute(cold)
		s.ColdLatency = &p
	}
	if len(warm) > 0 && len(cold) > 0 {
		p := Compute(warm)
		s.WarmLatency = &p
	}
	return s
}

// Compute returns the percentiles of ds (nearest-rank).
func Compute(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Percentiles{
		N:    len(s),
		Min:  s[0],
		Mean: sum / time.Duration(len(s)),
		P50:  Quantile(s, 0.50),
		P90:  Quantile(s, 0.90),
		P99:  Quantile(s, 0.99),
		Max:  s[len(s)-1],
	}
}

// Quantile returns the nearest-rank q-quantile of sorted.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}
