package queue

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The crash test runs the queue in a child process (this test binary,
// running TestHelperProcess) and kills it with SIGKILL mid-attempt.
const (
	helperEnv     = "WISP_QUEUE_HELPER_PATH"
	crashJobs     = 1000
	crashWorkers  = 8
	helperReady   = "ready"
	crashDeadline = time.Minute
)

func crashJobID(i int) string { return fmt.Sprintf("job-%04d", i) }

// TestHelperProcess is the child of TestCrashDurability; on its own it does
// nothing. It enqueues crashJobs jobs, starts workers whose attempts never
// end, says it is ready once every worker is busy, and waits to be killed.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		return
	}
	q, err := Open(path, Options{Workers: crashWorkers})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var wg sync.WaitGroup
	for g := range 20 { // concurrent Enqueues share commits
		wg.Go(func() {
			for i := g; i < crashJobs; i += 20 {
				if err := q.Enqueue(context.Background(), &Job{ID: crashJobID(i), Function: "f"}); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
			}
		})
	}
	wg.Wait()
	started := make(chan struct{}, crashWorkers)
	q.Start(invokerFunc(func(context.Context, *Job) Result {
		started <- struct{}{}
		select {} // until killed
	}))
	for range crashWorkers {
		<-started
	}
	fmt.Println(helperReady)
	time.Sleep(time.Hour)
}

func TestCrashDurability(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	cmd.Stderr = t.Output()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == helperReady {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case r := <-ready:
		if !r {
			_ = cmd.Wait()
			t.Fatal("the helper process ended before it was ready")
		}
	case <-time.After(crashDeadline):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("the helper process was not ready in time")
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no chance to clean up
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// As the child left it: every job stored, the busy ones running.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var jobs, running int
	_ = db.View(func(tx *bolt.Tx) error {
		jobs = tx.Bucket(bucketJobs).Stats().KeyN
		running = tx.Bucket([]byte(StateRunning)).Stats().KeyN
		return nil
	})
	db.Close()
	if jobs != crashJobs || running != crashWorkers {
		t.Fatalf("after the kill: %d jobs, %d running; want %d and %d", jobs, running, crashJobs, crashWorkers)
	}

	var (
		mu       sync.Mutex
		calls    = map[string]int{}
		finished = map[string]int{}
	)
	q := openQueue(t, Options{Workers: crashWorkers, Finished: func(j *Job, _ Result) {
		mu.Lock()
		finished[j.ID]++
		mu.Unlock()
	}}, path)
	wantStats(t, q, crashJobs, 0, 0, 0)
	for i := range crashJobs {
		if j := get(t, q, crashJobID(i)); j.State != StateQueued || j.Attempts != 0 {
			t.Fatalf("job %s is %s with %d attempts; want queued with 0", j.ID, j.State, j.Attempts)
		}
	}
	q.Start(invokerFunc(func(_ context.Context, j *Job) Result {
		mu.Lock()
		calls[j.ID]++
		mu.Unlock()
		return ok
	}))
	waitFor(t, crashDeadline, "every job to succeed", func() bool { return q.Stats()[StateSucceeded] == crashJobs })
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range crashJobs {
		id := crashJobID(i)
		if calls[id] != 1 || finished[id] != 1 {
			t.Fatalf("job %s ran %d times and finished %d times after the restart; want once", id, calls[id], finished[id])
		}
	}
}
