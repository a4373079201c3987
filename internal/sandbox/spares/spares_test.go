package spares

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

type fake struct {
	id   int
	dead bool
}

type recorder struct {
	mu        sync.Mutex
	made      atomic.Int32
	discarded []int
}

func newSet(r *recorder, size int, delay time.Duration, fail bool) *Set[*fake] {
	return &Set[*fake]{
		Size: size,
		Make: func(string) (*fake, error) {
			time.Sleep(delay)
			if fail {
				return nil, errors.New("no")
			}
			return &fake{id: int(r.made.Add(1))}, nil
		},
		Discard: func(f *fake) {
			r.mu.Lock()
			r.discarded = append(r.discarded, f.id)
			r.mu.Unlock()
		},
		Dead: func(f *fake) bool { return f.dead },
	}
}

func TestSet(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"first claim has none and starts them", func(t *testing.T) {
			r := &recorder{}
			s := newSet(r, 2, time.Second, false)
			start := time.Now()
			if _, ok := s.Claim(context.Background(), "py"); ok {
				t.Fatal("the first claim got a spare")
			}
			if d := time.Since(start); d != 0 {
				t.Fatalf("the first claim waited %s; with nothing on the way it must not", d)
			}
			time.Sleep(2 * time.Second)
			if s.Ready("py") != 2 {
				t.Fatalf("ready %d; want the 2 spares the first claim started", s.Ready("py"))
			}
			s.Close()
		}},
		{"claim takes one and replaces it", func(t *testing.T) {
			r := &recorder{}
			s := newSet(r, 2, time.Second, false)
			s.Fill("py")
			time.Sleep(2 * time.Second)
			sp, ok := s.Claim(context.Background(), "py")
			if !ok || sp == nil {
				t.Fatal("no spare claimed")
			}
			time.Sleep(2 * time.Second)
			if s.Ready("py") != 2 || r.made.Load() != 3 {
				t.Fatalf("ready %d, made %d; want the claimed one replaced", s.Ready("py"), r.made.Load())
			}
			s.Close()
			if len(r.discarded) != 2 {
				t.Fatalf("Close discarded %v; want the 2 ready", r.discarded)
			}
		}},
		{"a claim waits for one being made, bounded by ctx", func(t *testing.T) {
			r := &recorder{}
			s := newSet(r, 1, 10*time.Second, false)
			s.Fill("py")
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			if _, ok := s.Claim(ctx, "py"); ok {
				t.Fatal("claimed a spare that was not ready")
			}
			if d := time.Since(start); d != time.Second {
				t.Fatalf("claim gave up after %s; want the ctx's 1s", d)
			}
			if sp, ok := s.Claim(context.Background(), "py"); !ok || sp == nil {
				t.Fatal("claim did not wait for the spare being made")
			}
			s.Close()
		}},
		{"dead spares are discarded, not handed out", func(t *testing.T) {
			r := &recorder{}
			s := newSet(r, 1, time.Second, false)
			s.Fill("py")
			time.Sleep(2 * time.Second)
			s.mu.Lock()
			s.ready["py"][0].dead = true
			s.mu.Unlock()
			sp, ok := s.Claim(context.Background(), "py")
			if ok && sp.dead {
				t.Fatal("handed out a dead spare")
			}
			synctest.Wait()
			s.Close()
		}},
		{"failing provisioning gives no spare", func(t *testing.T) {
			r := &recorder{}
			s := newSet(r, 2, time.Second, true)
			s.Fill("py")
			if _, ok := s.Claim(context.Background(), "py"); ok {
				t.Fatal("claimed a spare from failing provisioning")
			}
			s.Close()
		}},
		{"spares finished after Close are discarded", func(t *testing.T) {
			r := &recorder{}
			s := newSet(r, 2, time.Second, false)
			s.Fill("py")
			s.Close() // waits for the two being made
			if len(r.discarded) != 2 || s.Ready("py") != 0 {
				t.Fatalf("discarded %v, ready %d; want both discarded", r.discarded, s.Ready("py"))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { synctest.Test(t, tt.run) })
	}
}
