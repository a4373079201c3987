package store

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// topKeys returns the keys of the JSON object v, in order.
func topKeys(t *testing.T, v []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(v))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", v)
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// full is an Activation with every field set.
func full() Activation {
	return Activation{
		ID: NewActivationID(), Namespace: "team-a", Function: "hello.team-a", Version: 7,
		Status: StatusError, StatusCode: 500, ColdStart: true, InstanceID: "hello-3",
		Start:      time.Date(2026, 11, 23, 6, 30, 1, 123456789, time.FixedZone("x", 3600)),
		DurationMs: 1.25, EnergyJ: 0.0003, EnergySource: "model", CacheHit: true,
		Parent: NewActivationID(), State: "failed", Attempts: 3, Source: "cron:nightly",
		Children: []string{"a", "b"}, Timings: map[string]float64{"run": 0.5, "queue": 1e-7, "cold_start": 12},
		Error: "boom", Hint: "fix it", Logs: "line 1\nline 2\n", LogsTruncated: true,
		Result: []byte{0, 1, 2, 250}, ResultTruncated: true, RequestBytes: 12, ResponseBytes: 1 << 40,
	}
}

// TestActivationJSON holds appendJSON to json.Marshal: the same document
// once decoded, the same keys in the same order.
func TestActivationJSON(t *testing.T) {
	f := full()
	for _, tc := range []struct {
		name string
		a    Activation
	}{
		{"empty", Activation{}},
		{"minimal", Activation{ID: "x", Function: "f", Status: StatusSuccess, StatusCode: 200}},
		{"every field", f},
		{"zero time", Activation{ID: "x", Function: "f", Start: time.Time{}}},
		{"strange strings", Activation{
			ID: "\x00\x01\x1f", Function: "we\"ird\\name</script>&", Error: "\b\f\n\r\t\x7f",
			Logs: "bad utf-8 \xff\xfe, \u2028 and \u2029, ünïcödé, 🚀", Hint: strings.Repeat("é", 100),
		}},
		{"big numbers", Activation{ID: "x", DurationMs: 1e21, EnergyJ: -123456789.125, Version: math.MaxInt64,
			Timings: map[string]float64{"a": 5e-324, "b": math.MaxFloat64, "c": 0}}},
		{"empty non-nil collections", Activation{ID: "x", Children: []string{}, Timings: map[string]float64{}, Result: []byte{}}},
		{"many timings", Activation{ID: "x", Timings: map[string]float64{
			"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9, "j": 10}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.a.appendJSON(nil)
			if !json.Valid(got) {
				t.Fatalf("invalid JSON: %s", got)
			}
			want, err := json.Marshal(&tc.a)
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("decoded documents differ:\n got %s\nwant %s", got, want)
			}
			if gk, wk := topKeys(t, got), topKeys(t, want); !reflect.DeepEqual(gk, wk) {
				t.Errorf("keys %v, json.Marshal's %v", gk, wk)
			}
			var back Activation
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if !back.Start.Equal(tc.a.Start) {
				t.Errorf("start %v, want %v", back.Start, tc.a.Start)
			}
		})
	}

	// Every field of Activation is written when set: a new field must be
	// added to appendJSON.
	keys := topKeys(t, f.appendJSON(nil))
	typ := reflect.TypeOf(f)
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if !strings.Contains(strings.Join(keys, " ")+" ", name+" ") {
			t.Errorf("field %s (%q) is missing from appendJSON's output (set it in full() too)", typ.Field(i).Name, name)
		}
	}
	if r := reflect.ValueOf(f); true {
		for i := range r.NumField() {
			if r.Field(i).IsZero() {
				t.Errorf("full() leaves %s unset", typ.Field(i).Name)
			}
		}
	}
}

// A start outside the years json.Unmarshal takes (0-9999) is stored as the
// zero time, so the record (and every list page that reaches it) stays
// readable.
func TestActivationJSONYearRange(t *testing.T) {
	for _, start := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC),
	} {
		a := Activation{ID: "x", Function: "f", Start: start}
		var back Activation
		if err := json.Unmarshal(a.appendJSON(nil), &back); err != nil {
			t.Fatalf("start %v: %v", start, err)
		}
		if !back.Start.IsZero() || back.Function != "f" {
			t.Errorf("start %v: decoded %+v", start, back)
		}
	}
}

// NaN and infinities, which json.Marshal refuses, are stored as 0.
func TestActivationJSONNonFinite(t *testing.T) {
	a := Activation{ID: "x", DurationMs: math.NaN(), EnergyJ: math.Inf(-1), Timings: map[string]float64{"run": math.Inf(1), "queue": 2}}
	var back Activation
	if err := json.Unmarshal(a.appendJSON(nil), &back); err != nil {
		t.Fatal(err)
	}
	if back.DurationMs != 0 || back.EnergyJ != 0 || back.Timings["run"] != 0 || back.Timings["queue"] != 2 {
		t.Fatalf("got %+v", back)
	}
}

// appendString writes exactly what json.Marshal writes for a string.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "\"\\/", "\x00\x1f\x7f", "<>&", "\u2028\u2029", "\xff", "é\xc3", "🚀\xf0\x9f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendString(%q) = %s, json.Marshal: %s", s, got, want)
		}
	})
}

func BenchmarkActivationEncode(b *testing.B) {
	a := Activation{ID: NewActivationID(), Function: "hello", Version: 1, Status: StatusSuccess, StatusCode: 200,
		InstanceID: "hello-1", Start: time.Now(), DurationMs: 0.15, EnergyJ: 0.0001, EnergySource: "model",
		Timings: map[string]float64{"queue": 0.01, "run": 0.05, "exec": 0.03}, Result: []byte("hello"), ResponseBytes: 5}
	b.Run("appendJSON", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for range b.N {
			buf = a.appendJSON(buf[:0])
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := json.Marshal(&a); err != nil {
				b.Fatal(err)
			}
		}
	})
}
