package tlsbridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"
	"golang.org/x/sys/unix"

	"upsink/budget"
)

// testCert is one self-signed certificate for the whole package's tests.
var testCert = sync.OnceValues(func() (*tls.Certificate, error) {
	dir, err := tempDir()
	if err != nil {
		return nil, err
	}
	cf, kf, err := GenerateSelfSigned(dir)
	if err != nil {
		return nil, err
	}
	return LoadKeyPair(cf, kf)
})

func mustCert(t testing.TB) *tls.Certificate {
	t.Helper()
	c, err := testCert()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certPool(c *tls.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Leaf)
	return p
}

// echoServer is a gnet server over a Bridge that echoes plaintext uppercased.
// plain: no TLS at all (the memory baseline).
type echoServer struct {
	gnet.BuiltinEventEngine
	b      *Bridge
	budget *budget.Budget // the bridge's; back to 0 once every connection is gone (checked at cleanup)
	plain  bool
	asIs   atomic.Bool // echo the plaintext unchanged (no allocation: TestEchoAllocs)

	eng     gnet.Engine
	addr    string
	booted  chan struct{}
	done    chan error
	opened  atomic.Int64
	closed  atomic.Int64
	ready   atomic.Int64 // connections that reached ready
	echoed  atomic.Int64 // plaintext bytes echoed
	mu      sync.Mutex
	sample  *Conn // the last connection that became ready (for introspection)
	stopped bool
}

func (s *echoServer) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	close(s.booted)
	return gnet.None
}

func (s *echoServer) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s.opened.Add(1)
	if !s.plain {
		c.SetContext(s.b.Open(c))
	}
	return nil, gnet.None
}

func (s *echoServer) OnClose(c gnet.Conn, _ error) gnet.Action {
	s.closed.Add(1)
	if tc, ok := c.Context().(*Conn); ok {
		tc.Release()
	}
	return gnet.None
}

func (s *echoServer) OnTraffic(c gnet.Conn) gnet.Action {
	if s.plain {
		p, _ := c.Peek(-1)
		_, _ = c.Write(bytes.ToUpper(p))
		_, _ = c.Discard(-1)
		return gnet.None
	}
	tc := c.Context().(*Conn)
	for range 1000 {
		wasReady := tc.HandshakeComplete()
		ready, act := tc.Process()
		if act != gnet.None {
			return act
		}
		if !ready {
			return gnet.None
		}
		if !wasReady {
			s.ready.Add(1)
			s.mu.Lock()
			s.sample = tc
			s.mu.Unlock()
		}
		if tc.InboundBuffered() == 0 {
			return gnet.None
		}
		p, _ := tc.Peek(0)
		out := p
		if !s.asIs.Load() {
			out = bytes.ToUpper(p)
		}
		if _, err := tc.Write(out); err != nil {
			return gnet.Close
		}
		s.echoed.Add(int64(len(p)))
		_, _ = tc.Discard(0)
	}
	return gnet.None
}

type quietLogger struct{}

func (quietLogger) Debugf(string, ...any) {}
func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Warnf(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(f string, a ...any) {
	panic(fmt.Sprintf(f, a...))
}

var _ logging.Logger = quietLogger{}

// testBudget is the budget a test server gets unless the test passes its own:
// large enough never to refuse, so that only the cap and the tests that mean
// it close connections.
const testBudget = 256 << 20

// startServer runs an echo server on 127.0.0.1 with a fresh Bridge (nil cfg
// fields take defaults; the certificate is the test one; the budget a fresh
// one of testBudget bytes). At cleanup it is stopped and its budget must be
// back to exactly 0 once every connection is gone.
func startServer(t testing.TB, cfg Config, tweak func(*Bridge)) *echoServer {
	t.Helper()
	s := &echoServer{booted: make(chan struct{}), done: make(chan error, 1)}
	if cfg.Certificate == nil {
		cfg.Certificate = mustCert(t)
	}
	if cfg.Budget == nil {
		cfg.Budget = budget.New(testBudget)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(b)
	}
	s.b, s.budget = b, cfg.Budget
	t.Cleanup(func() { // registered before run's stop: runs after it
		waitFor(t, 20*time.Second, "all connections closed", func() bool { return s.opened.Load() == s.closed.Load() })
		waitFor(t, 20*time.Second, "budget back to 0", func() bool { return s.budget.Used() == 0 })
	})
	s.run(t)
	return s
}

func startPlainServer(t testing.TB) *echoServer {
	t.Helper()
	s := &echoServer{booted: make(chan struct{}), done: make(chan error, 1), plain: true}
	s.run(t)
	return s
}

func (s *echoServer) run(t testing.TB) {
	t.Helper()
	go func() {
		s.done <- gnet.Run(s, "tcp://127.0.0.1:0",
			gnet.WithMulticore(true), gnet.WithReuseAddr(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay), gnet.WithLogger(quietLogger{}))
	}()
	select {
	case <-s.booted:
	case err := <-s.done:
		t.Fatalf("gnet.Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("gnet did not boot")
	}
	fd, err := s.eng.Dup()
	if err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	_ = unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
	t.Cleanup(s.stop)
}

func (s *echoServer) stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.eng.Stop(ctx)
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	if s.b != nil {
		s.b.Close()
	}
}

func clientConfig(max uint16) *tls.Config {
	c, _ := testCert()
	return &tls.Config{
		RootCAs:    certPool(c),
		ServerName: "localhost",
		MaxVersion: max,
		NextProtos: []string{"http/1.1"},
	}
}

// dialTLS connects and handshakes with a deadline.
func dialTLS(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := tlsClient(raw, cfg, 20*time.Second)
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// tlsClient wraps raw in a TLS client whose I/O must be done within d.
func tlsClient(raw net.Conn, cfg *tls.Config, d time.Duration) *tls.Conn {
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(d))
	return c
}

// roundTrip writes msg and reads its uppercased echo.
func roundTrip(c net.Conn, msg []byte) error {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if !bytes.Equal(got, bytes.ToUpper(msg)) {
		return fmt.Errorf("echo mismatch (%d bytes)", len(msg))
	}
	return nil
}

// waitFor polls cond every 5 ms for at most d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkNoLeak waits until every accepted connection is closed, no handshake
// is in flight, the wait list and the pending list are empty, no worker
// goroutine is left, and the budget is back to exactly 0.
func (s *echoServer) checkNoLeak(t testing.TB) {
	t.Helper()
	waitFor(t, 20*time.Second, "all connections closed", func() bool { return s.opened.Load() == s.closed.Load() })
	if s.b == nil {
		return
	}
	waitFor(t, 20*time.Second, "InFlight == 0", func() bool { return s.b.Stats().InFlight == 0 })
	s.b.pmu.Lock()
	pending := s.b.pending.head != nil
	s.b.pmu.Unlock()
	if pending {
		t.Errorf("pending-handshake list not empty")
	}
	s.b.qmu.Lock()
	waiting := s.b.wait.head != nil
	s.b.qmu.Unlock()
	if waiting || s.b.Stats().Waiting != 0 {
		t.Errorf("wait list not empty (Waiting %d)", s.b.Stats().Waiting)
	}
	waitFor(t, 20*time.Second, "worker goroutines gone", func() bool {
		s.b.qmu.Lock()
		n := s.b.workers
		s.b.qmu.Unlock()
		return n == 0 && bridgeGoroutines() == 0
	})
	waitFor(t, 20*time.Second, "budget back to 0", func() bool { return s.budget.Used() == 0 })
}

// bridgeGoroutines counts goroutines running a handshake worker of this
// package (any bridge).
func bridgeGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), "tlsbridge.(*Bridge).worker(")
}

// closeStalled closes the clients of stalledClient and waits until their
// handshakes have failed and nothing is left behind.
func (s *echoServer) closeStalled(t testing.TB, conns []net.Conn) {
	t.Helper()
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, 10*time.Second, "stalled handshakes to fail", func() bool { return s.b.Stats().InFlight == 0 })
	s.checkNoLeak(t)
}

// stalledClient connects and sends a whole ClientHello, then neither reads nor
// writes: its handshake takes a worker, which sends its flight and waits.
func stalledClient(t testing.TB, addr string, hello []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	return c
}
