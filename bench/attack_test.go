package bench

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"upsink/internal/testdb"
	"upsink/internal/testnet"
	"upsink/server"
	"upsink/store"
	"upsink/tlsbridge"
)

const ssSample = `ESTAB 5000   0      127.0.0.1:18999 127.0.0.1:36472
	 skmem:(r5832,rb131072,t0,tb3939840,f2360,w0,o0,bl0,d0)
ESTAB 0      1200   127.0.0.1:18999 127.0.0.1:36474
	 skmem:(r0,rb131072,t2304,tb2626560,f1792,w2304,o0,bl0,d0)
`

func TestParseSkmem(t *testing.T) {
	s, err := parseSkmem([]byte(ssSample))
	if err != nil {
		t.Fatal(err)
	}
	want := Skmem{Sockets: 2, Rmem: 5832, Wmem: 2304, Queued: 2304, Fwd: 2360 + 1792, RcvBuf: 2 * 131072, SndBuf: 3939840 + 2626560}
	if s != want || s.Charged() != 5832+2304+2360+1792 {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	if s, err := parseSkmem(nil); err != nil || s.Sockets != 0 {
		t.Fatalf("empty: %+v %v", s, err)
	}
	if _, err := parseSkmem([]byte("skmem:(r1,rbx)")); err == nil {
		t.Fatal("bad field accepted")
	}
	if _, err := parseSkmem([]byte("skmem:(r1")); err == nil {
		t.Fatal("unterminated skmem accepted")
	}
	n, err := CountFDs(os.Getpid())
	if err != nil || n < 3 {
		t.Fatalf("CountFDs: %d %v", n, err)
	}
	if !procAlive(os.Getpid()) || procAlive(1<<30) {
		t.Fatal("procAlive")
	}
}

// The same seed makes the same requests, and every mutation class occurs.
func TestFuzzerDeterministic(t *testing.T) {
	tg, _ := parseTarget("http://127.0.0.1:9/upload/f")
	a, b := newFuzzer(tg, rand.New(rand.NewPCG(7, 1))), newFuzzer(tg, rand.New(rand.NewPCG(7, 1)))
	pipelined, half := 0, 0
	for range 2000 {
		ra, na, ha := a.next()
		rb, nb, hb := b.next()
		if !bytes.Equal(ra, rb) || na != nb || ha != hb {
			t.Fatal("same seed, different requests")
		}
		if na > 1 {
			pipelined++
		}
		if ha {
			half++
		}
	}
	if pipelined < 20 || half < 200 {
		t.Fatalf("pipelined %d, half-closed %d of 2000", pipelined, half)
	}
}

// waitFor polls cond every 20 ms until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAttacksShort runs every attack at a small scale against a real upsink
// (in this process, on a real MariaDB) and asserts what issue 7 demands: the
// server stays up, the polite client's uploads are answered 201 (≥ 99 %),
// and once the attack's connections are gone, no connection and no byte of
// the in-flight budget is left.
func TestAttacksShort(t *testing.T) {
	if testing.Short() {
		t.Skip("attacks a real server for ~40 s")
	}
	dsn := testdb.New(t)
	dir := t.TempDir()
	certFile, keyFile, err := tlsbridge.GenerateSelfSigned(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tlsbridge.LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addrs := testnet.FreeAddrs(t, 2) // distinct: FreeAddr twice can return one port
	plain, secure := addrs[0], addrs[1]
	srv, err := server.New(server.Config{Listen: plain, TLSListen: secure, TLS: tlsbridge.Config{Certificate: cert},
		Store: store.Config{DSN: dsn}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case err := <-errc:
		t.Fatalf("serve: %v", err)
	case <-srv.Booted():
	case <-time.After(20 * time.Second):
		t.Fatal("server did not boot within 20 s")
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	if !waitFor(30*time.Second, func() bool {
		return probeOnce(target{addr: plain, host: plain, path: "/readyz"}, nil, 2*time.Second) == nil
	}) {
		t.Fatal("/readyz not 200 within 30 s")
	}
	httpURL, httpsURL := "http://"+plain+"/upload/attack", "https://"+secure+"/upload/attack"

	const d = 2500 * time.Millisecond
	for _, tc := range []struct {
		name string // the subtest (default the kind)
		cfg  AttackConfig
		// Fails against the server before issue 7's hardening; see the
		// comment at the assertion it names.
		failsToday string
	}{
		{cfg: AttackConfig{Kind: "slowloris", URL: httpURL, Conns: 50, Interval: 500 * time.Millisecond}},
		// Point 3 and 4: 50 bodies declaring 1 MiB reserve 50 MiB of the
		// 32 MiB budget up front; the polite uploads get 503 (measured:
		// ~20 % 201) until --min-body-rate and charging what arrived land.
		{cfg: AttackConfig{Kind: "slowbody", URL: httpURL, Conns: 50, Interval: 500 * time.Millisecond}, failsToday: "polite"},
		{cfg: AttackConfig{Kind: "slowread", URL: httpURL, Conns: 50, Count: 2000}},
		{cfg: AttackConfig{Kind: "tlsearly", URL: httpsURL, PoliteURL: httpsURL, Stalled: 20, Conns: 30, Junk: 256 << 10}},
		{cfg: AttackConfig{Kind: "storm", URL: httpsURL, PoliteURL: httpsURL, Conns: 50, Retries: 3}},
		{cfg: AttackConfig{Kind: "headerflood", URL: httpURL, Conns: 8, HeadBytes: 256 << 10}},
		{cfg: AttackConfig{Kind: "trailerflood", URL: httpURL, Conns: 8, HeadBytes: 256 << 10}},
		{cfg: AttackConfig{Kind: "fuzz", URL: httpURL, Conns: 16, Count: 5000, Seed: 42}},
		{cfg: AttackConfig{Kind: "push", URL: httpURL, Conns: 50, Body: 16 << 10}},
		// HTTP/2 (attack_h2.go): h2c with prior knowledge, and h2 by ALPN.
		{name: "h2rapidreset-h2c", cfg: AttackConfig{Kind: "h2rapidreset", URL: httpURL, Conns: 16}},
		{name: "h2rapidreset-tls", cfg: AttackConfig{Kind: "h2rapidreset", URL: httpsURL, PoliteURL: httpURL, Conns: 8}},
		{name: "h2madeyoureset-h2c", cfg: AttackConfig{Kind: "h2madeyoureset", URL: httpURL, Conns: 16}},
		{name: "h2continuation-h2c", cfg: AttackConfig{Kind: "h2continuation", URL: httpURL, Conns: 8}},
		{name: "h2continuation-tls", cfg: AttackConfig{Kind: "h2continuation", URL: httpsURL, PoliteURL: httpURL, Conns: 8}},
		{name: "h2ping-h2c", cfg: AttackConfig{Kind: "h2ping", URL: httpURL, Conns: 8}},
		{name: "h2settings-h2c", cfg: AttackConfig{Kind: "h2settings", URL: httpURL, Conns: 8}},
		{name: "h2emptydata-tls", cfg: AttackConfig{Kind: "h2emptydata", URL: httpsURL, PoliteURL: httpURL, Conns: 8}},
		{name: "h2hpackbomb-h2c", cfg: AttackConfig{Kind: "h2hpackbomb", URL: httpURL, Conns: 8}},
	} {
		name := tc.name
		if name == "" {
			name = tc.cfg.Kind
		}
		t.Run(name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Duration, cfg.Parallel, cfg.CACert, cfg.PoliteRate = d, 32, certFile, 20
			r, err := Attack(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			FormatAttack(&b, r)
			t.Log("\n" + b.String())
			select {
			case err := <-errc:
				t.Fatalf("the server stopped during the attack: %v", err)
			default:
			}
			if r.Server.HealthzAfter != "200" {
				t.Errorf("/healthz after the attack: %s", r.Server.HealthzAfter)
			}
			if r.Attack.Opened == 0 {
				t.Errorf("the attack opened no connection: %v", r.Attack.ErrorSamples)
			}
			// Issue 7 point 4: polite uploads get 201 (≥ 99 %) whatever the
			// attack. failsToday names the attacks where the server before
			// the hardening did not (see the table above).
			if r.Polite.Sent < 20 || r.Polite.CreatedPct < 99 {
				t.Errorf("polite uploads: %d of %d answered 201 (%.1f %%; statuses %v, errors %v)%s", r.Polite.Created, r.Polite.Sent,
					r.Polite.CreatedPct, r.Polite.Status, r.Polite.ErrorSamples, known(tc.failsToday == "polite"))
			}
			// Issue 7 point 1: with every connection gone, the budget is 0.
			var st server.Stats
			if !waitFor(10*time.Second, func() bool { st = srv.Stats(); return st.Conns == 0 && st.InflightBytes == 0 }) {
				t.Errorf("10 s after the attack: %d connections open, %d bytes of the in-flight budget held", st.Conns, st.InflightBytes)
			}
			if isH2Kind(cfg.Kind) {
				checkH2Attack(t, r, srv)
			}
		})
	}
}

// checkH2Attack asserts what the server did to an HTTP/2 attack: every
// connection it ended, it ended with GOAWAY ENHANCE_YOUR_CALM (0xb) or by
// closing it (none with another code: that would be the attack's own
// protocol error), at least one with the GOAWAY; at most one per worker
// was still open when the time ran out; the attack got past the
// handshake; and no request record is left in use (a reset stream whose
// upload was submitted holds its record until the commit completes, then
// frees it).
func checkH2Attack(t *testing.T, r *AttackResult, srv *server.Server) {
	t.Helper()
	a := r.Attack
	var calm, closed, open, other int64
	for k, n := range a.Ends {
		switch k {
		case "GOAWAY ENHANCE_YOUR_CALM":
			calm += n
		case h2EndClosed:
			closed += n
		case h2EndOpen:
			open += n
		default:
			other += n
		}
	}
	if calm == 0 || other > 0 || open > int64(r.Conns) {
		t.Errorf("%s: connections ended %v: want GOAWAY ENHANCE_YOUR_CALM (at least once) or closed, at most %d open at the end", r.Kind, a.Ends, r.Conns)
	}
	if a.Frames == 0 || a.Requests == 0 && r.Kind != "h2ping" && r.Kind != "h2settings" {
		t.Errorf("%s: %d frames, %d streams sent: the attack did not run (%v)", r.Kind, a.Frames, a.Requests, a.ErrorSamples)
	}
	for _, e := range a.ErrorSamples { // dials and handshakes cut short by the end of the attack are no fault
		if strings.HasPrefix(e, "h2:") {
			t.Errorf("%s: the attack's own HTTP/2 failed: %s", r.Kind, e)
		}
	}
	var st server.Stats
	if !waitFor(10*time.Second, func() bool { st = srv.Stats(); return st.Records == 0 }) {
		t.Errorf("%s: 10 s after the attack %d request records still in use", r.Kind, st.Records)
	}
}

func known(today bool) string {
	if today {
		return " [known failure before issue 7's hardening]"
	}
	return ""
}

// TestAttackFDFloodShort floods a real upsink binary whose fd limit is 256
// with 400 connections that each upload once and stay idle. Issue 7 point 2:
// it must stay up and keep answering polite uploads 201.
//
// Fails against the server before issue 7's hardening: gnet's accept gets
// EMFILE, its main reactor exits and upsink is gone (measured here: the
// polite client then gets "connection refused").
func TestAttackFDFloodShort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and floods the binary")
	}
	dsn := testdb.New(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "upsink")
	if out, err := exec.Command("go", "build", "-o", bin, "upsink/cmd/upsink").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var (
		cmd  *exec.Cmd
		addr string
		log  *lockedBuffer
		done = make(chan error, 1)
	)
	// The port from testnet.FreeAddr may be taken before upsink binds it: then it
	// exits 2 and the test retries with another, 3 times at most.
	for try := 0; ; try++ {
		addr = testnet.FreeAddr(t)
		log = &lockedBuffer{}
		done = make(chan error, 1)
		cmd = exec.Command("bash", "-c", `ulimit -n 256 && exec "$0" "$@"`, bin, "serve", "--listen", addr, "--dsn", dsn, "--spool-dir", t.TempDir())
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c, dc := cmd, done
		go func() { dc <- c.Wait() }()
		ready := waitFor(20*time.Second, func() bool {
			select {
			case err := <-done:
				done <- err
				return true
			default:
			}
			return probeOnce(target{addr: addr, host: addr, path: "/readyz"}, nil, 2*time.Second) == nil
		})
		select {
		case err := <-done:
			if try < 2 && strings.Contains(log.String(), "address already in use") {
				continue
			}
			t.Fatalf("upsink exited at start: %v\n%s", err, log.String())
		default:
		}
		if !ready {
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("upsink not ready within 20 s:\n%s", log.String())
		}
		break
	}
	pid := cmd.Process.Pid
	defer func() {
		select {
		case <-done:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	r, err := Attack(AttackConfig{Kind: "fdflood", URL: "http://" + addr + "/upload/flood", Conns: 400, Parallel: 64,
		Duration: 3 * time.Second, PID: pid, PoliteRate: 20})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	FormatAttack(&b, r)
	t.Log("\n" + b.String())
	// Issue 7 point 2. Both failed before the hardening (see above).
	if !r.Server.Alive || r.Server.HealthzAfter != "200" {
		t.Errorf("upsink after a flood past its fd limit: alive %v, /healthz %s [known failure before issue 7's hardening]\n%s",
			r.Server.Alive, r.Server.HealthzAfter, tail(log.String(), 2000))
	}
	if r.Polite.Sent < 20 || r.Polite.CreatedPct < 99 {
		t.Errorf("polite uploads during the flood: %d of %d answered 201 (%.1f %%; %v) [known failure before issue 7's hardening]",
			r.Polite.Created, r.Polite.Sent, r.Polite.CreatedPct, r.Polite.ErrorSamples)
	}
	if r.Attack.Opened < 200 {
		t.Errorf("the flood opened only %d connections: %v", r.Attack.Opened, r.Attack.ErrorSamples)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// lockedBuffer is a child's output, written by exec's copying goroutine
// and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
