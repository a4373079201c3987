package energy

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func TestParseCPUTimes(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    CPUTimes
		wantErr bool
	}{
		{
			name: "linux 6",
			in:   "cpu  487213 3 247427 972504 10058 7 18147 9 11 12\ncpu0 236626 0 119904 499092 2872 0 8516 0 0 0\ncpu1 250587 0 127522 473411 7185 0 9631 0 0 0\nintr 1 2 3\nctxt 5\n",
			want: CPUTimes{User: 487213, Nice: 3, System: 247427, Idle: 972504, IOWait: 10058, IRQ: 7, SoftIRQ: 18147, Steal: 9, Guest: 11, GuestNice: 12, CPUs: 2},
		},
		{
			name: "old kernel, four fields",
			in:   "cpu 1 2 3 4\ncpu0 1 2 3 4\n",
			want: CPUTimes{User: 1, Nice: 2, System: 3, Idle: 4, CPUs: 1},
		},
		{name: "no cpu line", in: "intr 1\n", wantErr: true},
		{name: "short", in: "cpu 1 2\n", wantErr: true},
		{name: "not a number", in: "cpu 1 2 x 4\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCPUTimes([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Errorf("err = %v, want ErrInvalid", err)
				}
				return
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzParseCPUTimes(f *testing.F) {
	f.Add([]byte("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4\n"))
	f.Add([]byte("cpu 1 2 3\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ct, err := ParseCPUTimes(b)
		if err == nil && ct.CPUs < 0 {
			t.Fatal("negative CPU count")
		}
	})
}

func TestUtilisation(t *testing.T) {
	a := CPUTimes{User: 100, System: 100, Idle: 800}
	tests := []struct {
		name   string
		b      CPUTimes
		want   float64
		wantOK bool
	}{
		{"quarter busy", CPUTimes{User: 200, System: 150, Idle: 1250, Steal: 40}, 150.0 / 600, true},
		{"iowait counts as idle", CPUTimes{User: 100, System: 100, Idle: 800, IOWait: 100}, 0, true},
		{"no tick", a, 0, false},
		{"went back", CPUTimes{User: 50, System: 100, Idle: 900}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Utilisation(a, tt.b)
			if ok != tt.wantOK || math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("got %g, %v; want %g, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
	if d, err := BusyBetween(a, CPUTimes{User: 150, System: 120, IRQ: 5}); err != nil || d != 750*time.Millisecond {
		t.Errorf("BusyBetween = %s, %v; want 750ms (75 ticks)", d, err)
	}
	if _, err := BusyBetween(CPUTimes{User: 5}, CPUTimes{}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("BusyBetween backwards: err = %v, want ErrInvalid", err)
	}
}

func TestModelConfigResolve(t *testing.T) {
	tests := []struct {
		name     string
		in       ModelConfig
		cpus     int
		idle     float64
		max      float64
		source   string
		wantErr  bool
		errMatch string
	}{
		{name: "defaults for 2 CPUs", cpus: 2, idle: 1.48, max: 7.0, source: "Cloud Carbon Footprint"},
		{name: "defaults for 16 CPUs", cpus: 16, idle: 0.74 * 16, max: 56, source: "SPECpower"},
		{name: "configured CPU count wins", in: ModelConfig{CPUs: 4}, cpus: 2, idle: 2.96, max: 14, source: "Cloud Carbon"},
		{name: "explicit", in: ModelConfig{IdleWatts: 30, MaxWatts: 95, Source: "Xeon E-2276G TDP"}, cpus: 12, idle: 30, max: 95, source: "TDP"},
		{name: "explicit, no source", in: ModelConfig{IdleWatts: 1, MaxWatts: 2}, cpus: 1, idle: 1, max: 2, source: "configured"},
		{name: "idle above max", in: ModelConfig{IdleWatts: 9, MaxWatts: 2}, cpus: 1, wantErr: true},
		{name: "no cpus", cpus: 0, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Resolve(tt.cpus)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if math.Abs(got.IdleWatts-tt.idle) > 1e-9 || math.Abs(got.MaxWatts-tt.max) > 1e-9 || !strings.Contains(got.Source, tt.source) {
				t.Errorf("got %+v, want idle %g, max %g, source ~%q", got, tt.idle, tt.max, tt.source)
			}
		})
	}
	c := ModelConfig{IdleWatts: 10, MaxWatts: 50}
	for u, want := range map[float64]float64{0: 10, 0.25: 20, 1: 50, -1: 10, 2: 50} {
		if got := c.Power(u); got != want {
			t.Errorf("Power(%g) = %g, want %g", u, got, want)
		}
	}
}

func TestModelRead(t *testing.T) {
	dir := t.TempDir()
	stat := filepath.Join(dir, "stat")
	write := func(user, system, idle uint64) {
		t.Helper()
		s := "cpu  " + itoa(user) + " 0 " + itoa(system) + " " + itoa(idle) + " 0 0 0 0 0 0\ncpu0 0 0 0 0\ncpu1 0 0 0 0\n"
		if err := os.WriteFile(stat, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 0, 0)
	m, err := OpenModel(Options{ProcStat: stat, now: fakeClock(time.Unix(0, 0), 10*time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	// Defaults for 2 CPUs: 1.48 W idle, 7.0 W peak.
	steps := []struct {
		user, system, idle uint64
		wantJ              float64 // cumulative
	}{
		// 10 s at u = 500/2000 = 0.25: P = 1.48 + 5.52 × 0.25 = 2.86 W -> 28.6 J.
		{300, 200, 1500, 28.6},
		// 10 s with no tick (same file): keeps u = 0.25 -> +28.6 J.
		{300, 200, 1500, 57.2},
		// 10 s fully busy: 7.0 W -> +70 J.
		{1300, 1200, 1500, 127.2},
		// 10 s idle: 1.48 W -> +14.8 J.
		{1300, 1200, 3500, 142.0},
	}
	var prev float64
	for i, s := range steps {
		write(s.user, s.system, s.idle)
		rd, err := m.Read()
		if err != nil {
			t.Fatal(err)
		}
		if rd.Source != KindModel || math.Abs(rd.Joules-s.wantJ) > 1e-9 {
			t.Errorf("step %d: %+v, want %.4f J from model", i, rd, s.wantJ)
		}
		if rd.Joules < prev {
			t.Errorf("step %d: energy went back", i)
		}
		prev = rd.Joules
	}
	if _, err := OpenModel(Options{ProcStat: filepath.Join(dir, "missing")}); err == nil {
		t.Error("OpenModel without /proc/stat: no error")
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
