package server

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"upsink/internal/testdb"
)

// TestPoliteUploadsDuringSlowAttack: 200 slowloris connections and 200 slow
// bodies declaring ~1 MiB that fill the budget's held tier do not keep a
// polite client's whole 1 KiB uploads from getting 201: those use the quarter
// of the budget that only complete requests may take. (Before the held tier
// and charge-as-it-arrives, three such declarations spent a 4 MiB budget.)
func TestPoliteUploadsDuringSlowAttack(t *testing.T) {
	dsn := testdb.New(t)
	srv, addr := startServer(t, dsn, func(c *Config) { c.MaxInflight = 4 << 20 })
	waitReady(t, addr)
	var attackers []net.Conn
	defer func() {
		for _, c := range attackers {
			c.Close()
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		attackers = append(attackers, c)
		return c
	}
	for i := 0; i < 200; i++ {
		fmt.Fprintf(dial(), "POST /upload/loris HTTP/1.1\r\nHost: x\r\nX-Pad-%d: ", i)
	}
	chunk := strings.Repeat("s", 16<<10)
	for i := 0; i < 200; i++ {
		fmt.Fprintf(dial(), "POST /upload/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1048193\r\n\r\n%s", chunk)
	}
	// The held tier (3 MiB) is full: slow bodies beyond it were refused.
	waitFor(t, "the held tier to fill", func() bool { return srv.Stats().InflightBytes > 3<<20-64<<10 })
	if got := srv.Stats().InflightBytes; got > 3<<20 {
		t.Fatalf("clients still sending hold %d bytes, more than the held tier", got)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	body := strings.Repeat("p", 1024)
	for i := 0; i < 100; i++ {
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "POST /upload/polite HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		resp, b := readResponse(t, br, "POST")
		if resp.StatusCode != 201 {
			t.Fatalf("polite upload %d during the attack: %d %s", i, resp.StatusCode, b)
		}
	}
	c.Close()
	for _, a := range attackers {
		a.Close()
	}
	waitBudgetZero(t, srv)
}
