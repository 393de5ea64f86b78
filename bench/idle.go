package bench

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// IdleConfig is one idle-connection memory measurement.
type IdleConfig struct {
	URL      string        // a GET target, e.g. http://127.0.0.1:8080/healthz
	Conns    int           // connections to open and hold
	Hold     time.Duration // how long to hold them idle (the server's idle timeout must exceed it)
	PID      int           // server process to sample (0: no memory figures)
	Parallel int           // concurrent dials
	Watch    []WatchSpec   // more processes sampled every 100 ms (PID is added as "server")
	WatchTSV string        // write those samples here
	Plot     string        // and draw them to PLOT.png, PLOT.svg
	Insecure bool          // https: do not verify the server's certificate
	CACert   string        // https: trust this PEM certificate
	Command  string
}

// IdleResult is what an idle run saw. Memory figures are bytes.
type IdleResult struct {
	Command    string           `json:"command"`
	URL        string           `json:"url"`
	TLS        bool             `json:"tls,omitempty"` // https: each connection did a full TLS handshake first
	PID        int              `json:"pid,omitempty"`
	Conns      int              `json:"conns"`
	Opened     int              `json:"opened"`
	Answered   int              `json:"answered"`
	Status     map[string]int64 `json:"status"`
	Errors     int              `json:"errors"`
	ErrSamples []string         `json:"error_samples,omitempty"`
	OpenSecs   float64          `json:"open_s"`
	HoldSecs   float64          `json:"hold_s"`
	StillOpen  int              `json:"still_open"` // answered connections the server had not closed after the hold
	Before     Mem              `json:"before"`     // 0 connections, sampled first
	Held       Mem              `json:"held"`       // last sample while holding
	HeldMax    Mem              `json:"held_max"`   // highest RSS/PSS while holding
	After      Mem              `json:"after"`      // 1 s after closing them all
	Samples    int              `json:"samples"`
	PerConnRSS float64          `json:"per_conn_rss"` // (Held.RSS-Before.RSS)/Answered
	PerConnPSS float64          `json:"per_conn_pss"`
	Memory     []WatchResult    `json:"memory,omitempty"` // --watch (and --pid) over the whole run
	TCPMemPeak int64            `json:"tcp_mem_peak,omitempty"`
	WatchTSV   string           `json:"watch_tsv,omitempty"`
	Plots      []string         `json:"plots,omitempty"`
}

// Idle opens cfg.Conns keep-alive connections, sends one GET on each, reads
// its answer, holds them all idle and samples the server's memory meanwhile.
func Idle(cfg IdleConfig) (*IdleResult, error) {
	t, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	if t.tls {
		if tlsCfg, err = TLSConfig(t.server, cfg.Insecure, cfg.CACert); err != nil {
			return nil, err
		}
		tlsCfg.NextProtos = []string{"http/1.1"}
	}
	if cfg.Conns < 1 || cfg.Conns > MaxConns {
		return nil, fmt.Errorf("-c %d out of range [1, %d]", cfg.Conns, MaxConns)
	}
	if cfg.Hold <= 0 {
		cfg.Hold = 5 * time.Second
	}
	if cfg.Hold > 10*time.Minute {
		return nil, fmt.Errorf("--hold is capped at 10m")
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 64
	}
	res := &IdleResult{Command: cfg.Command, URL: cfg.URL, TLS: t.tls, PID: cfg.PID, Conns: cfg.Conns, Status: map[string]int64{}}
	sample := func() (Mem, error) {
		if cfg.PID == 0 {
			return Mem{}, nil
		}
		return ReadMem(cfg.PID)
	}
	if res.Before, err = sample(); err != nil {
		return nil, err
	}
	var smp *Sampler
	if len(cfg.Watch) > 0 || cfg.WatchTSV != "" || cfg.Plot != "" {
		w := cfg.Watch
		if cfg.PID != 0 {
			w = append([]WatchSpec{{Name: "server", PID: cfg.PID}}, w...)
		}
		if smp, err = StartSampler(SamplerConfig{Watch: w, TSV: cfg.WatchTSV}); err != nil {
			return nil, err
		}
		defer func() {
			if smp != nil {
				smp.Stop()
			}
		}()
	}

	req := []byte("GET " + t.path + " HTTP/1.1\r\nHost: " + t.host + "\r\nUser-Agent: upsink-bench\r\n\r\n")
	conns := make([]net.Conn, cfg.Conns)
	ok := make([]bool, cfg.Conns)
	var (
		next   atomic.Int64
		mu     sync.Mutex
		wg     sync.WaitGroup
		failed int
	)
	fail := func(err error) {
		mu.Lock()
		failed++
		if len(res.ErrSamples) < 8 {
			res.ErrSamples = append(res.ErrSamples, err.Error())
		}
		mu.Unlock()
	}
	t0 := time.Now()
	deadline := t0.Add(2*time.Minute + cfg.Hold)
	for range cfg.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr := newRespReader(nil)
			d := net.Dialer{Timeout: 10 * time.Second}
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.Conns {
					return
				}
				c, err := d.Dial("tcp", t.addr)
				if err != nil {
					fail(err)
					continue
				}
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if tlsCfg != nil {
					tc := tls.Client(c, tlsCfg)
					if err := tc.Handshake(); err != nil {
						c.Close()
						fail(fmt.Errorf("tls: %w", err))
						continue
					}
					c = tc
				}
				conns[i] = c
				if _, err := c.Write(req); err != nil {
					fail(err)
					continue
				}
				rr.reset(c)
				r, err := rr.read()
				if err != nil {
					fail(err)
					continue
				}
				_ = c.SetDeadline(deadline)
				mu.Lock()
				res.Status[fmt.Sprint(r.status)]++
				mu.Unlock()
				ok[i] = !r.close
			}
		}()
	}
	wg.Wait()
	res.OpenSecs = time.Since(t0).Seconds()
	res.Errors = failed
	for i, c := range conns {
		if c != nil {
			res.Opened++
		}
		if ok[i] {
			res.Answered++
		}
	}

	// Hold: let the server settle, then sample every 100 ms.
	h0 := time.Now()
	time.Sleep(min(cfg.Hold/4, time.Second))
	var samples []Mem
	for {
		m, err := sample()
		if err != nil {
			return nil, err
		}
		samples = append(samples, m)
		res.HeldMax.RSS = max(res.HeldMax.RSS, m.RSS)
		res.HeldMax.PSS = max(res.HeldMax.PSS, m.PSS)
		res.HeldMax.HWM = max(res.HeldMax.HWM, m.HWM)
		if time.Since(h0) >= cfg.Hold {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.HoldSecs = time.Since(h0).Seconds()
	res.Held = samples[len(samples)-1]
	res.Samples = len(samples)

	// Which answered connections are still open? A read that times out means
	// the server still holds it; EOF means it was closed.
	res.StillOpen = stillOpen(conns, ok, cfg.Parallel)

	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	time.Sleep(time.Second)
	res.After, _ = sample()
	if smp != nil {
		sr := smp.Stop()
		res.Memory, res.TCPMemPeak, res.WatchTSV = sr.Procs, sr.TCPMemPeak, cfg.WatchTSV
		if cfg.Plot != "" {
			files, err := PlotMemory(smp, cfg.Plot, "memory during "+shortCmd(cfg.Command))
			if err != nil {
				res.ErrSamples = append(res.ErrSamples, "plot: "+err.Error())
			}
			res.Plots = files
		}
		smp = nil
	}
	if res.Answered > 0 && cfg.PID != 0 {
		res.PerConnRSS = float64(res.Held.RSS-res.Before.RSS) / float64(res.Answered)
		res.PerConnPSS = float64(res.Held.PSS-res.Before.PSS) / float64(res.Answered)
	}
	return res, nil
}

func stillOpen(conns []net.Conn, ok []bool, par int) int {
	var (
		n    atomic.Int64
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b [1]byte
			for {
				i := int(next.Add(1)) - 1
				if i >= len(conns) {
					return
				}
				if !ok[i] {
					continue
				}
				_ = conns[i].SetReadDeadline(time.Now().Add(5 * time.Millisecond))
				_, err := conns[i].Read(b[:])
				if errors.Is(err, os.ErrDeadlineExceeded) {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(n.Load())
}

// FormatIdle writes the human-readable summary.
func FormatIdle(w io.Writer, r *IdleResult) {
	fmt.Fprintf(w, "idle %s  c=%d  pid=%d\n", r.URL, r.Conns, r.PID)
	if r.TLS {
		fmt.Fprintf(w, "  TLS: a full handshake on every connection before its GET\n")
	}
	codes := make([]string, 0, len(r.Status))
	for k := range r.Status {
		codes = append(codes, k)
	}
	sort.Strings(codes)
	fmt.Fprintf(w, "  opened %d, answered keep-alive %d in %.2f s, errors %d, status", r.Opened, r.Answered, r.OpenSecs, r.Errors)
	for _, k := range codes {
		fmt.Fprintf(w, " %s:%d", k, r.Status[k])
	}
	fmt.Fprintln(w)
	for _, m := range r.ErrSamples {
		fmt.Fprintf(w, "    e.g. %s\n", m)
	}
	fmt.Fprintf(w, "  held %.1f s; still open afterwards: %d of %d\n", r.HoldSecs, r.StillOpen, r.Answered)
	if r.PID != 0 {
		fmt.Fprintf(w, "  RSS  before %s  held %s (max %s)  after close %s\n", MiB(r.Before.RSS), MiB(r.Held.RSS), MiB(r.HeldMax.RSS), MiB(r.After.RSS))
		fmt.Fprintf(w, "  PSS  before %s  held %s (max %s)  after close %s\n", MiB(r.Before.PSS), MiB(r.Held.PSS), MiB(r.HeldMax.PSS), MiB(r.After.PSS))
		fmt.Fprintf(w, "  per idle connection: RSS %.0f B  PSS %.0f B\n", r.PerConnRSS, r.PerConnPSS)
	}
	formatMemory(w, r.Memory, r.TCPMemPeak)
	if r.WatchTSV != "" || len(r.Plots) > 0 {
		fmt.Fprintf(w, "  samples     %s  %s\n", r.WatchTSV, strings.Join(r.Plots, " "))
	}
}

// StallConfig is one "handshakes in flight" measurement: Conns connections
// to a TLS port that each send a complete ClientHello and then never answer
// the server's flight, held for Hold while the server's memory is sampled
// and a health URL is probed.
type StallConfig struct {
	URL      string        // https://host:port/ (the TLS port; the path is not used)
	Conns    int           // connections, each one ClientHello then silence
	Hold     time.Duration // from the first dial; should exceed the server's handshake timeout
	PID      int           // server process sampled every 100 ms (0: none)
	Parallel int           // concurrent dialers
	Probe    []string      // GET these once every 100 ms meanwhile, each on a fresh connection (http:// or https://)
	Insecure bool          // https probes: do not verify the certificate
	CACert   string        // https probes: trust this PEM certificate
	Watch    []WatchSpec
	WatchTSV string
	Command  string
}

// ProbeResult is what the GETs of one URL saw during a stall run.
type ProbeResult struct {
	URL        string   `json:"url"`
	Sent       int      `json:"sent"`
	OK         int      `json:"ok"` // 200 within the probe timeout (2 s)
	Failed     int      `json:"failed"`
	P50us      int64    `json:"p50_us"`
	MaxUs      int64    `json:"max_us"`
	ErrSamples []string `json:"error_samples,omitempty"`
}

// StallResult is what a stall run saw (client side: the server's own
// counters are not visible from outside).
type StallResult struct {
	Command     string        `json:"command"`
	URL         string        `json:"url"`
	PID         int           `json:"pid,omitempty"`
	Conns       int           `json:"conns"`
	HelloBytes  int           `json:"hello_bytes"` // size of the ClientHello (first connection's; all are alike)
	Opened      int           `json:"opened"`      // connected and ClientHello written
	DialErrors  int           `json:"dial_errors"`
	OpenSecs    float64       `json:"open_s"`
	HoldSecs    float64       `json:"hold_s"`
	MaxPending  int           `json:"max_pending"`     // most connections open (not closed by the server) at one time
	ClosedFast  int           `json:"closed_fast"`     // closed by the server within 1 s of the ClientHello
	ClosedLater int           `json:"closed_later"`    // closed by the server later, during the hold
	StillOpen   int           `json:"still_open"`      // not closed by the server at the end of the hold
	GotBytes    int           `json:"got_flight"`      // connections that received bytes from the server (its handshake flight)
	CloseMinS   float64       `json:"close_min_s"`     // of ClosedLater: seconds from ClientHello to close
	CloseMedS   float64       `json:"close_median_s"`  //
	CloseMaxS   float64       `json:"close_max_s"`     //
	Before      Mem           `json:"before"`          // 0 connections
	Peak        Mem           `json:"peak"`            // highest RSS / PSS sampled during the run
	After       Mem           `json:"after"`           // 1 s after the tool closed everything
	PerPending  float64       `json:"per_pending_rss"` // (Peak.RSS-Before.RSS)/MaxPending
	Probes      []ProbeResult `json:"probes,omitempty"`
	Memory      []WatchResult `json:"memory,omitempty"`
	ErrSamples  []string      `json:"error_samples,omitempty"`
}

// clientHello returns the ClientHello crypto/tls (default client settings:
// TLS 1.3 with X25519MLKEM768) sends to serverName, as bytes on the wire.
func clientHello(serverName string) ([]byte, error) {
	hc := &helloConn{}
	c := tls.Client(hc, &tls.Config{ServerName: serverName, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	_ = c.Handshake() // fails at the first read, after the ClientHello was written
	if hc.buf.Len() < 5 || hc.buf.Bytes()[0] != 22 {
		return nil, errors.New("no ClientHello captured")
	}
	return hc.buf.Bytes(), nil
}

type helloConn struct{ buf bytes.Buffer }

func (h *helloConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (h *helloConn) Write(p []byte) (int, error)      { return h.buf.Write(p) }
func (h *helloConn) Close() error                     { return nil }
func (h *helloConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (h *helloConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (h *helloConn) SetDeadline(time.Time) error      { return nil }
func (h *helloConn) SetReadDeadline(time.Time) error  { return nil }
func (h *helloConn) SetWriteDeadline(time.Time) error { return nil }

// Stall opens cfg.Conns connections that each send a ClientHello (a fresh
// one per connection) and then stall: the server's flight is read and
// discarded, nothing more is sent. A reader per connection notes when the
// server closes it.
func Stall(cfg StallConfig) (*StallResult, error) {
	t, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	if !t.tls {
		return nil, errors.New("stall: the URL must be https:// (the TLS port)")
	}
	if cfg.Conns < 1 || cfg.Conns > MaxConns {
		return nil, fmt.Errorf("-c %d out of range [1, %d]", cfg.Conns, MaxConns)
	}
	if cfg.Hold <= 0 {
		cfg.Hold = 12 * time.Second
	}
	if cfg.Hold > 10*time.Minute {
		return nil, fmt.Errorf("--hold is capped at 10m")
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 64
	}
	var probeTLS *tls.Config
	probes := make([]target, len(cfg.Probe))
	for i, u := range cfg.Probe {
		if probes[i], err = parseTarget(u); err != nil {
			return nil, err
		}
		if probes[i].tls && probeTLS == nil {
			if probeTLS, err = TLSConfig(probes[i].server, cfg.Insecure, cfg.CACert); err != nil {
				return nil, err
			}
		}
	}
	res := &StallResult{Command: cfg.Command, URL: cfg.URL, PID: cfg.PID, Conns: cfg.Conns}
	if hello, err := clientHello(t.server); err != nil {
		return nil, err
	} else {
		res.HelloBytes = len(hello)
	}
	if cfg.PID != 0 {
		if res.Before, err = ReadMem(cfg.PID); err != nil {
			return nil, err
		}
	}
	w := cfg.Watch
	if cfg.PID != 0 {
		w = append([]WatchSpec{{Name: "server", PID: cfg.PID}}, w...)
	}
	smp, err := StartSampler(SamplerConfig{Watch: w, TSV: cfg.WatchTSV})
	if err != nil {
		return nil, err
	}
	defer func() {
		if smp != nil {
			smp.Stop()
		}
	}()

	var (
		mu       sync.Mutex
		next     atomic.Int64
		pending  atomic.Int64
		maxPend  atomic.Int64
		gotBytes atomic.Int64
		wg       sync.WaitGroup
		readers  sync.WaitGroup
		failed   int
		closedAt = make([]time.Duration, cfg.Conns) // from the ClientHello; 0: open
		conns    = make([]net.Conn, cfg.Conns)
	)
	fail := func(err error) {
		mu.Lock()
		failed++
		if len(res.ErrSamples) < 8 {
			res.ErrSamples = append(res.ErrSamples, err.Error())
		}
		mu.Unlock()
	}
	t0 := time.Now()
	end := t0.Add(cfg.Hold)
	stop := make(chan struct{})

	// Probes, one goroutine per URL, one GET at a time, every 100 ms.
	probeRes := make([]ProbeResult, len(probes))
	var pwg sync.WaitGroup
	for i, pt := range probes {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			pr := &probeRes[i]
			pr.URL = cfg.Probe[i]
			var lat []int64
			for {
				select {
				case <-stop:
					if len(lat) > 0 {
						sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
						pr.P50us, pr.MaxUs = lat[len(lat)/2], lat[len(lat)-1]
					}
					return
				case <-time.After(100 * time.Millisecond):
				}
				pr.Sent++
				t1 := time.Now()
				err := probeOnce(pt, probeTLS, 2*time.Second)
				if err != nil {
					pr.Failed++
					if len(pr.ErrSamples) < 4 {
						pr.ErrSamples = append(pr.ErrSamples, err.Error())
					}
					continue
				}
				pr.OK++
				lat = append(lat, time.Since(t1).Microseconds())
			}
		}()
	}

	for range cfg.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: 5 * time.Second}
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.Conns || time.Now().After(end) {
					return
				}
				hello, err := clientHello(t.server)
				if err != nil {
					fail(err)
					continue
				}
				c, err := d.Dial("tcp", t.addr)
				if err != nil {
					fail(err)
					continue
				}
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(hello); err != nil {
					c.Close()
					fail(err)
					continue
				}
				sent := time.Now()
				conns[i] = c
				maxAtomic(&maxPend, pending.Add(1))
				readers.Add(1)
				go func() {
					defer readers.Done()
					_ = c.SetReadDeadline(end)
					var b [4096]byte
					got := false
					for {
						n, err := c.Read(b[:])
						if n > 0 && !got {
							got = true
							gotBytes.Add(1)
						}
						if err != nil {
							if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed) {
								closedAt[i] = max(time.Since(sent), time.Nanosecond)
								pending.Add(-1)
							}
							return
						}
					}
				}()
			}
		}()
	}
	wg.Wait()
	res.OpenSecs = time.Since(t0).Seconds()
	time.Sleep(time.Until(end))
	readers.Wait() // every reader has hit the deadline or seen the close
	res.HoldSecs = time.Since(t0).Seconds()
	close(stop)
	pwg.Wait()
	res.Probes = probeRes
	res.DialErrors = failed
	res.MaxPending = int(maxPend.Load())
	res.GotBytes = int(gotBytes.Load())
	var later []float64
	for i, c := range conns {
		if c == nil {
			continue
		}
		res.Opened++
		switch d := closedAt[i]; {
		case d == 0:
			res.StillOpen++
		case d <= time.Second:
			res.ClosedFast++
		default:
			res.ClosedLater++
			later = append(later, d.Seconds())
		}
		c.Close()
	}
	if len(later) > 0 {
		sort.Float64s(later)
		res.CloseMinS, res.CloseMedS, res.CloseMaxS = later[0], later[len(later)/2], later[len(later)-1]
	}
	time.Sleep(time.Second)
	sr := smp.Stop()
	smp = nil
	res.Memory = sr.Procs
	if cfg.PID != 0 {
		res.After, _ = ReadMem(cfg.PID)
		for _, p := range sr.Procs {
			if p.Name == "server" {
				res.Peak = Mem{RSS: p.PeakRSS, PSS: p.PeakPSS, HWM: p.HWM}
			}
		}
		if res.MaxPending > 0 {
			res.PerPending = float64(res.Peak.RSS-res.Before.RSS) / float64(res.MaxPending)
		}
	}
	return res, nil
}

func maxAtomic(a *atomic.Int64, v int64) {
	for {
		o := a.Load()
		if v <= o || a.CompareAndSwap(o, v) {
			return
		}
	}
}

// probeOnce GETs t on a fresh connection (a full handshake for https) and
// wants a 200 within timeout.
func probeOnce(t target, tc *tls.Config, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", t.addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if t.tls {
		tl := tls.Client(c, tc)
		if err := tl.Handshake(); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		c = tl
	}
	if _, err := io.WriteString(c, "GET "+t.path+" HTTP/1.1\r\nHost: "+t.host+"\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	r, err := newRespReader(c).read()
	if err != nil {
		return err
	}
	if r.status != 200 {
		return fmt.Errorf("status %d", r.status)
	}
	return nil
}

// FormatStall writes the human-readable summary.
func FormatStall(w io.Writer, r *StallResult) {
	fmt.Fprintf(w, "stall %s  c=%d  pid=%d  ClientHello %d B\n", r.URL, r.Conns, r.PID, r.HelloBytes)
	fmt.Fprintf(w, "  opened %d in %.2f s (dial/write errors %d), held %.1f s, most pending at once %d\n", r.Opened, r.OpenSecs, r.DialErrors, r.HoldSecs, r.MaxPending)
	for _, m := range r.ErrSamples {
		fmt.Fprintf(w, "    e.g. %s\n", m)
	}
	fmt.Fprintf(w, "  closed by the server: within 1 s %d, later %d (%.1f / %.1f / %.1f s min/median/max); still open %d; got the server's flight %d\n",
		r.ClosedFast, r.ClosedLater, r.CloseMinS, r.CloseMedS, r.CloseMaxS, r.StillOpen, r.GotBytes)
	if r.PID != 0 {
		fmt.Fprintf(w, "  RSS  before %s  peak %s  after close %s;  per pending handshake %.0f B\n", MiB(r.Before.RSS), MiB(r.Peak.RSS), MiB(r.After.RSS), r.PerPending)
	}
	for _, p := range r.Probes {
		fmt.Fprintf(w, "  probe %s: %d sent, %d ok, %d failed, p50 %.1f ms, max %.1f ms\n", p.URL, p.Sent, p.OK, p.Failed, float64(p.P50us)/1000, float64(p.MaxUs)/1000)
		for _, e := range p.ErrSamples {
			fmt.Fprintf(w, "    e.g. %s\n", e)
		}
	}
}
