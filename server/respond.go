package server

import (
	"net/http"
	"strconv"
	"time"

	"upsink/conn"
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
)

const (
	textPlain = "text/plain; charset=utf-8"
	appJSON   = "application/json"
)

var errStoreUnavailable = store.ErrUnavailable

// answer writes a response and keeps the connection's machine going: it
// returns true if the connection stays open for the next request, false if
// it was closed (by a write error, or because keep-alive ends here).
func (h *handler) answer(l *loop, c stream, fd int, s *conn.Slot, status int, ctype, body string, extra hdr, head bool) bool {
	return h.finish(l, c, fd, s, respond(h, l, c, s, status, ctype, body, extra, head))
}

func (h *handler) answerJSON(l *loop, c stream, fd int, s *conn.Slot, status int, body []byte) bool {
	return h.finish(l, c, fd, s, respond(h, l, c, s, status, appJSON, body, hdrNone, false))
}

func (h *handler) finish(l *loop, c stream, fd int, s *conn.Slot, open bool) bool {
	if !open {
		return false
	}
	if s.Flags&(conn.FlagCloseAfter|conn.FlagKeepAlive) != conn.FlagKeepAlive {
		h.close(l, fd) // keep-alive ends with this answer
		return false
	}
	l.tq.Arm(fd, conn.QueueIdle, h.slab.Now())
	return true
}

// respond formats one response into the loop's scratch buffer and writes it.
// No fmt, no allocation once the scratch buffer has grown.
func respond[T ~string | ~[]byte](h *handler, l *loop, c stream, s *conn.Slot, status int, ctype string, body T, extra hdr, head bool) bool {
	h.nreqs.Add(1)
	n := len(body)
	if extra&hdrReasonLine != 0 {
		n++
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
		b = strconv.AppendInt(b, int64((h.cfg.RetryAfter+time.Second-1)/time.Second), 10)
	}
	if extra&hdrAllowPOST != 0 {
		b = append(b, "\r\nAllow: POST"...)
	}
	if extra&hdrAllowGET != 0 {
		b = append(b, "\r\nAllow: GET, HEAD"...)
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
	ok := h.write(c, s, b)
	if cap(b) > cap(l.out) {
		l.out = b[:0]
	}
	return ok
}

// appendCreated appends the 201 body {"id":N,"stream":"S","bytes":N}. The
// stream name was validated to [A-Za-z0-9_.-], so it needs no escaping.
func appendCreated(b []byte, id uint64, stream []byte, n int) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"stream":"`...)
	b = append(b, stream...)
	b = append(b, `","bytes":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, "}\n"...)
}

func appendDate(b []byte) []byte { return time.Now().UTC().AppendFormat(b, http.TimeFormat) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
