package ingest

import (
	"encoding/base64"
	"errors"
	"slices"
	"unsafe"

	"upsink/schema"
)

// EncodeFunc checks the text v of one field for a column of type t and
// appends the value as LOAD DATA is to read it (not yet escaped) to dst, or
// returns an error whose text (or *schema.ValueError's Reason) says why v is
// not a value of t. v is only read, and only during the call.
type EncodeFunc func(t schema.Type, dst, v []byte) ([]byte, error)

// Decoder decodes request bodies into rows. It keeps its buffers between
// calls, so that once warm a Decode allocates nothing: keep one per event
// loop (or in a sync.Pool). It is not safe for concurrent use.
type Decoder struct {
	// Encode checks and renders one value; nil means the column type's own
	// check (schema.Type.AppendValue). Tests and benchmarks may replace it.
	Encode EncodeFunc
	// MaxOut bounds the rows one Decode may append (0: no bound). Rows can
	// be much larger than their body (a JSON record {} of a table of 20
	// columns is 20 \N fields; defaults are copied in full), so a server
	// sets it: past it the body is refused like a bad record.
	MaxOut int

	t      *schema.Table
	start  int // len(dst) when Decode began
	enc    EncodeFunc
	out    []byte // the caller's dst, with the rows appended so far
	rows   int
	failed bool // an error was found: no more rows are appended

	gen  uint32     // the current record's stamp in cols
	cols []colState // per column of t: this record's value
	row  []byte     // this record's values, as Encode rendered them
	hint int        // where the next key is looked up first

	str []byte // an unescaped JSON string, an unquoted CSV field, a decoded form value
	key []byte // an unescaped JSON key or form key
	bin []byte // a decoded base64 value

	fields  []csvField // the current CSV record (its first fields)
	nfields int        // how many fields it has
	csvMap  []int      // CSV field position -> column index (-1: dropped)

	pos   int  // the current record's line or index
	index bool // pos is a JSON array index
	errs  []FieldError
	total int
}

type colState struct {
	gen        uint32 // == Decoder.gen: mentioned by the current record
	null       bool
	start, end int // the value in Decoder.row
}

// Decode validates body, of format f, as rows of table t and appends their
// TSV to dst: per row the declared columns in table order, each value
// escaped for LOAD DATA (backslash, tab, newline and NUL get a backslash
// escape), NULL as \N, tab-separated, ending in '\n'. It returns the
// extended slice and the number of rows.
//
// On bad input it returns dst as it was given (only bytes beyond its length
// may have been written), 0 rows and an *Error; an error of another type
// means f is not a Format. The body is only read; nothing returned points
// into it or into the Decoder.
func (d *Decoder) Decode(dst []byte, t *schema.Table, f Format, o Options, body []byte) ([]byte, int, error) {
	d.reset(t, dst)
	start := len(dst)
	switch f {
	case JSON:
		d.decodeJSON(body)
	case NDJSON:
		d.decodeNDJSON(body)
	case CSV:
		d.decodeCSV(body, o)
	case Form:
		d.decodeForm(body)
	default:
		return dst, 0, errors.New("ingest: unknown format")
	}
	out := d.out
	d.out = nil
	d.trim()
	if d.total > 0 {
		e := &Error{First: d.errs[0], Total: d.total}
		if len(d.errs) > 1 {
			e.More = slices.Clone(d.errs[1:])
		}
		clear(d.errs) // drop the strings
		return out[:start], 0, e
	}
	return out, d.rows, nil
}

// keepCap is the most capacity a scratch buffer keeps between requests: a
// value beyond it (a large text or blob) costs an allocation rather than
// pinning that much memory per Decoder for good.
const keepCap = 128 << 10

func (d *Decoder) trim() {
	for _, b := range []*[]byte{&d.row, &d.str, &d.key, &d.bin} {
		if cap(*b) > keepCap {
			*b = nil
		}
	}
	if cap(d.fields) > keepCap/24 {
		d.fields = nil
	}
}

func (d *Decoder) reset(t *schema.Table, dst []byte) {
	d.t = t
	d.enc = d.Encode
	if d.enc == nil {
		d.enc = defaultEncode
	}
	d.out = dst
	d.start = len(dst)
	d.rows = 0
	d.failed = false
	d.errs = d.errs[:0]
	d.total = 0
	n := len(t.Columns)
	if cap(d.cols) < n {
		d.cols = make([]colState, n)
	}
	d.cols = d.cols[:n]
	clear(d.cols)
	d.gen = 0
}

// beginRow starts a record at line or index pos.
func (d *Decoder) beginRow(pos int, index bool) {
	d.pos, d.index = pos, index
	d.gen++
	if d.gen == 0 { // wrapped: stamps of 4 billion records ago would match
		clear(d.cols)
		d.gen = 1
	}
	d.row = d.row[:0]
	d.hint = 0
}

// lookup returns the index of the column named name, or -1. Records usually
// name columns in table order, so the column after the last one found is
// tried first.
func (d *Decoder) lookup(name []byte) int {
	cols := d.t.Columns
	if h := d.hint; h < len(cols) && cols[h].Name == string(name) {
		d.hint = h + 1
		return h
	}
	for i := range cols {
		if cols[i].Name == string(name) {
			d.hint = i + 1
			return i
		}
	}
	return -1
}

// column resolves a field's name in the current record: its column index, or
// -1 when the field is to be skipped (unknown and ignored, or in error:
// unknown or given twice).
func (d *Decoder) column(name []byte) int {
	ci := d.lookup(name)
	if ci < 0 {
		if d.t.Unknown != schema.IgnoreUnknown {
			d.fail("", name, nil, reasonUnknown)
		}
		return -1
	}
	if d.cols[ci].gen == d.gen {
		d.fail(d.t.Columns[ci].Name, nil, nil, reasonDuplicate)
		return -1
	}
	d.mark(ci)
	return ci
}

// mark records that the current record mentions column ci (its value is
// still to be set; an invalid value leaves it marked and unset).
func (d *Decoder) mark(ci int) {
	s := &d.cols[ci]
	s.gen, s.null, s.start, s.end = d.gen, false, 0, 0
}

func (d *Decoder) setNull(ci int) { d.cols[ci].null = true }

// setValue checks v for column ci and keeps its rendering in d.row.
func (d *Decoder) setValue(ci int, v []byte) {
	c := &d.t.Columns[ci]
	start := len(d.row)
	r, err := d.enc(c.Type, d.row, v)
	if err != nil {
		d.fail(c.Name, nil, v, reasonOf(err))
		return
	}
	d.row = r
	s := &d.cols[ci]
	s.start, s.end = start, len(r)
}

// setBase64 decodes the base64 text v for blob column ci.
func (d *Decoder) setBase64(ci int, v []byte) {
	n := base64.StdEncoding.DecodedLen(len(v))
	d.bin = slices.Grow(d.bin[:0], n)[:n]
	m, err := base64.StdEncoding.Decode(d.bin, v)
	if err != nil {
		d.fail(d.t.Columns[ci].Name, nil, v, reasonBase64)
		return
	}
	d.setValue(ci, d.bin[:m])
}

// setDefault sets column ci to its default.
func (d *Decoder) setDefault(ci int) {
	s := *d.t.Columns[ci].Default
	d.cols[ci].null = false
	d.setValue(ci, unsafe.Slice(unsafe.StringData(s), len(s))) // only read
}

// endRow applies the rules for absent and null values to the current record
// and, while no error has been found, appends it to the output.
func (d *Decoder) endRow() {
	cols := d.t.Columns
	for i := range cols {
		s := &d.cols[i]
		c := &cols[i]
		switch {
		case s.gen != d.gen: // not mentioned
			d.mark(i)
			switch {
			case c.Default != nil:
				d.setDefault(i)
			case c.NotNull:
				d.fail(c.Name, nil, nil, reasonMissing)
			default:
				s.null = true
			}
		case s.null && c.NotNull:
			if c.Default != nil {
				d.setDefault(i)
			} else {
				d.fail(c.Name, nil, nil, reasonNull)
			}
		}
	}
	if d.failed {
		return
	}
	out := d.out
	for i := range cols {
		if i > 0 {
			out = append(out, '\t')
		}
		s := &d.cols[i]
		if s.null {
			out = append(out, '\\', 'N')
		} else {
			out = appendEscaped(out, d.row[s.start:s.end])
		}
	}
	out = append(out, '\n')
	if d.MaxOut > 0 && len(out)-d.start > d.MaxOut {
		d.fail("", nil, nil, reasonTooLarge)
		return
	}
	d.out = out
	d.rows++
}

// fail records an error of the current record: about column col (or, when
// col is "", the column named colB; both empty: the record), with the value
// v. Only the first 1+MaxMore errors are kept (and cost their strings); all
// are counted.
func (d *Decoder) fail(col string, colB, v []byte, reason string) {
	d.failed = true
	d.total++
	if len(d.errs) > MaxMore {
		return
	}
	if col == "" && len(colB) > 0 {
		col = truncValue(colB)
	}
	d.errs = append(d.errs, FieldError{Line: d.pos, Index: d.index, Column: col, Value: truncValue(v), Reason: reason})
}

// defaultEncode is the column type's own check.
func defaultEncode(t schema.Type, dst, v []byte) ([]byte, error) { return t.AppendValue(dst, v) }

// reasonOf is the reason an EncodeFunc's error gives.
func reasonOf(err error) string {
	if ve, ok := err.(*schema.ValueError); ok {
		return ve.Reason
	}
	return err.Error()
}

// escTab is the LOAD DATA escaping (schema.LoadEscape: the store loads the
// rows with the FIELDS clause it is made for).
var escTab = schema.LoadEscape

// appendEscaped appends src to dst, escaped as escTab says.
func appendEscaped(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		j := i
		for j < len(src) && escTab[src[j]] == 0 {
			j++
		}
		dst = append(dst, src[i:j]...)
		if j == len(src) {
			break
		}
		dst = append(dst, '\\', escTab[src[j]])
		i = j + 1
	}
	return dst
}

var bom = []byte{0xEF, 0xBB, 0xBF}

func stripBOM(b []byte) []byte {
	if len(b) >= 3 && b[0] == bom[0] && b[1] == bom[1] && b[2] == bom[2] {
		return b[3:]
	}
	return b
}
