package cache

import (
	"net/http"
	"testing"
	"time"
)

func TestKeyDistinguishesEveryPart(t *testing.T) {
	base := Key("f", "1", "POST", "/a", "x=1", []byte("body"))
	for name, k := range map[string]string{
		"function": Key("g", "1", "POST", "/a", "x=1", []byte("body")),
		"version":  Key("f", "2", "POST", "/a", "x=1", []byte("body")),
		"method":   Key("f", "1", "GET", "/a", "x=1", []byte("body")),
		"path":     Key("f", "1", "POST", "/b", "x=1", []byte("body")),
		"query":    Key("f", "1", "POST", "/a", "x=2", []byte("body")),
		"body":     Key("f", "1", "POST", "/a", "x=1", []byte("bodY")),
		// Length prefixes keep parts from running into each other.
		"boundary": Key("f", "1", "POST", "/ax", "=1", []byte("body")),
	} {
		if k == base {
			t.Errorf("changing the %s gives the same key", name)
		}
	}
	if Key("f", "1", "POST", "/a", "x=1", []byte("body")) != base {
		t.Error("the same request gives another key")
	}
}

func TestCache(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *Cache)
	}{
		{"hit after put", func(t *testing.T, c *Cache) {
			k := Key("f", "1", "GET", "/", "", nil)
			if !c.Put(k, &Entry{Status: 200, Body: []byte("x")}) {
				t.Fatal("not stored")
			}
			if e, ok := c.Get(k); !ok || string(e.Body) != "x" {
				t.Fatalf("Get = %v, %v", e, ok)
			}
		}},
		{"too large is not stored", func(t *testing.T, c *Cache) {
			k := Key("f", "1", "GET", "/", "", nil)
			if c.Put(k, &Entry{Body: make([]byte, 101)}) {
				t.Fatal("stored a body over MaxEntrySize")
			}
			if _, ok := c.Get(k); ok {
				t.Fatal("hit on a body over MaxEntrySize")
			}
		}},
		{"least recently used goes first", func(t *testing.T, c *Cache) {
			keys := []string{Key("f", "1", "GET", "/1", "", nil), Key("f", "1", "GET", "/2", "", nil), Key("f", "1", "GET", "/3", "", nil)}
			c.Put(keys[0], &Entry{})
			c.Put(keys[1], &Entry{})
			c.Get(keys[0]) // now keys[1] is the oldest
			c.Put(keys[2], &Entry{})
			if _, ok := c.Get(keys[1]); ok {
				t.Error("the least recently used entry survived")
			}
			if _, ok := c.Get(keys[0]); !ok {
				t.Error("a recently used entry was evicted")
			}
		}},
		{"purge removes one function", func(t *testing.T, c *Cache) {
			kf, kg := Key("f", "1", "GET", "/", "", nil), Key("g", "1", "GET", "/", "", nil)
			c.Put(kf, &Entry{})
			c.Put(kg, &Entry{})
			c.Purge("f")
			if _, ok := c.Get(kf); ok {
				t.Error("purged entry still served")
			}
			if _, ok := c.Get(kg); !ok || c.Len() != 1 {
				t.Error("another function's entry was purged")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, New(Options{MaxEntries: 2, MaxEntrySize: 100, TTL: time.Hour}))
		})
	}
}

func TestTTL(t *testing.T) {
	c := New(Options{MaxEntries: 10, TTL: 50 * time.Millisecond})
	k := Key("f", "1", "GET", "/", "", nil)
	c.Put(k, &Entry{Header: http.Header{}})
	if _, ok := c.Get(k); !ok {
		t.Fatal("fresh entry missing")
	}
	time.Sleep(120 * time.Millisecond)
	if _, ok := c.Get(k); ok {
		t.Fatal("entry served after its TTL")
	}
}

func TestDisabled(t *testing.T) {
	var c *Cache = New(Options{MaxEntries: 0})
	if c != nil {
		t.Fatal("MaxEntries 0 should disable the cache")
	}
	if c.Put("k", &Entry{}) || c.Len() != 0 {
		t.Fatal("a disabled cache stored an entry")
	}
	if _, ok := c.Get("k"); ok {
		t.Fatal("a disabled cache hit")
	}
	c.Purge("f")
}
