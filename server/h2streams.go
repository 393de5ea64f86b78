package server

import (
	"bytes"

	"upsink/conn"
	"upsink/ingest"
	"upsink/parser"
)

// An HTTP/2 connection's streams (h2.go has the connection): the
// h2.Handler that Feed calls per request, body and reset, and the
// completion of a stream's commit.

// h2handler is a loop's h2.Handler: it carries the event being served
// while Feed runs (loop-only; sess is nil outside Feed).
type h2handler struct {
	h    *handler
	e    ev
	sess *h2sess
}

// streamEv is the event for an answer on stream id of the connection in e.
func (hh *h2handler) streamEv(id, req uint32) ev {
	se := hh.e
	se.sid, se.req = id, req
	return se
}

func (hh *h2handler) Request(id uint32, req *parser.Request, endStream bool) {
	h, sess := hh.h, hh.sess
	e := hh.streamEv(id, 0)
	e.end = endStream
	if !endStream {
		if bytes.Equal(req.Method, methodGET) || bytes.Equal(req.Method, methodHEAD) {
			e.held = &h2held{since: h.slab.Now()}
		} else if req.ContentLength < 0 {
			req.Chunked = true // a body of unknown length: read as chunked would be
		}
	}
	_, _ = h.route(&e, req, 0)
	switch {
	case e.req != 0:
		sess.streams = append(sess.streams, h2stream{id: id, req: e.req})
		if endStream {
			hh.Data(id, nil, true)
		}
	case e.held != nil && e.held.a.id != 0:
		sess.streams = append(sess.streams, h2stream{id: id, held: e.held})
	}
}

func (hh *h2handler) Data(id uint32, p []byte, end bool) bool {
	h, sess := hh.h, hh.sess
	st := sess.find(id)
	if st == nil {
		return false
	}
	if st.held != nil {
		// A GET or HEAD's body is not read; its answer goes at the end.
		if end {
			a := st.held
			sess.drop(id)
			e := hh.streamEv(id, 0)
			h.respondH2(&e, int(a.a.status), a.a.ctype, a.body, a.a.extra, a.a.head)
		}
		return true
	}
	e := hh.streamEv(id, st.req)
	r := h.reqs.at(st.req - 1)
	if r.submitted {
		return false
	}
	if len(p) > 0 {
		limit := h.cfg.MaxBody
		if r.left > 0 {
			limit = int64(r.bodyLen()) + int64(r.left)
		}
		if int64(r.bodyLen()+len(p)) > h.cfg.MaxBody {
			h.answerStream(&e, 413, h.reason413, hdrNone)
			return false
		}
		if !h.growBody(r, len(p), limit, end) {
			h.budgetRefused.Add(1)
			h.answerStream(&e, 503, "server busy: in-flight budget exhausted", hdrRetry)
			return false
		}
		r.buf.B = append(r.buf.B, p...)
		h.bodyBytes.Add(uint64(len(p)))
		r.left = uint32(max(int64(r.left)-int64(len(p)), 0))
		r.progress = h.slab.Now()
	}
	if end {
		h.enqueue(&e, r, st.req-1)
		return false
	}
	return true
}

func (hh *h2handler) Reset(id uint32) {
	h, sess := hh.h, hh.sess
	hh.l().dropDeferred(id)
	st := sess.find(id)
	if st == nil {
		sess.c.Release(id)
		return
	}
	if st.held != nil {
		sess.drop(id)
		sess.c.Release(id)
		return
	}
	if h.reqs.at(st.req - 1).submitted {
		st.reset = true // released when the commit completes
		return
	}
	h.reqs.free(h, st.req-1)
	sess.drop(id)
	sess.c.Release(id)
}

func (hh *h2handler) l() *loop { return hh.e.l }

// answerStream answers a stream that will not be served and frees its
// record (the rest of its body is refused: h2 resets the stream after the
// answer).
func (h *handler) answerStream(e *ev, status int, reason string, extra hdr) {
	h.freeRequest(e)
	respond(h, e, status, textPlain, reason, extra|hdrReasonLine, false)
}

// completeH2 answers a stream whose commit finished.
func (h *handler) completeH2(l *loop, idx uint32, r *request) {
	fd := int(r.fd)
	s := h.slab.At(fd)
	if s.Generation() != r.gen || s.Flags.State() != conn.StateH2 {
		h.reqs.free(h, idx) // the connection went away
		return
	}
	sess := *h.h2s.At(fd)
	st := sess.byReq(idx + 1)
	if st == nil {
		h.reqs.free(h, idx)
		return
	}
	id := st.id
	if st.reset {
		h.reqs.free(h, idx)
		sess.drop(id)
		sess.c.Release(id)
		return
	}
	e := h.event(l, *h.conns.At(fd), fd, s)
	if e.c == nil {
		h.reqs.free(h, idx)
		sess.drop(id)
		h.close(l, fd)
		return
	}
	e.sid, e.req = id, idx+1
	e.route = routeUpload
	if r.format != ingest.FormatInvalid {
		e.route = routeIngest
	}
	gen := r.gen
	h.answerUpload(&e, r, r.up.Err) // frees r: another loop may reuse it at once
	if s.Generation() != gen {
		return
	}
	if h.draining.Load() && !h.goawayH2(&e, sess) {
		return
	}
	if !h.chargeH2(sess) {
		h.close(l, fd)
		return
	}
	h.armH2(&e, sess)
}
