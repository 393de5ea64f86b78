package bench

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Hard bounds: no run of the load generator lasts longer or sends more.
const (
	MaxDuration = time.Hour
	MaxCount    = 1 << 32
	MaxConns    = 20000
	// Every body starts with a marker naming the run, the worker and the
	// request: "ub RRRRRRRRRRRRRRRR WWWW SSSSSSSSSSSSSSSS\n" (hex).
	markerLen = 42
	markRun   = 3  // offset of the 16 hex digits of the run id
	markWork  = 20 // 4 hex digits of the worker
	markSeq   = 25 // 16 hex digits of the worker's sequence number
)

// LoadConfig is one load run.
type LoadConfig struct {
	URL         string        // http(s)://host:port/upload/STREAM
	Conns       int           // concurrent connections, one goroutine each
	Duration    time.Duration // stop sending after this (0 with Count: Timeout bounds it)
	Count       int64         // stop after this many requests (0: Duration only)
	Timeout     time.Duration // bound of a Count run
	BodySize    int           // bytes per upload body (BodyMax 0), or the smallest (BodyMax > BodySize)
	BodyMax     int           // > BodySize: each body's size is drawn uniformly from [BodySize, BodyMax]
	Rate        float64       // > 0: open loop, this many requests per second in total
	Chunked     bool          // send bodies with Transfer-Encoding: chunked
	ChunkSize   int           // bytes per chunk (default 512)
	NoKeepAlive bool          // one request per connection
	RetryWait   time.Duration // after a 503 the connection waits this long (as a client honouring Retry-After); with Idempotency, before every retry
	// Idempotency: every upload carries Idempotency-Key: "RUN-WORKER-SEQ"
	// (the marker's hex), and a failed one (no answer within
	// RequestTimeout, a connection error, 408, 409 or 5xx) is sent again,
	// same key and body, after RetryWait, until a 2xx or RetryFor after the
	// run's end.
	Idempotency    bool
	RetryFor       time.Duration // with Idempotency: retries stop this long after the run's end (default 30s)
	RequestTimeout time.Duration // an upload not answered within this counts as not answered (default 10s)
	ContentType    string
	Insecure       bool   // https: do not verify the server's certificate
	CACert         string // https: PEM file of the CA (or self-signed cert) to trust
	Watch          []WatchSpec
	WatchEvery     time.Duration
	WatchTSV       string // write the memory samples here (TSV)
	Plot           string // write the memory graph to PLOT.png and PLOT.svg
	Cgroup         *CgroupSpec
	VerifyDSN      string // check every acknowledged upload in this database afterwards
	VerifyTable    string // default "uploads"
	// DrainURL: before verifying, poll this /readyz until its spool is
	// empty ("spool":{"records":0,...} or no spool object), for at most
	// DrainTimeout (default 60s).
	DrainURL     string
	DrainTimeout time.Duration
	Progress     io.Writer // a progress line once a second (nil: none)
	ProgressTTY  bool      // Progress is a terminal: rewrite one line
	Command      string    // recorded in the result
}

// WatchSpec names a process to poll.
type WatchSpec struct {
	Name string
	PID  int
}

// Latency is a latency summary in microseconds.
type Latency struct {
	P50  int64   `json:"p50_us"`
	P90  int64   `json:"p90_us"`
	P99  int64   `json:"p99_us"`
	P999 int64   `json:"p99_9_us"`
	Max  int64   `json:"max_us"`
	Mean float64 `json:"mean_us"`
	N    int64   `json:"n"`
}

// CPU is the load generator's own CPU time (getrusage RUSAGE_SELF).
type CPU struct {
	User  float64 `json:"user_s"`
	Sys   float64 `json:"sys_s"`
	Cores float64 `json:"cores"` // (user+sys)/elapsed
	NCPU  int     `json:"ncpu"`
}

// cpuBetween is this process's CPU between two getrusage readings.
func cpuBetween(ru0, ru1 *syscall.Rusage, elapsed time.Duration) CPU {
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	c := CPU{User: tv(ru1.Utime) - tv(ru0.Utime), Sys: tv(ru1.Stime) - tv(ru0.Stime), NCPU: runtime.NumCPU()}
	if s := elapsed.Seconds(); s > 0 {
		c.Cores = (c.User + c.Sys) / s
	}
	return c
}

// LoadResult is what a load run saw.
type LoadResult struct {
	Command        string           `json:"command"`
	URL            string           `json:"url"`
	Conns          int              `json:"conns"`
	BodyBytes      int              `json:"body_bytes"`               // fixed size, or the smallest
	BodyMax        int              `json:"body_max_bytes,omitempty"` // largest, when sizes are drawn
	BodyTotal      int64            `json:"body_bytes_sent"`          // body bytes of all requests written
	Chunked        bool             `json:"chunked,omitempty"`
	TLS            bool             `json:"tls,omitempty"`
	Rate           float64          `json:"rate,omitempty"`         // requested uploads/s (open loop)
	RetryWait      float64          `json:"retry_wait_s,omitempty"` // pause after a 503
	LatencyFrom    string           `json:"latency_from,omitempty"` // "scheduled" in open-loop runs, else "write"
	KeepAlive      bool             `json:"keep_alive"`
	Duration       float64          `json:"duration_s,omitempty"`
	Count          int64            `json:"count,omitempty"`
	Elapsed        float64          `json:"elapsed_s"`
	Responses      int64            `json:"responses"`
	Created        int64            `json:"created"`  // 201s
	Accepted       int64            `json:"accepted"` // 202s (spooled)
	Acked          int64            `json:"acked"`    // all 2xx answers
	UploadsPerSec  float64          `json:"uploads_per_s"`
	RespPerSec     float64          `json:"responses_per_s"`
	Status         map[string]int64 `json:"status"`
	Errors         int64            `json:"errors"`
	ErrorSamples   []string         `json:"error_samples,omitempty"`
	Unanswered     int64            `json:"unanswered"`            // sent, no answer within --request-timeout (or by the run's hard deadline)
	BadAnswers     int64            `json:"bad_answers,omitempty"` // 2xx whose JSON does not say what its status promises (201 without id, 202 not spool)
	RequestTimeout float64          `json:"request_timeout_s"`
	Idempotency    *IdemResult      `json:"idempotency,omitempty"`
	Drain          *DrainResult     `json:"drain,omitempty"`
	Connects       int64            `json:"connects"`
	Latency        Latency          `json:"latency"`
	CPU            CPU              `json:"tool_cpu"`
	Machine        *MachineCPU      `json:"machine_cpu,omitempty"` // the whole machine's CPUs during the run (all processes)
	Memory         []WatchResult    `json:"memory,omitempty"`
	TCPMemPeak     int64            `json:"tcp_mem_peak,omitempty"` // highest /proc/net/sockstat TCP mem, bytes
	Cgroup         *CgroupResult    `json:"cgroup,omitempty"`
	Verify         *VerifyResult    `json:"verify,omitempty"`
	RunID          string           `json:"run_id"`
	WatchTSV       string           `json:"watch_tsv,omitempty"`
	Plots          []string         `json:"plots,omitempty"`
}

// IdemResult is what --idempotency did: uploads are counted once each,
// attempts once per request written.
type IdemResult struct {
	RetryWait float64 `json:"retry_wait_s"`
	RetryFor  float64 `json:"retry_for_s"`
	Uploads   int64   `json:"uploads"`    // uploads begun (each with its own key)
	Retries   int64   `json:"retries"`    // attempts after an upload's first
	Retried   int64   `json:"retried"`    // uploads that needed at least one retry
	Acked     int64   `json:"acked"`      // uploads finally answered 2xx
	Refused   int64   `json:"refused"`    // uploads finally answered a 4xx that is not retried (400, 413, 422, ...)
	GivenUp   int64   `json:"given_up"`   // uploads still failing when --retry-for ran out
	Status422 int64   `json:"status_422"` // same key, different body: must never happen
}

type target struct {
	addr   string // host:port
	path   string // with query
	host   string // Host header
	tls    bool
	server string // TLS server name
}

func parseTarget(raw string) (target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return target{}, fmt.Errorf("url %q: only http:// and https:// are supported", raw)
	}
	if u.Host == "" {
		return target{}, fmt.Errorf("url %q has no host", raw)
	}
	t := target{host: u.Host, addr: u.Host, path: u.RequestURI(), tls: u.Scheme == "https", server: u.Hostname()}
	if u.Port() == "" {
		port := "80"
		if t.tls {
			port = "443"
		}
		t.addr = net.JoinHostPort(u.Hostname(), port)
	}
	return t, nil
}

// TLSConfig is the client configuration for https:// targets.
func TLSConfig(serverName string, insecure bool, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: serverName, InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// filler is the body content after the marker: the same bytes for every
// request of a size, so the only difference between bodies is the marker.
const fillerPattern = "abcdefghijklmnopqrstuvwxyz0123456789\n"

func makeFiller(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = fillerPattern[i%len(fillerPattern)]
	}
	return b
}

// reqBuilder renders requests into one reused buffer.
type reqBuilder struct {
	head      []byte // request line and fixed fields, up to the framing field
	filler    []byte // shared, read-only, BodyMax long
	keepAlive bool
	chunked   bool
	idem      bool // send Idempotency-Key: "RUN-WORKER-SEQ" from the marker
	chunk     int
	buf       []byte
	marker    [markerLen]byte
}

func newReqBuilder(t target, ctype string, filler []byte, keepAlive, chunked bool, chunk int) *reqBuilder {
	var h []byte
	h = append(h, "POST "...)
	h = append(h, t.path...)
	h = append(h, " HTTP/1.1\r\nHost: "...)
	h = append(h, t.host...)
	h = append(h, "\r\nUser-Agent: upsink-bench\r\nContent-Type: "...)
	h = append(h, ctype...)
	h = append(h, "\r\n"...)
	if !keepAlive {
		h = append(h, "Connection: close\r\n"...)
	}
	if chunk <= 0 {
		chunk = 512
	}
	rb := &reqBuilder{head: h, filler: filler, keepAlive: keepAlive, chunked: chunked, chunk: chunk}
	copy(rb.marker[:], "ub 0000000000000000 0000 0000000000000000\n")
	return rb
}

// body returns the two parts of a body of size n: the marker (possibly cut
// short) and the filler after it.
func (rb *reqBuilder) body(n int) ([]byte, []byte) {
	m := rb.marker[:]
	if n < len(m) {
		return m[:n], nil
	}
	return m, rb.filler[len(m):n]
}

// build renders the whole request for a body of n bytes and returns it
// (valid until the next build) and the offset of the body (chunked: of the
// first chunk's data).
func (rb *reqBuilder) build(n int) []byte {
	b := append(rb.buf[:0], rb.head...)
	if rb.idem {
		b = append(b, "Idempotency-Key: \""...)
		b = append(b, rb.marker[markRun:markRun+16]...)
		b = append(b, '-')
		b = append(b, rb.marker[markWork:markWork+4]...)
		b = append(b, '-')
		b = append(b, rb.marker[markSeq:markSeq+16]...)
		b = append(b, "\"\r\n"...)
	}
	if rb.chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n\r\n"...)
	} else {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, "\r\n\r\n"...)
	}
	if !rb.chunked {
		m, f := rb.body(n)
		b = append(b, m...)
		b = append(b, f...)
		rb.buf = b
		return b
	}
	m, _ := rb.body(n)
	for off := 0; off < n; {
		k := min(rb.chunk, n-off)
		b = strconv.AppendInt(b, int64(k), 16)
		b = append(b, "\r\n"...)
		lo, hi := off, off+k
		if lo < len(m) {
			b = append(b, m[lo:min(hi, len(m))]...)
			lo = min(hi, len(m))
		}
		b = append(b, rb.filler[lo:hi]...) // f is filler[len(m):n]
		b = append(b, "\r\n"...)
		off += k
	}
	b = append(b, "0\r\n\r\n"...)
	rb.buf = b
	return b
}

// buildRequest is the fixed-size, Content-Length form (kept for tests): the
// request and the offset of its body.
func buildRequest(t target, ctype string, bodySize int, keepAlive bool) ([]byte, int) {
	rb := newReqBuilder(t, ctype, makeFiller(bodySize), keepAlive, false, 0)
	req := rb.build(bodySize)
	return req, len(req) - bodySize
}

const hexdig = "0123456789abcdef"

func putHex(b []byte, v uint64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = hexdig[v&15]
		v >>= 4
	}
}

type shard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

type worker struct {
	id     int
	rb     *reqBuilder
	rng    *rand.Rand
	status [600]int64
	errs   int64
	unans  int64
	conns  int64
	resps  int64
	bytes  int64
	errMsg []string
	badAns int64
	idem   IdemResult
	// --verify: what happened to each request whose bytes were all written.
	acks   []ack    // 2xx
	nacks  []nack   // answered with another status
	noAns  []uint64 // written, no answer (keys)
	gaveUp []uint64 // --idempotency: not acknowledged when the retries ran out (keys)
	hasher interface {
		io.Writer
		Reset()
		Sum([]byte) []byte
	}
	sum [sha256.Size]byte
}

// ack is one acknowledged upload: the id the server answered (0 for a 202,
// which has none), the marker's worker and sequence (key = worker<<48 |
// seq), the first 64 bits of the SHA-256 of the body, and whether it was
// acknowledged as spooled (202).
type ack struct {
	id, key, hash uint64
	spool         bool
}

type nack struct {
	key    uint64
	status int
}

func markKey(worker int, seq uint64) uint64 { return uint64(worker)<<48 | seq&(1<<48-1) }

// Load runs one load test.
func Load(cfg LoadConfig) (*LoadResult, error) {
	t, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.BodyMax == 0 {
		cfg.BodyMax = cfg.BodySize
	}
	switch {
	case cfg.Conns < 1 || cfg.Conns > MaxConns:
		return nil, fmt.Errorf("-c %d out of range [1, %d]", cfg.Conns, MaxConns)
	case cfg.BodySize < markerLen || cfg.BodyMax > 1<<30 || cfg.BodyMax < cfg.BodySize:
		return nil, fmt.Errorf("--body %d-%d out of range [%d B, 1 GiB] (every body carries a %d-byte marker)", cfg.BodySize, cfg.BodyMax, markerLen, markerLen)
	case cfg.Count < 0 || cfg.Count > MaxCount:
		return nil, fmt.Errorf("-n %d out of range [1, %d]", cfg.Count, int64(MaxCount))
	case cfg.Duration < 0 || cfg.Duration > MaxDuration || cfg.Timeout > MaxDuration:
		return nil, fmt.Errorf("durations are capped at %s", MaxDuration)
	case cfg.Rate < 0 || cfg.Rate > 10_000_000:
		return nil, fmt.Errorf("--rate %g out of range [0, 1e7]", cfg.Rate)
	}
	var tlsCfg *tls.Config
	if t.tls {
		if tlsCfg, err = TLSConfig(t.server, cfg.Insecure, cfg.CACert); err != nil {
			return nil, err
		}
		tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	}
	if cfg.Duration == 0 && cfg.Count == 0 {
		cfg.Duration = 10 * time.Second
	}
	bound := cfg.Duration
	if bound == 0 {
		bound = cfg.Timeout
		if bound <= 0 {
			bound = 5 * time.Minute
		}
	}
	if cfg.ContentType == "" {
		cfg.ContentType = "application/octet-stream"
	}
	if cfg.VerifyTable == "" {
		cfg.VerifyTable = "uploads"
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 60 * time.Second
	}
	if cfg.RequestTimeout > MaxDuration || cfg.RetryFor > MaxDuration || cfg.DrainTimeout > MaxDuration || cfg.RetryWait > MaxDuration {
		return nil, fmt.Errorf("durations are capped at %s", MaxDuration)
	}
	if cfg.Idempotency {
		if cfg.RetryFor <= 0 {
			cfg.RetryFor = 30 * time.Second
		}
		if cfg.RetryWait <= 0 {
			cfg.RetryWait = 100 * time.Millisecond // never a tight loop of retries
		}
	}
	// Answers in flight at the end may take this long; with retries, the
	// last attempt may start RetryFor after the end.
	grace := cfg.RequestTimeout
	if cfg.Idempotency {
		grace = cfg.RetryFor + cfg.RequestTimeout
	}

	var cg *Cgroup
	if cfg.Cgroup != nil {
		if cg, err = OpenCgroup(*cfg.Cgroup); err != nil {
			return nil, err
		}
	}
	cgDone := false
	defer func() {
		if cg != nil && !cgDone {
			_ = cg.Close()
		}
	}()

	nshards := min(cfg.Conns, 4*runtime.GOMAXPROCS(0))
	shards := make([]shard, nshards)
	for i := range shards {
		shards[i].h = hdrhistogram.New(1, int64(MaxDuration/time.Microsecond), 3)
	}
	runID := rand.Uint64()
	runHex := make([]byte, 16)
	putHex(runHex, runID)
	filler := makeFiller(cfg.BodyMax)
	verify := cfg.VerifyDSN != ""
	workers := make([]*worker, cfg.Conns)
	for i := range workers {
		rb := newReqBuilder(t, cfg.ContentType, filler, !cfg.NoKeepAlive, cfg.Chunked, cfg.ChunkSize)
		rb.idem = cfg.Idempotency
		copy(rb.marker[markRun:], runHex)
		putHex(rb.marker[markWork:markWork+4], uint64(i))
		w := &worker{id: i, rb: rb}
		if cfg.BodyMax > cfg.BodySize {
			w.rng = rand.New(rand.NewPCG(runID, uint64(i)))
		}
		if verify {
			w.hasher = sha256.New()
		}
		workers[i] = w
	}

	smp, err := StartSampler(SamplerConfig{Watch: cfg.Watch, Every: cfg.WatchEvery, TSV: cfg.WatchTSV, Cgroup: cg})
	if err != nil {
		return nil, err
	}

	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	st0, stErr := ReadStatCPU()
	var (
		issued atomic.Int64
		stop   atomic.Bool
		wg     sync.WaitGroup
		prog   progress
	)
	start := time.Now()
	end := start.Add(bound)
	hard := end.Add(grace)
	timer := time.AfterFunc(bound, func() { stop.Store(true) })
	run := &runCtx{cfg: &cfg, t: t, tls: tlsCfg, issued: &issued, stop: &stop, start: start, end: end, hard: hard,
		retryEnd: end.Add(cfg.RetryFor), prog: &prog}
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(run, &shards[w.id%nshards])
		}()
	}
	progDone := make(chan struct{})
	if cfg.Progress != nil {
		go prog.report(cfg.Progress, cfg.ProgressTTY, start, bound, progDone)
	} else {
		close(progDone)
	}
	wg.Wait()
	elapsed := time.Since(start)
	timer.Stop()
	prog.stop()
	<-progDone
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	st1, stErr1 := ReadStatCPU()

	res := &LoadResult{
		Command: cfg.Command, URL: cfg.URL, Conns: cfg.Conns, BodyBytes: cfg.BodySize, Chunked: cfg.Chunked, TLS: t.tls,
		KeepAlive: !cfg.NoKeepAlive, Duration: cfg.Duration.Seconds(), Count: cfg.Count, Rate: cfg.Rate, RetryWait: cfg.RetryWait.Seconds(),
		Elapsed: elapsed.Seconds(), Status: map[string]int64{}, RunID: string(runHex), LatencyFrom: "write",
		RequestTimeout: cfg.RequestTimeout.Seconds(),
	}
	if cfg.Idempotency {
		res.Idempotency = &IdemResult{RetryWait: cfg.RetryWait.Seconds(), RetryFor: cfg.RetryFor.Seconds()}
	}
	if cfg.Rate > 0 {
		res.LatencyFrom = "scheduled"
	}
	if cfg.BodyMax > cfg.BodySize {
		res.BodyMax = cfg.BodyMax
	}
	sres := smp.Stop()
	res.Memory, res.TCPMemPeak = sres.Procs, sres.TCPMemPeak
	if cfg.WatchTSV != "" {
		res.WatchTSV = cfg.WatchTSV
	}
	if cg != nil {
		cr := cg.Result()
		cr.Peak = max(cr.Peak, sres.CgroupPeak)
		res.Cgroup = &cr
	}
	if cfg.Plot != "" && len(sres.Series) > 0 {
		files, err := PlotMemory(smp, cfg.Plot, "memory during "+shortCmd(cfg.Command))
		if err != nil {
			res.ErrorSamples = append(res.ErrorSamples, "plot: "+err.Error())
		}
		res.Plots = files
	}
	seen := map[string]bool{}
	for _, w := range workers {
		for code, n := range w.status {
			if n > 0 {
				res.Status[strconv.Itoa(code)] += n
			}
		}
		res.Created += w.status[201]
		res.Accepted += w.status[202]
		for code := 200; code < 300; code++ {
			res.Acked += w.status[code]
		}
		res.BadAnswers += w.badAns
		if id := res.Idempotency; id != nil {
			id.Uploads += w.idem.Uploads
			id.Retries += w.idem.Retries
			id.Retried += w.idem.Retried
			id.Acked += w.idem.Acked
			id.Refused += w.idem.Refused
			id.GivenUp += w.idem.GivenUp
			id.Status422 += w.idem.Status422
		}
		res.Responses += w.resps
		res.Errors += w.errs
		res.Unanswered += w.unans
		res.Connects += w.conns
		res.BodyTotal += w.bytes
		for _, m := range w.errMsg {
			if !seen[m] && len(res.ErrorSamples) < 8 {
				seen[m] = true
				res.ErrorSamples = append(res.ErrorSamples, m)
			}
		}
	}
	all := hdrhistogram.New(1, int64(MaxDuration/time.Microsecond), 3)
	for i := range shards {
		all.Merge(shards[i].h)
	}
	res.Latency = Latency{
		P50: all.ValueAtQuantile(50), P90: all.ValueAtQuantile(90), P99: all.ValueAtQuantile(99),
		P999: all.ValueAtQuantile(99.9), Max: all.Max(), Mean: all.Mean(), N: all.TotalCount(),
	}
	if s := elapsed.Seconds(); s > 0 {
		res.UploadsPerSec = float64(res.Acked) / s
		res.RespPerSec = float64(res.Responses) / s
	}
	res.CPU = cpuBetween(&ru0, &ru1, elapsed)
	if stErr == nil && stErr1 == nil {
		res.Machine = machineBetween(st0, st1, elapsed)
	}
	if cg != nil {
		cgDone = true
		if err := cg.Close(); err != nil {
			res.Cgroup.Err = err.Error()
		}
	}

	if cfg.DrainURL != "" {
		d := DrainSpool(cfg.DrainURL, cfg.DrainTimeout, cfg.Insecure, cfg.CACert)
		res.Drain = &d
	}
	if verify {
		var sent Sent
		for _, w := range workers {
			sent.Acks = append(sent.Acks, w.acks...)
			sent.Nacks = append(sent.Nacks, w.nacks...)
			sent.NoAnswer = append(sent.NoAnswer, w.noAns...)
			sent.GivenUp = append(sent.GivenUp, w.gaveUp...)
			w.acks, w.nacks, w.noAns, w.gaveUp = nil, nil, nil, nil
		}
		v, err := Verify(cfg.VerifyDSN, cfg.VerifyTable, string(runHex), &sent)
		if err != nil {
			return res, fmt.Errorf("verify: %w", err)
		}
		res.Verify = v
	}
	return res, nil
}

func shortCmd(s string) string {
	if len(s) > 90 {
		return s[:90] + "…"
	}
	return s
}

type runCtx struct {
	cfg    *LoadConfig
	t      target
	tls    *tls.Config
	issued *atomic.Int64
	stop   *atomic.Bool
	start  time.Time
	end    time.Time
	hard   time.Time // no attempt's deadline is later
	// retryEnd: with Idempotency no retry starts after this (end + RetryFor)
	retryEnd time.Time
	prog     *progress
}

func (w *worker) fail(err error) {
	w.errs++
	if len(w.errMsg) < 4 {
		w.errMsg = append(w.errMsg, err.Error())
	}
}

func (w *worker) dial(r *runCtx) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", r.t.addr)
	if err != nil || r.tls == nil {
		return c, err
	}
	tc := tls.Client(c, r.tls)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	return tc, nil
}

// sleepUntil sleeps until t or until stop is set (checked every 100 ms).
func sleepUntil(t time.Time, stop *atomic.Bool) bool {
	for {
		d := time.Until(t)
		if d <= 0 {
			return true
		}
		if stop.Load() {
			return false
		}
		time.Sleep(min(d, 100*time.Millisecond))
	}
}

// upload is the one upload a worker is sending, kept across retries.
type upload struct {
	seq   uint64
	n     int    // body size
	hash  uint64 // first 64 bits of the body's SHA-256 (--verify)
	sends int    // attempts started
}

// retryable reports whether an --idempotency upload answered status is
// sent again: 408 and 409 (the first attempt still in progress) and 5xx;
// other 4xx are final.
func retryable(status int) bool {
	return status == 408 || status == 409 || status >= 500
}

func (w *worker) run(r *runCtx, sh *shard) {
	cfg := r.cfg
	idem := cfg.Idempotency
	var (
		c      net.Conn
		rr     = newRespReader(nil)
		seq    uint64
		ticket bool // holding a request slot not yet written
		due    time.Time
		cur    upload
		active bool // cur is being sent (idem: until 2xx, a final answer or retryEnd)
	)
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	// retry ends a failed --idempotency attempt: wait RetryWait (no later
	// than retryEnd), then the loop sends cur again.
	retry := func() {
		time.Sleep(min(cfg.RetryWait, max(time.Until(r.retryEnd), 0)))
	}
	counted := cfg.Count > 0 || cfg.Rate > 0
	for {
		if active && idem && !time.Now().Before(r.retryEnd) {
			w.idem.GivenUp++
			if w.hasher != nil {
				w.gaveUp = append(w.gaveUp, markKey(w.id, cur.seq))
			}
			return // retryEnd is after the run's end: nothing new starts
		}
		if !active {
			if r.stop.Load() {
				return
			}
			if !ticket {
				if counted {
					k := r.issued.Add(1) - 1
					if cfg.Count > 0 && k >= cfg.Count {
						return
					}
					if cfg.Rate > 0 {
						due = r.start.Add(time.Duration(float64(k) * 1e9 / cfg.Rate))
						if due.After(r.end) || !sleepUntil(due, r.stop) {
							return
						}
					}
				}
				ticket = true
			}
			seq++
			cur = upload{seq: seq, n: cfg.BodySize}
			if w.rng != nil {
				cur.n += w.rng.IntN(cfg.BodyMax - cfg.BodySize + 1)
			}
			putHex(w.rb.marker[markSeq:markSeq+16], seq)
			if w.hasher != nil {
				m, f := w.rb.body(cur.n)
				w.hasher.Reset()
				w.hasher.Write(m)
				w.hasher.Write(f)
				cur.hash = binary.BigEndian.Uint64(w.hasher.Sum(w.sum[:0]))
			}
			active = true
			if idem {
				w.idem.Uploads++
			}
		} else if !idem && r.stop.Load() {
			return
		}
		if c == nil {
			var err error
			c, err = w.dial(r)
			if err != nil {
				w.fail(err)
				c = nil
				time.Sleep(20 * time.Millisecond)
				continue
			}
			w.conns++
			rr.reset(c)
		}
		putHex(w.rb.marker[markSeq:markSeq+16], cur.seq)
		req := w.rb.build(cur.n)
		now := time.Now()
		t0 := now
		if cfg.Rate > 0 && cur.sends == 0 {
			t0 = due
		}
		dl := now.Add(cfg.RequestTimeout)
		if dl.After(r.hard) {
			dl = r.hard
		}
		_ = c.SetDeadline(dl)
		if idem && cur.sends > 0 {
			w.idem.Retries++
			if cur.sends == 1 {
				w.idem.Retried++
			}
		}
		cur.sends++
		if _, err := c.Write(req); err != nil {
			// The server may have closed an idle keep-alive connection: the
			// request was not (fully) sent; count it and send again on a new
			// one (without idempotency, as a new upload).
			w.fail(fmt.Errorf("write: %w", err))
			c.Close()
			c = nil
			if idem {
				retry()
			} else {
				active = false
			}
			continue
		}
		ticket = false
		w.bytes += int64(cur.n)
		key := markKey(w.id, cur.seq)
		resp, err := rr.read()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				w.unans++
			} else {
				w.fail(fmt.Errorf("read: %w", err))
			}
			c.Close()
			c = nil
			if idem {
				retry()
				continue
			}
			if w.hasher != nil {
				w.noAns = append(w.noAns, key)
			}
			active = false
			continue
		}
		lat := time.Since(t0).Microseconds()
		sh.mu.Lock()
		_ = sh.h.RecordValue(max(lat, 1))
		sh.mu.Unlock()
		w.resps++
		if resp.status < len(w.status) {
			w.status[resp.status]++
		}
		ok := resp.status >= 200 && resp.status < 300
		r.prog.add(ok)
		again := idem && !ok && retryable(resp.status)
		switch {
		case ok:
			a, bad := parseAnswer(resp.status, resp.body)
			if bad != "" && resp.body != nil {
				w.badAns++
				if len(w.errMsg) < 4 {
					w.errMsg = append(w.errMsg, "answer: "+bad)
				}
			}
			if w.hasher != nil {
				w.acks = append(w.acks, ack{id: a.id, key: key, hash: cur.hash, spool: resp.status == 202})
			}
			w.idem.Acked++
			active = false
		case again:
		default:
			if w.hasher != nil {
				w.nacks = append(w.nacks, nack{key: key, status: resp.status})
			}
			if resp.status == 422 {
				w.idem.Status422++
			}
			if idem && resp.status < 500 {
				w.idem.Refused++
			}
			active = false
		}
		if resp.close || cfg.NoKeepAlive {
			c.Close()
			c = nil
		}
		if again {
			retry()
			continue
		}
		if resp.status == 503 && cfg.RetryWait > 0 && !sleepUntil(time.Now().Add(cfg.RetryWait), r.stop) {
			return
		}
	}
}

// progress counts answers for the once-a-second progress line.
type progress struct {
	ok, other atomic.Int64
	done      chan struct{}
	once      sync.Once
	init      sync.Once
}

func (p *progress) add(ok bool) {
	if ok {
		p.ok.Add(1)
	} else {
		p.other.Add(1)
	}
}

func (p *progress) ch() chan struct{} {
	p.init.Do(func() { p.done = make(chan struct{}) })
	return p.done
}

func (p *progress) stop() { p.once.Do(func() { close(p.ch()) }) }

func (p *progress) report(w io.Writer, tty bool, start time.Time, bound time.Duration, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last int64
	lastT := start
	for {
		select {
		case <-p.ch():
			if tty {
				fmt.Fprint(w, "\r\033[K")
			}
			return
		case now := <-t.C:
			ok, other := p.ok.Load(), p.other.Load()
			rate := float64(ok-last) / now.Sub(lastT).Seconds()
			last, lastT = ok, now
			line := fmt.Sprintf("%5.0fs/%s  2xx %d  (%.0f/s now, %.0f/s avg)  other %d",
				now.Sub(start).Seconds(), bound, ok, rate, float64(ok)/now.Sub(start).Seconds(), other)
			if tty {
				fmt.Fprint(w, "\r\033[K"+line)
			} else {
				fmt.Fprintln(w, line)
			}
		}
	}
}

// FormatLoad writes the human-readable summary.
func FormatLoad(w io.Writer, r *LoadResult) {
	ka := "keep-alive"
	if !r.KeepAlive {
		ka = "no keep-alive"
	}
	bound := fmt.Sprintf("%gs", r.Duration)
	if r.Count > 0 {
		bound = fmt.Sprintf("n=%d", r.Count)
	}
	body := fmt.Sprintf("%d B", r.BodyBytes)
	if r.BodyMax > 0 {
		body = fmt.Sprintf("%d-%d B", r.BodyBytes, r.BodyMax)
	}
	if r.Chunked {
		body += " chunked"
	}
	if r.Rate > 0 {
		bound += fmt.Sprintf(" rate=%g/s", r.Rate)
	}
	if r.RetryWait > 0 {
		bound += fmt.Sprintf(" retry-wait=%gs", r.RetryWait)
	}
	if r.Idempotency != nil {
		bound += fmt.Sprintf(" idempotency (retry-for=%gs)", r.Idempotency.RetryFor)
	}
	fmt.Fprintf(w, "load %s  c=%d  body=%s  %s  %s  run %s\n", r.URL, r.Conns, body, ka, bound, r.RunID)
	acked := fmt.Sprintf("%d x 201", r.Created)
	if r.Accepted > 0 || r.Acked != r.Created {
		acked = fmt.Sprintf("%d acknowledged: %d x 201, %d x 202 spooled", r.Acked, r.Created, r.Accepted)
	}
	fmt.Fprintf(w, "  uploads/s   %.1f  (%s in %.2f s; all responses %.1f/s)\n", r.UploadsPerSec, acked, r.Elapsed, r.RespPerSec)
	from := ""
	if r.LatencyFrom == "scheduled" {
		from = ", from the scheduled send time"
	}
	fmt.Fprintf(w, "  latency     p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s, n=%d%s)\n",
		us(r.Latency.P50), us(r.Latency.P90), us(r.Latency.P99), us(r.Latency.P999), us(r.Latency.Max), us(int64(r.Latency.Mean)), r.Latency.N, from)
	codes := make([]string, 0, len(r.Status))
	for k := range r.Status {
		codes = append(codes, k)
	}
	sort.Strings(codes)
	var sb strings.Builder
	for _, k := range codes {
		fmt.Fprintf(&sb, "  %s: %d", k, r.Status[k])
	}
	fmt.Fprintf(w, "  status    %s\n", sb.String())
	fmt.Fprintf(w, "  errors      %d  unanswered %d (request timeout %gs)  connects %d\n", r.Errors, r.Unanswered, r.RequestTimeout, r.Connects)
	if r.BadAnswers > 0 {
		fmt.Fprintf(w, "  bad answers %d (2xx whose JSON does not match its status)\n", r.BadAnswers)
	}
	if id := r.Idempotency; id != nil {
		fmt.Fprintf(w, "  idempotent  %d uploads: %d acknowledged, %d refused, %d given up; %d retries (%d uploads retried, retry-wait %gs)\n",
			id.Uploads, id.Acked, id.Refused, id.GivenUp, id.Retries, id.Retried, id.RetryWait)
		if id.Status422 > 0 {
			fmt.Fprintf(w, "  ERROR       %d answered 422 (same key, different body): must not happen\n", id.Status422)
		}
	}
	for _, m := range r.ErrorSamples {
		fmt.Fprintf(w, "    e.g. %s\n", m)
	}
	fmt.Fprintf(w, "  tool cpu    user %.2f s  sys %.2f s  = %.2f of %d cores\n", r.CPU.User, r.CPU.Sys, r.CPU.Cores, r.CPU.NCPU)
	if m := r.Machine; m != nil {
		fmt.Fprintf(w, "  machine     %.2f cores busy (all processes, irq and softirq included), iowait %.2f, steal %.2f\n", m.Busy, m.IOWait, m.Steal)
	}
	formatMemory(w, r.Memory, r.TCPMemPeak)
	if r.Cgroup != nil {
		FormatCgroup(w, r.Cgroup)
	}
	if r.WatchTSV != "" || len(r.Plots) > 0 {
		fmt.Fprintf(w, "  samples     %s  %s\n", r.WatchTSV, strings.Join(r.Plots, " "))
	}
	if r.Drain != nil {
		FormatDrain(w, r.Drain)
	}
	if r.Verify != nil {
		FormatVerify(w, r.Verify)
	}
}

func formatMemory(w io.Writer, mem []WatchResult, tcpPeak int64) {
	for _, m := range mem {
		fmt.Fprintf(w, "  watched     %s (pid %d): peak RSS %s  peak PSS %s  VmHWM %s  (%d samples); CPU %.2f s = %.2f cores\n",
			m.Name, m.PID, MiB(m.PeakRSS), MiB(m.PeakPSS), MiB(m.HWM), m.Samples, m.CPU, m.Cores)
		if m.Err != "" {
			fmt.Fprintf(w, "    sampling error: %s\n", m.Err)
		}
	}
	if tcpPeak > 0 {
		fmt.Fprintf(w, "  kernel TCP  peak %s (/proc/net/sockstat mem)\n", MiB(tcpPeak))
	}
}

func us(v int64) string {
	switch {
	case v >= 1000000:
		return fmt.Sprintf("%.2f s", float64(v)/1e6)
	case v >= 1000:
		return fmt.Sprintf("%.2f ms", float64(v)/1e3)
	default:
		return fmt.Sprintf("%d µs", v)
	}
}

// MiB formats a byte count.
func MiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
