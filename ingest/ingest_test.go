package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"upsink/schema"
)

func ptr(s string) *string { return &s }

func mustType(t testing.TB, s string) schema.Type {
	t.Helper()
	ty, err := schema.ParseType(s)
	if err != nil {
		t.Fatal(err)
	}
	return ty
}

// readings is the example table plus a column of each kind the
// decoders treat specially.
func readings(t testing.TB) *schema.Table {
	return &schema.Table{Name: "readings", Columns: []schema.Column{
		{Name: "device", Type: mustType(t, "varchar(64)"), NotNull: true},
		{Name: "temp", Type: mustType(t, "double")},
		{Name: "ts", Type: mustType(t, "datetime(6)")},
		{Name: "n", Type: mustType(t, "int"), Default: ptr("7")},
		{Name: "ok", Type: mustType(t, "bool")},
		{Name: "payload", Type: mustType(t, "json")},
		{Name: "data", Type: mustType(t, "blob")},
	}}
}

func ignoring(t *schema.Table) *schema.Table {
	c := *t
	c.Unknown = schema.IgnoreUnknown
	return &c
}

// parseTSV parses LOAD DATA TSV back into rows of fields; NULL is nil.
func parseTSV(t testing.TB, data []byte) [][][]byte {
	t.Helper()
	var rows [][][]byte
	var row [][]byte
	cur := []byte{}
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch c {
		case '\\':
			i++
			if i == len(data) {
				t.Fatalf("dangling escape at end")
			}
			switch data[i] {
			case '0':
				cur = append(cur, 0)
			case 't':
				cur = append(cur, '\t')
			case 'n':
				cur = append(cur, '\n')
			case '\\':
				cur = append(cur, '\\')
			case 'N':
				if len(cur) != 0 || (i+1 < len(data) && data[i+1] != '\t' && data[i+1] != '\n') {
					t.Fatalf("\\N inside a field")
				}
				cur = nil
			default:
				t.Fatalf("unexpected escape \\%c", data[i])
			}
		case '\t':
			row = append(row, cur)
			cur = []byte{}
		case '\n':
			row = append(row, cur)
			rows = append(rows, row)
			row, cur = nil, []byte{}
		default:
			if cur == nil {
				t.Fatalf("data after \\N")
			}
			cur = append(cur, c)
		}
	}
	if len(row) != 0 || len(cur) != 0 {
		t.Fatalf("trailing partial row %q", data)
	}
	return rows
}

type tcase struct {
	name  string
	tbl   func(testing.TB) *schema.Table // nil: readings
	f     Format
	opt   string // query string
	body  string
	want  string // TSV, or (if it starts with '{') the error's JSON
	nrows int
}

const N = `\N`

func row(fields ...string) string { return strings.Join(fields, "\t") + "\n" }

var cases = []tcase{
	// JSON
	{name: "json object", f: JSON, body: `{"device":"d1","temp":21.5,"ts":"2026-01-02 03:04:05"}`,
		want: row("d1", "21.5", "2026-01-02 03:04:05.000000", "7", N, N, N), nrows: 1},
	{name: "json array", f: JSON, body: " [ {\"device\":\"a\"} ,\n{\"device\":\"b\",\"n\":-3}\n] ",
		want: row("a", N, N, "7", N, N, N) + row("b", N, N, "-3", N, N, N), nrows: 2},
	{name: "json empty array", f: JSON, body: `[]`, want: "", nrows: 0},
	{name: "json escapes", f: JSON, body: `{"device":"tab\there \"q\" back\\slash nl\n nul\u0000 \u00e9\ud83d\ude00 \/"}`,
		want: row(`tab\there "q" back\\slash nl\n nul\0 é😀 /`, N, N, "7", N, N, N), nrows: 1},
	{name: "json escaped key", f: JSON, body: `{"d\u0065vice":"x"}`, want: row("x", N, N, "7", N, N, N), nrows: 1},
	{name: "json nested into json", f: JSON, body: `{"device":"d","payload":{"a":[1,2,{"b":null}],"c":"\"x\""}}`,
		want: row("d", N, N, "7", N, `{"a":[1,2,{"b":null}],"c":"\\"x\\""}`, N), nrows: 1},
	{name: "json scalars into json", f: JSON, body: `[{"device":"d","payload":"s"},{"device":"d","payload":12e3},{"device":"d","payload":true}]`,
		want: row("d", N, N, "7", N, `"s"`, N) + row("d", N, N, "7", N, "12e3", N) + row("d", N, N, "7", N, "true", N), nrows: 3},
	{name: "json bools", f: JSON, body: `[{"device":"d","ok":true},{"device":"d","ok":false},{"device":"d","ok":null}]`,
		want: row("d", N, N, "7", "1", N, N) + row("d", N, N, "7", "0", N, N) + row("d", N, N, "7", N, N, N), nrows: 3},
	{name: "json blob base64", f: JSON, body: `{"device":"d","data":"AAl0XG4K"}`,
		want: row("d", N, N, "7", N, N, `\0\tt\\n\n`), nrows: 1},
	{name: "json blob base64 with escaped slash", f: JSON, body: `{"device":"d","data":"\/w=="}`,
		want: row("d", N, N, "7", N, N, "\xff"), nrows: 1},
	{name: "json null takes nullable NULL", f: JSON, body: `{"device":"d","temp":null}`,
		want: row("d", N, N, "7", N, N, N), nrows: 1},
	{name: "json null into defaulted nullable is NULL", f: JSON, body: `{"device":"d","n":null}`,
		want: row("d", N, N, N, N, N, N), nrows: 1},
	{name: "json string into number column", f: JSON, body: `{"device":"d","temp":"1.5"}`,
		want: row("d", "1.5", N, "7", N, N, N), nrows: 1},
	{name: "json number into varchar", f: JSON, body: `{"device":12}`,
		want: row("12", N, N, "7", N, N, N), nrows: 1},
	{name: "json literal backslash N", f: JSON, body: `{"device":"\\N"}`,
		want: row(`\\N`, N, N, "7", N, N, N), nrows: 1},
	{name: "json BOM", f: JSON, body: "\xef\xbb\xbf{\"device\":\"d\"}", want: row("d", N, N, "7", N, N, N), nrows: 1},
	{name: "json unknown ignored", tbl: func(t testing.TB) *schema.Table { return ignoring(readings(t)) }, f: JSON,
		body: `{"x":{"deep":[1,{"y":"z"}]},"device":"d","x":1}`, want: row("d", N, N, "7", N, N, N), nrows: 1},

	// JSON errors
	{name: "json unknown column", f: JSON, body: `{"device":"d","humidity":40}`,
		want: `{"error":"unknown column","index":0,"column":"humidity"}`},
	{name: "json missing not_null", f: JSON, body: `[{"device":"d"},{"temp":1}]`,
		want: `{"error":"missing value for a not_null column without a default","index":1,"column":"device"}`},
	{name: "json null in not_null", f: JSON, body: `{"device":null}`,
		want: `{"error":"null in a not_null column without a default","index":0,"column":"device"}`},
	{name: "json duplicate key", f: JSON, body: `{"device":"a","temp":1,"device":"b"}`,
		want: `{"error":"duplicate column","index":0,"column":"device"}`},
	{name: "json nested into double", f: JSON, body: `{"device":"a","temp":{"c":1}}`,
		want: `{"error":"nested object or array for a non-json column","index":0,"column":"temp","value":"{\"c\":1}"}`},
	{name: "json blob not string", f: JSON, body: `{"device":"a","data":12}`,
		want: `{"error":"blob columns take a base64 string","index":0,"column":"data","value":"12"}`},
	{name: "json bad base64", f: JSON, body: `{"device":"a","data":"!!"}`,
		want: `{"error":"invalid base64","index":0,"column":"data","value":"!!"}`},
	{name: "json bad value", f: JSON, body: `[{"device":"a"},{"device":"b","temp":"abc"}]`,
		want: `{"error":"not a number (want decimal notation, e.g. -1.5e3)","index":1,"column":"temp","value":"abc"}`},
	{name: "json several errors", f: JSON, body: `[{"device":"a","temp":"x"},{"device":"b"},{"temp":"y","q":1}]`,
		want: `{"error":"not a number (want decimal notation, e.g. -1.5e3)","index":0,"column":"temp","value":"x","errors":[{"error":"not a number (want decimal notation, e.g. -1.5e3)","index":2,"column":"temp","value":"y"},{"error":"unknown column","index":2,"column":"q"},{"error":"missing value for a not_null column without a default","index":2,"column":"device"}],"total":4}`},
	{name: "json element not object", f: JSON, body: `[{"device":"a"},[1]]`,
		want: `{"error":"array element is not an object","index":1,"value":"[1]"}`},
	{name: "json empty body", f: JSON, body: ` `, want: `{"error":"invalid JSON: unexpected end of body: empty body","index":0}`},
	{name: "json scalar body", f: JSON, body: `12`,
		want: `{"error":"invalid JSON at offset 0 of the body: the body must be an object or an array of objects","index":0}`},
	{name: "json trailing comma", f: JSON, body: `{"device":"a",}`,
		want: `{"error":"invalid JSON at offset 14 of the body: expected a key","index":0}`},
	{name: "json missing colon", f: JSON, body: `[{"device":"a"},{"device" "b"}]`,
		want: `{"error":"invalid JSON at offset 26 of the body: expected ':' after a key","index":1}`},
	{name: "json truncated", f: JSON, body: `[{"device":"a"},{"device":"b"`,
		want: `{"error":"invalid JSON: unexpected end of body: expected ',' or '}'","index":1}`},
	{name: "json data after", f: JSON, body: `{"device":"a"} {}`,
		want: `{"error":"invalid JSON at offset 15 of the body: data after the object","index":0}`},
	{name: "json control char in string", f: JSON, body: "{\"device\":\"a\tb\"}",
		want: `{"error":"invalid JSON at offset 12 of the body: invalid string","index":0}`},
	{name: "json bad escape", f: JSON, body: `{"device":"\x41"}`,
		want: `{"error":"invalid JSON at offset 11 of the body: invalid string","index":0}`},
	{name: "json bad number", f: JSON, body: `{"device":"a","temp":01}`,
		want: `{"error":"invalid JSON at offset 22 of the body: expected ',' or '}'","index":0}`},
	{name: "json bad literal", f: JSON, body: `{"device":"a","temp":nul}`,
		want: `{"error":"invalid JSON at offset 21 of the body: invalid value","index":0}`},
	{name: "json bad nested", f: JSON, body: `{"device":"a","payload":{"a":1,}}`,
		want: `{"error":"invalid JSON at offset 31 of the body: invalid value","index":0}`},
	{name: "json long value truncated", f: JSON, body: `{"device":"` + strings.Repeat("é", 70) + `"}`,
		want: `{"error":"longer than 64 characters","index":0,"column":"device","value":"` + strings.Repeat("é", 32) + `"}`},

	// NDJSON
	{name: "ndjson", f: NDJSON, body: "{\"device\":\"a\",\"temp\":1}\n\n  \r\n{\"device\":\"b\"}\r\n{\"device\":\"c\"}",
		want: row("a", "1", N, "7", N, N, N) + row("b", N, N, "7", N, N, N) + row("c", N, N, "7", N, N, N), nrows: 3},
	{name: "ndjson empty", f: NDJSON, body: "\n\n", want: "", nrows: 0},
	{name: "ndjson errors by line", f: NDJSON, body: "{\"device\":\"a\"}\n\n{\"device\":\"b\",\"temp\":\"x\"}\n{\"device\":\"c\"\n[1]\n{\"device\":\"d\"} x\n{\"temp\":2}\n",
		want: `{"error":"not a number (want decimal notation, e.g. -1.5e3)","line":3,"column":"temp","value":"x","errors":[{"error":"invalid JSON: unexpected end of line: expected ',' or '}'","line":4},{"error":"invalid JSON at offset 0 of the line: a line must be a JSON object","line":5},{"error":"invalid JSON at offset 15 of the line: data after the object","line":6},{"error":"missing value for a not_null column without a default","line":7,"column":"device"}],"total":5}`},

	// CSV
	{name: "csv", f: CSV, body: "device,temp,ts\na,1.5,2026-01-02 03:04:05\nb,,\n",
		want: row("a", "1.5", "2026-01-02 03:04:05.000000", "7", N, N, N) + row("b", N, N, "7", N, N, N), nrows: 2},
	{name: "csv spreadsheet export", f: CSV,
		body: "\xef\xbb\xbfdevice,temp,payload,n\r\n" +
			"\"Kitchen, north\",\"21.5\",\"{\"\"a\"\": 1}\",\r\n" +
			"\"multi\r\nline\nname\",,,4\r\n" +
			"\"\",-0.5,,\r\n" +
			"\"say \"\"hi\"\"\",1e3,[],3\r\n" +
			"\r\n",
		want: row("Kitchen, north", "21.5", N, N, N, `{"a": 1}`, N) +
			row(`multi`+"\r"+`\nline\nname`, N, N, "4", N, N, N) +
			row("", "-0.5", N, N, N, N, N) +
			row(`say "hi"`, "1000", N, "3", N, "[]", N), nrows: 4},
	{name: "csv header only", f: CSV, body: "device,temp\r\n", want: "", nrows: 0},
	{name: "csv empty", f: CSV, body: "", want: "", nrows: 0},
	{name: "csv no final newline", f: CSV, body: "device\na\nb", want: row("a", N, N, "7", N, N, N) + row("b", N, N, "7", N, N, N), nrows: 2},
	{name: "csv header absent", f: CSV, opt: "header=absent&columns=temp,device", body: "1,a\n2,b\n",
		want: row("a", "1", N, "7", N, N, N) + row("b", "2", N, "7", N, N, N), nrows: 2},
	{name: "csv header absent table order", f: CSV, opt: "header=absent", body: "a,1,,,true,[],\n",
		want: row("a", "1", N, N, "1", "[]", N), nrows: 1},
	{name: "csv utf8 names", tbl: func(t testing.TB) *schema.Table {
		return &schema.Table{Name: "t", Columns: []schema.Column{
			{Name: "température", Type: mustType(t, "double")}, {Name: "appareil", Type: mustType(t, "varchar(8)")}}}
	}, f: CSV, body: "appareil,température\ncuisine,19\n", want: row("19", "cuisine"), nrows: 1},
	{name: "csv unknown ignored", tbl: func(t testing.TB) *schema.Table { return ignoring(readings(t)) }, f: CSV,
		body: "x,device,y\n1,a,2\n", want: row("a", N, N, "7", N, N, N), nrows: 1},
	{name: "csv unnamed column ignored", tbl: func(t testing.TB) *schema.Table { return ignoring(readings(t)) }, f: CSV,
		body: "device,\na,\nb,x\n", want: row("a", N, N, "7", N, N, N) + row("b", N, N, "7", N, N, N), nrows: 2},
	{name: "csv blob raw", f: CSV, body: "device,data\na,\"x\ty\"\n", want: row("a", N, N, "7", N, N, `x\ty`), nrows: 1},

	// CSV errors
	{name: "csv unknown header", f: CSV, body: "device,humidity,wind\na,1,2\n",
		want: `{"error":"unknown column","line":1,"column":"humidity","errors":[{"error":"unknown column","line":1,"column":"wind"}],"total":2}`},
	{name: "csv duplicate header", f: CSV, body: "device,temp,device\na,1,b\n",
		want: `{"error":"duplicate column","line":1,"column":"device"}`},
	{name: "csv empty header name", f: CSV, body: "device,,temp\n",
		want: `{"error":"empty column name","line":1}`},
	{name: "csv field count", f: CSV, body: "device,temp\na,1\n\"b\nc\",2,3\nd\n",
		want: `{"error":"record has 3 fields, want 2","line":3,"errors":[{"error":"record has 1 fields, want 2","line":5}],"total":2}`},
	{name: "csv bad value line of record start", f: CSV, body: "device,temp\n\"a\nb\nc\",1\nd,x\n",
		want: `{"error":"not a number (want decimal notation, e.g. -1.5e3)","line":5,"column":"temp","value":"x"}`},
	{name: "csv empty not_null", f: CSV, body: "device,temp\n,1\n", want: `{"error":"null in a not_null column without a default","line":2,"column":"device"}`},
	{name: "csv missing not_null", f: CSV, body: "temp\n1\n", want: `{"error":"missing value for a not_null column without a default","line":2,"column":"device"}`},
	{name: "csv bare quote", f: CSV, body: "device,temp\na\"b,1\n",
		want: `{"error":"invalid CSV: '\"' in an unquoted field (quote the field and write \"\" for '\"')","line":2}`},
	{name: "csv after closing quote", f: CSV, body: "device,temp\n\"a\"b,1\n",
		want: `{"error":"invalid CSV: unexpected character after a closing quote (a '\"' inside a quoted field is written \"\")","line":2}`},
	{name: "csv unterminated", f: CSV, body: "device,temp\nx,1\n\"a,1\nb,2\n",
		want: `{"error":"invalid CSV: unterminated quoted field","line":3}`},
	{name: "csv columns unknown", f: CSV, opt: "header=absent&columns=device,hum%69dity", body: "a,1\n",
		want: `{"error":"unknown column","line":1,"column":"humidity"}`},

	// Form
	{name: "form", f: Form, body: "device=Kitchen+north%2C+%C3%A9&temp=21.5&ts=&ok=true",
		want: row("Kitchen north, é", "21.5", N, "7", "1", N, N), nrows: 1},
	{name: "form empty", f: Form, body: "", want: `{"error":"missing value for a not_null column without a default","line":1,"column":"device"}`},
	{name: "form errors", f: Form, body: "device=a&device=b&temp=%zz&x=1&%=2",
		want: `{"error":"duplicate column","line":1,"column":"device","errors":[{"error":"invalid percent-encoding","line":1,"column":"temp","value":"%zz"},{"error":"unknown column","line":1,"column":"x"},{"error":"invalid percent-encoding in a name","line":1,"value":"%"}],"total":4}`},
}

func TestDecode(t *testing.T) {
	var d Decoder
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tbl := readings(t)
			if c.tbl != nil {
				tbl = c.tbl(t)
			}
			o, err := ParseQuery([]byte(c.opt))
			if err != nil {
				t.Fatal(err)
			}
			prefix := []byte("kept")
			out, n, err := d.Decode(prefix, tbl, c.f, o, []byte(c.body))
			if strings.HasPrefix(c.want, "{") {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("err = %v, want an *Error; out %q", err, out)
				}
				if got := string(e.AppendJSON(nil)); got != c.want {
					t.Errorf("error JSON\n got %s\nwant %s", got, c.want)
				}
				if n != 0 || string(out) != "kept" {
					t.Errorf("rows %d out %q, want 0 and dst as given", n, out)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got := string(out[4:]); got != c.want || n != c.nrows {
				t.Errorf("rows %d, TSV\n got %q\nwant %q (%d rows)", n, got, c.want, c.nrows)
			}
			if !bytes.HasPrefix(out, prefix) {
				t.Errorf("dst's bytes changed")
			}
			if rows := parseTSV(t, out[4:]); len(rows) != n {
				t.Errorf("TSV has %d rows, want %d", len(rows), n)
			}
		})
	}
}

func TestFormatOf(t *testing.T) {
	for ct, want := range map[string]Format{
		"application/json":                     JSON,
		"Application/JSON; charset=utf-8":      JSON,
		" application/x-ndjson ":               NDJSON,
		"application/jsonl;charset=UTF-8":      NDJSON,
		"text/csv; header=present":             CSV,
		"application/x-www-form-urlencoded":    Form,
		"text/plain":                           FormatInvalid,
		"application/json-seq":                 FormatInvalid,
		"":                                     FormatInvalid,
		"multipart/form-data; boundary=xyzzy1": FormatInvalid,
	} {
		f, ok := FormatOf([]byte(ct))
		if f != want || ok != (want != FormatInvalid) {
			t.Errorf("FormatOf(%q) = %v, %v; want %v", ct, f, ok, want)
		}
	}
}

func TestParseQuery(t *testing.T) {
	for q, want := range map[string]string{
		"":                            "false ",
		"header=present":              "false ",
		"header=absent":               "true ",
		"header=absent&columns=a,b":   "true a,b",
		"columns=a&header=absent":     "true a",
		"header=no":                   "header must be present or absent",
		"columns=a":                   "columns needs header=absent",
		"header=absent&columns=":      "columns is empty",
		"header=absent&delimiter=%3B": `unknown query parameter "delimiter" (want header, columns)`,
	} {
		o, err := ParseQuery([]byte(q))
		got := fmt.Sprint(o.HeaderAbsent, " ", string(o.Columns))
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("ParseQuery(%q) = %s, want %s", q, got, want)
		}
	}
}

// A duplicate key of an ignored unknown column is no error; an array index
// is counted over non-object elements too.
func TestErrorString(t *testing.T) {
	var d Decoder
	_, _, err := d.Decode(nil, readings(t), NDJSON, Options{}, []byte("{}\n{}\n"))
	if got, want := err.Error(), `line 1: column "device": missing value for a not_null column without a default (and 1 more)`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// ndjsonBody is n lines of ~100-byte readings.
func ndjsonBody(n int) []byte {
	var b []byte
	for i := range n {
		b = fmt.Appendf(b, `{"device":"sensor-%04d","temp":%d.%d,"ts":"2026-01-02 03:04:05.123456","ok":true,"n":%d}`+"\n", i%10000, 10+i%20, i%10, i)
	}
	return b
}

func csvBody(n int) []byte {
	b := []byte("device,temp,ts,ok,n,payload\r\n")
	for i := range n {
		b = fmt.Appendf(b, "sensor-%04d,%d.%d,2026-01-02 03:04:05.123456,1,%d,\"{\"\"k\"\": \"\"v, w\"\"}\"\r\n", i%10000, 10+i%20, i%10, i)
	}
	return b
}

func TestLargeNDJSON(t *testing.T) {
	body := ndjsonBody(10000)
	var d Decoder
	out, n, err := d.Decode(nil, readings(t), NDJSON, Options{}, body)
	if err != nil || n != 10000 {
		t.Fatalf("rows %d err %v", n, err)
	}
	rows := parseTSV(t, out)
	if len(rows) != 10000 {
		t.Fatalf("%d TSV rows", len(rows))
	}
	if got := string(rows[9999][0]) + " " + string(rows[9999][3]); got != "sensor-9999 9999" {
		t.Errorf("last row: %s", got)
	}

	// The 9,999th row bad: nothing, and the line named.
	lines := bytes.SplitAfter(body, []byte("\n"))
	lines[9998] = []byte(`{"device":"sensor-9998","temp":"hot"}` + "\n")
	bad := bytes.Join(lines, nil)
	out, n, err = d.Decode(out[:0], readings(t), NDJSON, Options{}, bad)
	var e *Error
	if !errors.As(err, &e) || n != 0 || len(out) != 0 {
		t.Fatalf("rows %d, %d bytes, err %v", n, len(out), err)
	}
	if got, want := string(e.AppendJSON(nil)), `{"error":"not a number (want decimal notation, e.g. -1.5e3)","line":9999,"column":"temp","value":"hot"}`; got != want {
		t.Errorf("got %s want %s", got, want)
	}
}

func TestLargeCSV(t *testing.T) {
	var d Decoder
	out, n, err := d.Decode(nil, readings(t), CSV, Options{}, csvBody(10000))
	if err != nil || n != 10000 {
		t.Fatalf("rows %d err %v", n, err)
	}
	rows := parseTSV(t, out)
	if got := string(rows[9998][5]); got != `{"k": "v, w"}` {
		t.Errorf("payload %q", got)
	}
}

// At most 1+MaxMore errors are listed; all are counted.
func TestErrorCap(t *testing.T) {
	var d Decoder
	body := bytes.Repeat([]byte(`{"device":"d","temp":"x"}`+"\n"), 500)
	_, _, err := d.Decode(nil, readings(t), NDJSON, Options{}, body)
	var e *Error
	if !errors.As(err, &e) || len(e.More) != MaxMore || e.Total != 500 || e.More[9].Line != 11 {
		t.Fatalf("%+v", err)
	}
}

// Errors (and their strings) do not point into the body or the Decoder.
func TestErrorOwnsItsBytes(t *testing.T) {
	var d Decoder
	body := []byte(`{"device":"d","humid":"wet"}`)
	_, _, err := d.Decode(nil, readings(t), JSON, Options{}, body)
	copy(body, bytes.Repeat([]byte("#"), len(body)))
	d.Decode(nil, readings(t), JSON, Options{}, []byte(`{"zzzzz":1}`))
	if got := string(err.(*Error).AppendJSON(nil)); got != `{"error":"unknown column","index":0,"column":"humid"}` {
		t.Error(got)
	}
}

// Every byte survives the TSV escaping: strings through JSON \u escapes,
// blobs through base64.
func TestAllBytesRoundTrip(t *testing.T) {
	tbl := &schema.Table{Name: "t", Columns: []schema.Column{{Name: "s", Type: mustType(t, "text")}, {Name: "b", Type: mustType(t, "blob")}}}
	var all []byte
	for c := range 256 {
		all = append(all, byte(c))
	}
	ascii := all[:128]
	body := []byte(`{"s":"`)
	for _, c := range ascii {
		body = fmt.Appendf(body, `\u%04x`, c)
	}
	body = append(body, `","b":"`...)
	body = append(body, b64(all)...)
	body = append(body, `"}`...)
	var d Decoder
	out, n, err := d.Decode(nil, tbl, JSON, Options{}, body)
	if err != nil || n != 1 {
		t.Fatal(n, err)
	}
	rows := parseTSV(t, out)
	if !bytes.Equal(rows[0][0], ascii) || !bytes.Equal(rows[0][1], all) {
		t.Errorf("round trip: %q", rows[0])
	}
}

func b64(b []byte) string {
	const enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var s []byte
	for len(b) >= 3 {
		v := uint(b[0])<<16 | uint(b[1])<<8 | uint(b[2])
		s = append(s, enc[v>>18], enc[v>>12&63], enc[v>>6&63], enc[v&63])
		b = b[3:]
	}
	switch len(b) {
	case 1:
		v := uint(b[0]) << 16
		s = append(s, enc[v>>18], enc[v>>12&63], '=', '=')
	case 2:
		v := uint(b[0])<<16 | uint(b[1])<<8
		s = append(s, enc[v>>18], enc[v>>12&63], enc[v>>6&63], '=')
	}
	return string(s)
}

// Once warm, decoding a request allocates nothing, whatever the format.
func TestDecodeDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	tbl := readings(t)
	bodies := []struct {
		f    Format
		o    Options
		body []byte
	}{
		{NDJSON, Options{}, ndjsonBody(1000)},
		{JSON, Options{}, []byte(`[{"device":"d\u00e9","temp":1.5,"payload":{"a":[1,2]},"data":"AAl0XG4K"},{"device":"e","n":null}]`)},
		{CSV, Options{}, csvBody(1000)},
		{CSV, Options{HeaderAbsent: true, Columns: []byte("temp,device")}, []byte("1,\"a\"\"b\"\n2,c\n")},
		{Form, Options{}, []byte("device=Kitchen+north%2C+%C3%A9&temp=21.5&ts=&ok=true")},
	}
	var d Decoder
	var dst []byte
	for _, b := range bodies {
		var n int
		var err error
		allocs := testing.AllocsPerRun(20, func() {
			dst, n, err = d.Decode(dst[:0], tbl, b.f, b.o, b.body)
		})
		if err != nil || n == 0 {
			t.Fatalf("%v: rows %d err %v", b.f, n, err)
		}
		if allocs != 0 {
			t.Errorf("%v: %.1f allocations per request", b.f, allocs)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	tbl := readings(b)
	for _, c := range []struct {
		name string
		f    Format
		body []byte
	}{
		{"NDJSON", NDJSON, ndjsonBody(1000)},
		{"JSON", JSON, append(append([]byte("["), bytes.ReplaceAll(bytes.TrimSuffix(ndjsonBody(1000), []byte("\n")), []byte("\n"), []byte(","))...), ']')},
		{"CSV", CSV, csvBody(1000)},
	} {
		b.Run(c.name, func(b *testing.B) {
			var d Decoder
			var dst []byte
			dst, _, _ = d.Decode(dst, tbl, c.f, Options{}, c.body) // warm
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, _, err = d.Decode(dst[:0], tbl, c.f, Options{}, c.body); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/row")
		})
	}
}

// TestMaxOut: a body whose rows would outgrow the bound is refused (the
// rows of empty records in a wide table are ~20× their body).
func TestMaxOut(t *testing.T) {
	cols := make([]schema.Column, 20)
	for i := range cols {
		cols[i] = schema.Column{Name: "c" + strconv.Itoa(i), Type: schema.Type{Kind: schema.Int}}
	}
	wide := &schema.Table{Name: "wide", Columns: cols}
	body := []byte("[" + strings.Repeat("{},", 999) + "{}]")
	var d Decoder
	out, rows, err := d.Decode(nil, wide, JSON, Options{}, body)
	if err != nil || rows != 1000 || len(out) < 15*len(body) {
		t.Fatalf("unbounded: %d rows, %d bytes of rows from %d, %v", rows, len(out), len(body), err)
	}
	d.MaxOut = 4 * len(body)
	out, rows, err = d.Decode(out[:0], wide, JSON, Options{}, body)
	e, ok := err.(*Error)
	if !ok || rows != 0 || e.First.Reason != reasonTooLarge || e.Total != 1 {
		t.Fatalf("bounded: %d rows, err %v, want one %q", rows, err, reasonTooLarge)
	}
}
