package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"upsink/conn"
)

// ErrRequestsLeft is returned (wrapped) by Shutdown when its context ended
// before every request in progress was answered.
var ErrRequestsLeft = errors.New("requests still in progress")

// drain is the first half of Shutdown: it refuses new connections and new
// requests, closes idle ones, and waits until every request in progress has
// been answered or ctx ends.
func (h *handler) drain(ctx context.Context) error {
	h.draining.Store(true)
	for _, l := range *h.loops.Load() {
		_ = l.el.Execute(context.Background(), &l.drainer)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		n := h.reqs.inUse()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			h.cfg.Logger.Warn("server: shutdown timeout with requests in progress; closing them unanswered", "requests", n)
			return fmt.Errorf("server: shutdown: %d %w", n, ErrRequestsLeft)
		case <-tick.C:
		}
	}
}

// drainer closes, on its loop, the connections that have nothing in
// progress: idle keep-alive ones, and new ones that have sent nothing yet.
// The others are closed as their requests are answered (respond adds
// Connection: close while draining).
type drainer struct{ l *loop }

func (d *drainer) Run(context.Context) error {
	l := d.l
	h := l.h
	for fd := l.tq.Oldest(conn.QueueIdle); fd >= 0; fd = l.tq.Oldest(conn.QueueIdle) {
		l.tq.Disarm(fd)
		if sess := *h.h2s.At(fd); sess != nil {
			// HTTP/2: GOAWAY first, so the client knows no stream was lost.
			if c := *h.conns.At(fd); c != nil {
				if e := h.event(l, c, fd, h.slab.At(fd)); e.c != nil && !h.goawayH2(&e, sess) {
					continue
				}
			}
		}
		h.close(l, fd)
	}
	for fd := l.tq.Oldest(conn.QueueHead); fd >= 0; {
		next := l.tq.Next(fd)
		s := h.slab.At(fd)
		if c := *h.conns.At(fd); c != nil && s.Req == 0 && c.InboundBuffered() == 0 {
			if e := h.event(l, c, fd, s); e.c == nil || e.c.InboundBuffered() == 0 {
				h.close(l, fd)
			}
		}
		fd = next
	}
	return nil
}
