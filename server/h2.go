package server

import (
	"bytes"
	"errors"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"upsink/conn"
	"upsink/h2"
)

// HTTP/2 on the loops (issue 12). A plain connection whose first bytes are
// the client preface (h2c with prior knowledge), or a TLS connection that
// negotiated "h2" by ALPN, moves to StateH2: its h2.Conn and the map from
// its streams to request records live in an h2sess, found by fd in h.h2s.
// Each stream that carries an upload holds a request record, as an
// HTTP/1.1 connection's request does, and goes through the same routing,
// budget, store and answers: respond sends an answer on the stream instead
// of on the connection. No goroutine per connection or stream.

// h2sess is one HTTP/2 connection's state; loop-only (the loop that owns
// its fd). What it holds is charged to the budget (chargeH2).
type h2sess struct {
	c       h2.Conn
	streams []h2stream // streams that hold a request record or a held answer; at most h2MaxStreams
	charged int64      // bytes charged to the budget for the session
	goaway  bool       // Shutdown has sent GOAWAY (the server is draining)
}

// h2stream maps a stream to the request record it holds, or to the answer
// it waits to send.
type h2stream struct {
	id    uint32
	req   uint32  // record index+1; 0 for a held answer
	held  *h2held // a GET or HEAD answered when its stream ends (h2respond.go)
	reset bool    // the peer reset it after its upload was submitted: released when the commit completes
}

const (
	h2MaxStreams = 100
	// h2InputMax bounds a partial frame kept between events: one frame
	// of the largest size we accept, and its header.
	h2InputMax = 16<<10 + 9
)

// sizes for chargeH2
const (
	h2SessSize   = int64(unsafe.Sizeof(h2sess{}))
	h2StreamSize = int64(unsafe.Sizeof(h2stream{}))
	h2HeldSize   = int64(unsafe.Sizeof(h2held{}))
)

// held is what the session holds on the heap: itself, its h2.Conn's tables
// and pending answers, its stream map and held answers.
func (s *h2sess) held() int64 {
	n := h2SessSize + int64(s.c.Held()) + int64(cap(s.streams))*h2StreamSize
	for i := range s.streams {
		if hd := s.streams[i].held; hd != nil {
			n += h2HeldSize + int64(cap(hd.body))
		}
	}
	return n
}

// chargeH2 charges the budget's held tier for what the session holds now.
// False: the budget cannot take it (the caller closes the connection).
func (h *handler) chargeH2(sess *h2sess) bool {
	n := sess.held()
	if d := n - sess.charged; d > 0 && !h.budget.Hold(d) {
		h.budgetRefused.Add(1)
		return false
	} else if d < 0 {
		h.budget.Release(-d)
	}
	sess.charged = n
	return true
}

var h2Limits = h2.Limits{MaxStreams: h2MaxStreams}

func (s *h2sess) find(id uint32) *h2stream {
	for i := range s.streams {
		if s.streams[i].id == id {
			return &s.streams[i]
		}
	}
	return nil
}

func (s *h2sess) byReq(req uint32) *h2stream {
	for i := range s.streams {
		if s.streams[i].req == req {
			return &s.streams[i]
		}
	}
	return nil
}

func (s *h2sess) drop(id uint32) {
	for i := range s.streams {
		if s.streams[i].id == id {
			s.streams[i] = s.streams[len(s.streams)-1]
			s.streams = s.streams[:len(s.streams)-1]
			return
		}
	}
}

// isPreface reports whether buf starts with the client preface (full:
// true, true), could still be it (false, true), or is not it.
func isPreface(buf []byte) (full, maybe bool) {
	if len(buf) >= len(h2.Preface) {
		full = bytes.HasPrefix(buf, []byte(h2.Preface))
		return full, full
	}
	return false, bytes.HasPrefix([]byte(h2.Preface), buf)
}

// maybeH2 starts HTTP/2 on a connection whose head is about to be parsed:
// one that negotiated "h2" by ALPN, or whose input starts with the client
// preface (h2c with prior knowledge). done: it did, or it waits for the
// rest of a preface.
func (h *handler) maybeH2(e *ev, buf []byte) (act gnet.Action, more, done bool) {
	if h.cfg.DisableHTTP2 {
		return gnet.None, false, false
	}
	if e.tls() {
		if !e.tc.H2() {
			return gnet.None, false, false
		}
	} else {
		if buf[0] != h2.Preface[0] {
			return gnet.None, false, false
		}
		full, maybe := isPreface(buf)
		if !maybe {
			return gnet.None, false, false
		}
		if !full {
			act, more = h.waitHead(e, len(buf))
			return act, more, true
		}
	}
	act, more = h.startH2(e)
	return act, more, true
}

// startH2 moves the connection to HTTP/2; the preface is still in the input.
func (h *handler) startH2(e *ev) (gnet.Action, bool) {
	sess := &h2sess{}
	sess.c.Init(h2Limits)
	if !h.chargeH2(sess) {
		return gnet.Close, false
	}
	*h.h2s.At(e.fd) = sess
	e.s.Flags = e.s.Flags.WithState(conn.StateH2)
	e.s.Scan = 0
	e.l.tq.Disarm(e.fd)
	h.nh2.Add(1)
	return gnet.None, true
}

// endH2 releases a closing connection's session: records of streams not
// yet submitted are freed here, submitted ones when their commit completes
// (it finds the generation changed).
func (h *handler) endH2(fd int) {
	p := h.h2s.At(fd)
	sess := *p
	if sess == nil {
		return
	}
	for _, st := range sess.streams {
		if st.req != 0 && !h.reqs.at(st.req-1).submitted {
			h.reqs.free(h, st.req-1)
		}
	}
	*p = nil
	h.budget.Release(sess.charged)
	h.nh2.Add(-1)
}

// serveH2 feeds the buffered input to the connection's HTTP/2 state and
// writes what it answers.
func (h *handler) serveH2(e *ev) gnet.Action {
	if e.gc.OutboundBuffered() > maxOutbound {
		return gnet.Close // a client that does not read its answers
	}
	sess := *h.h2s.At(e.fd)
	n := e.c.InboundBuffered()
	if n == 0 {
		return gnet.None
	}
	buf, _ := e.c.Peek(n)
	l := e.l
	l.h2.e, l.h2.sess = *e, sess // a copy: e stays on its caller's stack
	out, used, err := sess.c.Feed(l.h2out[:0], buf, &l.h2)
	l.h2.e, l.h2.sess = ev{}, nil
	e.consume(used)
	gen := e.s.Gen
	if len(out) > 0 && !h.write(e, out) {
		return gnet.None
	}
	l.h2out = out[:0]
	// Answers given while Feed ran go after its frames (the server's
	// SETTINGS are the connection's first frame).
	h.flushDeferred(e, sess)
	if e.s.Generation() != gen {
		return gnet.None
	}
	if err != nil {
		var he *h2.Error
		if errors.As(err, &he) && he.Code == h2.ErrEnhanceYourCalm {
			return gnet.Close // a flood: not a byte more read from it
		}
		return h.lingerH2(e)
	}
	if h.draining.Load() && !h.goawayH2(e, sess) {
		return gnet.None
	}
	if !h.chargeH2(sess) {
		return gnet.Close
	}
	h.armH2(e, sess)
	return gnet.None
}

// lingerH2 ends a connection after a protocol error, its GOAWAY written:
// as failWith does for HTTP/1.1, the write side is shut and the input
// drained until EOF or the drain timeout, so that the peer reads the
// GOAWAY instead of a reset (closing with unread input makes the kernel
// send RST, which can destroy what was sent before it).
func (h *handler) lingerH2(e *ev) gnet.Action {
	h.endH2(e.fd)
	if e.c.OutboundBuffered() > 0 {
		return gnet.Close // gnet flushes what it can before closing
	}
	_ = unix.Shutdown(e.fd, unix.SHUT_WR)
	_, _ = e.c.Discard(-1)
	h.unhold(e.s)
	e.s.Flags = e.s.Flags.WithState(conn.StateDrain)
	e.l.tq.Arm(e.fd, conn.QueueDrain, h.slab.Now())
	return gnet.None
}

// goawayH2 runs while the server drains: GOAWAY once, then close when
// nothing is left to answer. False: the connection is closed.
func (h *handler) goawayH2(e *ev, sess *h2sess) bool {
	if !sess.goaway {
		sess.goaway = true
		out := sess.c.Shutdown(e.l.h2out[:0])
		if len(out) > 0 && !h.write(e, out) {
			return false
		}
		e.l.h2out = out[:0]
	}
	if sess.c.Done() {
		h.close(e.l, e.fd)
		return false
	}
	return true
}

// armH2 puts the connection on the timeout queue its state calls for:
// bodies being read are checked (rate, progress), a partial frame gets the
// header timeout, nothing in progress the idle timeout.
func (h *handler) armH2(e *ev, sess *h2sess) {
	q := conn.QueueIdle
	for _, st := range sess.streams {
		if st.req == 0 || !h.reqs.at(st.req-1).submitted {
			q = conn.QueueBody
			break
		}
	}
	if q == conn.QueueIdle && len(sess.streams) > 0 {
		e.l.tq.Disarm(e.fd) // waiting for commits
		return
	}
	if q == conn.QueueIdle && e.c.InboundBuffered() > 0 {
		q = conn.QueueHead
	}
	if e.s.Flags.Queue() != q {
		e.l.tq.Arm(e.fd, q, h.slab.Now())
	}
}

// expireH2 handles an HTTP/2 connection's timeout: bodies too slow or
// stalled are answered 408 on their streams; a partial frame that did not
// complete, or a connection idle too long, is told GOAWAY and closed.
func (h *handler) expireH2(e *ev, q conn.QueueID) {
	sess := *h.h2s.At(e.fd)
	if sess == nil {
		h.close(e.l, e.fd)
		return
	}
	if q != conn.QueueBody {
		out := sess.c.Shutdown(e.l.h2out[:0])
		if len(out) > 0 && !h.write(e, out) {
			return
		}
		e.l.h2out = out[:0]
		h.close(e.l, e.fd)
		return
	}
	now := h.slab.Now()
	cfg := h.cfg
	for i := 0; i < len(sess.streams); i++ {
		st := sess.streams[i]
		if st.held != nil {
			if int64(now-st.held.since) >= cfg.IdleTimeout.Milliseconds() {
				// The client never ended its GET: answer it anyway.
				a := st.held
				sess.drop(st.id)
				i--
				se := *e
				se.sid = st.id
				h.respondH2(&se, int(a.a.status), a.a.ctype, a.body, a.a.extra, a.a.head)
			}
			continue
		}
		r := h.reqs.at(st.req - 1)
		if r.submitted {
			continue
		}
		reason := h.bodyTooSlow(r, now)
		if reason == "" {
			continue
		}
		se := *e
		se.sid, se.req = st.id, st.req
		h.answerStream(&se, 408, reason, hdrNone)
		i-- // answerStream dropped it: the last one moved here
	}
	e.l.tq.Disarm(e.fd)
	h.armH2(e, sess)
}
