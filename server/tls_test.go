package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"upsink/internal/testdb"
	"upsink/internal/testnet"
	"upsink/tlsbridge"
)

// startTLSServer runs a server with HTTPS on a second free port and returns
// the HTTPS address and the PEM file of its self-signed certificate; mods
// change its Config further.
func startTLSServer(t *testing.T, dsn string, mods ...func(*Config)) (srv *Server, httpAddr, tlsAddr, certFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, err := tlsbridge.GenerateSelfSigned(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tlsbridge.LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, httpAddr = startServer(t, dsn, func(c *Config) {
		// A fresh port for each of startServer's attempts, never the HTTP
		// one (FreeAddr can hand the same free port out twice).
		for tlsAddr = testnet.FreeAddr(t); tlsAddr == c.Listen; tlsAddr = testnet.FreeAddr(t) {
		}
		c.TLSListen = tlsAddr
		c.TLS = tlsbridge.Config{Certificate: cert}
		for _, m := range mods {
			m(c)
		}
	})
	return srv, httpAddr, tlsAddr, certFile
}

// readCertPool is the pool of the PEM certificates in file (for the
// clients of a server from startTLSServer; also in a helper process).
func readCertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", file)
	}
	return pool, nil
}

func certPool(t testing.TB, file string) *x509.CertPool {
	t.Helper()
	pool, err := readCertPool(file)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

func tlsClient(t *testing.T, certFile string) *http.Client {
	t.Helper()
	pool := certPool(t, certFile)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}}, ForceAttemptHTTP2: false, MaxIdleConnsPerHost: 4,
	}}
}

func TestHTTPSUploads(t *testing.T) {
	dsn := testdb.New(t)
	srv, httpAddr, tlsAddr, certFile := startTLSServer(t, dsn)
	waitReady(t, httpAddr)
	db := testdb.Open(t, dsn)
	port := tlsAddr[strings.LastIndexByte(tlsAddr, ':')+1:]
	base := "https://localhost:" + port

	check := func(t *testing.T, out []byte, stream string, body []byte) {
		t.Helper()
		var got created
		if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil || got.ID == 0 || got.Stream != stream {
			t.Fatalf("answer %q: %v", out, err)
		}
		s, b, _ := rowBody(t, db, got.ID)
		if s != stream || !bytes.Equal(b, body) {
			t.Fatalf("row %d: %q, %d bytes", got.ID, s, len(b))
		}
	}

	t.Run("go net/http client, keep-alive", func(t *testing.T) {
		cl := tlsClient(t, certFile)
		defer cl.Transport.(*http.Transport).CloseIdleConnections()
		for i := 0; i < 10; i++ {
			body := bytes.Repeat([]byte{byte('a' + i)}, 1000*i+1)
			var rd io.Reader = bytes.NewReader(body)
			if i%2 == 1 {
				rd = io.MultiReader(rd) // chunked
			}
			resp, err := cl.Post(base+"/upload/gotls", "application/octet-stream", rd)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 201 || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "http/1.1" {
				t.Fatalf("%d %s (alpn %v)", resp.StatusCode, out, resp.TLS)
			}
			check(t, out, "gotls", body)
		}
	})

	t.Run("1 MiB body sent with the client's Finished", func(t *testing.T) {
		// A TLS 1.3 client writes its request right after its Finished; the
		// body arrives before the server has processed the Finished, so it
		// is held by the bridge (MaxAfterFlight), not cut off at 64 KiB.
		pool := certPool(t, certFile)
		for i := 0; i < 5; i++ {
			c, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			body := bytes.Repeat([]byte{byte('a' + i)}, 1<<20-1024)
			req := fmt.Appendf(nil, "POST /upload/bigtls HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
			if _, err := c.Write(append(req, body...)); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			resp, out := readResponse(t, bufio.NewReader(c), "POST")
			c.Close()
			if resp.StatusCode != 201 {
				t.Fatalf("%d: %d %s", i, resp.StatusCode, out)
			}
			check(t, []byte(out), "bigtls", body)
		}
	})

	t.Run("pipelined over one TLS connection", func(t *testing.T) {
		pool := certPool(t, certFile)
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		var req strings.Builder
		for i := 0; i < 4; i++ {
			b := strings.Repeat(strconv.Itoa(i), 20000) // bodies span several TLS records
			fmt.Fprintf(&req, "POST /upload/pipetls HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
		}
		io.WriteString(c, req.String())
		br := bufio.NewReader(c)
		for i := 0; i < 4; i++ {
			resp, out := readResponse(t, br, "POST")
			if resp.StatusCode != 201 {
				t.Fatalf("%d: %d %s", i, resp.StatusCode, out)
			}
			check(t, []byte(out), "pipetls", []byte(strings.Repeat(strconv.Itoa(i), 20000)))
		}
	})

	t.Run("curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			requireTool(t, "curl")
		}
		body := bytes.Repeat([]byte("curl-body\n"), 300)
		f := filepath.Join(t.TempDir(), "body")
		os.WriteFile(f, body, 0o600)
		out, err := exec.Command("curl", "-sS", "--max-time", "20", "--cacert", certFile, "--data-binary", "@"+f, base+"/upload/curltls").Output()
		if err != nil {
			t.Fatalf("curl: %v %s", err, out)
		}
		check(t, out, "curltls", body)
	})

	t.Run("openssl s_client", func(t *testing.T) {
		if _, err := exec.LookPath("openssl"); err != nil {
			requireTool(t, "openssl")
		}
		body := "from openssl"
		req := "POST /upload/openssl HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
		cmd := exec.Command("openssl", "s_client", "-quiet", "-connect", tlsAddr, "-servername", "localhost", "-CAfile", certFile, "-verify_return_error", "-alpn", "http/1.1")
		cmd.Stdin = strings.NewReader(req)
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.Output(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatal("openssl s_client did not finish")
		}
		if err != nil {
			t.Fatalf("openssl: %v %s", err, out)
		}
		resp, rb := readResponse(t, bufio.NewReader(bytes.NewReader(out)), "POST")
		if resp.StatusCode != 201 {
			t.Fatalf("%d %s", resp.StatusCode, rb)
		}
		check(t, []byte(rb), "openssl", []byte(body))
	})

	t.Run("h2load --h1", func(t *testing.T) {
		if _, err := exec.LookPath("h2load"); err != nil {
			requireTool(t, "h2load")
		}
		f := filepath.Join(t.TempDir(), "body")
		os.WriteFile(f, bytes.Repeat([]byte("h"), 1024), 0o600)
		var before int
		db.QueryRow("SELECT COUNT(*) FROM uploads WHERE stream='h2load'").Scan(&before)
		out, err := exec.Command("h2load", "--h1", "-n", "200", "-c", "8", "-d", f, "-T", "20", base+"/upload/h2load").CombinedOutput()
		if err != nil {
			t.Fatalf("h2load: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "200 succeeded") || !strings.Contains(string(out), "status codes: 200 2xx") {
			t.Fatalf("h2load did not get 200 successes:\n%s", out)
		}
		var n int
		db.QueryRow("SELECT COUNT(*) FROM uploads WHERE stream='h2load'").Scan(&n)
		if n-before != 200 {
			t.Fatalf("%d rows for 200 acknowledged h2load uploads", n-before)
		}
	})

	t.Run("plain HTTP to the TLS port", func(t *testing.T) {
		out := rawExchange(t, tlsAddr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 10*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.0 400 ") || !strings.Contains(out, "HTTPS") {
			t.Fatalf("got %q", out)
		}
	})

	st := srv.TLSStats()
	if st.Handshakes == 0 {
		t.Fatalf("no handshakes counted: %+v", st)
	}
	t.Logf("tls stats %+v", st)
}

// lockUploads holds LOCK TABLES uploads WRITE on a connection of its own,
// so that commits wait; the returned unlock (also run at the test's end)
// releases it once.
func lockUploads(t *testing.T, db *sql.DB) (unlock func()) {
	t.Helper()
	ctx := context.Background()
	lock, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(ctx, "LOCK TABLES uploads WRITE"); err != nil {
		lock.Close()
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			_, _ = lock.ExecContext(ctx, "UNLOCK TABLES")
			lock.Close()
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// requireTool fails under make test/CI (which install the tool) and skips elsewhere.
func requireTool(t *testing.T, name string) {
	t.Helper()
	if os.Getenv("UPSINK_REQUIRE_DB") == "1" {
		t.Fatalf("%s not installed (make test installs it)", name)
	}
	t.Skipf("%s not installed", name)
}

// TestTLSSentAheadOfCommitIsBounded: over TLS, bytes sent ahead of an upload
// whose commit is pending count against the same 64 KiB bound as on a plain
// connection, ciphertext still in gnet's buffer included (the bridge decrypts
// only ~16 KiB ahead, so counting plaintext alone never reached the bound).
// Past it the rest is decrypted and dropped, and the pending upload is still
// answered, with Connection: close.
// TestTLSSentAheadOfCommitIsBounded: a TLS client whose upload waits for its
// commit (the table is locked) and sends 300 KiB more is held to the same
// bound as a plain one; past it the rest is decrypted and dropped and the
// connection closes after its 201, also when the bytes sent ahead end inside
// a TLS record (the partial record waits in crypto/tls; the loop must still
// come back to write the 201).
func TestTLSSentAheadOfCommitIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  int // bytes cut off the end of the ciphertext sent ahead
	}{
		{"whole records", 0},
		{"ending in a partial record", 7},
	} {
		t.Run(tc.name, func(t *testing.T) { testTLSSentAhead(t, tc.cut) })
	}
}

// heldWrites is a net.Conn whose writes can be captured instead of sent.
type heldWrites struct {
	net.Conn
	hold bool
	buf  bytes.Buffer
}

func (h *heldWrites) Write(p []byte) (int, error) {
	if h.hold {
		return h.buf.Write(p)
	}
	return h.Conn.Write(p)
}

func testTLSSentAhead(t *testing.T, cut int) {
	dsn := testdb.New(t)
	srv, httpAddr, tlsAddr, certFile := startTLSServer(t, dsn)
	waitReady(t, httpAddr)
	db := testdb.Open(t, dsn)
	unlock := lockUploads(t, db)

	pool := certPool(t, certFile)
	raw, err := net.Dial("tcp", tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	hw := &heldWrites{Conn: raw}
	c := tls.Client(hw, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "POST /upload/ahead HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst")
	waitFor(t, "the upload to be submitted", func() bool { return srv.Stats().Records == 1 })
	hw.hold = true
	if _, err := c.Write(bytes.Repeat([]byte("x"), 300<<10)); err != nil {
		t.Fatal(err)
	}
	hw.hold = false
	ahead := hw.buf.Bytes()
	if _, err := raw.Write(ahead[:len(ahead)-cut]); err != nil {
		t.Fatalf("server stopped reading what was sent ahead: %v", err)
	}
	// Everything was read by the server; what it holds stays bounded.
	time.Sleep(200 * time.Millisecond)
	if got := srv.Stats().InflightBytes; got > maxPipelined+metaMax+5+tlsRecordMax {
		t.Fatalf("holding %d bytes for a suspended TLS connection", got)
	}
	unlock()
	resp, body := readResponse(t, bufio.NewReader(c), "POST")
	if resp.StatusCode != 201 || !resp.Close {
		t.Fatalf("pending upload: %d close=%v %s", resp.StatusCode, resp.Close, body)
	}
	var got created
	_ = json.Unmarshal([]byte(body), &got)
	if _, b, _ := rowBody(t, db, got.ID); string(b) != "first" {
		t.Fatalf("row %q", b)
	}
}
