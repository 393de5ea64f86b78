package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"upsink/internal/testnet"
	"upsink/tlsbridge"
)

// buildUpsink builds the binary into a temp dir.
func buildUpsink(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "upsink")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// servedCert returns the leaf certificate the server presents now.
func servedCert(t *testing.T, addr string) []byte {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Raw
}

func leafOf(t *testing.T, certFile, keyFile string) []byte {
	t.Helper()
	c, err := tlsbridge.LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c.Certificate[0]
}

// TestSIGHUPReload runs the real binary: SIGHUP with a broken key keeps the
// certificate in service (and says why); SIGHUP with a new pair serves it to
// new connections while an established connection keeps working; SIGTERM stops
// cleanly.
func TestSIGHUPReload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildUpsink(t)
	live, other := filepath.Join(dir, "live"), filepath.Join(dir, "other")
	for _, d := range []string{live, other} {
		if _, _, err := tlsbridge.GenerateSelfSigned(d); err != nil {
			t.Fatal(err)
		}
	}
	liveCert, liveKey := filepath.Join(live, "cert.pem"), filepath.Join(live, "key.pem")
	oldLeaf := leafOf(t, liveCert, liveKey)
	newLeaf := leafOf(t, filepath.Join(other, "cert.pem"), filepath.Join(other, "key.pem"))

	// testnet.FreeAddr's port may be taken by another process before upsink binds
	// it (other test binaries run beside this one): then upsink exits 2
	// saying so, and the test tries again with new ports, at most 3 times.
	var (
		u       *child
		tlsAddr string
	)
	for try := 0; ; try++ {
		var httpAddr string
		addrs := testnet.FreeAddrs(t, 2) // distinct: FreeAddr twice can return one port
		httpAddr, tlsAddr = addrs[0], addrs[1]
		u = startChild(t, bin, "serve", "--listen", httpAddr, "--tls-listen", tlsAddr, "--tls-cert", liveCert, "--tls-key", liveKey,
			"--dsn", "root@unix("+dir+"/no.sock)/x")
		if u.waitMsg("upsink: serving HTTPS") {
			break
		}
		if try == 2 || !strings.Contains(u.log.all(), "address already in use") {
			t.Fatalf("upsink exited before serving; its log:\n%s", u.log.all())
		}
	}
	defer u.stop()
	if !bytes.Equal(servedCert(t, tlsAddr), oldLeaf) {
		t.Fatal("not serving the configured certificate")
	}
	// An established connection must survive the reloads.
	keep, err := tls.Dial("tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()

	if err := os.WriteFile(liveKey, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := u.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	u.mustMsg("upsink: SIGHUP: keeping the current certificate")
	if !bytes.Equal(servedCert(t, tlsAddr), oldLeaf) {
		t.Fatal("a bad key replaced the certificate in service")
	}

	for _, f := range []string{"cert.pem", "key.pem"} {
		b, _ := os.ReadFile(filepath.Join(other, f))
		if err := os.WriteFile(filepath.Join(live, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	u.mustMsg("upsink: SIGHUP: certificate reloaded")
	if !bytes.Equal(servedCert(t, tlsAddr), newLeaf) {
		t.Fatal("new connections do not get the reloaded certificate")
	}
	_ = keep.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(keep, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if line, err := bufio.NewReader(keep).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("connection from before the reload: %q %v", line, err)
	}

	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-u.done:
		if u.err != nil {
			t.Fatalf("exit after SIGTERM: %v; its log:\n%s", u.err, u.log.all())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("upsink did not stop on SIGTERM; its log:\n%s", u.log.all())
	}
}

// child is a started upsink whose stderr is collected line by line.
type child struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  *logLines
	next int           // the first log line waitMsg has not looked at
	done chan struct{} // closed when the process has exited (and its log is complete)
	err  error         // Wait's result, once done is closed
}

func startChild(t *testing.T, bin string, args ...string) *child {
	t.Helper()
	c := &child{t: t, cmd: exec.Command(bin, args...), log: &logLines{changed: make(chan struct{}, 1)}, done: make(chan struct{})}
	// exec copies stderr through the writer and Wait returns once the copy
	// is complete, so the log is whole when done is closed and upsink never
	// blocks on a pipe nobody reads.
	c.cmd.Stderr = c.log
	c.cmd.Dir = t.TempDir() // its default --spool-dir, var/spool, lands there
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		c.log.close()
		close(c.done)
	}()
	return c
}

// stop kills the process if it is still running and waits for it.
func (c *child) stop() {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// waitMsg waits up to 20 s for the next log line whose msg field is exactly
// want; false if the process exited first. A substring match is not enough:
// the store's "database unreachable" warning prints the DSN, whose path holds
// the test's name.
func (c *child) waitMsg(want string) bool {
	c.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		lines, closed := c.log.since(c.next)
		for _, l := range lines {
			c.next++
			if m, ok := slogMsg(l); ok && m == want {
				return true
			}
		}
		if closed {
			return false
		}
		select {
		case <-c.log.changed:
		case <-timeout:
			c.t.Fatalf("no msg=%q in upsink's log within 20 s; its log:\n%s", want, c.log.all())
		}
	}
}

func (c *child) mustMsg(want string) {
	c.t.Helper()
	if !c.waitMsg(want) {
		c.t.Fatalf("upsink exited (%v) before logging msg=%q; its log:\n%s", c.err, want, c.log.all())
	}
}

// logLines collects a child's log lines as they are written.
type logLines struct {
	mu      sync.Mutex
	lines   []string
	partial []byte // an unterminated last line
	closed  bool
	changed chan struct{} // a token after new lines and at the end
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	l.mu.Unlock()
	l.notify()
	return len(p), nil
}

func (l *logLines) close() {
	l.mu.Lock()
	if len(l.partial) > 0 {
		l.lines = append(l.lines, string(l.partial))
		l.partial = nil
	}
	l.closed = true
	l.mu.Unlock()
	l.notify()
}

func (l *logLines) notify() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// since returns the lines from index i on and whether the log has ended.
func (l *logLines) since(i int) ([]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines[min(i, len(l.lines)):]...), l.closed
}

func (l *logLines) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// slogMsg returns the msg field of a line written by slog's TextHandler
// (time=… level=… msg=VALUE attrs…), unquoting VALUE if it is quoted.
func slogMsg(line string) (string, bool) {
	var rest string
	if r, ok := strings.CutPrefix(line, "msg="); ok {
		rest = r
	} else if i := strings.Index(line, " msg="); i >= 0 {
		rest = line[i+len(" msg="):]
	} else {
		return "", false
	}
	if strings.HasPrefix(rest, `"`) {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return "", false
		}
		s, err := strconv.Unquote(q)
		return s, err == nil
	}
	if i := strings.IndexByte(rest, ' '); i >= 0 {
		rest = rest[:i]
	}
	return rest, true
}

// slogMsg reads the msg field slog's TextHandler writes, and only that.
func TestSlogMsg(t *testing.T) {
	var b bytes.Buffer
	l := slog.New(slog.NewTextHandler(&b, nil))
	l.Warn("store: database unreachable", "err", `dial unix /tmp/TestSIGHUPReload1/no.sock msg="upsink: SIGHUP: certificate reloaded"`)
	l.Info("upsink: SIGHUP: certificate reloaded", "cert", "x")
	l.Info("plain")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		m, ok := slogMsg(line)
		if !ok {
			t.Fatalf("no msg in %q", line)
		}
		got = append(got, m)
	}
	want := []string{"store: database unreachable", "upsink: SIGHUP: certificate reloaded", "plain"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, ok := slogMsg("no fields here"); ok {
		t.Fatal("msg found in a line without one")
	}
}
