package server

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"upsink/internal/testdb"
	"upsink/internal/testnet"
	"upsink/store"
)

// startServer runs a server on a free loopback port against dsn.
func startServer(t testing.TB, dsn string, mod func(*Config)) (*Server, string) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		addr := testnet.FreeAddr(t)
		cfg := Config{Listen: addr, Loops: 2, Store: store.Config{DSN: dsn}}
		if mod != nil {
			mod(&cfg)
		}
		srv, err := New(cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve() }()
		select {
		case <-srv.Booted():
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := srv.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
				<-errc
				// Every connection is gone: the budget is exactly 0.
				if st := srv.Stats(); st.Conns != 0 || st.InflightBytes != 0 || st.Records != 0 {
					t.Errorf("after shutdown: %+v, want no connections, budget 0, no records", st)
				}
			})
			return srv, addr
		case err := <-errc:
			_ = srv.Shutdown(context.Background())
			if strings.Contains(fmt.Sprint(err), "in use") {
				continue
			}
			t.Fatalf("Serve: %v", err)
		}
	}
	t.Fatal("no free port")
	return nil, ""
}

// waitReady polls /readyz until 200 (bounded).
func waitReady(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("server never became ready")
}

type created struct {
	ID     uint64 `json:"id"`
	Stream string `json:"stream"`
	Bytes  int    `json:"bytes"`
}

func rowBody(t testing.TB, db *sql.DB, id uint64) (stream string, body []byte, ctype []byte) {
	t.Helper()
	err := db.QueryRow("SELECT stream, body, content_type FROM uploads WHERE id=?", id).Scan(&stream, &body, &ctype)
	if err != nil {
		t.Fatalf("row %d: %v", id, err)
	}
	return
}

// rowsOf returns the bodies of stream's rows by id.
func rowsOf(t testing.TB, db *sql.DB, stream string) map[uint64]string {
	t.Helper()
	rows := map[uint64]string{}
	rs, err := db.Query("SELECT id, body FROM uploads WHERE stream=?", stream)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for rs.Next() {
		var id uint64
		var b []byte
		if err := rs.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		rows[id] = string(b)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

func countRows(t testing.TB, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM uploads").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// rawExchange sends req on a fresh connection and reads until the server
// closes or timeout; it returns everything read.
func rawExchange(t testing.TB, addr, req string, timeout time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// readResponse reads one response from br.
func readResponse(t testing.TB, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

func TestUploadRoundTrip(t *testing.T) {
	dsn := testdb.New(t)
	_, addr := startServer(t, dsn, nil)
	waitReady(t, addr)
	db := testdb.Open(t, dsn)

	bin := make([]byte, 256*3)
	for i := range bin {
		bin[i] = byte(i)
	}
	tests := []struct {
		name    string
		stream  string
		body    []byte
		chunked bool
		ctype   string
	}{
		{"content-length", "sensors", []byte("temperature=21.5\n"), false, "text/plain"},
		{"binary", "bin.v1", bin, false, "application/octet-stream"},
		{"empty", "e", nil, false, ""},
		{"chunked", "chunky", bytes.Repeat([]byte("abc\tdef\n\\"), 5000), true, "x/y"},
		{"max-size", "big_1-2", bytes.Repeat([]byte{'z'}, 1<<20), false, "a/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rd io.Reader = bytes.NewReader(tt.body)
			if tt.chunked {
				rd = io.MultiReader(rd) // hide the length: net/http sends chunked
			}
			req, _ := http.NewRequest("POST", "http://"+addr+"/upload/"+tt.stream, rd)
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 201 {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if tt.chunked && resp.Request.ContentLength != -1 && resp.Request.ContentLength != 0 {
				t.Fatalf("client did not send chunked")
			}
			var got created
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got.Stream != tt.stream || got.Bytes != len(tt.body) || got.ID == 0 {
				t.Fatalf("201 body %+v", got)
			}
			stream, body, ctype := rowBody(t, db, got.ID)
			if stream != tt.stream || !bytes.Equal(body, tt.body) || string(ctype) != tt.ctype {
				t.Fatalf("row %d: stream %q, %d bytes, ctype %q", got.ID, stream, len(body), ctype)
			}
		})
	}
}

func TestRawProtocol(t *testing.T) {
	dsn := testdb.New(t)
	_, addr := startServer(t, dsn, func(c *Config) { c.MaxBody = 1000 })
	waitReady(t, addr)
	db := testdb.Open(t, dsn)

	t.Run("pipelined answered in order", func(t *testing.T) {
		var req strings.Builder
		for i := 0; i < 5; i++ {
			fmt.Fprintf(&req, "POST /upload/pipe HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nbody-%d", len("body-")+1, i)
			req.WriteString("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		}
		req.WriteString("POST /upload/pipe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nlas\r\n1;ext=1\r\nt\r\n0\r\nX-Trailer: y\r\n\r\n")
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, req.String()); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		seen := map[uint64]bool{}
		for i := 0; i < 5; i++ {
			resp, body := readResponse(t, br, "POST")
			if resp.StatusCode != 201 {
				t.Fatalf("upload %d: %d %s", i, resp.StatusCode, body)
			}
			var got created
			_ = json.Unmarshal([]byte(body), &got)
			if got.ID == 0 || seen[got.ID] {
				t.Fatalf("upload %d: id %d seen before", i, got.ID)
			}
			seen[got.ID] = true
			if _, b, _ := rowBody(t, db, got.ID); string(b) != fmt.Sprintf("body-%d", i) {
				t.Fatalf("row %d = %q", got.ID, b)
			}
			resp, body = readResponse(t, br, "GET")
			if resp.StatusCode != 200 || body != "ok\n" {
				t.Fatalf("healthz %d: %d %q", i, resp.StatusCode, body)
			}
		}
		resp, body := readResponse(t, br, "POST")
		if resp.StatusCode != 201 || !resp.Close {
			t.Fatalf("last: %d close=%v %s", resp.StatusCode, resp.Close, body)
		}
		var got created
		_ = json.Unmarshal([]byte(body), &got)
		if _, b, _ := rowBody(t, db, got.ID); string(b) != "last" {
			t.Fatalf("chunked row = %q", b)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("connection not closed after Connection: close: %v", err)
		}
	})

	t.Run("expect 100-continue", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "POST /upload/cont HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		br := bufio.NewReader(c)
		line, _ := br.ReadString('\n')
		if line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("want 100 Continue, got %q", line)
		}
		if l2, _ := br.ReadString('\n'); l2 != "\r\n" {
			t.Fatalf("100 not terminated: %q", l2)
		}
		io.WriteString(c, "hello")
		resp, body := readResponse(t, br, "POST")
		if resp.StatusCode != 201 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})

	t.Run("expect rejected gets no 100", func(t *testing.T) {
		out := rawExchange(t, addr, "POST /upload/cont HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n", 10*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 413 ") || strings.Contains(out, "100 Continue") {
			t.Fatalf("got %q", out)
		}
	})

	t.Run("keep-alive reuse", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		for i := 0; i < 20; i++ {
			fmt.Fprintf(c, "POST /upload/ka HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n%02d", i)
			resp, body := readResponse(t, br, "POST")
			if resp.StatusCode != 201 || resp.Close {
				t.Fatalf("req %d: %d close=%v %s", i, resp.StatusCode, resp.Close, body)
			}
		}
		// HTTP/1.0 with keep-alive stays open; without it, closes.
		io.WriteString(c, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		resp, _ := readResponse(t, br, "GET")
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("1.0 keep-alive: %d close=%v", resp.StatusCode, resp.Close)
		}
		io.WriteString(c, "GET /healthz HTTP/1.0\r\n\r\n")
		resp, _ = readResponse(t, br, "GET")
		if resp.StatusCode != 200 || !resp.Close {
			t.Fatalf("1.0: %d close=%v", resp.StatusCode, resp.Close)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("1.0 connection not closed: %v", err)
		}
	})
}

func TestBadInput(t *testing.T) {
	dsn := testdb.New(t)
	_, addr := startServer(t, dsn, func(c *Config) { c.MaxBody = 1000 })
	waitReady(t, addr)
	db := testdb.Open(t, dsn)

	long := strings.Repeat("a", 9000)
	manyFields := strings.Repeat("X-A: b\r\n", 101)
	bigHeader := "X-Big: " + strings.Repeat("b", 17<<10) + "\r\n"
	tests := []struct {
		name   string
		req    string
		status int
		allow  string
	}{
		{"garbage", "HELLO\r\n\r\n", 400, ""},
		{"missing host", "GET /healthz HTTP/1.1\r\n\r\n", 400, ""},
		{"bad version", "GET / HTTP/9.9\r\n\r\n", 0, ""},
		{"cl and te", "POST /upload/a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, ""},
		{"differing cl", "POST /upload/a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, ""},
		{"bad cl", "POST /upload/a HTTP/1.1\r\nContent-Length: 3x\r\n\r\nabc", 400, ""},
		{"bad chunk size", "POST /upload/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, ""},
		{"obs-fold", "POST /upload/a HTTP/1.1\r\nX-A: b\r\n  c\r\nContent-Length: 1\r\n\r\na", 400, ""},
		{"control in name", "POST /upload/a HTTP/1.1\r\nX\x01A: b\r\nContent-Length: 1\r\n\r\na", 400, ""},
		{"space in name", "POST /upload/a HTTP/1.1\r\nX A: b\r\n\r\n", 400, ""},
		{"too large", "POST /upload/a HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 413, ""},
		{"too large chunked", "POST /upload/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + strings.Repeat("q", 1001) + "\r\n0\r\n\r\n", 413, ""},
		{"too many fields", "GET /healthz HTTP/1.1\r\n" + manyFields + "\r\n", 431, ""},
		{"header too large", "GET /healthz HTTP/1.1\r\n" + bigHeader + "\r\n", 431, ""},
		{"uri too long", "GET /" + long + " HTTP/1.1\r\n\r\n", 414, ""},
		{"unknown te", "POST /upload/a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, ""},
		{"bad stream", "POST /upload/a%20b HTTP/1.1\r\nContent-Length: 1\r\n\r\na", 404, ""},
		{"stream too long", "POST /upload/" + strings.Repeat("s", 65) + " HTTP/1.1\r\nContent-Length: 1\r\n\r\na", 404, ""},
		{"nested path", "POST /upload/a/b HTTP/1.1\r\nContent-Length: 1\r\n\r\na", 404, ""},
		{"upload root", "POST /upload HTTP/1.1\r\nContent-Length: 1\r\n\r\na", 404, ""},
		{"get upload", "GET /upload/a HTTP/1.1\r\n\r\n", 405, "POST"},
		{"put upload", "PUT /upload/a HTTP/1.1\r\nContent-Length: 1\r\n\r\na", 405, "POST"},
		{"post healthz", "POST /healthz HTTP/1.1\r\nContent-Length: 1\r\n\r\na", 405, "GET, HEAD"},
		{"unknown path", "GET /nope HTTP/1.1\r\n\r\n", 404, ""},
	}
	before := countRows(t, db)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			if i := strings.Index(req, "\r\n"); tt.name != "missing host" && i > 0 && strings.Contains(req[:i], "HTTP/1.1") && !strings.Contains(req, "\r\nHost:") {
				req = req[:i+2] + "Host: x\r\n" + req[i+2:]
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, req)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("unparseable answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			want := tt.status
			if want == 0 {
				want = resp.StatusCode // 400 or 505 both acceptable for an unknown version
				if want != 505 && want != 400 {
					t.Fatalf("version: got %d", want)
				}
			}
			if resp.StatusCode != want {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, want)
			}
			if !bytes.HasSuffix(body, []byte("\n")) || bytes.Count(body, []byte("\n")) != 1 || len(body) < 3 {
				t.Fatalf("reason is not one line: %q", body)
			}
			if tt.allow != "" && resp.Header.Get("Allow") != tt.allow {
				t.Fatalf("Allow = %q, want %q", resp.Header.Get("Allow"), tt.allow)
			}
			// Other connections are undisturbed.
			r2, err := http.Get("http://" + addr + "/healthz")
			if err != nil || r2.StatusCode != 200 {
				t.Fatalf("healthz after bad input: %v", err)
			}
			r2.Body.Close()
		})
	}
	if after := countRows(t, db); after != before {
		t.Fatalf("bad input wrote %d rows", after-before)
	}
}

func TestTimeouts(t *testing.T) {
	dsn := testdb.New(t)
	_, addr := startServer(t, dsn, func(c *Config) {
		c.HeaderTimeout = 700 * time.Millisecond
		c.IdleTimeout = 700 * time.Millisecond
	})
	waitReady(t, addr)

	t.Run("slowloris gets 408", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		start := time.Now()
		io.WriteString(c, "POST /upload/slow HTTP/1.1\r\nHost: x\r\n")
		// Keep dribbling so the idle timeout alone would never fire.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 50; i++ {
				time.Sleep(100 * time.Millisecond)
				if _, err := io.WriteString(c, "X-Drip: 1\r\n"); err != nil {
					return
				}
			}
		}()
		b, _ := io.ReadAll(c)
		<-done
		if !strings.HasPrefix(string(b), "HTTP/1.1 408 ") {
			t.Fatalf("got %q after %v", b, time.Since(start))
		}
	})

	t.Run("idle keep-alive closed", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		readResponse(t, br, "GET")
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("idle connection not closed: %v", err)
		}
	})

	t.Run("stalled body gets 408", func(t *testing.T) {
		out := rawExchange(t, addr, "POST /upload/stall HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", 15*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 408 ") {
			t.Fatalf("got %q", out)
		}
	})
}

func TestDatabaseDown(t *testing.T) {
	dir := t.TempDir()
	_, addr := startServer(t, "root@unix("+dir+"/nope.sock)/upsink", nil)
	r, err := http.Get("http://" + addr + "/healthz")
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", err, r)
	}
	r.Body.Close()
	r, err = http.Get("http://" + addr + "/readyz")
	if err != nil || r.StatusCode != 503 {
		t.Fatalf("readyz: %v %v", err, r)
	}
	r.Body.Close()
	r, err = http.Post("http://"+addr+"/upload/x", "text/plain", strings.NewReader("data"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 503 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("upload with db down: %d Retry-After=%q", r.StatusCode, r.Header.Get("Retry-After"))
	}
}

// TestInflightBudget: bodies still arriving may take only the held tier
// (three quarters) of --max-inflight, so a request that would go past it gets
// 503 before its body is read (no 100 Continue), while an upload that arrives
// whole still fits in the last quarter; every byte comes back at the end.
func TestInflightBudget(t *testing.T) {
	dsn := testdb.New(t)
	srv, addr := startServer(t, dsn, func(c *Config) { c.MaxBody = 4000; c.MaxInflight = 8000 })
	waitReady(t, addr)
	// Hold one body half-sent: it is small, so its buffer is sized and
	// charged in full (4,000 + 383 metadata) of the 6,000-byte held tier.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /upload/hold HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\npartial")
	waitFor(t, "the held body to be charged", func() bool { return srv.Stats().InflightBytes == 4000+metaMax })
	out := rawExchange(t, addr, "POST /upload/b HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n", 10*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 503 ") || !strings.Contains(out, "Retry-After: ") || strings.Contains(out, "100 Continue") {
		t.Fatalf("over the held tier: %q", out)
	}
	// A whole upload uses the last quarter.
	out = rawExchange(t, addr, "POST /upload/whole HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n"+strings.Repeat("w", 1000), 10*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 201 ") {
		t.Fatalf("whole upload beside a held body: %q", out)
	}
	// Finish the held body: it commits and the budget is returned.
	io.WriteString(c, strings.Repeat("x", 4000-len("partial")))
	resp, body := readResponse(t, bufio.NewReader(c), "POST")
	if resp.StatusCode != 201 {
		t.Fatalf("held upload: %d %s", resp.StatusCode, body)
	}
	c.Close()
	waitBudgetZero(t, srv)
}

// waitFor waits (bounded) until cond holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitBudgetZero waits until every connection is gone and asserts that the
// in-flight budget and the request records are back to exactly 0.
func waitBudgetZero(t testing.TB, srv *Server) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := srv.Stats()
		if st.Conns == 0 && st.InflightBytes == 0 && st.Records == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget not back to 0 with every connection gone: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestManyClients: 1,000 concurrent clients each upload distinct bodies; every
// 201 maps to exactly one row with the same bytes and no unacknowledged row exists.
func TestManyClients(t *testing.T) {
	dsn := testdb.New(t)
	srv, addr := startServer(t, dsn, nil)
	waitReady(t, addr)
	db := testdb.Open(t, dsn)

	const clients, perClient = 1000, 3
	type ack struct {
		id   uint64
		body string
	}
	var (
		mu   sync.Mutex
		acks []ack
		errs []string
	)
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < perClient; j++ {
				body := fmt.Sprintf("client=%d seq=%d %s", i, j, strings.Repeat(strconv.Itoa(i%10), i%300))
				resp, err := cl.Post("http://"+addr+"/upload/many", "text/plain", strings.NewReader(body))
				if err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 201 {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%d %s", resp.StatusCode, b))
					mu.Unlock()
					continue
				}
				var got created
				if err := json.Unmarshal(b, &got); err != nil {
					t.Error(err)
					continue
				}
				mu.Lock()
				acks = append(acks, ack{got.ID, body})
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Logf("%d non-201 answers, first: %s", len(errs), errs[0])
	}
	if len(acks) < clients*perClient*9/10 {
		t.Fatalf("only %d of %d uploads acknowledged", len(acks), clients*perClient)
	}
	rows := rowsOf(t, db, "many")
	seen := map[uint64]bool{}
	for _, a := range acks {
		if seen[a.id] {
			t.Fatalf("id %d acknowledged twice", a.id)
		}
		seen[a.id] = true
		if got, ok := rows[a.id]; !ok || got != a.body {
			t.Fatalf("ack %d: row present=%v, body match=%v", a.id, ok, got == a.body)
		}
	}
	if len(rows) != len(acks) {
		t.Fatalf("%d rows but %d acknowledgements: unacknowledged rows exist", len(rows), len(acks))
	}
	st := srv.Store().Stats()
	t.Logf("%d uploads in %d batches", st.Rows, st.Batches)
}
