package server

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"

	"upsink/conn"
	"upsink/durable"
	"upsink/h2"
	"upsink/ingest"
)

// loop is one event loop's private state. Everything but the completion list
// (mu, done, scheduled) and evictAsked is touched only on that loop.
type loop struct {
	h    *handler
	idx  int
	el   gnet.EventLoop
	tq   *conn.Timeouts
	out  []byte // response scratch
	jbuf []byte // JSON body scratch
	abuf []byte // access log line scratch
	dec  ingest.Decoder
	date []byte

	// HTTP/2 (h2.go): the handler Feed calls, output and response scratch,
	// and the answers given while Feed runs with their bodies.
	h2       h2handler
	h2out    []byte
	h2body   []byte
	h2resp   h2.Response
	deferred []h2answer
	dbody    []byte

	mu        sync.Mutex
	done      []uint32 // request records whose commit finished
	spare     []uint32
	scheduled bool

	reaper     reaper
	evictor    evictor
	drainer    drainer
	evictAsked atomic.Bool // an evictor run is posted and has not run yet
	expire     func(fd int, q conn.QueueID)
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
	// Rows can be far larger than their body ({} becomes a row of \N
	// fields, defaults are copied): 4 × --max-body at most per request.
	l.dec.MaxOut = int(4 * h.cfg.MaxBody)
	l.tq = conn.NewTimeouts(h.slab, h.cfg.HeaderTimeout, h.cfg.IdleTimeout, h.bodyCheck, h.cfg.DrainTimeout)
	l.reaper.l, l.evictor.l, l.drainer.l = l, l, l
	l.h2.h = h
	l.expire = l.onExpire
	l.date = appendDate(nil)
	nl := append(append([]*loop(nil), old...), l)
	h.loops.Store(&nl)
	return l
}

func (h *handler) loopAt(i int) *loop { return (*h.loops.Load())[i] }

// onDone runs on the durable sink's goroutines (the store's writer and
// watchdog, the spool's writer). It hands a finished record to its loop;
// one Execute per loop until that loop runs, never a touch of slot state.
func (h *handler) onDone(u *durable.Upload) {
	idx := uint32(u.Job.Tag)
	l := (*h.loops.Load())[h.reqs.at(idx).loop]
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
	e := h.event(l, *cp, fd, s)
	if e.c == nil {
		h.close(l, fd)
		return
	}
	switch q {
	case conn.QueueHead:
		h.headTimeouts.Add(1)
	case conn.QueueIdle:
		h.idleTimeouts.Add(1)
	}
	if s.Flags.State() == conn.StateH2 {
		h.expireH2(&e, q)
		return
	}
	switch {
	case q == conn.QueueHead && e.c.InboundBuffered() > 0:
		h.answerAndClose(&e, 408, "request head not complete within the header timeout")
	case q == conn.QueueBody && s.Flags.State() == conn.StateBody:
		h.checkBody(&e)
	default:
		h.close(l, fd)
	}
}
