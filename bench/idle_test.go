package bench

import (
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func tlsTestServer(t *testing.T, readHeaderTimeout time.Duration) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Config.ReadHeaderTimeout = readHeaderTimeout // also net/http's handshake timeout
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, ca
}

// idle over https: every connection handshakes (certificate checked with
// --cacert), is answered and stays open.
func TestIdleTLS(t *testing.T) {
	srv, ca := tlsTestServer(t, 0)
	r, err := Idle(IdleConfig{URL: srv.URL + "/healthz", Conns: 20, Hold: 200 * time.Millisecond, Parallel: 4, CACert: ca})
	if err != nil {
		t.Fatal(err)
	}
	if !r.TLS || r.Answered != 20 || r.StillOpen != 20 || r.Errors != 0 || r.Status["200"] != 20 {
		t.Fatalf("%+v", r)
	}
	// Without the certificate every handshake fails.
	r, err = Idle(IdleConfig{URL: srv.URL + "/healthz", Conns: 3, Hold: 100 * time.Millisecond})
	if err != nil || r.Answered != 0 || r.Errors != 3 || !strings.Contains(strings.Join(r.ErrSamples, " "), "certificate") {
		t.Fatalf("unverified: %v %+v", err, r)
	}
}

func TestClientHello(t *testing.T) {
	h, err := clientHello("localhost")
	if err != nil {
		t.Fatal(err)
	}
	// One handshake record holding one ClientHello (type 1).
	if len(h) < 9 || h[0] != 22 || int(h[3])<<8|int(h[4]) != len(h)-5 || h[5] != 1 {
		t.Fatalf("% x", h[:min(len(h), 16)])
	}
}

// stall against net/http with a 1.2 s handshake timeout: every stalled
// handshake is closed by the server after about that, none within 1 s; the
// https probe still gets through (one goroutine per connection).
func TestStallTimeout(t *testing.T) {
	srv, ca := tlsTestServer(t, 1200*time.Millisecond)
	r, err := Stall(StallConfig{URL: srv.URL + "/", Conns: 30, Hold: 2500 * time.Millisecond, Parallel: 8, Probe: []string{srv.URL + "/healthz"}, CACert: ca, PID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if r.Opened != 30 || r.ClosedLater != 30 || r.ClosedFast != 0 || r.StillOpen != 0 || r.MaxPending != 30 || r.HelloBytes < 100 {
		t.Fatalf("%+v", r)
	}
	if r.CloseMinS < 1.1 || r.CloseMaxS > 2.5 {
		t.Fatalf("closed after %.2f..%.2f s", r.CloseMinS, r.CloseMaxS)
	}
	if r.GotBytes != 30 {
		t.Fatalf("server flight seen on %d of 30", r.GotBytes)
	}
	if len(r.Probes) != 1 || r.Probes[0].Sent == 0 || r.Probes[0].OK != r.Probes[0].Sent {
		t.Fatalf("probe %+v", r.Probes)
	}
	if r.Peak.RSS == 0 || r.Before.RSS == 0 {
		t.Fatalf("memory %+v %+v", r.Before, r.Peak)
	}
}

// A server that closes every connection at once: all closed within 1 s,
// and a failing plain probe is counted as failed.
func TestStallClosedAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	r, err := Stall(StallConfig{URL: "https://" + ln.Addr().String() + "/", Conns: 10, Hold: 500 * time.Millisecond, Probe: []string{"http://" + ln.Addr().String() + "/healthz"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Opened+r.DialErrors != 10 || r.ClosedFast != r.Opened || r.StillOpen != 0 || r.ClosedLater != 0 {
		t.Fatalf("%+v", r)
	}
	if p := r.Probes[0]; p.Sent == 0 || p.OK != 0 || p.Failed != p.Sent {
		t.Fatalf("probe %+v", p)
	}
	if _, err := Stall(StallConfig{URL: "http://" + ln.Addr().String() + "/", Conns: 1}); err == nil {
		t.Fatal("http:// accepted")
	}
}
