package bench

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// runKind runs the attack r.cfg.Kind; it returns once every connection it
// opened is closed (by the end of the attack at the latest).
func runKind(r *attackRun) {
	switch r.cfg.Kind {
	case "slowloris":
		r.slow(false)
	case "slowbody":
		r.slow(true)
	case "slowread":
		r.slowread()
	case "fdflood":
		r.fdflood()
	case "tlsearly":
		r.tlsearly()
	case "storm":
		r.storm()
	case "headerflood":
		r.flood(false)
	case "trailerflood":
		r.flood(true)
	case "fuzz":
		r.fuzz()
	case "push":
		r.push()
	case "external":
		<-r.stop
	default:
		if isH2Kind(r.cfg.Kind) {
			r.runH2() // attack_h2.go
		}
	}
}

// opened sends first on a connection just dialled (err: the dial's) and
// counts it as a request; nil, with the connection closed, if either failed.
func (r *attackRun) opened(c *attackConn, err error, first []byte) *attackConn {
	if err != nil {
		return nil
	}
	if !r.send(c, first) {
		c.Close()
		return nil
	}
	r.ctr.requests.Add(1)
	return c
}

// dial connects (TCP, then the TLS handshake for https://) within the
// attack's time.
func (r *attackRun) dial(setup func(fd uintptr)) (*attackConn, error) {
	c, err := r.dialTCP(setup)
	if err != nil || r.tls == nil {
		return c, err
	}
	tc := tls.Client(c.Conn, r.tls)
	_ = tc.SetDeadline(minTime(r.end, time.Now().Add(10*time.Second)))
	if err := tc.Handshake(); err != nil {
		r.ctr.hsFail.Add(1)
		r.fail(fmt.Errorf("tls: %w", err))
		c.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	r.ctr.hs.Add(1)
	c.Conn = tc
	return c, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// send writes b within 10 s (and before the end of the attack); false if
// it could not (the server closed the connection, or it stopped reading).
func (r *attackRun) send(c *attackConn, b []byte) bool {
	_ = c.SetWriteDeadline(minTime(r.end, time.Now().Add(10*time.Second)))
	if _, err := c.Write(b); err != nil {
		c.serverClosed(err)
		if !errors.Is(err, os.ErrDeadlineExceeded) && !c.gone.Load() && !r.stopped() {
			r.fail(fmt.Errorf("write: %w", err))
		}
		return false
	}
	return true
}

// watched starts c.watch and returns a channel closed when it returns.
func watched(c *attackConn, discard bool) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.watch(discard)
	}()
	return done
}

// slow: slowloris (a request head that never ends, a few bytes every
// Interval) or slowbody (a whole head declaring Declare bytes of body, then a
// few body bytes every Interval). Each connection lasts until the server
// closes it or the attack ends.
func (r *attackRun) slow(body bool) {
	cfg := r.cfg
	var head []byte
	head = fmt.Appendf(head, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: upsink-bench-attack\r\n", r.t.path, r.t.host)
	if body {
		head = fmt.Appendf(head, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", cfg.Declare)
	}
	piece := func(k int) []byte {
		if body {
			return bytes.Repeat([]byte{'x'}, cfg.Trickle)
		}
		// One more header field, Trickle bytes long with its CRLF.
		f := fmt.Appendf(nil, "X-%d:", k)
		for len(f) < cfg.Trickle-2 {
			f = append(f, 'a')
		}
		return append(f, "\r\n"...)
	}
	r.each(cfg.Conns, cfg.Parallel, func(int) *attackConn {
		c, err := r.dial(nil)
		return r.opened(c, err, head)
	}, func(_ int, c *attackConn) {
		done := watched(c, false)
		for k := 0; r.sleep(cfg.Interval) && !c.gone.Load(); k++ {
			if !r.send(c, piece(k)) {
				break
			}
		}
		c.Close()
		<-done
	})
}

// slowread: each connection pipelines small valid requests (uploads of 16
// bytes, or GET /healthz) as fast as the server takes them and never reads
// an answer; its receive buffer is RcvBuf. Count requests per connection at
// most.
func (r *attackRun) slowread() {
	cfg := r.cfg
	var req []byte
	if cfg.ReqKind == "healthz" {
		req = fmt.Appendf(nil, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", r.t.host)
	} else {
		req = fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 16\r\n\r\nslow-reader-0123", r.t.path, r.t.host)
	}
	chunk := bytes.Repeat(req, 64)
	setRcvBuf := func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, cfg.RcvBuf)
	}
	limit := cfg.Count * int64(len(req))
	r.each(cfg.Conns, cfg.Parallel, func(int) *attackConn {
		c, err := r.dial(setRcvBuf)
		if err != nil {
			return nil
		}
		return c
	}, func(_ int, c *attackConn) {
		var sent int64
		for off := 0; sent < limit && !r.stopped(); {
			n := min(len(chunk)-off, int(limit-sent))
			_ = c.SetWriteDeadline(minTime(r.end, time.Now().Add(time.Second)))
			w, err := c.Write(chunk[off : off+n])
			sent += int64(w)
			off = (off + w) % len(chunk)
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				c.serverClosed(err)
				break
			}
		}
		r.ctr.requests.Add(sent / int64(len(req)))
		// Hold what was sent (and the answers we never read) until the end.
		if !c.gone.Load() {
			<-r.stop
		}
		c.Close()
	})
}

// fdflood: Conns connections as fast as Parallel dialers go, each doing one
// upload (Body bytes) and then held idle until the end.
func (r *attackRun) fdflood() {
	cfg := r.cfg
	rb := newReqBuilder(r.t, "application/octet-stream", makeFiller(cfg.Body), true, false, 0)
	req := append([]byte(nil), rb.build(cfg.Body)...)
	r.each(cfg.Conns, cfg.Parallel, func(int) *attackConn {
		c, err := r.dial(nil)
		if c = r.opened(c, err, req); c == nil {
			return nil
		}
		_ = c.SetReadDeadline(minTime(r.end, time.Now().Add(10*time.Second)))
		resp, err := newRespReader(c.Conn).read()
		_ = c.SetReadDeadline(time.Time{})
		if err != nil {
			c.serverClosed(err)
			r.answer("no answer")
			c.Close()
			return nil
		}
		r.answer(strconv.Itoa(resp.status))
		return c
	}, func(_ int, c *attackConn) {
		done := watched(c, true)
		select {
		case <-r.stop:
		case <-done:
		}
		c.Close()
		<-done
	})
}

// tlsearly: Stalled connections send the first half of a ClientHello and
// stall (holding handshake workers), then Conns connections send a whole
// ClientHello followed by Junk bytes of TLS records, as fast as the server
// takes them; all are held until the end.
func (r *attackRun) tlsearly() {
	cfg := r.cfg
	hello, err := clientHello(r.t.server)
	if err != nil {
		r.fail(err)
		return
	}
	junk := make([]byte, 0, cfg.Junk+5)
	for int64(len(junk)) < cfg.Junk {
		n := int(min(16384, cfg.Junk-int64(len(junk))))
		junk = append(junk, 23, 3, 3, byte(n>>8), byte(n))
		junk = append(junk, bytes.Repeat([]byte{0x5a}, n)...)
	}
	hold := func(_ int, c *attackConn) {
		done := watched(c, true)
		select {
		case <-r.stop:
		case <-done:
		}
		c.Close()
		<-done
	}
	var wg sync.WaitGroup
	stalledUp := make(chan struct{})
	var tried atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.each(cfg.Stalled, cfg.Parallel, func(int) *attackConn {
			defer func() {
				if tried.Add(1) == int64(cfg.Stalled) {
					close(stalledUp)
				}
			}()
			c, err := r.dialTCP(nil)
			return r.opened(c, err, hello[:len(hello)/2])
		}, hold)
	}()
	if cfg.Stalled > 0 {
		select {
		case <-stalledUp:
		case <-r.stop:
		}
	}
	r.each(cfg.Conns, cfg.Parallel, func(int) *attackConn {
		c, err := r.dialTCP(nil)
		return r.opened(c, err, hello)
	}, func(i int, c *attackConn) {
		done := watched(c, true)
		_ = c.SetWriteDeadline(r.end)
		if _, err := c.Write(junk); err != nil {
			c.serverClosed(err)
		}
		select {
		case <-r.stop:
		case <-done:
		}
		c.Close()
		<-done
	})
	wg.Wait()
}

// storm: Conns TLS clients start at once; each connects, handshakes, uploads
// Body bytes once and closes; a failed handshake is retried on a new
// connection at most Retries times.
func (r *attackRun) storm() {
	cfg := r.cfg
	rb := newReqBuilder(r.t, "application/octet-stream", makeFiller(cfg.Body), false, false, 0)
	req := append([]byte(nil), rb.build(cfg.Body)...)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for try := 0; try <= cfg.Retries && !r.stopped(); try++ {
				c, err := r.dial(nil)
				if err != nil {
					continue
				}
				_ = c.SetDeadline(minTime(r.end, time.Now().Add(30*time.Second)))
				if !r.send(c, req) {
					c.Close()
					return
				}
				r.ctr.requests.Add(1)
				resp, err := newRespReader(c.Conn).read()
				c.Close()
				if err != nil {
					r.answer("no answer")
					r.fail(fmt.Errorf("read: %w", err))
					return
				}
				r.answer(strconv.Itoa(resp.status))
				if resp.status == 201 {
					r.ctr.completed.Add(1)
				}
				return
			}
		}()
	}
	close(start)
	wg.Wait()
}

// flood: headerflood (a request head of HeadBytes of header fields) or
// trailerflood (a chunked body whose trailer section is HeadBytes of
// fields), on Conns connections, each a new request on a new connection
// as soon as the last one was answered or closed.
func (r *attackRun) flood(trailer bool) {
	cfg := r.cfg
	var head, tail []byte
	if trailer {
		head = fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", r.t.path, r.t.host)
		tail = []byte("\r\n")
	} else {
		head = fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n", r.t.path, r.t.host)
		tail = []byte("\r\nhello")
	}
	// 64 KiB of fields of ~1 KiB each, written batch after batch.
	var batch []byte
	for k := 0; len(batch) < 64<<10; k++ {
		batch = fmt.Appendf(batch, "X-Flood-%d: %s\r\n", k, bytes.Repeat([]byte{'f'}, 1000))
	}
	var wg sync.WaitGroup
	for range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !r.stopped() {
				c, err := r.dial(nil)
				if err != nil {
					if !r.sleep(100 * time.Millisecond) {
						return
					}
					continue
				}
				done := watched(c, false)
				ok := r.send(c, head)
				for sent := int64(0); ok && sent < cfg.HeadBytes && !c.gone.Load(); sent += int64(len(batch)) {
					ok = r.send(c, batch)
				}
				if ok {
					ok = r.send(c, tail)
				}
				if ok {
					r.ctr.requests.Add(1)
				}
				select { // the answer (and the server's close), 5 s at most
				case <-done:
				case <-r.stop:
				case <-time.After(5 * time.Second):
				}
				c.Close()
				<-done
			}
		}()
	}
	wg.Wait()
}

// push: Conns keep-alive connections uploading Body-byte bodies as fast as
// they are answered (the load generator, as the attacker).
func (r *attackRun) push() {
	cfg := r.cfg
	lr, err := Load(LoadConfig{URL: cfg.URL, Conns: min(cfg.Conns, MaxConns), Duration: max(time.Until(r.end), time.Second),
		BodySize: max(cfg.Body, markerLen), Insecure: cfg.Insecure, CACert: cfg.CACert})
	if err != nil {
		r.fail(err)
		return
	}
	c := &r.ctr
	c.opened.Add(lr.Connects)
	c.maxOpen.Store(int64(min(cfg.Conns, MaxConns)))
	c.requests.Add(lr.Responses + lr.Unanswered)
	c.bytes.Add(lr.BodyTotal)
	c.errs.Add(lr.Errors)
	c.mu.Lock()
	for k, v := range lr.Status {
		c.answers[k] += v
	}
	if lr.Unanswered > 0 {
		c.answers["no answer"] += lr.Unanswered
	}
	c.samples = append(c.samples, lr.ErrorSamples...)
	c.mu.Unlock()
}

// fuzz: Count requests at most, over Conns connections: valid requests and
// mutations of them (flipped, inserted, deleted bytes, truncation, absurd
// and conflicting lengths, bad chunking, long tokens, bad field syntax,
// garbage, pipelined batches). Each answer is counted by status; "no
// answer" when none came within FuzzWait, "closed" when the server closed
// instead of answering.
func (r *attackRun) fuzz() {
	cfg := r.cfg
	var issued atomic.Int64
	var wg sync.WaitGroup
	for w := range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := newFuzzer(r.t, rand.New(rand.NewPCG(cfg.Seed, uint64(w))))
			rr := newRespReader(nil)
			var c *attackConn
			drop := func() {
				if c != nil {
					c.Close()
					c = nil
				}
			}
			defer drop()
			for !r.stopped() && issued.Add(1) <= cfg.Count {
				req, n, halfClose := g.next()
				if c == nil {
					var err error
					if c, err = r.dial(nil); err != nil {
						if !r.sleep(50 * time.Millisecond) {
							return
						}
						continue
					}
					rr.reset(c.Conn)
				}
				_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Write(req); err != nil {
					r.answer("write failed")
					drop()
					continue
				}
				r.ctr.requests.Add(1)
				if halfClose {
					if tc, ok := c.Conn.(*net.TCPConn); ok {
						_ = tc.CloseWrite()
					}
				}
				_ = c.SetReadDeadline(time.Now().Add(cfg.FuzzWait))
				for range n {
					resp, err := rr.read()
					switch {
					case err == nil:
						r.answer(strconv.Itoa(resp.status))
						if !resp.close && !halfClose {
							continue
						}
					case errors.Is(err, os.ErrDeadlineExceeded):
						r.answer("no answer")
					case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
						r.answer("closed")
					default:
						r.answer("bad answer")
						r.fail(err)
					}
					drop()
					break
				}
				if halfClose {
					drop()
				}
			}
		}()
	}
	wg.Wait()
}

// fuzzer makes requests: valid ones, and mutations of them.
type fuzzer struct {
	rng   *rand.Rand
	seeds [][]byte
}

func newFuzzer(t target, rng *rand.Rand) *fuzzer {
	h := t.host
	p := t.path
	seeds := [][]byte{
		fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\r\n0123456789abcdef0123456789abcdef", p, h),
		fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n", p, h),
		fmt.Appendf(nil, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", h),
		fmt.Appendf(nil, "GET /readyz HTTP/1.1\r\nHost: %s\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n", h),
		fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nabcd", p, h),
		fmt.Appendf(nil, "POST %s HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", p),
	}
	return &fuzzer{rng: rng, seeds: seeds}
}

var fuzzLengths = []string{"99999999999999999999", "-1", "0x10", "1 2", "", "+5", "18446744073709551616", "1048577", "4294967296", "00000000000000000000000032", "3.0"}
var fuzzChunks = []string{"fffffffffffffffff", "zz", "-5", "5;" + string(bytes.Repeat([]byte{'e'}, 5000)), "0x5", "5 ", "ffffffff", "100000"}

// next returns a request, how many answers it may get, and whether to
// half-close the connection after it (a mutation the server may wait on).
func (f *fuzzer) next() ([]byte, int, bool) {
	rng := f.rng
	seed := f.seeds[rng.IntN(len(f.seeds))]
	b := append([]byte(nil), seed...)
	mut := rng.IntN(20)
	switch mut {
	case 0, 1, 2: // valid
		return b, 1, false
	case 3: // flip bytes
		for range 1 + rng.IntN(8) {
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		}
	case 4: // insert random bytes
		i := rng.IntN(len(b))
		ins := make([]byte, 1+rng.IntN(32))
		for j := range ins {
			ins[j] = byte(rng.UintN(256))
		}
		b = append(b[:i], append(ins, b[i:]...)...)
	case 5: // delete a span
		i := rng.IntN(len(b))
		j := min(len(b), i+1+rng.IntN(16))
		b = append(b[:i], b[j:]...)
	case 6: // truncate
		b = b[:rng.IntN(len(b))]
	case 7: // absurd Content-Length
		b = fmt.Appendf(nil, "POST /upload/fuzz HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\nabc", fuzzLengths[rng.IntN(len(fuzzLengths))])
	case 8: // conflicting framing
		if rng.IntN(2) == 0 {
			b = []byte("POST /upload/fuzz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
		} else {
			b = []byte("POST /upload/fuzz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
		}
	case 9: // bad chunking
		b = fmt.Appendf(nil, "POST /upload/fuzz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\nhello\r\n0\r\n\r\n", fuzzChunks[rng.IntN(len(fuzzChunks))])
	case 10: // long tokens
		long := bytes.Repeat([]byte{'a'}, 1000+rng.IntN(20000))
		switch rng.IntN(3) {
		case 0:
			b = fmt.Appendf(nil, "GET /%s HTTP/1.1\r\nHost: x\r\n\r\n", long)
		case 1:
			b = fmt.Appendf(nil, "%s /healthz HTTP/1.1\r\nHost: x\r\n\r\n", long)
		default:
			b = fmt.Appendf(nil, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: %s\r\n\r\n", long)
		}
	case 11: // bad field syntax
		bad := []string{"X Bad: 1", "X-\x01: 1", "X-Fold: a\r\n  b", " X-Lead: 1", "X-Colon : 1", ": empty", "X-Nul: a\x00b"}
		b = fmt.Appendf(nil, "GET /healthz HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n", bad[rng.IntN(len(bad))])
	case 12: // garbage
		b = make([]byte, 1+rng.IntN(512))
		for j := range b {
			b[j] = byte(rng.UintN(256))
		}
	case 13: // versions and methods
		v := []string{"HTTP/2.0", "HTTP/1.10", "HTTP/0.9", "HTTP/1.1 ", "http/1.1", "HTTP/1.1\x00"}
		m := []string{"GET", "PUT", "DELETE", "CONNECT", "PRI", "get", "G\x7fT"}
		b = fmt.Appendf(nil, "%s /upload/fuzz %s\r\nHost: x\r\nContent-Length: 0\r\n\r\n", m[rng.IntN(len(m))], v[rng.IntN(len(v))])
	case 14: // pipelining: 2-4 valid or mutated requests in one write
		n := 2 + rng.IntN(3)
		b = b[:0]
		for range n {
			b = append(b, f.seeds[rng.IntN(len(f.seeds))]...)
		}
		return b, n, false
	case 15: // transfer codings
		te := []string{"gzip", "chunked, chunked", "identity", "chunked;x", "Chunked", "\tchunked"}
		b = fmt.Appendf(nil, "POST /upload/fuzz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: %s\r\n\r\n3\r\nabc\r\n0\r\n\r\n", te[rng.IntN(len(te))])
	case 16: // many fields
		b = []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")
		for k := range 90 + rng.IntN(30) {
			b = fmt.Appendf(b, "X-%d: v\r\n", k)
		}
		b = append(b, "\r\n"...)
	case 17: // bare LF
		b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	case 18: // a huge chunk announced, little sent
		b = []byte("POST /upload/fuzz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\nabc")
	case 19: // Expect variants
		e := []string{"100-continue", "200-ok", "100-Continue", ""}
		b = fmt.Appendf(nil, "POST /upload/fuzz HTTP/1.1\r\nHost: x\r\nExpect: %s\r\nContent-Length: 2\r\n\r\nhi", e[rng.IntN(len(e))])
	}
	// A mutation may leave the server waiting for more bytes: half of them
	// are followed by a half-close, so the server sees the end at once.
	return b, 1, rng.IntN(2) == 0
}
