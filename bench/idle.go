package bench

import (
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
	Command  string
}

// IdleResult is what an idle run saw. Memory figures are bytes.
type IdleResult struct {
	Command    string           `json:"command"`
	URL        string           `json:"url"`
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
	if t.tls {
		return nil, errors.New("idle: https:// is not supported (measure plain connections)")
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
	res := &IdleResult{Command: cfg.Command, URL: cfg.URL, PID: cfg.PID, Conns: cfg.Conns, Status: map[string]int64{}}
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
				conns[i] = c
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
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
