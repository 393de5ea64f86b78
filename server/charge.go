package server

import (
	"slices"

	"upsink/conn"
)

// This file is the connection side of the in-flight budget: what a
// connection keeps in buffers below the machine (Slot.Held), and what its
// request's body buffer holds (request.reserved). Every byte is charged
// while it is kept and released once.

// settle charges what the connection keeps while it waits for its next
// event: input the machine has not consumed (over TLS the plaintext plus the
// ciphertext still in gnet's buffer) and answers gnet has not sent yet. The
// input may be at most limit bytes (plus one partial TLS record). False: over
// the limit, too many unsent answers, or the budget's held tier is spent;
// the charge is then left as it was.
func (h *handler) settle(e *ev, limit int) bool {
	in := e.c.InboundBuffered()
	if e.tls() {
		in += e.gc.InboundBuffered()
		limit += tlsRecordMax
	}
	out := e.gc.OutboundBuffered()
	if in > limit || out > maxOutbound {
		return false
	}
	return h.setHeld(e.s, in+out)
}

// setHeld sets the slot's charge to n bytes.
func (h *handler) setHeld(s *conn.Slot, n int) bool {
	delta := int64(n) - int64(s.Held)
	if delta > 0 && !h.budget.Hold(delta) {
		return false
	}
	h.budget.Release(-delta)
	s.Held = uint32(n)
	return true
}

// unhold releases what settle charged.
func (h *handler) unhold(s *conn.Slot) {
	h.budget.Release(int64(s.Held))
	s.Held = 0
}

// growBody makes room for n more body bytes in r's buffer, charging the
// growth to the budget: the capacity doubles up to limit (the declared length,
// or --max-body for chunked bodies), so a body costs what has arrived, at most
// twice over, never what it merely declared. complete says these bytes finish
// the body (then the full budget may be used, else only the held tier).
func (h *handler) growBody(r *request, n int, limit int64, complete bool) bool {
	have := r.bodyLen()
	capacity := r.reserved - metaMax
	need := int64(have + n)
	if need <= capacity {
		return true
	}
	grow := max(need, min(2*capacity, limit))
	charge := h.budget.Hold
	if complete {
		charge = h.budget.Reserve
	}
	if !charge(grow - capacity) {
		return false
	}
	r.reserved += grow - capacity
	r.buf.B = slices.Grow(r.buf.B, int(grow)-have)
	return true
}

// checkBody runs when a body's check period expires: a body below the
// minimum average rate after the grace period, or one that made no progress
// for the idle timeout, gets 408; otherwise it is checked again a period on.
func (h *handler) checkBody(e *ev) {
	r := h.reqs.at(e.s.Req - 1)
	now := h.slab.Now()
	elapsed := int64(now - r.start) // ms
	cfg := h.cfg
	switch {
	case cfg.MinBodyRate > 0 && elapsed >= cfg.BodyRateGrace.Milliseconds() &&
		int64(r.bodyLen())*1000 < cfg.MinBodyRate*elapsed:
		h.slowBodies.Add(1)
		h.answerAndClose(e, 408, h.reasonSlow)
	case int64(now-r.progress) >= cfg.IdleTimeout.Milliseconds():
		h.answerAndClose(e, 408, "request body stalled longer than the idle timeout")
	default:
		e.l.tq.Arm(e.fd, conn.QueueBody, now)
	}
}
