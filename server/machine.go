package server

import (
	"bytes"
	"net"
	"slices"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"

	"upsink/conn"
	"upsink/parser"
)

// serve runs the connection's machine until it must wait: for bytes (return
// None with the unread bytes left in gnet's buffer), for a commit (state
// Commit), or until it closes. Request parse state lives on this stack.
func (h *handler) serve(l *loop, c stream, fd int, s *conn.Slot) gnet.Action {
	for {
		switch s.Flags.State() {
		case conn.StateCommit:
			if s.Flags&conn.FlagCloseAfter != 0 || !h.hold(s, c.InboundBuffered(), maxPipelined) {
				// Too much sent ahead: drop it and close after the answer.
				h.unhold(s)
				s.Flags |= conn.FlagCloseAfter
				_, _ = c.Discard(-1)
			}
			return gnet.None
		case conn.StateDrain:
			_, _ = c.Discard(-1)
			return gnet.None
		case conn.StateHead:
			if c.OutboundBuffered() > maxOutbound {
				return gnet.Close
			}
			n := c.InboundBuffered()
			if n == 0 {
				return gnet.None
			}
			buf, _ := c.Peek(n)
			if held := int(s.Left); held > 0 && held < n && n < parser.MaxHeaderBytes &&
				bytes.IndexByte(buf[held:], '\n') < 0 {
				// No new line ended since the last parse: it cannot complete
				// now, so do not rescan (a byte-at-a-time client would
				// otherwise cost a full rescan per byte).
				if !h.hold(s, n, parser.MaxHeaderBytes) {
					return h.fail(l, c, fd, s, 503, "server busy: in-flight budget exhausted")
				}
				return gnet.None
			}
			var req parser.Request
			hn, err := parser.Parse(buf, &req)
			if err == parser.ErrNeedMore {
				if !h.hold(s, n, parser.MaxHeaderBytes) {
					return h.fail(l, c, fd, s, 503, "server busy: in-flight budget exhausted")
				}
				if s.Flags.Queue() != conn.QueueHead {
					l.tq.Arm(fd, conn.QueueHead, h.slab.Now())
				}
				return gnet.None
			}
			h.unhold(s)
			if err != nil {
				pe, ok := err.(*parser.Error)
				if !ok {
					pe = &errInternal
				}
				return h.fail(l, c, fd, s, pe.Status, pe.Reason)
			}
			if act, more := h.route(l, c, fd, s, &req, buf, hn); !more {
				return act
			}
		case conn.StateBody:
			if act, more := h.readBody(l, c, fd, s); !more {
				return act
			}
		}
	}
}

var errInternal = parser.Error{Status: 500, Reason: "internal error"}

// route answers or starts the request whose head is buf[:hn].
func (h *handler) route(l *loop, c stream, fd int, s *conn.Slot, req *parser.Request, buf []byte, hn int) (gnet.Action, bool) {
	h.setRequestFlags(s, req)
	hasBody := req.Chunked || req.ContentLength > 0
	path := pathOf(req.Target)
	switch {
	case bytes.HasPrefix(path, prefixUpload):
		stream := path[len(prefixUpload):]
		if !validStream(stream) {
			return h.reject(l, c, fd, s, hasBody, hn, 404, "stream name must match [A-Za-z0-9_.-]{1,64}", hdrNone)
		}
		if !bytes.Equal(req.Method, methodPOST) {
			return h.reject(l, c, fd, s, hasBody, hn, 405, "uploads take POST", hdrAllowPOST)
		}
		return h.startUpload(l, c, fd, s, req, stream, hn)
	case bytes.Equal(path, pathHealthz), bytes.Equal(path, pathReadyz):
		if !bytes.Equal(req.Method, methodGET) && !bytes.Equal(req.Method, methodHEAD) {
			return h.reject(l, c, fd, s, hasBody, hn, 405, "method not allowed", hdrAllowGET)
		}
		head := bytes.Equal(req.Method, methodHEAD)
		if bytes.Equal(path, pathReadyz) && !h.st.Ready() {
			return h.reject(l, c, fd, s, hasBody, hn, 503, "database unavailable", hdrRetry)
		}
		status, body := 200, "ok\n"
		if bytes.Equal(path, pathReadyz) {
			body = "ready\n"
		}
		if hasBody {
			return h.reject(l, c, fd, s, true, hn, status, body[:len(body)-1], hdrNone)
		}
		_, _ = c.Discard(hn)
		return gnet.None, h.answer(l, c, fd, s, status, textPlain, body, hdrNone, head)
	default:
		return h.reject(l, c, fd, s, hasBody, hn, 404, "not found", hdrNone)
	}
}

func (h *handler) setRequestFlags(s *conn.Slot, req *parser.Request) {
	s.Flags &^= conn.FlagKeepAlive | conn.FlagHTTP10 | conn.FlagChunked | conn.FlagSubmitted
	if req.KeepAlive {
		s.Flags |= conn.FlagKeepAlive
	}
	if req.Minor == 0 {
		s.Flags |= conn.FlagHTTP10
	}
}

// reject answers a request that will not be served. If it has a body we have
// not read, the connection is closed after the answer (lingering); otherwise
// it stays usable.
func (h *handler) reject(l *loop, c stream, fd int, s *conn.Slot, hasBody bool, hn, status int, reason string, extra hdr) (gnet.Action, bool) {
	if hasBody {
		return h.failWith(l, c, fd, s, status, reason, extra), false
	}
	_, _ = c.Discard(hn)
	return gnet.None, h.answer(l, c, fd, s, status, textPlain, reason, extra|hdrReasonLine, false)
}

// startUpload accepts an upload's head: limits, readiness, budget, record.
func (h *handler) startUpload(l *loop, c stream, fd int, s *conn.Slot, req *parser.Request, stream []byte, hn int) (gnet.Action, bool) {
	if req.ContentLength > h.cfg.MaxBody {
		return h.failWith(l, c, fd, s, 413, h.reason413, hdrNone), false
	}
	if !h.st.Ready() {
		return h.failWith(l, c, fd, s, 503, "database unavailable", hdrRetry), false
	}
	reserve := int64(metaMax)
	if req.ContentLength > 0 {
		reserve += req.ContentLength
	}
	if !h.budget.reserve(reserve) {
		return h.failWith(l, c, fd, s, 503, "server busy: in-flight body budget exhausted", hdrRetry), false
	}
	idx, ok := h.reqs.get()
	if !ok {
		h.budget.release(reserve)
		return h.failWith(l, c, fd, s, 503, "server busy: no request record free", hdrRetry), false
	}
	r := h.reqs.at(idx)
	r.reserved = reserve
	r.c, r.fd, r.gen, r.loop = c, int32(fd), s.Gen, uint8(l.idx)
	r.buf = bytebufferpool.Get()
	b := append(r.buf.B[:0], stream...)
	r.streamN = uint8(len(stream))
	if ta, ok := (*h.conns.At(fd)).RemoteAddr().(*net.TCPAddr); ok {
		b = ta.AddrPort().AppendTo(b)
	}
	r.peerN = uint8(len(b) - int(r.streamN))
	ct := req.ContentType
	if len(ct) > 255 {
		ct = ct[:255]
	}
	b = append(b, ct...)
	r.ctypeN = uint8(len(ct))
	if req.ContentLength > 0 {
		b = slices.Grow(b, int(req.ContentLength))
	}
	r.buf.B = b
	s.Req = idx + 1
	s.Aux = 0
	s.Left = 0
	if req.Chunked {
		s.Flags |= conn.FlagChunked
	} else if req.ContentLength > 0 {
		s.Left = uint32(req.ContentLength)
	}
	_, _ = c.Discard(hn)
	if req.Expect100 && req.Minor == 1 && (req.Chunked || req.ContentLength > 0) && c.InboundBuffered() == 0 {
		if !h.write(c, s, continue100) {
			return gnet.None, false
		}
	}
	s.Flags = s.Flags.WithState(conn.StateBody)
	l.tq.Arm(fd, conn.QueueIdle, h.slab.Now())
	return gnet.None, true
}

var continue100 = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// readBody moves body bytes from gnet's buffer into the record's buffer.
func (h *handler) readBody(l *loop, c stream, fd int, s *conn.Slot) (gnet.Action, bool) {
	r := h.reqs.at(s.Req - 1)
	if s.Flags&conn.FlagChunked == 0 {
		n := c.InboundBuffered()
		if k := int(s.Left); n > k {
			n = k
		}
		if n > 0 {
			buf, _ := c.Peek(n)
			r.buf.B = append(r.buf.B, buf...)
			_, _ = c.Discard(n)
			s.Left -= uint32(n)
		}
		if s.Left > 0 {
			if n > 0 {
				l.tq.Arm(fd, conn.QueueIdle, h.slab.Now())
			}
			return gnet.None, false
		}
		return h.submit(l, c, fd, s, r)
	}
	d := parser.RestoreChunked(uint8(s.Aux), s.Left)
	progress := false
	for !d.Done() {
		n := c.InboundBuffered()
		if n == 0 {
			break
		}
		buf, _ := c.Peek(n)
		data, used, err := d.Decode(buf)
		if err != nil {
			pe, ok := err.(*parser.Error)
			if !ok {
				pe = &errInternal
			}
			return h.failWith(l, c, fd, s, pe.Status, pe.Reason, hdrNone), false
		}
		if len(data) > 0 {
			bodyLen := int64(len(r.buf.B) - r.metaLen() + len(data))
			if bodyLen > h.cfg.MaxBody {
				return h.failWith(l, c, fd, s, 413, h.reason413, hdrNone), false
			}
			if !h.budget.reserve(int64(len(data))) {
				return h.failWith(l, c, fd, s, 503, "server busy: in-flight body budget exhausted", hdrRetry), false
			}
			r.reserved += int64(len(data))
			r.buf.B = append(r.buf.B, data...)
		}
		if used == 0 {
			break
		}
		_, _ = c.Discard(used)
		progress = true
	}
	if d.Done() {
		return h.submit(l, c, fd, s, r)
	}
	st, left := d.Save()
	s.Aux, s.Left = uint32(st), left
	if progress {
		l.tq.Arm(fd, conn.QueueIdle, h.slab.Now())
	}
	return gnet.None, false
}

func (r *request) metaLen() int { return int(r.streamN) + int(r.peerN) + int(r.ctypeN) }

// submit hands a complete upload to the store and suspends the connection.
func (h *handler) submit(l *loop, c stream, fd int, s *conn.Slot, r *request) (gnet.Action, bool) {
	b := r.buf.B
	a, p, m := int(r.streamN), int(r.streamN)+int(r.peerN), r.metaLen()
	r.job.Stream, r.job.RemoteAddr, r.job.ContentType, r.job.Body = b[:a], b[a:p], b[p:m], b[m:]
	r.job.ReceivedAt = time.Now()
	r.job.Tag = uint64(s.Req - 1)
	r.job.ID, r.job.Err = 0, nil
	if err := h.st.Submit(&r.job); err != nil {
		h.reqs.free(h, s.Req-1)
		s.Req = 0
		reason := "database unavailable"
		if err != errStoreUnavailable {
			reason = "server busy: commit queue full"
		}
		s.Flags = s.Flags.WithState(conn.StateHead)
		return gnet.None, h.answer(l, c, fd, s, 503, textPlain, reason, hdrRetry|hdrReasonLine, false)
	}
	s.Flags |= conn.FlagSubmitted
	s.Flags = s.Flags.WithState(conn.StateCommit)
	s.Left, s.Aux = 0, 0 // Left now counts bytes held while suspended
	l.tq.Disarm(fd)
	return gnet.None, true // on to StateCommit, which charges bytes sent ahead
}

// complete answers a request whose commit finished and resumes its connection.
func (h *handler) complete(l *loop, idx uint32) {
	r := h.reqs.at(idx)
	fd := int(r.fd)
	s := h.slab.At(fd)
	// The fd may have been closed here and reopened on another loop: only
	// the generation may be read before it proves the slot is still ours.
	if s.Generation() != r.gen || s.Req != idx+1 {
		h.reqs.free(h, idx) // the client went away; its row may be committed but was never acknowledged
		return
	}
	c := r.c
	var ok bool
	h.unhold(s) // bytes sent ahead are parsed (and charged) afresh below
	s.Flags = s.Flags.WithState(conn.StateHead)
	if r.job.Err == nil {
		l.jbuf = appendCreated(l.jbuf[:0], r.job.ID, r.job.Stream, len(r.job.Body))
		h.reqs.free(h, idx)
		s.Req = 0
		ok = h.answerJSON(l, c, fd, s, 201, l.jbuf)
	} else {
		h.reqs.free(h, idx)
		s.Req = 0
		ok = h.answer(l, c, fd, s, 503, textPlain, "database unavailable: upload not stored", hdrRetry|hdrReasonLine, false)
	}
	if !ok {
		return
	}
	if act := h.drive(l, *h.conns.At(fd), fd, s); act == gnet.Close {
		h.close(l, fd)
	}
}

// failWith answers and then closes the connection gracefully: the write side
// is shut down and input is drained until EOF or the drain timeout, so the
// client reads the answer instead of a reset.
func (h *handler) failWith(l *loop, c stream, fd int, s *conn.Slot, status int, reason string, extra hdr) gnet.Action {
	if st := s.Flags.State(); st == conn.StateHead || st == conn.StateCommit {
		h.unhold(s)
	}
	if s.Req != 0 && s.Flags&conn.FlagSubmitted == 0 {
		h.reqs.free(h, s.Req-1)
		s.Req = 0
	}
	s.Flags |= conn.FlagCloseAfter
	s.Flags &^= conn.FlagKeepAlive
	if !respond(h, l, c, s, status, textPlain, reason, extra|hdrReasonLine, false) {
		return gnet.None
	}
	if c.OutboundBuffered() > 0 {
		return gnet.Close // gnet flushes what it can before closing
	}
	_ = unix.Shutdown(fd, unix.SHUT_WR)
	_, _ = c.Discard(-1)
	s.Flags = s.Flags.WithState(conn.StateDrain)
	l.tq.Arm(fd, conn.QueueDrain, h.slab.Now())
	return gnet.None
}

// fail is failWith for a request that never got past its head.
func (h *handler) fail(l *loop, c stream, fd int, s *conn.Slot, status int, reason string) gnet.Action {
	return h.failWith(l, c, fd, s, status, reason, hdrNone)
}

// answerAndClose answers and closes at once (timeouts).
func (h *handler) answerAndClose(l *loop, c stream, fd int, s *conn.Slot, status int, reason string) {
	s.Flags |= conn.FlagCloseAfter
	s.Flags &^= conn.FlagKeepAlive
	if respond(h, l, c, s, status, textPlain, reason, hdrReasonLine, false) {
		h.close(l, fd)
	}
}

// write writes p and reports whether the connection is still open (a write
// error makes gnet close it, and OnClose bumps the generation).
func (h *handler) write(c stream, s *conn.Slot, p []byte) bool {
	gen := s.Gen
	_, _ = c.Write(p)
	return s.Generation() == gen // a close bumps it; after one, the slot may be another loop's
}

var (
	prefixUpload = []byte("/upload/")
	pathHealthz  = []byte("/healthz")
	pathReadyz   = []byte("/readyz")
	methodPOST   = []byte("POST")
	methodGET    = []byte("GET")
	methodHEAD   = []byte("HEAD")
)

// pathOf returns the path of a request target: origin-form up to '?' or '#',
// or the path of an absolute-form target.
func pathOf(t []byte) []byte {
	if len(t) > 0 && t[0] != '/' {
		if i := bytes.Index(t, []byte("://")); i >= 0 {
			t = t[i+3:]
			if j := bytes.IndexByte(t, '/'); j >= 0 {
				t = t[j:]
			} else {
				t = nil
			}
		}
	}
	if i := bytes.IndexAny(t, "?#"); i >= 0 {
		t = t[:i]
	}
	return t
}

func validStream(b []byte) bool {
	if len(b) == 0 || len(b) > 64 {
		return false
	}
	for _, ch := range b {
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '_', ch == '.', ch == '-':
		default:
			return false
		}
	}
	return true
}

// hold charges the n bytes a connection keeps in gnet's inbound buffer while
// it waits (an incomplete head, or requests sent ahead of a pending commit) to
// the in-flight budget, recording the charge in s.Left, which those states do
// not otherwise use. It fails when n exceeds limit or the budget is spent.
func (h *handler) hold(s *conn.Slot, n, limit int) bool {
	if n > limit {
		return false
	}
	delta := int64(n) - int64(s.Left)
	if delta > 0 && !h.budget.reserve(delta) {
		return false
	}
	if delta < 0 {
		h.budget.release(-delta)
	}
	s.Left = uint32(n)
	return true
}

// unhold releases what hold charged.
func (h *handler) unhold(s *conn.Slot) {
	h.budget.release(int64(s.Left))
	s.Left = 0
}
