package server

import (
	"bytes"
	"crypto/subtle"
	"strconv"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"

	"upsink/conn"
	"upsink/ingest"
	"upsink/parser"
	"upsink/schema"
	"upsink/store"
)

// Structured ingest: POST /ingest/{table}. The head is checked like an
// upload's, plus the table (404), its token (401), the body's format (415)
// and the query (400); the body is read into the request's buffer like an
// upload's; once complete it is decoded on the loop into the table's rows
// (ingest package), which replace the body in the record (charged to the
// budget instead of it), and the rows go to the durable sink as one job:
// all committed in one transaction, or none. A body that is not all good
// rows is answered 400 with the errors, nothing stored.

// maxIngestQuery bounds the query string kept with an ingest request.
const maxIngestQuery = 1024

var reason415 = "unsupported Content-Type; accepted: " + ingest.Accepted

// routeIngest checks an ingest request's head and starts reading its body.
func (h *handler) routeIngest(e *ev, req *parser.Request, name []byte, hasBody bool, hn int) (gnet.Action, bool) {
	t := h.tables[string(name)]
	if t == nil {
		return h.reject(e, hasBody, hn, 404, "no such table", hdrNone)
	}
	switch token := h.token(t); {
	case !bytes.Equal(req.Method, methodPOST):
		return h.reject(e, hasBody, hn, 405, "ingest takes POST", hdrAllowPOST)
	case token != "" && !bearerOK(req.Authorization, token):
		return h.reject(e, hasBody, hn, 401, "missing or wrong bearer token", hdrBearer)
	}
	f, ok := ingest.FormatOf(req.ContentType)
	if !ok {
		return h.reject(e, hasBody, hn, 415, reason415, hdrNone)
	}
	q := queryOf(req.Target)
	if len(q) > maxIngestQuery {
		return h.reject(e, hasBody, hn, 400, "query string longer than 1024 bytes", hdrNone)
	}
	if _, err := ingest.ParseQuery(q); err != nil {
		reason := "bad query string"
		if qe, ok := err.(*ingest.QueryError); ok {
			reason = qe.Reason
		}
		return h.reject(e, hasBody, hn, 400, reason, hdrNone)
	}
	return h.startUpload(e, req, dest{stream: name, format: f, query: q}, hn)
}

// bearerOK reports whether auth is "Bearer TOKEN" (the scheme in any case)
// with TOKEN equal to token, compared in constant time.
func bearerOK(auth []byte, token string) bool {
	const scheme = "bearer "
	if len(auth) < len(scheme) || !equalFoldASCII(auth[:len(scheme)], scheme) {
		return false
	}
	got := bytes.TrimLeft(auth[len(scheme):], " ")
	return subtle.ConstantTimeCompare(got, []byte(token)) == 1
}

func equalFoldASCII(b []byte, lower string) bool {
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// queryOf returns the query of a request target: after '?', before '#'.
func queryOf(t []byte) []byte {
	i := bytes.IndexByte(t, '?')
	if i < 0 {
		return nil
	}
	q := t[i+1:]
	if j := bytes.IndexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	return q
}

// decodeRows turns the complete body of r into its table's rows: on
// success the record's buffer holds the metadata and the rows, charged in
// place of the body. Otherwise the request is answered (400 with the
// errors, or 503 when the budget cannot take the rows), its record freed,
// and open says whether the connection is still open.
func (h *handler) decodeRows(e *ev, r *request) (t *schema.Table, rows int, ok, open bool) {
	b := r.buf.B
	m := r.metaLen()
	t = h.tables[string(b[:r.streamN])]
	opts, _ := ingest.ParseQuery(b[m-int(r.queryN) : m]) // checked with the head
	nb := bytebufferpool.Get()
	out := append(nb.B[:0], b[:m]...)
	out, rows, err := e.l.dec.Decode(out, t, r.format, opts, b[m:])
	if err == nil && rows > 0 && h.budget.Reserve(int64(cap(out))) {
		old := r.buf
		nb.B = out
		r.buf = nb
		bytebufferpool.Put(old)
		h.budget.Release(r.reserved)
		r.reserved = int64(cap(out))
		return t, rows, true, true
	}
	nb.B = out[:0]
	bytebufferpool.Put(nb)
	h.freeRequest(e)
	if e.sid == 0 {
		e.s.Flags = e.s.Flags.WithState(conn.StateHead)
	}
	switch ie, isIngest := err.(*ingest.Error); {
	case isIngest:
		e.l.jbuf = append(ie.AppendJSON(e.l.jbuf[:0]), '\n')
		return nil, 0, false, h.answerJSON(e, 400, e.l.jbuf)
	case err != nil:
		return nil, 0, false, h.answer(e, 500, textPlain, "internal error", hdrReasonLine, false)
	case rows == 0:
		e.l.jbuf = append(e.l.jbuf[:0], `{"error":"no records"}`+"\n"...)
		return nil, 0, false, h.answerJSON(e, 400, e.l.jbuf)
	}
	h.budgetRefused.Add(1)
	return nil, 0, false, h.answer(e, 503, textPlain, "server busy: in-flight body budget exhausted", hdrRetry|hdrReasonLine, false)
}

// appendRowsAnswer appends the JSON body of an ingest request's 201,
// {"table":"T","rows":N,"first_id":N,"durable":"mysql"}, or 202,
// {"table":"T","rows":N,"durable":"spool","spool_seq":N}. Table names are
// identifiers ([A-Za-z_][A-Za-z0-9_]*): no escaping needed.
func appendRowsAnswer(b []byte, a store.Answer, table string, rows int) []byte {
	b = append(b, `{"table":"`...)
	b = append(b, table...)
	b = append(b, `","rows":`...)
	b = strconv.AppendInt(b, int64(rows), 10)
	if a.Status == 201 {
		b = append(b, `,"first_id":`...)
		b = strconv.AppendUint(b, a.ID, 10)
		return append(b, ",\"durable\":\"mysql\"}\n"...)
	}
	b = append(b, `,"durable":"spool","spool_seq":`...)
	b = strconv.AppendUint(b, a.SpoolSeq, 10)
	return append(b, "}\n"...)
}
