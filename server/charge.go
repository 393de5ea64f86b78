package server

import (
	"slices"

	"github.com/panjf2000/gnet/v2"

	"upsink/conn"
	"upsink/parser"
)

// This file is the connection side of the in-flight budget: what a
// connection keeps in buffers below the machine (Slot.Held), and what its
// request's body buffer holds (request.reserved). Every byte is charged
// while it is kept and released once.

// wait runs when the machine has stopped for this event and the connection
// waits for its next one: it charges (settle) what the connection keeps, under
// the bound of its state. Past the bound a connection suspended on a commit
// drops what it sent ahead and closes after its answer (again: over TLS drive
// must decrypt and drop the rest of the ciphertext too); one reading a head or
// a body is answered 503.
func (h *handler) wait(e *ev) (act gnet.Action, again bool) {
	s := e.s
	switch s.Flags.State() {
	case conn.StateDrain:
		h.unhold(s)
		return gnet.None, false
	case conn.StateH2:
		// At most one partial frame is left in the input (serveH2).
		if h.settle(e, h2InputMax) {
			return gnet.None, false
		}
		h.budgetRefused.Add(1)
		return gnet.Close, false
	case conn.StateCommit:
		if s.Flags&conn.FlagCloseAfter != 0 {
			// Already past the bound: what arrives is dropped (serve), so
			// at most a partial TLS record and unsent answers are kept.
			if !h.settle(e, 0) {
				h.unhold(s)
			}
			return gnet.None, false
		}
		if h.settle(e, maxPipelined) {
			return gnet.None, false
		}
		s.Flags |= conn.FlagCloseAfter
		_, _ = e.c.Discard(-1)
		h.unhold(s)
		// Once, right after the bound was passed: drive decrypts and drops
		// the rest of the ciphertext. Only once: later calls take the branch
		// above, so drive cannot spin on ciphertext it cannot decrypt.
		return gnet.None, e.tls() && e.tc.CiphertextBuffered() > 0
	case conn.StateHead:
		if e.c.InboundBuffered() == 0 {
			// Idle between requests: what is left to charge is an
			// unsent answer (bounded by readHead); if the budget cannot
			// take it now, the previous charge stands until the next event.
			_ = h.settle(e, 0)
			return gnet.None, false
		}
	}
	// An incomplete head, or an incomplete chunk-size or trailer line.
	if h.settle(e, parser.MaxHeaderBytes) {
		return gnet.None, false
	}
	h.budgetRefused.Add(1)
	return h.failWith(e, 503, "server busy: in-flight budget exhausted", hdrRetry), false
}

// settle charges what the connection keeps while it waits for its next
// event: input the machine has not consumed (over TLS the plaintext plus the
// ciphertext still in gnet's buffer) and answers gnet has not sent yet. The
// input may be at most limit bytes (plus one partial TLS record). False: over
// the limit, too many unsent answers, or the budget's held tier is spent;
// the charge is then left as it was.
func (h *handler) settle(e *ev, limit int) bool {
	in := e.c.InboundBuffered()
	if e.tls() {
		in += e.tc.CiphertextBuffered()
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
	now := h.slab.Now()
	if reason := h.bodyTooSlow(h.reqs.at(e.s.Req-1), now); reason != "" {
		h.answerAndClose(e, 408, reason)
		return
	}
	e.l.tq.Arm(e.fd, conn.QueueBody, now)
}

// bodyTooSlow is the 408 reason for r's body at now: below the minimum
// average rate after the grace period (counted in slowBodies), or no
// progress for the idle timeout; "" while it may go on (HTTP/1.1's
// checkBody and HTTP/2's expireH2, per stream).
func (h *handler) bodyTooSlow(r *request, now conn.Clock) string {
	elapsed := int64(now - r.start) // ms
	cfg := h.cfg
	switch {
	case cfg.MinBodyRate > 0 && elapsed >= cfg.BodyRateGrace.Milliseconds() &&
		int64(r.bodyLen())*1000 < cfg.MinBodyRate*elapsed:
		h.slowBodies.Add(1)
		return h.reasonSlow
	case int64(now-r.progress) >= cfg.IdleTimeout.Milliseconds():
		return "request body stalled longer than the idle timeout"
	}
	return ""
}
