package tlsbridge

import (
	"net"
	"time"
)

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
		slots, ok := tc.b.compute(true)
		if !ok {
			return 0, net.ErrClosed
		}
		tc.cpuSlot = slots
	}
}

// releaseCPU gives back the handshake's Computing slot if it holds one
// (worker goroutine only).
func (tc *Conn) releaseCPU() {
	if tc.cpuSlot != nil {
		<-tc.cpuSlot
		tc.cpuSlot = nil
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
