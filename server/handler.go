package server

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"

	"upsink/conn"
	"upsink/store"
	"upsink/tlsbridge"
)

const (
	// maxPipelined bounds the bytes a client may send ahead while its
	// connection is suspended on a commit; beyond it the rest is dropped and
	// the connection is closed after the pending answer.
	maxPipelined = 64 << 10
	// maxOutbound bounds answers queued for a client that does not read them.
	maxOutbound = 256 << 10
	// reapInterval is how often each loop walks its timeout queues.
	reapInterval = 250 * time.Millisecond
	// metaMax is the most a request's metadata (stream, peer, content type)
	// takes in front of its body in the pooled buffer; it is charged to the
	// in-flight budget with the body.
	metaMax = 64 + 64 + 255
)

// handler implements gnet.EventHandler.
type handler struct {
	gnet.BuiltinEventEngine
	cfg *Config
	srv *Server
	st  committer

	slab   *conn.Slab
	conns  *conn.Pages[gnet.Conn] // fd -> gnet.Conn, for the reaper
	reqs   requests
	budget budget

	loopsMu sync.Mutex
	loops   atomic.Pointer[[]*loop]

	bridge  *tlsbridge.Bridge // nil without HTTPS
	tlsPort int               // connections accepted on this local port speak TLS

	nconns atomic.Int64
	nreqs  atomic.Int64

	// Precomputed one-line reasons (no fmt on the request path).
	reason413 string
}

func newHandler(cfg *Config, srv *Server) *handler {
	h := &handler{cfg: cfg, srv: srv}
	h.slab = conn.NewSlab(cfg.MaxConns)
	h.conns = conn.NewPages[gnet.Conn](cfg.MaxConns)
	h.reqs.tab = conn.NewPages[request](cfg.MaxConns)
	h.reqs.max = uint32(cfg.MaxConns)
	h.budget.max = cfg.MaxInflight
	h.reason413 = "body larger than the limit of " + itoa(cfg.MaxBody) + " bytes"
	empty := []*loop{}
	h.loops.Store(&empty)
	return h
}

// stream is the byte side of a connection that the HTTP machine runs over:
// a gnet.Conn for plain HTTP, or the plaintext side of a TLS connection.
// All of it is loop-only.
type stream interface {
	InboundBuffered() int
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Write(p []byte) (int, error)
	OutboundBuffered() int
}

// close closes the connection on fd from its own loop.
func (h *handler) close(l *loop, fd int) {
	if c := *h.conns.At(fd); c != nil {
		_ = l.el.Close(c)
	}
}

// committer is what the handler needs of the store: *store.Store in
// production, a small fake in the allocation tests.
type committer interface {
	Submit(*store.Job) error
	Ready() bool
}

// loop is one event loop's private state. Everything but the completion list
// (mu, done) is touched only on that loop.
type loop struct {
	h    *handler
	idx  int
	el   gnet.EventLoop
	tq   *conn.Timeouts
	out  []byte // response scratch
	jbuf []byte // JSON body scratch
	date []byte

	mu        sync.Mutex
	done      []uint32 // request records whose commit finished
	spare     []uint32
	scheduled bool

	reaper reaper
	expire func(fd int, q conn.QueueID)
}

func (h *handler) loopFor(el gnet.EventLoop) *loop {
	for _, l := range *h.loops.Load() {
		if l.el == el {
			return l
		}
	}
	h.loopsMu.Lock()
	defer h.loopsMu.Unlock()
	old := *h.loops.Load()
	for _, l := range old {
		if l.el == el {
			return l
		}
	}
	l := &loop{h: h, idx: len(old), el: el, out: make([]byte, 0, 512)}
	l.tq = conn.NewTimeouts(h.slab, h.cfg.HeaderTimeout, h.cfg.IdleTimeout, h.cfg.DrainTimeout)
	l.reaper.l = l
	l.expire = l.onExpire
	l.date = appendDate(nil)
	nl := append(append([]*loop(nil), old...), l)
	h.loops.Store(&nl)
	return l
}

func (h *handler) loopAt(i int) *loop { return (*h.loops.Load())[i] }

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.srv.eng.Store(&eng)
	close(h.srv.booted)
	return gnet.None
}

func (h *handler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	fd := c.Fd()
	if fd >= h.slab.Len() {
		h.cfg.Logger.Warn("server: fd beyond slab, closing", "fd", fd, "slots", h.slab.Len())
		return nil, gnet.Close
	}
	l := h.loopFor(c.EventLoop())
	s := h.slab.At(fd)
	flags := conn.FlagOpen.WithLoop(l.idx)
	if h.bridge != nil {
		if la, ok := c.LocalAddr().(*net.TCPAddr); ok && la.Port == h.tlsPort {
			flags |= conn.FlagTLS
		}
	}
	s.Reset(flags) // first: acquires the slot from the loop that closed the fd
	*h.conns.At(fd) = c
	if flags&conn.FlagTLS != 0 {
		c.SetContext(h.bridge.Open(c))
	}
	l.tq.Arm(fd, conn.QueueHead, h.slab.Now())
	h.nconns.Add(1)
	return nil, gnet.None
}

func (h *handler) OnClose(c gnet.Conn, _ error) gnet.Action {
	fd := c.Fd()
	if fd >= h.slab.Len() {
		return gnet.None
	}
	s := h.slab.At(fd)
	if s.Flags&conn.FlagOpen == 0 {
		return gnet.None
	}
	h.loopAt(s.Flags.Loop()).tq.Disarm(fd)
	if s.Flags&conn.FlagTLS != 0 {
		if tc, ok := c.Context().(*tlsbridge.Conn); ok {
			tc.Release()
		}
		c.SetContext(nil)
	}
	if st := s.Flags.State(); st == conn.StateHead || st == conn.StateCommit {
		h.unhold(s)
	}
	if s.Req != 0 && s.Flags&conn.FlagSubmitted == 0 {
		h.reqs.free(h, s.Req-1)
	}
	// A submitted record is freed when its commit completes and finds the
	// generation changed.
	*h.conns.At(fd) = nil
	h.nconns.Add(-1)
	s.Reset(0) // last: publishes the slot to whichever loop gets the fd next
	return gnet.None
}

func (h *handler) OnTraffic(c gnet.Conn) gnet.Action {
	fd := c.Fd()
	s := h.slab.At(fd)
	if s.Flags&conn.FlagOpen == 0 {
		return gnet.Close
	}
	return h.drive(h.loopAt(s.Flags.Loop()), c, fd, s)
}

// drive runs the connection's machine over its byte stream. For TLS it
// alternates between the bridge (handshake, then decrypting at most a bounded
// amount of plaintext ahead) and the machine, as long as the machine consumes
// and ciphertext is left: one code path for HTTP and HTTPS after the bridge.
func (h *handler) drive(l *loop, c gnet.Conn, fd int, s *conn.Slot) gnet.Action {
	if s.Flags&conn.FlagTLS == 0 {
		return h.serve(l, c, fd, s)
	}
	tc, _ := c.Context().(*tlsbridge.Conn)
	if tc == nil {
		return gnet.Close
	}
	gen := s.Gen
	for {
		ready, act := tc.Process()
		if act != gnet.None || !ready {
			return act
		}
		before := tc.InboundBuffered()
		if act := h.serve(l, tc, fd, s); act != gnet.None {
			return act
		}
		if s.Generation() != gen {
			return gnet.None // closed while serving
		}
		if s.Flags.State() == conn.StateCommit && s.Flags&conn.FlagCloseAfter == 0 {
			// serve charged the plaintext held ahead of the pending commit;
			// what is still encrypted in gnet's buffer is held too, under
			// the same bound as on a plain connection.
			if h.hold(s, tc.InboundBuffered()+c.InboundBuffered(), maxPipelined) {
				return gnet.None
			}
			h.unhold(s)
			s.Flags |= conn.FlagCloseAfter
			_, _ = tc.Discard(-1)
		}
		// Otherwise go on while the machine consumes and ciphertext is left;
		// a connection that drains, or drops what was sent ahead, decrypts
		// and discards it all (dropping ciphertext would break the stream
		// before the pending answer is written).
		if c.InboundBuffered() == 0 || tc.InboundBuffered() >= before {
			return gnet.None
		}
	}
}

// streamOf returns the byte stream the machine runs over for c.
func (h *handler) streamOf(c gnet.Conn, s *conn.Slot) stream {
	if s.Flags&conn.FlagTLS != 0 {
		if tc, ok := c.Context().(*tlsbridge.Conn); ok {
			return tc
		}
	}
	return c
}

// OnTick asks every loop to reap its timeout queues on its own goroutine.
func (h *handler) OnTick() (time.Duration, gnet.Action) {
	for _, l := range *h.loops.Load() {
		_ = l.el.Execute(context.Background(), &l.reaper)
	}
	return reapInterval, gnet.None
}

// onDone runs on the store's writer goroutine. It hands finished records to
// their loops; one Execute per loop per batch, never a touch of slot state.
func (h *handler) onDone(batch []*store.Job) {
	loops := *h.loops.Load()
	for _, j := range batch {
		idx := uint32(j.Tag)
		l := loops[h.reqs.at(idx).loop]
		l.mu.Lock()
		l.done = append(l.done, idx)
		sched := !l.scheduled
		l.scheduled = true
		l.mu.Unlock()
		if sched {
			if err := l.el.Execute(context.Background(), l); err != nil {
				// The engine is stopping: the connections are gone and
				// nothing will be answered.
				l.mu.Lock()
				l.scheduled = false
				l.mu.Unlock()
			}
		}
	}
}

// Run resumes, on the loop, every connection whose commit finished.
func (l *loop) Run(context.Context) error {
	l.mu.Lock()
	l.done, l.spare = l.spare[:0], l.done
	l.scheduled = false
	l.mu.Unlock()
	for _, idx := range l.spare {
		l.h.complete(l, idx)
	}
	return nil
}

type reaper struct{ l *loop }

// Run expires the loop's timeout queues.
func (r *reaper) Run(context.Context) error {
	l := r.l
	l.date = appendDate(l.date[:0])
	l.tq.Expire(l.h.slab.Now(), l.expire)
	return nil
}

func (l *loop) onExpire(fd int, q conn.QueueID) {
	h := l.h
	s := h.slab.At(fd)
	cp := h.conns.At(fd)
	if s.Flags&conn.FlagOpen == 0 || *cp == nil {
		return
	}
	c := h.streamOf(*cp, s)
	switch {
	case q == conn.QueueHead && c.InboundBuffered() > 0:
		h.answerAndClose(l, c, fd, s, 408, "request head not complete within the header timeout")
	case q == conn.QueueIdle && s.Flags.State() == conn.StateBody:
		h.answerAndClose(l, c, fd, s, 408, "request body stalled longer than the idle timeout")
	default:
		h.close(l, fd)
	}
}

// requests is the table of in-flight request records, one at most per
// connection, addressed by index, grown in pages and recycled via a free list.
type requests struct {
	mu   sync.Mutex
	tab  *conn.Pages[request]
	idle []uint32 // freed indices
	next uint32
	max  uint32
	used atomic.Int64
}

// request is what a connection holds while it reads a body and waits for the
// commit. Its metadata and body share one pooled buffer.
type request struct {
	job      store.Job
	buf      *bytebufferpool.ByteBuffer
	c        stream
	fd       int32
	gen      uint32
	loop     uint8
	streamN  uint8
	peerN    uint8
	ctypeN   uint8
	reserved int64
}

func (r *requests) at(idx uint32) *request { return r.tab.At(int(idx)) }

func (r *requests) inUse() int64 { return r.used.Load() }

// get returns a fresh record index, or false when all are in use.
func (r *requests) get() (uint32, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.idle); n > 0 {
		idx := r.idle[n-1]
		r.idle = r.idle[:n-1]
		r.used.Add(1)
		return idx, true
	}
	if r.next >= r.max {
		return 0, false
	}
	r.next++
	r.used.Add(1)
	return r.next - 1, true
}

// free returns the record's buffer and budget and recycles it.
func (r *requests) free(h *handler, idx uint32) {
	rq := r.at(idx)
	if rq.buf != nil {
		bytebufferpool.Put(rq.buf)
	}
	h.budget.release(rq.reserved)
	*rq = request{}
	r.mu.Lock()
	r.idle = append(r.idle, idx)
	r.mu.Unlock()
	r.used.Add(-1)
}

// budget is the global in-flight body budget shared by all loops.
type budget struct {
	used atomic.Int64
	max  int64
}

func (b *budget) reserve(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *budget) release(n int64) { b.used.Add(-n) }
