package queue

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkEnqueue measures concurrent Enqueues (as from many HTTP
// requests), which share commits.
func BenchmarkEnqueue(b *testing.B) {
	q, err := Open(filepath.Join(b.TempDir(), "queue.db"), Options{MaxQueued: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close(context.Background())
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := q.Enqueue(context.Background(), newJob("f")); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDrain measures how fast the workers run queued jobs through an
// Invoker that returns at once: the queue's own overhead per job.
func BenchmarkDrain(b *testing.B) {
	var n atomic.Int64
	done := make(chan struct{})
	q, err := Open(filepath.Join(b.TempDir(), "queue.db"), Options{MaxQueued: 1 << 30, Finished: func(*Job, Result) {
		if n.Add(1) == int64(b.N) {
			close(done)
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close(context.Background())
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := g; i < b.N; i += 16 {
				if err := q.Enqueue(context.Background(), newJob("f")); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ResetTimer()
	q.Start(newScript(ok))
	<-done
}
