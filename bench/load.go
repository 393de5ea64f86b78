package bench

import (
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
	markerLen   = 34 // "ub RRRRRRRR WWWW SSSSSSSSSSSSSSSS\n"
)

// LoadConfig is one load run.
type LoadConfig struct {
	URL         string        // http://host:port/upload/STREAM
	Conns       int           // concurrent connections, one goroutine each
	Duration    time.Duration // stop sending after this (0 with Count: Timeout bounds it)
	Count       int64         // stop after this many requests (0: Duration only)
	Timeout     time.Duration // bound of a Count run
	BodySize    int           // bytes per upload body
	NoKeepAlive bool          // one request per connection
	ContentType string
	Watch       []WatchSpec // processes whose memory is polled during the run
	WatchEvery  time.Duration
	Command     string // recorded in the result
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

// LoadResult is what a load run saw.
type LoadResult struct {
	Command       string           `json:"command"`
	URL           string           `json:"url"`
	Conns         int              `json:"conns"`
	BodyBytes     int              `json:"body_bytes"`
	KeepAlive     bool             `json:"keep_alive"`
	Duration      float64          `json:"duration_s,omitempty"`
	Count         int64            `json:"count,omitempty"`
	Elapsed       float64          `json:"elapsed_s"`
	Responses     int64            `json:"responses"`
	Created       int64            `json:"created"` // 201s
	UploadsPerSec float64          `json:"uploads_per_s"`
	RespPerSec    float64          `json:"responses_per_s"`
	Status        map[string]int64 `json:"status"`
	Errors        int64            `json:"errors"`
	ErrorSamples  []string         `json:"error_samples,omitempty"`
	Unanswered    int64            `json:"unanswered"` // sent, no answer by the hard deadline
	Connects      int64            `json:"connects"`
	Latency       Latency          `json:"latency"`
	CPU           CPU              `json:"tool_cpu"`
	Memory        []WatchResult    `json:"memory,omitempty"`
}

type target struct {
	addr    string // host:port
	path    string // with query
	host    string // Host header
	pathRaw string
}

func parseTarget(raw string) (target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, err
	}
	if u.Scheme != "http" {
		return target{}, fmt.Errorf("url %q: only http:// is supported", raw)
	}
	if u.Host == "" {
		return target{}, fmt.Errorf("url %q has no host", raw)
	}
	t := target{host: u.Host, addr: u.Host, path: u.RequestURI()}
	if u.Port() == "" {
		t.addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return t, nil
}

// buildRequest returns the full request (head and body) and the offset of the
// body's marker inside it.
func buildRequest(t target, ctype string, bodySize int, keepAlive bool) ([]byte, int) {
	var b []byte
	b = append(b, "POST "...)
	b = append(b, t.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, t.host...)
	b = append(b, "\r\nUser-Agent: upsink-bench\r\nContent-Type: "...)
	b = append(b, ctype...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(bodySize), 10)
	if !keepAlive {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	off := len(b)
	for i := range bodySize {
		b = append(b, "abcdefghijklmnopqrstuvwxyz0123456789\n"[i%37])
	}
	copy(b[off:], "ub 00000000 0000 0000000000000000\n")
	return b, off
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
	id      int
	req     []byte
	markOff int
	status  [600]int64
	errs    int64
	unans   int64
	conns   int64
	resps   int64
	errMsgs []string
}

// Load runs one load test.
func Load(cfg LoadConfig) (*LoadResult, error) {
	t, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.Conns < 1 || cfg.Conns > MaxConns:
		return nil, fmt.Errorf("-c %d out of range [1, %d]", cfg.Conns, MaxConns)
	case cfg.BodySize < markerLen || cfg.BodySize > 1<<30:
		return nil, fmt.Errorf("--body %d out of range [%d B, 1 GiB] (every body carries a %d-byte marker)", cfg.BodySize, markerLen, markerLen)
	case cfg.Count < 0 || cfg.Count > MaxCount:
		return nil, fmt.Errorf("-n %d out of range [1, %d]", cfg.Count, int64(MaxCount))
	case cfg.Duration < 0 || cfg.Duration > MaxDuration || cfg.Timeout > MaxDuration:
		return nil, fmt.Errorf("durations are capped at %s", MaxDuration)
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
	if cfg.WatchEvery <= 0 {
		cfg.WatchEvery = 100 * time.Millisecond
	}
	const grace = 10 * time.Second // answers in flight at the end may take this long

	nshards := min(cfg.Conns, 4*runtime.GOMAXPROCS(0))
	shards := make([]shard, nshards)
	for i := range shards {
		shards[i].h = hdrhistogram.New(1, int64(MaxDuration/time.Microsecond), 3)
	}
	runID := rand.Uint32()
	workers := make([]*worker, cfg.Conns)
	for i := range workers {
		req, off := buildRequest(t, cfg.ContentType, cfg.BodySize, !cfg.NoKeepAlive)
		putHex(req[off+3:off+11], uint64(runID))
		putHex(req[off+12:off+16], uint64(i))
		workers[i] = &worker{id: i, req: req, markOff: off}
	}

	watches := make([]*MemWatch, 0, len(cfg.Watch))
	for _, w := range cfg.Watch {
		watches = append(watches, WatchMem(w.Name, w.PID, cfg.WatchEvery))
	}

	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	var (
		issued atomic.Int64
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(bound)
	hard := end.Add(grace)
	timer := time.AfterFunc(bound, func() { stop.Store(true) })
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(&cfg, t, &shards[w.id%nshards], &issued, &stop, hard)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	timer.Stop()
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)

	res := &LoadResult{
		Command: cfg.Command, URL: cfg.URL, Conns: cfg.Conns, BodyBytes: cfg.BodySize,
		KeepAlive: !cfg.NoKeepAlive, Duration: cfg.Duration.Seconds(), Count: cfg.Count,
		Elapsed: elapsed.Seconds(), Status: map[string]int64{},
	}
	for _, w := range watches {
		res.Memory = append(res.Memory, w.Stop())
	}
	seen := map[string]bool{}
	for _, w := range workers {
		for code, n := range w.status {
			if n > 0 {
				res.Status[strconv.Itoa(code)] += n
			}
		}
		res.Created += w.status[201]
		res.Responses += w.resps
		res.Errors += w.errs
		res.Unanswered += w.unans
		res.Connects += w.conns
		for _, m := range w.errMsgs {
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
		res.UploadsPerSec = float64(res.Created) / s
		res.RespPerSec = float64(res.Responses) / s
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	res.CPU = CPU{User: tv(ru1.Utime) - tv(ru0.Utime), Sys: tv(ru1.Stime) - tv(ru0.Stime), NCPU: runtime.NumCPU()}
	res.CPU.Cores = (res.CPU.User + res.CPU.Sys) / elapsed.Seconds()
	return res, nil
}

func (w *worker) fail(err error) {
	w.errs++
	if len(w.errMsgs) < 4 {
		w.errMsgs = append(w.errMsgs, err.Error())
	}
}

func (w *worker) run(cfg *LoadConfig, t target, sh *shard, issued *atomic.Int64, stop *atomic.Bool, hard time.Time) {
	var (
		c   net.Conn
		rr  = newRespReader(nil)
		seq uint64
	)
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	mark := w.req[w.markOff+17 : w.markOff+33]
	d := net.Dialer{Timeout: 5 * time.Second}
	for !stop.Load() {
		if cfg.Count > 0 && issued.Add(1) > cfg.Count {
			return
		}
		if c == nil {
			var err error
			c, err = d.Dial("tcp", t.addr)
			if err != nil {
				w.fail(err)
				c = nil
				if cfg.Count > 0 {
					issued.Add(-1)
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			w.conns++
			_ = c.SetDeadline(hard)
			rr.reset(c)
		}
		seq++
		putHex(mark, seq)
		t0 := time.Now()
		if _, err := c.Write(w.req); err != nil {
			// The server may have closed an idle keep-alive connection: the
			// request was not (fully) sent; count it and retry on a new one.
			w.fail(fmt.Errorf("write: %w", err))
			c.Close()
			c = nil
			if cfg.Count > 0 {
				issued.Add(-1)
			}
			continue
		}
		resp, err := rr.read()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				w.unans++
			} else {
				w.fail(fmt.Errorf("read: %w", err))
			}
			c.Close()
			c = nil
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
		if resp.close || cfg.NoKeepAlive {
			c.Close()
			c = nil
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
	fmt.Fprintf(w, "load %s  c=%d  body=%d B  %s  %s\n", r.URL, r.Conns, r.BodyBytes, ka, bound)
	fmt.Fprintf(w, "  uploads/s   %.1f  (%d x 201 in %.2f s; all responses %.1f/s)\n", r.UploadsPerSec, r.Created, r.Elapsed, r.RespPerSec)
	fmt.Fprintf(w, "  latency     p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s, n=%d)\n",
		us(r.Latency.P50), us(r.Latency.P90), us(r.Latency.P99), us(r.Latency.P999), us(r.Latency.Max), us(int64(r.Latency.Mean)), r.Latency.N)
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
	fmt.Fprintf(w, "  errors      %d  unanswered %d  connects %d\n", r.Errors, r.Unanswered, r.Connects)
	for _, m := range r.ErrorSamples {
		fmt.Fprintf(w, "    e.g. %s\n", m)
	}
	fmt.Fprintf(w, "  tool cpu    user %.2f s  sys %.2f s  = %.2f of %d cores\n", r.CPU.User, r.CPU.Sys, r.CPU.Cores, r.CPU.NCPU)
	for _, m := range r.Memory {
		fmt.Fprintf(w, "  watched     %s (pid %d): peak RSS %s  peak PSS %s  VmHWM %s  (%d samples); CPU %.2f s = %.2f cores\n",
			m.Name, m.PID, MiB(m.PeakRSS), MiB(m.PeakPSS), MiB(m.HWM), m.Samples, m.CPU, m.Cores)
		if m.Err != "" {
			fmt.Fprintf(w, "    sampling error: %s\n", m.Err)
		}
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
