package tlsbridge

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"upsink/budget"
)

// junkRecords is n bytes of well-formed application-data records (16 KiB
// bodies), what an attacker sends after its ClientHello to fill the server.
func junkRecords(n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		k := min(maxPlaintext, n-b.Len())
		b.Write([]byte{23, 3, 3, byte(k >> 8), byte(k)})
		b.Write(bytes.Repeat([]byte{0xAA}, k))
	}
	return b.Bytes()
}

// A connection waiting for a worker may hold up to maxEarly bytes, charged to
// the budget; one that sends more is closed and counted in OverCap. With the
// only worker parked, nothing is consumed: the cap alone decides.
func TestEarlyBytesCapped(t *testing.T) {
	s := startServer(t, Config{Workers: 1, HandshakeTimeout: time.Minute}, nil)
	hello := clientHello(t)
	parked := stalledClient(t, s.addr, hello)
	defer parked.Close()
	waitFor(t, 10*time.Second, "the worker parked", func() bool {
		st := s.b.Stats()
		return st.InFlight == 1 && st.Waiting == 0 && s.budget.Used() == 0
	})

	// Under the cap: waits, charged what it holds (split hello + records).
	under := junkRecords(40 << 10)
	ok := stalledClient(t, s.addr, append(append([]byte(nil), hello...), under...))
	defer ok.Close()
	waitFor(t, 10*time.Second, "the waiting connection charged", func() bool {
		u := s.budget.Used()
		return s.b.Stats().Waiting == 1 && u >= int64(len(hello)+len(under)) && u <= int64(len(hello)+len(under)+64)
	})
	s.b.qmu.Lock()
	held := s.b.wait.head.Held()
	s.b.qmu.Unlock()
	if held != s.budget.Used() {
		t.Errorf("Held %d, budget %d: the one waiting connection is all that is charged", held, s.budget.Used())
	}

	// Over the cap (ClientHello + 900 KiB, the attack): closed, counted.
	over := stalledClient(t, s.addr, nil)
	go func() { _, _ = over.Write(append(append([]byte(nil), hello...), junkRecords(900<<10)...)) }()
	readUntilClosed(t, over)
	over.Close()
	if st := s.b.Stats(); st.OverCap != 1 || st.Rejected != 0 || st.Waiting != 1 {
		t.Errorf("stats %+v, want 1 over the cap, the other still waiting", st)
	}
	if u := s.budget.Used(); u != held {
		t.Errorf("budget %d after the close, want %d (the waiting connection's)", u, held)
	}
	ok.Close()
	parked.Close()
	s.checkNoLeak(t)
}

// When the budget's Hold tier refuses a connection's bytes, it is closed and
// counted in OverBudget; the others keep theirs.
func TestEarlyBytesOverBudget(t *testing.T) {
	b := budget.New(4000) // Hold tier: 3000 bytes
	s := startServer(t, Config{Budget: b, HandshakeTimeout: time.Minute}, nil)
	// The start of a first record announcing 16,000 bytes: not submitted,
	// held in gnet's buffer and charged as it grows.
	partial := func(n int) []byte {
		p := make([]byte, n)
		copy(p, []byte{recordTypeHS, 3, 1, 16000 >> 8, 16000 & 0xff, 1})
		return p
	}
	c1 := stalledClient(t, s.addr, partial(1000))
	defer c1.Close()
	waitFor(t, 10*time.Second, "1000 charged", func() bool { return b.Used() == 1000 })
	c2 := stalledClient(t, s.addr, partial(1000))
	defer c2.Close()
	waitFor(t, 10*time.Second, "2000 charged", func() bool { return b.Used() == 2000 })
	c3 := stalledClient(t, s.addr, partial(1500))
	readUntilClosed(t, c3)
	c3.Close()
	if st := s.b.Stats(); st.OverBudget != 1 || st.OverCap != 0 || b.Used() != 2000 {
		t.Errorf("stats %+v, budget %d: want 1 over budget, 2000 still charged", st, b.Used())
	}
	// More bytes on a held connection are charged as they come.
	if _, err := c1.Write(make([]byte, 500)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "2500 charged", func() bool { return b.Used() == 2500 })
	c1.Close()
	c2.Close()
	s.checkNoLeak(t)
	if st := s.b.Stats(); st.Failed != 2 {
		t.Errorf("stats %+v, want the two that went away mid-hello counted as failed", st)
	}
}

// The charge follows the bytes: a waiting connection is charged its hello, a
// worker that has consumed it leaves nothing charged while it waits for the
// client, and a completed handshake leaves nothing charged by the bridge.
func TestChargeFollowsBytes(t *testing.T) {
	s := startServer(t, Config{Workers: 1, HandshakeTimeout: time.Minute}, nil)
	hello := clientHello(t)
	running := stalledClient(t, s.addr, hello)
	defer running.Close()
	waitFor(t, 10*time.Second, "hello consumed by the worker", func() bool {
		st := s.b.Stats()
		return st.InFlight == 1 && st.Waiting == 0 && s.budget.Used() == 0
	})
	waiting := stalledClient(t, s.addr, hello)
	waitFor(t, 10*time.Second, "waiting hello charged", func() bool {
		u := s.budget.Used()
		return s.b.Stats().Waiting == 1 && u >= int64(len(hello)) && u <= int64(len(hello))+64
	})
	waiting.Close() // leaves the wait list, its charge released
	waitFor(t, 10*time.Second, "wait list empty, nothing charged", func() bool {
		st := s.b.Stats()
		return st.Waiting == 0 && st.InFlight == 1 && s.budget.Used() == 0
	})
	running.Close()
	waitFor(t, 10*time.Second, "worker free", func() bool { return s.b.Stats().InFlight == 0 })

	c, err := dialTLS(s.addr, clientConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c, []byte("after the hand-over")); err != nil {
		t.Fatal(err)
	}
	if u := s.budget.Used(); u != 0 {
		t.Errorf("budget %d after the hand-over, want 0 (the server charges from there)", u)
	}
	c.Close()
	s.checkNoLeak(t)
	if st := s.b.Stats(); st.Failed != 2 || st.Handshakes != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A crowd arriving at once with few workers: every handshake completes, none
// is refused, each client needs one connection. The wait list, not a bounded
// queue, holds them.
func TestHandshakeCrowd(t *testing.T) {
	n := 2000
	if raceEnabled || testing.Short() {
		n = 500
	}
	s := startServer(t, Config{Workers: 8, HandshakeTimeout: 2 * time.Minute}, nil)
	cfg := clientConfig(0)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &net.Dialer{Timeout: 30 * time.Second}
			raw, err := d.Dial("tcp", s.addr)
			if err != nil {
				errs <- err
				return
			}
			defer raw.Close()
			c := tlsClient(raw, cfg, 90*time.Second)
			if err := c.Handshake(); err != nil {
				errs <- err
				return
			}
			if err := roundTrip(c, []byte{byte('a' + i%26)}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d handshakes through 8 workers in %v", n, time.Since(start).Round(time.Millisecond))
	s.checkNoLeak(t)
	st := s.b.Stats()
	if st.Handshakes != int64(n) || s.opened.Load() != int64(n) ||
		st.Rejected+st.Failed+st.TimedOut+st.OverCap+st.OverBudget != 0 {
		t.Errorf("stats %+v, %d connections opened: want %d handshakes on %d connections, none refused", st, s.opened.Load(), n, n)
	}
}

// The sweeper aborts handshakes while the loop processes them (first bytes,
// hello pieces, submission) and workers run them: run under -race, this is
// the test for the fields they share (Conn.mu, hs).
func TestSweeperAgainstProcess(t *testing.T) {
	const n, parallel = 200, 20
	s := startServer(t, Config{Workers: 2, HandshakeTimeout: 10 * time.Millisecond}, nil)
	hello := clientHello(t)
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if i%2 == 0 {
				_, _ = c.Write(hello) // submitted at once: aborted on the wait list or a worker
			} else {
				_, _ = choppy{c}.Write(hello) // aborted while its hello arrives
			}
			_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Error("server did not close the connection")
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	s.checkNoLeak(t)
	if st := s.b.Stats(); st.TimedOut+st.Failed != n || st.Handshakes != 0 {
		t.Errorf("stats %+v, want %d timed out (or failed)", st, n)
	}
}
