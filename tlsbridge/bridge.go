// Package tlsbridge terminates TLS on gnet connections with the standard
// library's crypto/tls: each handshake runs on a goroutine of a small bounded
// pool over an in-memory transport fed from the event loop; after it, records
// are decrypted and encrypted on the event loop, fed to crypto/tls at most one
// record at a time so an idle connection holds a few KiB.
//
// # Handshakes: the wait list and the pool
//
// A connection is submitted once its first record (the ClientHello) is
// complete; a client that sends half a hello and stalls costs its buffered
// bytes, never a worker. Submitted connections wait in a wait list linked
// through their Conn (no channel, no goroutine, no bound on its length: only
// the budget below and the handshake timeout limit it), served oldest first
// until its oldest has been open for a tenth of the handshake timeout, then
// newest first, so that a client arriving behind a backlog is not made to
// wait it out (popLocked). At most
// Config.Workers goroutines take connections from it, started on demand, and
// of those at most Config.Computing run crypto at once; a worker waiting for
// its client gives its computing slot back. The tls.Conn is created when a
// worker takes the connection, so a connection on the wait list costs its
// Conn struct and its ClientHello bytes. The handshake timeout (one sweeper
// goroutine, one list in deadline order) closes connections wherever they
// are: waiting for their hello, on the wait list, or on a worker.
//
// # Bytes held before the hand-over: capped and charged
//
// Until its handshake is handed over to the event loop, the ciphertext a
// connection holds - what gnet buffers for it plus the inbox handed to its
// worker - is capped (beyond the cap the connection is closed and counted in
// Stats.OverCap) and charged to Config.Budget's Hold tier while
// it is held (if the budget refuses, the connection is closed and counted in
// Stats.OverBudget). The charge follows the bytes: it grows when bytes arrive
// (loop) and shrinks when the worker consumes them, and is released exactly
// once - at the hand-over, when the handshake fails, times out or is aborted,
// or on Release. The cap is maxEarly (64 KiB) until the server's handshake
// flight has gone out: a client has nothing to send before it but its hello,
// so a ClientHello followed by records is cut off there. From then on it is
// Config.MaxAfterFlight: a TLS 1.3 client sends its Finished and its request
// (a whole upload body) at once, and they may arrive before the worker has
// processed the Finished. Handshakes continuing with the client's flight take
// their CPU slot from a set of their own (see compute), so that window stays
// short however many handshakes are starting.
//
// From the hand-over on (Process first reports ready) the bridge charges
// nothing: the server owns the accounting of what the connection holds, which
// is the plaintext (Conn.InboundBuffered) and the ciphertext not yet
// decrypted (Conn.CiphertextBuffered: gnet's buffer plus handshake leftovers
// the bridge still holds, e.g. application data the client pipelined after its
// Finished).
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

	"upsink/budget"
)

// Config configures a Bridge. Zero values take the defaults.
type Config struct {
	Certificate      *tls.Certificate // served until SetCertificate replaces it; required
	HandshakeTimeout time.Duration    // from Open to a finished handshake, default 10 s
	Workers          int              // handshakes in progress at once (goroutines, started on demand, most waiting for the client), default 256; the rest wait on the wait list
	Computing        int              // of those, how many may run crypto at once, default 2*GOMAXPROCS
	// Budget is charged (Hold tier) for the ciphertext each connection holds
	// until its handshake is handed over to the loop. Nil: the bridge uses
	// its own, effectively unlimited (the per-connection caps still apply).
	Budget *budget.Budget
	// MaxAfterFlight caps the ciphertext a connection may hold once the
	// server's handshake flight has gone out and until the hand-over: a TLS
	// 1.3 client sends its Finished and its request (a whole upload body)
	// at once, and they may arrive before the worker has processed the
	// Finished. Before the server's flight the cap is 64 KiB (a client has
	// nothing to send but its hello). Default 1 MiB + 64 KiB.
	MaxAfterFlight int
	// HTTP2 offers "h2" by ALPN before "http/1.1"; the server speaks
	// HTTP/2 on the connections that choose it (H2).
	HTTP2  bool
	Logger *slog.Logger // default: discard
}

// Stats are cumulative counters, except InFlight.
type Stats struct {
	Handshakes  int64 // completed handshakes
	Resumed     int64 // of those, resumed from a session ticket
	Failed      int64 // handshakes that failed: bad ClientHello, alert, client gone mid-handshake
	Rejected    int64 // connections closed because the bridge was closed (Close) before their handshake finished
	TimedOut    int64 // connections closed by the handshake timeout
	PlainHTTP   int64 // plain HTTP requests answered with 400 and closed
	OverCap     int64 // connections closed for holding more ciphertext before their hand-over than the cap (64 KiB before the server's flight, MaxAfterFlight after it)
	OverBudget  int64 // connections closed because the budget's Hold tier refused their ciphertext before their hand-over
	NewestFirst int64 // handshakes a worker took from the wait list newest first: its oldest had been open past HandshakeTimeout/10 (see popLocked)
	InFlight    int64 // handshakes on the wait list or on a worker now
	Waiting     int64 // of those, on the wait list (no worker yet)
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
	budget    *budget.Budget
	tlsConfig *tls.Config
	cert      atomic.Pointer[tls.Certificate]

	cpu       chan struct{} // Computing slots for handshakes starting
	cpuCont   chan struct{} // Computing slots for handshakes continuing with the client's next flight
	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	epoch     time.Time
	skew      atomic.Int64 // tests only: added to now(), to expire handshakes without waiting

	// The wait list: submitted handshakes no worker has taken yet, oldest
	// first, linked through Conn.waiting (O(1) removal when one times out
	// or goes away). Guarded by qmu, as are workers and closing.
	qmu     sync.Mutex
	wait    connList
	workers int  // worker goroutines running (at most cfg.Workers)
	closing bool // Close has begun: nothing is submitted, workers exit

	// Handshakes not yet finished, oldest first. All share one timeout, so
	// the list is ordered by deadline and one sweeper serves them all.
	pmu     sync.Mutex
	pending connList // linked through Conn.pending

	keys [][32]byte // housekeeping goroutine only

	handshakes, resumed, failed, rejected, timedOut, plainHTTP, overCap, overBudget, newestFirst, inFlight, waiting atomic.Int64

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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Budget == nil {
		cfg.Budget = budget.New(1 << 62)
	}
	if cfg.MaxAfterFlight < maxEarly {
		cfg.MaxAfterFlight = 1<<20 + maxEarly
	}
	b := &Bridge{
		cfg:     cfg,
		log:     cfg.Logger,
		budget:  cfg.Budget,
		cpu:     make(chan struct{}, cfg.Computing),
		cpuCont: make(chan struct{}, cfg.Computing),
		stop:    make(chan struct{}),
		epoch:   time.Now(),
	}
	b.pending.link = func(c *Conn) *connLink { return &c.pending }
	b.wait.link = func(c *Conn) *connLink { return &c.waiting }
	b.cert.Store(cfg.Certificate)
	protos := []string{"http/1.1"}
	if cfg.HTTP2 {
		protos = []string{"h2", "http/1.1"}
	}
	b.tlsConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: protos,
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
		Handshakes:  b.handshakes.Load(),
		Resumed:     b.resumed.Load(),
		Failed:      b.failed.Load(),
		Rejected:    b.rejected.Load(),
		TimedOut:    b.timedOut.Load(),
		PlainHTTP:   b.plainHTTP.Load(),
		OverCap:     b.overCap.Load(),
		OverBudget:  b.overBudget.Load(),
		NewestFirst: b.newestFirst.Load(),
		InFlight:    b.inFlight.Load(),
		Waiting:     b.waiting.Load(),
	}
}

// Close stops the workers and the timers. Handshakes still waiting, running
// or not yet submitted are abandoned and their connections closed (counted in
// Rejected); established connections keep working. Idempotent.
func (b *Bridge) Close() {
	b.closeOnce.Do(func() {
		b.qmu.Lock()
		b.closing = true // no submission and no new worker from here on
		b.qmu.Unlock()
		close(b.stop) // running handshakes fail, workers exit
		b.wg.Wait()
		for {
			b.qmu.Lock()
			c := b.popLocked()
			b.qmu.Unlock()
			if c == nil {
				break
			}
			b.inFlight.Add(-1)
			b.unlist(c)
			b.abort(c, &b.rejected)
		}
		b.pmu.Lock()
		var all []*Conn
		for c := b.pending.head; c != nil; c = c.pending.next {
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
// in ctr if it was still pending, takes it off the wait list, unblocks its
// worker, releases its charge, closes the connection. False: the handshake
// was decided already and nothing was done.
func (b *Bridge) abort(c *Conn, ctr *atomic.Int64) bool {
	if !c.hs.CompareAndSwap(hsPending, hsAborted) {
		return false
	}
	ctr.Add(1)
	b.dequeue(c)
	c.closeInbox()
	_ = c.gc.CloseWithCallback(nil)
	return true
}

func (b *Bridge) now() int64 { return int64(time.Since(b.epoch)) + b.skew.Load() }

// list appends c to the pending list with its deadline.
func (b *Bridge) list(c *Conn) {
	c.deadline = b.now() + int64(b.cfg.HandshakeTimeout)
	b.pmu.Lock()
	c.listed = true
	b.pending.push(c)
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
	b.pending.remove(c)
	c.listed = false
}

// sweep closes connections whose handshake deadline has passed.
func (b *Bridge) sweep() {
	now := b.now()
	var expired []*Conn
	b.pmu.Lock()
	for c := b.pending.head; c != nil && c.deadline <= now && len(expired) < 4096; c = b.pending.head {
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

// submit puts c's handshake on the wait list and starts a worker if fewer
// than Workers run (loop). False: the bridge is closed (c was aborted and
// counted in Rejected) and c must be closed. Never refused for lack of room:
// what a waiting connection holds is capped and charged (see the package doc).
func (b *Bridge) submit(c *Conn) bool {
	b.qmu.Lock()
	if b.closing {
		b.qmu.Unlock()
		b.unlist(c)
		b.abort(c, &b.rejected)
		return false
	}
	c.queued = true
	b.wait.push(c)
	b.waiting.Add(1)
	b.inFlight.Add(1)
	start := b.workers < b.cfg.Workers
	if start {
		b.workers++
		b.wg.Add(1) // under qmu, before Close can set closing and Wait
	}
	b.qmu.Unlock()
	if start {
		go b.worker()
	}
	return true
}

// popLocked takes the next connection off the wait list (qmu held): the
// oldest, unless the oldest has been open for longer than a tenth of the
// handshake timeout (lifoDiv). Then the list holds more than the workers get
// through in that time, a crowd (10,000 hellos at once) or a machine too
// slow for its load, and serving it in order would make every newcomer wait
// out the whole backlog: a client that gives up after a few seconds would
// never be served. So the newest goes first. It can still finish in time.
// The oldest wait for a lull or their deadline, as every one of them would
// in order.
func (b *Bridge) popLocked() *Conn {
	c := b.wait.head
	if c == nil {
		return nil
	}
	// c.deadline was written at Open, before submit pushed c under qmu.
	opened := c.deadline - int64(b.cfg.HandshakeTimeout)
	if b.now()-opened > int64(b.cfg.HandshakeTimeout/lifoDiv) {
		c = b.wait.tail
		b.newestFirst.Add(1)
	}
	b.unqueueLocked(c)
	return c
}

// lifoDiv: the wait list is served newest first once its oldest connection
// has been open for HandshakeTimeout/lifoDiv (1 s by default).
const lifoDiv = 10

func (b *Bridge) unqueueLocked(c *Conn) {
	b.wait.remove(c)
	c.queued = false
	b.waiting.Add(-1)
}

// dequeue takes c off the wait list if it is still there (any goroutine): its
// handshake will not run.
func (b *Bridge) dequeue(c *Conn) {
	b.qmu.Lock()
	if c.queued {
		b.unqueueLocked(c)
		b.inFlight.Add(-1)
	}
	b.qmu.Unlock()
}

// worker runs handshakes from the wait list one after the other and exits
// when it is empty (or the bridge closes): an idle server has no worker. Its
// wake channel is lent to the connection it serves (Conn.wakeup), so a
// connection costs no channel of its own.
func (b *Bridge) worker() {
	defer b.wg.Done()
	wake := make(chan struct{}, 1)
	for {
		b.qmu.Lock()
		var c *Conn
		if !b.closing {
			c = b.popLocked()
		}
		if c == nil {
			b.workers--
			b.qmu.Unlock()
			return
		}
		b.qmu.Unlock()
		b.handshake(c, wake)
	}
}

// compute takes one of the Computing slots: a handshake holds one while
// crypto/tls works and gives it back while it waits for the client, so clients
// that stall mid-handshake cost a parked goroutine, not a CPU slot. A
// handshake continuing with the client's next flight (cont) takes its slot
// from a second set of Computing slots: it never waits behind a crowd of
// handshakes starting, so a client that has sent its Finished is handed over
// (and its pipelined request decrypted on the loop) without queueing behind
// newcomers. CPU-bound work stays bounded by 2×Computing. It reports false
// when the bridge is closing.
func (b *Bridge) compute(cont bool) (chan struct{}, bool) {
	slots := b.cpu
	if cont {
		slots = b.cpuCont
	}
	select {
	case slots <- struct{}{}:
		return slots, true
	case <-b.stop:
		return nil, false
	}
}

// handshake runs on a worker. It creates the tls.Conn (so a connection on the
// wait list has none) and publishes it through hs: the loop reads tc.tls only
// after it has seen hsDone. The outcome reaches the loop through Conn.Wake,
// queued after every handshake write (AsyncWrite), so the loop sees them sent
// before it writes anything itself.
func (b *Bridge) handshake(c *Conn, wake chan struct{}) {
	defer b.inFlight.Add(-1)
	if c.hs.Load() != hsPending {
		return // decided while it waited (only an abort does that, and it dequeues)
	}
	select {
	case <-wake: // a stale signal from the previous connection
	default:
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.wakeup = wake
	c.mu.Unlock()
	c.landed = c.onLanded
	tc := tls.Server((*wire)(c), b.tlsConfig)
	c.tls = tc
	var err error
	if slots, ok := b.compute(false); ok {
		c.cpuSlot = slots
		err = tc.Handshake()
		c.releaseCPU()
	} else {
		err = net.ErrClosed
	}
	c.landed = nil
	done := false
	if err == nil {
		cs := tc.ConnectionState()
		resumed := cs.DidResume
		c.h2 = cs.NegotiatedProtocol == "h2"
		if c.hs.CompareAndSwap(hsPending, hsDone) {
			done = true
			b.handshakes.Add(1)
			if resumed {
				b.resumed.Add(1)
			}
		}
	} else if c.hs.CompareAndSwap(hsPending, hsFailed) {
		b.failed.Add(1)
		b.log.Debug("tls handshake failed", "remote", c.gc.RemoteAddr(), "err", err)
	}
	if !done {
		c.tls = nil // never published: the loop reads tls only after hsDone
	}
	c.mu.Lock()
	c.wakeup = nil // wake leaves with this worker
	if !done {
		c.closed, c.inbox = true, nil
		c.settleLocked()
	}
	c.mu.Unlock()
	_ = c.gc.Wake(nil)
}

// Open starts the TLS side of a new connection (loop, OnOpen). The handshake
// timeout runs from now.
func (b *Bridge) Open(c gnet.Conn) *Conn {
	tc := &Conn{b: b, gc: c}
	b.list(tc)
	return tc
}
