package ingest

import (
	"bytes"
	"strings"
	"testing"

	"upsink/schema"
)

// Edge values of every kind reach the 400 body with their column, value and
// the type's reason, in every format; good ones are rendered canonically.
func TestEdgeValues(t *testing.T) {
	tbl := &schema.Table{Name: "edge", Columns: []schema.Column{
		{Name: "i8", Type: mustType(t, "tinyint")},
		{Name: "u64", Type: mustType(t, "bigint unsigned")},
		{Name: "dec", Type: mustType(t, "decimal(5,2)")},
		{Name: "d", Type: mustType(t, "date")},
		{Name: "dt", Type: mustType(t, "datetime(3)")},
		{Name: "ts", Type: mustType(t, "timestamp")},
		{Name: "v", Type: mustType(t, "varchar(3)")},
	}}
	good := []struct {
		f    Format
		body string
	}{
		{NDJSON, `{"i8":-128,"u64":18446744073709551615,"dec":"-999.99","d":"2024-02-29","dt":"2016-12-31T23:59:59.999+01:00","ts":1700000000,"v":"ééé"}`},
		{CSV, "i8,u64,dec,d,dt,ts,v\n-128,18446744073709551615,-999.99,2024-02-29,2016-12-31T23:59:59.999+01:00,1700000000,ééé\n"},
		{Form, "i8=-128&u64=18446744073709551615&dec=-999.99&d=2024-02-29&dt=2016-12-31T23:59:59.999%2B01:00&ts=1700000000&v=%C3%A9%C3%A9%C3%A9"},
	}
	want := "-128\t18446744073709551615\t-999.99\t2024-02-29\t2016-12-31 22:59:59.999\t2023-11-14 22:13:20\tééé\n"
	var d Decoder
	for _, g := range good {
		out, n, err := d.Decode(nil, tbl, g.f, Options{}, []byte(g.body))
		if err != nil || n != 1 || string(out) != want {
			t.Errorf("%v: %d rows, %v\n got %q\nwant %q", g.f, n, err, out, want)
		}
	}
	bad := `{"i8":128,"u64":-1,"dec":1.005,"d":"2023-02-29","dt":"2016-12-31 23:59:60","ts":"2038-01-19 03:14:08","v":"abcd"}`
	wantErr := `{"error":"out of range for tinyint (-128..127)","index":0,"column":"i8","value":"128","errors":[` +
		`{"error":"out of range for bigint unsigned (0..18446744073709551615)","index":0,"column":"u64","value":"-1"},` +
		`{"error":"more than 2 fraction digits for decimal(5,2)","index":0,"column":"dec","value":"1.005"},` +
		`{"error":"no such day in that month","index":0,"column":"d","value":"2023-02-29"},` +
		`{"error":"leap second (:60): MariaDB has none","index":0,"column":"dt","value":"2016-12-31 23:59:60"},` +
		`{"error":"out of range for timestamp (1970-01-01 00:00:01 .. 2038-01-19 03:14:07 UTC)","index":0,"column":"ts","value":"2038-01-19 03:14:08"},` +
		`{"error":"longer than 3 characters","index":0,"column":"v","value":"abcd"}],"total":7}`
	_, n, err := d.Decode(nil, tbl, JSON, Options{}, []byte(bad))
	e, ok := err.(*Error)
	if !ok || n != 0 {
		t.Fatalf("%d rows, %v", n, err)
	}
	if got := string(e.AppendJSON(nil)); got != wantErr {
		t.Errorf("got  %s\nwant %s", got, wantErr)
	}
}

// A body of commas costs no memory in proportion: a header is bounded, a
// record's fields beyond the header's are counted, not kept.
func TestCSVManyFields(t *testing.T) {
	var d Decoder
	body := append([]byte("device,temp\n"), bytes.Repeat([]byte(","), 100000)...)
	_, _, err := d.Decode(nil, readings(t), CSV, Options{}, body)
	if got := err.(*Error).First.Reason; got != "record has 100001 fields, want 2" || cap(d.fields) > 16 {
		t.Errorf("%s; cap(fields) %d", got, cap(d.fields))
	}
	_, _, err = d.Decode(nil, ignoring(readings(t)), CSV, Options{}, bytes.Repeat([]byte("x,"), 5000))
	if got := err.(*Error).First.Reason; got != "more than 4096 columns in the header" {
		t.Error(got)
	}
	// Scratch buffers do not keep a large value's capacity.
	big := `{"device":"d","payload":"` + strings.Repeat(`\u00e9`, 100000) + `"}`
	if _, n, err := d.Decode(nil, readings(t), JSON, Options{}, []byte(big)); n != 1 || err != nil {
		t.Fatal(err)
	}
	if cap(d.str) > keepCap || cap(d.row) > keepCap {
		t.Errorf("kept %d, %d bytes", cap(d.str), cap(d.row))
	}
}
