package runtime

import (
	"encoding/json"
	"unicode/utf8"
)

// decodeResponseHeader decodes a response frame's header into h, as
// json.Unmarshal does. Frames as the hosts write them (the known keys, each
// once, strings without escapes, integer numbers) take a fast path without
// reflection: json.Unmarshal was 5 % of the server's CPU time on the warm
// path. Anything else (an escape, such as a newline in logs; an unknown or
// repeated key; null) goes to json.Unmarshal, which then decides the
// result or the error. FuzzDecodeResponseHeader holds the two to the same
// results.
func decodeResponseHeader(b []byte, h *ResponseHeader) error {
	var fast ResponseHeader
	if (&respScanner{b: b}).header(&fast) {
		*h = fast
		return nil
	}
	*h = ResponseHeader{}
	return json.Unmarshal(b, h)
}

// respScanner reads one ResponseHeader; every method returns false when
// the input is not in the fast path's shape.
type respScanner struct {
	b []byte
	i int
}

func (s *respScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// is consumes c (after whitespace) if it comes next.
func (s *respScanner) is(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string without escapes or control characters, in valid
// UTF-8.
func (s *respScanner) str() (string, bool) {
	if !s.is('"') {
		return "", false
	}
	start := s.i
	ascii := true
	for ; s.i < len(s.b); s.i++ {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(v) {
				return "", false
			}
			return string(v), true
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// integer reads an integer of at most 18 digits (no fraction, exponent or
// leading zeros).
func (s *respScanner) integer() (int64, bool) {
	s.ws()
	neg := s.i < len(s.b) && s.b[s.i] == '-'
	if neg {
		s.i++
	}
	start := s.i
	var n int64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		n = n*10 + int64(s.b[s.i]-'0')
		s.i++
	}
	digits := s.i - start
	if digits == 0 || digits > 18 || (digits > 1 && s.b[start] == '0') {
		return 0, false
	}
	if s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

func (s *respScanner) boolean() (bool, bool) {
	s.ws()
	switch {
	case len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "true":
		s.i += 4
		return true, true
	case len(s.b)-s.i >= 5 && string(s.b[s.i:s.i+5]) == "false":
		s.i += 5
		return false, true
	}
	return false, false
}

// headers reads {"name": ["value", ...], ...}.
func (s *respScanner) headers() (map[string][]string, bool) {
	if !s.is('{') {
		return nil, false
	}
	m := make(map[string][]string, 2)
	if s.is('}') {
		return m, true
	}
	for {
		k, ok := s.str()
		if !ok || !s.is(':') || !s.is('[') {
			return nil, false
		}
		vs := []string{}
		if !s.is(']') {
			for {
				v, ok := s.str()
				if !ok {
					return nil, false
				}
				vs = append(vs, v)
				if s.is(']') {
					break
				}
				if !s.is(',') {
					return nil, false
				}
			}
		}
		m[k] = vs
		if s.is('}') {
			return m, true
		}
		if !s.is(',') {
			return nil, false
		}
	}
}

// header reads the whole document into h.
func (s *respScanner) header(h *ResponseHeader) bool {
	if !s.is('{') {
		return false
	}
	if !s.is('}') {
		var seen uint8
		for {
			k, ok := s.str()
			if !ok || !s.is(':') {
				return false
			}
			var bit uint8
			switch k {
			case "id":
				bit = 1
				h.ID, ok = s.str()
			case "status":
				bit = 2
				var n int64
				n, ok = s.integer()
				h.Status = int(n)
				ok = ok && int64(h.Status) == n
			case "headers":
				bit = 4
				h.Headers, ok = s.headers()
			case "error":
				bit = 8
				h.Error, ok = s.str()
			case "logs":
				bit = 16
				h.Logs, ok = s.str()
			case "run_us":
				bit = 32
				h.RunUS, ok = s.integer()
			case "skipped":
				bit = 64
				h.Skipped, ok = s.boolean()
			default:
				return false
			}
			if !ok || seen&bit != 0 {
				return false
			}
			seen |= bit
			if s.is('}') {
				break
			}
			if !s.is(',') {
				return false
			}
		}
	}
	s.ws()
	return s.i == len(s.b)
}
