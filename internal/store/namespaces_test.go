package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func nsKey(ns string, n byte) *APIKey {
	return &APIKey{Hash: strings.Repeat(string(rune('a'+n)), 64), Name: ns, Namespace: ns, Created: time.Now()}
}

func TestNamespaces(t *testing.T) {
	ctx := context.Background()
	s, dir := openStore(t, Options{})
	a := &Namespace{Name: "team-a", RateLimit: "10/s", MaxConcurrency: 4, Created: time.Now().UTC()}
	if err := s.CreateNamespace(ctx, a, nsKey("team-a", 0)); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNamespace(ctx, &Namespace{Name: "team-a"}, nsKey("team-a", 1)); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range []*Namespace{{Name: "default"}, {Name: "A"}, {Name: "x", RateLimit: "often"}, {Name: "y", MaxConcurrency: -1}} {
		if err := s.CreateNamespace(ctx, bad, nsKey(bad.Name, 2)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("create %+v: %v, want ErrInvalid", bad, err)
		}
	}
	// A failed create stores neither the namespace nor its key.
	if ks, _ := s.ListKeys(ctx); len(ks) != 1 {
		t.Fatalf("keys after failed creates: %d", len(ks))
	}

	// Functions live under their reference; two namespaces may share a name.
	for _, ns := range []string{"", "team-a"} {
		if _, err := s.PutFunction(ctx, &FunctionRecord{Namespace: ns, Spec: testSpec("f")}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.GetFunction(ctx, "f.team-a"); err != nil || got.Namespace != "team-a" {
		t.Fatalf("get f.team-a: %+v %v", got, err)
	}
	if _, err := s.PutFunction(ctx, &FunctionRecord{Namespace: "Bad NS", Spec: testSpec("f")}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("function in an invalid namespace: %v", err)
	}

	if err := s.UpdateNamespace(ctx, &Namespace{Name: "team-a", RateLimit: "1/s"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetNamespace(ctx, "team-a")
	if err != nil || got.RateLimit != "1/s" || got.MaxConcurrency != 0 || !got.Created.Equal(a.Created) {
		t.Fatalf("after update: %+v %v", got, err)
	}
	if err := s.UpdateNamespace(ctx, &Namespace{Name: "nope"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("update unknown: %v", err)
	}

	// Rotation replaces the namespace's keys and leaves others alone.
	if err := s.PutKey(ctx, &APIKey{Hash: strings.Repeat("f", 64), Name: "admin", Admin: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.RotateKey(ctx, "team-a", nsKey("team-a", 3)); err != nil {
		t.Fatal(err)
	}
	ks, _ := s.ListKeys(ctx)
	if len(ks) != 2 {
		t.Fatalf("keys after rotation: %+v", ks)
	}
	for _, k := range ks {
		if !k.Admin && k.Hash != nsKey("", 3).Hash {
			t.Fatalf("old key survived rotation: %+v", k)
		}
	}

	// Its activations, and only its, go with the namespace.
	for i, fn := range []string{"f.team-a", "f", "f.team-a"} {
		ns := ""
		if fn != "f" {
			ns = "team-a"
		}
		s.RecordActivation(&Activation{ID: NewActivationID(), Namespace: ns, Function: fn, Status: StatusSuccess, DurationMs: float64(i)})
	}

	// Removal refuses while functions remain, unless forced.
	if _, err := s.DeleteNamespace(ctx, "team-a", false); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("delete with functions: %v", err)
	}
	removed, err := s.DeleteNamespace(ctx, "team-a", true)
	if err != nil || len(removed) != 1 || removed[0] != "f.team-a" {
		t.Fatalf("force delete: %v %v", removed, err)
	}
	if _, err := s.GetFunction(ctx, "f"); err != nil {
		t.Fatalf("the default namespace's f went with team-a: %v", err)
	}
	if acts, err := s.ListActivations(ctx, ActivationFilter{}); err != nil || len(acts) != 1 || acts[0].Function != "f" {
		t.Fatalf("activations after removing team-a: %+v %v", acts, err)
	}
	if acts, _ := s.ListActivations(ctx, ActivationFilter{Function: "f.team-a"}); len(acts) != 0 {
		t.Fatalf("team-a's activations still indexed: %d", len(acts))
	}
	if _, _, count := committed(t, s); count != 1 {
		t.Fatalf("activation count %d after removing team-a, want 1", count)
	}
	if ks, _ := s.ListKeys(ctx); len(ks) != 1 || !ks[0].Admin {
		t.Fatalf("keys after delete: %+v", ks)
	}
	if _, err := s.DeleteNamespace(ctx, "team-a", true); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}

	// Namespaces survive a restart.
	if err := s.CreateNamespace(ctx, &Namespace{Name: "team-b"}, nsKey("team-b", 4)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	list, err := s2.ListNamespaces(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "team-b" {
		t.Fatalf("after restart: %+v %v", list, err)
	}
}
