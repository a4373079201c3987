package auth

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestEnsureAdminKey(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	dir := st.Dir()
	path, made, err := EnsureAdminKey(ctx, st, dir)
	if err != nil || !made {
		t.Fatalf("first start: made %v, %v", made, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin key file %s: %v, mode %v", path, err, fi.Mode().Perm())
	}
	key, err := ReadKeyFile(path)
	if err != nil || !strings.HasPrefix(key, Prefix) || len(key) < 40 {
		t.Fatalf("key %q, %v", key, err)
	}
	// Only the hash is stored.
	ks, _ := st.ListKeys(ctx)
	if len(ks) != 1 || ks[0].Hash != Hash(key) || !ks[0].Admin {
		t.Fatalf("stored keys %+v", ks)
	}
	// A second start keeps the key.
	if _, made, err := EnsureAdminKey(ctx, st, dir); err != nil || made {
		t.Fatalf("second start: made %v, %v", made, err)
	}
	if again, _ := ReadKeyFile(path); again != key {
		t.Fatal("the admin key changed on restart")
	}
}

func TestAuthenticate(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	path, _, err := EnsureAdminKey(ctx, st, st.Dir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ReadKeyFile(path)
	a, err := NewAuthenticator(ctx, st, "the admin key is in "+path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, header string
		ok           bool
	}{
		{"no header", "", false},
		{"the key", "Bearer " + key, true},
		{"lower-case scheme", "bearer " + key, true},
		{"another key", "Bearer " + Prefix + "AAAA", false},
		{"basic auth", "Basic " + key, false},
		{"scheme only", "Bearer", false},
		{"key without scheme", key, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/functions", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			k, err := a.Authenticate(r)
			if tt.ok {
				if err != nil || k == nil || !k.Admin {
					t.Fatalf("Authenticate = %+v, %v; want the admin key", k, err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrUnauthorized) || !strings.Contains(errdefs.Hint(err), path) {
				t.Fatalf("err = %v (hint %q); want ErrUnauthorized with a hint naming %s", err, errdefs.Hint(err), path)
			}
		})
	}
	// A deleted key stops working after Reload.
	if err := st.DeleteKey(ctx, Hash(key)); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	if _, err := a.Authenticate(r); err == nil {
		t.Fatal("a deleted key still authenticates")
	}
}
