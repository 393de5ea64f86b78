package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"upsink/config"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "upsink.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestApplyConfigFlagsWin: a [server] setting applies unless its flag is
// on the command line; the tables come back.
func TestApplyConfigFlagsWin(t *testing.T) {
	p := writeConfig(t, "[server]\nlisten = \"127.0.0.1:9999\"\nmax_body = \"2MiB\"\nbatch_rows = 7\ndsn = \"from-file\"\n"+
		"[[table]]\nname = \"r\"\n[[table.column]]\nname = \"a\"\ntype = \"int\"\n")
	for _, tt := range []struct {
		args          []string
		listen, dsn   string
		maxBody, rows int64
	}{
		{nil, "127.0.0.1:9999", "from-file", 2 << 20, 7},
		{[]string{"--listen", "127.0.0.1:1", "--batch-rows", "9"}, "127.0.0.1:1", "from-file", 2 << 20, 9},
		{[]string{"--max-body", "1KiB", "--dsn", ""}, "127.0.0.1:9999", "", 1 << 10, 7}, // given empty still wins
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		listen := fs.String("listen", "127.0.0.1:8080", "")
		dsn := fs.String("dsn", "from-env", "")
		var maxBody int64 = 1 << 20
		fs.Var(size{&maxBody}, "max-body", "")
		rows := fs.Int64("batch-rows", 1000, "")
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		tables, err := applyConfig(fs, p)
		if err != nil {
			t.Fatal(err)
		}
		if *listen != tt.listen || *dsn != tt.dsn || maxBody != tt.maxBody || *rows != tt.rows || len(tables) != 1 || tables[0].Name != "r" {
			t.Errorf("%v: listen %q dsn %q max-body %d rows %d tables %v", tt.args, *listen, *dsn, maxBody, *rows, tables)
		}
	}
	// A bad value names the key; a flag the command does not have too.
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var maxBody int64
	fs.Var(size{&maxBody}, "max-body", "")
	p = writeConfig(t, "[server]\nmax_body = \"12XB\"\n")
	if _, err := applyConfig(fs, p); err == nil || err.Error() != `config: `+p+`: server.max_body = "12XB": bad size "12XB" (want bytes, or a number with KiB, MiB or GiB)` {
		t.Fatalf("bad value: %v", err)
	}
	p = writeConfig(t, "[server]\nlisten = \"x\"\n")
	if _, err := applyConfig(fs, p); err == nil || !strings.Contains(err.Error(), "server.listen: upsink serve has no --listen") {
		t.Fatalf("missing flag: %v", err)
	}
}

// TestConfigCoversServeFlags: every upsink serve flag but --config can be
// set in [server], and every [server] key is a flag.
func TestConfigCoversServeFlags(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"serve", "-h"}, &out); code != 0 {
		t.Fatalf("serve -h: %d", code)
	}
	var flags []string
	for _, line := range strings.Split(out.String(), "\n") {
		if name, ok := strings.CutPrefix(line, "  -"); ok {
			name, _, _ = strings.Cut(name, " ")
			if name != "config" {
				flags = append(flags, name)
			}
		}
	}
	keys := config.ServerFlags()
	slices.Sort(flags)
	slices.Sort(keys)
	if !slices.Equal(flags, keys) {
		t.Fatalf("serve flags %v\n[server] keys %v", flags, keys)
	}
}
