// Package faultproxy is a TCP proxy for tests that can make a server look
// stalled or cut off without touching the server itself: the database the
// tests share stays healthy for every other test while one test's connections
// go through a proxy it controls.
//
// A proxy listens on 127.0.0.1:0 and forwards each accepted connection to one
// upstream address (a unix socket or a TCP address). Stall stops forwarding
// in one or both directions while every connection stays open, as a
// blackholed route or a SIGSTOPped server would look to the client: bytes
// already read from one side are held, nothing more is read from it (so the
// kernel's buffers fill and writes eventually block), and an EOF is held too.
// New connections are accepted while stalled, and their bytes held alike.
// Resume delivers what was held, in order. Cut closes every connection open
// now, dropping what is held.
package faultproxy

import (
	"errors"
	"net"
	"sync"
	"testing"
)

// Dir selects the directions a stall applies to.
type Dir uint8

const (
	Requests Dir = 1 << iota // client to upstream
	Replies                  // upstream to client
	Both     = Requests | Replies
)

// Proxy forwards connections from Addr to its upstream. Its methods are safe
// for concurrent use.
type Proxy struct {
	ln                net.Listener
	network, upstream string

	mu      sync.Mutex
	cond    *sync.Cond
	stalled Dir
	closed  bool
	refuse  bool // new connections are closed at once (a server that is down)
	pairs   map[*pair]struct{}
	held    [2]int // pumps holding bytes or an EOF, by direction (0 requests, 1 replies)
	wg      sync.WaitGroup
}

type pair struct {
	client, server net.Conn
	cut            bool // guarded by Proxy.mu
}

// New starts a proxy to upstream (network "unix" or "tcp") and closes it
// with tb.Cleanup.
func New(tb testing.TB, network, upstream string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: listen: %v", err)
	}
	p := &Proxy{ln: ln, network: network, upstream: upstream, pairs: map[*pair]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Down makes the upstream look down: every open connection is cut and new
// ones are closed as soon as they are accepted, until Up.
func (p *Proxy) Down() {
	p.mu.Lock()
	p.refuse = true
	p.mu.Unlock()
	p.Cut()
}

// Up forwards new connections again after Down.
func (p *Proxy) Up() {
	p.mu.Lock()
	p.refuse = false
	p.mu.Unlock()
}

// Addr is the proxy's listening address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Stall stops forwarding in the directions d (added to any already stalled).
// Bytes a pump has already passed on are not recalled; once Stall returns,
// nothing more goes through in those directions until Resume or Cut.
func (p *Proxy) Stall(d Dir) {
	p.mu.Lock()
	p.stalled |= d
	p.mu.Unlock()
}

// Resume forwards again in every direction, held bytes first.
func (p *Proxy) Resume() {
	p.mu.Lock()
	p.stalled = 0
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Cut closes every connection open now; held bytes are dropped. A stall in
// force stays in force for new connections.
func (p *Proxy) Cut() {
	p.mu.Lock()
	for pr := range p.pairs {
		p.cutLocked(pr)
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Held reports how many connections have bytes (or an EOF) held in
// direction d (Requests or Replies) by a stall right now.
func (p *Proxy) Held(d Dir) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	if d&Requests != 0 {
		n += p.held[0]
	}
	if d&Replies != 0 {
		n += p.held[1]
	}
	return n
}

// Conns reports how many proxied connections are open.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pairs)
}

// Close stops listening, closes every connection and waits for the proxy's
// goroutines. It is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for pr := range p.pairs {
		p.cutLocked(pr)
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) cutLocked(pr *pair) {
	if pr.cut {
		return
	}
	pr.cut = true
	_ = pr.client.Close()
	_ = pr.server.Close()
	delete(p.pairs, pr)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			_ = c.Close()
			continue
		}
		u, err := net.Dial(p.network, p.upstream)
		if err != nil {
			_ = c.Close()
			continue
		}
		pr := &pair{client: c, server: u}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = u.Close()
			return
		}
		p.pairs[pr] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pump(pr, u, c, Requests)
		go p.pump(pr, c, u, Replies)
	}
}

// pump copies src to dst, holding each chunk (and the final EOF) while d is
// stalled. When either side ends, the pair is closed.
func (p *Proxy) pump(pr *pair, dst, src net.Conn, d Dir) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 || err != nil {
			if !p.flow(pr, d) {
				return
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	p.mu.Lock()
	p.cutLocked(pr)
	p.mu.Unlock()
}

// flow waits while d is stalled; false means the pair was cut meanwhile.
func (p *Proxy) flow(pr *pair, d Dir) bool {
	i := 0
	if d == Replies {
		i = 1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled&d != 0 && !pr.cut {
		p.held[i]++
		for p.stalled&d != 0 && !pr.cut {
			p.cond.Wait()
		}
		p.held[i]--
	}
	return !pr.cut
}
