package server

import (
	"context"
	"net"
	"time"

	"github.com/panjf2000/gnet/v2"

	"upsink/conn"
	"upsink/tlsbridge"
)

// This file holds gnet's callbacks. Each runs on the event loop that owns the
// connection (OnTick on gnet's ticker goroutine, which only posts work to the
// loops).

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.srv.eng.Store(&eng)
	close(h.srv.booted)
	return gnet.None
}

// OnOpen gives the new connection its slot, or refuses it: while shutting
// down, and at the connection cap when the loop has no idle keep-alive
// connection to close in its place (see admit).
func (h *handler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	fd := c.Fd()
	if fd >= h.slab.Len() {
		h.cfg.Logger.Warn("server: fd beyond slab, closing", "fd", fd, "slots", h.slab.Len())
		return nil, gnet.Close
	}
	l := h.loopFor(c.EventLoop())
	s := h.slab.At(fd)
	flags := conn.FlagOpen.WithLoop(l.idx)
	if h.bridge != nil {
		if la, ok := c.LocalAddr().(*net.TCPAddr); ok && la.Port == h.tlsPort {
			flags |= conn.FlagTLS
		}
	}
	s.Reset(flags) // first: acquires the slot from the loop that closed the fd
	*h.conns.At(fd) = c
	h.nconns.Add(1)
	if flags&conn.FlagTLS != 0 {
		h.ntls.Add(1)
	}
	if !h.admit(l) {
		return nil, gnet.Close // OnClose undoes the above
	}
	if flags&conn.FlagTLS != 0 {
		c.SetContext(h.bridge.Open(c))
	}
	l.tq.Arm(fd, conn.QueueHead, h.slab.Now())
	return nil, gnet.None
}

// OnClose releases everything the connection held: its budget charge, a
// request record not handed to the store, its TLS side, its slot.
func (h *handler) OnClose(c gnet.Conn, _ error) gnet.Action {
	fd := c.Fd()
	if fd >= h.slab.Len() {
		return gnet.None
	}
	s := h.slab.At(fd)
	if s.Flags&conn.FlagOpen == 0 {
		return gnet.None
	}
	h.loopAt(s.Flags.Loop()).tq.Disarm(fd)
	if s.Flags&conn.FlagTLS != 0 {
		if tc, ok := c.Context().(*tlsbridge.Conn); ok {
			tc.Release()
		}
		c.SetContext(nil)
	}
	h.unhold(s)
	if s.Flags.State() == conn.StateH2 {
		h.endH2(fd)
	}
	if s.Req != 0 && s.Flags&conn.FlagSubmitted == 0 {
		h.reqs.free(h, s.Req-1)
	}
	// A submitted record is freed when its commit completes and finds the
	// generation changed: its row may be committed, but it was never
	// acknowledged.
	*h.conns.At(fd) = nil
	h.nconns.Add(-1)
	if s.Flags&conn.FlagTLS != 0 {
		h.ntls.Add(-1)
	}
	s.Reset(0) // last: publishes the slot to whichever loop gets the fd next
	return gnet.None
}

func (h *handler) OnTraffic(c gnet.Conn) gnet.Action {
	fd := c.Fd()
	s := h.slab.At(fd)
	if s.Flags&conn.FlagOpen == 0 {
		return gnet.Close
	}
	e := h.event(h.loopAt(s.Flags.Loop()), c, fd, s)
	if e.c == nil {
		return gnet.Close
	}
	return h.drive(&e)
}

// event returns the event value for connection c on fd; its stream is nil if
// a TLS connection has lost its bridge side.
func (h *handler) event(l *loop, c gnet.Conn, fd int, s *conn.Slot) ev {
	e := ev{l: l, gc: c, c: c, fd: fd, s: s}
	if s.Flags&conn.FlagTLS != 0 {
		e.tc, _ = c.Context().(*tlsbridge.Conn)
		if e.tc == nil {
			e.c = nil
		} else {
			e.c = e.tc
		}
	}
	return e
}

// drive runs the connection's machine over its byte stream. For TLS it
// alternates between the bridge (handshake, then decrypting at most a bounded
// amount of plaintext ahead) and the machine, as long as the machine consumes
// and ciphertext is left: one code path for HTTP and HTTPS after the bridge.
//
// When the machine stops, wait charges what the connection keeps until its
// next event. Until the TLS hand-over (Process reports ready) the bridge
// charges what a TLS connection holds, and the server charges nothing.
func (h *handler) drive(e *ev) gnet.Action {
	gen := e.s.Gen
	if !e.tls() {
		if act := h.serve(e); act != gnet.None || e.s.Generation() != gen {
			return act
		}
		act, _ := h.wait(e)
		return act
	}
	tc := e.tc
	for {
		ready, act := tc.Process()
		if act != gnet.None || !ready {
			return act
		}
		before := tc.InboundBuffered()
		if act := h.serve(e); act != gnet.None {
			return act
		}
		if e.s.Generation() != gen {
			return gnet.None // closed while serving
		}
		// Go on while the machine consumes and ciphertext is left; a
		// connection that drains, or drops what was sent ahead, decrypts
		// and discards it all (dropping ciphertext would break the stream
		// before the pending answer is written).
		if tc.CiphertextBuffered() == 0 || tc.InboundBuffered() >= before {
			act, again := h.wait(e)
			if !again || e.s.Generation() != gen {
				return act
			}
		}
	}
}

// OnTick asks every loop to reap its timeout queues on its own goroutine.
func (h *handler) OnTick() (time.Duration, gnet.Action) {
	for _, l := range *h.loops.Load() {
		_ = l.el.Execute(context.Background(), &l.reaper)
	}
	return reapInterval, gnet.None
}
