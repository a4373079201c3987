// Package runtime holds the runtime hosts shipped inside the wisp binary
// (python3, node, exec) and the wire protocol between a worker and the host
// running inside a sandbox.
//
// Channel: one pair of pipes per instance. The host reads request frames on
// fd 3 and writes response frames on fd 4; its stdout and stderr are the
// instance's own log stream (per-call output is captured by the host and
// returned in the response frame instead).
//
// Frame layout (both directions):
//
//	uint32 big-endian  header length H
//	uint32 big-endian  body length B
//	H bytes            JSON header
//	B bytes            body (raw bytes)
//
// See protocol.go for the header fields.
//
// # Starting a host
//
// A backend extracts the hosts once (Extract, to the directory it mounts at
// SandboxRuntimeDir), asks a Launcher for the argv (Command: nil for exec),
// and starts it with HostEnv's environment, fd 3 = read end of the request
// pipe, fd 4 = write end of the response pipe, stdin /dev/null, stdout and
// stderr to the instance log. It wraps its own pipe ends in NewConn and
// calls WaitReady: the host sends exactly one ready frame, after importing
// the handler (ready=true) or failing to (ready=false with a one-line error
// and a traceback; the host then exits 1). Exec functions have no
// interpreter: the sandbox's init process calls ServeExec on the two pipes
// instead of exec'ing a host.
//
// Calls: Conn.RoundTrip sends one request frame and waits for the response
// with the same id. A host answers calls in any order and serves up to
// WISP_CONCURRENCY of them at once; extra requests queue in the host. A
// serial host (Ready.Serial: the python host with a sync handler and
// WISP_CONCURRENCY 1) serves them one at a time in the order sent and skips
// one whose Deadline passed while it waited (a Skipped response), so the
// worker may queue calls in it on purpose (pipelining) and knows that every
// call behind the oldest unanswered one has not started. A host exits 0
// when fd 3 reaches end of input or on SIGTERM. Nothing in a host stops a handler that runs too
// long (except exec's per-call kill): the worker's context ends, RoundTrip
// returns errdefs.ErrTimeout, and the backend kills the instance.
//
// # Handlers
//
// Python (hosts/python/host.py): def handle(req) or async def handle(req);
// req.body (bytes), req.text, req.json(), req.headers (case-insensitive,
// first value; get_all for every value), req.method, req.path, req.query
// (first value per name), req.query_string, req.activation_id,
// req.timeout_ms (time left when the call was sent; 0: none). Returns str
// (text/plain), bytes (application/octet-stream), dict or list (JSON), None
// (204), (status, body) or (status, headers, body).
//
// Node (hosts/node/host.js): exports.handle = async (req) => ...; the same
// request fields in camelCase with text() a method, headers a plain object
// with lower-case names and headerValues(name) for every value. Returns string, Buffer, object or array
// (JSON), undefined/null (204), or {statusCode, headers, body}: arrays are
// always JSON, so node has no tuple form.
//
// An exception is status 500 with the response's Error "Type: message" and
// the traceback at the end of its Logs.
package runtime

// Paths inside every sandbox.
const (
	SandboxCodeDir    = "/code" // the function's code, read-only
	SandboxRuntimeDir = "/wisp" // the extracted runtime hosts, read-only
	RequestFD         = 3       // host reads requests here
	ResponseFD        = 4       // host writes responses here
)
