// Package benchcmp compares decoders for package ingest (issue 9): the
// hand-written tokenizers of upsink/ingest against valyala/fastjson,
// encoding/json and encoding/csv, each turning the same body into the same
// TSV rows. It is its own module so that upsink does not depend on the
// losers; run it with
//
//	cd ingest/benchcmp && go test -bench . -benchtime 2000x -count 5
//
// Every contender does the same work around its tokenizer: find the column
// of each field by name (linear scan), keep its text, write the row in table
// order, escaped for LOAD DATA. Value checks are left out of all of them
// (ingest's Decoder gets an Encode that copies), so the figures compare
// tokenizing alone.
package benchcmp

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"testing"

	"github.com/valyala/fastjson"

	"upsink/ingest"
	"upsink/schema"
)

const rows = 1000

var cols = []string{"device", "temp", "ts", "ok", "n"}

func table() *schema.Table {
	t := &schema.Table{Name: "readings"}
	for _, c := range []string{"varchar(64)", "double", "datetime(6)", "bool", "int"} {
		ty, err := schema.ParseType(c)
		if err != nil {
			panic(err)
		}
		t.Columns = append(t.Columns, schema.Column{Name: cols[len(t.Columns)], Type: ty})
	}
	return t
}

// ndjson: 1,000 lines of ~100 bytes.
func ndjson() []byte {
	var b []byte
	for i := range rows {
		b = fmt.Appendf(b, `{"device":"sensor-%04d","temp":%d.%d,"ts":"2026-01-02 03:04:05.123456","ok":true,"n":%d}`+"\n", i, 10+i%20, i%10, i*7919)
	}
	return b
}

// csvBody: a header and 1,000 records of ~60 bytes, one field quoted.
func csvBody() []byte {
	b := []byte("device,temp,ts,ok,n\r\n")
	for i := range rows {
		b = fmt.Appendf(b, "\"sensor, %04d\",%d.%d,2026-01-02 03:04:05.123456,true,%d\r\n", i, 10+i%20, i%10, i*7919)
	}
	return b
}

func copyEncode(_ schema.Type, dst, v []byte) ([]byte, error) { return append(dst, v...), nil }

// rowBuilder is the work every contender shares around its tokenizer.
type rowBuilder struct {
	start, end [8]int
	set        [8]bool
	buf        []byte
}

func (r *rowBuilder) begin() { r.set = [8]bool{}; r.buf = r.buf[:0] }

func (r *rowBuilder) col(name []byte) int {
	for i, c := range cols {
		if c == string(name) {
			return i
		}
	}
	return -1
}

func (r *rowBuilder) put(i int, v []byte) {
	if i < 0 {
		return
	}
	r.start[i] = len(r.buf)
	r.buf = append(r.buf, v...)
	r.end[i], r.set[i] = len(r.buf), true
}

func (r *rowBuilder) putString(i int, v string) {
	if i < 0 {
		return
	}
	r.start[i] = len(r.buf)
	r.buf = append(r.buf, v...)
	r.end[i], r.set[i] = len(r.buf), true
}

var escTab = [256]byte{0: '0', '\t': 't', '\n': 'n', '\\': '\\'}

func (r *rowBuilder) emit(dst []byte) []byte {
	for i := range cols {
		if i > 0 {
			dst = append(dst, '\t')
		}
		if !r.set[i] {
			dst = append(dst, '\\', 'N')
			continue
		}
		for _, c := range r.buf[r.start[i]:r.end[i]] {
			if e := escTab[c]; e != 0 {
				dst = append(dst, '\\', e)
			} else {
				dst = append(dst, c)
			}
		}
	}
	return append(dst, '\n')
}

// The contenders: each appends body's rows to dst.
type decodeFunc func(dst, body []byte) ([]byte, error)

func handJSON() decodeFunc {
	d := &ingest.Decoder{Encode: copyEncode}
	t := table()
	return func(dst, body []byte) ([]byte, error) {
		out, _, err := d.Decode(dst, t, ingest.NDJSON, ingest.Options{}, body)
		return out, err
	}
}

func handCSV() decodeFunc {
	d := &ingest.Decoder{Encode: copyEncode}
	t := table()
	return func(dst, body []byte) ([]byte, error) {
		out, _, err := d.Decode(dst, t, ingest.CSV, ingest.Options{}, body)
		return out, err
	}
}

func fastJSON() decodeFunc {
	var p fastjson.Parser
	var r rowBuilder
	var scratch []byte
	visit := func(k []byte, v *fastjson.Value) {
		i := r.col(k)
		switch v.Type() {
		case fastjson.TypeString:
			r.put(i, v.GetStringBytes())
		case fastjson.TypeNull:
		default: // the literal text of numbers, true and false; raw JSON of nested values
			scratch = v.MarshalTo(scratch[:0])
			r.put(i, scratch)
		}
	}
	return func(dst, body []byte) ([]byte, error) {
		for len(body) > 0 {
			line := body
			if j := bytes.IndexByte(body, '\n'); j >= 0 {
				line, body = body[:j], body[j+1:]
			} else {
				body = nil
			}
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			v, err := p.ParseBytes(line)
			if err != nil {
				return dst, err
			}
			o, err := v.Object()
			if err != nil {
				return dst, err
			}
			r.begin()
			o.Visit(visit)
			dst = r.emit(dst)
		}
		return dst, nil
	}
}

// stdJSONToken streams the body through json.Decoder.Token (UseNumber keeps
// numbers' text).
func stdJSONToken() decodeFunc {
	var r rowBuilder
	return func(dst, body []byte) ([]byte, error) {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		for {
			tok, err := dec.Token()
			if err == io.EOF {
				return dst, nil
			}
			if err != nil {
				return dst, err
			}
			if tok != json.Delim('{') {
				return dst, fmt.Errorf("not an object: %v", tok)
			}
			r.begin()
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return dst, err
				}
				v, err := dec.Token()
				if err != nil {
					return dst, err
				}
				i := r.col([]byte(k.(string)))
				switch v := v.(type) {
				case string:
					r.putString(i, v)
				case json.Number:
					r.putString(i, string(v))
				case bool:
					r.putString(i, strconv.FormatBool(v))
				}
			}
			if _, err := dec.Token(); err != nil { // '}'
				return dst, err
			}
			dst = r.emit(dst)
		}
	}
}

// stdJSONMap unmarshals each line into a reused map of raw values, strings
// unquoted with a second Unmarshal.
func stdJSONMap() decodeFunc {
	var r rowBuilder
	m := map[string]json.RawMessage{}
	return func(dst, body []byte) ([]byte, error) {
		for len(body) > 0 {
			line := body
			if j := bytes.IndexByte(body, '\n'); j >= 0 {
				line, body = body[:j], body[j+1:]
			} else {
				body = nil
			}
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			clear(m)
			if err := json.Unmarshal(line, &m); err != nil {
				return dst, err
			}
			r.begin()
			for k, v := range m {
				i := r.col([]byte(k))
				switch {
				case v[0] == '"':
					var s string
					if err := json.Unmarshal(v, &s); err != nil {
						return dst, err
					}
					r.putString(i, s)
				case string(v) == "null":
				default:
					r.put(i, v)
				}
			}
			dst = r.emit(dst)
		}
		return dst, nil
	}
}

// stdCSV reads with encoding/csv, ReuseRecord set.
func stdCSV() decodeFunc {
	var r rowBuilder
	var idx []int
	return func(dst, body []byte) ([]byte, error) {
		cr := csv.NewReader(bytes.NewReader(body))
		cr.ReuseRecord = true
		h, err := cr.Read()
		if err != nil {
			return dst, err
		}
		idx = idx[:0]
		for _, name := range h {
			idx = append(idx, r.col([]byte(name)))
		}
		for {
			rec, err := cr.Read()
			if err == io.EOF {
				return dst, nil
			}
			if err != nil {
				return dst, err
			}
			r.begin()
			for k, f := range rec {
				if f != "" {
					r.putString(idx[k], f)
				}
			}
			dst = r.emit(dst)
		}
	}
}

var jsonContenders = []struct {
	name string
	mk   func() decodeFunc
}{
	{"hand", handJSON},
	{"fastjson", fastJSON},
	{"encoding-json-Token", stdJSONToken},
	{"encoding-json-Unmarshal-map", stdJSONMap},
}

var csvContenders = []struct {
	name string
	mk   func() decodeFunc
}{
	{"hand", handCSV},
	{"encoding-csv", stdCSV},
}

// All contenders write the same rows.
func TestSameRows(t *testing.T) {
	want, err := handJSON()(nil, ndjson())
	if err != nil || bytes.Count(want, []byte("\n")) != rows {
		t.Fatal(err)
	}
	for _, c := range jsonContenders {
		if got, err := c.mk()(nil, ndjson()); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v\n%.200s\nwant\n%.200s", c.name, err, got, want)
		}
	}
	want, err = handCSV()(nil, csvBody())
	if err != nil || bytes.Count(want, []byte("\n")) != rows {
		t.Fatal(err)
	}
	for _, c := range csvContenders {
		if got, err := c.mk()(nil, csvBody()); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v\n%.200s\nwant\n%.200s", c.name, err, got, want)
		}
	}
}

func bench(b *testing.B, body []byte, mk func() decodeFunc) {
	dec := mk()
	var dst []byte
	dst, _ = dec(dst, body) // warm
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		var err error
		if dst, err = dec(dst[:0], body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/rows, "ns/row")
}

func BenchmarkNDJSON(b *testing.B) {
	body := ndjson()
	for _, c := range jsonContenders {
		b.Run(c.name, func(b *testing.B) { bench(b, body, c.mk) })
	}
}

func BenchmarkCSV(b *testing.B) {
	body := csvBody()
	for _, c := range csvContenders {
		b.Run(c.name, func(b *testing.B) { bench(b, body, c.mk) })
	}
}
