package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

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
func (h *handler) answer(e *ev, status int, ctype, body string, extra hdr, head bool) bool {
	return h.finish(e, respond(h, e, status, ctype, body, extra, head))
}

func (h *handler) answerJSON(e *ev, status int, body []byte) bool {
	return h.finish(e, respond(h, e, status, appJSON, body, hdrNone, false))
}

func (h *handler) finish(e *ev, open bool) bool {
	if !open {
		return false
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
	s := e.s
	if s.Req != 0 && s.Flags&conn.FlagSubmitted == 0 {
		h.reqs.free(h, s.Req-1)
		s.Req = 0
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
	s, l := e.s, e.l
	if h.draining.Load() {
		s.Flags |= conn.FlagCloseAfter
	}
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
	ok := h.write(e, b)
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
