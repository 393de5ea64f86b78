package server

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"upsink/conn"
	"upsink/durable"
	"upsink/store"
)

// hdr selects optional response headers.
type hdr uint8

const (
	hdrNone       hdr = 0
	hdrRetry      hdr = 1 << iota // Retry-After
	hdrAllowPOST                  // Allow: POST
	hdrAllowGET                   // Allow: GET, HEAD
	hdrReasonLine                 // the body is a one-line reason: add the newline
	hdrReplayed                   // Idempotent-Replayed: true (the first answer of an Idempotency-Key)
	hdrBearer                     // WWW-Authenticate: Bearer
)

const (
	textPlain = "text/plain; charset=utf-8"
	appJSON   = "application/json"
)

// answer writes a response and keeps the connection's machine going: it
// returns true if the connection stays open for the next request, false if
// it was closed (by a write error, or because keep-alive ends here).
func (h *handler) answer(e *ev, status int, ctype, body string, extra hdr, head bool) bool {
	return h.finish(e, respond(h, e, status, ctype, body, extra, head))
}

func (h *handler) answerJSON(e *ev, status int, body []byte) bool {
	return h.finish(e, respond(h, e, status, appJSON, body, hdrNone, false))
}

func (h *handler) finish(e *ev, open bool) bool {
	if !open || e.sid != 0 {
		return open // HTTP/2: the answer ends the stream, not the connection
	}
	if e.s.Flags&(conn.FlagCloseAfter|conn.FlagKeepAlive) != conn.FlagKeepAlive {
		h.close(e.l, e.fd) // keep-alive ends with this answer
		return false
	}
	e.l.tq.Arm(e.fd, conn.QueueIdle, h.slab.Now())
	return true
}

// failWith answers and then closes the connection gracefully: the write side
// is shut down and input is drained until EOF or the drain timeout, so the
// client reads the answer instead of a reset.
func (h *handler) failWith(e *ev, status int, reason string, extra hdr) gnet.Action {
	if e.sid != 0 {
		h.answerStream(e, status, reason, extra)
		return gnet.None
	}
	s := e.s
	if s.Req != 0 && s.Flags&conn.FlagSubmitted == 0 {
		h.freeRequest(e)
	}
	s.Flags |= conn.FlagCloseAfter
	s.Flags &^= conn.FlagKeepAlive
	if !respond(h, e, status, textPlain, reason, extra|hdrReasonLine, false) {
		return gnet.None
	}
	if e.c.OutboundBuffered() > 0 {
		return gnet.Close // gnet flushes what it can before closing
	}
	_ = unix.Shutdown(e.fd, unix.SHUT_WR)
	_, _ = e.c.Discard(-1)
	h.unhold(s) // the input is discarded from here on; nothing is kept
	s.Flags = s.Flags.WithState(conn.StateDrain)
	e.l.tq.Arm(e.fd, conn.QueueDrain, h.slab.Now())
	return gnet.None
}

// fail is failWith for a request that never got past its head.
func (h *handler) fail(e *ev, status int, reason string) gnet.Action {
	return h.failWith(e, status, reason, hdrNone)
}

// answerAndClose answers and closes at once (timeouts).
func (h *handler) answerAndClose(e *ev, status int, reason string) {
	e.s.Flags |= conn.FlagCloseAfter
	e.s.Flags &^= conn.FlagKeepAlive
	if respond(h, e, status, textPlain, reason, hdrReasonLine, false) {
		h.close(e.l, e.fd)
	}
}

// write writes p and reports whether the connection is still open (a write
// error makes gnet close it, and OnClose bumps the generation).
func (h *handler) write(e *ev, p []byte) bool {
	gen := e.s.Gen
	_, _ = e.c.Write(p)
	return e.s.Generation() == gen // a close bumps it; after one, the slot may be another loop's
}

// respond formats one response into the loop's scratch buffer and writes it.
// No fmt, no allocation once the scratch buffer has grown. While the server
// shuts down every answer closes its connection.
func respond[T ~string | ~[]byte](h *handler, e *ev, status int, ctype string, body T, extra hdr, head bool) bool {
	h.nreqs.Add(1)
	h.counts.add(e.route, status)
	s, l := e.s, e.l
	if h.draining.Load() {
		s.Flags |= conn.FlagCloseAfter
	}
	n := len(body)
	if extra&hdrReasonLine != 0 {
		n++
	}
	if h.alog != nil {
		h.logLine(e, status, n)
	}
	if e.sid != 0 {
		b := append(l.h2body[:0], body...)
		if extra&hdrReasonLine != 0 {
			b = append(b, '\n')
		}
		l.h2body = b[:0]
		return h.respondH2(e, status, ctype, b, extra, head)
	}
	b := l.out[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nDate: "...)
	b = append(b, l.date...)
	b = append(b, "\r\nContent-Type: "...)
	b = append(b, ctype...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(n), 10)
	if extra&hdrRetry != 0 {
		b = append(b, "\r\nRetry-After: "...)
		b = append(b, h.retryAfter...)
	}
	if extra&hdrAllowPOST != 0 {
		b = append(b, "\r\nAllow: POST"...)
	}
	if extra&hdrAllowGET != 0 {
		b = append(b, "\r\nAllow: GET, HEAD"...)
	}
	if extra&hdrBearer != 0 {
		b = append(b, "\r\nWWW-Authenticate: Bearer"...)
	}
	if extra&hdrReplayed != 0 {
		b = append(b, "\r\nIdempotent-Replayed: true"...)
	}
	switch {
	case s.Flags&conn.FlagCloseAfter != 0 || s.Flags&conn.FlagKeepAlive == 0:
		b = append(b, "\r\nConnection: close"...)
	case s.Flags&conn.FlagHTTP10 != 0:
		b = append(b, "\r\nConnection: keep-alive"...)
	}
	b = append(b, "\r\n\r\n"...)
	if !head {
		b = append(b, body...)
		if extra&hdrReasonLine != 0 {
			b = append(b, '\n')
		}
	}
	ok := h.write(e, b)
	if cap(b) > cap(l.out) {
		l.out = b[:0]
	}
	return ok
}

// answerUpload answers an upload whose fate is known, and frees its record:
// err is what Submit returned, or (after OnDone) r.up.Err.
func (h *handler) answerUpload(e *ev, r *request, err error) bool {
	u := &r.up
	status, reason, extra := 503, "database unavailable and spool full or disabled: upload not stored", hdrRetry
	switch {
	case err == nil || err == durable.ErrAnswered:
		l := e.l
		if t := u.Job.Table; t != nil {
			l.jbuf = appendRowsAnswer(l.jbuf[:0], u.Answer, t.Name, u.Job.Rows)
		} else {
			l.jbuf = appendAnswer(l.jbuf[:0], u.Answer, u.Job.Stream, len(u.Job.Body))
		}
		if u.Replayed {
			extra = hdrReplayed
		} else {
			extra = hdrNone
		}
		status = int(u.Answer.Status)
		h.freeRequest(e)
		return h.finish(e, respond(h, e, status, appJSON, l.jbuf, extra, false))
	case err == durable.ErrKeyInProgress:
		status, reason, extra = 409, "a request with this Idempotency-Key is still in progress", hdrNone
	case err == durable.ErrKeyMismatch:
		status, reason, extra = 422, "Idempotency-Key already used with a different body", hdrNone
	case errors.Is(err, store.ErrOutcomeUnknown):
		// Only when the store closes (shutdown) with the database away
		// mid-commit; by then the connection is normally gone.
		status, reason, extra = 503, "the database went away during the commit: outcome unknown (retry with the same Idempotency-Key)", hdrNone
	case isRejected(err):
		status, reason, extra = 422, "the database refused this upload's data", hdrNone
	}
	h.freeRequest(e)
	return h.answer(e, status, textPlain, reason, extra|hdrReasonLine, false)
}

// isRejected: the database refused the upload's data (errors.As's target
// escapes: kept off the success path).
func isRejected(err error) bool {
	var rejected *store.RejectedError
	return errors.As(err, &rejected)
}

func (h *handler) freeRequest(e *ev) {
	if e.sid != 0 {
		if e.req != 0 {
			h.reqs.free(h, e.req-1)
			(*h.h2s.At(e.fd)).drop(e.sid)
			e.req = 0
		}
		return
	}
	h.reqs.free(h, e.s.Req-1)
	e.s.Req = 0
}

// appendAnswer appends the JSON body of a 201,
// {"id":N,"stream":"S","bytes":N,"durable":"mysql"}, or of a 202,
// {"stream":"S","bytes":N,"durable":"spool","spool_seq":N}. The stream name
// was validated to [A-Za-z0-9_.-], so it needs no escaping.
func appendAnswer(b []byte, a store.Answer, stream []byte, n int) []byte {
	b = append(b, '{')
	if a.Status == 201 {
		b = append(b, `"id":`...)
		b = strconv.AppendUint(b, a.ID, 10)
		b = append(b, ',')
	}
	b = append(b, `"stream":"`...)
	b = append(b, stream...)
	b = append(b, `","bytes":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	if a.Status == 201 {
		return append(b, ",\"durable\":\"mysql\"}\n"...)
	}
	b = append(b, `,"durable":"spool","spool_seq":`...)
	b = strconv.AppendUint(b, a.SpoolSeq, 10)
	return append(b, "}\n"...)
}

// logLine appends the access log's line for an answer:
// "DATE PEER ROUTE STATUS BODY-BYTES\n" (the loop's cached HTTP date).
func (h *handler) logLine(e *ev, status, n int) {
	l := e.l
	b := append(l.abuf[:0], l.date...)
	b = append(b, ' ')
	if ta, ok := e.gc.RemoteAddr().(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		b = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	b = append(b, routeNames[e.route]...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, '\n')
	l.abuf = b
	h.alog.Append(b)
}

func appendDate(b []byte) []byte { return time.Now().UTC().AppendFormat(b, http.TimeFormat) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// readyz answers /readyz: 200 while an upload can be made durable (MariaDB
// is ready, or the spool has room), else 503; the body says which, and the
// spool's backlog, as one line of JSON:
// {"ready":true,"database":"up","nodes":["127.0.0.1:3306",...],"spool":{"records":N,"bytes":N,"oldest_age_seconds":F}}
// where nodes has, per store writer, the database node it writes to ("": none).
func (h *handler) readyz(e *ev, hasBody bool, hn int, head bool) (gnet.Action, bool) {
	st := h.st.Status()
	b := append(e.l.jbuf[:0], `{"ready":`...)
	b = strconv.AppendBool(b, st.Ready)
	b = append(b, `,"database":"`...)
	if st.Database {
		b = append(b, "up"...)
	} else {
		b = append(b, "down"...)
	}
	b = append(b, `","nodes":`...)
	if nodes, err := json.Marshal(st.Nodes); err == nil {
		b = append(b, nodes...)
	} else {
		b = append(b, "[]"...)
	}
	if st.Spool {
		bl := st.Backlog
		b = append(b, `,"spool":{"records":`...)
		b = strconv.AppendUint(b, bl.Records, 10)
		b = append(b, `,"bytes":`...)
		b = strconv.AppendInt(b, bl.Bytes, 10)
		b = append(b, `,"oldest_age_seconds":`...)
		b = strconv.AppendFloat(b, st.BacklogAge(), 'f', 3, 64)
		b = append(b, '}')
	}
	b = append(b, "}\n"...)
	e.l.jbuf = b
	status, extra := 200, hdrNone
	if !st.Ready {
		status, extra = 503, hdrRetry
	}
	if hasBody {
		return h.failWith(e, status, "/readyz takes no body", extra), false
	}
	e.consume(hn)
	return gnet.None, h.finish(e, respond(h, e, status, appJSON, b, extra, head))
}
