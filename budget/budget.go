// Package budget is upsink's global in-flight byte budget (--max-inflight):
// every byte the server keeps for a client - a head or body still arriving,
// requests sent ahead of a pending commit, TLS bytes before and during a
// handshake, a complete upload waiting for its commit - is charged here while
// it is kept and released once when it is let go.
//
// Two tiers share one counter. Bytes held for a client that has not finished
// sending (Hold) may use at most three quarters of the budget; bytes of
// requests that are complete (Reserve) may use all of it. Clients that trickle
// bytes (slowloris heads, slow bodies, stalled handshakes) can therefore never
// take the last quarter, which stays for requests that arrive whole and leave
// with their commit: polite uploads keep being served under such an attack.
//
// A Budget is safe for concurrent use by every event loop, the TLS handshake
// workers and the store's completion path.
package budget

import "sync/atomic"

// Budget counts bytes in flight against a maximum.
type Budget struct {
	used    atomic.Int64
	max     int64
	holdMax int64
}

// New returns a budget of max bytes; held bytes may take max - max/4 of it.
func New(max int64) *Budget {
	return &Budget{max: max, holdMax: max - max/4}
}

// Reserve charges n bytes of a complete request (or part of one whose size is
// known and bounded) if the budget has room for them.
func (b *Budget) Reserve(n int64) bool { return b.charge(n, b.max) }

// Hold charges n bytes kept for a client that is still sending, if they fit
// in the held tier (three quarters of the budget).
func (b *Budget) Hold(n int64) bool { return b.charge(n, b.holdMax) }

func (b *Budget) charge(n, limit int64) bool {
	if n <= 0 {
		return true
	}
	if b.used.Add(n) > limit {
		b.used.Add(-n)
		return false
	}
	return true
}

// Release gives back n bytes charged earlier.
func (b *Budget) Release(n int64) {
	if n > 0 {
		b.used.Add(-n)
	}
}

// Used is the number of bytes charged now.
func (b *Budget) Used() int64 { return b.used.Load() }

// Max is the budget's size in bytes.
func (b *Budget) Max() int64 { return b.max }
