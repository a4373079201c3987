package process

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// maxLogLine is the longest line logWriter emits as one record; longer
// lines are split.
const maxLogLine = 8 << 10

// logWriter turns a sandbox's stdout or stderr (output outside of calls:
// interpreter start-up messages, crashes) into one log record per line.
type logWriter struct {
	log   *slog.Logger
	attrs []slog.Attr

	mu  sync.Mutex // guards buf
	buf []byte
}

func newLogWriter(log *slog.Logger, attrs ...slog.Attr) *logWriter {
	return &logWriter{log: log, attrs: attrs}
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) >= maxLogLine {
				w.emit(w.buf[:maxLogLine])
				w.buf = append(w.buf[:0], w.buf[maxLogLine:]...)
				continue
			}
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) == 0 {
		w.buf = nil // drop the grown array between bursts
	}
	return len(p), nil
}

// Flush emits a final line without a newline.
func (w *logWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
}

func (w *logWriter) emit(line []byte) {
	w.log.LogAttrs(context.Background(), slog.LevelInfo, string(bytes.TrimRight(line, "\r")),
		w.attrs...)
}
