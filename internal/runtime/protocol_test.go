package runtime

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func frame(h string, body string) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(len(h)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(append(b, h...), body...)
}

func TestFrameRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("x"), copyLimit+1) // written in two writes
	tests := []struct {
		name   string
		header any
		body   []byte
		want   string // header JSON as read back
	}{
		{"struct header, no body", Ready{Ready: true, PID: 7}, nil, `{"ready":true,"pid":7}`},
		{"raw header, small body", []byte(`{"id":"1"}`), []byte("hello"), `{"id":"1"}`},
		{"RawMessage header, binary body", json.RawMessage(`{}`), []byte{0, 1, 2, 255}, `{}`},
		{"large body", RequestHeader{ID: "9", Method: "POST", Path: "/"}, big,
			`{"id":"9","method":"POST","path":"/","query":""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteFrame(&buf, tt.header, tt.body); err != nil {
				t.Fatal(err)
			}
			// A second frame follows to check the reader stops at the boundary.
			if err := WriteFrame(&buf, []byte(`{"next":1}`), nil); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(&buf)
			hdr, body, err := ReadFrame(r, 1<<10, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if string(hdr) != tt.want {
				t.Errorf("header = %s, want %s", hdr, tt.want)
			}
			if !bytes.Equal(body, tt.body) {
				t.Errorf("body = %d bytes, want %d", len(body), len(tt.body))
			}
			if hdr, _, err := ReadFrame(r, 1<<10, 1<<20); err != nil || string(hdr) != `{"next":1}` {
				t.Fatalf("next frame = %s, %v", hdr, err)
			}
			if _, _, err := ReadFrame(r, 1<<10, 1<<20); err != io.EOF {
				t.Fatalf("at end: err = %v, want io.EOF", err)
			}
		})
	}
}

func TestWriteFrameErrors(t *testing.T) {
	if err := WriteFrame(io.Discard, []byte{}, nil); err == nil {
		t.Error("empty header: no error")
	}
	if err := WriteFrame(io.Discard, func() {}, nil); err == nil {
		t.Error("unencodable header: no error")
	}
}

func TestReadFrameErrors(t *testing.T) {
	tests := []struct {
		name       string
		in         []byte
		maxH, maxB int
		wantHdr    bool // header returned alongside the error
		wantIs     error
		wantMsg    string
	}{
		{"truncated prefix", []byte{0, 0, 0}, 10, 10, false, io.ErrUnexpectedEOF, "unexpected EOF"},
		{"truncated header", frame(`{"a":1}`, "")[:10], 10, 10, false, io.ErrUnexpectedEOF, "read frame header"},
		{"truncated body", frame(`{}`, "hello")[:12], 10, 10, false, io.ErrUnexpectedEOF, "read frame body"},
		{"empty header", frame("", "x"), 10, 10, false, nil, "empty header"},
		{"header over limit", frame(`{"a":12345}`, ""), 4, 10, false, errdefs.ErrTooLarge,
			"header of 11 bytes exceeds the limit of 4 bytes"},
		{"body over limit", frame(`{}`, "0123456789"), 10, 4, true, errdefs.ErrTooLarge,
			"body of 10 bytes exceeds the limit of 4 bytes"},
		{"huge declared body", append(binary.BigEndian.AppendUint32([]byte{0, 0, 0, 2}, 0xffffffff), "{}"...), 10, 1 << 20, false, io.ErrUnexpectedEOF,
			"skip frame body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr, body, err := ReadFrame(bufio.NewReader(bytes.NewReader(tt.in)), tt.maxH, tt.maxB)
			if err == nil {
				t.Fatalf("no error; header %q body %q", hdr, body)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantMsg)
			}
			if (hdr != nil) != tt.wantHdr || body != nil {
				t.Errorf("header %q body %q returned with the error", hdr, body)
			}
		})
	}
}

func TestReadFrameSkipsOversizedBody(t *testing.T) {
	in := append(frame(`{"id":"1"}`, strings.Repeat("z", 100)), frame(`{"id":"2"}`, "ok")...)
	r := bufio.NewReader(bytes.NewReader(in))
	hdr, _, err := ReadFrame(r, 100, 10)
	if !errors.Is(err, errdefs.ErrTooLarge) || string(hdr) != `{"id":"1"}` {
		t.Fatalf("first frame: %q, %v", hdr, err)
	}
	hdr, body, err := ReadFrame(r, 100, 10)
	if err != nil || string(hdr) != `{"id":"2"}` || string(body) != "ok" {
		t.Fatalf("second frame: %q %q %v", hdr, body, err)
	}
}

func TestTruncateLogs(t *testing.T) {
	tests := []struct {
		in    string
		limit int
		want  string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"0123456789abc", 10, "0123456789\n...[truncated 3 bytes]\n"},
		{"anything", -1, "anything"},
	}
	for _, tt := range tests {
		if got := string(TruncateLogs([]byte(tt.in), tt.limit)); got != tt.want {
			t.Errorf("TruncateLogs(%q, %d) = %q, want %q", tt.in, tt.limit, got, tt.want)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(frame(`{"id":"1","status":200}`, "body"), 64, 64)
	f.Add(frame(`{}`, ""), 2, 0)
	f.Add(append(frame(`{}`, "a"), frame(`{"x":1}`, "bb")...), 16, 1)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1<<20, 1<<20)
	f.Add([]byte{0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, '{'}, 10, 10)
	f.Add([]byte{}, 0, 0)
	f.Add(frame(`{"a":"b"}`, "xyz")[:9], -1, -5)
	f.Fuzz(func(t *testing.T, in []byte, maxH, maxB int) {
		maxH, maxB = maxH%(1<<20), maxB%(1<<20) // keep allocations sane
		r := bufio.NewReader(bytes.NewReader(in))
		consumed := 0
		for range 8 {
			hdr, body, err := ReadFrame(r, maxH, maxB)
			if len(hdr) > max(maxH, 0) || len(body) > max(maxB, 0) {
				t.Fatalf("limits %d/%d not respected: header %d, body %d", maxH, maxB, len(hdr), len(body))
			}
			if err != nil {
				if hdr != nil && !errors.Is(err, errdefs.ErrTooLarge) {
					t.Fatalf("header returned with an error other than ErrTooLarge: %v", err)
				}
				if hdr == nil {
					return
				}
				consumed += prefixLen + len(hdr) + int(binary.BigEndian.Uint32(in[consumed+4:]))
				continue
			}
			if len(hdr) == 0 {
				t.Fatal("empty header without error")
			}
			// What was read is exactly the next frame of the input.
			want := in[consumed : consumed+prefixLen+len(hdr)+len(body)]
			var got bytes.Buffer
			if err := WriteFrame(&got, hdr, body); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("re-encoded frame differs from input")
			}
			consumed += len(want)
		}
	})
}
