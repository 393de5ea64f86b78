package h2

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestH2Spec runs h2spec (github.com/summerwind/h2spec), when H2SPEC=1 and
// it is installed, against Conns served by the echo handler on loopback.
func TestH2Spec(t *testing.T) {
	if os.Getenv("H2SPEC") == "" {
		t.Skip("H2SPEC=1 runs h2spec")
	}
	bin, err := exec.LookPath("h2spec")
	if err != nil {
		bin = filepath.Join(os.Getenv("HOME"), "go", "bin", "h2spec")
	}
	port := strconv.Itoa(listen(t, true).Port)
	out, err := exec.Command(bin, "-h", "127.0.0.1", "-p", port, "-o", "2").CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatal(err)
	}
}

// TestNghttp uploads with nghttp2's client (nghttp), when NGHTTP=1: ten
// concurrent 200 KB uploads on one connection, h2c with prior knowledge.
func TestNghttp(t *testing.T) {
	if os.Getenv("NGHTTP") == "" {
		t.Skip("NGHTTP=1 runs nghttp")
	}
	ln := listen(t, false)
	body := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(body, make([]byte, 200000), 0o600); err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.String() + "/up"
	out, err := exec.Command("nghttp", "-n", "-s", "-m", "10", "-d", body, "-H", "idempotency-key: \"k\"", url).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatal(err)
	}
}

// listen serves Conns (serve, quiet as given) on a loopback port until the
// test ends.
func listen(t *testing.T, quiet bool) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(t, nc, Limits{}, quiet)
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}
