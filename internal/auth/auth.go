// Package auth authenticates API calls with bearer keys. A key is 32 random
// bytes, shown once as "wisp_" + base64url; the store keeps only its
// SHA-256 (a key has 256 bits of entropy, so a fast hash is as safe as a
// slow one and costs a microsecond per call). On first start the server
// makes an admin key and writes it to <data>/admin.key (mode 0600).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/store"
)

// Prefix starts every key, so that a leaked one is recognisable.
const Prefix = "wisp_"

// AdminKeyFile is the file in the data directory that holds the admin key.
const AdminKeyFile = "admin.key"

// ErrUnauthorized is the error of a call without a valid key (HTTP 401).
var ErrUnauthorized = errdefs.ErrUnauthorized

// New returns a fresh key.
func New() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make API key: %w", err)
	}
	return Prefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Hash returns the hex SHA-256 of key, the form keys are stored in.
func Hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// KeyStore is what the Authenticator needs from the store.
type KeyStore interface {
	ListKeys(ctx context.Context) ([]*store.APIKey, error)
	PutKey(ctx context.Context, k *store.APIKey) error
}

// Authenticator checks bearer keys against the stored hashes, which it
// keeps in memory (Reload after a change).
type Authenticator struct {
	st   KeyStore
	hint string

	reloadMu sync.Mutex // serialises Reload: a stale list must not replace a newer one

	mu   sync.RWMutex
	keys map[string]*store.APIKey // by hash
}

// NewAuthenticator loads the stored keys. hint tells a caller without a
// valid key where to find one.
func NewAuthenticator(ctx context.Context, st KeyStore, hint string) (*Authenticator, error) {
	a := &Authenticator{st: st, hint: hint}
	if err := a.Reload(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// Reload reads the keys from the store again.
func (a *Authenticator) Reload(ctx context.Context) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	ks, err := a.st.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("load API keys: %w", err)
	}
	m := make(map[string]*store.APIKey, len(ks))
	for _, k := range ks {
		m[k.Hash] = k
	}
	a.mu.Lock()
	a.keys = m
	a.mu.Unlock()
	return nil
}

// Authenticate returns the key r carries in "Authorization: Bearer KEY",
// or an error wrapping ErrUnauthorized that says what is wrong.
func (a *Authenticator) Authenticate(r *http.Request) (*store.APIKey, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, a.unauthorized("this API needs a key: send Authorization: Bearer <key>")
	}
	scheme, key, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return nil, a.unauthorized("the Authorization header is not \"Bearer <key>\"")
	}
	a.mu.RLock()
	k := a.keys[Hash(strings.TrimSpace(key))]
	a.mu.RUnlock()
	if k == nil {
		return nil, a.unauthorized("the API key is not valid (revoked, rotated, or from another server)")
	}
	return k, nil
}

func (a *Authenticator) unauthorized(msg string) error {
	return errdefs.New(ErrUnauthorized, a.hint, "%s", msg)
}

// EnsureAdminKey makes the admin key on first start: when no admin key is
// stored, it makes one, stores its hash and writes the key to
// dataDir/admin.key (0600). It returns the file's path and whether a key
// was made. An admin key that is stored but whose file is gone stays
// valid; remove the data directory's keys to start over.
func EnsureAdminKey(ctx context.Context, st KeyStore, dataDir string) (path string, made bool, err error) {
	path = filepath.Join(dataDir, AdminKeyFile)
	ks, err := st.ListKeys(ctx)
	if err != nil {
		return path, false, err
	}
	for _, k := range ks {
		if k.Admin {
			return path, false, nil
		}
	}
	key, err := New()
	if err != nil {
		return path, false, err
	}
	// The file first: a key that is stored but was never written out would
	// lock the owner out.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(key+"\n"), 0o600); err != nil {
		return path, false, fmt.Errorf("write admin key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return path, false, fmt.Errorf("write admin key: %w", err)
	}
	if err := st.PutKey(ctx, &store.APIKey{Hash: Hash(key), Name: "admin", Admin: true, Created: time.Now().UTC()}); err != nil {
		return path, false, err
	}
	return path, true, nil
}

// ReadKeyFile reads a key written by EnsureAdminKey.
func ReadKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
