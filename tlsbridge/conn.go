package tlsbridge

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
	maxPlaintext    = 16384    // largest plaintext in one TLS record
	readAhead       = 16 << 10 // decrypt while less plaintext than this is buffered
	maxInbox        = 32 << 10 // ciphertext handed to a handshake's inbox at once
	maxEarly        = 64 << 10 // ciphertext a connection may hold before its hand-over (gnet's buffer + inbox)
	helloFragment   = 512      // largest ClientHello fragment handed to crypto/tls (see takeHello)
	recordTypeHS    = 0x16     // first byte of a TLS handshake record
	maxDecryptPass  = 1 << 16  // bound on one Process's decrypt loop (each pass consumes bytes)
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

	phase    uint8 // loop only
	released bool  // loop only
	busy     bool  // loop only: inside a call that may re-enter Release through gnet's close
	hasCPU   bool  // worker only: it holds a Computing slot

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
	pprev, pnext *Conn
	deadline     int64
	listed       bool

	// Wait list (Bridge.qmu): submitted, no worker yet.
	queued       bool
	qprev, qnext *Conn
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
	if n > maxEarly {
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

func (tc *Conn) answerPlainHTTP() gnet.Action {
	tc.b.unlist(tc)
	if tc.hs.CompareAndSwap(hsPending, hsAborted) {
		tc.b.plainHTTP.Add(1)
		_, _ = tc.gc.Discard(-1)
		_, _ = tc.gc.Write(plainHTTPResponse)
	}
	return gnet.Close
}

// onLanded runs on the loop after each handshake write was handed to the socket.
func (tc *Conn) onLanded(gnet.Conn, error) error {
	tc.hsLanded++
	return nil
}

// handshakeStep passes new ciphertext to the handshake's inbox (worker or
// not yet), keeps the charge equal to what the connection holds and, once the
// worker has finished and its writes have landed, hands the connection over
// to the loop (phaseReady).
func (tc *Conn) handshakeStep() gnet.Action {
	n := tc.gc.InboundBuffered()
	tc.mu.Lock()
	if tc.closed {
		tc.mu.Unlock()
		return gnet.Close
	}
	// Hand the inbox at most maxInbox; the rest stays in gnet's buffer
	// (usually application data pipelined after the client's Finished) and
	// is fetched when the worker runs dry (heldBack, Wake).
	take := max(0, min(n, maxInbox-len(tc.inbox)))
	if take > 0 {
		buf, _ := tc.gc.Peek(take)
		tc.inbox = append(tc.inbox, buf...)
	}
	tc.heldBack = take < n
	over := tc.setHeldLocked(n - take + len(tc.inbox))
	ch := tc.wakeup
	tc.mu.Unlock()
	if over != nil {
		tc.refuse(over)
		return gnet.Close
	}
	if take > 0 {
		_, _ = tc.gc.Discard(take)
		signal(ch)
	}
	switch tc.hs.Load() {
	case hsPending:
		return gnet.None
	case hsDone:
		if tc.hsLanded != tc.hsQueued.Load() {
			return gnet.None // the worker's Wake comes after the remaining writes
		}
		// The hand-over: the loop owns the wire, and the server the
		// accounting of what the connection holds (CiphertextBuffered).
		tc.b.unlist(tc)
		tc.mu.Lock()
		tc.settleLocked()
		if len(tc.inbox) == 0 {
			tc.inbox = nil
		}
		tc.mu.Unlock()
		tc.loop.Store(true)
		tc.phase = phaseReady
		return gnet.None
	default:
		return gnet.Close
	}
}

// signal wakes the worker waiting on ch, if any.
func signal(ch chan struct{}) {
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// takeHello reports whether the client's first record is complete (loop,
// phaseHello); the connection is submitted only then, so a client that stalls
// inside its hello costs its buffered bytes, not a worker. The record goes to
// the inbox, cut into records of at most helloFragment bytes if it is one
// large ClientHello. The handshake is the same (the transcript covers
// messages, not records), but crypto/tls then never holds the whole record in
// its rawInput (which keeps its capacity for the life of the connection):
// with equal fragments c.hand still grows by doubling to about the message
// size, and rawInput stays at its 576-byte minimum instead of ~2 KiB for a
// 1.5 KiB X25519MLKEM768 hello. A header crypto/tls rejects by itself (not
// TLS, longer than any record) is passed on at once, for it to say so.
func (tc *Conn) takeHello() bool {
	n := tc.gc.InboundBuffered()
	if n < recordHeaderLen {
		return false
	}
	hdr, _ := tc.gc.Peek(recordHeaderLen)
	bodyLen := int(hdr[3])<<8 | int(hdr[4])
	if hdr[1] != 3 || bodyLen > maxPlaintext {
		return true // handshakeStep moves what there is
	}
	if n < recordHeaderLen+bodyLen {
		return false
	}
	rec, _ := tc.gc.Peek(recordHeaderLen + bodyLen)
	body := rec[recordHeaderLen:]
	frag := bodyLen
	if !tc.b.unlimitedFeed && !tc.b.noHelloSplit && bodyLen > helloFragment &&
		body[0] == 1 && 4+(int(body[1])<<16|int(body[2])<<8|int(body[3])) == bodyLen {
		for frag > helloFragment {
			frag = (frag + 1) / 2
		}
	}
	frags := 1
	if frag > 0 {
		frags = (bodyLen + frag - 1) / frag
	}
	tc.mu.Lock()
	if tc.closed {
		tc.mu.Unlock()
		return true // handshakeStep closes
	}
	inbox := make([]byte, 0, len(tc.inbox)+bodyLen+frags*recordHeaderLen)
	inbox = append(inbox, tc.inbox...)
	if frags == 1 {
		inbox = append(inbox, rec...)
	} else {
		for off := 0; off < bodyLen; off += frag {
			k := min(frag, bodyLen-off)
			inbox = append(inbox, rec[0], rec[1], rec[2], byte(k>>8), byte(k))
			inbox = append(inbox, body[off:off+k]...)
		}
	}
	tc.inbox = inbox
	tc.mu.Unlock()
	// Charged by handshakeStep, right after, before anything can consume it.
	_, _ = tc.gc.Discard(recordHeaderLen + bodyLen)
	return true
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
		tc.plain = bytebufferpool.Get()
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
		bytebufferpool.Put(tc.plain)
		tc.plain, tc.poff = nil, 0
	}
}

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

// wouldBlock is the wire's "no ciphertext buffered" error after the
// handshake: a temporary net.Error, which crypto/tls does not make sticky.
type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tlsbridge: no ciphertext buffered" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

var errWouldBlock net.Error = wouldBlock{}

func isWouldBlock(err error) bool {
	_, ok := err.(wouldBlock)
	return ok
}

// wire is the net.Conn crypto/tls runs over. During the handshake it is read
// and written by the worker (reads block until the loop delivers ciphertext,
// writes go out through gnet's AsyncWrite); after it, by the loop (reads
// return errWouldBlock when nothing is buffered, writes use gnet's Write).
type wire Conn

var _ net.Conn = (*wire)(nil)

func (w *wire) Read(p []byte) (int, error) {
	tc := (*Conn)(w)
	if tc.loop.Load() {
		if tc.inbox != nil { // handshake leftovers: the client's first records
			n := tc.frame(p, len(tc.inbox), tc.readInbox)
			if len(tc.inbox) == 0 {
				tc.inbox = nil
			}
			return n, nil
		}
		avail := tc.gc.InboundBuffered()
		if avail == 0 {
			return 0, errWouldBlock
		}
		return tc.frame(p, avail, tc.readGnet), nil
	}
	stop := tc.b.stop
	for {
		tc.mu.Lock()
		if tc.closed {
			tc.mu.Unlock()
			return 0, net.ErrClosed
		}
		if len(tc.inbox) > 0 {
			n := tc.frame(p, len(tc.inbox), tc.readInbox)
			tc.unchargeLocked(n)
			if len(tc.inbox) == 0 {
				tc.inbox = nil // free the backing array: the loop allocates anew
			}
			tc.mu.Unlock()
			return n, nil
		}
		ch, more := tc.wakeup, tc.heldBack
		tc.heldBack = false
		tc.mu.Unlock()
		if more {
			_ = tc.gc.Wake(nil) // the loop moves more into the inbox
		}
		tc.releaseCPU() // waiting for the client costs no CPU slot
		select {
		case <-ch:
		case <-stop:
			return 0, net.ErrClosed
		}
		if !tc.b.compute() {
			return 0, net.ErrClosed
		}
		tc.hasCPU = true
	}
}

// releaseCPU gives back the handshake's Computing slot if it holds one
// (worker goroutine only).
func (tc *Conn) releaseCPU() {
	if tc.hasCPU {
		tc.hasCPU = false
		tc.b.uncompute()
	}
}

func (tc *Conn) readInbox(p []byte) {
	n := copy(p, tc.inbox)
	tc.inbox = tc.inbox[n:]
}

func (tc *Conn) readGnet(p []byte) {
	_, _ = tc.gc.Read(p)
}

// frame copies into p at most avail bytes from the ciphertext stream with
// read, never past the end of the current TLS record, so crypto/tls buffers at
// most one record.
func (tc *Conn) frame(p []byte, avail int, read func([]byte)) int {
	if tc.b.unlimitedFeed {
		n := min(len(p), avail)
		read(p[:n])
		return n
	}
	total := 0
	for len(p) > 0 && avail > 0 {
		var k int
		if tc.hdrN < recordHeaderLen {
			k = min(len(p), avail, recordHeaderLen-int(tc.hdrN))
			read(p[:k])
			copy(tc.hdr[tc.hdrN:], p[:k])
			tc.hdrN += uint8(k)
			if tc.hdrN == recordHeaderLen {
				tc.bodyRem = uint16(tc.hdr[3])<<8 | uint16(tc.hdr[4])
			}
		} else {
			k = min(len(p), avail, int(tc.bodyRem))
			read(p[:k])
			tc.bodyRem -= uint16(k)
		}
		p, avail, total = p[k:], avail-k, total+k
		if tc.hdrN == recordHeaderLen && tc.bodyRem == 0 {
			tc.hdrN = 0 // end of the record: stop here
			break
		}
	}
	return total
}

func (w *wire) Write(p []byte) (int, error) {
	tc := (*Conn)(w)
	if tc.loop.Load() {
		return tc.gc.Write(p)
	}
	tc.mu.Lock()
	closed := tc.closed
	tc.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	buf := make([]byte, len(p)) // crypto/tls reuses p; AsyncWrite keeps it until the loop runs
	copy(buf, p)
	tc.hsQueued.Add(1)
	if err := tc.gc.AsyncWrite(buf, tc.landed); err != nil {
		tc.hsQueued.Add(-1)
		return 0, err
	}
	return len(p), nil
}

func (w *wire) Close() error {
	(*Conn)(w).closeInbox()
	return nil
}

func (w *wire) LocalAddr() net.Addr              { return w.gc.LocalAddr() }
func (w *wire) RemoteAddr() net.Addr             { return w.gc.RemoteAddr() }
func (w *wire) SetDeadline(time.Time) error      { return nil }
func (w *wire) SetReadDeadline(time.Time) error  { return nil }
func (w *wire) SetWriteDeadline(time.Time) error { return nil }
