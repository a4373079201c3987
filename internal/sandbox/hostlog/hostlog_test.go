package hostlog

import (
	"bytes"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	tests := []struct {
		name, write, last string
	}{
		{"last line", "starting\nTraceback...\nValueError: boom\n", "ValueError: boom"},
		{"trailing blank lines", "a\nb\n\n\n", "b"},
		{"no newline", "partial", "partial"},
		{"long line is cut to 300 bytes", strings.Repeat("x", 500), strings.Repeat("x", 300)},
		{"nothing", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var next bytes.Buffer
			tl := &Tail{Next: &next}
			if _, err := tl.Write([]byte(tt.write)); err != nil {
				t.Fatal(err)
			}
			if got := tl.LastLine(); got != tt.last {
				t.Errorf("LastLine = %q, want %q", got, tt.last)
			}
			if next.String() != tt.write {
				t.Errorf("Next got %q", next.String())
			}
		})
	}
	var tl Tail
	tl.Write(bytes.Repeat([]byte("y"), 3*TailSize))
	tl.Write([]byte("\nend"))
	if len(tl.String()) != TailSize || tl.LastLine() != "end" {
		t.Errorf("kept %d bytes, last line %q; want %d and end", len(tl.String()), tl.LastLine(), TailSize)
	}
}
