// Package hostlog keeps what a sandbox's runtime host writes to stderr: the
// last bytes, so that an instance that dies can say why (its last words),
// while everything passes on to the instance's log. Process and container
// modes share it.
package hostlog

import (
	"bytes"
	"io"
	"sync"
)

// TailSize is how much of the output a Tail keeps.
const TailSize = 4 << 10

// Tail keeps the last TailSize bytes written to it and passes everything
// on to Next (when set). It is safe for concurrent use.
type Tail struct {
	Next io.Writer

	mu  sync.Mutex // guards buf
	buf []byte
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > TailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-TailSize:]...)
	}
	t.mu.Unlock()
	if t.Next != nil {
		return t.Next.Write(p)
	}
	return len(p), nil
}

// String returns the kept bytes.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// LastLine returns the last non-empty line written, at most 300 bytes.
func (t *Tail) LastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := bytes.TrimRight(t.buf, "\r\n ")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	if len(b) > 300 {
		b = b[len(b)-300:]
	}
	return string(b)
}
