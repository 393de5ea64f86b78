package ingest

import (
	"bytes"
	"strconv"

	"upsink/schema"
)

// The CSV tokenizer: RFC 4180 over the body in place. Fields are separated
// by ',' and records end at LF or CRLF; a field that starts with '"' is
// quoted: it ends at the next lone '"', holds commas and line breaks as they
// are (a CRLF inside stays CRLF), and "" stands for one '"'. A '"' anywhere
// else, or anything but ',' or a line end after a closing quote, is an error
// (encoding/csv's rules without LazyQuotes). An unquoted empty field is NULL,
// a quoted one ("") the empty string. Blank lines are skipped; a UTF-8 BOM
// at the start is dropped.

type csvField struct {
	s, e   int  // the contents: body[s:e], quotes excluded
	quoted bool // it was quoted
	dq     bool // it holds "" pairs
}

// csvPlain: bytes that do not end an unquoted field.
var csvPlain = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c != ',' && c != '\n' && c != '"'
	}
	return t
}()

// maxFields bounds the fields of a header (MariaDB's limit of columns per
// table), so that a body of commas cannot make d.fields 24 times its size.
const maxFields = 4096

// csvRecord reads the record at b[i:] into d.fields, at most limit of its
// fields; d.nfields counts them all. It returns the index after it and the
// line breaks it spanned (its own included), or a non-empty reason when it is
// malformed.
func (d *Decoder) csvRecord(b []byte, i, limit int) (next, lines int, reason string) {
	d.fields = d.fields[:0]
	d.nfields = 0
	limit = max(limit, 1) // blank() looks at the first
	for {
		if i < len(b) && b[i] == '"' {
			s := i + 1
			j, dq := s, false
			for {
				k := bytes.IndexByte(b[j:], '"')
				if k < 0 {
					return len(b), lines + bytes.Count(b[j:], nl), "unterminated quoted field"
				}
				lines += bytes.Count(b[j:j+k], nl)
				j += k
				if j+1 < len(b) && b[j+1] == '"' {
					dq = true
					j += 2
					continue
				}
				break
			}
			if d.nfields++; d.nfields <= limit {
				d.fields = append(d.fields, csvField{s: s, e: j, quoted: true, dq: dq})
			}
			i = j + 1
			switch {
			case i == len(b):
				return i, lines, ""
			case b[i] == ',':
				i++
				continue
			case b[i] == '\n':
				return i + 1, lines + 1, ""
			case b[i] == '\r' && (i+1 == len(b) || b[i+1] == '\n'):
				return min(i+2, len(b)), lines + 1, ""
			}
			return i, lines, `unexpected character after a closing quote (a '"' inside a quoted field is written "")`
		}
		s := i
		for i < len(b) && csvPlain[b[i]] {
			i++
		}
		if i < len(b) && b[i] == '"' {
			return i, lines, `'"' in an unquoted field (quote the field and write "" for '"')`
		}
		e := i
		if e > s && b[e-1] == '\r' && (i == len(b) || b[i] == '\n') {
			e-- // CRLF
		}
		if d.nfields++; d.nfields <= limit {
			d.fields = append(d.fields, csvField{s: s, e: e})
		}
		if i == len(b) {
			return i, lines, ""
		}
		if b[i] == '\n' {
			return i + 1, lines + 1, ""
		}
		i++ // ','
	}
}

var nl = []byte{'\n'}

// blank reports whether the record just read was an empty line.
func (d *Decoder) blank() bool {
	return d.nfields == 1 && !d.fields[0].quoted && d.fields[0].s == d.fields[0].e
}

// fieldText returns the contents of field f of body b, "" pairs undone.
func (d *Decoder) fieldText(b []byte, f *csvField, scratch *[]byte) []byte {
	v := b[f.s:f.e]
	if !f.dq {
		return v
	}
	out := (*scratch)[:0]
	for {
		k := bytes.IndexByte(v, '"')
		if k < 0 {
			out = append(out, v...)
			break
		}
		out = append(out, v[:k+1]...)
		v = v[k+2:]
	}
	*scratch = out
	return out
}

// decodeCSV decodes a CSV body. Positions are the 1-based line where a record
// starts (the header is line 1). A malformed record ends the decoding: what
// follows it cannot be told apart reliably.
func (d *Decoder) decodeCSV(b []byte, o Options) {
	b = stripBOM(b)
	line, i := 1, 0
	d.csvMap = d.csvMap[:0]
	d.beginRow(1, false) // the header's marks
	switch {
	case !o.HeaderAbsent:
		for {
			if i >= len(b) {
				return // an empty body: no rows
			}
			next, lines, reason := d.csvRecord(b, i, maxFields)
			d.pos = line
			if reason != "" {
				d.fail("", nil, nil, "invalid CSV: "+reason)
				return
			}
			i, line = next, line+lines
			if !d.blank() {
				break
			}
		}
		if d.nfields > maxFields {
			d.fail("", nil, nil, "more than "+strconv.Itoa(maxFields)+" columns in the header")
			return
		}
		for k := range d.fields {
			d.mapColumn(d.fieldText(b, &d.fields[k], &d.key))
		}
	case len(o.Columns) > 0:
		var ok bool
		if d.str, ok = unescapeQuery(d.str[:0], o.Columns); !ok {
			d.fail("", nil, o.Columns, "columns: invalid percent-encoding")
			return
		}
		for names := d.str; ; {
			k := bytes.IndexByte(names, ',')
			if k < 0 {
				d.mapColumn(names)
				break
			}
			d.mapColumn(names[:k])
			names = names[k+1:]
		}
	default:
		for k := range d.t.Columns {
			d.csvMap = append(d.csvMap, k)
		}
	}
	if d.failed {
		return // the records' errors would only repeat the header's
	}
	for i < len(b) {
		start := line
		next, lines, reason := d.csvRecord(b, i, len(d.csvMap))
		d.beginRow(start, false)
		if reason != "" {
			d.fail("", nil, nil, "invalid CSV: "+reason)
			return
		}
		i, line = next, line+lines
		if d.blank() {
			continue
		}
		if d.nfields != len(d.csvMap) {
			d.fail("", nil, nil, "record has "+strconv.Itoa(d.nfields)+" fields, want "+strconv.Itoa(len(d.csvMap)))
			continue
		}
		for k := range d.fields {
			ci := d.csvMap[k]
			if ci < 0 {
				continue
			}
			d.mark(ci)
			f := &d.fields[k]
			if !f.quoted && f.s == f.e {
				d.setNull(ci)
			} else {
				d.setValue(ci, d.fieldText(b, f, &d.str))
			}
		}
		d.endRow()
	}
}

// mapColumn appends the column named name to the CSV field map: an error when
// it names no column (or -1 when such fields are dropped) or one already
// mapped.
func (d *Decoder) mapColumn(name []byte) {
	if len(name) == 0 { // a spreadsheet's unnamed column: unknown
		if d.t.Unknown != schema.IgnoreUnknown {
			d.fail("", nil, nil, "empty column name")
		}
		d.csvMap = append(d.csvMap, -1)
		return
	}
	ci := d.lookup(name)
	if ci < 0 {
		if d.t.Unknown != schema.IgnoreUnknown {
			d.fail("", name, nil, reasonUnknown)
		}
		d.csvMap = append(d.csvMap, -1)
		return
	}
	if d.cols[ci].gen == d.gen {
		d.fail(d.t.Columns[ci].Name, nil, nil, reasonDuplicate)
	}
	d.mark(ci)
	d.csvMap = append(d.csvMap, ci)
}
