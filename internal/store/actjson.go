package store

import (
	"encoding/base64"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendJSON appends a's stored encoding to b: the document json.Marshal
// would write for a (the same fields, order and omissions), except that
// NaN and infinite numbers, which JSON cannot hold, are written as 0, and a
// start outside the years 0-9999 as the zero time. It
// runs once per call in the writer, where json.Marshal took half of the
// writer's time (3 % of the server's CPU on the warm path) and a third of
// its allocations. TestActivationJSON holds it to json.Marshal field by
// field, so a field added to Activation must be added here too.
func (a *Activation) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, a.ID)
	if a.Namespace != "" {
		b = append(b, `,"namespace":`...)
		b = appendString(b, a.Namespace)
	}
	b = append(b, `,"function":`...)
	b = appendString(b, a.Function)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, a.Version, 10)
	b = append(b, `,"status":`...)
	b = appendString(b, a.Status)
	b = append(b, `,"status_code":`...)
	b = strconv.AppendInt(b, int64(a.StatusCode), 10)
	b = append(b, `,"cold_start":`...)
	b = strconv.AppendBool(b, a.ColdStart)
	if a.InstanceID != "" {
		b = append(b, `,"instance_id":`...)
		b = appendString(b, a.InstanceID)
	}
	b = append(b, `,"start":"`...)
	if y := a.Start.Year(); y >= 0 && y <= 9999 {
		b = a.Start.AppendFormat(b, time.RFC3339Nano)
	} else {
		// json.Unmarshal refuses years outside 0-9999 (a broken clock):
		// keep the record, without its start.
		b = time.Time{}.AppendFormat(b, time.RFC3339Nano)
	}
	b = append(b, `","duration_ms":`...)
	b = appendFloat(b, a.DurationMs)
	if a.EnergyJ != 0 {
		b = append(b, `,"energy_j":`...)
		b = appendFloat(b, a.EnergyJ)
	}
	b = appendOptString(b, `,"energy_source":`, a.EnergySource)
	if a.CacheHit {
		b = append(b, `,"cache_hit":true`...)
	}
	b = appendOptString(b, `,"parent":`, a.Parent)
	b = appendOptString(b, `,"state":`, a.State)
	if a.Attempts != 0 {
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(a.Attempts), 10)
	}
	b = appendOptString(b, `,"source":`, a.Source)
	if len(a.Children) > 0 {
		b = append(b, `,"children":[`...)
		for i, c := range a.Children {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, c)
		}
		b = append(b, ']')
	}
	if len(a.Timings) > 0 {
		b = append(b, `,"timings":{`...)
		var arr [8]string
		keys := arr[:0]
		for k := range a.Timings {
			keys = append(keys, k)
		}
		slices.Sort(keys) // as json.Marshal orders map keys
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendFloat(b, a.Timings[k])
		}
		b = append(b, '}')
	}
	b = appendOptString(b, `,"error":`, a.Error)
	b = appendOptString(b, `,"hint":`, a.Hint)
	b = appendOptString(b, `,"logs":`, a.Logs)
	if a.LogsTruncated {
		b = append(b, `,"logs_truncated":true`...)
	}
	if len(a.Result) > 0 {
		b = append(b, `,"result":"`...)
		b = base64.StdEncoding.AppendEncode(b, a.Result)
		b = append(b, '"')
	}
	if a.ResultTruncated {
		b = append(b, `,"result_truncated":true`...)
	}
	b = append(b, `,"request_bytes":`...)
	b = strconv.AppendInt(b, a.RequestBytes, 10)
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendInt(b, a.ResponseBytes, 10)
	return append(b, '}')
}

func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(append(b, key...), s)
}

// appendFloat writes f as a JSON number (0 for NaN and ±Inf, which JSON
// cannot hold). Its text may differ from json.Marshal's (1e-07 for 1e-7)
// but decodes to the same float64.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		f = 0
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string as json.Marshal does: quotes,
// backslashes and control characters escaped, invalid UTF-8 replaced by
// U+FFFD, and <, >, &, U+2028 and U+2029 escaped so that the document is
// safe inside HTML and JavaScript.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
