package queue

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Headers of a callback request. Its body is the function's response body
// (for a failed job with no body, the error as text/plain), with the
// function's Content-Type.
const (
	HeaderActivationID = "X-Wisp-Activation-Id"
	HeaderFunction     = "X-Wisp-Function"    // the function's reference (Job.Ref)
	HeaderStatus       = "X-Wisp-Status"      // succeeded or failed
	HeaderStatusCode   = "X-Wisp-Status-Code" // the last attempt's HTTP status, when it had one
	// HeaderResultTruncated is "true" when the body is only the head of the
	// response: a callback delivered after a restart sends Job.Result, which
	// is cut at Options.ResultLimit.
	HeaderResultTruncated = "X-Wisp-Result-Truncated"
)

// callbackTries is how many times a callback is posted: once, and up to 3
// retries.
const callbackTries = 4

// callback delivers the outcome of the finished job j to its CallbackURL,
// and records the delivery (or why it failed) in the job.
func (q *Queue) callback(j *Job, body []byte, contentType string, truncated bool) {
	err := q.post(j, body, contentType, truncated)
	if err != nil && q.runCtx.Err() != nil {
		return // Close cut it short: it is delivered after the next Start
	}
	if err != nil {
		q.log.Warn("callback not delivered", "id", j.ID, "function", j.Ref, "url", j.CallbackURL, "err", err)
	}
	if err := q.recordCallback(j.ID, err); err != nil {
		q.log.Error("record a callback; it is delivered again after a restart", "id", j.ID, "err", err)
	}
}

// post sends the callback, retrying what may pass with a doubling delay.
func (q *Queue) post(j *Job, body []byte, contentType string, truncated bool) error {
	if len(body) == 0 && j.State == StateFailed && j.LastError != "" {
		body, contentType = []byte(j.LastError), "text/plain; charset=utf-8"
	}
	delay := q.callbackBackoff
	for try := 1; ; try++ {
		retry, err := q.postOnce(j, body, contentType, truncated)
		if err == nil {
			return nil
		}
		if !retry || try == callbackTries {
			if try > 1 {
				err = fmt.Errorf("%w (%d tries)", err, try)
			}
			return err
		}
		select {
		case <-q.runCtx.Done():
			return err
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// postOnce posts the callback once, and says whether a failure may pass.
func (q *Queue) postOnce(j *Job, body []byte, contentType string, truncated bool) (retry bool, err error) {
	req, err := http.NewRequestWithContext(q.runCtx, http.MethodPost, j.CallbackURL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("callback %s: %w", j.CallbackURL, err)
	}
	req.Header.Set(HeaderActivationID, j.ID)
	req.Header.Set(HeaderFunction, j.Ref)
	req.Header.Set(HeaderStatus, j.State)
	if j.LastStatus != 0 {
		req.Header.Set(HeaderStatusCode, strconv.Itoa(j.LastStatus))
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if truncated {
		req.Header.Set(HeaderResultTruncated, "true")
	}
	client := q.opts.HTTPClient
	if q.opts.ClientFor != nil {
		if c := q.opts.ClientFor(j); c != nil {
			client = c
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return true, err // it names the method and URL
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return true, fmt.Errorf("callback %s answered %s", j.CallbackURL, resp.Status)
	default:
		return false, fmt.Errorf("callback %s answered %s", j.CallbackURL, resp.Status)
	}
}

// recordCallback marks the callback of job id delivered, or failed with
// cbErr. A job redriven, purged or pruned since is left alone.
func (q *Queue) recordCallback(id string, cbErr error) error {
	err := q.db.Batch(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		key := []byte(id)
		if !has(b.callbacks, key) {
			return nil
		}
		if err := b.callbacks.Delete(key); err != nil || cbErr == nil {
			return err
		}
		j, err := b.job(key)
		if err != nil || j == nil {
			return err
		}
		j.CallbackError = cbErr.Error()
		return b.put(j) // same state, same index key
	})
	if err != nil {
		return fmt.Errorf("record callback of job %q: %w", id, err)
	}
	return nil
}

// redeliver delivers the callback a previous process left undelivered,
// with the stored head of the response.
func (q *Queue) redeliver(id string) {
	var j *Job
	err := q.db.View(func(tx *bolt.Tx) error {
		var err error
		j, err = bucketsOf(tx).job([]byte(id))
		return err
	})
	if err != nil {
		q.log.Error("read a job to deliver its callback", "id", id, "err", err)
		return
	}
	if j == nil || !finished(j.State) || j.CallbackURL == "" {
		if err := q.recordCallback(id, nil); err != nil { // nothing to deliver: drop the entry
			q.log.Error("drop a stale callback", "id", id, "err", err)
		}
		return
	}
	q.callback(j, j.Result, j.ContentType, j.ResultTruncated)
}

// PublicOnly reports whether ip is an address callbacks of untrusted jobs
// may reach: not loopback, link-local (cloud metadata at 169.254.169.254),
// private (RFC 1918, fc00::/7), 0.0.0.0/8, 100.64.0.0/10, 198.18.0.0/15,
// 240.0.0.0/4, unspecified or multicast, in IPv4 form or any IPv6 form that
// carries an IPv4 address (mapped, compatible, NAT64, 6to4).
func PublicOnly(ip net.IP) bool {
	if len(ip) == net.IPv6len && ip.To4() == nil {
		// IPv6 forms that carry an IPv4 address: NAT64 (64:ff9b::/96),
		// 6to4 (2002::/16) and the deprecated IPv4-compatible ::a.b.c.d.
		switch {
		case ip[0] == 0x00 && ip[1] == 0x64 && ip[2] == 0xff && ip[3] == 0x9b:
			return PublicOnly(net.IP(ip[12:16]))
		case ip[0] == 0x20 && ip[1] == 0x02:
			return PublicOnly(net.IP(ip[2:6]))
		case isZero(ip[:12]):
			return PublicOnly(net.IP(ip[12:16]))
		}
	}
	if v4 := ip.To4(); v4 != nil {
		// 0.0.0.0/8 ("this network": Linux connects 0.0.0.0 to the host
		// itself), 100.64.0.0/10 (carrier-grade NAT, often internal),
		// 198.18.0.0/15 (benchmarking) and 240.0.0.0/4 (reserved, and the
		// broadcast address).
		if v4[0] == 0 || (v4[0] == 100 && v4[1]&0xc0 == 64) || (v4[0] == 198 && v4[1]&0xfe == 18) || v4[0] >= 240 {
			return false
		}
	}
	return !(ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsPrivate() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast())
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// PublicClient returns a callback client that dials public addresses only:
// the check runs on the address actually dialled, after name resolution, so
// a name that resolves to 127.0.0.1 (or is rebound to it) is refused too.
// The server uses it for tenants' callbacks, which must not reach services
// on the wisp host or its private network.
func PublicClient(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		if ip := net.ParseIP(host); ip == nil || !PublicOnly(ip) {
			return fmt.Errorf("callback to %s refused: only public addresses may be called back", host)
		}
		return nil
	}}
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
