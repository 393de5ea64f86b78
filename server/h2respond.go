package server

import (
	"upsink/conn"
	"upsink/h2"
)

// Answers on HTTP/2 streams: sent at once, after the running Feed's frames
// (deferred), or when a GET's stream ends (held).

// h2held is the answer to a request that declares no body (GET, HEAD)
// while its stream is still open: it is sent when the stream ends, as an
// HTTP/1.1 server answers a request once it has read all of it (answering
// first and resetting the stream would be allowed, but a client that sends
// more on the stream would see its frames refused).
type h2held struct {
	a     h2answer
	body  []byte
	since conn.Clock
}

// respondH2 sends an answer on stream e.sid: at once, or after the frames of
// the Feed that is running (deferred).
func (h *handler) respondH2(e *ev, status int, ctype string, body []byte, extra hdr, head bool) bool {
	l := e.l
	if hd := e.held; hd != nil {
		hd.a = h2answer{id: e.sid, status: int16(status), ctype: ctype, extra: extra, head: head}
		hd.body = append([]byte(nil), body...)
		return true
	}
	if l.h2.sess != nil {
		l.deferred = append(l.deferred, h2answer{id: e.sid, status: int16(status), ctype: ctype, extra: extra, head: head,
			off: uint32(len(l.dbody)), n: uint32(len(body))})
		l.dbody = append(l.dbody, body...)
		return true
	}
	sess := *h.h2s.At(e.fd)
	out := sess.c.Respond(l.h2out[:0], e.sid, h2response(h, l, status, ctype, extra, headLen(body, head)), bodyOrNil(body, head))
	ok := len(out) == 0 || h.write(e, out)
	l.h2out = out[:0]
	return ok
}

// h2answer is an answer given while Feed runs, sent after its frames.
type h2answer struct {
	id     uint32
	status int16
	head   bool
	extra  hdr
	ctype  string
	off, n uint32 // its body in loop.dbody
}

func (l *loop) dropDeferred(id uint32) {
	for i := range l.deferred {
		if l.deferred[i].id == id {
			l.deferred[i].id = 0
		}
	}
}

func (h *handler) flushDeferred(e *ev, sess *h2sess) {
	l := e.l
	if len(l.deferred) == 0 {
		return
	}
	out := l.h2out[:0]
	for _, a := range l.deferred {
		if a.id == 0 {
			continue
		}
		body := l.dbody[a.off : a.off+a.n]
		out = sess.c.Respond(out, a.id, h2response(h, l, int(a.status), a.ctype, a.extra, headLen(body, a.head)), bodyOrNil(body, a.head))
	}
	clear(l.deferred)
	l.deferred, l.dbody = l.deferred[:0], l.dbody[:0]
	if len(out) > 0 {
		h.write(e, out)
	}
	l.h2out = out[:0]
}

// headLen is the content-length of a HEAD answer: its GET's body length.
func headLen(b []byte, head bool) int {
	if head {
		return len(b)
	}
	return 0
}

func bodyOrNil(b []byte, head bool) []byte {
	if head {
		return nil
	}
	return b
}

// h2response fills the loop's response head for an answer.
func h2response(h *handler, l *loop, status int, ctype string, extra hdr, headLength int) *h2.Response {
	r := &l.h2resp
	r.Status, r.ContentType, r.HeadLength = status, ctype, headLength
	f := r.Extra[:0]
	if extra&hdrRetry != 0 {
		f = append(f, h2.Field{Name: "retry-after", Value: h.retryAfter})
	}
	if extra&hdrAllowPOST != 0 {
		f = append(f, h2.Field{Name: "allow", Value: "POST"})
	}
	if extra&hdrAllowGET != 0 {
		f = append(f, h2.Field{Name: "allow", Value: "GET, HEAD"})
	}
	if extra&hdrBearer != 0 {
		f = append(f, h2.Field{Name: "www-authenticate", Value: "Bearer"})
	}
	if extra&hdrReplayed != 0 {
		f = append(f, h2.Field{Name: "idempotent-replayed", Value: "true"})
	}
	r.Extra = f
	return r
}
