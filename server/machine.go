package server

import (
	"bytes"
	"net"
	"slices"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"

	"upsink/conn"
	"upsink/ingest"
	"upsink/parser"
	"upsink/schema"
	"upsink/store"
)

// serve runs the connection's machine until it must wait: for bytes (return
// None with the unread bytes left in gnet's buffer; drive then charges them),
// for a commit (state Commit), or until it closes. Request parse state lives
// on this stack.
func (h *handler) serve(e *ev) gnet.Action {
	s := e.s
	for {
		switch s.Flags.State() {
		case conn.StateCommit:
			if s.Flags&conn.FlagCloseAfter != 0 {
				_, _ = e.c.Discard(-1) // sent ahead past the bound: dropped
			}
			return gnet.None
		case conn.StateDrain:
			_, _ = e.c.Discard(-1)
			return gnet.None
		case conn.StateHead:
			if act, more := h.readHead(e); !more {
				return act
			}
		case conn.StateBody:
			if act, more := h.readBody(e); !more {
				return act
			}
		case conn.StateH2:
			return h.serveH2(e)
		}
	}
}

// readHead parses the request head in the buffered input and routes it, or
// charges the incomplete head and waits for more.
func (h *handler) readHead(e *ev) (gnet.Action, bool) {
	s, c := e.s, e.c
	if e.gc.OutboundBuffered() > maxOutbound {
		return gnet.Close, false // a client that sends requests but does not read the answers
	}
	n := c.InboundBuffered()
	if n == 0 {
		s.Scan = 0
		return gnet.None, false
	}
	buf, _ := c.Peek(n)
	if act, more, done := h.maybeH2(e, buf); done {
		return act, more
	}
	if scanned := int(s.Scan); scanned > 0 && scanned < n && n < parser.MaxHeaderBytes &&
		bytes.IndexByte(buf[scanned:], '\n') < 0 {
		// No new line ended since the last parse: it cannot complete now,
		// so do not rescan (a byte-at-a-time client would otherwise cost a
		// full rescan per byte).
		return h.waitHead(e, n)
	}
	var req parser.Request
	hn, err := parser.Parse(buf, &req)
	if err == parser.ErrNeedMore {
		return h.waitHead(e, n)
	}
	s.Scan = 0
	if err != nil {
		pe, ok := err.(*parser.Error)
		if !ok {
			pe = &errInternal
		}
		return h.fail(e, pe.Status, pe.Reason), false
	}
	return h.route(e, &req, hn)
}

// waitHead keeps an incomplete head of n bytes (drive charges it) and arms
// the header timeout for it once.
func (h *handler) waitHead(e *ev, n int) (gnet.Action, bool) {
	e.s.Scan = uint32(n)
	if e.s.Flags.Queue() != conn.QueueHead {
		e.l.tq.Arm(e.fd, conn.QueueHead, h.slab.Now())
	}
	return gnet.None, false
}

var errInternal = parser.Error{Status: 500, Reason: "internal error"}

// route answers or starts the request whose head is the first hn buffered bytes.
func (h *handler) route(e *ev, req *parser.Request, hn int) (gnet.Action, bool) {
	h.setRequestFlags(e.s, req)
	hasBody := req.Chunked || req.ContentLength > 0
	if h.draining.Load() {
		e.s.Flags |= conn.FlagCloseAfter
		return h.reject(e, hasBody, hn, 503, "server shutting down", hdrRetry)
	}
	path := pathOf(req.Target)
	e.route = routeOf(path)
	switch e.route {
	case routeUpload:
		stream := path[len(prefixUpload):]
		if !validStream(stream) {
			return h.reject(e, hasBody, hn, 404, "stream name must match [A-Za-z0-9_.-]{1,64}", hdrNone)
		}
		if !bytes.Equal(req.Method, methodPOST) {
			return h.reject(e, hasBody, hn, 405, "uploads take POST", hdrAllowPOST)
		}
		return h.startUpload(e, req, dest{stream: stream}, hn)
	case routeIngest:
		return h.routeIngest(e, req, path[len(prefixIngest):], hasBody, hn)
	case routeHealthz, routeReadyz:
		if !bytes.Equal(req.Method, methodGET) && !bytes.Equal(req.Method, methodHEAD) {
			return h.reject(e, hasBody, hn, 405, "method not allowed", hdrAllowGET)
		}
		head := bytes.Equal(req.Method, methodHEAD)
		if e.route == routeReadyz {
			return h.readyz(e, hasBody, hn, head)
		}
		if hasBody {
			return h.reject(e, true, hn, 200, "ok", hdrNone)
		}
		e.consume(hn)
		return gnet.None, h.answer(e, 200, textPlain, "ok\n", hdrNone, head)
	default:
		return h.reject(e, hasBody, hn, 404, "not found", hdrNone)
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
func (h *handler) reject(e *ev, hasBody bool, hn, status int, reason string, extra hdr) (gnet.Action, bool) {
	if hasBody {
		return h.failWith(e, status, reason, extra), false
	}
	e.consume(hn)
	return gnet.None, h.answer(e, status, textPlain, reason, extra|hdrReasonLine, false)
}

// dest is where a request's body goes: an upload stream, or (format set)
// the rows of the declared table named stream, with the request's query.
type dest struct {
	stream []byte
	format ingest.Format
	query  []byte
}

// startUpload accepts an upload's or an ingest request's head: limits,
// readiness, budget, record.
func (h *handler) startUpload(e *ev, req *parser.Request, d dest, hn int) (gnet.Action, bool) {
	stream := d.stream
	s, c := e.s, e.c
	if req.ContentLength > h.cfg.MaxBody {
		return h.failWith(e, 413, h.reason413, hdrNone), false
	}
	var kb [parser.MaxIdempotencyKey]byte
	var key []byte
	if req.IdempotencyKey != nil {
		var err error
		if key, err = parser.IdempotencyKey(req.IdempotencyKey, kb[:0]); err != nil {
			pe, ok := err.(*parser.Error)
			if !ok {
				pe = &errInternal
			}
			return h.failWith(e, pe.Status, pe.Reason, hdrNone), false
		}
	}
	if !h.st.Ready() {
		return h.failWith(e, 503, "database unavailable and spool full or disabled", hdrRetry), false
	}
	// The buffer is sized for the declared body at once when it is small or
	// the budget has room; otherwise it grows as bytes arrive (growBody).
	var size int64
	if cl := req.ContentLength; cl > 0 && (cl <= smallBody || h.budget.Used()+cl <= h.budget.Max()/2) {
		size = cl
	}
	// A body already here in full leaves with its commit: it may use the
	// whole budget; one still arriving only the held tier.
	whole := !req.Chunked && int64(c.InboundBuffered()-hn) >= max(req.ContentLength, 0)
	if e.sid != 0 {
		whole = e.end
	}
	charge := h.budget.Hold
	if whole {
		charge = h.budget.Reserve
	}
	meta := metaMax + int64(len(key)) + int64(len(d.query))
	if !charge(meta + size) {
		return h.refuseBudget(e), false
	}
	idx, ok := h.reqs.get()
	if !ok {
		h.budget.Release(meta + size)
		return h.failWith(e, 503, "server busy: no request record free", hdrRetry), false
	}
	r := h.reqs.at(idx)
	r.reserved = meta + size
	r.fd, r.gen, r.loop, r.h2 = int32(e.fd), s.Gen, uint8(e.l.idx), e.sid != 0
	r.buf = bytebufferpool.Get()
	b := append(r.buf.B[:0], stream...)
	r.streamN = uint8(len(stream))
	if ta, ok := e.gc.RemoteAddr().(*net.TCPAddr); ok {
		b = ta.AddrPort().AppendTo(b)
	}
	r.peerN = uint8(len(b) - int(r.streamN))
	ct := req.ContentType
	if len(ct) > 255 {
		ct = ct[:255]
	}
	b = append(b, ct...)
	r.ctypeN = uint8(len(ct))
	b = append(b, key...)
	r.keyN = uint8(len(key))
	b = append(b, d.query...)
	r.queryN = uint16(len(d.query))
	r.format = d.format
	r.buf.B = b
	if size > 0 {
		r.buf.B = slices.Grow(b, int(size))
	}
	if e.sid != 0 {
		e.req = idx + 1
		if req.ContentLength > 0 {
			r.left = uint32(req.ContentLength)
		}
		now := h.slab.Now()
		r.start, r.progress = now, now
		return gnet.None, true
	}
	s.Req = idx + 1
	if req.Chunked {
		s.Flags |= conn.FlagChunked
	} else if req.ContentLength > 0 {
		r.left = uint32(req.ContentLength)
	}
	e.consume(hn)
	if req.Expect100 && req.Minor == 1 && (req.Chunked || req.ContentLength > 0) && c.InboundBuffered() == 0 {
		if !h.write(e, continue100) {
			return gnet.None, false
		}
	}
	s.Flags = s.Flags.WithState(conn.StateBody)
	now := h.slab.Now()
	r.start, r.progress = now, now
	e.l.tq.Arm(e.fd, conn.QueueBody, now)
	return gnet.None, true
}

var continue100 = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// readBody moves body bytes from the input into the record's buffer.
func (h *handler) readBody(e *ev) (gnet.Action, bool) {
	s, c := e.s, e.c
	r := h.reqs.at(s.Req - 1)
	progress := false
	if s.Flags&conn.FlagChunked == 0 {
		n := min(c.InboundBuffered(), int(r.left))
		if n > 0 {
			if !h.growBody(r, n, int64(r.bodyLen())+int64(r.left), n == int(r.left)) {
				return h.refuseBudget(e), false
			}
			buf, _ := c.Peek(n)
			r.buf.B = append(r.buf.B, buf...)
			_, _ = c.Discard(n)
			h.bodyBytes.Add(uint64(n))
			r.left -= uint32(n)
			progress = true
		}
		if r.left == 0 {
			return h.submit(e, r)
		}
	} else {
		d := parser.RestoreChunked(r.chunk, r.left)
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
				return h.failWith(e, pe.Status, pe.Reason, hdrNone), false
			}
			if len(data) > 0 {
				if int64(r.bodyLen()+len(data)) > h.cfg.MaxBody {
					return h.failWith(e, 413, h.reason413, hdrNone), false
				}
				if !h.growBody(r, len(data), h.cfg.MaxBody, false) {
					return h.refuseBudget(e), false
				}
				r.buf.B = append(r.buf.B, data...)
				h.bodyBytes.Add(uint64(len(data)))
			}
			if used == 0 {
				break
			}
			_, _ = c.Discard(used)
			progress = true
		}
		if d.Done() {
			return h.submit(e, r)
		}
		r.chunk, r.left = d.Save()
	}
	if progress {
		r.progress = h.slab.Now()
	}
	return gnet.None, false
}

// submit hands a complete upload to the store and suspends the connection.
func (h *handler) submit(e *ev, r *request) (gnet.Action, bool) {
	s := e.s
	r.left, r.chunk = 0, 0
	e.l.tq.Disarm(e.fd)
	if ok, open := h.enqueue(e, r, s.Req-1); !ok {
		return gnet.None, open // answered: on to the next request
	}
	s.Flags |= conn.FlagSubmitted
	s.Flags = s.Flags.WithState(conn.StateCommit)
	return gnet.None, true // on to StateCommit, which charges bytes sent ahead
}

// enqueue hands record idx, its body complete, to the durable sink (ingest
// rows decoded first). False: it was answered instead; open then reports
// whether the connection is still open.
func (h *handler) enqueue(e *ev, r *request, idx uint32) (ok, open bool) {
	var table *schema.Table
	rows := 0
	if r.format != ingest.FormatInvalid {
		if table, rows, ok, open = h.decodeRows(e, r); !ok {
			return false, open
		}
	}
	b := r.buf.B
	a, p, c := int(r.streamN), int(r.streamN)+int(r.peerN), int(r.streamN)+int(r.peerN)+int(r.ctypeN)
	k, m := c+int(r.keyN), r.metaLen()
	j := &r.up.Job
	*j = store.Job{Stream: b[:a], RemoteAddr: b[a:p], ContentType: b[p:c], IdemKey: b[c:k], Body: b[m:],
		ReceivedAt: time.Now(), Tag: uint64(idx), Table: table, Rows: rows}
	r.submitted = true
	if err := h.st.Submit(&r.up); err != nil {
		r.submitted = false
		if e.sid == 0 {
			e.s.Flags = e.s.Flags.WithState(conn.StateHead)
		}
		return false, h.answerUpload(e, r, err)
	}
	return true, true
}

// complete answers a request whose commit finished and resumes its connection.
func (h *handler) complete(l *loop, idx uint32) {
	r := h.reqs.at(idx)
	if r.h2 {
		h.completeH2(l, idx, r)
		return
	}
	fd := int(r.fd)
	s := h.slab.At(fd)
	// The fd may have been closed here and reopened on another loop: only
	// the generation may be read before it proves the slot is still ours.
	if s.Generation() != r.gen || s.Req != idx+1 {
		h.reqs.free(h, idx) // the client went away; its row may be committed but was never acknowledged
		return
	}
	e := h.event(l, *h.conns.At(fd), fd, s)
	if e.c == nil {
		h.reqs.free(h, idx)
		s.Req = 0
		h.close(l, fd)
		return
	}
	s.Flags = s.Flags.WithState(conn.StateHead)
	e.route = routeUpload
	if r.format != ingest.FormatInvalid {
		e.route = routeIngest
	}
	if !h.answerUpload(&e, r, r.up.Err) {
		return
	}
	if act := h.drive(&e); act == gnet.Close {
		h.close(l, fd)
	}
}

var (
	prefixUpload = []byte("/upload/")
	prefixIngest = []byte("/ingest/")
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
