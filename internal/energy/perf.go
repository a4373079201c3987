package energy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Perf reads the RAPL counters through perf's "power" PMU. Open it with
// OpenPerf.
type Perf struct {
	dir string
	now func() time.Time

	mu      sync.Mutex // guards events' counters
	events  []*perfOpenEvent
	dropped []string
}

var _ Source = (*Perf)(nil)

// perfEvent is one event of the power PMU as sysfs describes it.
type perfEvent struct {
	name   string  // energy-pkg
	domain string  // pkg
	config uint64  // perf_event_attr.config
	scale  float64 // joules per count, from NAME.scale
	unit   string  // from NAME.unit; must be Joules
}

// perfCounter is one open perf event: a 64-bit count that only grows.
type perfCounter interface {
	Value() (uint64, error)
	Close() error
}

// perfOpener opens a CPU-wide counting event (pid -1) on cpu.
type perfOpener func(typ uint32, config uint64, cpu int) (perfCounter, error)

type perfOpenEvent struct {
	ev      perfEvent
	ctrs    []perfCounter // one per CPU of the PMU's cpumask (one per package)
	wcs     []wrapCounter // max 0: a count that goes back is an error
	inTotal bool
}

// powerPMU is the sysfs description of the power PMU.
type powerPMU struct {
	typ     uint32
	cpus    []int
	events  []perfEvent
	skipped []string // events that could not be decoded, with why
}

// readPowerPMU decodes DIR (…/event_source/devices/power): its type, the
// CPUs to open events on, and each energy-* event with scale and unit.
func readPowerPMU(dir string) (powerPMU, error) {
	var p powerPMU
	ts, err := readTrimmed(filepath.Join(dir, "type"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return p, fmt.Errorf("perf: no power PMU at %s (the kernel's RAPL perf driver is not loaded or the CPU has none): %w", dir, errdefs.ErrUnavailable)
		}
		return p, fmt.Errorf("perf: read power PMU type: %w", err)
	}
	t, err := strconv.ParseUint(ts, 10, 32)
	if err != nil {
		return p, fmt.Errorf("perf: parse %s/type %q: %w", dir, ts, errdefs.ErrInvalid)
	}
	p.typ = uint32(t)
	p.cpus = []int{0}
	if cm, err := readTrimmed(filepath.Join(dir, "cpumask")); err == nil {
		if p.cpus, err = parseCPUList(cm); err != nil {
			return p, fmt.Errorf("perf: %s/cpumask: %w", dir, err)
		}
	}
	shift := uint(0)
	if f, err := readTrimmed(filepath.Join(dir, "format", "event")); err == nil {
		if shift, err = parseFormatShift(f); err != nil {
			return p, fmt.Errorf("perf: %s/format/event: %w", dir, err)
		}
	}
	names, err := filepath.Glob(filepath.Join(dir, "events", "energy-*"))
	if err != nil {
		return p, fmt.Errorf("perf: list events: %w", err)
	}
	sort.Strings(names)
	for _, path := range names {
		name := filepath.Base(path)
		if strings.Contains(name, ".") { // .scale, .unit
			continue
		}
		ev, err := readPerfEvent(path, shift)
		if err != nil {
			p.skipped = append(p.skipped, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		p.events = append(p.events, ev)
	}
	if len(p.events) == 0 {
		return p, fmt.Errorf("perf: power PMU at %s has no usable energy event (%s): %w", dir, strings.Join(p.skipped, "; "), errdefs.ErrUnavailable)
	}
	return p, nil
}

func readPerfEvent(path string, shift uint) (perfEvent, error) {
	name := filepath.Base(path)
	ev := perfEvent{name: name, domain: strings.TrimPrefix(name, "energy-")}
	spec, err := readTrimmed(path)
	if err != nil {
		return ev, err
	}
	found := false
	for _, term := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(term), "=")
		if !ok || k != "event" {
			return ev, fmt.Errorf("unsupported term %q in %q", term, spec)
		}
		code, err := strconv.ParseUint(v, 0, 64)
		if err != nil {
			return ev, fmt.Errorf("parse event code %q: %w", v, err)
		}
		ev.config, found = code<<shift, true
	}
	if !found {
		return ev, fmt.Errorf("no event= term in %q", spec)
	}
	ss, err := readTrimmed(path + ".scale")
	if err != nil {
		return ev, fmt.Errorf("scale: %w", err)
	}
	if ev.scale, err = strconv.ParseFloat(ss, 64); err != nil || ev.scale <= 0 {
		return ev, fmt.Errorf("scale %q is not a positive number", ss)
	}
	if ev.unit, err = readTrimmed(path + ".unit"); err != nil {
		return ev, fmt.Errorf("unit: %w", err)
	}
	if ev.unit != "Joules" {
		return ev, fmt.Errorf("unit %q, want Joules", ev.unit)
	}
	return ev, nil
}

// parseFormatShift reads a format spec such as "config:0-7" and returns the
// first bit.
func parseFormatShift(f string) (uint, error) {
	field, bits, ok := strings.Cut(f, ":")
	if !ok || field != "config" {
		return 0, fmt.Errorf("unsupported format %q: %w", f, errdefs.ErrInvalid)
	}
	lo, _, _ := strings.Cut(bits, "-")
	n, err := strconv.ParseUint(lo, 10, 6)
	if err != nil {
		return 0, fmt.Errorf("unsupported format %q: %w", f, errdefs.ErrInvalid)
	}
	return uint(n), nil
}

// parseCPUList parses the kernel's CPU list format: "0", "0,18", "0-3,8".
func parseCPUList(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("parse CPU list %q: %w", s, errdefs.ErrInvalid)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("parse CPU list %q: %w", s, errdefs.ErrInvalid)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty CPU list: %w", errdefs.ErrInvalid)
	}
	return out, nil
}

// OpenPerf opens every energy event of the power PMU under opts.PerfRoot,
// drops those that do not move over opts.ProbeWindow (a VM's energy-psys
// that opens but reads zero) and returns the source, or why it cannot be
// used.
func OpenPerf(ctx context.Context, opts Options) (*Perf, error) {
	opts = opts.withDefaults()
	dir := filepath.Join(opts.PerfRoot, "power")
	pmu, err := readPowerPMU(dir)
	if err != nil {
		return nil, err
	}
	p := &Perf{dir: dir, now: opts.now}
	p.dropped = append(p.dropped, pmu.skipped...)
	var openErrs []error
	for _, ev := range pmu.events {
		oe := &perfOpenEvent{ev: ev}
		for _, cpu := range pmu.cpus {
			c, err := opts.openPerf(pmu.typ, ev.config, cpu)
			if err != nil {
				openErrs = append(openErrs, fmt.Errorf("%s on cpu %d: %w", ev.name, cpu, err))
				closeAll(oe.ctrs)
				oe = nil
				break
			}
			oe.ctrs = append(oe.ctrs, c)
		}
		if oe != nil {
			oe.wcs = make([]wrapCounter, len(oe.ctrs))
			p.events = append(p.events, oe)
		}
	}
	if len(p.events) == 0 {
		err := fmt.Errorf("perf: open power events: %w", errors.Join(openErrs...))
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return nil, errdefs.WithHint(fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable),
				"CPU-wide perf events need CAP_PERFMON or root (or kernel.perf_event_paranoid ≤ 0)")
		}
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	for _, e := range openErrs {
		p.dropped = append(p.dropped, e.Error())
	}
	first, err := p.rawAll()
	if err != nil {
		p.Close()
		return nil, err
	}
	if opts.probeHook != nil {
		opts.probeHook()
	}
	if err := sleepCtx(ctx, opts.ProbeWindow); err != nil {
		p.Close()
		return nil, fmt.Errorf("probe perf: %w", err)
	}
	second, err := p.rawAll()
	if err != nil {
		p.Close()
		return nil, err
	}
	var kept []*perfOpenEvent
	for i, oe := range p.events {
		if sum(first[i]) == sum(second[i]) {
			p.dropped = append(p.dropped, fmt.Sprintf("%s stayed at %d counts over %s (the event opens but its counter does not move, as on VMs that expose energy-psys)", oe.ev.name, sum(first[i]), opts.ProbeWindow))
			closeAll(oe.ctrs)
			continue
		}
		for j, v := range second[i] {
			if _, err := oe.wcs[j].update(v); err != nil {
				p.Close()
				return nil, fmt.Errorf("perf %s: %w", oe.ev.name, err)
			}
		}
		kept = append(kept, oe)
	}
	p.events = kept
	if !p.chooseTotal() {
		p.Close()
		return nil, errdefs.WithHint(
			fmt.Errorf("perf: no energy-pkg or energy-psys counter works at %s (%s): %w", dir, strings.Join(p.dropped, "; "), errdefs.ErrUnavailable),
			"no working CPU energy counter on this machine; the model source is used instead")
	}
	return p, nil
}

// chooseTotal marks pkg + ram (ram lies outside the package) as the node
// figure, else psys alone. It reports whether any node figure exists.
func (p *Perf) chooseTotal() bool {
	hasPkg := false
	for _, oe := range p.events {
		if oe.ev.domain == "pkg" {
			hasPkg = true
		}
	}
	for _, oe := range p.events {
		if hasPkg {
			oe.inTotal = oe.ev.domain == "pkg" || oe.ev.domain == "ram"
		} else {
			oe.inTotal = oe.ev.domain == "psys"
		}
	}
	for _, oe := range p.events {
		if oe.inTotal {
			return true
		}
	}
	return false
}

func (p *Perf) rawAll() ([][]uint64, error) {
	out := make([][]uint64, len(p.events))
	for i, oe := range p.events {
		out[i] = make([]uint64, len(oe.ctrs))
		for j, c := range oe.ctrs {
			v, err := c.Value()
			if err != nil {
				return nil, fmt.Errorf("perf read %s: %w", oe.ev.name, err)
			}
			out[i][j] = v
		}
	}
	return out, nil
}

func (p *Perf) Kind() Kind { return KindPerf }

// Read returns cumulative joules since OpenPerf.
func (p *Perf) Read() (Reading, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	raw, err := p.rawAll()
	if err != nil {
		return Reading{}, err
	}
	rd := Reading{Source: KindPerf, Domains: make(map[string]float64, len(p.events)), Time: p.now()}
	for i, oe := range p.events {
		var j float64
		for k, v := range raw[i] {
			n, err := oe.wcs[k].update(v)
			if err != nil {
				return Reading{}, fmt.Errorf("perf %s: %w", oe.ev.name, err)
			}
			j += float64(n) * oe.ev.scale
		}
		rd.Domains[oe.ev.domain] = j
		if oe.inTotal {
			rd.Joules += j
		}
	}
	return rd, nil
}

// Describe names the events that make up the node figure and their scale.
func (p *Perf) Describe() string {
	var in, out []string
	for _, oe := range p.events {
		s := fmt.Sprintf("%s (×%g %s, %d CPU)", oe.ev.name, oe.ev.scale, oe.ev.unit, len(oe.ctrs))
		if oe.inTotal {
			in = append(in, s)
		} else {
			out = append(out, s)
		}
	}
	s := fmt.Sprintf("perf: power PMU at %s; node = %s", p.dir, strings.Join(in, " + "))
	if len(out) > 0 {
		s += "; also read (not added): " + strings.Join(out, ", ")
	}
	if len(p.dropped) > 0 {
		s += "; dropped: " + strings.Join(p.dropped, "; ")
	}
	return s + "; covers CPU sockets and DRAM, not the rest of the machine"
}

// Close closes every perf file descriptor.
func (p *Perf) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, oe := range p.events {
		errs = append(errs, closeAll(oe.ctrs))
	}
	p.events = nil
	return errors.Join(errs...)
}

func closeAll(cs []perfCounter) error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

func sum(vs []uint64) uint64 {
	var s uint64
	for _, v := range vs {
		s += v
	}
	return s
}

// perfFD is a counter opened with perf_event_open(2).
type perfFD struct{ fd int }

// openPerfEvent opens a CPU-wide (pid -1) counting event.
func openPerfEvent(typ uint32, config uint64, cpu int) (perfCounter, error) {
	attr := unix.PerfEventAttr{
		Type:   typ,
		Config: config,
		Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
	}
	fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("perf_event_open(type %d, config %#x, cpu %d): %w", typ, config, cpu, err)
	}
	return &perfFD{fd: fd}, nil
}

// Value reads the count: without read_format flags, perf returns one
// native-endian u64.
func (p *perfFD) Value() (uint64, error) {
	var b [8]byte
	n, err := unix.Read(p.fd, b[:])
	if err != nil {
		return 0, fmt.Errorf("read perf counter: %w", err)
	}
	if n != len(b) {
		return 0, fmt.Errorf("read perf counter: got %d bytes, want 8", n)
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

func (p *perfFD) Close() error { return unix.Close(p.fd) }
