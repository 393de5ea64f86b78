package tlsbridge

import (
	"github.com/panjf2000/gnet/v2"
)

// This file is the loop's side of a handshake: feeding the worker's inbox
// and taking the connection over once the worker has finished.

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
