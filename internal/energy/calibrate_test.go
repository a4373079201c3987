package energy

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func TestCalibrate(t *testing.T) {
	line := func(idle, max float64, us ...float64) []Sample {
		out := make([]Sample, len(us))
		for i, u := range us {
			out[i] = Sample{Utilisation: u, Watts: idle + (max-idle)*u}
		}
		return out
	}
	// Noise that sums to zero and is orthogonal to u (±0.5 W alternating on
	// symmetric points) leaves the fit exact.
	noisy := line(20, 120, 0, 0, 0.5, 0.5, 1, 1)
	for i := range noisy {
		if i%2 == 0 {
			noisy[i].Watts += 0.5
		} else {
			noisy[i].Watts -= 0.5
		}
	}
	tests := []struct {
		name      string
		samples   []Sample
		idle, max float64
		r2, rmse  float64
		wantErr   bool
	}{
		{name: "exact line", samples: line(1.48, 7.0, 0, 0.1, 0.4, 0.9, 1), idle: 1.48, max: 7.0, r2: 1, rmse: 0},
		{name: "partial range extrapolates", samples: line(35, 95, 0.2, 0.3, 0.45), idle: 35, max: 95, r2: 1, rmse: 0},
		{name: "symmetric noise", samples: noisy, idle: 20, max: 120, r2: 1 - 1.5/(2*50*50*2+1.5), rmse: 0.5},
		{name: "one sample", samples: line(1, 2, 0.5), wantErr: true},
		{name: "one utilisation", samples: line(1, 2, 0.5, 0.5, 0.5), wantErr: true},
		{name: "utilisation out of range", samples: []Sample{{1.5, 10}, {0, 1}}, wantErr: true},
		{name: "negative power", samples: []Sample{{0.5, -1}, {0, 1}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Calibrate(tt.samples)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Errorf("err = %v, want ErrInvalid", err)
				}
				return
			}
			if math.Abs(f.IdleWatts-tt.idle) > 1e-9 || math.Abs(f.MaxWatts-tt.max) > 1e-9 {
				t.Errorf("fit %+v, want idle %g, max %g", f, tt.idle, tt.max)
			}
			if math.Abs(f.R2-tt.r2) > 1e-9 || math.Abs(f.RMSE-tt.rmse) > 1e-9 || f.N != len(tt.samples) {
				t.Errorf("fit %+v, want R² %.12f, RMSE %g, N %d", f, tt.r2, tt.rmse, len(tt.samples))
			}
			c, err := f.Config(4, "calibrated").Resolve(4)
			if err != nil || c.IdleWatts != f.IdleWatts || c.Source != "calibrated" {
				t.Errorf("Config = %+v, %v", c, err)
			}
		})
	}
}

func TestSamplesFrom(t *testing.T) {
	t0 := time.Unix(0, 0)
	rd := func(s float64, j float64) Reading {
		return Reading{Source: KindRAPL, Joules: j, Time: t0.Add(time.Duration(s * float64(time.Second)))}
	}
	readings := []Reading{rd(0, 0), rd(2, 20), rd(4, 60), rd(4, 60)}
	times := []CPUTimes{{Idle: 0}, {User: 100, Idle: 300}, {User: 500, Idle: 300}, {User: 500, Idle: 300}}
	got, err := SamplesFrom(readings, times)
	if err != nil {
		t.Fatal(err)
	}
	// 10 W at u = 0.25, 20 W at u = 1; the empty last interval is skipped.
	want := []Sample{{0.25, 10}, {1, 20}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := SamplesFrom(readings, times[:2]); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("mismatched lengths: err = %v", err)
	}
	f, err := Calibrate(got)
	if err != nil || math.Abs(f.IdleWatts-20.0/3) > 1e-9 || math.Abs(f.MaxWatts-20) > 1e-9 {
		t.Errorf("fit = %+v, %v; want idle 6.667 W, max 20 W", f, err)
	}
}
