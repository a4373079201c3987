package container

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// lineLogger turns a container's stdout or stderr into log lines with the
// instance's attributes. Partial lines wait for their newline (or Flush).
type lineLogger struct {
	log   *slog.Logger
	attrs []slog.Attr

	mu  sync.Mutex // guards buf
	buf []byte
}

// maxLine bounds a line kept waiting for its newline.
const maxLine = 16 << 10

func newLineLogger(log *slog.Logger, attrs ...slog.Attr) *lineLogger {
	return &lineLogger{log: log, attrs: append([]slog.Attr(nil), attrs...)}
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > maxLine {
		l.emit(l.buf)
		l.buf = l.buf[:0]
	}
	return len(p), nil
}

func (l *lineLogger) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if len(line) == 0 {
		return
	}
	l.log.LogAttrs(context.Background(), slog.LevelInfo, string(line), l.attrs...)
}

// Flush logs a last partial line.
func (l *lineLogger) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.emit(l.buf)
	l.buf = nil
}

// uidPool hands out the uids containers run as, one per live container.
type uidPool struct {
	base, count int

	mu   sync.Mutex // guards next and used
	next int
	used map[int]bool
}

func newUIDPool(base, count int) *uidPool {
	return &uidPool{base: base, count: count, used: map[int]bool{}}
}

func (p *uidPool) get() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range p.count {
		uid := p.base + p.next
		p.next = (p.next + 1) % p.count
		if !p.used[uid] {
			p.used[uid] = true
			return uid, nil
		}
	}
	return 0, errdefs.New(errdefs.ErrLimit, "raise the container backend's UIDCount or run fewer instances",
		"all %d container uids from %d are in use", p.count, p.base)
}

func (p *uidPool) put(uid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.used, uid)
}

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
