package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"upsink/durable"
	"upsink/internal/faultproxy"
	"upsink/internal/testdb"
)

type answerJSON struct {
	ID       uint64 `json:"id"`
	Stream   string `json:"stream"`
	Bytes    int    `json:"bytes"`
	Durable  string `json:"durable"`
	SpoolSeq uint64 `json:"spool_seq"`
}

type readyJSON struct {
	Ready    bool   `json:"ready"`
	Database string `json:"database"`
	Spool    *struct {
		Records uint64  `json:"records"`
		Bytes   int64   `json:"bytes"`
		Oldest  float64 `json:"oldest_age_seconds"`
	} `json:"spool"`
}

// post uploads body with the given Idempotency-Key header values and returns
// the status, the decoded JSON answer (2xx) or body text, and the headers.
func post(t *testing.T, addr, stream, body string, keys ...string) (int, answerJSON, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+addr+"/upload/"+stream, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		req.Header.Add("Idempotency-Key", k)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a answerJSON
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatalf("answer %q: %v", b, err)
		}
	}
	return resp.StatusCode, a, string(b), resp.Header
}

func readyz(t *testing.T, addr string) (int, readyJSON) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r readyJSON
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("/readyz %q: %v", b, err)
	}
	return resp.StatusCode, r
}

func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSpoolAndIdempotencyOverHTTP: the answers a client sees. With MariaDB
// up: 201 with "durable":"mysql"; a keyed retry gets the same 201 with
// Idempotent-Replayed; another body 422; malformed or repeated keys 400.
// With MariaDB down: /readyz stays 200 and says so, uploads get 202 with
// "durable":"spool" and a spool_seq, a keyed retry the same 202. MariaDB
// back: the spool drains and every upload is stored once.
func TestSpoolAndIdempotencyOverHTTP(t *testing.T) {
	dsn := testdb.New(t)
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.Open(t, dsn)
	proxy := faultproxy.New(t, mc.Net, mc.Addr)
	mc.Net, mc.Addr = "tcp", proxy.Addr()
	_, addr := startServer(t, mc.FormatDSN(), func(c *Config) {
		c.Spool = durable.SpoolConfig{Dir: t.TempDir(), After: 200 * time.Millisecond}
		c.Store.StallAfter = 500 * time.Millisecond
	})
	until(t, "the database to be up", func() bool {
		_, r := readyz(t, addr)
		return r.Database == "up"
	})

	st, first, _, _ := post(t, addr, "d", "one", `"k-1"`)
	if st != 201 || first.Durable != "mysql" || first.ID == 0 || first.Bytes != 3 {
		t.Fatalf("first: %d %+v", st, first)
	}
	st, again, _, hdr := post(t, addr, "d", "one", "k-1") // the bare token is the same key
	if st != 201 || again != first || hdr.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %+v %v, want %+v replayed", st, again, hdr, first)
	}
	for _, c := range []struct {
		name   string
		keys   []string
		body   string
		status int
		reason string
	}{
		{"other body", []string{`"k-1"`}, "two", 422, "Idempotency-Key already used with a different body\n"},
		{"unterminated", []string{`"k-2`}, "x", 400, ""},
		{"repeated", []string{"a", "b"}, "x", 400, "more than one Idempotency-Key\n"},
		{"too long", []string{strings.Repeat("k", 256)}, "x", 400, ""},
	} {
		st, _, text, _ := post(t, addr, "d", c.body, c.keys...)
		if st != c.status || (c.reason != "" && text != c.reason) {
			t.Fatalf("%s: %d %q, want %d %q", c.name, st, text, c.status, c.reason)
		}
	}

	proxy.Down()
	until(t, "/readyz to say the database is down", func() bool {
		_, r := readyz(t, addr)
		return r.Database == "down"
	})
	code, r := readyz(t, addr)
	if code != 200 || !r.Ready || r.Spool == nil {
		t.Fatalf("/readyz with the database down: %d %+v", code, r)
	}
	st, sp1, _, _ := post(t, addr, "d", "spooled one")
	if st != 202 || sp1.Durable != "spool" || sp1.SpoolSeq == 0 || sp1.ID != 0 || sp1.Bytes != 11 {
		t.Fatalf("spooled: %d %+v", st, sp1)
	}
	st, sp2, _, _ := post(t, addr, "d", "spooled two", "k-2")
	if st != 202 || sp2.SpoolSeq <= sp1.SpoolSeq {
		t.Fatalf("spooled keyed: %d %+v", st, sp2)
	}
	st, sp2again, _, hdr := post(t, addr, "d", "spooled two", "k-2")
	if st != 202 || sp2again != sp2 || hdr.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("spooled retry: %d %+v", st, sp2again)
	}
	if _, r := readyz(t, addr); r.Spool.Records != 2 || r.Spool.Bytes == 0 {
		t.Fatalf("/readyz backlog %+v, want 2 records", r.Spool)
	}

	proxy.Up()
	until(t, "the spool to drain", func() bool {
		_, r := readyz(t, addr)
		return r.Database == "up" && r.Spool.Records == 0
	})
	rows := rowsOf(t, db, "d")
	if len(rows) != 3 {
		t.Fatalf("rows %v, want one, spooled one, spooled two", rows)
	}
	seen := map[string]bool{}
	for _, b := range rows {
		if seen[b] {
			t.Fatalf("%q stored twice", b)
		}
		seen[b] = true
	}
	if rows[first.ID] != "one" || !seen["spooled one"] || !seen["spooled two"] {
		t.Fatalf("rows %v", rows)
	}
}
