// Package server is upsink's HTTP front end: a gnet event handler that routes
// requests, enforces limits and budgets, and drives every connection as a small
// resumable machine (head, body, commit, drain) whose state lives in a conn.Slot.
// It never runs a goroutine per connection: a connection suspends while it waits
// for bytes or for its commit and resumes on the event loop when they arrive.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"upsink/accesslog"
	"upsink/durable"
	"upsink/metrics"
	"upsink/schema"
	"upsink/store"
	"upsink/tlsbridge"
)

// Config are the server's limits and its store. Zero values take the defaults.
type Config struct {
	Listen        string           // host:port, default 127.0.0.1:8080
	TLSListen     string           // host:port for HTTPS; empty = no HTTPS
	TLS           tlsbridge.Config // certificate and handshake limits, with TLSListen
	MaxBody       int64            // largest accepted body, default 1 MiB
	MaxInflight   int64            // global budget for bodies being received or committed, default 32 MiB
	DisableHTTP2  bool             // speak HTTP/1.1 only: no "h2" by ALPN, no h2c preface
	HeaderTimeout time.Duration    // a request head must be complete within this, default 10 s
	IdleTimeout   time.Duration    // idle keep-alive and stalled bodies, default 30 s
	DrainTimeout  time.Duration    // lingering close after an error answer, default 2 s
	RetryAfter    time.Duration    // Retry-After on 503, default 1 s
	Loops         int              // event loops, default DefaultLoops()
	// MaxConns caps open connections. It never exceeds RLIMIT_NOFILE minus
	// a reserve (fdReserve) for the database, logs, certificates and the
	// reactor itself, so accept never runs out of fds; by default it is
	// also at most ConnMemory / connCost. At the cap the longest-idle
	// keep-alive connection is closed to admit a new one.
	MaxConns int
	// ConnMemory is the memory the connections' fixed costs may take (the
	// bytes they hold are in MaxInflight): it bounds the default MaxConns
	// to ConnMemory / connCost. Default 128 MiB; negative: no such bound.
	ConnMemory int64
	// MinBodyRate is the least average rate, in bytes/s, a body must keep
	// once BodyRateGrace has passed (Apache mod_reqtimeout's MinRate), or
	// the client gets 408 and a close. Default 1 KiB/s; negative: none.
	MinBodyRate   int64
	BodyRateGrace time.Duration // default 5 s
	// SocketRecvBuffer and SocketSendBuffer set SO_RCVBUF and SO_SNDBUF of
	// accepted sockets (kernel memory, invisible in RSS); 0 keeps the
	// kernel's autotuned defaults.
	SocketRecvBuffer int
	SocketSendBuffer int
	Store            store.Config        // the DSN and batching; OnDone is set by the server
	Spool            durable.SpoolConfig // where uploads go while MariaDB cannot take them; empty Dir: nowhere (503)
	Logger           *slog.Logger
	// AccessLog, when set, gets one line per answer (the caller opens and
	// closes it).
	AccessLog *accesslog.Log
	// Metrics, when set, gets the server's metrics (store batch
	// histograms included) for the admin listener's /metrics.
	Metrics *metrics.Set
	// Tables are the tables of structured ingest (POST /ingest/{table},
	// issue 9) as declared in the --config file, already valid
	// (schema.Validate); nil: none. Read-only once handed over.
	Tables []schema.Table

	fdLimit int // RLIMIT_NOFILE: the slab is indexed by fd up to it
}

// fdReserve is how many fds below RLIMIT_NOFILE are kept out of the
// connection cap: the store's connections, the spool, logs, certificate
// reloads, and per event loop its epoll fd, eventfd and listeners.
func fdReserve(loops int) int { return 64 + 8*loops }

// DefaultLoops is the number of event loops when Config.Loops is 0: half
// the CPUs Go may use (GOMAXPROCS), at least one. upsink is built to share
// its machine with its database, which spends about as much CPU per row as
// a loop spends per upload, and the handshake workers, the store's writers
// and the GC run beside the loops. Measured on 2 CPUs (BENCHMARKS.md,
// "Event loops"): one loop instead of two lands 8-20 % more uploads/s at
// 512 and 2,000 connections and the same at 8 and 64, with 30-40 % less
// CPU per upload (fewer wake-ups across threads).
func DefaultLoops() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// connCost is what one open connection costs whatever it does, in user and
// kernel memory: the slot and gnet's connection (578 B idle, measured in
// BENCHMARKS.md) or, with HTTPS, an idle TLS connection (6,500 B), plus the
// kernel's socket, inode, file, dentry and epoll entry (3.7 KiB from
// /proc/slabinfo's object sizes). What a connection holds beyond that is
// charged to the budget (user) or bounded by the socket buffers (kernel).
func connCost(tls bool) int64 {
	const kernel = 3712
	if tls {
		return 6656 + kernel
	}
	return 640 + kernel
}

func (c *Config) setDefaults() error {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("server: listen address %q: %w", c.Listen, err)
	}
	if c.TLSListen != "" {
		_, tp, err := net.SplitHostPort(c.TLSListen)
		if err != nil {
			return fmt.Errorf("server: TLS listen address %q: %w", c.TLSListen, err)
		}
		if _, p, _ := net.SplitHostPort(c.Listen); p == tp {
			return fmt.Errorf("server: HTTP and HTTPS listen on the same port %s", p)
		}
		if c.TLS.Certificate == nil {
			return fmt.Errorf("server: TLS listen address %s without a certificate", c.TLSListen)
		}
	}
	if c.MaxBody == 0 {
		c.MaxBody = 1 << 20
	}
	if c.MaxBody < 0 || c.MaxBody > 1<<31 {
		return fmt.Errorf("server: max body %d out of range (0, 2 GiB]", c.MaxBody)
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 32 << 20
	}
	if c.MaxInflight < c.MaxBody {
		return fmt.Errorf("server: max inflight %d is below max body %d", c.MaxInflight, c.MaxBody)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HeaderTimeout, 10*time.Second)
	def(&c.IdleTimeout, 30*time.Second)
	def(&c.DrainTimeout, 2*time.Second)
	def(&c.RetryAfter, time.Second)
	def(&c.BodyRateGrace, 5*time.Second)
	if c.MinBodyRate == 0 {
		c.MinBodyRate = 1 << 10
	}
	if c.SocketRecvBuffer < 0 || c.SocketSendBuffer < 0 {
		return fmt.Errorf("server: negative socket buffer size")
	}
	if c.fdLimit <= 0 {
		// Go raises the soft limit to the hard one at start-up.
		var rl unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > 0 && rl.Cur < 1<<24 {
			c.fdLimit = int(rl.Cur)
		} else {
			c.fdLimit = 1 << 16
		}
	}
	if c.Loops <= 0 {
		c.Loops = DefaultLoops()
	}
	limit := max(1, c.fdLimit-fdReserve(c.Loops))
	if c.ConnMemory == 0 {
		c.ConnMemory = 128 << 20
	}
	if c.MaxConns <= 0 && c.ConnMemory > 0 {
		c.MaxConns = int(max(1, c.ConnMemory/connCost(c.TLSListen != "")))
	}
	if c.MaxConns <= 0 || c.MaxConns > limit {
		c.MaxConns = limit
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Store.QueueLen <= 0 {
		// An HTTP/1.1 connection has at most one upload submitted at a
		// time, an HTTP/2 one up to 100, each charged at least metaMax to
		// the budget; a queue with a slot per connection plus one per
		// metaMax of the budget never fills: uploads are refused by the
		// byte budget, never by a short queue (8 B a slot).
		c.Store.QueueLen = c.MaxConns + c.budgetRecords()
	}
	return nil
}

// budgetRecords is how many uploads the budget can hold at once beyond one
// per connection (HTTP/2 streams): each is charged at least metaMax.
func (c *Config) budgetRecords() int { return int(min(c.MaxInflight/metaMax, 1<<22)) }

// Server is one upsink HTTP server and its store.
type Server struct {
	cfg    Config
	h      *handler
	st     *durable.Sink
	booted chan struct{}
	eng    atomic.Pointer[gnet.Engine]
	once   sync.Once
}

// New validates cfg and opens the store. The database need not be reachable:
// the store connects in the background and /readyz reports it.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, booted: make(chan struct{})}
	s.h = newHandler(&s.cfg, s)
	s.h.alog = cfg.AccessLog
	if cfg.TLSListen != "" {
		if cfg.TLS.Logger == nil {
			cfg.TLS.Logger = cfg.Logger
		}
		cfg.TLS.Budget = s.h.budget // the bridge charges bytes before the hand-over to the same budget
		cfg.TLS.HTTP2 = !cfg.DisableHTTP2
		if cfg.TLS.MaxAfterFlight == 0 {
			// A client may pipeline one whole upload after its Finished.
			cfg.TLS.MaxAfterFlight = int(cfg.MaxBody) + maxPipelined
		}
		b, err := tlsbridge.New(cfg.TLS)
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		_, tp, _ := net.SplitHostPort(cfg.TLSListen)
		s.h.tlsPort, _ = strconv.Atoi(tp)
		s.h.bridge = b
	}
	if cfg.Store.Logger == nil {
		cfg.Store.Logger = cfg.Logger
	}
	// The declared tables: the store and the spool's replay get pointers
	// into s.cfg.Tables, and so do the handler's routes.
	tables := make([]*schema.Table, len(s.cfg.Tables))
	s.h.tables = make(map[string]*schema.Table, len(tables))
	for i := range s.cfg.Tables {
		t := &s.cfg.Tables[i]
		tables[i] = t
		s.h.tables[t.Name] = t
	}
	cfg.Store.Tables = tables
	cfg.Store.Observe = observeBatches(cfg.Metrics)
	reqs := &s.h.reqs
	st, err := durable.Open(durable.Config{
		Store:  cfg.Store,
		Spool:  cfg.Spool,
		Upload: func(tag uint64) *durable.Upload { return &reqs.at(uint32(tag)).up },
		OnDone: s.h.onDone,
		Logger: cfg.Logger,
	})
	if err != nil {
		if s.h.bridge != nil {
			s.h.bridge.Close()
		}
		return nil, fmt.Errorf("server: %w", err)
	}
	s.st = st
	s.h.st = st
	if cfg.Metrics != nil {
		s.registerMetrics(cfg.Metrics)
	}
	return s, nil
}

// Serve listens and serves until Shutdown. It returns the listen error, if any.
func (s *Server) Serve() error {
	addrs := []string{"tcp://" + s.cfg.Listen}
	if s.cfg.TLSListen != "" {
		addrs = append(addrs, "tcp://"+s.cfg.TLSListen)
	}
	// SO_REUSEPORT gives every event loop its own listener, so a loop
	// accepts one connection per readiness event and calls OnOpen at once:
	// the connection cap is checked before the next accept, never after a
	// burst (with one shared acceptor gnet drains the whole backlog first,
	// and EMFILE in accept is fatal to gnet's engine).
	err := gnet.Rotate(s.h, addrs,
		gnet.WithNumEventLoop(s.cfg.Loops),
		gnet.WithReusePort(true),
		gnet.WithTicker(true),
		gnet.WithReuseAddr(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithSocketRecvBuffer(s.cfg.SocketRecvBuffer),
		gnet.WithSocketSendBuffer(s.cfg.SocketSendBuffer),
		gnet.WithLogger(gnetLogger{s.cfg.Logger}),
	)
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) && errno == unix.EADDRINUSE {
			return fmt.Errorf("listen %s: address already in use", strings.Join(addrs, ", "))
		}
		return fmt.Errorf("listen %s: %w", strings.Join(addrs, ", "), err)
	}
	return nil
}

// Booted is closed once the server accepts connections.
func (s *Server) Booted() <-chan struct{} { return s.booted }

// Store returns the server's store (for stats).
func (s *Server) Store() *store.Store { return s.st.Store() }

// Sink returns the server's durable sink: the store and the spool.
func (s *Server) Sink() *durable.Sink { return s.st }

// Shutdown stops the server gracefully: new connections are closed at once,
// idle keep-alive connections are closed, a request head that completes on
// an open connection is answered 503 with Connection: close, and every upload
// already read is carried to its answer (201, or 503 as the store decides).
// Once no request is left, or ctx ends, the engine stops (closing whatever
// is still open), then the store finishes what it was handed and closes.
// Shutdown returns ErrRequestsLeft (wrapped) if ctx ended with requests still
// unanswered.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		if e := s.eng.Load(); e != nil {
			err = s.h.drain(ctx)
			stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if e2 := e.Stop(stopCtx); e2 != nil && err == nil {
				err = fmt.Errorf("server: stop engine: %w", e2)
			}
			cancel()
		}
		if e2 := s.st.Close(); e2 != nil && err == nil {
			err = fmt.Errorf("server: close store: %w", e2)
		}
		if s.h.bridge != nil {
			s.h.bridge.Close()
		}
	})
	return err
}

// SetCertificate replaces the TLS certificate for new handshakes; connections
// already established keep theirs. A no-op without HTTPS.
func (s *Server) SetCertificate(c *tls.Certificate) {
	if s.h.bridge != nil {
		s.h.bridge.SetCertificate(c)
	}
}

// TLSStats returns the TLS bridge's counters (zero without HTTPS).
func (s *Server) TLSStats() tlsbridge.Stats {
	if s.h.bridge == nil {
		return tlsbridge.Stats{}
	}
	return s.h.bridge.Stats()
}

// Stats are counters for tests, logs and benchmarks.
type Stats struct {
	Conns         int64 // open connections
	Requests      int64 // requests answered
	InflightBytes int64 // bytes charged to the in-flight budget
	Records       int64 // request records in use
	SlabPages     int   // slab pages allocated
	MaxConns      int   // the connection cap
	Evicted       int64 // idle keep-alive connections closed to admit new ones at the cap
	Refused       int64 // new connections closed at once: at the cap with none idle, or while shutting down
	SlowBodies    int64 // bodies answered 408 for falling below the minimum rate
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	h := s.h
	return Stats{
		Conns:         h.nconns.Load(),
		Requests:      h.nreqs.Load(),
		InflightBytes: h.budget.Used(),
		Records:       h.reqs.inUse(),
		SlabPages:     h.slab.Allocated(),
		MaxConns:      h.cfg.MaxConns,
		Evicted:       h.evicted.Load(),
		Refused:       h.refused.Load(),
		SlowBodies:    h.slowBodies.Load(),
	}
}

// gnetLogger sends gnet's own logs to slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error("gnet: fatal: " + fmt.Sprintf(f, a...)) }
