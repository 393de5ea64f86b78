package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"upsink/schema"
)

// fuzzTable: a table on which many inputs succeed (all nullable, one
// default) or, with strict, fail in every way (a not_null column, unknown
// columns rejected).
func fuzzTable(t testing.TB, strict bool) *schema.Table {
	tbl := readings(t)
	if !strict {
		tbl = ignoring(tbl)
		tbl.Columns = append([]schema.Column(nil), tbl.Columns...)
		tbl.Columns[0].NotNull = false
	}
	return tbl
}

// fuzzDecode checks what every decoder promises: no panic; an *Error with 0
// rows and dst as given, or exactly rows well-escaped lines of as many
// fields as the table has columns, after dst's bytes.
func fuzzDecode(t *testing.T, f Format, o Options, body []byte, strict bool) (int, error) {
	tbl := fuzzTable(t, strict)
	var d Decoder
	dst := []byte("prefix")
	out, n, err := d.Decode(dst, tbl, f, o, body)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error of type %T: %v", err, err)
		}
		if n != 0 || string(out) != "prefix" {
			t.Fatalf("error with rows %d, out %q", n, out)
		}
		if e.Total < 1+len(e.More) || len(e.More) > MaxMore || !json.Valid(e.AppendJSON(nil)) {
			t.Fatalf("bad error %+v", e)
		}
		return 0, err
	}
	if string(out[:6]) != "prefix" {
		t.Fatalf("dst changed")
	}
	rows := parseTSV(t, out[6:])
	if len(rows) != n {
		t.Fatalf("%d rows, %d lines", n, len(rows))
	}
	for _, r := range rows {
		if len(r) != len(tbl.Columns) {
			t.Fatalf("row of %d fields, want %d", len(r), len(tbl.Columns))
		}
	}
	return n, nil
}

func FuzzJSON(f *testing.F) {
	for _, c := range cases {
		if c.f == JSON {
			f.Add([]byte(c.body), false)
			f.Add([]byte(c.body), true)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, strict bool) {
		if _, err := fuzzDecode(t, JSON, Options{}, body, strict); err == nil && !json.Valid(body) && !bytes.HasPrefix(body, bom) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
	})
}

func FuzzNDJSON(f *testing.F) {
	for _, c := range cases {
		if c.f == NDJSON || c.f == JSON {
			f.Add([]byte(c.body), false)
		}
	}
	f.Add(ndjsonBody(3), true)
	f.Fuzz(func(t *testing.T, body []byte, strict bool) {
		if _, err := fuzzDecode(t, NDJSON, Options{}, body, strict); err == nil {
			for _, l := range bytes.Split(stripBOM(body), []byte("\n")) {
				if len(bytes.TrimSpace(l)) > 0 && !json.Valid(l) {
					t.Fatalf("accepted invalid JSON line %q", l)
				}
			}
		}
	})
}

func FuzzCSV(f *testing.F) {
	for _, c := range cases {
		if c.f == CSV {
			f.Add([]byte(c.body), false, c.opt == "")
		}
	}
	f.Add(csvBody(3), true, true)
	f.Fuzz(func(t *testing.T, body []byte, strict, header bool) {
		o := Options{HeaderAbsent: !header}
		if !header && len(body) > 0 && body[0]&1 == 1 {
			o.Columns = []byte("temp,device,x")
		}
		fuzzDecode(t, CSV, o, body, strict)
	})
}

func FuzzForm(f *testing.F) {
	for _, c := range cases {
		if c.f == Form {
			f.Add([]byte(c.body), false)
			f.Add([]byte(c.body), true)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, strict bool) {
		n, err := fuzzDecode(t, Form, Options{}, body, strict)
		if err == nil && n != 1 {
			t.Fatalf("a form is one row, got %d", n)
		}
	})
}
