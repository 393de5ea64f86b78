package store

import (
	"io"
	"strconv"
	"time"

	"upsink/schema"
)

// escTab is the LOAD DATA escaping (schema.LoadEscape), for the FIELDS
// clause of the statements (store.go, rows.go): every byte string
// round-trips; a literal "\N" in the data becomes `\\N`, not NULL.
var escTab = schema.LoadEscape

// Field order in the file; must match the column list of the LOAD DATA statement.
const (
	fID = iota
	fStream
	fReceivedAt
	fRemoteAddr
	fContentType
	fBody
	numFields
)

// tsvReader renders a batch of jobs as the TSV file LOAD DATA reads, on the fly
// and straight into the caller's buffer (the driver reads in 16 KiB packets).
// Nothing is materialised and nothing is allocated: the only per-row state is the
// DATETIME(6) text, rendered into a fixed array. It is owned by the writer
// goroutine; the driver calls Read on that same goroutine.
type tsvReader struct {
	jobs  []*Job
	now   time.Time // stands in for a zero ReceivedAt
	row   int       // current job
	field int       // current field of that job
	off   int       // bytes of the current field already consumed
	sep   bool      // the current field is done; its separator is still to be written
	first uint64    // id of the first row; the others follow in order
	ts    [32]byte
	tsLen int
	id    [20]byte
	idLen int
}

func (r *tsvReader) reset(jobs []*Job, now time.Time, first uint64) {
	r.jobs = jobs
	r.now = now
	r.first = first
	r.rewind()
}

// rewind restarts the file from its first row (called by the reader handler, so
// that a statement that is executed again streams the same bytes again).
func (r *tsvReader) rewind() {
	r.row, r.field, r.off, r.sep = 0, 0, 0, false
	if len(r.jobs) > 0 {
		r.renderRow()
	}
}

// renderRow renders the current row's id and received_at.
func (r *tsvReader) renderRow() {
	t := r.jobs[r.row].ReceivedAt
	if t.IsZero() {
		t = r.now
	}
	r.tsLen = len(appendDatetime6(r.ts[:0], t))
	r.idLen = len(strconv.AppendUint(r.id[:0], r.first+uint64(r.row), 10))
}

func (r *tsvReader) fieldBytes() []byte {
	j := r.jobs[r.row]
	switch r.field {
	case fID:
		return r.id[:r.idLen]
	case fStream:
		return j.Stream
	case fReceivedAt:
		return r.ts[:r.tsLen]
	case fRemoteAddr:
		return j.RemoteAddr
	case fContentType:
		return j.ContentType
	default:
		return j.Body
	}
}

// Read implements io.Reader. It fills p as far as it can (it stops early only
// when the next byte needs a two-byte escape and one byte of room is left).
func (r *tsvReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && r.row < len(r.jobs) {
		if r.sep {
			r.sep = false
			r.off = 0
			if r.field == numFields-1 {
				p[n] = '\n'
				r.row++
				r.field = 0
				if r.row < len(r.jobs) {
					r.renderRow()
				}
			} else {
				p[n] = '\t'
				r.field++
			}
			n++
			continue
		}
		src := r.fieldBytes()[r.off:]
		w, c := escapeInto(p[n:], src)
		n += w
		r.off += c
		if c < len(src) {
			break // p is full
		}
		r.sep = true
	}
	if n == 0 && r.row >= len(r.jobs) {
		return 0, io.EOF
	}
	return n, nil
}

// escapeInto copies src into dst, escaping as escTab says, and reports how many
// bytes it wrote and how many of src it consumed. It never scans further into
// src than dst can take, so a large body costs O(len) over all calls.
func escapeInto(dst, src []byte) (w, c int) {
	for c < len(src) && w < len(dst) {
		limit := min(len(src), c+len(dst)-w)
		run := c
		for run < limit && escTab[src[run]] == 0 {
			run++
		}
		k := copy(dst[w:], src[c:run])
		w += k
		c += k
		if c == len(src) || w == len(dst) {
			return w, c
		}
		if escTab[src[c]] == 0 || len(dst)-w < 2 {
			return w, c
		}
		dst[w] = '\\'
		dst[w+1] = escTab[src[c]]
		w += 2
		c++
	}
	return w, c
}

// appendDatetime6 appends t in UTC as "YYYY-MM-DD HH:MM:SS.ffffff" (truncated to
// the microsecond), the literal form of a DATETIME(6). The caller has checked the
// year is within 1000..9999.
func appendDatetime6(b []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	us := t.Nanosecond() / 1000
	b = appendDigits(b, y, 4)
	b = append(b, '-')
	b = appendDigits(b, int(mo), 2)
	b = append(b, '-')
	b = appendDigits(b, d, 2)
	b = append(b, ' ')
	b = appendDigits(b, h, 2)
	b = append(b, ':')
	b = appendDigits(b, mi, 2)
	b = append(b, ':')
	b = appendDigits(b, s, 2)
	b = append(b, '.')
	return appendDigits(b, us, 6)
}

// appendDigits appends the width lowest decimal digits of v (v >= 0), zero padded.
func appendDigits(b []byte, v, width int) []byte {
	var tmp [8]byte
	for i := width - 1; i >= 0; i-- {
		tmp[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, tmp[:width]...)
}
