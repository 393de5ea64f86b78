package bench

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{"1024", 1024, false}, {"1KiB", 1024, false}, {"1 KiB", 1024, false}, {"32MiB", 32 << 20, false},
		{"2GiB", 2 << 30, false}, {"4k", 4096, false}, {"10B", 10, false}, {"", 0, true}, {"-1", 0, true},
		{"1.5KiB", 0, true}, {"KiB", 0, true}, {"99999999999GiB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, bad=%v", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

func TestBuildRequest(t *testing.T) {
	tg, err := parseTarget("http://127.0.0.1:9/upload/s?x=1")
	if err != nil {
		t.Fatal(err)
	}
	req, off := buildRequest(tg, "application/octet-stream", 100, false)
	head := string(req[:off])
	for _, want := range []string{"POST /upload/s?x=1 HTTP/1.1\r\n", "Host: 127.0.0.1:9\r\n", "Content-Length: 100\r\n", "Connection: close\r\n"} {
		if !strings.Contains(head, want) {
			t.Errorf("head %q lacks %q", head, want)
		}
	}
	if len(req)-off != 100 || !strings.HasSuffix(head, "\r\n\r\n") {
		t.Fatalf("body is %d bytes", len(req)-off)
	}
	if got := string(req[off : off+markerLen]); got != "ub 0000000000000000 0000 0000000000000000\n" {
		t.Fatalf("marker %q", got)
	}
	if tg, err := parseTarget("https://x/"); err != nil || !tg.tls || tg.addr != "x:443" {
		t.Fatalf("https: %+v %v", tg, err)
	}
	if _, err := parseTarget("ftp://x/"); err == nil {
		t.Fatal("ftp accepted")
	}
}

// Load against a real net/http server: every body arrives, distinct, with
// the length announced, and the counts add up.
func TestLoadLoopback(t *testing.T) {
	var (
		mu     sync.Mutex
		bodies = map[string]bool{}
		dups   int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		k := string(b)
		if bodies[k] {
			dups++
		}
		bodies[k] = true
		mu.Unlock()
		if len(b) != 200 || !bytes.HasPrefix(b, []byte("ub ")) {
			w.WriteHeader(400)
			return
		}
		w.WriteHeader(201)
		io.WriteString(w, `{"id":1}`)
	}))
	defer srv.Close()
	for _, ka := range []bool{true, false} {
		mu.Lock()
		clear(bodies)
		mu.Unlock()
		r, err := Load(LoadConfig{URL: srv.URL + "/upload/t", Conns: 8, Count: 300, BodySize: 200, NoKeepAlive: !ka,
			Watch: []WatchSpec{{"self", os.Getpid()}}, WatchEvery: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if r.Created != 300 || r.Responses != 300 || r.Errors != 0 || r.Latency.N != 300 || r.Status["201"] != 300 {
			t.Fatalf("keepalive=%v: %+v", ka, r)
		}
		if len(bodies) != 300 || dups != 0 {
			t.Fatalf("%d distinct bodies, %d duplicates", len(bodies), dups)
		}
		if ka && r.Connects != 8 || !ka && r.Connects != 300 {
			t.Fatalf("keepalive=%v: %d connects", ka, r.Connects)
		}
		if len(r.Memory) != 1 || r.Memory[0].PeakRSS <= 0 {
			t.Fatalf("memory watch: %+v", r.Memory)
		}
	}
	var sb strings.Builder
	r, err := Load(LoadConfig{URL: srv.URL + "/upload/t", Conns: 2, Duration: 200 * time.Millisecond, BodySize: 200})
	if err != nil || r.Created == 0 || r.Elapsed > 5 {
		t.Fatalf("duration run: %v %+v", err, r)
	}
	FormatLoad(&sb, r)
	if !strings.Contains(sb.String(), "uploads/s") {
		t.Fatal(sb.String())
	}
}

func TestIdleLoopback(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") }))
	defer srv.Close()
	r, err := Idle(IdleConfig{URL: srv.URL + "/healthz", Conns: 50, Hold: 300 * time.Millisecond, PID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if r.Answered != 50 || r.StillOpen != 50 || r.Errors != 0 || r.Status["200"] != 50 || r.Before.RSS <= 0 || r.Held.RSS <= 0 {
		t.Fatalf("%+v", r)
	}
}
