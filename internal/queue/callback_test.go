package queue

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// hook is a callback receiver: it records each request and answers with
// statuses in turn (the last one repeating). While hang is set it does not
// answer until the request is cancelled.
type hook struct {
	statuses []int

	mu   sync.Mutex
	reqs []received
	hang bool
}

type received struct {
	header http.Header
	body   string
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.reqs = append(h.reqs, received{r.Header.Clone(), string(body)})
	status := h.statuses[min(len(h.reqs), len(h.statuses))-1]
	hang := h.hang
	h.mu.Unlock()
	if hang {
		<-r.Context().Done()
		return
	}
	w.WriteHeader(status)
}

func (h *hook) received() []received {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]received(nil), h.reqs...)
}

func newHook(t *testing.T, statuses ...int) (*hook, *httptest.Server) {
	h := &hook{statuses: statuses}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

// waitCallback waits until job id has no callback left to deliver, and
// returns the job.
func waitCallback(t *testing.T, q *Queue, id string) *Job {
	t.Helper()
	waitFor(t, 10*time.Second, "the callback of "+id, func() bool {
		// One transaction for both: read apart, the job could finish (and
		// its callback become pending) between the two reads.
		var done bool
		if err := q.db.View(func(tx *bolt.Tx) error {
			j, err := bucketsOf(tx).job([]byte(id))
			done = err == nil && j != nil && finished(j.State) && !has(tx.Bucket(bucketCallbacks), []byte(id))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return done
	})
	return get(t, q, id)
}

func TestCallback(t *testing.T) {
	for _, tt := range []struct {
		name     string
		result   Result
		statuses []int // the receiver's answers
		tries    int
		header   map[string]string
		body     string
		cbErr    string // a substring of CallbackError; "" for none
	}{
		{"succeeded", ok, []int{200}, 1, map[string]string{
			HeaderStatus: "succeeded", HeaderStatusCode: "200", HeaderFunction: "hello.team-a",
			"Content-Type": "application/json", HeaderResultTruncated: "",
		}, `{"ok":true}`, ""},
		{"failed, with the function's body", gone, []int{204}, 1, map[string]string{
			HeaderStatus: "failed", HeaderStatusCode: "404", "Content-Type": "",
		}, "no such function", ""},
		{"failed, with no body: the error", crashed, []int{200}, 1, map[string]string{
			HeaderStatus: "failed", HeaderStatusCode: "502", "Content-Type": "text/plain; charset=utf-8",
		}, "function crashed", ""},
		{"retried until it is taken", ok, []int{503, 429, 200}, 3, nil, `{"ok":true}`, ""},
		{"failing receiver: tried 4 times, then recorded", ok, []int{500}, 4, nil, `{"ok":true}`, "500 Internal Server Error (4 tries)"},
		{"refusing receiver: not retried", ok, []int{400}, 1, nil, `{"ok":true}`, "400 Bad Request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, srv := newHook(t, tt.statuses...)
			inv := newScript(tt.result)
			q := openQueue(t, Options{})
			q.callbackBackoff = time.Millisecond
			q.Start(inv)
			j := newJob("hello")
			j.Namespace = "team-a"
			j.CallbackURL = srv.URL + "/hook"
			enqueue(t, q, j)
			got := waitCallback(t, q, j.ID)

			if n := len(inv.times(j.ID)); n != 1 {
				t.Errorf("function ran %d times; a callback must never run it again", n)
			}
			reqs := h.received()
			if len(reqs) != tt.tries {
				t.Fatalf("receiver got %d requests, want %d", len(reqs), tt.tries)
			}
			for _, r := range reqs {
				if r.header.Get(HeaderActivationID) != j.ID || r.body != tt.body {
					t.Errorf("callback: activation id %q, body %q; want %q, %q",
						r.header.Get(HeaderActivationID), r.body, j.ID, tt.body)
				}
				for k, v := range tt.header {
					if r.header.Get(k) != v {
						t.Errorf("callback header %s = %q, want %q", k, r.header.Get(k), v)
					}
				}
			}
			if tt.cbErr == "" && got.CallbackError != "" || !strings.Contains(got.CallbackError, tt.cbErr) {
				t.Errorf("CallbackError = %q, want %q", got.CallbackError, tt.cbErr)
			}
		})
	}
}

func TestCallbackAfterRestart(t *testing.T) {
	h, srv := newHook(t, 200)
	h.hang = true
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openQueue(t, Options{ResultLimit: 5}, path)
	q.Start(newScript(ok))
	j := newJob("hello")
	j.CallbackURL = srv.URL
	enqueue(t, q, j)
	waitFor(t, 10*time.Second, "the first callback", func() bool { return len(h.received()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Close(ctx); err == nil {
		t.Fatal("Close did not report the callback it cut short")
	}

	h.mu.Lock()
	h.hang = false
	h.mu.Unlock()
	inv := newScript(ok)
	q = openQueue(t, Options{}, path)
	q.Start(inv)
	got := waitCallback(t, q, j.ID)
	reqs := h.received()
	if len(reqs) != 2 || got.CallbackError != "" {
		t.Fatalf("%d callbacks, callback error %q; want the cut one delivered again", len(reqs), got.CallbackError)
	}
	if r := reqs[1]; r.body != `{"ok"` || r.header.Get(HeaderResultTruncated) != "true" ||
		r.header.Get(HeaderStatus) != StateSucceeded || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("callback after restart: body %q, headers %v; want the stored head, marked truncated", r.body, r.header)
	}
	if n := len(inv.times(j.ID)); n != 0 {
		t.Fatalf("the function ran %d times after the restart; it had succeeded", n)
	}
}

func TestPublicClientRefusesPrivateAddresses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	c := PublicClient(2 * time.Second)
	for _, u := range []string{srv.URL, "http://localhost:" + srv.URL[strings.LastIndex(srv.URL, ":")+1:], "http://169.254.169.254/latest", "http://10.1.2.3/x", "http://[::1]:1/"} {
		resp, err := c.Post(u, "text/plain", nil)
		if err == nil {
			resp.Body.Close()
			t.Errorf("POST %s went through", u)
		} else if !strings.Contains(err.Error(), "only public addresses") {
			t.Errorf("POST %s: %v, want a refusal", u, err)
		}
	}
	for ip, public := range map[string]bool{"8.8.8.8": true, "2001:4860:4860::8888": true, "127.0.0.1": false,
		"192.168.1.1": false, "172.16.0.1": false, "169.254.169.254": false, "::1": false, "fd00::1": false, "0.0.0.0": false,
		"0.1.2.3": false, "100.64.1.1": false, "100.128.0.1": true, "::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false,
		"64:ff9b::a00:1": false, "64:ff9b::808:808": true, "2002:a00:1::1": false, "::10.0.0.1": false,
		"198.18.0.1": false, "240.0.0.1": false, "255.255.255.255": false} {
		if got := PublicOnly(net.ParseIP(ip)); got != public {
			t.Errorf("PublicOnly(%s) = %v", ip, got)
		}
	}
}
