package tlsbridge

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
)

// Handshake outcome, Conn.hs. Only a CAS from hsPending decides it.
const (
	hsPending int32 = iota
	hsDone
	hsFailed
	hsAborted // timed out, closed by the client, rejected, bridge closed
)

// Loop-side phase, Conn.phase.
const (
	phaseNew       uint8 = iota // waiting for the first byte
	phaseHello                  // waiting for the rest of the first record (no worker, not submitted)
	phaseHandshake              // handshake on the wait list or running on a worker
	phaseReady                  // handed over: records are decrypted on the loop
	phaseClosed                 // released
)

const (
	recordHeaderLen = 5
	maxPlaintext    = 16384 // largest plaintext in one TLS record
	// decrypt while less plaintext than this is buffered: at least one
	// whole HTTP/2 frame of the largest size the server accepts (16 KiB)
	// and its 9-byte header, so that a machine waiting for a whole frame
	// always gets one without more bytes from the client (it may have
	// sent everything its flow-control window allows).
	readAhead      = 16<<10 + 9
	maxInbox       = 32 << 10 // ciphertext handed to a handshake's inbox at once
	maxEarly       = 64 << 10 // ciphertext a connection may hold before its hand-over (gnet's buffer + inbox)
	helloFragment  = 512      // largest ClientHello fragment handed to crypto/tls (see takeHello)
	recordTypeHS   = 0x16     // first byte of a TLS handshake record
	maxDecryptPass = 1 << 16  // bound on one Process's decrypt loop (each pass consumes bytes)
)

// ErrNotReady is returned by Write before the handshake has finished.
var ErrNotReady = errors.New("tlsbridge: handshake not finished")

// plainHTTPResponse is what net/http answers to plain HTTP on a TLS port.
var plainHTTPResponse = []byte("HTTP/1.0 400 Bad Request\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" +
	"Client sent an HTTP request to an HTTPS server.\n")

// Conn is the TLS side of one gnet connection. The server keeps the *Conn in
// gnet's Conn.SetContext. Its exported methods are loop-only.
//
// Who touches what: "loop" is the connection's event loop (Process, Release,
// the stream methods); "worker" is the handshake worker that took it off the
// wait list; "any" includes the sweeper and Close. The hand-over from worker
// to loop is ordered by hs (the worker's CAS to hsDone, the loop's Load).
type Conn struct {
	b  *Bridge   // immutable
	gc gnet.Conn // immutable; loop-only methods on the loop, AsyncWrite/Wake/CloseWithCallback from any

	// Created and written by the worker while hs is hsPending; read by the
	// loop only after it has seen hsDone. Nobody else reads it.
	tls    *tls.Conn
	landed gnet.AsyncCallback // worker only: the callback of its handshake writes

	hs       atomic.Int32 // hsPending until the worker, the timeout or Release decides (CAS, any)
	hsQueued atomic.Int32 // handshake writes the worker queued with AsyncWrite
	hsLanded int32        // ... and those the loop has executed (loop only)

	h2       bool          // ALPN chose "h2"; written by the worker before hsDone, read by the loop after it
	phase    uint8         // loop only
	released bool          // loop only
	busy     bool          // loop only: inside a call that may re-enter Release through gnet's close
	cpuSlot  chan struct{} // worker only: the Computing slots it holds one of, or nil

	// Record framing of the ciphertext handed to crypto/tls: the header
	// bytes of the current record seen so far and the body bytes left.
	// Touched by whoever feeds crypto/tls: the worker during the handshake,
	// the loop after it (ordered by hs).
	hdr     [recordHeaderLen]byte
	hdrN    uint8
	bodyRem uint16
	loop    atomic.Bool // the wire is read and written on the loop now (set by the loop at the hand-over)

	// The handshake's side of the loop/worker exchange, guarded by mu (loop,
	// worker, sweeper, Close). After the hand-over the loop alone reads the
	// inbox, without mu.
	mu       sync.Mutex
	closed   bool          // aborted, failed or released: the worker's reads fail
	settled  bool          // the charge is released for good; nothing more is charged
	heldBack bool          // gnet holds more ciphertext than the inbox took
	held     int64         // bytes charged to the budget's Hold tier now (gnet's buffer + inbox)
	inbox    []byte        // ciphertext from the loop to the worker
	wakeup   chan struct{} // the worker's wake channel, lent while it runs this handshake

	// Decrypted plaintext not yet consumed: plain.B[poff:]. Pooled, returned
	// whenever it empties. Loop only.
	plain *bytebufferpool.ByteBuffer
	poff  int

	// Pending-handshake list (Bridge.pmu): from Open to the hand-over or the end.
	pending  connLink
	deadline int64
	listed   bool

	// Wait list (Bridge.qmu): submitted, no worker yet.
	queued  bool
	waiting connLink
}

// Process moves ciphertext from gnet's inbound buffer into the TLS machinery
// (loop, OnTraffic; also callable with nothing new to continue decrypting what
// gnet still holds). ready reports a finished handshake: plaintext may be
// buffered (InboundBuffered). action is gnet.Close when the connection must
// be closed.
func (tc *Conn) Process() (ready bool, action gnet.Action) {
	switch tc.phase {
	case phaseNew:
		if tc.hs.Load() != hsPending {
			return false, gnet.Close
		}
		if tc.gc.InboundBuffered() == 0 {
			return false, gnet.None
		}
		first, err := tc.gc.Peek(1)
		if err != nil || len(first) == 0 {
			return false, gnet.None
		}
		if first[0] != recordTypeHS {
			return false, tc.answerPlainHTTP()
		}
		tc.phase = phaseHello
		fallthrough
	case phaseHello:
		if !tc.takeHello() {
			// Not submitted yet: the partial record stays in gnet's
			// buffer, capped and charged.
			return false, tc.charge()
		}
		tc.phase = phaseHandshake
		if !tc.b.submit(tc) {
			return false, gnet.Close
		}
		fallthrough
	case phaseHandshake:
		if act := tc.handshakeStep(); act != gnet.None || tc.phase != phaseReady {
			return false, act
		}
		fallthrough
	case phaseReady:
		return true, tc.decrypt()
	}
	return false, gnet.Close
}

func (tc *Conn) answerPlainHTTP() gnet.Action {
	tc.b.unlist(tc)
	if tc.hs.CompareAndSwap(hsPending, hsAborted) {
		tc.b.plainHTTP.Add(1)
		_, _ = tc.gc.Discard(-1)
		_, _ = tc.gc.Write(plainHTTPResponse)
	}
	return gnet.Close
}

// decrypt reads records into the plaintext buffer until readAhead bytes are
// buffered or no complete record is left.
func (tc *Conn) decrypt() gnet.Action {
	tc.busy = true
	defer tc.endCall()
	for range maxDecryptPass {
		if tc.InboundBuffered() >= readAhead || tc.released {
			break
		}
		if len(tc.inbox) == 0 && tc.gc.InboundBuffered() == 0 && !tc.b.unlimitedFeed {
			break // fed one record at a time, crypto/tls holds no whole record now
		}
		room := tc.room(maxPlaintext)
		n, err := tc.tls.Read(room)
		if n > 0 {
			tc.plain.B = tc.plain.B[:len(tc.plain.B)+n]
		}
		if tc.released {
			return gnet.Close
		}
		if err != nil {
			if isWouldBlock(err) {
				break // the rest of the record has not arrived yet
			}
			if !errors.Is(err, io.EOF) {
				tc.b.log.Debug("tls read failed", "remote", tc.gc.RemoteAddr(), "err", err)
			}
			return gnet.Close
		}
	}
	if tc.released {
		return gnet.Close
	}
	return gnet.None
}

// room returns at least n bytes of free space after the buffered plaintext.
func (tc *Conn) room(n int) []byte {
	if tc.plain == nil {
		tc.plain = plainPool.Get().(*bytebufferpool.ByteBuffer)
		tc.poff = 0
	}
	b := tc.plain.B
	if cap(b)-len(b) < n && tc.poff > 0 {
		k := copy(b, b[tc.poff:])
		b, tc.poff = b[:k], 0
	}
	b = slices.Grow(b, n)
	tc.plain.B = b
	return b[len(b):cap(b)]
}

func (tc *Conn) endCall() {
	tc.busy = false
	if tc.InboundBuffered() == 0 || tc.released {
		tc.dropPlain()
	}
}

func (tc *Conn) dropPlain() {
	if tc.plain != nil {
		tc.plain.Reset()
		if cap(tc.plain.B) <= plainKeep {
			plainPool.Put(tc.plain)
		}
		tc.plain, tc.poff = nil, 0
	}
}

// plainPool recycles the plaintext buffers, which a connection holds only
// while plaintext is buffered. bytebufferpool's pools do not fit them: they
// calibrate by the length a buffer has when it is put back, and these go
// back empty with 16 KiB or more of room, so once calibrated a pool dropped
// every one and each decrypt allocated 16 KiB anew (TestEchoAllocs, the
// whole process per echoed message: 16,523 B in 5 allocations before, 48 B
// in 2 now, both crypto/tls's own).
var plainPool = sync.Pool{New: func() any { return new(bytebufferpool.ByteBuffer) }}

// plainKeep: a plaintext buffer grown past this (pipelined bursts) is left
// to the GC instead of being kept for reuse.
const plainKeep = 64 << 10

// InboundBuffered is the number of plaintext bytes buffered.
func (tc *Conn) InboundBuffered() int {
	if tc.plain == nil {
		return 0
	}
	return len(tc.plain.B) - tc.poff
}

// Peek returns the next n bytes of plaintext without consuming them (n <= 0:
// all), valid until the next Discard or Process; io.ErrShortBuffer if fewer
// are buffered.
func (tc *Conn) Peek(n int) ([]byte, error) {
	have := tc.InboundBuffered()
	if n > have {
		return nil, io.ErrShortBuffer
	}
	if n <= 0 {
		n = have
	}
	if have == 0 {
		return nil, nil
	}
	return tc.plain.B[tc.poff : tc.poff+n], nil
}

// Discard consumes n bytes of plaintext (n <= 0 or n >= buffered: all). The
// buffer goes back to the pool when it empties.
func (tc *Conn) Discard(n int) (int, error) {
	have := tc.InboundBuffered()
	if n <= 0 || n >= have {
		if !tc.busy {
			tc.dropPlain()
		} else if tc.plain != nil {
			tc.plain.B, tc.poff = tc.plain.B[:0], 0
		}
		return have, nil
	}
	tc.poff += n
	return n, nil
}

// Write encrypts p and writes it through gnet (loop). Returns ErrNotReady
// before the handshake has finished.
func (tc *Conn) Write(p []byte) (int, error) {
	if tc.phase != phaseReady || tc.released {
		if tc.released {
			return 0, net.ErrClosed
		}
		return 0, ErrNotReady
	}
	tc.busy = true
	n, err := tc.tls.Write(p)
	tc.endCall()
	return n, err
}

// OutboundBuffered is gnet's outbound (ciphertext) buffered.
func (tc *Conn) OutboundBuffered() int {
	if tc.released {
		return 0
	}
	return tc.gc.OutboundBuffered()
}

// HandshakeComplete reports whether the handshake has finished (loop).
func (tc *Conn) HandshakeComplete() bool { return tc.phase == phaseReady }

// H2 reports whether the handshake negotiated HTTP/2 by ALPN (loop, after
// the handshake).
func (tc *Conn) H2() bool { return tc.h2 }

// ConnectionState is crypto/tls's state of a finished handshake (loop).
func (tc *Conn) ConnectionState() tls.ConnectionState {
	if tc.phase != phaseReady {
		return tls.ConnectionState{}
	}
	return tc.tls.ConnectionState()
}

// Release ends the TLS side (loop, OnClose): a handshake still queued or
// running is abandoned, a finished one gets a close_notify, the plaintext
// buffer goes back to the pool. Idempotent.
func (tc *Conn) Release() {
	if tc.released {
		return
	}
	tc.released = true
	tc.b.unlist(tc)
	if tc.hs.CompareAndSwap(hsPending, hsAborted) && (tc.phase == phaseHello || tc.phase == phaseHandshake) {
		tc.b.failed.Add(1) // the client went away mid-handshake
	}
	if tc.phase == phaseHandshake {
		tc.b.dequeue(tc)
	}
	tc.closeInbox()
	if tc.phase == phaseReady && !tc.busy {
		tc.busy = true
		_ = tc.tls.CloseWrite() // close_notify; gnet flushes it after OnClose
		tc.busy = false
	}
	tc.phase = phaseClosed
	if !tc.busy {
		tc.dropPlain()
	}
}

// closeInbox unblocks the handshake worker for good and releases the charge
// (any goroutine).
func (tc *Conn) closeInbox() {
	tc.mu.Lock()
	tc.closed = true
	tc.inbox = nil
	tc.settleLocked()
	ch := tc.wakeup
	tc.mu.Unlock()
	signal(ch)
}
