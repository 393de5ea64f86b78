package main

import (
	"bytes"
	"net"
	"os"
	"strings"
	"testing"
)

func TestCommandErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	dsn := "root@unix(" + t.TempDir() + "/none.sock)/upsink"
	d1, d2 := t.TempDir(), t.TempDir()
	for _, d := range []string{d1, d2} {
		var out bytes.Buffer
		if code := run([]string{"gencert", "--dir", d}, &out); code != 0 {
			t.Fatalf("gencert: %d %s", code, out.String())
		}
	}
	cfgDir := t.TempDir()
	conf := func(name, text string) string {
		p := cfgDir + "/" + name + ".toml"
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	table := "[[table]]\nname = \"r\"\n[[table.column]]\nname = \"a\"\n"
	tlsArgs := func(cert, key string) []string {
		return []string{"serve", "--dsn", dsn, "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:1", "--tls-cert", cert, "--tls-key", key}
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "usage"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"unknown flag", []string{"serve", "--nope"}, "flag provided but not defined"},
		{"bad size", []string{"serve", "--dsn", dsn, "--max-body", "12XB"}, `upsink serve: --max-body: bad size "12XB"`},
		{"bad duration", []string{"serve", "--dsn", dsn, "--idle-timeout", "soon"}, `--idle-timeout: bad duration "soon"`},
		{"no dsn", []string{"serve", "--dsn", ""}, "no database"},
		{"bad listen", []string{"serve", "--dsn", dsn, "--listen", "nope"}, "nope"},
		{"inflight below body", []string{"serve", "--dsn", dsn, "--max-body", "2MiB", "--max-inflight", "1MiB"}, "max inflight"},
		{"port in use", []string{"serve", "--dsn", dsn, "--listen", busy}, "address already in use"},
		{"cert key mismatch", tlsArgs(d1+"/cert.pem", d2+"/key.pem"), "private key does not match"},
		{"missing cert", tlsArgs(d1+"/nope.pem", d1+"/key.pem"), "nope.pem"},
		{"tls without key", []string{"serve", "--dsn", dsn, "--tls-listen", "127.0.0.1:1"}, "needs all of"},
		{"gencert without dir", []string{"gencert"}, "usage"},
		{"config missing", []string{"serve", "--dsn", dsn, "--config", cfgDir + "/none.toml"}, "none.toml: no such file"},
		{"config syntax", []string{"serve", "--dsn", dsn, "--config", conf("syntax", "[server\n")}, "syntax.toml:1:"},
		{"config unknown key", []string{"serve", "--dsn", dsn, "--config", conf("key", "[server]\nlisen = \"x\"\n")}, "key.toml:2:1: unknown key server.lisen"},
		{"config bad type", []string{"serve", "--dsn", dsn, "--config", conf("type", table+"type = \"dubble\"\n")}, `table "r" column "a": type "dubble": unknown type`},
		{"config bad default", []string{"serve", "--dsn", dsn, "--config", conf("default", table+"type = \"tinyint\"\ndefault = 300\n")}, `default "300": out of range for tinyint`},
		{"config bad setting", []string{"serve", "--dsn", dsn, "--config", conf("size", "[server]\nmax_body = \"12XB\"\n")}, `size.toml:2:1: server.max_body: bad size "12XB"`},
		{"config setting applies", []string{"serve", "--dsn", dsn, "--config", conf("listen", "[server]\nlisten = \"nope\"\n")}, "nope"},
		{"config dsn from file", []string{"serve", "--config", conf("dsn", "[server]\ndsn = \"\"\n")}, "no database"},
		// the file's bad max_body is not applied: --max-body is given, so the next check speaks
		{"flags win over config", []string{"serve", "--max-body", "1MiB", "--dsn", "", "--config", conf("size2", "[server]\nmax_body = \"12XB\"\n")}, "no database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(tt.args, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2 (stderr %q)", code, stderr.String())
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, tt.want) {
				t.Fatalf("want one line containing %q, got %q", tt.want, out)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true}, {"1MiB", 1 << 20, true}, {"512KiB", 512 << 10, true},
		{"2GiB", 2 << 30, true}, {"10B", 10, true}, {"0", 0, true},
		{"-1", 0, false}, {"1MB", 0, false}, {"", 0, false}, {"x", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v", tt.in, got, err)
		}
	}
}
