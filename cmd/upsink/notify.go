package main

// sd_notify by the documented datagram protocol (sd_notify(3), "Type=notify"
// in systemd.service(5)): no library. Without NOTIFY_SOCKET every method is a
// no-op, so upsink behaves the same outside systemd.

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// notifier sends state changes to the service manager's notify socket.
// A nil *notifier is valid and does nothing.
type notifier struct {
	fd       int
	addr     unix.SockaddrUnix
	watchdog time.Duration // WATCHDOG_USEC when it is meant for this process; 0 = no watchdog
	log      *slog.Logger
	stopping atomic.Bool
	mu       sync.Mutex // one datagram at a time; guards failed
	failed   bool       // a send failed once (logged); later failures go to debug
}

// newNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID through
// getenv. It returns nil (no-op) when NOTIFY_SOCKET is unset, and an error
// when it is set but unusable (upsink then runs without notifications).
func newNotifier(getenv func(string) string, pid int, log *slog.Logger) (*notifier, error) {
	path := getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil, nil
	}
	// A path ("/run/systemd/notify") or an abstract name ("@..."; x/sys/unix
	// turns the leading '@' into the NUL byte). systemd 253+ may also pass
	// "vsock:CID:PORT", for VMs; not supported here.
	if path[0] != '/' && path[0] != '@' {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: only a socket path or an abstract name (@...) is supported", path)
	}
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: longer than a unix socket address allows", path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_SOCKET: socket: %w", err)
	}
	n := &notifier{fd: fd, addr: unix.SockaddrUnix{Name: path}, log: log}
	n.watchdog = watchdogInterval(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), pid)
	return n, nil
}

// watchdogInterval is WATCHDOG_USEC as a duration when the watchdog is
// meant for this process (WATCHDOG_PID unset or equal to pid), else 0.
func watchdogInterval(usec, wpid string, pid int) time.Duration {
	if usec == "" {
		return 0
	}
	us, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || us == 0 || us > uint64(1<<63-1)/uint64(time.Microsecond) {
		return 0
	}
	if wpid != "" {
		p, err := strconv.Atoi(wpid)
		if err != nil || p != pid {
			return 0
		}
	}
	return time.Duration(us) * time.Microsecond
}

// send writes one datagram of newline-separated assignments. The socket is
// not connected: each datagram is addressed, so a service manager that
// re-creates its socket (daemon-reexec) still gets the next one.
func (n *notifier) send(state string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	err := unix.Sendto(n.fd, []byte(state), 0, &n.addr)
	if err == nil {
		return
	}
	if !n.failed {
		n.failed = true
		n.log.Warn("upsink: sd_notify failed (later failures are logged at debug)", "socket", n.addr.Name, "err", err)
		return
	}
	n.log.Debug("upsink: sd_notify failed", "socket", n.addr.Name, "err", err)
}

// ready says upsink serves; status is shown by systemctl status.
func (n *notifier) ready(status string) {
	n.send("READY=1\nSTATUS=" + oneLineStatus(status))
}

// stopped says the graceful stop has begun. The watchdog keeps pinging
// without its health check from then on: the listeners refuse new
// connections while uploads in progress are answered, and the stop is
// bounded by --shutdown-timeout (and the unit's TimeoutStopSec).
func (n *notifier) stopped(status string) {
	if n == nil {
		return
	}
	n.stopping.Store(true)
	n.send("STOPPING=1\nSTATUS=" + oneLineStatus(status))
}

// servingStatus is the STATUS= sent with READY=1.
func servingStatus(listen, tlsListen string) string {
	if tlsListen == "" {
		return "serving http://" + listen
	}
	return "serving http://" + listen + " and https://" + tlsListen
}

func oneLineStatus(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// startWatchdog sends WATCHDOG=1 every WATCHDOG_USEC/2 while check succeeds
// (and unconditionally once stopped was called). A failing check sends
// nothing, so the service manager kills and restarts upsink once the checks
// have failed for WATCHDOG_USEC. It returns a function that stops the
// goroutine and waits for it. Without a watchdog it does nothing.
func (n *notifier) startWatchdog(check func(context.Context) error) (stop func()) {
	if n == nil || n.watchdog == 0 {
		return func() {}
	}
	every := n.watchdog / 2
	// The check gets at most half a ping interval (at least 1 s, for tests
	// that ask for a 200 ms watchdog on a loaded machine): a check that
	// hangs longer is a failed one, and the next tick comes in time.
	timeout := max(every/2, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		failing := false
		for {
			if n.stopping.Load() {
				n.send("WATCHDOG=1")
			} else {
				cctx, ccancel := context.WithTimeout(ctx, timeout)
				err := check(cctx)
				ccancel()
				switch {
				case ctx.Err() != nil:
					return
				case err == nil:
					if failing {
						n.log.Info("upsink: watchdog: health check passes again")
						failing = false
					}
					n.send("WATCHDOG=1")
				case !failing:
					failing = true
					n.log.Warn("upsink: watchdog: health check failed, not pinging the service manager", "err", err, "watchdog", n.watchdog)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

// healthzCheck returns a check that GETs /healthz from upsink's own plain
// listener over loopback (a wildcard address is reached through 127.0.0.1 or
// ::1): it passes only when an event loop accepts the connection, parses
// the request and answers 200, so a wedged loop or a stuck process stops the
// watchdog pings. The database is deliberately not part of it: MariaDB down
// is what the spool is for, and restarting upsink would not bring it back.
func healthzCheck(listen string) func(context.Context) error {
	addr := loopbackAddr(listen)
	req := []byte("GET /healthz HTTP/1.1\r\nHost: upsink-watchdog\r\nConnection: close\r\n\r\n")
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		if _, err := c.Write(req); err != nil {
			return err
		}
		line, err := bufio.NewReaderSize(c, 256).ReadString('\n')
		if err != nil {
			return fmt.Errorf("GET /healthz: %w", err)
		}
		if !strings.HasPrefix(line, "HTTP/1.1 200 ") {
			return fmt.Errorf("GET /healthz: %q", strings.TrimSpace(line))
		}
		return nil
	}
}

// loopbackAddr is the address to dial for a listen address: a wildcard or
// empty host becomes the loopback address of its family.
func loopbackAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// envNotifier is newNotifier for the process: a bad NOTIFY_SOCKET is logged
// and ignored (as libsystemd's sd_notify ignores what it cannot use).
func envNotifier(log *slog.Logger) *notifier {
	n, err := newNotifier(os.Getenv, os.Getpid(), log)
	if err != nil {
		log.Warn("upsink: not notifying the service manager", "err", err)
		return nil
	}
	return n
}
