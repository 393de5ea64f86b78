package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"upsink/accesslog"
	"upsink/budget"
	"upsink/conn"
	"upsink/durable"
	"upsink/schema"
	"upsink/tlsbridge"
)

const (
	// maxPipelined bounds the bytes a client may send ahead while its
	// connection is suspended on a commit; beyond it the rest is dropped and
	// the connection is closed after the pending answer.
	maxPipelined = 64 << 10
	// maxOutbound bounds answers gnet holds for a client that does not read
	// them; past it the connection is closed. They are charged to the budget
	// (Slot.Held) while held.
	maxOutbound = 64 << 10
	// tlsRecordMax is the most ciphertext of one partial TLS record gnet may
	// hold beyond the plaintext limits above.
	tlsRecordMax = 16<<10 + 256 + 5
	// reapInterval is how often each loop walks its timeout queues.
	reapInterval = 250 * time.Millisecond
	// metaMax is the most a request's metadata (stream, peer, content type)
	// takes in front of its body in the pooled buffer; it is charged to the
	// in-flight budget with the body, and so is an Idempotency-Key's length.
	metaMax = 64 + 64 + 255
	// smallBody is the largest declared body whose buffer is sized (and
	// charged) in full when its head arrives; larger ones are sized so only
	// while the budget is at most half used, else grown as bytes arrive.
	smallBody = 64 << 10
)

// handler implements gnet.EventHandler. Its fields are set before the engine
// starts; what changes afterwards is atomic or owned by one loop (see loop).
type handler struct {
	gnet.BuiltinEventEngine
	cfg *Config
	srv *Server
	st  committer

	slab   *conn.Slab
	conns  *conn.Pages[gnet.Conn] // fd -> gnet.Conn, for the reaper and completions
	h2s    *conn.Pages[*h2sess]   // fd -> the connection's HTTP/2 session (nil: HTTP/1.1); loop-only
	reqs   requests
	budget *budget.Budget

	loopsMu sync.Mutex
	loops   atomic.Pointer[[]*loop]

	tables map[string]*schema.Table          // declared tables of /ingest/{table}, by name
	alog   *accesslog.Log                    // nil: no access log
	tokens atomic.Pointer[map[string]string] // their bearer tokens once SetTokens has run (tokens.go)

	bridge  *tlsbridge.Bridge // nil without HTTPS
	tlsPort int               // connections accepted on this local port speak TLS

	draining atomic.Bool // Shutdown has begun

	nconns, nreqs                atomic.Int64
	evicted, refused, slowBodies atomic.Int64
	ntls                         atomic.Int64 // of nconns, TLS connections
	nh2                          atomic.Int64 // of nconns, HTTP/2 connections
	// Counters read by the metrics (metrics.go): plain atomics, nothing
	// allocated where they are bumped.
	counts                     reqCounts
	bodyBytes                  atomic.Uint64
	budgetRefused              atomic.Uint64
	headTimeouts, idleTimeouts atomic.Uint64

	// Precomputed one-line reasons (no fmt on the request path).
	reason413, reasonSlow string
	retryAfter            string // Retry-After's value
	// bodyCheck is the period at which a body being read is checked.
	bodyCheck time.Duration
}

func newHandler(cfg *Config, srv *Server) *handler {
	h := &handler{cfg: cfg, srv: srv}
	h.slab = conn.NewSlab(cfg.fdLimit)
	h.conns = conn.NewPages[gnet.Conn](cfg.fdLimit)
	h.h2s = conn.NewPages[*h2sess](cfg.fdLimit)
	h.retryAfter = itoa(int64((cfg.RetryAfter + time.Second - 1) / time.Second))
	// One record per HTTP/1.1 connection, but up to 100 per HTTP/2
	// connection: beyond the fd limit, as many as the budget can charge
	// (each holds at least metaMax of it). Pages are allocated on use.
	nrec := cfg.fdLimit + cfg.budgetRecords()
	h.reqs.tab = conn.NewPages[request](nrec)
	h.reqs.max = uint32(nrec)
	h.budget = budget.New(cfg.MaxInflight)
	h.reason413 = "body larger than the limit of " + itoa(cfg.MaxBody) + " bytes"
	h.reasonSlow = "request body slower than the minimum rate of " + itoa(cfg.MinBodyRate) + " bytes/s"
	h.bodyCheck = cfg.IdleTimeout
	if cfg.MinBodyRate > 0 {
		h.bodyCheck = min(cfg.BodyRateGrace, cfg.IdleTimeout)
	}
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

// ev is one event on one connection: what every step of the machine needs.
// It lives on the stack of the gnet callback (or completion) that handles
// the event, on the loop that owns the fd.
type ev struct {
	l  *loop
	gc gnet.Conn       // the socket; over TLS it carries ciphertext
	tc *tlsbridge.Conn // the TLS side; nil on a plain connection
	c  stream          // what the machine reads and writes: gc, or tc's plaintext
	fd int
	s  *conn.Slot
	// route is the route of the request being answered (metrics.go), set
	// when it is known; routeOther before.
	route uint8
	// HTTP/2 (h2.go): the stream being served (0: HTTP/1.1), its request
	// record's index+1 (0: none yet), and whether its request has no body.
	sid, req uint32
	end      bool
	held     *h2held // the answer is kept for when the stream ends (h2.go)
}

// consume drops the first n bytes of the input, none when n is 0 (gnet's
// and the bridge's Discard(0) drop everything: HTTP/2 streams route with
// hn = 0, their frames still in the input).
func (e *ev) consume(n int) {
	if n > 0 {
		_, _ = e.c.Discard(n)
	}
}

// tls reports whether the machine runs over the TLS bridge.
func (e *ev) tls() bool { return e.tc != nil }

// close closes the connection on fd from its own loop.
func (h *handler) close(l *loop, fd int) {
	if c := *h.conns.At(fd); c != nil {
		_ = l.el.Close(c)
	}
}

// committer is what the handler needs of the durable sink: *durable.Sink
// in production, a small fake in the allocation tests.
type committer interface {
	Submit(*durable.Upload) error
	Ready() bool
	Status() durable.Status
}
