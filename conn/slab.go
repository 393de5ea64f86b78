// Package conn holds upsink's per-connection state the way Lwan does: one
// fd-indexed slab of 32-byte slots, preallocated in pages and never freed, with
// the connection's flags packed into one word and its timeout queue threaded
// through the slab as prev/next fd links. Nothing here allocates per connection
// in steady state, and nothing here knows about HTTP or gnet.
//
// A slot is touched only by the event loop that owns its fd; the slab itself is
// safe for concurrent use by several loops (pages are published atomically).
package conn

import (
	"sync"
	"sync/atomic"
	"time"
)

// Slot is the state of one connection that must survive between reads.
//
// This structure is exactly 32 bytes on 64-bit platforms (TestSlotSize asserts
// it). If it changes, update the memory budget in ARCHITECTURE.md and the size
// test; the per-request parse state does not belong here, it lives on the stack
// of the OnTraffic call that parses it.
type Slot struct {
	Flags Flags  // state, timeout queue, loop index and behaviour bits
	Gen   uint32 // bumped on open and close; completions compare it to spot a reused fd
	Req   uint32 // index+1 of the connection's in-flight request record (HTTP/2: of its session); 0 = none
	Held  uint32 // bytes charged to the in-flight budget for what gnet (and the TLS bridge) keep for the connection: unparsed input, unsent answers
	Scan  uint32 // bytes of an incomplete request head already searched for its end; 0 when none is pending

	deadline Clock // when the slot's timeout queue expires it
	prev     int32 // timeout queue links: fds, -1 = none
	next     int32
}

// Flags packs a connection's state into one word:
//
//	bits 0-2   State
//	bits 3-5   QueueID of the timeout queue the slot is on
//	bits 6-15  behaviour bits (FlagOpen ...)
//	bits 24-31 index of the event loop that owns the fd
type Flags uint32

// Behaviour bits.
const (
	FlagOpen       Flags = 1 << (6 + iota) // the fd is an open connection
	FlagKeepAlive                          // the current request allows the connection to be reused
	FlagChunked                            // the current body is chunked
	FlagCloseAfter                         // close once the current response is written
	FlagHTTP10                             // the current request is HTTP/1.0
	FlagSubmitted                          // the current request was handed to the store
	FlagTLS                                // the connection came in on the TLS listener
)

const (
	stateMask Flags = 0x7
	queueMask Flags = 0x7 << 3
	loopShift       = 24
)

// State is where a connection's resumable machine is suspended.
type State uint8

// States of the per-connection machine.
const (
	StateHead   State = iota // waiting for (the rest of) a request head
	StateBody                // reading a request body
	StateCommit              // suspended until the store commits (or fails) the request
	StateDrain               // answered and half-closed; discarding input until EOF or timeout
	StateH2                  // speaking HTTP/2: Req is index+1 of the connection's HTTP/2 session, whose streams hold the requests
)

// State returns the machine state.
func (f Flags) State() State { return State(f & stateMask) }

// WithState returns f with the machine state set to s.
func (f Flags) WithState(s State) Flags { return f&^stateMask | Flags(s) }

// Queue returns the timeout queue the slot is on.
func (f Flags) Queue() QueueID { return QueueID((f & queueMask) >> 3) }

func (f Flags) withQueue(q QueueID) Flags { return f&^queueMask | Flags(q)<<3 }

// Loop returns the index of the event loop that owns the fd.
func (f Flags) Loop() int { return int(f >> loopShift) }

// WithLoop returns f with the owning loop index set (0-255).
func (f Flags) WithLoop(i int) Flags { return f&^(0xff<<loopShift) | Flags(uint8(i))<<loopShift }

// Reset clears a slot for a newly opened or closed fd and bumps its
// generation. The slot must already be off its timeout queue.
//
// The generation is read and written atomically: when a connection closes on
// one event loop, the kernel may hand the same fd to a connection on another
// loop at once. The atomic store at the end of the closing Reset and the
// atomic load at the start of the opening one order the two loops' accesses.
// Code that may run after the fd changed hands (a completion, a check after a
// write that failed) must look only at Generation.
func (s *Slot) Reset(flags Flags) {
	gen := atomic.LoadUint32(&s.Gen)
	s.Flags, s.Req, s.Held, s.Scan = flags, 0, 0, 0
	s.deadline, s.prev, s.next = 0, -1, -1
	atomic.StoreUint32(&s.Gen, gen+1)
}

// Generation returns the slot's generation, safe to call from any loop.
func (s *Slot) Generation() uint32 { return atomic.LoadUint32(&s.Gen) }

// PageSlots is the number of slots per slab page (32 KiB pages).
const PageSlots = 1024

// Pages is an index-addressed table of T, grown one fixed page at a time on
// first use and never shrunk. Lookups are lock-free; growth takes a mutex.
type Pages[T any] struct {
	mu    sync.Mutex
	pages []atomic.Pointer[[PageSlots]T]
}

// NewPages returns a table that can address indices [0, max).
func NewPages[T any](max int) *Pages[T] {
	if max < 1 {
		max = 1
	}
	return &Pages[T]{pages: make([]atomic.Pointer[[PageSlots]T], (max+PageSlots-1)/PageSlots)}
}

// Len is the number of addressable indices.
func (p *Pages[T]) Len() int { return len(p.pages) * PageSlots }

// At returns the element at index i, allocating its page on first use. It
// panics if i is out of range, as a slice would.
func (p *Pages[T]) At(i int) *T {
	pg := p.pages[i/PageSlots].Load()
	if pg == nil {
		pg = p.grow(i / PageSlots)
	}
	return &pg[i%PageSlots]
}

func (p *Pages[T]) grow(n int) *[PageSlots]T {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pg := p.pages[n].Load(); pg != nil {
		return pg
	}
	pg := new([PageSlots]T)
	p.init(pg)
	p.pages[n].Store(pg)
	return pg
}

func (p *Pages[T]) init(pg *[PageSlots]T) {
	if slots, ok := any(pg).(*[PageSlots]Slot); ok {
		for i := range slots {
			slots[i].prev, slots[i].next = -1, -1
		}
	}
}

// Allocated reports how many pages have been allocated.
func (p *Pages[T]) Allocated() int {
	n := 0
	for i := range p.pages {
		if p.pages[i].Load() != nil {
			n++
		}
	}
	return n
}

// Slab is the fd-indexed table of connection slots.
type Slab struct {
	Pages[Slot]
	epoch time.Time
}

// NewSlab returns a slab for fds [0, maxFDs); pass the process's RLIMIT_NOFILE.
func NewSlab(maxFDs int) *Slab {
	s := &Slab{epoch: time.Now()}
	s.Pages = *NewPages[Slot](maxFDs)
	return s
}

// Clock is a slab time in milliseconds since the slab was made; it wraps after
// 49 days and is compared wrap-safely.
type Clock uint32

// Now returns the slab clock.
func (s *Slab) Now() Clock { return Clock(time.Since(s.epoch) / time.Millisecond) }

// Before reports whether c is earlier than d (wrap-safe for spans under 24 days).
func (c Clock) Before(d Clock) bool { return int32(c-d) < 0 }
