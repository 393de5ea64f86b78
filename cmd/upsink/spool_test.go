package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"upsink/internal/faultproxy"
	"upsink/internal/testdb"
	"upsink/internal/testnet"
)

// TestKill9SpoolReplays: the short version of the fault suite's "kill -9
// upsink" with MariaDB away. Uploads answered 202 from the spool survive a
// SIGKILL; the next upsink on the same spool directory replays them once
// MariaDB answers, each stored exactly once.
func TestKill9SpoolReplays(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dsn := testdb.New(t)
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.Open(t, dsn)
	proxy := faultproxy.New(t, mc.Net, mc.Addr)
	proxy.Down()
	mc.Net, mc.Addr = "tcp", proxy.Addr()
	bin := buildUpsink(t)
	spoolDir := t.TempDir()

	start := func() (*child, string) {
		for try := 0; ; try++ {
			addr := testnet.FreeAddr(t)
			u := startChild(t, bin, "serve", "--listen", addr, "--dsn", mc.FormatDSN(), "--spool-dir", spoolDir)
			if u.waitMsg("upsink: serving") {
				return u, addr
			}
			if try == 2 || !strings.Contains(u.log.all(), "address already in use") {
				t.Fatalf("upsink exited before serving; its log:\n%s", u.log.all())
			}
		}
	}
	u, addr := start()
	const n = 30
	for i := range n {
		resp, err := http.Post("http://"+addr+"/upload/k9", "text/plain", strings.NewReader(fmt.Sprint("upload ", i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 202 || !strings.Contains(string(b), `"durable":"spool"`) {
			t.Fatalf("upload %d with MariaDB down: %d %s", i, resp.StatusCode, b)
		}
	}
	_ = u.cmd.Process.Kill() // SIGKILL: no shutdown of any kind
	<-u.done

	proxy.Up()
	u2, addr2 := start()
	defer u2.stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var r struct {
			Database string `json:"database"`
			Spool    struct {
				Records int `json:"records"`
			} `json:"spool"`
		}
		resp, err := http.Get("http://" + addr2 + "/readyz")
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if r.Database == "up" && r.Spool.Records == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool not drained within 30 s (%+v); log:\n%s", r, u2.log.all())
		}
		time.Sleep(20 * time.Millisecond)
	}
	rows, err := db.Query("SELECT body, COUNT(*) FROM uploads WHERE stream='k9' GROUP BY body")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var body string
		var c int
		if err := rows.Scan(&body, &c); err != nil {
			t.Fatal(err)
		}
		if c != 1 {
			t.Fatalf("%q stored %d times", body, c)
		}
		seen++
	}
	if seen != n {
		t.Fatalf("%d distinct uploads stored, want %d", seen, n)
	}
}
