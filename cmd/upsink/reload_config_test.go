package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"upsink/internal/testdb"
	"upsink/internal/testnet"
)

// TestSIGHUPReloadsConfig runs the real binary against a real MariaDB:
// SIGHUP re-reads the --config file, applies a table's new token (the old
// one is refused from then on) and the new log level, logs one line saying
// so and one listing a changed setting that needs a restart; a bad file
// changes nothing.
func TestSIGHUPReloadsConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dsn := testdb.New(t)
	bin := buildUpsink(t)
	cfg := filepath.Join(t.TempDir(), "upsink.toml")
	write := func(server, token string) {
		t.Helper()
		text := "[server]\n" + server + "\n[[table]]\nname = \"readings\"\ntoken = \"" + token + "\"\n" +
			"  [[table.column]]\n  name = \"device\"\n  type = \"varchar(64)\"\n"
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`log_level = "info"`, "old")

	var (
		u    *child
		addr string
	)
	for try := 0; ; try++ {
		addr = testnet.FreeAddr(t)
		u = startChild(t, bin, "serve", "--listen", addr, "--dsn", dsn, "--config", cfg, "--spool-dir=")
		if u.waitMsg("upsink: serving") {
			break
		}
		if try == 2 || !strings.Contains(u.log.all(), "address already in use") {
			t.Fatalf("upsink exited before serving; its log:\n%s", u.log.all())
		}
	}
	defer u.stop()
	post := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+"/ingest/readings", strings.NewReader(`{"device":"d1"}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Without a spool /readyz is 200 once MariaDB answers.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready; its log:\n%s", u.log.all())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := post("old"); st != 201 {
		t.Fatalf("old token before the reload: %d", st)
	}
	hup := func() {
		t.Helper()
		if err := u.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	// line returns the last log line whose msg is msg.
	line := func(msg string) string {
		t.Helper()
		lines, _ := u.log.since(0)
		for i := len(lines) - 1; i >= 0; i-- {
			if m, ok := slogMsg(lines[i]); ok && m == msg {
				return lines[i]
			}
		}
		t.Fatalf("no %q", msg)
		return ""
	}

	write("log_level = \"debug\"\nmax_conns = 100\nlisten = \"127.0.0.1:1\"", "new")
	hup()
	u.mustMsg("upsink: SIGHUP: config reloaded")
	if l := line("upsink: SIGHUP: config reloaded"); !strings.Contains(l, `applied="log-level=debug, table readings token"`) || strings.Contains(l, "new") {
		t.Fatalf("reload line: %s", l)
	}
	u.mustMsg("upsink: SIGHUP: changed settings need a restart")
	// listen is given on the command line: the file's does not count.
	if l := line("upsink: SIGHUP: changed settings need a restart"); !strings.Contains(l, `settings="max-conns 0 -> 100"`) {
		t.Fatalf("restart line: %s", l)
	}
	if st := post("old"); st != 401 {
		t.Fatalf("old token after the reload: %d, want 401", st)
	}
	if st := post("new"); st != 201 {
		t.Fatalf("new token after the reload: %d, want 201", st)
	}

	// A bad file changes nothing.
	write(`log_level = "loud"`, "newer")
	hup()
	u.mustMsg("upsink: SIGHUP: config not reloaded, keeping the current settings")
	if l := line("upsink: SIGHUP: config not reloaded, keeping the current settings"); !strings.Contains(l, `server.log_level: bad level \"loud\"`) {
		t.Fatalf("bad file line: %s", l)
	}
	if st := post("new"); st != 201 {
		t.Fatalf("token after a bad reload: %d, want 201", st)
	}

	// At level warn the reload's info line is not written, its warning is.
	write("log_level = \"warn\"\nmax_conns = 100", "new")
	before, _ := u.log.since(0)
	hup()
	u.mustMsg("upsink: SIGHUP: changed settings need a restart")
	after, _ := u.log.since(len(before))
	for _, l := range after {
		if m, _ := slogMsg(l); m == "upsink: SIGHUP: config reloaded" {
			t.Fatalf("info line written at level warn: %s", l)
		}
	}

	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-u.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("upsink did not stop; its log:\n%s", u.log.all())
	}
}
