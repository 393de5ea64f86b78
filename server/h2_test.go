package server

import (
	"bytes"
	"context"
	"crypto/tls"
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
	"golang.org/x/net/http2/hpack"

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
	pool := certPool(t, certFile)
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

			// Bodies of many full-size frames, with and without a declared
			// length (over TLS a frame spans two records: the bridge must
			// decrypt a whole frame ahead).
			for i, sized := range []bool{true, false, true} {
				body := bytes.Repeat([]byte{byte('A' + i)}, 900<<10)
				var rd io.Reader = bytes.NewReader(body)
				if !sized {
					rd = io.NopCloser(rd) // no ContentLength: no content-length field
				}
				resp, err := tc.client.Post(tc.base+"/upload/"+stream+"_big", "application/octet-stream", rd)
				if err != nil {
					t.Fatalf("big upload %d: %v", i, err)
				}
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var got created
				if resp.StatusCode != 201 || json.Unmarshal(out, &got) != nil || got.Bytes != len(body) {
					t.Fatalf("big upload %d: %d %q", i, resp.StatusCode, out)
				}
				if _, b, _ := rowBody(t, db, got.ID); !bytes.Equal(b, body) {
					t.Fatalf("big upload %d: row differs", i)
				}
			}

			for _, c := range []struct {
				method, path, body string
				status             int
				want, header       string
			}{
				{"GET", "/healthz", "", 200, "ok\n", ""},
				{"HEAD", "/healthz", "", 200, "", "Content-Length: 3"}, // the GET's length, as over HTTP/1.1
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
// answers over h2 (curl --http2, ALPN) and h2c with prior knowledge.
func TestH2Tools(t *testing.T) {
	dsn := testdb.New(t)
	srv, addr, tlsAddr, certFile := startTLSServer(t, dsn)
	waitReady(t, addr)
	db := testdb.Open(t, dsn)
	if _, err := exec.LookPath("curl"); err != nil {
		requireTool(t, "curl")
	}
	port := tlsAddr[strings.LastIndexByte(tlsAddr, ':')+1:]
	for _, args := range [][]string{
		{"--http2-prior-knowledge", "--data-binary", "from curl h2c", "http://" + addr + "/upload/h2tools"},
		{"--http2", "--cacert", certFile, "--data-binary", "from curl h2", "https://localhost:" + port + "/upload/h2tools"},
	} {
		out, err := exec.Command("curl", append([]string{"-sS", "-w", "\n%{http_version} %{http_code}"}, args...)...).CombinedOutput()
		if err != nil || !bytes.HasSuffix(out, []byte("\n2 201")) || !bytes.Contains(out, []byte(`"durable":"mysql"`)) {
			t.Fatalf("curl %v: %v: %s", args, err, out)
		}
	}
	if _, err := exec.LookPath("nghttp"); err != nil {
		requireTool(t, "nghttp")
	}
	body := t.TempDir() + "/body"
	if err := os.WriteFile(body, []byte("from nghttp"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nghttp", "-v", "-d", body, "http://"+addr+"/upload/h2tools").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(":status: 201")) {
		t.Fatalf("nghttp: %v: %s", err, out)
	}
	rows := rowsOf(t, db, "h2tools")
	var got []string
	for _, b := range rows {
		got = append(got, b)
	}
	if len(got) != 3 {
		t.Fatalf("rows %q, want the three uploads", got)
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
			// Streams of one connection share commits: with 100 uploads
			// in flight, batches hold several rows each.
			var batches, rows int
			if err := db.QueryRow("SELECT COUNT(*), COALESCE(SUM(row_count), 0) FROM upsink_batches").Scan(&batches, &rows); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d rows in %d batches so far", rows, batches)
			if rows < 2*batches {
				t.Fatalf("%d rows in %d batches: streams did not share commits", rows, batches)
			}
		})
	}
	waitBudgetZero(t, srv)
}

// h2raw is a frame-level HTTP/2 client for tests that need to misbehave.
type h2raw struct {
	mu     sync.Mutex // the writes to fr (the reader acknowledges SETTINGS)
	c      net.Conn
	fr     *http2.Framer
	frames chan h2frame
	hb     bytes.Buffer
	enc    *hpack.Encoder
}

// h2frame is what the tests read of a frame (the Framer reuses its frames).
type h2frame struct {
	typ    http2.FrameType
	stream uint32
	status string        // HEADERS: :status
	code   http2.ErrCode // GOAWAY, RST_STREAM
	last   uint32        // GOAWAY
}

// dialH2 opens an h2c connection and exchanges SETTINGS; the frames read
// from it arrive on frames until the connection ends.
func dialH2(t *testing.T, addr string) *h2raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &h2raw{c: c, fr: http2.NewFramer(c, c), frames: make(chan h2frame, 64)}
	r.enc = hpack.NewEncoder(&r.hb)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	rd := http2.NewFramer(nil, c)
	rd.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	go func() {
		defer close(r.frames)
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				return
			}
			x := h2frame{typ: f.Header().Type, stream: f.Header().StreamID}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					r.mu.Lock()
					_ = r.fr.WriteSettingsAck()
					r.mu.Unlock()
				}
				continue
			case *http2.MetaHeadersFrame:
				x.status = f.PseudoValue("status")
			case *http2.GoAwayFrame:
				x.code, x.last = f.ErrCode, f.LastStreamID
			case *http2.RSTStreamFrame:
				x.code = f.ErrCode
			}
			r.frames <- x
		}
	}()
	return r
}

func (r *h2raw) headers(t *testing.T, id uint32, end bool, fields ...string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

func (r *h2raw) data(t *testing.T, id uint32, end bool, p []byte) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fr.WriteData(id, end, p); err != nil {
		t.Fatal(err)
	}
}

// next returns the next frame matching want, failing after 20 s or at the
// end of the connection.
func (r *h2raw) next(t *testing.T, what string, want func(h2frame) bool) h2frame {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case f, ok := <-r.frames:
			if !ok {
				t.Fatalf("connection ended waiting for %s", what)
			}
			if want(f) {
				return f
			}
		case <-deadline:
			t.Fatalf("no %s within 20 s", what)
		}
	}
}

// TestH2SlowBodyAndShutdown: a stream whose body trickles below the
// minimum rate gets 408 on its stream while the connection serves other
// streams; on shutdown the connection gets GOAWAY NO_ERROR and is closed.
func TestH2SlowBodyAndShutdown(t *testing.T) {
	dsn := testdb.New(t)
	srv, addr := startServer(t, dsn, func(c *Config) {
		c.MinBodyRate, c.BodyRateGrace = 1<<20, 200*time.Millisecond
	})
	waitReady(t, addr)
	r := dialH2(t, addr)
	hdr := []string{":method", "POST", ":scheme", "http", ":authority", addr, ":path", "/upload/slow", "content-length", "100000"}
	r.headers(t, 1, false, hdr...)
	r.data(t, 1, false, []byte("ten bytes."))
	f := r.next(t, "408 on stream 1", func(f h2frame) bool { return f.stream == 1 && f.status != "" })
	if f.status != "408" {
		t.Fatalf("stream 1: status %s, want 408", f.status)
	}
	r.headers(t, 3, true, ":method", "GET", ":scheme", "http", ":authority", addr, ":path", "/healthz")
	if f := r.next(t, "answer on stream 3", func(f h2frame) bool { return f.stream == 3 && f.status != "" }); f.status != "200" {
		t.Fatalf("stream 3: status %s", f.status)
	}
	waitFor(t, "the 408's record freed", func() bool { return srv.Stats().Records == 0 })
	go func() { _ = srv.Shutdown(context.Background()) }()
	g := r.next(t, "GOAWAY", func(f h2frame) bool { return f.typ == http2.FrameGoAway })
	if g.code != http2.ErrCodeNo || g.last != 3 {
		t.Fatalf("GOAWAY %v last stream %d, want NO_ERROR after stream 3", g.code, g.last)
	}
	for range r.frames { // closed by the server
	}
}

// TestH2ResetStreamsHeldUntilCommitted: rapid reset against uploads whose
// commit waits (the table is locked). The 100 streams reset after their
// uploads were submitted keep their slots until the commits end, so the
// 101st stream is refused and no more than 100 records are in flight for
// the connection; once the commits end, the slots are free again.
func TestH2ResetStreamsHeldUntilCommitted(t *testing.T) {
	dsn := testdb.New(t)
	srv, addr := startServer(t, dsn, func(c *Config) { c.Store.StallAfter = time.Minute })
	waitReady(t, addr)
	unlock := lockUploads(t, testdb.Open(t, dsn))
	r := dialH2(t, addr)
	post := func(id uint32) {
		r.headers(t, id, false, ":method", "POST", ":scheme", "http", ":authority", addr, ":path", "/upload/rr", "content-length", "5")
		r.data(t, id, true, []byte("hello"))
	}
	for i := range uint32(100) {
		post(2*i + 1)
	}
	waitFor(t, "100 uploads submitted", func() bool { return srv.Stats().Records == 100 })
	for i := range uint32(100) {
		r.mu.Lock()
		err := r.fr.WriteRSTStream(2*i+1, http2.ErrCodeCancel)
		r.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	post(201)
	f := r.next(t, "an answer to stream 201", func(f h2frame) bool { return f.stream == 201 })
	if f.typ != http2.FrameRSTStream || f.code != http2.ErrCodeRefusedStream {
		t.Fatalf("stream 201: %v %v %s, want RST_STREAM REFUSED_STREAM", f.typ, f.code, f.status)
	}
	if n := srv.Stats().Records; n != 100 {
		t.Fatalf("%d records in flight, want the 100 reset uploads", n)
	}
	unlock()
	waitFor(t, "the reset uploads' commits", func() bool { return srv.Stats().Records == 0 })
	post(203)
	if f := r.next(t, "an answer to stream 203", func(f h2frame) bool { return f.stream == 203 }); f.status != "201" {
		t.Fatalf("stream 203 after the commits: %v %v %s, want 201", f.typ, f.code, f.status)
	}
}

// TestH2Ingest: structured ingest and its bearer tokens over h2c answer as
// over HTTP/1.1 (201 with the rows, 400 with the errors, 401), and
// Idempotency-Key replays the first answer.
func TestH2Ingest(t *testing.T) {
	dsn := testdb.New(t)
	tables := ingestTables(t)
	srv, addr := startServer(t, dsn, func(c *Config) { c.Tables = tables })
	waitReady(t, addr)
	db := testdb.Open(t, dsn)
	client := h2cClient()
	do := func(path, ctype, body string, hdr ...string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 {
			t.Fatalf("HTTP/%d", resp.ProtoMajor)
		}
		return resp.StatusCode, string(b), resp.Header
	}
	nd := `{"device":"a","temp":1.5}` + "\n" + `{"device":"b","temp":2.5}` + "\n"
	if st, b, _ := do("/ingest/readings", "application/x-ndjson", nd); st != 201 || !strings.Contains(b, `"rows":2`) {
		t.Fatalf("ndjson: %d %s", st, b)
	}
	if st, b, _ := do("/ingest/readings", "application/x-ndjson", `{"temp":"hot"}`+"\n"); st != 400 || !strings.Contains(b, "temp") {
		t.Fatalf("bad record: %d %s", st, b)
	}
	if st, _, h := do("/ingest/secure", "application/json", `{"v":1}`); st != 401 || h.Get("Www-Authenticate") != "Bearer" {
		t.Fatalf("no token: %d %v", st, h)
	}
	if st, b, _ := do("/ingest/secure", "application/json", `{"v":1}`, "Authorization", "Bearer s3cret"); st != 201 {
		t.Fatalf("token: %d %s", st, b)
	}
	st1, b1, _ := do("/upload/keyed", "text/plain", "once", "Idempotency-Key", `"k-1"`)
	st2, b2, h2 := do("/upload/keyed", "text/plain", "once", "Idempotency-Key", `"k-1"`)
	if st1 != 201 || st2 != 201 || b1 != b2 || h2.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("idempotent retry: %d %s / %d %s %v", st1, b1, st2, b2, h2)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM readings").Scan(&n); err != nil || n != 2 {
		t.Fatalf("readings: %d rows (%v)", n, err)
	}
	if rows := rowsOf(t, db, "keyed"); len(rows) != 1 {
		t.Fatalf("keyed upload stored %d times", len(rows))
	}
	client.CloseIdleConnections()
	waitBudgetZero(t, srv)
}

// TestH2ProtocolErrorLingers: after a connection error the server's GOAWAY
// reaches a client that keeps sending and reads only afterwards: the server
// shuts its write side and drains the input instead of closing with unread
// bytes (which resets the connection: the client's writes fail and the
// GOAWAY waiting in its receive queue is lost).
func TestH2ProtocolErrorLingers(t *testing.T) {
	dsn := testdb.New(t)
	srv, addr := startServer(t, dsn, nil)
	waitReady(t, addr)
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		var w bytes.Buffer
		w.WriteString(http2.ClientPreface)
		fr := http2.NewFramer(&w, nil)
		_ = fr.WriteSettings()
		_ = fr.WriteData(0, false, []byte("bad!")) // DATA on stream 0: PROTOCOL_ERROR
		w.Write(make([]byte, 4<<20))               // and more behind it
		_, werr := c.Write(w.Bytes())
		rd := http2.NewFramer(nil, c)
		var code http2.ErrCode = 0xff
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				break
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				code = g.ErrCode
			}
		}
		c.Close()
		if werr != nil || code != http2.ErrCodeProtocol {
			t.Fatalf("write: %v; GOAWAY code %v, want PROTOCOL_ERROR read after the writes", werr, code)
		}
	}
	waitBudgetZero(t, srv)
}

// TestH2Disabled: with DisableHTTP2 (--http2=false) TLS offers only
// http/1.1 and the plain port does not take the h2c preface.
func TestH2Disabled(t *testing.T) {
	dsn := testdb.New(t)
	_, addr, tlsAddr, certFile := startTLSServer(t, dsn, func(c *Config) { c.DisableHTTP2 = true })
	waitReady(t, addr)
	tc, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: certPool(t, certFile), ServerName: "localhost", NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Fatalf("ALPN chose %q", p)
	}
	tc.Close()
	resp, err := h2cClient().Get("http://" + addr + "/healthz")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("h2c answered %d with HTTP/2 off", resp.StatusCode)
	}
}
