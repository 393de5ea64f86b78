package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"upsink/internal/testnet"
)

// notifySocket is a unixgram socket standing in for systemd's.
type notifySocket struct {
	t    *testing.T
	conn *net.UnixConn
	seen []string // every datagram next has returned, in order
}

func listenNotify(t *testing.T, name string) *notifySocket {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{t: t, conn: conn}
}

// next returns the next datagram, failing the test after 20 s without one.
func (s *notifySocket) next(what string) string {
	s.t.Helper()
	buf := make([]byte, 4096)
	_ = s.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := s.conn.Read(buf)
	if err != nil {
		s.t.Fatalf("no datagram while waiting for %s: %v; got %q", what, err, s.seen)
	}
	m := string(buf[:n])
	s.seen = append(s.seen, m)
	return m
}

// none asserts that no datagram is queued on the socket now (a datagram on a
// unix socket is queued at the receiver before the sender's sendto returns).
func (s *notifySocket) none() {
	s.t.Helper()
	rc, err := s.conn.SyscallConn()
	if err != nil {
		s.t.Fatal(err)
	}
	var (
		n    int
		rerr error
		buf  = make([]byte, 4096)
	)
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return true
	}); err != nil {
		s.t.Fatal(err)
	}
	if rerr == nil {
		s.t.Fatalf("unexpected datagram %q", buf[:n])
	}
	if !errors.Is(rerr, unix.EAGAIN) {
		s.t.Fatal(rerr)
	}
}

func fields(m string) map[string]string {
	f := map[string]string{}
	for _, l := range strings.Split(m, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			f[k] = v
		}
	}
	return f
}

// TestSdNotify runs the built binary as systemd would run a Type=notify
// service with WatchdogSec=200ms... 400ms (WATCHDOG_USEC=200000): the first
// datagram is READY=1 with a STATUS naming the listener, then WATCHDOG=1
// comes at least twice (each after a GET /healthz over loopback answered
// 200), then SIGTERM makes it send STOPPING=1 and exit 0. Every wait is
// bounded (20 s) and waits on a datagram or the process, never on a sleep.
func TestSdNotify(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildUpsink(t)
	ns := listenNotify(t, filepath.Join(dir, "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify.sock"))
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "") // unset: the watchdog is this process's

	var (
		u    *child
		addr string
	)
	for try := 0; ; try++ {
		addr = testnet.FreeAddr(t)
		u = startChild(t, bin, "serve", "--listen", addr, "--spool-dir", filepath.Join(dir, "spool"),
			"--dsn", "root@unix("+dir+"/no.sock)/x")
		if u.waitMsg("upsink: serving") {
			break
		}
		if try == 2 || !strings.Contains(u.log.all(), "address already in use") {
			t.Fatalf("upsink exited before serving; its log:\n%s", u.log.all())
		}
	}
	defer u.stop()

	ready := fields(ns.next("READY=1"))
	if ready["READY"] != "1" {
		t.Fatalf("first datagram %q, want READY=1 first", ns.seen[0])
	}
	if want := "serving http://" + addr; ready["STATUS"] != want {
		t.Errorf("STATUS=%q with READY=1, want %q", ready["STATUS"], want)
	}
	for pings := 0; pings < 2; {
		m := ns.next("WATCHDOG=1")
		if m != "WATCHDOG=1" {
			t.Fatalf("datagram %q between READY=1 and SIGTERM, want only WATCHDOG=1", m)
		}
		pings++
	}

	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		m := ns.next("STOPPING=1")
		if m == "WATCHDOG=1" {
			continue // sent before the signal was handled
		}
		f := fields(m)
		if f["STOPPING"] != "1" || !strings.HasPrefix(f["STATUS"], "stopping") {
			t.Fatalf("datagram %q after SIGTERM, want STOPPING=1 with a STATUS", m)
		}
		break
	}
	select {
	case <-u.done:
		if u.err != nil {
			t.Fatalf("exit after SIGTERM: %v; its log:\n%s", u.err, u.log.all())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("upsink did not stop on SIGTERM; its log:\n%s", u.log.all())
	}
	if strings.Contains(u.log.all(), "sd_notify failed") || strings.Contains(u.log.all(), "health check failed") {
		t.Errorf("notify or health check trouble in the log:\n%s", u.log.all())
	}
	t.Logf("datagrams in order: %q", ns.seen)
}

// An abstract NOTIFY_SOCKET ("@name") reaches an abstract socket; READY and
// STOPPING carry their STATUS.
func TestNotifierAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@upsink-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	ns := listenNotify(t, name)
	n, err := newNotifier(func(k string) string {
		return map[string]string{"NOTIFY_SOCKET": name}[k]
	}, os.Getpid(), slog.Default())
	if err != nil || n == nil {
		t.Fatalf("newNotifier: %v, %v", n, err)
	}
	n.ready(servingStatus("127.0.0.1:1", "127.0.0.1:2"))
	if m := ns.next("READY=1"); m != "READY=1\nSTATUS=serving http://127.0.0.1:1 and https://127.0.0.1:2" {
		t.Fatalf("got %q", m)
	}
	if stop := n.startWatchdog(func(context.Context) error { return nil }); stop == nil {
		t.Fatal("nil stop")
	} else {
		stop() // no WATCHDOG_USEC: nothing was started
	}
	n.stopped("stopping\nnow")
	if m := ns.next("STOPPING=1"); m != "STOPPING=1\nSTATUS=stopping now" {
		t.Fatalf("got %q", m)
	}
	ns.none()
}

// Without NOTIFY_SOCKET the notifier is nil and every method does nothing.
func TestNotifierUnset(t *testing.T) {
	n, err := newNotifier(func(string) string { return "" }, 1, slog.Default())
	if n != nil || err != nil {
		t.Fatalf("newNotifier without NOTIFY_SOCKET: %v, %v", n, err)
	}
	n.ready("x")
	n.stopped("x")
	n.startWatchdog(func(context.Context) error { t.Error("check called"); return nil })()
	for _, bad := range []string{"relative/path", "vsock:2:1234", "/" + strings.Repeat("x", 200)} {
		if n, err := newNotifier(func(k string) string {
			if k == "NOTIFY_SOCKET" {
				return bad
			}
			return ""
		}, 1, slog.Default()); n != nil || err == nil {
			t.Errorf("NOTIFY_SOCKET=%q: want an error and no notifier", bad)
		}
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"200000", "", 200 * time.Millisecond},
		{"30000000", "42", 30 * time.Second},
		{"30000000", "43", 0}, // meant for another process (e.g. a parent that exec'd)
		{"30000000", "x", 0},
		{"0", "", 0},
		{"-5", "", 0},
		{"abc", "", 0},
		{"99999999999999999999", "", 0},
	} {
		if got := watchdogInterval(c.usec, c.pid, 42); got != c.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, want %v", c.usec, c.pid, got, c.want)
		}
	}
}

// A failing health check sends no WATCHDOG=1; once it passes again, pings
// resume; after stopped, pings go on without the check.
func TestWatchdogFollowsHealth(t *testing.T) {
	ns := listenNotify(t, filepath.Join(t.TempDir(), "n.sock"))
	n, err := newNotifier(func(k string) string {
		return map[string]string{"NOTIFY_SOCKET": ns.conn.LocalAddr().String(), "WATCHDOG_USEC": "20000"}[k]
	}, os.Getpid(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	calls := make(chan chan error) // each check asks the test for its result
	stop := n.startWatchdog(func(ctx context.Context) error {
		r := make(chan error)
		select {
		case calls <- r:
		case <-ctx.Done():
			return ctx.Err()
		}
		return <-r
	})
	defer stop()
	answer := func(err error) {
		t.Helper()
		select {
		case r := <-calls:
			r <- err
		case <-time.After(20 * time.Second):
			t.Fatal("the watchdog did not run its check within 20 s")
		}
	}
	// Three failing checks: when the fourth check is called, the goroutine
	// has finished with the third (and sent nothing for any of them).
	for range 3 {
		answer(errors.New("wedged"))
	}
	var r chan error
	select {
	case r = <-calls:
	case <-time.After(20 * time.Second):
		t.Fatal("the watchdog did not run its check within 20 s")
	}
	ns.none()
	r <- nil
	if m := ns.next("WATCHDOG=1"); m != "WATCHDOG=1" {
		t.Fatalf("got %q", m)
	}
	n.stopped("stopping")
	for {
		if m := ns.next("STOPPING=1"); strings.HasPrefix(m, "STOPPING=1") {
			break
		}
	}
	// Stopping: pings without a check (a check called now would block the
	// goroutine on calls, and no WATCHDOG=1 would come).
	for range 2 {
		if m := ns.next("WATCHDOG=1 while stopping"); m != "WATCHDOG=1" {
			t.Fatalf("got %q", m)
		}
	}
}

func TestLoopbackAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080": "127.0.0.1:8080",
		"0.0.0.0:80":     "127.0.0.1:80",
		":8080":          "127.0.0.1:8080",
		"[::]:8080":      "[::1]:8080",
		"[::1]:8080":     "[::1]:8080",
		"10.0.0.5:8080":  "10.0.0.5:8080",
	} {
		if got := loopbackAddr(in); got != want {
			t.Errorf("loopbackAddr(%q) = %q, want %q", in, got, want)
		}
	}
	// Nothing listens there: the check fails rather than passing.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := healthzCheck(addr)(ctx); err == nil {
		t.Fatal("healthzCheck passed with nothing listening")
	}
}
