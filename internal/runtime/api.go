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
package runtime

// Paths inside every sandbox.
const (
	SandboxCodeDir    = "/code" // the function's code, read-only
	SandboxRuntimeDir = "/wisp" // the extracted runtime hosts, read-only
	RequestFD         = 3       // host reads requests here
	ResponseFD        = 4       // host writes responses here
)
