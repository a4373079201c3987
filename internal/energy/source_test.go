package energy

import (
	"context"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func TestWrapCounter(t *testing.T) {
	tests := []struct {
		name    string
		max     uint64
		raws    []uint64
		want    uint64 // total after the last raw
		wantErr bool
	}{
		{"first value is the baseline", 1000, []uint64{700}, 0, false},
		{"monotonic", 1000, []uint64{100, 250, 900}, 800, false},
		{"unchanged", 1000, []uint64{5, 5, 5}, 0, false},
		// 900 -> max 1000 is 100, then 0 -> 50 is 50.
		{"one wrap", 1000, []uint64{900, 50}, 150, false},
		{"wrap to exactly zero", 1000, []uint64{990, 0}, 10, false},
		{"wrap then go on", 1000, []uint64{100, 900, 20, 500}, 800 + 120 + 480, false},
		{"several wraps over many reads", 10, []uint64{8, 2, 9, 1, 5}, 4 + 7 + 2 + 4, false},
		{"full 64-bit range without wrap", 0, []uint64{0, math.MaxUint64 - 1}, math.MaxUint64 - 1, false},
		{"back without a known range", 0, []uint64{100, 50}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := wrapCounter{max: tt.max}
			var (
				got  uint64
				err  error
				prev uint64
			)
			for _, r := range tt.raws {
				got, err = c.update(r)
				if err != nil {
					break
				}
				if got < prev {
					t.Fatalf("total went back from %d to %d", prev, got)
				}
				prev = got
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("total = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestBetween(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name    string
		a, b    Reading
		want    float64
		wantErr bool
	}{
		{"ok", Reading{Source: KindRAPL, Joules: 10, Time: t0}, Reading{Source: KindRAPL, Joules: 25.5, Time: t0.Add(time.Second)}, 15.5, false},
		{"mixed sources", Reading{Source: KindRAPL, Time: t0}, Reading{Source: KindModel, Time: t0}, 0, true},
		{"reversed in time", Reading{Source: KindPerf, Time: t0.Add(time.Second)}, Reading{Source: KindPerf, Time: t0}, 0, true},
		{"counter back", Reading{Source: KindPerf, Joules: 5, Time: t0}, Reading{Source: KindPerf, Joules: 4, Time: t0}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Between(tt.a, tt.b)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
			if got != tt.want {
				t.Errorf("got %g, want %g", got, tt.want)
			}
		})
	}
}

// copyFixture copies testdata/NAME into a temporary directory the test may
// change, and returns its path.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join("testdata", name)
	dst := filepath.Join(t.TempDir(), name)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func writeUint(t *testing.T, path string, v uint64) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strconv.FormatUint(v, 10)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeClock returns a clock that advances by step on every call.
func fakeClock(start time.Time, step time.Duration) func() time.Time {
	now := start
	return func() time.Time {
		now = now.Add(step)
		return now
	}
}

func TestRAPLServer(t *testing.T) {
	root := copyFixture(t, "powercap-server")
	zone := func(id string) string { return filepath.Join(root, id, "energy_uj") }
	// Values at the two probe reads: the first is in the fixture.
	set := func(pkg0, dram0, pkg1, dram1 uint64) {
		writeUint(t, zone("intel-rapl:0"), pkg0)
		writeUint(t, zone("intel-rapl:0:0"), dram0)
		writeUint(t, zone("intel-rapl:1"), pkg1)
		writeUint(t, zone("intel-rapl:1:0"), dram1)
	}
	opts := Options{
		PowercapRoot: root,
		ProbeWindow:  time.Millisecond,
		now:          fakeClock(time.Unix(0, 0), time.Second),
		probeHook:    func() { set(110_000_000, 21_000_000, 105_000_001, 20_500_001) },
	}
	r, err := OpenRAPL(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rd, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	if rd.Joules != 0 || rd.Source != KindRAPL {
		t.Fatalf("first read = %+v, want 0 J from rapl", rd)
	}
	// package-0 wraps: from 110 J up to the 262143.328850 J range, then 2 J.
	const max0 = 262143328850
	set(2_000_000, 21_000_000+3_000_000, 105_000_001+7_000_000, 20_500_001+1_000_000)
	rd, err = r.Read()
	if err != nil {
		t.Fatal(err)
	}
	wantPkg0 := float64(max0-110_000_000+2_000_000) / 1e6
	want := map[string]float64{"package-0": wantPkg0, "package-0/dram": 3, "package-1": 7, "package-1/dram": 1}
	for d, w := range want {
		if got := rd.Domains[d]; math.Abs(got-w) > 1e-9 {
			t.Errorf("domain %s = %.6f J, want %.6f", d, got, w)
		}
	}
	if got, w := rd.Joules, wantPkg0+3+7+1; math.Abs(got-w) > 1e-6 {
		t.Errorf("node = %.6f J, want %.6f (packages + dram)", got, w)
	}
	desc := r.Describe()
	for _, s := range []string{"package-0 + package-0/dram + package-1 + package-1/dram", root} {
		if !strings.Contains(desc, s) {
			t.Errorf("Describe() = %q, want it to contain %q", desc, s)
		}
	}
}

func TestRAPLLaptop(t *testing.T) {
	root := copyFixture(t, "powercap-laptop")
	zone := func(id string) string { return filepath.Join(root, id, "energy_uj") }
	opts := Options{
		PowercapRoot: root,
		ProbeWindow:  time.Millisecond,
		probeHook: func() {
			writeUint(t, zone("intel-rapl:0"), 6_000_000)
			writeUint(t, zone("intel-rapl:0:0"), 3_500_000)
			writeUint(t, zone("intel-rapl:0:1"), 100_000) // uncore idle: stays, gets dropped
			writeUint(t, zone("intel-rapl:1"), 11_000_000)
		},
	}
	r, err := OpenRAPL(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	writeUint(t, zone("intel-rapl:0"), 8_000_000)
	writeUint(t, zone("intel-rapl:0:0"), 4_500_000)
	writeUint(t, zone("intel-rapl:1"), 15_000_000)
	rd, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	// Node = package only: core is inside it, psys would count it twice.
	if math.Abs(rd.Joules-2) > 1e-9 {
		t.Errorf("node = %g J, want 2 (package-0 only)", rd.Joules)
	}
	if math.Abs(rd.Domains["package-0/core"]-1) > 1e-9 || math.Abs(rd.Domains["psys"]-4) > 1e-9 {
		t.Errorf("domains = %v, want core 1 J and psys 4 J", rd.Domains)
	}
	if _, ok := rd.Domains["package-0/uncore"]; ok {
		t.Errorf("uncore did not move during the probe and should be dropped: %v", rd.Domains)
	}
	if !strings.Contains(r.Describe(), "intel-rapl:0:1 (package-0/uncore) stayed") {
		t.Errorf("Describe() = %q, want the dropped uncore zone named", r.Describe())
	}
}

func TestRAPLPsysOnly(t *testing.T) {
	root := copyFixture(t, "powercap-laptop")
	for _, id := range []string{"intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1"} {
		if err := os.RemoveAll(filepath.Join(root, id)); err != nil {
			t.Fatal(err)
		}
	}
	opts := Options{PowercapRoot: root, ProbeWindow: time.Millisecond, probeHook: func() {
		writeUint(t, filepath.Join(root, "intel-rapl:1", "energy_uj"), 9_500_000)
	}}
	r, err := OpenRAPL(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	writeUint(t, filepath.Join(root, "intel-rapl:1", "energy_uj"), 10_000_000)
	rd, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(rd.Joules-0.5) > 1e-9 {
		t.Errorf("node = %g J, want 0.5 from psys", rd.Joules)
	}
}

func TestRAPLUnavailable(t *testing.T) {
	stuck := copyFixture(t, "powercap-server") // counters never move
	tests := []struct {
		name string
		root string
		want string
	}{
		{"no powercap tree", filepath.Join(t.TempDir(), "missing"), "no intel-rapl zones"},
		{"empty tree", t.TempDir(), "no intel-rapl zones"},
		{"counters stay still", stuck, "no counter under"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := OpenRAPL(context.Background(), Options{PowercapRoot: tt.root, ProbeWindow: time.Millisecond})
			if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrUnavailable mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRAPLBadCounter(t *testing.T) {
	root := copyFixture(t, "powercap-server")
	if err := os.WriteFile(filepath.Join(root, "intel-rapl:1", "energy_uj"), []byte("lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenRAPL(context.Background(), Options{PowercapRoot: root, ProbeWindow: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "intel-rapl:1") {
		t.Fatalf("err = %v, want a parse error naming the zone", err)
	}
}

func TestSourcesFallBackToModel(t *testing.T) {
	dir := t.TempDir()
	stat := filepath.Join(dir, "stat")
	if err := os.WriteFile(stat, []byte("cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{
		PowercapRoot: filepath.Join(dir, "none"),
		PerfRoot:     copyFixture(t, "perf-vm"),
		ProcStat:     stat,
		ProbeWindow:  time.Millisecond,
		openPerf:     (&fakePMU{}).open, // every counter reads 0
	}
	src, skipped, err := Best(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Kind() != KindModel {
		t.Fatalf("best = %s, want model", src.Kind())
	}
	if len(skipped) != 2 || skipped[0].Kind != KindRAPL || skipped[1].Kind != KindPerf {
		t.Fatalf("skipped = %v, want rapl and perf", skipped)
	}
	if !strings.Contains(skipped[1].String(), "energy-psys stayed at 0") {
		t.Errorf("perf reason = %q, want the zero psys counter named", skipped[1])
	}
	if d := src.Describe(); !strings.Contains(d, "1.48 W") || !strings.Contains(d, "7 W") || !strings.Contains(d, "cloudcarbonfootprint") {
		t.Errorf("Describe() = %q, want coefficients (1.48 W, 7 W for 2 CPUs) and their source", d)
	}
}

func TestSourcesPrefersCounters(t *testing.T) {
	root := copyFixture(t, "powercap-laptop")
	stat := filepath.Join(t.TempDir(), "stat")
	if err := os.WriteFile(stat, []byte("cpu 1 0 1 8 0 0 0 0 0 0\ncpu0 1 0 1 8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{
		PowercapRoot: root,
		PerfRoot:     t.TempDir(),
		ProcStat:     stat,
		ProbeWindow:  time.Millisecond,
		probeHook: func() {
			writeUint(t, filepath.Join(root, "intel-rapl:0", "energy_uj"), 5_000_001)
		},
	}
	srcs, skipped := Sources(context.Background(), opts)
	if len(srcs) != 2 || srcs[0].Kind() != KindRAPL || srcs[1].Kind() != KindModel {
		t.Fatalf("sources = %v, want rapl then model", srcs)
	}
	if len(skipped) != 1 || skipped[0].Kind != KindPerf || !strings.Contains(skipped[0].Reason.Error(), "no power PMU") {
		t.Fatalf("skipped = %v, want perf: no power PMU", skipped)
	}
}

// TestProbeThisMachine records what the real machine offers. It asserts
// only that discovery returns something usable.
func TestProbeThisMachine(t *testing.T) {
	srcs, skipped := Sources(context.Background(), Options{ProbeWindow: 100 * time.Millisecond})
	for _, u := range skipped {
		t.Logf("unavailable: %s", u)
	}
	if len(srcs) == 0 {
		t.Fatal("no energy source at all, not even the model")
	}
	for _, s := range srcs {
		rd, err := s.Read()
		if err != nil {
			t.Errorf("%s: %v", s.Kind(), err)
		}
		t.Logf("usable: %s; reading %.6f J", s.Describe(), rd.Joules)
		s.Close()
	}
}
