package tlsbridge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

const helperEnv = "TLSBRIDGE_TEST_HELPER"

func lookOpenSSL() (string, error) { return exec.LookPath("openssl") }

func opensslCommand(args ...string) *exec.Cmd { return exec.Command("openssl", args...) }

// helperClients runs in a child process (see measureIdle): it opens n
// connections to addr, handshakes each and does one round trip, optionally
// sends a 256 KiB message in full-size records, prints "READY" and holds the
// connections until its stdin closes. Keeping the clients out of the
// measuring process keeps their memory out of the measurement.
//
// Env: TLSBRIDGE_TEST_HELPER = addr|n|mode|traffic|caFile, mode one of
// plain, tls, tls12, x25519 (client offers only X25519, no ML-KEM share),
// hello (send a default client's ClientHello, then nothing: the handshake
// waits for a worker or for the client).
func helperClients() {
	f := strings.Split(os.Getenv(helperEnv), "|")
	addr, mode, caFile := f[0], f[2], f[4]
	n, _ := strconv.Atoi(f[1])
	traffic := f[3] == "1"
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"http/1.1"},
		DynamicRecordSizingDisabled: true}
	switch mode {
	case "tls12":
		cfg.MaxVersion = tls.VersionTLS12
	case "x25519":
		cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	var hello []byte
	if mode == "hello" {
		a, b := net.Pipe()
		go func() { _ = tls.Client(a, cfg).Handshake() }()
		buf := make([]byte, 16<<10)
		k, err := b.Read(buf)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		hello = buf[:k]
		a.Close()
		b.Close()
	}
	conns := make([]net.Conn, n)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		info  string
	)
	sem := make(chan struct{}, 64)
	big := bytes.Repeat([]byte("q"), 256<<10)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var c net.Conn
			var err error
			if mode == "plain" || mode == "hello" {
				c, err = net.Dial("tcp", addr)
			} else {
				var tc *tls.Conn
				if tc, err = dialTLS(addr, cfg); err == nil {
					c = tc
					if i == 0 {
						st := tc.ConnectionState()
						mu.Lock()
						info = fmt.Sprintf("%s curve=%s hrr=%v", tls.VersionName(st.Version), st.CurveID, st.HelloRetryRequest)
						mu.Unlock()
					}
				}
			}
			if err == nil && mode == "hello" {
				_, err = c.Write(hello)
				conns[i] = c
				return
			}
			if err == nil {
				err = roundTrip(c, []byte("ping"))
			}
			if err == nil && traffic {
				err = roundTrip(c, big)
			}
			if err != nil {
				mu.Lock()
				first = err
				mu.Unlock()
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if first != nil {
		fmt.Println("ERR", first)
		os.Exit(1)
	}
	if mode == "hello" {
		info = fmt.Sprintf("ClientHello %d B", len(hello))
	}
	fmt.Println("READY", info)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	os.Exit(0)
}

type idleResult struct {
	perConn      float64 // HeapInuse bytes per connection
	hand, rawIn  int     // capacities inside one server tls.Conn
	charged      int64   // the bridge's budget when measured
	clientReport string
}

// measureIdle holds n client connections (in a child process) on s and
// returns the server's HeapInuse growth per connection, GC'd.
func measureIdle(t *testing.T, s *echoServer, n int, mode string, traffic bool) idleResult {
	t.Helper()
	if s.plain {
		return measureHeld(t, s, n, mode, traffic, "connections open", func() bool { return s.opened.Load()-s.closed.Load() == int64(n) })
	}
	return measureHeld(t, s, n, mode, traffic, "connections ready", func() bool { return s.ready.Load()-s.closed.Load() >= int64(n) })
}

// measureHeld is measureIdle measured once until() holds.
func measureHeld(t *testing.T, s *echoServer, n int, mode string, traffic bool, what string, until func() bool) idleResult {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: mustCert(t).Leaf.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		var m runtime.MemStats
		for range 3 {
			runtime.GC()
		}
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	open := s.opened.Load() - s.closed.Load() // the test's own, left open
	tr := "0"
	if traffic {
		tr = "1"
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join([]string{s.addr, strconv.Itoa(n), mode, tr, caFile}, "|"))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
		waitFor(t, 30*time.Second, "helper connections closed", func() bool { return s.opened.Load()-s.closed.Load() == open })
	}()
	kill := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer kill.Stop()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY") {
		t.Fatalf("helper: %q %v", line, err)
	}
	waitFor(t, 10*time.Second, what, until)
	after := heap()
	r := idleResult{perConn: (float64(after) - float64(before)) / float64(n), clientReport: strings.TrimSpace(strings.TrimPrefix(line, "READY"))}
	if s.budget != nil {
		r.charged = s.budget.Used()
	}
	if !s.plain && mode != "hello" {
		// Read two capacities inside one server-side tls.Conn (reflection,
		// read-only, tests only). The event loops are idle now.
		s.mu.Lock()
		v := reflect.ValueOf(s.sample.tls).Elem()
		s.mu.Unlock()
		r.hand = v.FieldByName("hand").FieldByName("buf").Cap()
		r.rawIn = v.FieldByName("rawInput").FieldByName("buf").Cap()
	}
	return r
}

// TestIdleMemory measures the heap an idle TLS connection costs the server,
// for several curve and feeding choices, against plain gnet connections.
// Run with -v to see the table; go test -run IdleMemory -v ./tlsbridge.
func TestIdleMemory(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("memory measurement: not under -race or -short")
	}
	const n = 2000
	plain := startPlainServer(t)
	p := measureIdle(t, plain, n, "plain", false)
	plain.stop()
	t.Logf("plain gnet connection: %.0f B/conn", p.perConn)

	x25519Only := func(b *Bridge) { b.tlsConfig.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256} }
	unlimited := func(b *Bridge) { b.unlimitedFeed = true }
	noSplit := func(b *Bridge) { b.noHelloSplit = true }
	cases := []struct {
		name    string
		mode    string
		traffic bool
		tweak   func(*Bridge)
		chosen  bool
	}{
		{"TLS1.3, client hello w/ X25519MLKEM768+X25519 shares, server default curves [chosen]", "tls", false, nil, true},
		{"  same, ClientHello record passed on whole (no split)", "tls", false, noSplit, false},
		{"  same, server curves X25519/P-256 only", "tls", false, x25519Only, false},
		{"  same, server X25519/P-256 only, no split", "tls", false, func(b *Bridge) { x25519Only(b); noSplit(b) }, false},
		{"  same, unlimited feed (no split, no record limit)", "tls", false, unlimited, false},
		{"TLS1.3, client offers X25519 only (small hello)", "x25519", false, nil, false},
		{"TLS1.2 client", "tls12", false, nil, false},
		{"TLS1.3 after a 256 KiB message in full-size records, one record per feed [chosen]", "tls", true, nil, true},
		{"  same, unlimited feed", "tls", true, unlimited, false},
	}
	for _, c := range cases {
		s := startServer(t, Config{}, c.tweak)
		r := measureIdle(t, s, n, c.mode, c.traffic)
		s.stop()
		t.Logf("%-85s %6.0f B/conn total, %6.0f B/conn TLS (over plain); server tls.Conn hand cap %5d, rawInput cap %5d; client saw %s",
			c.name, r.perConn, r.perConn-p.perConn, r.hand, r.rawIn, r.clientReport)
		if c.chosen && !c.traffic {
			if r.perConn > 16<<10 {
				t.Errorf("%s: %.0f B per idle TLS connection, want < 16 KiB", c.name, r.perConn)
			}
			if r.rawIn > 1024 {
				t.Errorf("%s: rawInput capacity %d after the handshake: the ClientHello split did not keep it minimal", c.name, r.rawIn)
			}
		}
		if c.chosen && c.traffic && r.rawIn > 20<<10 {
			t.Errorf("%s: rawInput capacity %d, want about one record", c.name, r.rawIn)
		}
	}
}

// TestWaitingMemory measures what a connection waiting on the wait list costs
// the server: its Conn and its ClientHello (split, in the inbox), no
// goroutine, no tls.Conn. The only worker is parked on a stalled client, so
// n connections that sent a whole ClientHello all wait.
func TestWaitingMemory(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("memory measurement: not under -race or -short")
	}
	const n = 2000
	plain := startPlainServer(t)
	p := measureIdle(t, plain, n, "plain", false)
	plain.stop()

	s := startServer(t, Config{Workers: 1, HandshakeTimeout: time.Minute}, nil)
	parked := stalledClient(t, s.addr, clientHello(t))
	defer parked.Close()
	waitFor(t, 10*time.Second, "the worker parked", func() bool {
		st := s.b.Stats()
		return st.InFlight == 1 && st.Waiting == 0
	})
	r := measureHeld(t, s, n, "hello", false, "connections waiting", func() bool { return s.b.Stats().Waiting == n })
	charged := float64(r.charged) / n
	t.Logf("waiting connection: %.0f B/conn total, %.0f B/conn over a plain gnet connection (%.0f B); of it charged to the budget %.0f B/conn (%s); Conn struct %d B",
		r.perConn, r.perConn-p.perConn, p.perConn, charged, r.clientReport, unsafe.Sizeof(Conn{}))
	if r.perConn-p.perConn > 4<<10 {
		t.Errorf("%.0f B per waiting connection over plain, want < 4 KiB (Conn + hello)", r.perConn-p.perConn)
	}
	if st := s.b.Stats(); st.Rejected+st.OverCap+st.OverBudget != 0 {
		t.Errorf("stats %+v", st)
	}
	if charged < 1000 || charged > 4<<10 {
		t.Errorf("%.0f B charged per waiting connection, want its ClientHello", charged)
	}
}
