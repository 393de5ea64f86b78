package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"upsink/internal/testdb"
)

// h2cClient speaks HTTP/2 with prior knowledge over plain TCP (h2c).
func h2cClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// h2TLSClient speaks HTTP/2 over TLS, chosen by ALPN.
func h2TLSClient(t *testing.T, certFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http2.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}},
	}}
}

// TestH2Uploads: over h2c and over TLS (ALPN h2), many concurrent uploads
// share one connection, each answered 201 as over HTTP/1.1 with its row
// stored once; the other endpoints answer as over HTTP/1.1; and once the
// client is gone the budget is back to exactly 0.
func TestH2Uploads(t *testing.T) {
	dsn := testdb.New(t)
	srv, httpAddr, tlsAddr, certFile := startTLSServer(t, dsn)
	waitReady(t, httpAddr)
	db := testdb.Open(t, dsn)
	port := tlsAddr[strings.LastIndexByte(tlsAddr, ':')+1:]
	for _, tc := range []struct {
		name, base string
		client     *http.Client
	}{
		{"h2c", "http://" + httpAddr, h2cClient()},
		{"h2", "https://localhost:" + port, h2TLSClient(t, certFile)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := "h2_" + tc.name
			const n, workers = 300, 30
			var mu sync.Mutex
			ids := map[uint64]string{}
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < n; i += workers {
						body := fmt.Sprintf("%s upload %d %s", tc.name, i, strings.Repeat("x", i*7))
						resp, err := tc.client.Post(tc.base+"/upload/"+stream, "text/plain", strings.NewReader(body))
						if err != nil {
							errs <- err
							return
						}
						out, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						var got created
						if resp.ProtoMajor != 2 || resp.StatusCode != 201 || json.Unmarshal(out, &got) != nil || got.ID == 0 || got.Bytes != len(body) {
							errs <- fmt.Errorf("upload %d: HTTP/%d %d %q", i, resp.ProtoMajor, resp.StatusCode, out)
							return
						}
						mu.Lock()
						ids[got.ID] = body
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			rows := rowsOf(t, db, stream)
			if len(rows) != n || len(ids) != n {
				t.Fatalf("%d rows, %d ids, want %d", len(rows), len(ids), n)
			}
			for id, body := range ids {
				if rows[id] != body {
					t.Fatalf("row %d differs", id)
				}
			}

			for _, c := range []struct {
				method, path, body string
				status             int
				want, header       string
			}{
				{"GET", "/healthz", "", 200, "ok\n", ""},
				{"HEAD", "/healthz", "", 200, "", ""},
				{"GET", "/readyz", "", 200, `"ready":true`, ""},
				{"GET", "/upload/" + stream, "", 405, "uploads take POST\n", "Allow: POST"},
				{"POST", "/upload/bad*name", "x", 404, "stream name must match", ""},
				{"POST", "/nowhere", "x", 404, "not found\n", ""},
				{"POST", "/upload/" + stream, strings.Repeat("y", 2<<20), 413, "body larger than the limit", ""},
			} {
				req, _ := http.NewRequest(c.method, tc.base+c.path, strings.NewReader(c.body))
				if c.body == "" {
					req.Body = nil
				}
				resp, err := tc.client.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", c.method, c.path, err)
				}
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 || resp.StatusCode != c.status || !strings.Contains(string(out), c.want) {
					t.Fatalf("%s %s: HTTP/%d %d %q, want %d %q", c.method, c.path, resp.ProtoMajor, resp.StatusCode, out, c.status, c.want)
				}
				if c.header != "" {
					k, v, _ := strings.Cut(c.header, ": ")
					if resp.Header.Get(k) != v {
						t.Fatalf("%s %s: %s %q, want %q", c.method, c.path, k, resp.Header.Get(k), v)
					}
				}
			}
			tc.client.CloseIdleConnections()
		})
	}
	if got := rowsOf(t, db, "h2_h2c"); len(got) != 300 {
		t.Fatalf("h2c rows changed to %d", len(got))
	}
	waitBudgetZero(t, srv)
}

// TestH2Tools: curl and nghttp, the clients users reach for, get their
// answers over h2c with prior knowledge.
func TestH2Tools(t *testing.T) {
	dsn := testdb.New(t)
	srv, addr := startServer(t, dsn, nil)
	waitReady(t, addr)
	db := testdb.Open(t, dsn)
	if _, err := exec.LookPath("curl"); err != nil {
		requireTool(t, "curl")
	}
	out, err := exec.Command("curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}",
		"--data-binary", "from curl", "http://"+addr+"/upload/h2tools").CombinedOutput()
	if err != nil || !bytes.HasSuffix(out, []byte("\n2 201")) || !bytes.Contains(out, []byte(`"durable":"mysql"`)) {
		t.Fatalf("curl: %v: %s", err, out)
	}
	if _, err := exec.LookPath("nghttp"); err != nil {
		requireTool(t, "nghttp")
	}
	body := t.TempDir() + "/body"
	if err := os.WriteFile(body, []byte("from nghttp"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command("nghttp", "-v", "-d", body, "http://"+addr+"/upload/h2tools").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(":status: 201")) {
		t.Fatalf("nghttp: %v: %s", err, out)
	}
	rows := rowsOf(t, db, "h2tools")
	var got []string
	for _, b := range rows {
		got = append(got, b)
	}
	if len(got) != 2 {
		t.Fatalf("rows %q, want the two uploads", got)
	}
	waitBudgetZero(t, srv)
}

// TestH2Load: h2load, the tool users point at upsink, in its default
// HTTP/2 mode (h2 by ALPN over TLS, h2c with prior knowledge in plain),
// 10 connections × 10 concurrent streams: every request 201, every row
// stored once.
func TestH2Load(t *testing.T) {
	if _, err := exec.LookPath("h2load"); err != nil {
		requireTool(t, "h2load")
	}
	dsn := testdb.New(t)
	srv, httpAddr, tlsAddr, _ := startTLSServer(t, dsn)
	waitReady(t, httpAddr)
	db := testdb.Open(t, dsn)
	f := t.TempDir() + "/body"
	if err := os.WriteFile(f, bytes.Repeat([]byte("h"), 1024), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for _, tc := range []struct{ name, url string }{
		{"h2c", "http://" + httpAddr + "/upload/h2load_h2c"},
		{"h2", "https://" + tlsAddr + "/upload/h2load_h2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command("h2load", "-n", fmt.Sprint(n), "-c", "10", "-m", "10", "-d", f, "-T", "30", tc.url).CombinedOutput()
			if err != nil {
				t.Fatalf("h2load: %v\n%s", err, out)
			}
			want := []string{fmt.Sprintf("%d succeeded", n), fmt.Sprintf("status codes: %d 2xx", n), "Application protocol: h2"}
			if tc.name == "h2c" {
				want[2] = "Application protocol: h2c"
			}
			for _, w := range want {
				if !bytes.Contains(out, []byte(w)) {
					t.Fatalf("h2load output lacks %q:\n%s", w, out)
				}
			}
			stream := tc.url[strings.LastIndexByte(tc.url, '/')+1:]
			if rows := rowsOf(t, db, stream); len(rows) != n {
				t.Fatalf("%d rows for %d acknowledged uploads", len(rows), n)
			}
		})
	}
	waitBudgetZero(t, srv)
}
