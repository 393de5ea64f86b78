// Package tlsbridge terminates TLS on gnet connections with the standard
// library's crypto/tls: each handshake runs on a goroutine of a small bounded
// pool over an in-memory transport fed from the event loop; after it, records
// are decrypted and encrypted on the event loop, fed to crypto/tls at most one
// record at a time so an idle connection holds a few KiB.
package tlsbridge

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// Config configures a Bridge. Zero values take the defaults.
type Config struct {
	Certificate      *tls.Certificate // served until SetCertificate replaces it; required
	HandshakeTimeout time.Duration    // from Open to a finished handshake, default 10 s
	Workers          int              // handshakes in progress at once (goroutines, started on demand, most waiting for the client), default 256
	Computing        int              // of those, how many may run crypto at once, default 2*GOMAXPROCS
	QueueLen         int              // handshakes waiting for a worker, default 1024
	Logger           *slog.Logger     // default: discard
}

// Stats are cumulative counters, except InFlight.
type Stats struct {
	Handshakes int64 // completed handshakes
	Resumed    int64 // of those, resumed from a session ticket
	Failed     int64 // handshakes that failed: bad ClientHello, alert, client gone mid-handshake
	Rejected   int64 // connections closed because the handshake queue was full (or the bridge closed)
	TimedOut   int64 // connections closed by the handshake timeout
	PlainHTTP  int64 // plain HTTP requests answered with 400 and closed
	InFlight   int64 // handshakes queued or running now
}

// Session ticket keys: a new one every ticketRotate, the newest ticketKeysKept
// accepted (tickets are issued with the newest).
const ticketKeysKept = 4

var ticketRotate = time.Hour // a var for tests

// Bridge is one server's TLS side: the handshake pool, the ticket keys, the
// certificate. Its methods are safe for concurrent use.
type Bridge struct {
	cfg       Config
	log       *slog.Logger
	tlsConfig *tls.Config
	cert      atomic.Pointer[tls.Certificate]

	queue     chan *Conn
	cpu       chan struct{} // Computing slots
	workers   atomic.Int32  // worker goroutines running
	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	epoch     time.Time

	// Handshakes not yet finished, oldest first. All share one timeout, so
	// the list is ordered by deadline and one sweeper serves them all.
	pmu          sync.Mutex
	phead, ptail *Conn

	keys [][32]byte // housekeeping goroutine only

	handshakes, resumed, failed, rejected, timedOut, plainHTTP, inFlight atomic.Int64

	unlimitedFeed bool // tests only: hand crypto/tls everything buffered, not one record at a time
	noHelloSplit  bool // tests only: pass a large ClientHello record on whole
}

var errNoCertificate = errors.New("tlsbridge: no certificate configured")

// New starts a Bridge: its handshake workers and its housekeeping goroutine
// (timeouts, ticket key rotation). Close stops them.
func New(cfg Config) (*Bridge, error) {
	if cfg.Certificate == nil {
		return nil, errNoCertificate
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 256
	}
	if cfg.Computing <= 0 {
		cfg.Computing = 2 * runtime.GOMAXPROCS(0)
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{
		cfg:   cfg,
		log:   cfg.Logger,
		queue: make(chan *Conn, cfg.QueueLen),
		cpu:   make(chan struct{}, cfg.Computing),
		stop:  make(chan struct{}),
		epoch: time.Now(),
	}
	b.cert.Store(cfg.Certificate)
	b.tlsConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := b.cert.Load(); c != nil {
				return c, nil
			}
			return nil, errNoCertificate
		},
		CurvePreferences: curvePreferences,
	}
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, err
	}
	b.keys = [][32]byte{k}
	b.tlsConfig.SetSessionTicketKeys(b.keys)

	b.wg.Add(1)
	go b.housekeeping()
	return b, nil
}

// curvePreferences nil keeps Go's default: X25519MLKEM768 when the client
// offers it, else the client's key share, else X25519, P-256, ... Measured
// (TestIdleMemory, 2,000 idle connections): what an idle connection keeps is
// decided by the client's ClientHello (c.hand keeps its capacity), not by the
// group the server picks. Browsers and Go send X25519MLKEM768 and X25519
// shares, so neither choice causes a HelloRetryRequest, and restricting the
// server to X25519 saved nothing measurable (5968 vs 6021 B/conn) while giving
// up post-quantum key exchange. The memory is won by feeding instead: see
// takeHello and frame.
var curvePreferences []tls.CurveID

// SetCertificate swaps the certificate for new handshakes; established
// connections are unaffected. Nil is ignored.
func (b *Bridge) SetCertificate(c *tls.Certificate) {
	if c != nil {
		b.cert.Store(c)
	}
}

// Stats returns a snapshot of the counters.
func (b *Bridge) Stats() Stats {
	return Stats{
		Handshakes: b.handshakes.Load(),
		Resumed:    b.resumed.Load(),
		Failed:     b.failed.Load(),
		Rejected:   b.rejected.Load(),
		TimedOut:   b.timedOut.Load(),
		PlainHTTP:  b.plainHTTP.Load(),
		InFlight:   b.inFlight.Load(),
	}
}

// Close stops the workers and the timers. Handshakes still queued or running
// are abandoned and their connections closed; established connections keep
// working. Idempotent.
func (b *Bridge) Close() {
	b.closeOnce.Do(func() {
		close(b.stop)
		b.wg.Wait()
		for drained := false; !drained; {
			select {
			case c := <-b.queue:
				b.inFlight.Add(-1)
				b.unlist(c)
				b.abort(c, &b.rejected)
			default:
				drained = true
			}
		}
		b.pmu.Lock()
		var all []*Conn
		for c := b.phead; c != nil; c = c.pnext {
			all = append(all, c)
		}
		b.pmu.Unlock()
		for _, c := range all {
			b.unlist(c)
			b.abort(c, &b.rejected)
		}
	})
}

// abort ends a handshake that has not finished, from any goroutine: counts it
// in ctr if it was still pending, unblocks its worker, closes the connection.
func (b *Bridge) abort(c *Conn, ctr *atomic.Int64) {
	if !c.hs.CompareAndSwap(hsPending, hsAborted) {
		return
	}
	ctr.Add(1)
	c.closeInbox()
	_ = c.gc.CloseWithCallback(nil)
}

func (b *Bridge) now() int64 { return int64(time.Since(b.epoch)) }

// list appends c to the pending list with its deadline.
func (b *Bridge) list(c *Conn) {
	c.deadline = b.now() + int64(b.cfg.HandshakeTimeout)
	b.pmu.Lock()
	c.listed = true
	c.pprev = b.ptail
	if b.ptail != nil {
		b.ptail.pnext = c
	} else {
		b.phead = c
	}
	b.ptail = c
	b.pmu.Unlock()
}

// unlist removes c from the pending list if it is there.
func (b *Bridge) unlist(c *Conn) {
	b.pmu.Lock()
	if c.listed {
		b.unlistLocked(c)
	}
	b.pmu.Unlock()
}

func (b *Bridge) unlistLocked(c *Conn) {
	if c.pprev != nil {
		c.pprev.pnext = c.pnext
	} else {
		b.phead = c.pnext
	}
	if c.pnext != nil {
		c.pnext.pprev = c.pprev
	} else {
		b.ptail = c.pprev
	}
	c.pprev, c.pnext, c.listed = nil, nil, false
}

// sweep closes connections whose handshake deadline has passed.
func (b *Bridge) sweep() {
	now := b.now()
	var expired []*Conn
	b.pmu.Lock()
	for c := b.phead; c != nil && c.deadline <= now && len(expired) < 4096; c = b.phead {
		b.unlistLocked(c)
		expired = append(expired, c)
	}
	b.pmu.Unlock()
	for _, c := range expired {
		b.abort(c, &b.timedOut)
	}
	if len(expired) > 0 {
		b.log.Debug("tls handshakes timed out", "count", len(expired))
	}
}

func (b *Bridge) housekeeping() {
	defer b.wg.Done()
	period := min(max(b.cfg.HandshakeTimeout/10, 5*time.Millisecond), 500*time.Millisecond)
	sweep := time.NewTicker(period)
	defer sweep.Stop()
	rotate := time.NewTicker(ticketRotate)
	defer rotate.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-sweep.C:
			b.sweep()
		case <-rotate.C:
			b.rotateTicketKeys()
		}
	}
}

func (b *Bridge) rotateTicketKeys() {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		b.log.Warn("tls ticket key rotation failed", "err", err)
		return
	}
	keys := make([][32]byte, 0, ticketKeysKept)
	keys = append(keys, k)
	keys = append(keys, b.keys[:min(len(b.keys), ticketKeysKept-1)]...)
	b.keys = keys
	b.tlsConfig.SetSessionTicketKeys(keys)
	b.log.Debug("tls session ticket keys rotated", "kept", len(keys))
}

// submit queues c's handshake (loop). False: the queue is full or the bridge
// closed, and c must be closed.
func (b *Bridge) submit(c *Conn) bool {
	select {
	case <-b.stop:
		b.abort(c, &b.rejected)
		return false
	default:
	}
	b.inFlight.Add(1)
	if b.startWorker(c) {
		return true
	}
	select {
	case b.queue <- c:
		b.spawn() // every worker may have exited since we looked
		return true
	default:
		b.inFlight.Add(-1)
		b.unlist(c)
		if c.hs.CompareAndSwap(hsPending, hsAborted) {
			b.rejected.Add(1)
		}
		return false
	}
}

// startWorker starts a worker goroutine for first (nil: for the queue) if
// fewer than Workers run, and reports whether it did. Workers exist only
// while there are handshakes: an idle server has none.
func (b *Bridge) startWorker(first *Conn) bool {
	for {
		n := b.workers.Load()
		if n >= int32(b.cfg.Workers) {
			return false
		}
		if b.workers.CompareAndSwap(n, n+1) {
			b.wg.Add(1)
			go b.worker(first)
			return true
		}
	}
}

// spawn starts a worker if handshakes are queued and fewer than Workers run.
func (b *Bridge) spawn() {
	if len(b.queue) > 0 {
		b.startWorker(nil)
	}
}

// worker runs first (if any), then queued handshakes one after the other, and
// exits when the queue is empty.
func (b *Bridge) worker(first *Conn) {
	defer b.wg.Done()
	if first != nil {
		b.handshake(first)
	}
	for {
		select {
		case <-b.stop:
			b.workers.Add(-1)
			return
		case c := <-b.queue:
			b.handshake(c)
		default:
			b.workers.Add(-1)
			b.spawn() // a handshake queued between our last look and the decrement
			return
		}
	}
}

// compute takes one of the Computing slots: a handshake holds one while
// crypto/tls works and gives it back while it waits for the client, so clients
// that stall mid-handshake cost a parked goroutine, not a CPU slot. It reports
// false when the bridge is closing.
func (b *Bridge) compute() bool {
	select {
	case b.cpu <- struct{}{}:
		return true
	case <-b.stop:
		return false
	}
}

func (b *Bridge) uncompute() { <-b.cpu }

// handshake runs on a worker. The outcome reaches the loop through Conn.Wake,
// queued after every handshake write (AsyncWrite), so the loop sees them sent
// before it writes anything itself.
func (b *Bridge) handshake(c *Conn) {
	defer b.inFlight.Add(-1)
	if c.hs.Load() != hsPending {
		return // timed out or closed while queued
	}
	tc := c.tls
	var err error
	if b.compute() {
		c.hasCPU = true
		err = tc.Handshake()
		c.releaseCPU()
	} else {
		err = net.ErrClosed
	}
	if err == nil {
		resumed := tc.ConnectionState().DidResume
		if c.hs.CompareAndSwap(hsPending, hsDone) {
			b.handshakes.Add(1)
			if resumed {
				b.resumed.Add(1)
			}
		}
	} else if c.hs.CompareAndSwap(hsPending, hsFailed) {
		b.failed.Add(1)
		b.log.Debug("tls handshake failed", "remote", c.raddr, "err", err)
	}
	_ = c.gc.Wake(nil)
}

// Open starts the TLS side of a new connection (loop, OnOpen). The handshake
// timeout runs from now.
func (b *Bridge) Open(c gnet.Conn) *Conn {
	tc := &Conn{b: b, gc: c, laddr: c.LocalAddr(), raddr: c.RemoteAddr()}
	b.list(tc)
	return tc
}
