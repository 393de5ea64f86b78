// Package ingest turns one request body of structured ingest (issue 9) into
// the rows of a declared table, as the escaped TSV that LOAD DATA LOCAL
// INFILE reads (`FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED
// BY '\n'`, NULL as `\N`): one line per row, the declared columns in table
// order, without id and received_at (the store adds received_at).
//
// A body is taken all or nothing: on the first bad record nothing more is
// appended, decoding goes on only to find up to 10 further errors, and the
// caller gets an *Error naming them by line (NDJSON, CSV, form) or array
// index (JSON) and column.
//
// Formats:
//   - JSON (application/json): one object, or an array of objects;
//   - NDJSON (application/x-ndjson, application/jsonl): one object per line,
//     blank lines skipped, LF or CRLF;
//   - CSV (text/csv): RFC 4180: quoted fields with doubled quotes, embedded
//     commas and line breaks, CRLF or LF, an optional UTF-8 BOM, a header
//     row naming the columns (or Options.HeaderAbsent with an explicit column
//     list, or the table's order); blank lines are skipped;
//   - Form (application/x-www-form-urlencoded): one row.
//
// Values: JSON strings (unescaped), numbers (their literal text), true and
// false are the text given to the column type's check; a nested object or
// array is accepted by a json column only, as its raw JSON text (a json
// column takes any JSON value as its raw text, so a string stays a JSON
// string); a blob column takes a base64 string (standard alphabet, padded)
// in JSON and the bytes as they are in CSV and forms. JSON null, an
// unquoted empty CSV field and an empty form value are NULL ("" quoted in CSV
// is the empty string). A NULL in a not_null column takes the column's
// default, or is an error without one; a column a record does not mention
// takes its default, else NULL, else (not_null) is an error. A field naming
// no column is an error, or dropped when the table says unknown_columns =
// "ignore". A key given twice in one record is an error.
//
// No whole-body DOM is built: records are tokenized in place and each field
// is checked and appended as it is met, through buffers the Decoder keeps;
// once warm a Decode allocates nothing (TestDecodeDoesNotAllocate).
package ingest

import (
	"strconv"
	"unicode/utf8"
)

// Format is the body's format, from its Content-Type.
type Format uint8

const (
	FormatInvalid Format = iota
	JSON                 // application/json: one object or an array of objects
	NDJSON               // application/x-ndjson, application/jsonl: one object per line
	CSV                  // text/csv: RFC 4180
	Form                 // application/x-www-form-urlencoded: one row
)

var formatNames = [...]string{"invalid", "json", "ndjson", "csv", "form"}

func (f Format) String() string {
	if int(f) < len(formatNames) {
		return formatNames[f]
	}
	return "invalid"
}

// Accepted lists the media types FormatOf knows, for a 415 answer.
const Accepted = "application/json, application/x-ndjson, application/jsonl, text/csv, application/x-www-form-urlencoded"

var mediaTypes = [...]struct {
	name string
	f    Format
}{
	{"application/json", JSON},
	{"application/x-ndjson", NDJSON},
	{"application/jsonl", NDJSON},
	{"text/csv", CSV},
	{"application/x-www-form-urlencoded", Form},
}

// FormatOf maps a Content-Type header value to its Format, case-insensitive,
// ignoring parameters (charset=… and the like: bodies are taken as UTF-8) and
// surrounding spaces. It does not allocate.
func FormatOf(contentType []byte) (Format, bool) {
	ct := contentType
	for i, c := range ct {
		if c == ';' {
			ct = ct[:i]
			break
		}
	}
	ct = trimSpace(ct)
	for _, m := range mediaTypes {
		if equalFold(ct, m.name) {
			return m.f, true
		}
	}
	return FormatInvalid, false
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold reports whether b equals the lower-case ASCII s, ignoring ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// Options are a request's decoding options (from its query string, see
// ParseQuery). The zero value is the default.
type Options struct {
	// HeaderAbsent: the CSV body has no header row; its fields are the
	// columns named by Columns, or all the table's columns in table order
	// when Columns is empty.
	HeaderAbsent bool
	// Columns is the comma-separated column list of a CSV body without a
	// header, as the query gives it (percent-encoding allowed). It may point
	// into the request; Decode reads it and keeps nothing.
	Columns []byte
}

// ParseQuery parses a request's query string (without '?'): header=present
// (the default) or header=absent, and columns=a,b,c (only with
// header=absent). Any other parameter is an error, so that a misspelt one is
// not silently ignored. The result points into q. It does not allocate
// unless it fails.
func ParseQuery(q []byte) (Options, error) {
	var o Options
	hasColumns := false
	for len(q) > 0 {
		pair := q
		if i := indexByte(q, '&'); i >= 0 {
			pair, q = q[:i], q[i+1:]
		} else {
			q = nil
		}
		if len(pair) == 0 {
			continue
		}
		key, val := pair, []byte(nil)
		if i := indexByte(pair, '='); i >= 0 {
			key, val = pair[:i], pair[i+1:]
		}
		switch string(key) {
		case "header":
			switch string(val) {
			case "present":
				o.HeaderAbsent = false
			case "absent":
				o.HeaderAbsent = true
			default:
				return Options{}, &QueryError{"header must be present or absent"}
			}
		case "columns":
			o.Columns, hasColumns = val, true
		default:
			return Options{}, &QueryError{"unknown query parameter " + strconv.Quote(string(key)) + " (want header, columns)"}
		}
	}
	if hasColumns && !o.HeaderAbsent {
		return Options{}, &QueryError{"columns needs header=absent"}
	}
	if hasColumns && len(o.Columns) == 0 {
		return Options{}, &QueryError{"columns is empty"}
	}
	return o, nil
}

// QueryError is a bad query string (a 400).
type QueryError struct{ Reason string }

func (e *QueryError) Error() string { return e.Reason }

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// MaxMore is how many errors an Error lists after its first.
const MaxMore = 10

// maxValue is how many bytes of a bad value an error quotes.
const maxValue = 64

// FieldError is one bad record or field.
type FieldError struct {
	// Line is the 1-based line where the record starts (NDJSON, CSV: a CSV
	// record may span lines, the header is line 1; form: 1), or, when Index
	// is set, the 0-based index of the object in a JSON array (0 for a single
	// object).
	Line  int
	Index bool
	// Column is the column or key the error is about ("" when it is about the
	// record as a whole, e.g. a syntax error).
	Column string
	// Value is the offending value as given (JSON strings unescaped),
	// truncated to 64 bytes at a character boundary; "" when there is none.
	Value  string
	Reason string
}

// Error is a body that was not taken: its first error, up to MaxMore further
// ones, and how many were found in all (decoding stops early only at a
// syntax error it cannot resume after: JSON and CSV).
type Error struct {
	First FieldError
	More  []FieldError
	Total int
}

func (e *Error) Error() string {
	f := &e.First
	s := f.Reason
	if f.Column != "" {
		s = "column " + strconv.Quote(f.Column) + ": " + s
	}
	pos := "line "
	if f.Index {
		pos = "index "
	}
	s = pos + strconv.Itoa(f.Line) + ": " + s
	if e.Total > 1 {
		s += " (and " + strconv.Itoa(e.Total-1) + " more)"
	}
	return s
}

// AppendJSON appends the 400 answer's body:
//
//	{"error":"…","line":17,"column":"temp","value":"abc","errors":[{…},…],"total":12}
//
// "index" replaces "line" for JSON bodies; "column" and "value" are left out
// when empty; "errors" lists the further errors (same fields) and is left out
// when there are none; "total" is the number of errors found, left out when
// it is 1.
func (e *Error) AppendJSON(dst []byte) []byte {
	dst = appendFieldError(dst, &e.First)
	if len(e.More) > 0 {
		dst = append(dst, `,"errors":[`...)
		for i := range e.More {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendFieldError(dst, &e.More[i])
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if e.Total > 1 {
		dst = append(dst, `,"total":`...)
		dst = strconv.AppendInt(dst, int64(e.Total), 10)
	}
	return append(dst, '}')
}

// appendFieldError appends f as an object without its closing brace.
func appendFieldError(dst []byte, f *FieldError) []byte {
	dst = append(dst, `{"error":`...)
	dst = appendJSONString(dst, f.Reason)
	if f.Index {
		dst = append(dst, `,"index":`...)
	} else {
		dst = append(dst, `,"line":`...)
	}
	dst = strconv.AppendInt(dst, int64(f.Line), 10)
	if f.Column != "" {
		dst = append(dst, `,"column":`...)
		dst = appendJSONString(dst, f.Column)
	}
	if f.Value != "" {
		dst = append(dst, `,"value":`...)
		dst = appendJSONString(dst, f.Value)
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, "\ufffd"...)
		} else {
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return append(dst, '"')
}

// truncValue returns v as a string of at most maxValue bytes, cut at a UTF-8
// character boundary.
func truncValue(v []byte) string {
	if len(v) <= maxValue {
		return string(v)
	}
	n := maxValue
	for n > 0 && n > maxValue-utf8.UTFMax && !utf8.RuneStart(v[n]) {
		n--
	}
	return string(v[:n])
}

// The reasons of errors about records (the column type's own reasons come
// from its check).
const (
	reasonUnknown    = "unknown column"
	reasonDuplicate  = "duplicate column"
	reasonMissing    = "missing value for a not_null column without a default"
	reasonNull       = "null in a not_null column without a default"
	reasonNested     = "nested object or array for a non-json column"
	reasonBlobString = "blob columns take a base64 string"
	reasonBase64     = "invalid base64"
	reasonTooLarge   = "the rows are larger than the server takes from one request (split the body)"
)
