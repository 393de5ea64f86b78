package server

import (
	"bytes"
	"context"
	"testing"

	"github.com/panjf2000/gnet/v2"

	"upsink/schema"
)

// TestSetTokens: a table's token can be replaced, added and removed at run
// time; bad calls change nothing; looking a token up allocates nothing.
func TestSetTokens(t *testing.T) {
	h, fs, fc := newTestHandler(t)
	fd := fc.fd
	s := &Server{h: h}
	h.tables = map[string]*schema.Table{
		"r": {Name: "r", Token: "old", Columns: []schema.Column{{Name: "v", Type: schema.Type{Kind: schema.Int}}}},
		"o": {Name: "o", Columns: []schema.Column{{Name: "v", Type: schema.Type{Kind: schema.Int}}}},
	}
	post := func(table, auth string) string {
		t.Helper()
		req := "POST /ingest/" + table + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
		if auth != "" {
			req += "Authorization: Bearer " + auth + "\r\n"
		}
		// A new connection each time: a 401 leaves its body unread and
		// the connection lingering.
		fd++
		fc := &fakeConn{fd: fd, el: &fakeLoop{}, addr: fc.addr}
		if _, act := h.OnOpen(fc); act != gnet.None {
			t.Fatal("OnOpen refused")
		}
		fc.in = []byte(req + "\r\n{\"v\":1}")
		if act := h.OnTraffic(fc); act != gnet.None {
			t.Fatalf("action %v", act)
		}
		if len(fs.queued) > 0 {
			fs.flush()
			r := fc.el.pending
			fc.el.pending = nil
			_ = r.Run(context.Background())
		}
		line, _, _ := bytes.Cut(fc.out.Bytes(), []byte("\r\n"))
		return string(line)
	}
	const ok, denied = "HTTP/1.1 201 Created", "HTTP/1.1 401 Unauthorized"
	for _, step := range []struct {
		set          map[string]string
		err          bool
		table, token string
		want         string
	}{
		{nil, false, "r", "old", ok}, // before any SetTokens: the declared token
		{nil, false, "r", "", denied},
		{map[string]string{"r": "new"}, false, "r", "old", denied},
		{nil, false, "r", "new", ok},
		{nil, false, "o", "", ok},
		{map[string]string{"r": "new", "o": "o-tok"}, false, "o", "", denied},
		{nil, false, "o", "o-tok", ok},
		{map[string]string{"nope": "x"}, true, "o", "o-tok", ok}, // undeclared table: nothing changes
		{map[string]string{"r": "a b"}, true, "r", "new", ok},    // bad token: nothing changes
		{map[string]string{}, false, "r", "", ok},                // none named: no token anywhere
		{map[string]string{}, false, "o", "", ok},
	} {
		if step.set != nil {
			if err := s.SetTokens(step.set); (err != nil) != step.err {
				t.Fatalf("SetTokens(%v): %v", step.set, err)
			}
		}
		if got := post(step.table, step.token); got != step.want {
			t.Fatalf("after SetTokens(%v): %s with %q: %s, want %s", step.set, step.table, step.token, got, step.want)
		}
	}
	if err := s.SetTokens(map[string]string{"r": "t"}); err != nil {
		t.Fatal(err)
	}
	if got := s.Tokens(); got["r"] != "t" || got["o"] != "" || len(got) != 2 {
		t.Fatalf("Tokens() = %v", got)
	}
	tab := h.tables["r"]
	if n := testing.AllocsPerRun(100, func() { _ = h.token(tab) }); n != 0 {
		t.Fatalf("token lookup: %.1f allocations", n)
	}
}
