package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// committed returns the ids in activations/, the index keys and the stored
// count, straight from bbolt.
func committed(t testing.TB, s *Store) (ids []string, index []string, count int64) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		tx.Bucket(bucketActivations).ForEach(func(k, _ []byte) error { ids = append(ids, string(k)); return nil })
		tx.Bucket(bucketActByFn).ForEach(func(k, _ []byte) error { index = append(index, string(k)); return nil })
		var err error
		count, err = getInt(tx.Bucket(bucketMeta), keyActivationCount)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids, index, count
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestActivationBatching(t *testing.T) {
	// A long interval: only a full batch (or Flush) triggers a write.
	s, _ := openStore(t, Options{FlushInterval: time.Hour, BatchSize: 10})
	for i := range 9 {
		s.RecordActivation(&Activation{Function: "f", Status: StatusSuccess, StatusCode: 200 + i})
	}
	time.Sleep(50 * time.Millisecond)
	if ids, _, _ := committed(t, s); len(ids) != 0 {
		t.Fatalf("%d records written before the batch was full", len(ids))
	}
	s.RecordActivation(&Activation{Function: "f", Status: StatusSuccess})
	waitFor(t, "a full batch to be written", func() bool { ids, _, _ := committed(t, s); return len(ids) == 10 })

	// The interval alone also writes.
	s2, _ := openStore(t, Options{FlushInterval: 20 * time.Millisecond})
	s2.RecordActivation(&Activation{Function: "f", Status: StatusSuccess})
	waitFor(t, "the interval to write", func() bool { ids, _, _ := committed(t, s2); return len(ids) == 1 })
}

func TestActivationReadYourWrites(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t, Options{FlushInterval: time.Hour})
	a := &Activation{ID: NewActivationID(), Function: "f", Status: StatusSuccess, Timings: map[string]float64{"run": 1.5}, Result: []byte("ok")}
	s.RecordActivation(a)
	got, err := s.GetActivation(ctx, a.ID)
	if err != nil {
		t.Fatalf("queued record not found: %v", err)
	}
	if got.Function != "f" || got.Timings["run"] != 1.5 || string(got.Result) != "ok" {
		t.Fatalf("got %+v", got)
	}
	got.Timings["run"] = 99 // a copy: the queued record is unchanged
	if again, _ := s.GetActivation(ctx, a.ID); again.Timings["run"] != 1.5 {
		t.Fatal("GetActivation returned the queued record itself")
	}
	list, err := s.ListActivations(ctx, ActivationFilter{Function: "f"})
	if err != nil || len(list) != 1 || list[0].ID != a.ID {
		t.Fatalf("list = %v, %v", list, err)
	}
	// Updating a queued record: the newest wins, before and after the write.
	s.RecordActivation(&Activation{ID: a.ID, Function: "f", Status: StatusError, Error: "boom"})
	if got, _ := s.GetActivation(ctx, a.ID); got.Status != StatusError {
		t.Fatalf("status = %s", got.Status)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetActivation(ctx, a.ID)
	if err != nil || got.Status != StatusError || got.Error != "boom" {
		t.Fatalf("after flush: %+v, %v", got, err)
	}
	if ids, index, count := committed(t, s); len(ids) != 1 || len(index) != 1 || count != 1 {
		t.Fatalf("ids %v, index %q, count %d", ids, index, count)
	}
	_, err = s.GetActivation(ctx, NewActivationID())
	if !errors.Is(err, errdefs.ErrNotFound) || errdefs.Hint(err) == "" {
		t.Fatalf("GetActivation(unknown) = %v", err)
	}
}

func TestActivationRetention(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t, Options{ActivationRetention: 5, FlushInterval: time.Millisecond, BatchSize: 3})
	var ids []string
	for i := range 12 {
		id := NewActivationID()
		ids = append(ids, id)
		s.RecordActivation(&Activation{ID: id, Function: fmt.Sprintf("f%d", i%2), Status: StatusSuccess})
		if i%4 == 0 {
			s.Flush(ctx) // several batches
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, index, count := committed(t, s)
	if count != 5 || len(got) != 5 || len(index) != 5 {
		t.Fatalf("kept %d records, %d index keys, count %d; want 5", len(got), len(index), count)
	}
	for i, id := range ids[7:] {
		if got[i] != id {
			t.Fatalf("kept %v, want the newest %v", got, ids[7:])
		}
	}
	if _, err := s.GetActivation(ctx, ids[0]); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("oldest record survived: %v", err)
	}
	for _, k := range index {
		fn, id, _ := strings.Cut(k, "\x00")
		want := fmt.Sprintf("f%d", indexOf(ids, id)%2)
		if fn != want {
			t.Errorf("index key %q: function %s, want %s", k, fn, want)
		}
	}
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

func TestListActivations(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t, Options{FlushInterval: time.Hour})
	byFn := map[string][]string{}
	var all []string
	for i := range 30 {
		fn := []string{"alpha", "beta", "gamma"}[i%3]
		status := StatusSuccess
		if i%5 == 0 {
			status = StatusTimeout
		}
		id := NewActivationID()
		s.RecordActivation(&Activation{ID: id, Function: fn, Status: status})
		byFn[fn] = append(byFn[fn], id)
		all = append(all, id)
		if i == 19 {
			if err := s.Flush(ctx); err != nil { // 20 committed, 10 queued
				t.Fatal(err)
			}
		}
	}
	reverse := func(in []string) []string {
		out := make([]string, len(in))
		for i, v := range in {
			out[len(in)-1-i] = v
		}
		return out
	}
	ids := func(list []*Activation) []string {
		var out []string
		for _, a := range list {
			out = append(out, a.ID)
		}
		return out
	}
	// Page through beta, 3 at a time, across queued and committed records.
	var paged []string
	f := ActivationFilter{Function: "beta", Limit: 3}
	for {
		page, err := s.ListActivations(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, ids(page)...)
		f.Before = page[len(page)-1].ID
	}
	if want := reverse(byFn["beta"]); fmt.Sprint(paged) != fmt.Sprint(want) {
		t.Fatalf("paged beta = %v\nwant %v", paged, want)
	}

	tests := []struct {
		name string
		f    ActivationFilter
		want []string
	}{
		{"default limit, all functions", ActivationFilter{}, reverse(all)},
		{"limit", ActivationFilter{Limit: 4}, reverse(all)[:4]},
		{"before, all functions", ActivationFilter{Before: all[10], Limit: 3}, reverse(all[7:10])},
		{"status", ActivationFilter{Status: StatusTimeout}, reverse([]string{all[0], all[5], all[10], all[15], all[20], all[25]})},
		{"function and status", ActivationFilter{Function: "alpha", Status: StatusTimeout}, reverse([]string{all[0], all[15]})},
		{"unknown function", ActivationFilter{Function: "delta"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListActivations(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(ids(got)) != fmt.Sprint(tt.want) {
				t.Fatalf("got  %v\nwant %v", ids(got), tt.want)
			}
		})
	}
	for _, bad := range []ActivationFilter{{Limit: -1}, {Status: "great"}, {Before: "yesterday"}} {
		if _, err := s.ListActivations(ctx, bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ListActivations(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestActivationTruncation(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t, Options{LogLimit: 10, ResultLimit: 4})
	id := NewActivationID()
	s.RecordActivation(&Activation{ID: id, Function: "f", Logs: "line one\nline two é\n", Result: []byte("0123456789")})
	s.RecordActivation(&Activation{Function: "f", Logs: "short", Result: []byte("ok")})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := s.GetActivation(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if a.Logs != "ne two é\n" || !a.LogsTruncated || string(a.Result) != "0123" || !a.ResultTruncated {
		t.Fatalf("logs %q (%v), result %q (%v)", a.Logs, a.LogsTruncated, a.Result, a.ResultTruncated)
	}
	// The cut never splits a UTF-8 sequence.
	s.truncate(&Activation{})
	b := &Activation{Logs: "ab é\n"}
	s2 := &Store{opts: Options{LogLimit: 2}}
	s2.truncate(b)
	if b.Logs != "\n" {
		t.Fatalf("cut inside a rune: %q", b.Logs)
	}
	list, _ := s.ListActivations(ctx, ActivationFilter{})
	if list[0].Logs != "short" || list[0].LogsTruncated || list[0].ResultTruncated {
		t.Fatalf("short record changed: %+v", list[0])
	}
	if list[0].ID == "" {
		t.Fatal("empty ID not filled in")
	}
}

func TestRecordActivationConcurrent(t *testing.T) {
	ctx := context.Background()
	// A small queue, so producers hit backpressure.
	s, _ := openStore(t, Options{QueueSize: 64, BatchSize: 16, FlushInterval: time.Millisecond, ActivationRetention: 100000})
	const workers, each = 8, 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	var recorded []string
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				a := &Activation{ID: NewActivationID(), Function: fmt.Sprintf("f%d", w), Status: StatusSuccess, StatusCode: i}
				s.RecordActivation(a)
				if i%50 == 0 {
					if _, err := s.GetActivation(ctx, a.ID); err != nil {
						t.Errorf("read-your-writes: %v", err)
					}
					if _, err := s.ListActivations(ctx, ActivationFilter{Function: a.Function, Limit: 5}); err != nil {
						t.Error(err)
					}
				}
				mu.Lock()
				recorded = append(recorded, a.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ids, index, count := committed(t, s)
	if len(ids) != workers*each || len(index) != workers*each || count != workers*each {
		t.Fatalf("committed %d records, %d index keys, count %d; want %d", len(ids), len(index), count, workers*each)
	}
}

func TestRecordAfterClose(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		s.RecordActivation(&Activation{Function: "f"}) // dropped with a warning, never blocks
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RecordActivation blocked after Close")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestFlushContext(t *testing.T) {
	s, _ := openStore(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.RecordActivation(&Activation{Function: "f"})
	// Either it was already written or the cancelled context ends the wait.
	if err := s.Flush(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush = %v", err)
	}
}

func TestNewActivationIDOrdered(t *testing.T) {
	prev := NewActivationID()
	for range 10000 {
		id := NewActivationID()
		if id <= prev {
			t.Fatalf("%s after %s", id, prev)
		}
		prev = id
	}
}

func BenchmarkRecordActivation(b *testing.B) {
	s, _ := openStore(b, Options{})
	a := Activation{
		Function: "hello", Version: 3, Status: StatusSuccess, StatusCode: 200, ColdStart: false, InstanceID: "i-42",
		Start: time.Now(), DurationMs: 0.42, Timings: map[string]float64{"queue": 0.01, "run": 0.4},
		Logs: "handled request\n", Result: []byte(`{"message":"hello"}`), RequestBytes: 17, ResponseBytes: 19,
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := a
			c.ID = NewActivationID()
			s.RecordActivation(&c)
		}
	})
	if err := s.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}

func TestFunctionOf(t *testing.T) {
	for _, a := range []Activation{
		{ID: "x", Function: "hello"},
		{ID: "x", Namespace: `ns","function":"evil`, Function: "real"},
		{ID: `id\"function\":\"evil`, Function: "real"},
		{ID: "x", Function: `we"ird\name<>`},
		{ID: "x", Namespace: strings.Repeat("n", 600), Function: "far"},
		{ID: "x"},
	} {
		// The stored encoding, and json.Marshal's (records written by
		// earlier versions).
		m, err := json.Marshal(&a)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range [][]byte{a.appendJSON(nil), m} {
			if got := functionOf(v); got != a.Function {
				t.Errorf("functionOf(%s) = %q, want %q", v, got, a.Function)
			}
		}
	}
}

// BenchmarkRecordActivationEnqueue measures the caller's cost alone (the
// queue, truncation, signalling the writer), with a writer that drops its
// batches instead of committing them, so RecordActivation never waits.
func BenchmarkRecordActivationEnqueue(b *testing.B) {
	s, _ := openStore(b, Options{})
	s.acts.mu.Lock()
	s.acts.write = func([]*Activation) error { return nil }
	s.acts.mu.Unlock()
	a := Activation{Function: "hello", Status: StatusSuccess, StatusCode: 200, Logs: "handled request\n", Result: []byte(`{"message":"hello"}`)}
	id := NewActivationID()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := a
			c.ID = id
			s.RecordActivation(&c)
		}
	})
}

func BenchmarkNewActivationID(b *testing.B) {
	b.ReportAllocs()
	for range b.N {
		NewActivationID()
	}
}

// One bad record (NaN timings, a huge id) must not lose its batch.
func TestActivationBadRecords(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t, Options{Logger: slog.New(slog.DiscardHandler)})
	nan := NewActivationID()
	good := NewActivationID()
	s.RecordActivation(&Activation{ID: nan, Function: "f", DurationMs: math.NaN(), Timings: map[string]float64{"run": math.Inf(1), "queue": 1}})
	s.RecordActivation(&Activation{ID: strings.Repeat("x", 1000), Function: "f"})
	s.RecordActivation(&Activation{ID: good, Function: "f"})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := s.GetActivation(ctx, nan)
	if err != nil || a.DurationMs != 0 || a.Timings["run"] != 0 || a.Timings["queue"] != 1 {
		t.Fatalf("NaN record: %+v, %v", a, err)
	}
	if _, err := s.GetActivation(ctx, good); err != nil {
		t.Fatal(err)
	}
	if ids, _, count := committed(t, s); len(ids) != 2 || count != 2 {
		t.Fatalf("committed %v, count %d", ids, count)
	}
}

// A record written again under its id replaces the old one: the count
// stays, and the index follows a changed function. Covered for the newest
// id (which the writer takes as new without a lookup only when it is
// greater than every stored one) and an older one, in one batch and across
// batches.
func TestActivationRerecorded(t *testing.T) {
	for _, tc := range []struct {
		name       string
		sameBatch  bool
		rewriteOld bool // rewrite an older id rather than the newest
	}{
		{"newest, same batch", true, false},
		{"newest, later batch", false, false},
		{"older, same batch", true, true},
		{"older, later batch", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, _ := openStore(t, Options{FlushInterval: time.Hour, BatchSize: 1000})
			ids := []string{NewActivationID(), NewActivationID(), NewActivationID()}
			for _, id := range ids {
				s.RecordActivation(&Activation{ID: id, Function: "f", State: "queued"})
			}
			if !tc.sameBatch {
				if err := s.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			target := ids[2]
			if tc.rewriteOld {
				target = ids[0]
			}
			s.RecordActivation(&Activation{ID: target, Function: "g", State: "succeeded"})
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			got, index, count := committed(t, s)
			if count != 3 || len(got) != 3 || len(index) != 3 {
				t.Fatalf("records %v, index %q, count %d; want 3 each", got, index, count)
			}
			want := map[string]bool{"f\x00" + ids[0]: true, "f\x00" + ids[1]: true, "f\x00" + ids[2]: true}
			delete(want, "f\x00"+target)
			want["g\x00"+target] = true
			for _, k := range index {
				if !want[k] {
					t.Errorf("index key %q; want one of %v", k, want)
				}
			}
			a, err := s.GetActivation(ctx, target)
			if err != nil || a.State != "succeeded" || a.Function != "g" {
				t.Fatalf("rewritten record %+v, %v", a, err)
			}
		})
	}
}
