// Package cache keeps the responses of deterministic functions (spec
// `deterministic: true`) so that a repeated request is answered without
// running the function: an in-memory LRU bounded in entries and entry
// size, with a time to live. Keys hold the function's version, so a
// redeploy makes its old entries unreachable; Purge frees them at once.
package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// Options bound the cache. MaxEntries 0 disables it (New returns nil).
type Options struct {
	MaxEntries   int           // entries kept; the least recently used go first
	MaxEntrySize int           // largest response body cached; bigger ones are not
	TTL          time.Duration // how long an entry is served after it was stored
}

// Entry is one cached response.
type Entry struct {
	Status int
	Header http.Header
	Body   []byte
	Stored time.Time
}

// Cache is safe for concurrent use. A nil *Cache is a disabled cache.
type Cache struct {
	lru     *expirable.LRU[string, *Entry]
	maxSize int
}

// New returns a cache, or nil when o.MaxEntries is 0.
func New(o Options) *Cache {
	if o.MaxEntries <= 0 {
		return nil
	}
	return &Cache{lru: expirable.NewLRU[string, *Entry](o.MaxEntries, nil, o.TTL), maxSize: o.MaxEntrySize}
}

// Key identifies a request to one version of a function: method, path,
// raw query and a digest of the body. Headers are not part of it: a
// deterministic function's result depends on these alone.
func Key(function, version, method, path, query string, body []byte) string {
	h := sha256.New()
	for _, s := range []string{method, path, query} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	h.Write(body)
	return function + "\x00" + version + "\x00" + hex.EncodeToString(h.Sum(nil))
}

// Get returns the live entry for key.
func (c *Cache) Get(key string) (*Entry, bool) {
	if c == nil {
		return nil, false
	}
	return c.lru.Get(key)
}

// Put stores e under key and reports whether it was stored (a body larger
// than MaxEntrySize is not). The cache keeps e: callers must not change it.
func (c *Cache) Put(key string, e *Entry) bool {
	if c == nil || (c.maxSize > 0 && len(e.Body) > c.maxSize) {
		return false
	}
	c.lru.Add(key, e)
	return true
}

// Purge removes every entry of function (after a redeploy or delete).
func (c *Cache) Purge(function string) {
	if c == nil {
		return
	}
	prefix := function + "\x00"
	for _, k := range c.lru.Keys() {
		if strings.HasPrefix(k, prefix) {
			c.lru.Remove(k)
		}
	}
}

// Len returns the number of live entries.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	return c.lru.Len()
}
