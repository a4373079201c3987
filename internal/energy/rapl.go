package energy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// RAPL reads the powercap sysfs tree. Open it with OpenRAPL.
type RAPL struct {
	root string
	now  func() time.Time

	mu      sync.Mutex // guards zones' counters
	zones   []*raplZone
	dropped []string // zones left out by the probe, with why
}

var _ Source = (*RAPL)(nil)

type raplZone struct {
	dir     string // e.g. ROOT/intel-rapl:0:1
	id      string // intel-rapl:0:1
	domain  string // package-0/dram
	name    string // dram
	inTotal bool   // counted in the node figure
	ctr     wrapCounter
}

// OpenRAPL finds every intel-rapl zone under opts.PowercapRoot, checks that
// the counters can be read and move over opts.ProbeWindow, and returns the
// source. Its error says why RAPL cannot be used here.
func OpenRAPL(ctx context.Context, opts Options) (*RAPL, error) {
	opts = opts.withDefaults()
	r := &RAPL{root: opts.PowercapRoot, now: opts.now}
	if err := r.discover(); err != nil {
		return nil, err
	}
	first, err := r.rawAll()
	if err != nil {
		return nil, err
	}
	if opts.probeHook != nil {
		opts.probeHook()
	}
	if err := sleepCtx(ctx, opts.ProbeWindow); err != nil {
		return nil, fmt.Errorf("probe rapl: %w", err)
	}
	second, err := r.rawAll()
	if err != nil {
		return nil, err
	}
	var (
		kept    []*raplZone
		keptRaw []uint64
	)
	for i, z := range r.zones {
		if first[i] == second[i] {
			r.dropped = append(r.dropped, fmt.Sprintf("%s (%s) stayed at %d µJ over %s", z.id, z.domain, first[i], opts.ProbeWindow))
			continue
		}
		kept, keptRaw = append(kept, z), append(keptRaw, second[i])
	}
	if len(kept) == 0 {
		return nil, errdefs.WithHint(
			fmt.Errorf("rapl: no counter under %s moved over %s: %s: %w", r.root, opts.ProbeWindow, strings.Join(r.dropped, "; "), errdefs.ErrUnavailable),
			"the machine exposes RAPL zones without working counters (common in VMs); the perf or model source is used instead")
	}
	r.zones = kept
	r.chooseTotal()
	for i, z := range r.zones {
		// The baseline: energy is counted from here.
		if _, err := z.ctr.update(keptRaw[i]); err != nil {
			return nil, fmt.Errorf("rapl %s: %w", z.id, err)
		}
	}
	return r, nil
}

func (r *RAPL) discover() error {
	dirs, err := filepath.Glob(filepath.Join(r.root, "intel-rapl:*"))
	if err != nil {
		return fmt.Errorf("rapl: list %s: %w", r.root, err)
	}
	if len(dirs) == 0 {
		return fmt.Errorf("rapl: no intel-rapl zones under %s (no RAPL driver, or not exposed to this machine): %w", r.root, errdefs.ErrUnavailable)
	}
	sort.Strings(dirs) // intel-rapl:0 before intel-rapl:0:0: parents first
	names := map[string]string{}
	for _, dir := range dirs {
		id := filepath.Base(dir)
		parts := strings.Split(id, ":")
		if len(parts) < 2 || len(parts) > 3 {
			continue
		}
		name, err := readTrimmed(filepath.Join(dir, "name"))
		if err != nil {
			return fmt.Errorf("rapl zone %s: %w", id, err)
		}
		names[id] = name
		z := &raplZone{dir: dir, id: id, name: name, domain: name}
		if len(parts) == 3 {
			parent := parts[0] + ":" + parts[1]
			pn, ok := names[parent]
			if !ok {
				pn = parent
			}
			z.domain = pn + "/" + name
		}
		if max, err := readUint(filepath.Join(dir, "max_energy_range_uj")); err == nil {
			z.ctr.max = max
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rapl zone %s: %w", id, err)
		}
		r.zones = append(r.zones, z)
	}
	if len(r.zones) == 0 {
		return fmt.Errorf("rapl: no usable intel-rapl zone names under %s: %w", r.root, errdefs.ErrUnavailable)
	}
	return nil
}

// chooseTotal marks the zones whose sum is the node figure: package zones
// plus dram zones (DRAM is outside the package domain); else psys alone;
// else every top-level zone.
func (r *RAPL) chooseTotal() {
	var n int
	for _, z := range r.zones {
		top := strings.Count(z.id, ":") == 1
		z.inTotal = (top && strings.HasPrefix(z.name, "package")) || z.name == "dram"
		if z.inTotal {
			n++
		}
	}
	if n > 0 {
		return
	}
	for _, z := range r.zones {
		if z.name == "psys" && strings.Count(z.id, ":") == 1 {
			z.inTotal = true
			return
		}
	}
	for _, z := range r.zones {
		z.inTotal = strings.Count(z.id, ":") == 1
	}
}

func (r *RAPL) rawAll() ([]uint64, error) {
	out := make([]uint64, len(r.zones))
	for i, z := range r.zones {
		v, err := readUint(filepath.Join(z.dir, "energy_uj"))
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				return nil, errdefs.WithHint(fmt.Errorf("rapl zone %s: %w: %w", z.id, err, errdefs.ErrUnavailable),
					"energy_uj is readable by root only since Linux 5.10; run wisp as root or grant read access to "+filepath.Join(z.dir, "energy_uj"))
			}
			return nil, fmt.Errorf("rapl zone %s: %w", z.id, err)
		}
		out[i] = v
	}
	return out, nil
}

func (r *RAPL) Kind() Kind { return KindRAPL }

// Read returns cumulative joules since OpenRAPL, wraparounds folded in.
func (r *RAPL) Read() (Reading, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	raw, err := r.rawAll()
	if err != nil {
		return Reading{}, err
	}
	rd := Reading{Source: KindRAPL, Domains: make(map[string]float64, len(r.zones)), Time: r.now()}
	var total uint64
	for i, z := range r.zones {
		uj, err := z.ctr.update(raw[i])
		if err != nil {
			return Reading{}, fmt.Errorf("rapl zone %s: %w", z.id, err)
		}
		rd.Domains[z.domain] = float64(uj) / 1e6
		if z.inTotal {
			total += uj
		}
	}
	rd.Joules = float64(total) / 1e6
	return rd, nil
}

// Describe names the zones that make up the node figure.
func (r *RAPL) Describe() string {
	var in, out []string
	for _, z := range r.zones {
		if z.inTotal {
			in = append(in, z.domain)
		} else {
			out = append(out, z.domain)
		}
	}
	s := fmt.Sprintf("rapl: powercap counters under %s; node = %s", r.root, strings.Join(in, " + "))
	if len(out) > 0 {
		s += "; also read (inside the above, not added): " + strings.Join(out, ", ")
	}
	if len(r.dropped) > 0 {
		s += "; dropped: " + strings.Join(r.dropped, "; ")
	}
	return s + "; covers CPU sockets and DRAM, not the rest of the machine"
}

func (r *RAPL) Close() error { return nil }

func readTrimmed(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func readUint(path string) (uint64, error) {
	s, err := readTrimmed(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return v, nil
}
