package tlsbridge

import (
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
)

// This file is the bridge's side of the in-flight budget: what a connection
// holds before its hand-over, capped and charged (see the package doc).

// charge sets the connection's charge to what it holds while it waits for
// its first record (loop, phaseHello): gnet's buffer only.
func (tc *Conn) charge() gnet.Action {
	tc.mu.Lock()
	if tc.closed {
		tc.mu.Unlock()
		return gnet.Close
	}
	over := tc.setHeldLocked(tc.gc.InboundBuffered())
	tc.mu.Unlock()
	if over != nil {
		tc.refuse(over)
		return gnet.Close
	}
	return gnet.None
}

// refuse closes a connection over the cap or the budget before its hand-over
// (loop): aborted and counted in ctr if its handshake is pending, counted
// alone if it has finished but not been handed over (the caller returns
// gnet.Close; Release releases the charge).
func (tc *Conn) refuse(ctr *atomic.Int64) {
	if !tc.b.abort(tc, ctr) && tc.hs.Load() == hsDone {
		ctr.Add(1)
	}
}

// setHeldLocked makes the connection's charge n bytes (mu held). It returns
// the counter to abort the connection with when n is over the cap or the
// budget refuses the difference, else nil.
func (tc *Conn) setHeldLocked(n int) *atomic.Int64 {
	if tc.settled {
		return nil
	}
	limit := maxEarly
	if tc.hsQueued.Load() > 0 { // the server's flight has gone out
		limit = tc.b.cfg.MaxAfterFlight
	}
	if n > limit {
		return &tc.b.overCap
	}
	d := int64(n) - tc.held
	if d > 0 && !tc.b.budget.Hold(d) {
		return &tc.b.overBudget
	}
	tc.b.budget.Release(-d) // no-op unless d < 0
	tc.held = int64(n)
	return nil
}

// unchargeLocked lowers the charge by n bytes the worker consumed from the
// inbox (mu held).
func (tc *Conn) unchargeLocked(n int) {
	if tc.settled {
		return
	}
	d := min(int64(n), tc.held)
	tc.b.budget.Release(d)
	tc.held -= d
}

// settleLocked releases the charge for good (mu held): at the hand-over, on
// failure, abort or Release, whichever comes first.
func (tc *Conn) settleLocked() {
	if !tc.settled {
		tc.settled = true
		tc.b.budget.Release(tc.held)
		tc.held = 0
	}
}

// Held is the number of bytes the bridge charges to the budget for this
// connection now: what it holds of the ciphertext (gnet's buffer and the
// inbox, as of the loop's last look) before the hand-over, 0 after it. Safe
// from any goroutine.
func (tc *Conn) Held() int64 {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.held
}

// CiphertextBuffered is the ciphertext held for this connection and not yet
// decrypted: gnet's inbound buffer plus handshake leftovers in the bridge's
// inbox (records the client pipelined after its Finished). After the
// hand-over the server charges it, with InboundBuffered, as what the
// connection holds (loop).
func (tc *Conn) CiphertextBuffered() int {
	if tc.released {
		return 0
	}
	n := tc.gc.InboundBuffered()
	if tc.phase == phaseReady {
		return n + len(tc.inbox) // the loop's alone now
	}
	tc.mu.Lock()
	n += len(tc.inbox)
	tc.mu.Unlock()
	return n
}
