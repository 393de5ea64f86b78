package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// AttackKinds are the attacks `upsink-bench attack KIND` runs; "external"
// runs none of its own (only the polite prober and the sampling) while
// another tool, such as slowhttptest, attacks.
var AttackKinds = []string{"slowloris", "slowbody", "slowread", "fdflood", "tlsearly", "storm", "headerflood", "trailerflood", "fuzz", "push",
	"h2rapidreset", "h2madeyoureset", "h2continuation", "h2ping", "h2settings", "h2emptydata", "h2hpackbomb", "external"}

// Hard bounds of an attack run.
const (
	MaxAttackConns    = 100_000
	MaxAttackDuration = 10 * time.Minute
	MaxFuzzRequests   = 100_000_000
	maxPoliteInFlight = 256 // probes waiting for an answer at once; more count as errors
)

// AttackConfig is one bounded attack on a running server, with a polite
// client uploading beside it and the server's memory, fds and kernel socket
// memory sampled meanwhile.
type AttackConfig struct {
	Kind      string
	URL       string        // the attack's target: http(s)://127.0.0.1:PORT/upload/STREAM
	PoliteURL string        // the prober's upload URL (default URL)
	Conns     int           // attacking connections (storm: clients)
	Count     int64         // fuzz: requests in all; slowread: requests per connection
	Duration  time.Duration // bound on the attack, from the first dial to the last close
	Settle    time.Duration // after the attack: keep probing and sampling this long
	Parallel  int           // concurrent dials while opening the connections
	Interval  time.Duration // slowloris, slowbody: time between two trickles
	Trickle   int           // slowloris, slowbody: bytes per trickle
	Declare   int64         // slowbody: the declared Content-Length
	Stalled   int           // tlsearly: connections that send half a ClientHello and stall
	Junk      int64         // tlsearly: bytes of records sent after the whole ClientHello
	HeadBytes int64         // headerflood, trailerflood: bytes of fields per request
	RcvBuf    int           // slowread: the client's SO_RCVBUF
	ReqKind   string        // slowread: "upload" (16-byte bodies) or "healthz"
	Body      int           // push: bytes per upload; fdflood: its one upload's body
	Retries   int           // storm: new connections after a failed handshake
	Seed      uint64        // fuzz: PRNG seed
	FuzzWait  time.Duration // fuzz: how long to wait for an answer
	Note      string        // recorded with the result (external: the other tool's command)

	PID   int           // the server's pid (0: no process sampling)
	Ports []int         // server ports whose sockets ss sums (default: those of URL and PoliteURL)
	Every time.Duration // sampling interval (default 250 ms)

	PoliteRate      float64       // uploads/s (default 20)
	PoliteKeepAlive bool          // reuse connections (default: a fresh one per upload)
	PoliteTimeout   time.Duration // an upload must be answered within this (default 5 s)
	PoliteBody      int           // bytes (default 1 KiB)

	Insecure bool   // https: do not verify the certificate
	CACert   string // https: trust this PEM certificate
	Command  string
}

// AttackResult is what an attack run saw.
type AttackResult struct {
	Command   string       `json:"command"`
	Kind      string       `json:"kind"`
	URL       string       `json:"url"`
	PoliteURL string       `json:"polite_url"`
	Conns     int          `json:"conns"`
	Count     int64        `json:"count,omitempty"`
	Note      string       `json:"note,omitempty"`
	Duration  float64      `json:"duration_s"`
	Elapsed   float64      `json:"elapsed_s"` // the attack, until its last connection closed
	Attack    AttackCounts `json:"attack"`
	Polite    PoliteResult `json:"polite"`
	Server    ServerWatch  `json:"server"`
	Kernel    KernelWatch  `json:"kernel"`
}

// AttackCounts is the attacker's side (what its connections saw).
type AttackCounts struct {
	Planned        int64            `json:"planned"`          // connections (storm: clients) the attack meant to open
	Opened         int64            `json:"opened"`           // TCP connections established
	DialErrors     int64            `json:"dial_errors"`      // connects that failed
	MaxOpen        int64            `json:"max_open"`         // attack connections open at once
	ClosedByServer int64            `json:"closed_by_server"` // closed by the server (EOF or reset) before the attack ended
	CloseP50       float64          `json:"close_p50_s,omitempty"`
	CloseMax       float64          `json:"close_max_s,omitempty"`
	Requests       int64            `json:"requests"`   // requests (or request heads) written whole
	BytesSent      int64            `json:"bytes_sent"` // everything written
	Answers        map[string]int64 `json:"answers"`    // statuses answered to the attack; "no answer", "closed" (fuzz)
	Handshakes     int64            `json:"handshakes,omitempty"`
	HandshakeFail  int64            `json:"handshake_failed,omitempty"`
	Completed      int64            `json:"completed,omitempty"` // storm: clients whose upload got 201
	Frames         int64            `json:"frames,omitempty"`    // HTTP/2 kinds: frames written whole (requests: streams opened)
	Ends           map[string]int64 `json:"ends,omitempty"`      // HTTP/2 kinds: how each connection ended ("GOAWAY ENHANCE_YOUR_CALM", "closed", ...)
	Errors         int64            `json:"errors"`
	ErrorSamples   []string         `json:"error_samples,omitempty"`
}

// PoliteResult is what the polite prober saw.
type PoliteResult struct {
	URL          string           `json:"url"`
	Rate         float64          `json:"rate"`
	KeepAlive    bool             `json:"keep_alive"`
	Sent         int64            `json:"sent"` // uploads attempted
	Created      int64            `json:"created"`
	Status       map[string]int64 `json:"status"`
	Errors       int64            `json:"errors"` // no answer: dial, handshake, write, read or timeout
	ErrorSamples []string         `json:"error_samples,omitempty"`
	CreatedPct   float64          `json:"created_pct"` // 100 * created / sent
	P50ms        float64          `json:"p50_ms"`
	P99ms        float64          `json:"p99_ms"`
	MaxMs        float64          `json:"max_ms"`
}

// ServerWatch is the server process seen from /proc.
type ServerWatch struct {
	PID          int    `json:"pid,omitempty"`
	Alive        bool   `json:"alive"`         // the pid existed (and was no zombie) at the end
	HealthzAfter string `json:"healthz_after"` // "200", or why /healthz did not answer after the attack
	RSSStart     int64  `json:"rss_start"`
	RSSPeak      int64  `json:"rss_peak"`
	RSSEnd       int64  `json:"rss_end"`
	FDsStart     int    `json:"fds_start"`
	FDsPeak      int    `json:"fds_peak"`
	FDsEnd       int    `json:"fds_end"`
	Samples      int    `json:"samples"`
	Err          string `json:"err,omitempty"`
}

// KernelWatch is the kernel's socket memory: the whole machine's TCP memory
// (/proc/net/sockstat) and the sum of the server's own sockets (ss -tm).
type KernelWatch struct {
	Ports          []int   `json:"ports"`
	SockstatStart  int64   `json:"sockstat_tcp_start"`
	SockstatPeak   int64   `json:"sockstat_tcp_peak"`
	ServerPeak     int64   `json:"server_sockets_peak"` // highest rmem_alloc + wmem_queued + fwd_alloc of the server's sockets
	AtPeak         Skmem   `json:"server_sockets_at_peak"`
	SocketsPeak    int     `json:"server_sockets_count_peak"`
	UserKernelPeak int64   `json:"rss_plus_sockets_peak"` // highest server RSS + its sockets' memory in one sample
	Samples        int     `json:"samples"`
	SSMillis       float64 `json:"ss_ms_max,omitempty"` // the longest one ss took
	Err            string  `json:"err,omitempty"`
}

// attackRun is the state the attack kinds share.
type attackRun struct {
	cfg    *AttackConfig
	t      target
	tls    *tls.Config // nil for http://
	start  time.Time
	end    time.Time
	stop   chan struct{} // closed at end
	ctr    attackCtr
	closes closeTimes
	open   atomic.Int64
}

type attackCtr struct {
	opened, dialErr, maxOpen, closed, requests, bytes, hs, hsFail, completed, errs, frames atomic.Int64
	mu                                                                                     sync.Mutex
	answers                                                                                map[string]int64
	ends                                                                                   map[string]int64 // HTTP/2 kinds: connections by how they ended
	samples                                                                                []string
}

type closeTimes struct {
	mu sync.Mutex
	s  []float64
}

func (r *attackRun) stopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// sleep waits d or until the attack ends; false if it ended.
func (r *attackRun) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.stop:
		return false
	case <-t.C:
		return true
	}
}

func (r *attackRun) fail(err error) {
	r.ctr.errs.Add(1)
	r.ctr.mu.Lock()
	if len(r.ctr.samples) < 8 {
		m := err.Error()
		if !slices.Contains(r.ctr.samples, m) {
			r.ctr.samples = append(r.ctr.samples, m)
		}
	}
	r.ctr.mu.Unlock()
}

func (r *attackRun) answer(key string) {
	r.ctr.mu.Lock()
	r.ctr.answers[key]++
	r.ctr.mu.Unlock()
}

// ended counts a connection that ended as key says (HTTP/2 kinds).
func (r *attackRun) ended(key string) {
	r.ctr.mu.Lock()
	if r.ctr.ends == nil {
		r.ctr.ends = map[string]int64{}
	}
	r.ctr.ends[key]++
	r.ctr.mu.Unlock()
}

// dialTCP connects to the target within 5 s (and before the end), counting
// the connection; setup runs on the socket before connect (SO_RCVBUF).
func (r *attackRun) dialTCP(setup func(fd uintptr)) (*attackConn, error) {
	d := net.Dialer{Timeout: min(5*time.Second, max(time.Until(r.end), time.Millisecond))}
	if setup != nil {
		d.Control = func(_, _ string, c syscall.RawConn) error { return c.Control(setup) }
	}
	c, err := d.Dial("tcp", r.t.addr)
	if err != nil {
		r.ctr.dialErr.Add(1)
		r.fail(fmt.Errorf("dial: %w", err))
		return nil, err
	}
	r.ctr.opened.Add(1)
	maxAtomic(&r.ctr.maxOpen, r.open.Add(1))
	return &attackConn{Conn: c, r: r, t0: time.Now()}, nil
}

// attackConn is one attacking connection: it counts its bytes, and whether
// the server closed it before the attack ended.
type attackConn struct {
	net.Conn
	r      *attackRun
	t0     time.Time
	gone   atomic.Bool // the server closed it (counted once)
	closed atomic.Bool
}

func (c *attackConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.r.ctr.bytes.Add(int64(n))
	return n, err
}

// serverClosed records that a read or write saw the server end the
// connection (not our own close, not a deadline).
func (c *attackConn) serverClosed(err error) {
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) || c.closed.Load() || c.r.stopped() {
		return
	}
	if c.gone.CompareAndSwap(false, true) {
		c.r.ctr.closed.Add(1)
		c.r.closes.mu.Lock()
		c.r.closes.s = append(c.r.closes.s, time.Since(c.t0).Seconds())
		c.r.closes.mu.Unlock()
	}
}

func (c *attackConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.r.open.Add(-1)
	return c.Conn.Close()
}

// watch reads what the server sends until it closes the connection (or we
// do), counting the statuses of its answers; discard: just drain (TLS
// records, answers we do not parse). It returns when the connection ends.
func (c *attackConn) watch(discard bool) {
	if discard {
		buf := make([]byte, 4096)
		for {
			if _, err := c.Conn.Read(buf); err != nil {
				c.serverClosed(err)
				return
			}
		}
	}
	rr := newRespReader(c.Conn)
	for {
		resp, err := rr.read()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
				errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				c.serverClosed(err)
				return
			}
			c.r.fail(fmt.Errorf("read: %w", err))
			c.serverClosed(err)
			return
		}
		c.r.answer(strconv.Itoa(resp.status))
	}
}

// each opens n connections, at most par of them in open at once (open
// dials and sends what must go first; nil: it failed), then runs hold on
// each connection opened; it returns when every hold has returned. hold owns
// the connection and must return by the end of the attack.
func (r *attackRun) each(n, par int, open func(i int) *attackConn, hold func(i int, c *attackConn)) {
	sem := make(chan struct{}, max(par, 1))
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-r.stop:
		}
		if r.stopped() {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := open(i)
			<-sem
			if c != nil {
				hold(i, c)
			}
		}()
	}
	wg.Wait()
}

// prober uploads small bodies at a fixed rate, each wanting 201 within a
// timeout, and counts what it got.
type prober struct {
	t       target
	tls     *tls.Config
	req     []byte
	keep    bool
	timeout time.Duration
	pool    chan net.Conn // idle keep-alive connections

	inflight            atomic.Int64
	sent, created, errs atomic.Int64
	mu                  sync.Mutex
	status              map[string]int64
	samples             []string
	lat                 []time.Duration
	wg                  sync.WaitGroup
}

func newProber(rawURL string, tc *tls.Config, body int, keep bool, timeout time.Duration) (*prober, error) {
	t, err := parseTarget(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--polite-url: %w", err)
	}
	if t.tls && tc == nil {
		return nil, errors.New("--polite-url is https: need --cacert or --insecure")
	}
	if !t.tls {
		tc = nil
	}
	rb := newReqBuilder(t, "application/octet-stream", makeFiller(body), keep, false, 0)
	req := append([]byte(nil), rb.build(body)...)
	return &prober{t: t, tls: tc, req: req, keep: keep, timeout: timeout, pool: make(chan net.Conn, 32), status: map[string]int64{}}, nil
}

func (p *prober) failed(err error) {
	p.errs.Add(1)
	p.mu.Lock()
	if len(p.samples) < 8 {
		m := err.Error()
		if !slices.Contains(p.samples, m) {
			p.samples = append(p.samples, m)
		}
	}
	p.mu.Unlock()
}

// run sends rate uploads/s until stop is closed, then waits for the answers
// still due (each bounded by the timeout).
func (p *prober) run(rate float64, stop <-chan struct{}) {
	if rate <= 0 {
		return
	}
	every := time.Duration(float64(time.Second) / rate)
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		p.fire()
		select {
		case <-stop:
			p.wg.Wait()
			for {
				select {
				case c := <-p.pool:
					c.Close()
				default:
					return
				}
			}
		case <-tk.C:
		}
	}
}

func (p *prober) fire() {
	p.sent.Add(1)
	if p.inflight.Add(1) > maxPoliteInFlight {
		p.inflight.Add(-1)
		p.failed(fmt.Errorf("%d earlier uploads still unanswered", maxPoliteInFlight))
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.inflight.Add(-1)
		t0 := time.Now()
		st, err := p.once(t0.Add(p.timeout))
		if err != nil {
			p.failed(err)
			return
		}
		d := time.Since(t0)
		p.mu.Lock()
		p.status[strconv.Itoa(st)]++
		p.lat = append(p.lat, d)
		p.mu.Unlock()
		if st == 201 || st == 202 { // committed, or durable in the spool
			p.created.Add(1)
		}
	}()
}

// once does one upload, on a pooled connection (keep-alive) or a new one.
func (p *prober) once(deadline time.Time) (int, error) {
	var c net.Conn
	if p.keep {
		select {
		case c = <-p.pool:
		default:
		}
	}
	if c == nil {
		raw, err := net.DialTimeout("tcp", p.t.addr, time.Until(deadline))
		if err != nil {
			return 0, fmt.Errorf("dial: %w", err)
		}
		c = raw
		if p.tls != nil {
			tc := tls.Client(raw, p.tls)
			_ = tc.SetDeadline(deadline)
			if err := tc.Handshake(); err != nil {
				raw.Close()
				return 0, fmt.Errorf("tls: %w", err)
			}
			c = tc
		}
	}
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(p.req); err != nil {
		c.Close()
		return 0, fmt.Errorf("write: %w", err)
	}
	resp, err := newRespReader(c).read()
	if err != nil {
		c.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, fmt.Errorf("no answer within %s", p.timeout)
		}
		return 0, fmt.Errorf("read: %w", err)
	}
	if p.keep && !resp.close {
		select {
		case p.pool <- c:
			return resp.status, nil
		default:
		}
	}
	c.Close()
	return resp.status, nil
}

func (p *prober) result(rate float64, rawURL string) PoliteResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := PoliteResult{URL: rawURL, Rate: rate, KeepAlive: p.keep, Sent: p.sent.Load(), Created: p.created.Load(),
		Status: cloneCounts(p.status), Errors: p.errs.Load(), ErrorSamples: slices.Clone(p.samples)}
	if r.Sent > 0 {
		r.CreatedPct = 100 * float64(r.Created) / float64(r.Sent)
	}
	if n := len(p.lat); n > 0 {
		l := slices.Clone(p.lat)
		slices.Sort(l)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		r.P50ms, r.P99ms, r.MaxMs = ms(l[n/2]), ms(l[min(n-1, n*99/100)]), ms(l[n-1])
	}
	return r
}

func cloneCounts(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// monitor samples the server's RSS and fds, the machine's TCP memory and
// the server's sockets every interval.
type monitor struct {
	pid   int
	ports []int
	every time.Duration
	stop  chan struct{}
	done  chan struct{}
	srv   ServerWatch
	kern  KernelWatch
	ssOK  bool
}

func startMonitor(pid int, ports []int, every time.Duration) *monitor {
	m := &monitor{pid: pid, ports: ports, every: every, stop: make(chan struct{}), done: make(chan struct{}), ssOK: true}
	m.srv.PID = pid
	m.kern.Ports = ports
	if v, err := ReadTCPMem(); err == nil {
		m.kern.SockstatStart = v
	}
	if pid > 0 {
		if mem, err := ReadMem(pid); err == nil {
			m.srv.RSSStart = mem.RSS
		} else {
			m.srv.Err = err.Error()
		}
		m.srv.FDsStart, _ = CountFDs(pid)
	}
	go m.run()
	return m
}

func (m *monitor) run() {
	defer close(m.done)
	tk := time.NewTicker(m.every)
	defer tk.Stop()
	for n := 0; n < int(MaxAttackDuration/m.every)+100; n++ {
		m.sample()
		select {
		case <-m.stop:
			m.sample()
			return
		case <-tk.C:
		}
	}
	<-m.stop
}

func (m *monitor) sample() {
	var rss int64
	if m.pid > 0 {
		if mem, err := ReadMem(m.pid); err == nil {
			rss = mem.RSS
			m.srv.RSSPeak = max(m.srv.RSSPeak, rss)
			m.srv.RSSEnd = rss
			m.srv.Samples++
		} else if m.srv.Err == "" {
			m.srv.Err = err.Error()
		}
		if n, err := CountFDs(m.pid); err == nil {
			m.srv.FDsPeak = max(m.srv.FDsPeak, n)
			m.srv.FDsEnd = n
		}
	}
	if v, err := ReadTCPMem(); err == nil {
		m.kern.SockstatPeak = max(m.kern.SockstatPeak, v)
	}
	if m.ssOK && len(m.ports) > 0 {
		t0 := time.Now()
		s, err := ReadSkmem(m.ports)
		m.kern.SSMillis = max(m.kern.SSMillis, float64(time.Since(t0).Microseconds())/1000)
		if err != nil {
			m.ssOK = false // ss missing or failing: say so once, stop trying
			m.kern.Err = err.Error()
			return
		}
		m.kern.Samples++
		if s.Charged() > m.kern.ServerPeak {
			m.kern.ServerPeak, m.kern.AtPeak = s.Charged(), s
		}
		m.kern.SocketsPeak = max(m.kern.SocketsPeak, s.Sockets)
		m.kern.UserKernelPeak = max(m.kern.UserKernelPeak, rss+s.Charged())
	}
}

func (m *monitor) finish() (ServerWatch, KernelWatch) {
	close(m.stop)
	<-m.done
	return m.srv, m.kern
}

func portOf(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

func (cfg *AttackConfig) setDefaults() error {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if !slices.Contains(AttackKinds, cfg.Kind) {
		return fmt.Errorf("unknown attack %q (want one of %s)", cfg.Kind, strings.Join(AttackKinds, ", "))
	}
	if cfg.URL == "" {
		return errors.New("--url is required")
	}
	if cfg.PoliteURL == "" {
		cfg.PoliteURL = cfg.URL
	}
	def(&cfg.Conns, 100)
	defD(&cfg.Duration, 20*time.Second)
	defD(&cfg.Every, 250*time.Millisecond)
	defD(&cfg.Interval, 2*time.Second)
	defD(&cfg.PoliteTimeout, 5*time.Second)
	defD(&cfg.FuzzWait, 300*time.Millisecond)
	def(&cfg.Parallel, 64)
	def(&cfg.Trickle, 8)
	def(&cfg.RcvBuf, 4096)
	def(&cfg.PoliteBody, 1024)
	if cfg.PoliteRate == 0 {
		cfg.PoliteRate = 20
	}
	if cfg.Declare <= 0 {
		cfg.Declare = 1048193
	}
	if cfg.Junk <= 0 {
		cfg.Junk = 900 << 10
	}
	if cfg.HeadBytes <= 0 {
		cfg.HeadBytes = 1 << 20
	}
	if cfg.ReqKind == "" {
		cfg.ReqKind = "upload"
	}
	if cfg.Body <= 0 {
		cfg.Body = 1024
		if cfg.Kind == "push" {
			cfg.Body = 64 << 10
		}
	}
	switch {
	case cfg.Conns > MaxAttackConns || cfg.Stalled > MaxAttackConns:
		return fmt.Errorf("at most %d connections", MaxAttackConns)
	case cfg.Duration > MaxAttackDuration || cfg.Settle > time.Minute:
		return fmt.Errorf("-d is capped at %s and --settle at 1m", MaxAttackDuration)
	case cfg.Count < 0 || cfg.Count > MaxFuzzRequests:
		return fmt.Errorf("-n %d out of range [0, %d]", cfg.Count, MaxFuzzRequests)
	case cfg.PoliteRate < 0 || cfg.PoliteRate > 1000:
		return fmt.Errorf("--polite-rate %g out of range [0, 1000]", cfg.PoliteRate)
	case cfg.Junk > 64<<20 || cfg.HeadBytes > 64<<20 || cfg.Declare > 1<<40 || cfg.Body > 16<<20:
		return errors.New("--junk and --head-bytes are capped at 64 MiB, --body at 16 MiB")
	case cfg.ReqKind != "upload" && cfg.ReqKind != "healthz":
		return fmt.Errorf("--req %q: want upload or healthz", cfg.ReqKind)
	case cfg.Retries < 0 || cfg.Retries > 100:
		return fmt.Errorf("--retries %d out of range [0, 100]", cfg.Retries)
	}
	if cfg.Kind == "fuzz" && cfg.Count == 0 {
		cfg.Count = 1_000_000
	}
	if cfg.Kind == "slowread" && cfg.Count == 0 {
		cfg.Count = 2000
	}
	return nil
}

// Attack runs one attack: the polite prober and the sampling start first,
// the attack runs until its connections are all closed (by Duration at the
// latest), the prober and the sampling go on for Settle, then the server's
// liveness and /healthz are checked.
func Attack(cfg AttackConfig) (*AttackResult, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	t, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	var tc *tls.Config
	pt, err := parseTarget(cfg.PoliteURL)
	if err != nil {
		return nil, fmt.Errorf("--polite-url: %w", err)
	}
	if t.tls || pt.tls {
		name := t.server
		if !t.tls {
			name = pt.server
		}
		if tc, err = TLSConfig(name, cfg.Insecure, cfg.CACert); err != nil {
			return nil, err
		}
		tc.NextProtos = []string{"http/1.1"}
	}
	if (cfg.Kind == "tlsearly" || cfg.Kind == "storm") && !t.tls {
		return nil, fmt.Errorf("%s attacks the TLS port: --url must be https://", cfg.Kind)
	}
	if len(cfg.Ports) == 0 {
		for _, a := range []string{t.addr, pt.addr} {
			if p, err := portOf(a); err == nil && !slices.Contains(cfg.Ports, p) {
				cfg.Ports = append(cfg.Ports, p)
			}
		}
	}
	pr, err := newProber(cfg.PoliteURL, tc, cfg.PoliteBody, cfg.PoliteKeepAlive, cfg.PoliteTimeout)
	if err != nil {
		return nil, err
	}
	r := &attackRun{cfg: &cfg, t: t, stop: make(chan struct{})}
	if t.tls {
		r.tls = tc
		if isH2Kind(cfg.Kind) {
			r.tls = h2TLS(tc) // ALPN h2 for the attack; the prober and /healthz stay on HTTP/1.1
		}
	}
	r.ctr.answers = map[string]int64{}

	mon := startMonitor(cfg.PID, cfg.Ports, cfg.Every)
	probeStop := make(chan struct{})
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		pr.run(cfg.PoliteRate, probeStop)
	}()

	r.start = time.Now()
	r.end = r.start.Add(cfg.Duration)
	timer := time.AfterFunc(cfg.Duration, func() { close(r.stop) })
	runKind(r)
	elapsed := time.Since(r.start)
	// The prober runs for the whole Duration even when the attack ended
	// sooner (a storm that completed, a server that closed everything, or
	// died), so that every run probes for the same time.
	<-r.stop
	timer.Stop()
	if cfg.Settle > 0 {
		time.Sleep(cfg.Settle) // the server's state after the attack, still probed and sampled
	}
	close(probeStop)
	<-probeDone
	srv, kern := mon.finish()

	res := &AttackResult{Command: cfg.Command, Kind: cfg.Kind, URL: cfg.URL, PoliteURL: cfg.PoliteURL, Conns: cfg.Conns, Note: cfg.Note,
		Duration: cfg.Duration.Seconds(), Elapsed: elapsed.Seconds(), Server: srv, Kernel: kern,
		Polite: pr.result(cfg.PoliteRate, cfg.PoliteURL)}
	if cfg.Kind == "fuzz" || cfg.Kind == "slowread" {
		res.Count = cfg.Count
	}
	res.Attack = r.counts()
	if cfg.PID > 0 {
		res.Server.Alive = procAlive(cfg.PID)
	}
	ht := pt
	ht.path = "/healthz"
	if err := probeOnce(ht, tc, 5*time.Second); err != nil {
		res.Server.HealthzAfter = err.Error()
	} else {
		res.Server.HealthzAfter = "200"
	}
	return res, nil
}

func (r *attackRun) counts() AttackCounts {
	c := &r.ctr
	a := AttackCounts{Opened: c.opened.Load(), DialErrors: c.dialErr.Load(), MaxOpen: c.maxOpen.Load(), ClosedByServer: c.closed.Load(),
		Requests: c.requests.Load(), BytesSent: c.bytes.Load(), Handshakes: c.hs.Load(), HandshakeFail: c.hsFail.Load(),
		Completed: c.completed.Load(), Errors: c.errs.Load(), Frames: c.frames.Load()}
	c.mu.Lock()
	a.Answers = cloneCounts(c.answers)
	if len(c.ends) > 0 {
		a.Ends = cloneCounts(c.ends)
	}
	a.ErrorSamples = slices.Clone(c.samples)
	c.mu.Unlock()
	r.closes.mu.Lock()
	if n := len(r.closes.s); n > 0 {
		s := slices.Clone(r.closes.s)
		slices.Sort(s)
		a.CloseP50, a.CloseMax = s[n/2], s[n-1]
	}
	r.closes.mu.Unlock()
	a.Planned = int64(r.cfg.Conns)
	if r.cfg.Kind == "tlsearly" {
		a.Planned += int64(r.cfg.Stalled)
	}
	return a
}

// FormatAttack writes the human-readable summary.
func FormatAttack(w io.Writer, r *AttackResult) {
	fmt.Fprintf(w, "attack %s on %s: %d conns, %.1f s (bound %gs)\n", r.Kind, r.URL, r.Conns, r.Elapsed, r.Duration)
	if r.Note != "" {
		fmt.Fprintf(w, "  note        %s\n", r.Note)
	}
	fmt.Fprintf(w, "  attack      %s\n", r.Attack.Summary())
	for _, e := range r.Attack.ErrorSamples {
		fmt.Fprintf(w, "    e.g. %s\n", e)
	}
	p := r.Polite
	ka := "fresh connections"
	if p.KeepAlive {
		ka = "keep-alive"
	}
	fmt.Fprintf(w, "  polite      %d sent (%g/s, %s), %d x 2xx = %.1f %%; statuses %s; errors %d; latency p50 %.1f ms p99 %.1f ms max %.1f ms\n",
		p.Sent, p.Rate, ka, p.Created, p.CreatedPct, statusList(p.Status), p.Errors, p.P50ms, p.P99ms, p.MaxMs)
	for _, e := range p.ErrorSamples {
		fmt.Fprintf(w, "    e.g. %s\n", e)
	}
	s := r.Server
	if s.PID > 0 {
		fmt.Fprintf(w, "  server      pid %d alive %v; RSS %s -> peak %s -> end %s; fds %d -> peak %d -> end %d (%d samples)\n",
			s.PID, s.Alive, MiB(s.RSSStart), MiB(s.RSSPeak), MiB(s.RSSEnd), s.FDsStart, s.FDsPeak, s.FDsEnd, s.Samples)
		if s.Err != "" {
			fmt.Fprintf(w, "    sampling error: %s\n", s.Err)
		}
	}
	fmt.Fprintf(w, "  /healthz    after the attack: %s\n", s.HealthzAfter)
	k := r.Kernel
	fmt.Fprintf(w, "  kernel      TCP (sockstat) %s -> peak %s; server sockets (ss, ports %v) peak %s in %d sockets (rmem %s, wmem_queued %s, fwd %s), most sockets %d\n",
		MiB(k.SockstatStart), MiB(k.SockstatPeak), k.Ports, MiB(k.ServerPeak), k.AtPeak.Sockets, MiB(k.AtPeak.Rmem), MiB(k.AtPeak.Queued), MiB(k.AtPeak.Fwd), k.SocketsPeak)
	if s.PID > 0 {
		fmt.Fprintf(w, "  user+kernel peak RSS + server sockets %s\n", MiB(k.UserKernelPeak))
	}
	if k.Err != "" {
		fmt.Fprintf(w, "    ss: %s\n", k.Err)
	}
}

// Summary is the attacker's side in one line.
func (a AttackCounts) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "opened %d of %d (most at once %d, dial errors %d), closed by the server %d", a.Opened, a.Planned, a.MaxOpen, a.DialErrors, a.ClosedByServer)
	if a.ClosedByServer > 0 {
		fmt.Fprintf(&b, " (after p50 %.1f s, max %.1f s)", a.CloseP50, a.CloseMax)
	}
	if a.Handshakes+a.HandshakeFail > 0 {
		fmt.Fprintf(&b, ", handshakes ok %d failed %d", a.Handshakes, a.HandshakeFail)
	}
	if a.Completed > 0 {
		fmt.Fprintf(&b, ", completed %d", a.Completed)
	}
	if a.Frames > 0 {
		fmt.Fprintf(&b, ", streams %d, frames %d, %s sent", a.Requests, a.Frames, MiB(a.BytesSent))
	} else {
		fmt.Fprintf(&b, ", requests %d, %s sent", a.Requests, MiB(a.BytesSent))
	}
	if len(a.Ends) > 0 {
		fmt.Fprintf(&b, ", connections ended %s", statusList(a.Ends))
	}
	if len(a.Answers) > 0 {
		fmt.Fprintf(&b, ", answers %s", statusList(a.Answers))
	}
	if a.Errors > 0 {
		fmt.Fprintf(&b, ", errors %d", a.Errors)
	}
	return b.String()
}

func statusList(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func mainAttack(args []string, cmdline string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("want an attack kind first: %s", strings.Join(AttackKinds, ", "))
	}
	cfg := AttackConfig{Kind: args[0]}
	fs := newFlags("attack "+args[0], stderr)
	var js bool
	fs.StringVar(&cfg.URL, "url", "", "the attack's target: http(s)://127.0.0.1:PORT/upload/STREAM (tlsearly, storm: https; h2*: h2c with prior knowledge on http, h2 by ALPN on https)")
	fs.StringVar(&cfg.PoliteURL, "polite-url", "", "the polite prober's upload URL (default --url)")
	fs.IntVar(&cfg.Conns, "c", 100, "attacking connections (storm: clients; tlsearly: those sending a ClientHello and junk; h2*: connections at once, each reopened when the server ends it)")
	fs.Int64Var(&cfg.Count, "n", 0, "fuzz: requests in all (default 1,000,000); slowread: requests per connection (default 2,000: ~300 KiB, below what makes upsink drop a pipelining client)")
	fs.DurationVar(&cfg.Duration, "d", 20*time.Second, "bound on the attack (its connections are closed by then)")
	fs.DurationVar(&cfg.Settle, "settle", 2*time.Second, "after the attack, keep probing and sampling this long")
	fs.IntVar(&cfg.Parallel, "parallel", 64, "concurrent dials while opening the connections")
	fs.DurationVar(&cfg.Interval, "interval", 2*time.Second, "slowloris, slowbody: time between two trickles")
	fs.IntVar(&cfg.Trickle, "trickle", 8, "slowloris, slowbody: bytes per trickle")
	fs.Var(sizeFlag{&cfg.Declare}, "declare", "slowbody: declared Content-Length (default 1048193: 32 of them fill the default 32 MiB budget)")
	fs.IntVar(&cfg.Stalled, "stalled", 0, "tlsearly: connections that send half a ClientHello and stall, opened first")
	fs.Var(sizeFlag{&cfg.Junk}, "junk", "tlsearly: bytes of TLS records after the whole ClientHello (default 900KiB)")
	fs.Var(sizeFlag{&cfg.HeadBytes}, "head-bytes", "headerflood, trailerflood: bytes of fields per request (default 1MiB)")
	rcv := fs.String("rcvbuf", "4096", "slowread: the client sockets' SO_RCVBUF")
	fs.StringVar(&cfg.ReqKind, "req", "upload", "slowread: pipeline uploads of 16 bytes (upload) or GET /healthz (healthz)")
	body := fs.String("body", "", "push: body per upload (default 64KiB); fdflood, storm: body of the one upload (default 1KiB)")
	fs.IntVar(&cfg.Retries, "retries", 3, "storm: new connections after a failed handshake")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "fuzz: PRNG seed (the same seed sends the same requests)")
	fs.DurationVar(&cfg.FuzzWait, "fuzz-wait", 300*time.Millisecond, "fuzz: how long to wait for an answer")
	fs.StringVar(&cfg.Note, "note", "", "recorded with the result (external: the other tool's command line)")
	fs.IntVar(&cfg.PID, "pid", 0, "the server's pid: RSS, fds and liveness are sampled")
	fs.Var(intsFlag{&cfg.Ports}, "ports", "server ports whose sockets ss sums, e.g. 8080,8443 (default: the ports of --url and --polite-url)")
	fs.DurationVar(&cfg.Every, "every", 250*time.Millisecond, "sampling interval")
	fs.Float64Var(&cfg.PoliteRate, "polite-rate", 20, "polite uploads per second (0: none)")
	fs.BoolVar(&cfg.PoliteKeepAlive, "polite-keepalive", false, "polite uploads reuse connections (default: a fresh connection each)")
	fs.DurationVar(&cfg.PoliteTimeout, "polite-timeout", 5*time.Second, "a polite upload must be answered within this")
	politeBody := fs.String("polite-body", "1KiB", "polite upload body")
	tlsFlags(fs, &cfg.Insecure, &cfg.CACert, "https")
	jsonOut := jsonFlags(fs, &js)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	for _, s := range []struct {
		v   string
		dst *int
		nm  string
	}{{*rcv, &cfg.RcvBuf, "--rcvbuf"}, {*body, &cfg.Body, "--body"}, {*politeBody, &cfg.PoliteBody, "--polite-body"}} {
		if s.v == "" {
			continue
		}
		n, err := ParseSize(s.v)
		if err != nil || n > 1<<30 {
			return fmt.Errorf("%s: bad size %q", s.nm, s.v)
		}
		*s.dst = int(n)
	}
	cfg.Command = cmdline
	r, err := Attack(cfg)
	if err != nil {
		return err
	}
	return emit(r, *jsonOut, js, stdout, FormatAttack)
}

type intsFlag struct{ p *[]int }

func (f intsFlag) String() string { return "" }
func (f intsFlag) Set(v string) error {
	for item := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(item))
		if err != nil || n <= 0 || n > 65535 {
			return fmt.Errorf("bad port list %q", v)
		}
		*f.p = append(*f.p, n)
	}
	return nil
}
