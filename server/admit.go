package server

import (
	"context"

	"upsink/conn"
)

// admit decides at OnOpen whether the connection just accepted may stay. Under
// the cap (Config.MaxConns) it may. At the cap the loop closes its
// longest-idle keep-alive connection (a client between requests, nothing in
// progress), as nginx reuses its reusable connections, and admits the new one;
// a loop with none refuses the new connection and asks the other loops to
// free one each for the next client. Every loop accepts one connection per
// readiness event (SO_REUSEPORT), so the count never runs past the cap by more
// than the number of loops, and accept never meets EMFILE (fdReserve).
func (h *handler) admit(l *loop) bool {
	if h.draining.Load() {
		h.refused.Add(1)
		return false
	}
	if h.nconns.Load() <= int64(h.cfg.MaxConns) || l.evictIdle() {
		return true
	}
	h.refused.Add(1)
	for _, o := range *h.loops.Load() {
		if o != l && o.evictAsked.CompareAndSwap(false, true) {
			if o.el.Execute(context.Background(), &o.evictor) != nil {
				o.evictAsked.Store(false)
			}
		}
	}
	return false
}

// evictIdle closes the loop's longest-idle keep-alive connection, if any.
func (l *loop) evictIdle() bool {
	fd := l.tq.Oldest(conn.QueueIdle)
	if fd < 0 {
		return false
	}
	l.tq.Disarm(fd)
	l.h.evicted.Add(1)
	l.h.close(l, fd)
	return true
}

// evictor frees one idle connection on its loop when another loop found the
// cap reached and nothing of its own to close.
type evictor struct{ l *loop }

func (ev *evictor) Run(context.Context) error {
	l := ev.l
	l.evictAsked.Store(false)
	if l.h.nconns.Load() >= int64(l.h.cfg.MaxConns) {
		l.evictIdle()
	}
	return nil
}
