package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"upsink/tlsbridge"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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
	bin := filepath.Join(dir, "upsink")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	live, other := filepath.Join(dir, "live"), filepath.Join(dir, "other")
	for _, d := range []string{live, other} {
		if _, _, err := tlsbridge.GenerateSelfSigned(d); err != nil {
			t.Fatal(err)
		}
	}
	liveCert, liveKey := filepath.Join(live, "cert.pem"), filepath.Join(live, "key.pem")
	oldLeaf := leafOf(t, liveCert, liveKey)
	newLeaf := leafOf(t, filepath.Join(other, "cert.pem"), filepath.Join(other, "key.pem"))

	httpAddr, tlsAddr := freePort(t), freePort(t)
	cmd := exec.Command(bin, "serve", "--listen", httpAddr, "--tls-listen", tlsAddr, "--tls-cert", liveCert, "--tls-key", liveKey,
		"--dsn", "root@unix("+dir+"/no.sock)/x")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	defer cmd.Process.Kill()
	waitLine := func(want string) string {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("upsink exited before logging %q", want)
				}
				if strings.Contains(l, want) {
					return l
				}
			case <-timeout:
				t.Fatalf("no %q in the log", want)
			}
		}
	}
	waitLine("serving HTTPS")
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
	cmd.Process.Signal(syscall.SIGHUP)
	if l := waitLine("SIGHUP"); !strings.Contains(l, "keeping the current certificate") {
		t.Fatalf("bad key: %s", l)
	}
	if !bytes.Equal(servedCert(t, tlsAddr), oldLeaf) {
		t.Fatal("a bad key replaced the certificate in service")
	}

	for _, f := range []string{"cert.pem", "key.pem"} {
		b, _ := os.ReadFile(filepath.Join(other, f))
		if err := os.WriteFile(filepath.Join(live, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd.Process.Signal(syscall.SIGHUP)
	if l := waitLine("SIGHUP"); !strings.Contains(l, "certificate reloaded") {
		t.Fatalf("good pair: %s", l)
	}
	if !bytes.Equal(servedCert(t, tlsAddr), newLeaf) {
		t.Fatal("new connections do not get the reloaded certificate")
	}
	_ = keep.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(keep, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if line, err := bufio.NewReader(keep).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("connection from before the reload: %q %v", line, err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("upsink did not stop on SIGTERM")
	}
}
