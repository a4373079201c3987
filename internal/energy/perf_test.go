package energy

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/testenv"

	"golang.org/x/sys/unix"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// fakePMU hands out counters whose values the test sets, keyed by event
// config and CPU.
type fakePMU struct {
	mu     sync.Mutex
	typ    uint32
	vals   map[[2]uint64]uint64
	opened map[[2]uint64]int
	fail   map[uint64]error // config -> open error
	closed int
}

func (f *fakePMU) set(config uint64, cpu int, v uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vals == nil {
		f.vals = map[[2]uint64]uint64{}
	}
	f.vals[[2]uint64{config, uint64(cpu)}] = v
}

func (f *fakePMU) open(typ uint32, config uint64, cpu int) (perfCounter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[config]; err != nil {
		return nil, err
	}
	f.typ = typ
	if f.opened == nil {
		f.opened = map[[2]uint64]int{}
	}
	f.opened[[2]uint64{config, uint64(cpu)}]++
	return &fakeCounter{pmu: f, key: [2]uint64{config, uint64(cpu)}}, nil
}

type fakeCounter struct {
	pmu *fakePMU
	key [2]uint64
}

func (c *fakeCounter) Value() (uint64, error) {
	c.pmu.mu.Lock()
	defer c.pmu.mu.Unlock()
	return c.pmu.vals[c.key], nil
}

func (c *fakeCounter) Close() error {
	c.pmu.mu.Lock()
	defer c.pmu.mu.Unlock()
	c.pmu.closed++
	return nil
}

const joulesPerCount = 2.3283064365386962890625e-10 // 2^-32 J

func TestReadPowerPMU(t *testing.T) {
	pmu, err := readPowerPMU(filepath.Join("testdata", "perf-server", "power"))
	if err != nil {
		t.Fatal(err)
	}
	if pmu.typ != 24 {
		t.Errorf("type = %d, want 24", pmu.typ)
	}
	if len(pmu.cpus) != 2 || pmu.cpus[0] != 0 || pmu.cpus[1] != 28 {
		t.Errorf("cpus = %v, want [0 28]", pmu.cpus)
	}
	want := []perfEvent{
		{name: "energy-cores", domain: "cores", config: 1, scale: joulesPerCount, unit: "Joules"},
		{name: "energy-pkg", domain: "pkg", config: 2, scale: joulesPerCount, unit: "Joules"},
		{name: "energy-ram", domain: "ram", config: 3, scale: joulesPerCount, unit: "Joules"},
	}
	if len(pmu.events) != len(want) {
		t.Fatalf("events = %+v, want %+v", pmu.events, want)
	}
	for i, w := range want {
		if pmu.events[i] != w {
			t.Errorf("event %d = %+v, want %+v", i, pmu.events[i], w)
		}
	}
}

func TestReadPerfEventErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		shift uint
		want  string // substring of the error; "" = no error
		cfg   uint64
	}{
		{"hex code", map[string]string{"energy-x": "event=0x05", "energy-x.scale": "1e-6", "energy-x.unit": "Joules"}, 0, "", 5},
		{"decimal code, shifted format", map[string]string{"energy-x": "event=2", "energy-x.scale": "0.5", "energy-x.unit": "Joules"}, 8, "", 2 << 8},
		{"unknown unit", map[string]string{"energy-x": "event=0x02", "energy-x.scale": "1", "energy-x.unit": "mJ"}, 0, `unit "mJ"`, 0},
		{"missing scale", map[string]string{"energy-x": "event=0x02", "energy-x.unit": "Joules"}, 0, "scale", 0},
		{"zero scale", map[string]string{"energy-x": "event=0x02", "energy-x.scale": "0", "energy-x.unit": "Joules"}, 0, "positive", 0},
		{"other term", map[string]string{"energy-x": "event=0x02,umask=0x1", "energy-x.scale": "1", "energy-x.unit": "Joules"}, 0, "unsupported term", 0},
		{"bad code", map[string]string{"energy-x": "event=zz", "energy-x.scale": "1", "energy-x.unit": "Joules"}, 0, "event code", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, c := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, n), []byte(c+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ev, err := readPerfEvent(filepath.Join(dir, "energy-x"), tt.shift)
			if tt.want == "" {
				if err != nil || ev.config != tt.cfg {
					t.Fatalf("got %+v, %v; want config %#x", ev, err, tt.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseCPUList(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"0", []int{0}, false},
		{"0,28\n", []int{0, 28}, false},
		{"0-3,8", []int{0, 1, 2, 3, 8}, false},
		{"", nil, true},
		{"3-1", nil, true},
		{"a", nil, true},
	}
	for _, tt := range tests {
		got, err := parseCPUList(tt.in)
		if (err != nil) != tt.wantErr || (err == nil && !equalInts(got, tt.want)) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v (err %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func FuzzParseCPUList(f *testing.F) {
	for _, s := range []string{"0", "0,28", "0-3,8", "", "-", "1-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 16 {
			return // keep ranges small
		}
		cpus, err := parseCPUList(s)
		if err == nil && len(cpus) == 0 {
			t.Fatalf("parseCPUList(%q): no error and no CPUs", s)
		}
	})
}

func TestParseFormatShift(t *testing.T) {
	tests := []struct {
		in      string
		want    uint
		wantErr bool
	}{
		{"config:0-7", 0, false},
		{"config:8-15", 8, false},
		{"config1:0-7", 0, true},
		{"event", 0, true},
	}
	for _, tt := range tests {
		got, err := parseFormatShift(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseFormatShift(%q) = %d, %v; want %d (err %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPerfServer(t *testing.T) {
	pmu := &fakePMU{}
	const (
		cores, pkg, ram = 1, 2, 3
		oneJ            = 1 << 32 // counts per joule
	)
	// Start values, then the probe moves every counter (ram only on CPU 0).
	for _, c := range []int{0, 28} {
		pmu.set(pkg, c, 100*oneJ)
		pmu.set(cores, c, 50*oneJ)
		pmu.set(ram, c, 10*oneJ)
	}
	opts := Options{
		PerfRoot:    copyFixture(t, "perf-server"),
		ProbeWindow: time.Millisecond,
		openPerf:    pmu.open,
		probeHook: func() {
			pmu.set(pkg, 0, 101*oneJ)
			pmu.set(pkg, 28, 102*oneJ)
			pmu.set(cores, 0, 51*oneJ)
			pmu.set(ram, 0, 11*oneJ)
		},
	}
	p, err := OpenPerf(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if pmu.typ != 24 {
		t.Errorf("opened with type %d, want 24 from the fixture", pmu.typ)
	}
	if len(pmu.opened) != 6 {
		t.Errorf("opened %v, want 3 events × 2 CPUs", pmu.opened)
	}
	// Over the window: pkg +3 J and +4 J, cores +2 J, ram +0.5 J; one count more
	// on pkg cpu 0 to check the scale.
	pmu.set(pkg, 0, 104*oneJ+1)
	pmu.set(pkg, 28, 106*oneJ)
	pmu.set(cores, 0, 53*oneJ)
	pmu.set(ram, 0, 11*oneJ+oneJ/2)
	rd, err := p.Read()
	if err != nil {
		t.Fatal(err)
	}
	wantPkg := 7 + joulesPerCount
	if math.Abs(rd.Domains["pkg"]-wantPkg) > 1e-15 || math.Abs(rd.Domains["cores"]-2) > 1e-12 || math.Abs(rd.Domains["ram"]-0.5) > 1e-12 {
		t.Errorf("domains = %v, want pkg %.12f, cores 2, ram 0.5", rd.Domains, wantPkg)
	}
	if math.Abs(rd.Joules-(wantPkg+0.5)) > 1e-12 {
		t.Errorf("node = %.12f J, want pkg + ram = %.12f", rd.Joules, wantPkg+0.5)
	}
	if d := p.Describe(); !strings.Contains(d, "node = energy-pkg") || !strings.Contains(d, "energy-ram") {
		t.Errorf("Describe() = %q", d)
	}
	// A counter that goes back is an error, never negative energy.
	pmu.set(pkg, 0, 1)
	if _, err := p.Read(); err == nil {
		t.Error("Read after the counter went back: no error")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if pmu.closed != 6 {
		t.Errorf("closed %d counters, want 6", pmu.closed)
	}
}

func TestPerfZeroPsysIsUnusable(t *testing.T) {
	pmu := &fakePMU{}
	_, err := OpenPerf(context.Background(), Options{PerfRoot: copyFixture(t, "perf-vm"), ProbeWindow: time.Millisecond, openPerf: pmu.open})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "energy-psys stayed at 0 counts") {
		t.Fatalf("err = %v, want unavailable because energy-psys stays at 0", err)
	}
	if pmu.closed != 1 {
		t.Errorf("closed %d counters, want the one opened", pmu.closed)
	}
}

func TestPerfFallsBackToPsys(t *testing.T) {
	// pkg opens but stays still; psys counts: the node figure is psys.
	root := copyFixture(t, "perf-server")
	ev := filepath.Join(root, "power", "events")
	for n, c := range map[string]string{"energy-psys": "event=0x05", "energy-psys.scale": "2.3283064365386962890625e-10", "energy-psys.unit": "Joules"} {
		if err := os.WriteFile(filepath.Join(ev, n), []byte(c+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pmu := &fakePMU{}
	p, err := OpenPerf(context.Background(), Options{PerfRoot: root, ProbeWindow: time.Millisecond, openPerf: pmu.open,
		probeHook: func() { pmu.set(5, 0, 1<<32) }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pmu.set(5, 0, 3<<32)
	rd, err := p.Read()
	if err != nil {
		t.Fatal(err)
	}
	if rd.Joules != 2 {
		t.Errorf("node = %g J, want 2 from psys", rd.Joules)
	}
}

func TestPerfOpenDenied(t *testing.T) {
	pmu := &fakePMU{fail: map[uint64]error{1: unix.EACCES, 2: unix.EACCES, 3: unix.EACCES}}
	_, err := OpenPerf(context.Background(), Options{PerfRoot: copyFixture(t, "perf-server"), ProbeWindow: time.Millisecond, openPerf: pmu.open})
	if !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, unix.EACCES) || !strings.Contains(errdefs.Hint(err), "CAP_PERFMON") {
		t.Fatalf("err = %v (hint %q), want unavailable with a CAP_PERFMON hint", err, errdefs.Hint(err))
	}
}

// TestPerfEventOpenSyscall exercises the real perf_event_open and read path
// with a software event every Linux kernel has (cpu-clock on CPU 0), since
// these machines have no power PMU.
func TestPerfEventOpenSyscall(t *testing.T) {
	c, err := openPerfEvent(unix.PERF_TYPE_SOFTWARE, unix.PERF_COUNT_SW_CPU_CLOCK, 0)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENOENT) {
		testenv.Missing(t, "perf_event_open of a software event is refused (%v): run as root, or lower kernel.perf_event_paranoid", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := c.Value()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	b, err := c.Value()
	if err != nil {
		t.Fatal(err)
	}
	// cpu-clock counts nanoseconds: 20 ms of wall time on CPU 0.
	if b <= a {
		t.Errorf("cpu-clock did not advance: %d then %d", a, b)
	}
	t.Logf("cpu-clock advanced %d ns over 20 ms", b-a)
}
