package runtime

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// The same routes in both languages, so that one table checks that the
// python and node hosts behave alike.
const pythonHandler = `
import os, sys, time

class BadInput(Exception):
    pass

print("imported")  # outside any call: the instance's own stdout

def handle(req):
    p = req.path
    if p == "/str": return "hello"
    if p == "/unicode": return "héllo ✓"
    if p == "/bytes": return b"\x00\x01"
    if p == "/dict": return {"a": 1}
    if p == "/list": return [1, 2]
    if p == "/none": return None
    if p == "/status": return 201, "made"
    if p == "/headers": return 202, {"X-Thing": "1", "content-type": "text/csv"}, "a,b"
    if p == "/echo": return req.body
    if p == "/json": return {"got": req.json()["x"]}
    if p == "/query": return {"q": req.query, "qs": req.query_string}
    if p == "/header": return req.headers["X-Custom"] + "|" + ",".join(req.headers.get_all("x-custom"))
    if p == "/method": return req.method + " " + req.activation_id
    if p == "/print":
        print("out", req.query["n"])
        print("err", file=sys.stderr)
        return "ok"
    if p == "/raise": raise BadInput("bad input")
    if p == "/badtype": return 42
    if p == "/spam":
        sys.stdout.write("x" * 200000)
        return "ok"
    if p == "/sleep":
        n = req.query.get("n", "")
        for _ in range(3):
            print("call", n)
            time.sleep(float(req.query["s"]) / 3)
        return n
    if p == "/exit": os._exit(3)
    return 404, "no route " + p
`

const nodeHandler = `
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class BadInput extends Error {
  constructor(m) { super(m); this.name = 'BadInput'; }
}

console.log('imported'); // outside any call: the instance's own stdout

exports.handle = async (req) => {
  switch (req.path) {
    case '/str': return 'hello';
    case '/unicode': return 'héllo ✓';
    case '/bytes': return Buffer.from([0, 1]);
    case '/dict': return { a: 1 };
    case '/list': return [1, 2];
    case '/none': return undefined;
    case '/status': return { statusCode: 201, body: 'made' };
    case '/headers': return { statusCode: 202, headers: { 'X-Thing': '1', 'content-type': 'text/csv' }, body: 'a,b' };
    case '/echo': return req.body;
    case '/json': return { got: req.json().x };
    case '/query': return { q: req.query, qs: req.queryString };
    case '/header': return req.headers['x-custom'] + '|' + req.headerValues('X-Custom').join(',');
    case '/method': return req.method + ' ' + req.activationId;
    case '/print':
      console.log('out', req.query.n);
      console.error('err');
      return 'ok';
    case '/raise': throw new BadInput('bad input');
    case '/badtype': return 42;
    case '/spam':
      process.stdout.write('x'.repeat(200000));
      return 'ok';
    case '/sleep': {
      const n = req.query.n || '';
      for (let i = 0; i < 3; i++) {
        console.log('call', n);
        await sleep((Number(req.query.s) * 1000) / 3);
      }
      return n;
    }
    case '/exit': process.exit(3);
  }
  return { statusCode: 404, body: 'no route ' + req.path };
};
`

type hostCase struct {
	name       string
	method     string
	path       string
	query      string
	header     http.Header
	body       string
	wantStatus int
	wantBody   string
	wantType   string // Content-Type, "" for none
	wantHeader [2]string
	wantErr    string // substring of Response.Error
	wantLogs   string // substring of Response.Logs
	exactLogs  bool
}

var hostCases = []hostCase{
	{name: "str", path: "/str", wantStatus: 200, wantBody: "hello", wantType: "text/plain; charset=utf-8"},
	{name: "unicode", path: "/unicode", wantStatus: 200, wantBody: "héllo ✓", wantType: "text/plain; charset=utf-8"},
	{name: "bytes", path: "/bytes", wantStatus: 200, wantBody: "\x00\x01", wantType: "application/octet-stream"},
	{name: "dict", path: "/dict", wantStatus: 200, wantBody: `{"a":1}`, wantType: "application/json"},
	{name: "list", path: "/list", wantStatus: 200, wantBody: `[1,2]`, wantType: "application/json"},
	{name: "none", path: "/none", wantStatus: 204, wantBody: ""},
	{name: "status and body", path: "/status", wantStatus: 201, wantBody: "made", wantType: "text/plain; charset=utf-8"},
	{name: "status, headers and body", path: "/headers", wantStatus: 202, wantBody: "a,b", wantType: "text/csv",
		wantHeader: [2]string{"X-Thing", "1"}},
	{name: "binary echo", method: "POST", path: "/echo", body: "\x00\xff\x10raw", wantStatus: 200,
		wantBody: "\x00\xff\x10raw", wantType: "application/octet-stream"},
	{name: "json body", method: "POST", path: "/json", body: `{"x":[1,"two"]}`, wantStatus: 200, wantBody: `{"got":[1,"two"]}`},
	{name: "query", path: "/query", query: "a=1&b=&a=2", wantStatus: 200, wantBody: `{"q":{"a":"1","b":""},"qs":"a=1&b=&a=2"}`},
	{name: "header lookup ignores case", path: "/header", header: http.Header{"X-Custom": {"v1", "v2"}},
		wantStatus: 200, wantBody: "v1|v1,v2"},
	{name: "method and activation id", method: "PUT", path: "/method", wantStatus: 200, wantBody: "PUT act-1"},
	{name: "print captured", path: "/print", query: "n=7", wantStatus: 200, wantBody: "ok",
		wantLogs: "out 7\nerr\n", exactLogs: true},
	{name: "exception", path: "/raise", wantStatus: 500, wantBody: "", wantErr: "BadInput: bad input",
		wantLogs: "bad input"},
	{name: "bad return type", path: "/badtype", wantStatus: 500, wantErr: "handle returned "},
	{name: "logs truncated", path: "/spam", wantStatus: 200, wantBody: "ok", wantLogs: "...[truncated 134464 bytes]"},
	{name: "handler's own 404", path: "/nowhere", wantStatus: 404, wantBody: "no route /nowhere"},
}

var interpreters = []struct {
	runtime, file, code string
}{
	{"python3", "handler.py", pythonHandler},
	{"node", "handler.js", nodeHandler},
}

func TestHostResponses(t *testing.T) {
	for _, in := range interpreters {
		t.Run(in.runtime, func(t *testing.T) {
			h := startHost(t, in.runtime, in.file, map[string]string{in.file: in.code})
			r := h.ready(t)
			if r.PID == 0 || r.InitMS <= 0 {
				t.Errorf("ready frame = %+v, want pid and init_ms", r)
			}
			for _, tc := range hostCases {
				t.Run(tc.name, func(t *testing.T) {
					checkCase(t, h, tc)
				})
			}
			// Output outside calls went to the instance's stdout, not a call.
			if !strings.Contains(h.output.String(), "imported") {
				t.Errorf("import-time output missing from the host's stdout: %q", h.output.String())
			}
		})
	}
}

func checkCase(t *testing.T, h *testHost, tc hostCase) {
	t.Helper()
	method := tc.method
	if method == "" {
		method = "GET"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.conn.RoundTrip(ctx, &sandbox.Request{
		ActivationID: "act-1", Method: method, Path: tc.path, RawQuery: tc.query,
		Header: tc.header, Body: []byte(tc.body),
	})
	if err != nil {
		t.Fatalf("RoundTrip: %v\nhost output:\n%s", err, h.output.String())
	}
	if resp.Status != tc.wantStatus {
		t.Errorf("status = %d, want %d (error %q, logs %q)", resp.Status, tc.wantStatus, resp.Error, resp.Logs)
	}
	if string(resp.Body) != tc.wantBody && tc.wantStatus != 500 {
		t.Errorf("body = %q, want %q", resp.Body, tc.wantBody)
	}
	if tc.wantType != "" || tc.wantStatus == 204 {
		if got := resp.Header.Get("Content-Type"); got != tc.wantType {
			t.Errorf("Content-Type = %q, want %q", got, tc.wantType)
		}
	}
	if tc.wantHeader[0] != "" && resp.Header.Get(tc.wantHeader[0]) != tc.wantHeader[1] {
		t.Errorf("header %s = %q, want %q (all: %v)", tc.wantHeader[0], resp.Header.Get(tc.wantHeader[0]), tc.wantHeader[1], resp.Header)
	}
	if !strings.Contains(resp.Error, tc.wantErr) || (tc.wantErr == "") != (resp.Error == "") {
		t.Errorf("error = %q, want %q", resp.Error, tc.wantErr)
	}
	if tc.exactLogs && string(resp.Logs) != tc.wantLogs || !strings.Contains(string(resp.Logs), tc.wantLogs) {
		t.Errorf("logs = %q, want %q", resp.Logs, tc.wantLogs)
	}
	if len(resp.Logs) > DefaultLogLimit+200 {
		t.Errorf("logs are %d bytes, over the limit %d", len(resp.Logs), DefaultLogLimit)
	}
}

func TestHostTraceback(t *testing.T) {
	for _, in := range interpreters {
		t.Run(in.runtime, func(t *testing.T) {
			h := startHost(t, in.runtime, in.file, map[string]string{in.file: in.code})
			h.ready(t)
			resp := invoke(t, h.conn, "/raise", "")
			logs := string(resp.Logs)
			if !strings.Contains(logs, in.file) || !strings.Contains(logs, "BadInput") {
				t.Errorf("logs carry no traceback through %s: %q", in.file, logs)
			}
			if strings.Contains(logs, "host.py") || strings.Contains(logs, "host.js") {
				t.Errorf("traceback shows the host's frames: %q", logs)
			}
		})
	}
}

func invoke(t testing.TB, c *Conn, path, query string) *sandbox.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.RoundTrip(ctx, &sandbox.Request{Method: "GET", Path: path, RawQuery: query})
	if err != nil {
		t.Fatalf("RoundTrip %s: %v", path, err)
	}
	return resp
}

func TestHostLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		runtime string
		handler string
		files   map[string]string
		wantErr []string
	}{
		{"python syntax error", "python3", "handler.py",
			map[string]string{"handler.py": "import os\n\ndef handle(req)\n    return 1\n"},
			[]string{"SyntaxError: ", "(handler.py line 3)"}},
		{"python import error", "python3", "handler.py",
			map[string]string{"handler.py": "import wisp_no_such_module\n"},
			[]string{"ModuleNotFoundError: No module named 'wisp_no_such_module' (handler.py line 1)"}},
		{"python error in a helper module", "python3", "handler.py",
			map[string]string{"handler.py": "import helper\n", "helper.py": "x = 1\ny = 1 / 0\n"},
			[]string{"ZeroDivisionError: division by zero (helper.py line 2)"}},
		{"python no handle", "python3", "handler.py",
			map[string]string{"handler.py": "def main(req):\n    return 1\n"},
			[]string{"defines no function handle"}},
		{"python missing file", "python3", "handler.py",
			map[string]string{"other.py": ""},
			[]string{"handler file handler.py is not in the function's code"}},
		{"node syntax error", "node", "handler.js",
			map[string]string{"handler.js": "exports.handle = async (req) => {\n  return (;\n};\n"},
			[]string{"SyntaxError: ", "(handler.js line 2)"}},
		{"node throw at load", "node", "handler.js",
			map[string]string{"handler.js": "const x = 1;\nthrow new Error('boom');\n"},
			[]string{"Error: boom (handler.js line 2)"}},
		{"node missing module", "node", "handler.js",
			map[string]string{"handler.js": "require('wisp-no-such-module');\n"},
			[]string{"Cannot find module 'wisp-no-such-module'", "(handler.js line 1)"}},
		{"node no handle", "node", "handler.js",
			map[string]string{"handler.js": "exports.main = () => 1;\n"},
			[]string{"does not export a function handle"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHost(t, tt.runtime, tt.handler, tt.files)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := h.conn.WaitReady(ctx)
			if !errors.Is(err, errdefs.ErrCrashed) {
				t.Fatalf("WaitReady err = %v, want ErrCrashed", err)
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("err %T is not a *LoadError", err)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %q, want it to contain %q (logs %q)", err, want, le.Logs)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("err spans lines: %q", err)
			}
			// The host exits; calls fail with the same reason.
			select {
			case <-h.exited:
			case <-time.After(10 * time.Second):
				t.Fatal("host still running after a failed load")
			}
			if _, err := h.conn.RoundTrip(ctx, &sandbox.Request{Path: "/"}); !errors.As(err, &le) {
				t.Errorf("RoundTrip after failed load: %v, want the LoadError", err)
			}
		})
	}
}

func TestHostCrashMidCall(t *testing.T) {
	for _, in := range interpreters {
		t.Run(in.runtime, func(t *testing.T) {
			h := startHost(t, in.runtime, in.file, map[string]string{in.file: in.code}, "WISP_CONCURRENCY=2")
			h.ready(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// One call is waiting in the handler when another kills the host.
			slow := make(chan error, 1)
			go func() {
				_, err := h.conn.RoundTrip(ctx, &sandbox.Request{Path: "/sleep", RawQuery: "s=5"})
				slow <- err
			}()
			time.Sleep(200 * time.Millisecond)
			_, err := h.conn.RoundTrip(ctx, &sandbox.Request{Path: "/exit"})
			if !errors.Is(err, errdefs.ErrCrashed) {
				t.Fatalf("RoundTrip /exit: %v, want ErrCrashed", err)
			}
			if err := <-slow; !errors.Is(err, errdefs.ErrCrashed) {
				t.Errorf("pending RoundTrip: %v, want ErrCrashed", err)
			}
			select {
			case <-h.conn.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("Done not closed after the host died")
			}
			if _, err := h.conn.RoundTrip(ctx, &sandbox.Request{Path: "/str"}); !errors.Is(err, errdefs.ErrCrashed) {
				t.Errorf("RoundTrip after crash: %v, want ErrCrashed", err)
			}
		})
	}
}

func TestHostTimeout(t *testing.T) {
	for _, in := range interpreters {
		t.Run(in.runtime, func(t *testing.T) {
			h := startHost(t, in.runtime, in.file, map[string]string{in.file: in.code})
			h.ready(t)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := h.conn.RoundTrip(ctx, &sandbox.Request{Path: "/sleep", RawQuery: "s=3"})
			if !errors.Is(err, errdefs.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want ErrTimeout", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("RoundTrip returned after %s, want about 300ms", d)
			}
		})
	}
}

func TestHostConcurrency(t *testing.T) {
	const sleep = 600 * time.Millisecond
	pyAsync := strings.Replace(pythonHandler, "def handle(req):", "async def handle(req):", 1)
	pyAsync = strings.Replace(pyAsync, "import os, sys, time", "import asyncio, os, sys, time", 1)
	pyAsync = strings.Replace(pyAsync, "time.sleep(float(", "await asyncio.sleep(float(", 1)
	tests := []struct {
		name, runtime, file, code string
		concurrency               int
		waves                     int // sleeps 8 calls should take
	}{
		{"python threads", "python3", "handler.py", pythonHandler, 8, 1},
		{"python threads bounded", "python3", "handler.py", pythonHandler, 4, 2},
		{"python async", "python3", "handler.py", pyAsync, 1, 1},
		{"node", "node", "handler.js", nodeHandler, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHost(t, tt.runtime, tt.file, map[string]string{tt.file: tt.code},
				fmt.Sprintf("WISP_CONCURRENCY=%d", tt.concurrency))
			h.ready(t)
			invoke(t, h.conn, "/str", "") // warm up
			var wg sync.WaitGroup
			start := time.Now()
			for i := range 8 {
				wg.Go(func() {
					n := fmt.Sprint(i)
					resp := invoke(t, h.conn, "/sleep", fmt.Sprintf("s=%g&n=%s", sleep.Seconds(), n))
					if string(resp.Body) != n {
						t.Errorf("call %s got body %q (error %q)", n, resp.Body, resp.Error)
					}
					// Each call's logs hold only its own prints.
					if want := strings.Repeat("call "+n+"\n", 3); string(resp.Logs) != want {
						t.Errorf("call %s logs = %q, want %q", n, resp.Logs, want)
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			lo, hi := time.Duration(tt.waves)*sleep, time.Duration(tt.waves)*sleep+sleep*3/4
			if elapsed < lo || elapsed > hi {
				t.Errorf("8 calls took %s, want %s to %s", elapsed, lo, hi)
			}
		})
	}
}

func TestPythonTupleAndAsyncForms(t *testing.T) {
	code := `
import asyncio

async def handle(req):
    await asyncio.sleep(0)
    if req.path == "/tuple-none":
        return 304, None
    if req.path == "/multi":
        return 200, {"Set-Cookie": ["a=1", "b=2"]}, {"ok": True}
    if req.path == "/badstatus":
        return "200", "x"
    if req.path == "/exit":
        raise SystemExit(2)
    return (1, 2, 3, 4)
`
	h := startHost(t, "python3", "main.py", map[string]string{"main.py": code})
	h.ready(t)
	tests := []struct {
		path       string
		wantStatus int
		wantType   string
		wantErr    string
	}{
		{"/tuple-none", 304, "", ""},
		{"/multi", 200, "application/json", ""},
		{"/badstatus", 500, "", "handle returned status '200'"},
		{"/exit", 500, "", "SystemExit: 2"},
		{"/other", 500, "", "handle returned a tuple of 4 items"},
	}
	for _, tt := range tests {
		resp := invoke(t, h.conn, tt.path, "")
		if resp.Status != tt.wantStatus || resp.Header.Get("Content-Type") != tt.wantType || !strings.Contains(resp.Error, tt.wantErr) {
			t.Errorf("%s: status %d type %q error %q; want %d %q %q", tt.path, resp.Status,
				resp.Header.Get("Content-Type"), resp.Error, tt.wantStatus, tt.wantType, tt.wantErr)
		}
	}
	if got := invoke(t, h.conn, "/multi", "").Header.Values("Set-Cookie"); len(got) != 2 {
		t.Errorf("Set-Cookie = %q, want two values", got)
	}
}

func TestNodeExportForms(t *testing.T) {
	tests := []struct {
		name, file, code, want string
	}{
		{"module.exports function", "fn.js", "module.exports = (req) => 'plain ' + req.method;", "plain GET"},
		{"sync handle", "h.js", "exports.handle = (req) => ({ statusCode: 200, body: { n: 1 } });", `{"n":1}`},
		{"ES module", "h.mjs", "export async function handle(req) { return 'esm'; }", "esm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHost(t, "node", tt.file, map[string]string{tt.file: tt.code})
			h.ready(t)
			if got := invoke(t, h.conn, "/", ""); string(got.Body) != tt.want {
				t.Errorf("body = %q (error %q), want %q", got.Body, got.Error, tt.want)
			}
		})
	}
}

// benchEcho measures a warm call: a small body in, the same body out.
func benchEcho(b *testing.B, runtime, file, code string) {
	h := startHost(b, runtime, file, map[string]string{file: code})
	h.ready(b)
	req := &sandbox.Request{
		ActivationID: "bench", Method: "POST", Path: "/echo",
		Header: http.Header{"Content-Type": {"application/octet-stream"}},
		Body:   []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
	}
	// A deadline, as every call has: RoundTrip sends timeout_ms and arms
	// the write interruption.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := h.conn.RoundTrip(ctx, req)
		if err != nil || resp.Status != 200 || len(resp.Body) != len(req.Body) {
			b.Fatalf("RoundTrip: %v %+v", err, resp)
		}
	}
}

func BenchmarkRoundTripPython(b *testing.B) {
	benchEcho(b, "python3", "handler.py", "def handle(req):\n    return req.body\n")
}

func BenchmarkRoundTripNode(b *testing.B) {
	benchEcho(b, "node", "handler.js", "exports.handle = async (req) => req.body;\n")
}

func TestHostSIGTERM(t *testing.T) {
	for _, in := range interpreters {
		t.Run(in.runtime, func(t *testing.T) {
			h := startHost(t, in.runtime, in.file, map[string]string{in.file: in.code}, "WISP_CONCURRENCY=2")
			h.ready(t)
			go func() {
				_, _ = h.conn.RoundTrip(context.Background(), &sandbox.Request{Path: "/sleep", RawQuery: "s=10"})
			}()
			time.Sleep(200 * time.Millisecond)
			if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case <-h.exited:
			case <-time.After(3 * time.Second):
				t.Fatal("host ignored SIGTERM")
			}
			if code := h.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("exit code after SIGTERM = %d, want 0", code)
			}
		})
	}
}

func TestPythonOutputCapture(t *testing.T) {
	code := `
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
log = logging.getLogger("fn")

def handle(req):
    log.info("via logging")
    sys.stdout.buffer.write(b"raw bytes\n")
    print("flushed", flush=True)
    sys.stderr.writelines(["a", "b\n"])
    return "ok"
`
	h := startHost(t, "python3", "handler.py", map[string]string{"handler.py": code})
	h.ready(t)
	resp := invoke(t, h.conn, "/", "")
	if want := "INFO via logging\nraw bytes\nflushed\nab\n"; string(resp.Logs) != want {
		t.Errorf("logs = %q, want %q", resp.Logs, want)
	}
}
