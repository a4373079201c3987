package runtime

import (
	"encoding/json"
	"reflect"
	"testing"
)

var responseHeaderSeeds = []string{
	`{"id":"1","status":200,"headers":{"Content-Type":["text/plain; charset=utf-8"]},"run_us":12}`,
	`{"id":"2","status":500,"headers":{},"error":"ValueError: bad","logs":"Traceback\n..."}`,
	`{"id":"3","status":504,"skipped":true}`,
	` { "id" : "4" , "status" : 201 , "headers" : { "A" : [ ] , "b" : [ "x" , "y" ] } } `,
	`{"id":"5","status":200,"headers":{"X-Ünïcödé":["🚀"]},"logs":"héllo"}`,
	`{}`,
	`{"id":"6","status":200.0}`,
	`{"id":"7","Status":200}`,
	`{"id":"8","status":200,"status":201}`,
	`{"id":"9","status":null,"headers":null}`,
	`{"id":"10","status":-0,"run_us":00}`,
	`{"id":"11","status":99999999999999999999}`,
	`{"id":"12","status":200,"extra":{"nested":[1,2]}}`,
	`{"id":"13","logs":"bad \xff utf-8"}`,
	`{"id":"14","logs":"esc \u00e9 \"q\""}`,
	`{"id":"15","skipped":false} x`,
	`{"id":"16",}`,
	`[1]`,
	``,
}

// The fast path decodes what json.Unmarshal decodes, and hands everything
// else to it.
func TestDecodeResponseHeader(t *testing.T) {
	fast := map[string]bool{} // the frames hosts write take the fast path
	for _, i := range []int{0, 2, 3, 4, 5} {
		fast[responseHeaderSeeds[i]] = true
	}
	for _, in := range responseHeaderSeeds {
		var h ResponseHeader
		if took := (&respScanner{b: []byte(in)}).header(&h); took != fast[in] {
			t.Errorf("%s: fast path %v, want %v", in, took, fast[in])
		}
		checkResponseHeader(t, []byte(in))
	}
}

func checkResponseHeader(t *testing.T, b []byte) {
	t.Helper()
	var got, want ResponseHeader
	gotErr := decodeResponseHeader(b, &got)
	wantErr := json.Unmarshal(b, &want)
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, json.Unmarshal's %v", b, gotErr, wantErr)
	}
	if wantErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %#v\nwant %#v", b, got, want)
	}
}

func FuzzDecodeResponseHeader(f *testing.F) {
	for _, s := range responseHeaderSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkResponseHeader(t, b)
	})
}

func BenchmarkDecodeResponseHeader(b *testing.B) {
	in := []byte(responseHeaderSeeds[0])
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			var h ResponseHeader
			if err := decodeResponseHeader(in, &h); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			var h ResponseHeader
			if err := json.Unmarshal(in, &h); err != nil {
				b.Fatal(err)
			}
		}
	})
}
