package store

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func TestFunctions(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t, Options{})
	digest, _, err := s.PutCode(ctx, bytes.NewReader(helloArchive(t)))
	if err != nil {
		t.Fatal(err)
	}

	first, err := s.CreateFunction(ctx, &FunctionRecord{Spec: testSpec("b-fn"), CodeDigest: digest})
	if err != nil {
		t.Fatal(err)
	}
	if first.Version != 1 || first.CreatedAt.IsZero() || !first.CreatedAt.Equal(first.UpdatedAt) || first.CodeSize == 0 {
		t.Fatalf("created %+v", first)
	}
	upd := *first
	upd.Spec.Memory = 256 << 20
	second, err := s.PutFunction(ctx, &upd)
	if err != nil {
		t.Fatal(err)
	}
	if second.Version != 2 || !second.CreatedAt.Equal(first.CreatedAt) || second.UpdatedAt.Before(first.UpdatedAt) {
		t.Fatalf("updated %+v", second)
	}
	if _, err := s.PutFunction(ctx, &FunctionRecord{Spec: testSpec("a-fn")}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		op   func() error
		kind error
		hint bool
	}{
		{"create existing", func() error {
			_, err := s.CreateFunction(ctx, &FunctionRecord{Spec: testSpec("b-fn")})
			return err
		}, errdefs.ErrConflict, true},
		{"stale update", func() error {
			_, err := s.PutFunction(ctx, first) // made from version 1; stored is 2
			return err
		}, errdefs.ErrConflict, true},
		{"conditional update of a missing function", func() error {
			_, err := s.PutFunction(ctx, &FunctionRecord{Spec: testSpec("nope"), Version: 3})
			return err
		}, errdefs.ErrNotFound, true},
		{"get missing", func() error { _, err := s.GetFunction(ctx, "nope"); return err }, errdefs.ErrNotFound, true},
		{"delete missing", func() error { return s.DeleteFunction(ctx, "nope") }, errdefs.ErrNotFound, true},
		{"invalid spec", func() error {
			sp := testSpec("Bad_Name")
			_, err := s.PutFunction(ctx, &FunctionRecord{Spec: sp})
			return err
		}, errdefs.ErrInvalid, true},
		{"unknown code", func() error {
			_, err := s.PutFunction(ctx, &FunctionRecord{Spec: testSpec("c-fn"), CodeDigest: "sha256:" + string(bytes.Repeat([]byte("a"), 64))})
			return err
		}, errdefs.ErrInvalid, true},
		{"malformed digest", func() error {
			_, err := s.PutFunction(ctx, &FunctionRecord{Spec: testSpec("c-fn"), CodeDigest: "md5:abc"})
			return err
		}, errdefs.ErrInvalid, true},
		{"nil record", func() error { _, err := s.PutFunction(ctx, nil); return err }, errdefs.ErrInvalid, false},
		{"cancelled", func() error {
			c, cancel := context.WithCancel(ctx)
			cancel()
			_, err := s.GetFunction(c, "a-fn")
			return err
		}, context.Canceled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			if !errors.Is(err, tt.kind) {
				t.Fatalf("err = %v, want %v", err, tt.kind)
			}
			if tt.hint && errdefs.Hint(err) == "" {
				t.Fatalf("%v has no hint", err)
			}
		})
	}

	list, err := s.ListFunctions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name() != "a-fn" || list[1].Name() != "b-fn" || list[1].Version != 2 {
		t.Fatalf("list = %+v", list)
	}
	got, err := s.GetFunction(ctx, "b-fn")
	if err != nil || got.Spec.Memory != 256<<20 {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if err := s.DeleteFunction(ctx, "b-fn"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetFunction(ctx, "b-fn"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	// Re-creating after delete starts again at version 1.
	again, err := s.CreateFunction(ctx, &FunctionRecord{Spec: testSpec("b-fn")})
	if err != nil || again.Version != 1 {
		t.Fatalf("re-create: %+v, %v", again, err)
	}
}

// The returned record is a copy: changing it does not change the store.
func TestPutFunctionCopies(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t, Options{})
	rec := &FunctionRecord{Spec: testSpec("f")}
	rec.Spec.Environment = []string{"A=1"}
	out, err := s.PutFunction(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	out.Spec.Environment[0] = "A=2"
	if rec.Spec.Environment[0] != "A=1" || rec.Version != 0 {
		t.Fatal("PutFunction changed its argument")
	}
	got, _ := s.GetFunction(ctx, "f")
	if got.Spec.Environment[0] != "A=1" {
		t.Fatal("stored record changed")
	}
}
