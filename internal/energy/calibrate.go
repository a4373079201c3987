package energy

import (
	"fmt"
	"math"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Sample is one calibration point: the node's CPU utilisation over an
// interval and the average power a real counter measured over it.
type Sample struct {
	Utilisation float64 `json:"utilisation"` // [0, 1]
	Watts       float64 `json:"watts"`
}

// Fit is the least-squares line Watts = IdleWatts + (MaxWatts − IdleWatts) × u.
type Fit struct {
	IdleWatts float64 `json:"idle_watts"` // intercept: power at u = 0
	MaxWatts  float64 `json:"max_watts"`  // the line at u = 1
	R2        float64 `json:"r2"`         // coefficient of determination
	RMSE      float64 `json:"rmse_watts"` // root mean square residual
	N         int     `json:"n"`
}

// Config returns the fit as model coefficients for cpus logical CPUs.
func (f Fit) Config(cpus int, source string) ModelConfig {
	return ModelConfig{IdleWatts: f.IdleWatts, MaxWatts: f.MaxWatts, CPUs: cpus, Source: source}
}

// Calibrate fits the model's idle and peak power to samples by ordinary
// least squares. It needs at least two distinct utilisations; for a fit
// that extrapolates well, sample from idle to full load.
func Calibrate(samples []Sample) (Fit, error) {
	n := len(samples)
	if n < 2 {
		return Fit{}, fmt.Errorf("calibrate: %d samples, need at least 2: %w", n, errdefs.ErrInvalid)
	}
	var mu, mw float64
	for i, s := range samples {
		if math.IsNaN(s.Utilisation) || math.IsNaN(s.Watts) || s.Utilisation < 0 || s.Utilisation > 1 || s.Watts < 0 {
			return Fit{}, fmt.Errorf("calibrate: sample %d (u=%g, %g W) out of range: %w", i, s.Utilisation, s.Watts, errdefs.ErrInvalid)
		}
		mu += s.Utilisation
		mw += s.Watts
	}
	mu /= float64(n)
	mw /= float64(n)
	// Centred sums keep the fit accurate when utilisations cluster.
	var sxx, sxy, syy float64
	for _, s := range samples {
		dx, dy := s.Utilisation-mu, s.Watts-mw
		sxx += dx * dx
		sxy += dx * dy
		syy += dy * dy
	}
	if sxx == 0 {
		return Fit{}, fmt.Errorf("calibrate: every sample has utilisation %g; vary the load: %w", mu, errdefs.ErrInvalid)
	}
	slope := sxy / sxx
	icept := mw - slope*mu
	var sse float64
	for _, s := range samples {
		r := s.Watts - (icept + slope*s.Utilisation)
		sse += r * r
	}
	f := Fit{IdleWatts: icept, MaxWatts: icept + slope, RMSE: math.Sqrt(sse / float64(n)), N: n, R2: 1}
	if syy > 0 {
		f.R2 = 1 - sse/syy
	}
	return f, nil
}

// SamplesFrom turns a series of counter readings and /proc/stat samples
// taken at the same instants into calibration samples, one per interval.
func SamplesFrom(readings []Reading, times []CPUTimes) ([]Sample, error) {
	if len(readings) != len(times) {
		return nil, fmt.Errorf("calibration samples: %d readings but %d CPU samples: %w", len(readings), len(times), errdefs.ErrInvalid)
	}
	var out []Sample
	for i := 1; i < len(readings); i++ {
		j, err := Between(readings[i-1], readings[i])
		if err != nil {
			return nil, fmt.Errorf("calibration interval %d: %w", i, err)
		}
		dt := readings[i].Time.Sub(readings[i-1].Time).Seconds()
		u, ok := Utilisation(times[i-1], times[i])
		if dt <= 0 || !ok {
			continue
		}
		out = append(out, Sample{Utilisation: u, Watts: j / dt})
	}
	return out, nil
}
