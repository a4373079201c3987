package function

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written as a Go duration string ("30s",
// "1m30s") or a bare number of seconds in YAML and JSON.
type Duration time.Duration

// ParseDuration parses "30s", "10m", "0" or "1.5" (seconds).
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("duration %q must not be negative", s)
		}
		return Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: write it like 30s, 500ms or 10m", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q must not be negative", s)
	}
	return Duration(d), nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

func (d *Duration) UnmarshalJSON(b []byte) error { return unmarshalScalarJSON(b, d.UnmarshalText) }

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	return atLine(n, d.UnmarshalText([]byte(n.Value)))
}

// Size is a byte count written as "64Mi", "1Gi", "512Ki", "128M" or a bare
// number of bytes.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"K", 1000}, {"k", 1000}, {"M", 1000 * 1000}, {"G", 1000 * 1000 * 1000}, {"T", 1000 * 1000 * 1000 * 1000},
}

// ParseSize parses a Kubernetes-style byte quantity.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	num, mult := s, int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("size %q: write it like 64Mi, 1Gi or 512Ki", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("size %q must not be negative", s)
	}
	v := f * float64(mult)
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(v), nil
}

// String renders the size in the largest binary unit that divides it.
func (z Size) String() string {
	for _, u := range []struct {
		s string
		m int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if int64(z) >= u.m && int64(z)%u.m == 0 {
			return strconv.FormatInt(int64(z)/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(int64(z), 10)
}

func (z Size) MarshalText() ([]byte, error) { return []byte(z.String()), nil }

func (z *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*z = v
	return nil
}

func (z *Size) UnmarshalJSON(b []byte) error { return unmarshalScalarJSON(b, z.UnmarshalText) }

func (z *Size) UnmarshalYAML(n *yaml.Node) error { return atLine(n, z.UnmarshalText([]byte(n.Value))) }

// MilliCPU is a CPU quantity in thousandths of a core, written "500m", "1",
// or "0.5".
type MilliCPU int64

// ParseMilliCPU parses a Kubernetes-style CPU quantity.
func ParseMilliCPU(s string) (MilliCPU, error) {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, "m") {
		n, err := strconv.ParseInt(strings.TrimSuffix(s, "m"), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("cpu %q: write it like 500m (half a core) or 2 (two cores)", s)
		}
		return MilliCPU(n), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsNaN(f) || f > 1e6 {
		return 0, fmt.Errorf("cpu %q: write it like 500m (half a core) or 2 (two cores)", s)
	}
	return MilliCPU(math.Round(f * 1000)), nil
}

func (c MilliCPU) String() string {
	if c%1000 == 0 {
		return strconv.FormatInt(int64(c)/1000, 10)
	}
	return strconv.FormatInt(int64(c), 10) + "m"
}

func (c MilliCPU) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

func (c *MilliCPU) UnmarshalText(b []byte) error {
	v, err := ParseMilliCPU(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

func (c *MilliCPU) UnmarshalJSON(b []byte) error { return unmarshalScalarJSON(b, c.UnmarshalText) }

func (c *MilliCPU) UnmarshalYAML(n *yaml.Node) error {
	return atLine(n, c.UnmarshalText([]byte(n.Value)))
}

// unmarshalScalarJSON accepts both "30s" and 30 in JSON.
func unmarshalScalarJSON(b []byte, text func([]byte) error) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		return text([]byte(s))
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("want a string or a number, got %s", b)
	}
	return text([]byte(n.String()))
}

// LineError is a value error at a line of a YAML document, so that Parse can
// name the field that holds the value.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

func atLine(n *yaml.Node, err error) error {
	if err == nil {
		return nil
	}
	return &LineError{Line: n.Line, Err: err}
}
