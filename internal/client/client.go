// Package client is the Go client of wisp's HTTP API, used by the CLI and
// the benchmark tool. It talks to WISP_URL (default http://127.0.0.1:8080)
// and sends "Authorization: Bearer $WISP_TOKEN" when a token is set.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/wisp-faas/wisp/internal/gateway"
	"github.com/wisp-faas/wisp/internal/meter"
	"github.com/wisp-faas/wisp/internal/store"
)

// DefaultURL is the server address when WISP_URL is not set.
const DefaultURL = "http://127.0.0.1:8080"

// Client calls one wisp server.
type Client struct {
	base  string
	token string
	ns    string // sent as X-Wisp-Namespace when set
	http  *http.Client
}

// WithNamespace returns a copy of c that acts in namespace ns (an admin
// key's choice; a tenant key always acts in its own).
func (c *Client) WithNamespace(ns string) *Client {
	cc := *c
	cc.ns = ns
	return &cc
}

func (c *Client) authorize(h http.Header) {
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	if c.ns != "" {
		h.Set(gateway.HeaderNamespace, c.ns)
	}
}

// New returns a client for baseURL ("" means DefaultURL). maxConns sizes the
// connection pool (for load generation); 0 means a small default.
func New(baseURL, token string, maxConns int) *Client {
	if baseURL == "" {
		baseURL = DefaultURL
	}
	if maxConns <= 0 {
		maxConns = 8
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, http: &http.Client{Transport: tr}}
}

// Error is an error response from the server.
type Error struct {
	Status int
	gateway.ErrorBody
}

func (e *Error) Error() string {
	if e.Hint != "" {
		return fmt.Sprintf("%s (HTTP %d)\nhint: %s", e.ErrorBody.Error, e.Status, e.Hint)
	}
	return fmt.Sprintf("%s (HTTP %d)", e.ErrorBody.Error, e.Status)
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	c.authorize(req.Header)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (is wisp serve running? set WISP_URL to its address)", method, c.base+path, err)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(b, &e.ErrorBody) != nil || e.ErrorBody.Error == "" {
		e.ErrorBody.Error = strings.TrimSpace(string(b))
		if e.ErrorBody.Error == "" {
			e.ErrorBody.Error = resp.Status
		}
	}
	return e
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Deploy creates or replaces a function from its spec and packed code (a
// tar.gz stream; nil for none).
func (c *Client) Deploy(ctx context.Context, name string, spec []byte, code io.Reader) (*gateway.FunctionView, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			h := textproto.MIMEHeader{}
			h.Set("Content-Disposition", `form-data; name="spec"; filename="function.yaml"`)
			h.Set("Content-Type", "application/yaml")
			p, err := mw.CreatePart(h)
			if err != nil {
				return err
			}
			if _, err := p.Write(spec); err != nil {
				return err
			}
			if code != nil {
				h := textproto.MIMEHeader{}
				h.Set("Content-Disposition", `form-data; name="code"; filename="code.tar.gz"`)
				h.Set("Content-Type", "application/gzip")
				p, err := mw.CreatePart(h)
				if err != nil {
					return err
				}
				if _, err := io.Copy(p, code); err != nil {
					return err
				}
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	resp, err := c.do(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(name), pr, mw.FormDataContentType())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, decodeError(resp)
	}
	var v gateway.FunctionView
	return &v, json.NewDecoder(resp.Body).Decode(&v)
}

// List returns the functions of the client's namespace.
func (c *Client) List(ctx context.Context) ([]gateway.FunctionView, error) {
	var v []gateway.FunctionView
	return v, c.getJSON(ctx, "/v1/functions", &v)
}

// ListAll returns the functions of every namespace (admin keys).
func (c *Client) ListAll(ctx context.Context) ([]gateway.FunctionView, error) {
	var v []gateway.FunctionView
	return v, c.getJSON(ctx, "/v1/functions?all=true", &v)
}

// Get returns one function.
func (c *Client) Get(ctx context.Context, name string) (*gateway.FunctionView, error) {
	var v gateway.FunctionView
	return &v, c.getJSON(ctx, "/v1/functions/"+url.PathEscape(name), &v)
}

// Delete removes a function.
func (c *Client) Delete(ctx context.Context, name string) error {
	resp, err := c.do(ctx, http.MethodDelete, "/v1/functions/"+url.PathEscape(name), nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	return nil
}

// Activations lists activation records, newest first.
func (c *Client) Activations(ctx context.Context, f store.ActivationFilter) ([]store.Activation, error) {
	return c.activations(ctx, f, "")
}

// AsyncActivations lists async calls in a queue state (queued, running,
// succeeded, failed: the dead letters), newest first.
func (c *Client) AsyncActivations(ctx context.Context, f store.ActivationFilter, state string) ([]store.Activation, error) {
	return c.activations(ctx, f, state)
}

func (c *Client) activations(ctx context.Context, f store.ActivationFilter, state string) ([]store.Activation, error) {
	q := url.Values{}
	if f.Function != "" {
		q.Set("function", f.Function)
	}
	if f.Limit > 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	if f.Before != "" {
		q.Set("before", f.Before)
	}
	if f.Namespace == "*" {
		q.Set("all", "true")
	}
	if state != "" {
		q.Set("state", state)
	}
	var v []store.Activation
	return v, c.getJSON(ctx, "/v1/activations?"+q.Encode(), &v)
}

// Activation returns one activation record.
func (c *Client) Activation(ctx context.Context, id string) (*store.Activation, error) {
	var v store.Activation
	return &v, c.getJSON(ctx, "/v1/activations/"+url.PathEscape(id), &v)
}

// Scale asks the server to start instances of name until n are ready
// (POST /v1/functions/{name}/scale); they come up in the background.
func (c *Client) Scale(ctx context.Context, name string, n int) error {
	body := strings.NewReader(fmt.Sprintf(`{"instances": %d}`, n))
	res, err := c.do(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(name)+"/scale", body, "application/json")
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		return decodeError(res)
	}
	return nil
}

// Energy returns the node's energy over the last window and how it was
// shared out (GET /v1/energy).
func (c *Client) Energy(ctx context.Context, window time.Duration) (*meter.Summary, error) {
	var v meter.Summary
	return &v, c.getJSON(ctx, "/v1/energy?window="+url.QueryEscape(window.String()), &v)
}

// Result is the outcome of one invocation.
type Result struct {
	Status       int
	Header       http.Header
	Body         []byte
	ActivationID string
	Cold         bool
	Duration     time.Duration // round trip seen by the client
}

// Invoke calls a function synchronously. A non-2xx status is not an error:
// the caller inspects Result.Status (the body is the function's or the
// gateway's JSON error).
func (c *Client) Invoke(ctx context.Context, name, method, path string, header http.Header, body []byte) (*Result, error) {
	if method == "" {
		method = http.MethodPost
	}
	p := "/function/" + url.PathEscape(name)
	if path != "" && path != "/" {
		p += "/" + strings.TrimPrefix(path, "/")
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+p, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	c.authorize(req.Header)
	t0 := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("invoke %s: %w (is wisp serve running? set WISP_URL to its address)", name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("invoke %s: read response: %w", name, err)
	}
	return &Result{
		Status:       resp.StatusCode,
		Header:       resp.Header,
		Body:         b,
		ActivationID: resp.Header.Get(gateway.HeaderActivationID),
		Cold:         resp.Header.Get(gateway.HeaderColdStart) == "true",
		Duration:     time.Since(t0),
	}, nil
}

// Health returns /healthz.
func (c *Client) Health(ctx context.Context) (*gateway.Health, error) {
	var h gateway.Health
	return &h, c.getJSON(ctx, "/healthz", &h)
}

// sendJSON sends v as a JSON body and decodes a 2xx answer into out (nil:
// discard it).
func (c *Client) sendJSON(ctx context.Context, method, path string, v, out any) error {
	var body io.Reader
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.do(ctx, method, path, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// CreateNamespace makes a namespace and returns it with its first key
// (shown only here).
func (c *Client) CreateNamespace(ctx context.Context, ns store.Namespace) (*gateway.NamespaceView, error) {
	var v gateway.NamespaceView
	return &v, c.sendJSON(ctx, http.MethodPost, "/v1/namespaces", ns, &v)
}

// UpdateNamespace replaces a namespace's quotas.
func (c *Client) UpdateNamespace(ctx context.Context, ns store.Namespace) (*gateway.NamespaceView, error) {
	var v gateway.NamespaceView
	return &v, c.sendJSON(ctx, http.MethodPut, "/v1/namespaces/"+url.PathEscape(ns.Name), ns, &v)
}

// Namespaces lists the namespaces the key may see.
func (c *Client) Namespaces(ctx context.Context) ([]gateway.NamespaceView, error) {
	var v []gateway.NamespaceView
	return v, c.getJSON(ctx, "/v1/namespaces", &v)
}

// Namespace returns one namespace.
func (c *Client) Namespace(ctx context.Context, name string) (*gateway.NamespaceView, error) {
	var v gateway.NamespaceView
	return &v, c.getJSON(ctx, "/v1/namespaces/"+url.PathEscape(name), &v)
}

// DeleteNamespace removes a namespace and its keys; force removes its
// functions too.
func (c *Client) DeleteNamespace(ctx context.Context, name string, force bool) error {
	p := "/v1/namespaces/" + url.PathEscape(name)
	if force {
		p += "?force=true"
	}
	return c.sendJSON(ctx, http.MethodDelete, p, nil, nil)
}

// RotateKey makes a new key for a namespace and revokes the old ones.
func (c *Client) RotateKey(ctx context.Context, name string) (*gateway.NamespaceView, error) {
	var v gateway.NamespaceView
	return &v, c.sendJSON(ctx, http.MethodPost, "/v1/namespaces/"+url.PathEscape(name)+"/keys", nil, &v)
}

// InvokeAsync queues a call (POST /async-function/{name}) and returns its
// activation id. header may carry X-Callback-Url.
func (c *Client) InvokeAsync(ctx context.Context, name, path string, header http.Header, body []byte) (string, error) {
	p := "/async-function/" + url.PathEscape(name)
	if path != "" && path != "/" {
		p += "/" + strings.TrimPrefix(path, "/")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+p, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	c.authorize(req.Header)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("invoke %s: %w (is wisp serve running? set WISP_URL to its address)", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", decodeError(resp)
	}
	var v gateway.AsyncAccepted
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", fmt.Errorf("invoke %s: %w", name, err)
	}
	return v.ActivationID, nil
}

// Redrive sends a failed async call (a dead letter) back to the queue.
func (c *Client) Redrive(ctx context.Context, id string) error {
	return c.sendJSON(ctx, http.MethodPost, "/v1/activations/"+url.PathEscape(id)+"/redrive", nil, nil)
}

// Triggers lists the triggers of the client's namespace (all: every
// namespace's, admin keys).
func (c *Client) Triggers(ctx context.Context, all bool) ([]gateway.TriggerView, error) {
	var v []gateway.TriggerView
	p := "/v1/triggers"
	if all {
		p += "?all=true"
	}
	return v, c.getJSON(ctx, p, &v)
}

// CreateTrigger makes a cron or NATS trigger.
func (c *Client) CreateTrigger(ctx context.Context, t gateway.TriggerRequest) (*gateway.TriggerView, error) {
	var v gateway.TriggerView
	return &v, c.sendJSON(ctx, http.MethodPost, "/v1/triggers", t, &v)
}

// DeleteTrigger removes a trigger.
func (c *Client) DeleteTrigger(ctx context.Context, name string) error {
	return c.sendJSON(ctx, http.MethodDelete, "/v1/triggers/"+url.PathEscape(name), nil, nil)
}
