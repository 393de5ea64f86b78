package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// HandshakeConfig is a handshake-rate run: N TLS handshakes from this process,
// Parallel at a time, each on a new TCP connection closed right after.
type HandshakeConfig struct {
	Addr       string        // host:port of the TLS listener
	ServerName string        // SNI and certificate name, e.g. localhost
	Insecure   bool          // do not verify the server's certificate
	CACert     string        // trust this PEM certificate
	N          int           // handshakes
	Parallel   int           // concurrent handshakes
	Resume     bool          // resume from a session ticket obtained first
	Timeout    time.Duration // bound on the whole run
	Command    string
}

// HandshakeResult is what a handshake run saw.
type HandshakeResult struct {
	Command  string  `json:"command"`
	Addr     string  `json:"addr"`
	Resume   bool    `json:"resume"`
	N        int     `json:"n"`
	Parallel int     `json:"parallel"`
	OK       int64   `json:"ok"`
	Resumed  int64   `json:"resumed"` // handshakes the client saw resumed
	Errors   int64   `json:"errors"`
	Error    string  `json:"error_sample,omitempty"`
	Elapsed  float64 `json:"elapsed_s"`
	PerSec   float64 `json:"handshakes_per_s"`
	ToolCPU  CPU     `json:"tool_cpu"`
}

// Handshakes runs cfg. Each handshake is a full TLS handshake (or a resumed one
// with Resume) by Go's default client, ALPN http/1.1; the connection is closed
// as soon as the client's side of the handshake is done.
func Handshakes(cfg HandshakeConfig) (*HandshakeResult, error) {
	if cfg.N <= 0 || cfg.Parallel <= 0 {
		return nil, errors.New("handshakes: -n and --parallel must be positive")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	tc, err := TLSConfig(cfg.ServerName, cfg.Insecure, cfg.CACert)
	if err != nil {
		return nil, err
	}
	tc.NextProtos = []string{"http/1.1"}
	if cfg.Resume {
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(64)
		// TLS 1.3 tickets arrive after the handshake: read until one came.
		c, err := handshakeOnce(cfg.Addr, tc, 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("handshakes: priming the session cache: %w", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}
	res := &HandshakeResult{Command: cfg.Command, Addr: cfg.Addr, Resume: cfg.Resume, N: cfg.N, Parallel: cfg.Parallel}
	var (
		next     atomic.Int64
		errOnce  sync.Once
		wg       sync.WaitGroup
		deadline = time.Now().Add(cfg.Timeout)
	)
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	for range cfg.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(cfg.N) && time.Now().Before(deadline) {
				c, err := handshakeOnce(cfg.Addr, tc, 10*time.Second)
				if err != nil {
					atomic.AddInt64(&res.Errors, 1)
					errOnce.Do(func() { res.Error = err.Error() })
					continue
				}
				if c.ConnectionState().DidResume {
					atomic.AddInt64(&res.Resumed, 1)
				}
				atomic.AddInt64(&res.OK, 1)
				c.Close()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	res.Elapsed = elapsed.Seconds()
	res.PerSec = float64(res.OK) / elapsed.Seconds()
	res.ToolCPU = cpuBetween(&ru0, &ru1, elapsed)
	return res, nil
}

func handshakeOnce(addr string, tc *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	raw, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, tc)
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// FormatHandshakes prints a handshake run for people.
func FormatHandshakes(w io.Writer, r *HandshakeResult) {
	kind := "full"
	if r.Resume {
		kind = "resumed"
	}
	fmt.Fprintf(w, "%s\n  %s handshakes: %d ok (%d resumed), %d errors in %.2f s, %d at a time\n", r.Command, kind, r.OK, r.Resumed, r.Errors, r.Elapsed, r.Parallel)
	fmt.Fprintf(w, "  handshakes/s %.1f\n", r.PerSec)
	if r.Error != "" {
		fmt.Fprintf(w, "  e.g. %s\n", r.Error)
	}
	fmt.Fprintf(w, "  tool CPU %.2f cores (user %.2f s, sys %.2f s, %d CPUs)\n", r.ToolCPU.Cores, r.ToolCPU.User, r.ToolCPU.Sys, r.ToolCPU.NCPU)
}
