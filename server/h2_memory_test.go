package server

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"upsink/internal/testdb"
)

// idleHelperEnv makes the test binary a client process that opens idle
// connections (TestMain), so that their memory is not the server's.
const idleHelperEnv = "UPSINK_SERVER_IDLE_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(idleHelperEnv) != "" {
		if err := idleClients(os.Getenv(idleHelperEnv)); err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

// idleClients opens n connections of one kind (h1, h2c, h1tls, h2tls), makes
// one GET /healthz on each and leaves them open; it says READY and holds
// them until its stdin closes.
func idleClients(spec string) error {
	f := strings.Split(spec, "|") // addr|n|mode|cafile
	n, _ := strconv.Atoi(f[1])
	mode := f[2]
	var cfg *tls.Config
	if strings.HasSuffix(mode, "tls") {
		pool, err := readCertPool(f[3])
		if err != nil {
			return err
		}
		cfg = &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}}
		if mode == "h2tls" {
			cfg.NextProtos = []string{"h2"}
		}
	}
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", f[0])
		if err != nil {
			return err
		}
		if cfg != nil {
			tc := tls.Client(c, cfg)
			if err := tc.Handshake(); err != nil {
				return err
			}
			c = tc
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if strings.HasPrefix(mode, "h2") {
			err := h2Healthz(c)
			if err != nil {
				return err
			}
		} else {
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				return err
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			if string(body) != "ok\n" {
				return fmt.Errorf("healthz: %q", body)
			}
		}
		_ = c.SetDeadline(time.Time{})
		conns = append(conns, c)
	}
	fmt.Println("READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// h2Healthz does what an HTTP/2 client does first on a connection: the
// preface, SETTINGS both ways, then GET /healthz and its answer.
func h2Healthz(c net.Conn) error {
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return err
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/healthz"}, {":authority", "localhost"}, {"user-agent", "idle-test"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		return err
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return err
				}
			}
		case *http2.DataFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				return nil
			}
		case *http2.GoAwayFrame:
			return fmt.Errorf("GOAWAY %v", f.ErrCode)
		}
	}
}

// TestIdleMemoryH2 measures the heap the server holds per idle connection,
// each after one GET /healthz, for HTTP/1.1 and HTTP/2, plain and over TLS,
// with the clients in another process. Issue 12's goal: an idle h2
// connection within 2× an idle HTTP/1.1 TLS connection.
func TestIdleMemoryH2(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("memory measurement: not under -race or -short")
	}
	dsn := testdb.New(t)
	srv, httpAddr, tlsAddr, certFile := startTLSServer(t, dsn)
	waitReady(t, httpAddr)
	const n = 1000
	per := map[string]float64{}
	for _, mode := range []string{"h1", "h2c", "h1tls", "h2tls"} {
		addr := httpAddr
		if strings.HasSuffix(mode, "tls") {
			addr = tlsAddr
		}
		heap := func() uint64 {
			var m runtime.MemStats
			for range 3 {
				runtime.GC()
			}
			runtime.ReadMemStats(&m)
			return m.HeapInuse
		}
		waitFor(t, "no connection open", func() bool { return srv.Stats().Conns == 0 })
		before := heap()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), idleHelperEnv+"="+strings.Join([]string{addr, strconv.Itoa(n), mode, certFile}, "|"))
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		kill := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "READY") {
			t.Fatalf("%s clients: %q %v", mode, line, err)
		}
		waitFor(t, "connections open", func() bool { return srv.Stats().Conns == n })
		after := heap()
		st := srv.Stats()
		stdin.Close()
		_ = cmd.Wait()
		kill.Stop()
		per[mode] = (float64(after) - float64(before)) / n
		t.Logf("%-6s %6.0f B per idle connection (heap), budget charged %d B per connection", mode, per[mode], st.InflightBytes/n)
	}
	if per["h2tls"] > 2*per["h1tls"] {
		t.Errorf("idle h2 over TLS %.0f B, more than twice HTTP/1.1 over TLS (%.0f B)", per["h2tls"], per["h1tls"])
	}
	waitBudgetZero(t, srv)
}
