package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"upsink/schema"
)

const good = `# the issue's example, with settings
[server]
listen = "127.0.0.1:9090"
dsn = "root@unix(/tmp/x.sock)/upsink"
max_body = "2MiB"
batch_rows = 500
spool_dir = ""

[[table]]
name = "readings"
token = "s3cret"          # optional
unknown_columns = "reject"
  [[table.column]]
  name = "device"
  type = "varchar(64)"
  not_null = true
  [[table.column]]
  name = "temp"
  type = "double"
  default = 21.5
  [[table.column]]
  name = "ts"
  type = "datetime(6)"
  default = 2025-06-01T12:00:00+02:00

[[table]]
name = "events"
unknown_columns = "ignore"
  [[table.column]]
  name = "n"
  type = "BIGINT UNSIGNED"
  default = 7
  [[table.column]]
  name = "day"
  type = "date"
  default = 2024-02-29
  [[table.column]]
  name = "at"
  type = "timestamp(3)"
  default = 2025-01-02T03:04:05.5
  [[table.column]]
  name = "ok"
  type = "bool"
  default = true
  not_null = true
  [[table.column]]
  name = "doc"
  type = "json"
  default = '{"a": [1, 2]}'
`

func write(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "upsink.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func str(s string) *string { return &s }

func ty(s string) schema.Type {
	t, err := schema.ParseType(s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestLoadGood(t *testing.T) {
	p := write(t, good)
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	wantServer := []Setting{{"listen", "listen", "127.0.0.1:9090", 3, 1}, {"dsn", "dsn", "root@unix(/tmp/x.sock)/upsink", 4, 1},
		{"max_body", "max-body", "2MiB", 5, 1}, {"batch_rows", "batch-rows", "500", 6, 1}, {"spool_dir", "spool-dir", "", 7, 1}}
	if len(f.Server) != len(wantServer) {
		t.Fatalf("server: %+v", f.Server)
	}
	for i := range wantServer {
		if f.Server[i] != wantServer[i] {
			t.Errorf("server[%d] = %+v, want %+v", i, f.Server[i], wantServer[i])
		}
	}
	want := []schema.Table{
		{Name: "readings", Token: "s3cret", Unknown: schema.RejectUnknown, Columns: []schema.Column{
			{Name: "device", Type: ty("varchar(64)"), NotNull: true},
			{Name: "temp", Type: ty("double"), Default: str("21.5")},
			{Name: "ts", Type: ty("datetime(6)"), Default: str("2025-06-01T12:00:00+02:00")}}},
		{Name: "events", Unknown: schema.IgnoreUnknown, Columns: []schema.Column{
			{Name: "n", Type: ty("bigint unsigned"), Default: str("7")},
			{Name: "day", Type: ty("date"), Default: str("2024-02-29")},
			{Name: "at", Type: ty("timestamp(3)"), Default: str("2025-01-02T03:04:05.5")},
			{Name: "ok", Type: ty("bool"), Default: str("true"), NotNull: true},
			{Name: "doc", Type: ty("json"), Default: str(`{"a": [1, 2]}`)}}},
	}
	if len(f.Tables) != len(want) || f.Path != p {
		t.Fatalf("tables: %+v", f.Tables)
	}
	for i, wt := range want {
		gt := f.Tables[i]
		if gt.Name != wt.Name || gt.Token != wt.Token || gt.Unknown != wt.Unknown || len(gt.Columns) != len(wt.Columns) {
			t.Fatalf("table %d: got %+v, want %+v", i, gt, wt)
		}
		for j, wc := range wt.Columns {
			gc := gt.Columns[j]
			if gc.Name != wc.Name || gc.Type != wc.Type || gc.NotNull != wc.NotNull || (gc.Default == nil) != (wc.Default == nil) ||
				(gc.Default != nil && *gc.Default != *wc.Default) {
				t.Errorf("table %s column %d: got %+v (default %v), want %+v (default %v)", gt.Name, j, gc, deref(gc.Default), wc, deref(wc.Default))
			}
		}
	}
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func TestLoadMinimal(t *testing.T) {
	for _, text := range []string{"", "# nothing\n", "[server]\n"} {
		f, err := Load(write(t, text))
		if err != nil || len(f.Server) != 0 || len(f.Tables) != 0 {
			t.Fatalf("%q: %+v, %v", text, f, err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	col := "[[table]]\nname = \"r\"\n[[table.column]]\nname = \"a\"\ntype = \"int\"\n"
	tests := []struct {
		name, text, want string
	}{
		{"unknown top-level key", "lisen = \"x\"\n", ":1:1: unknown key lisen"},
		{"unknown server key", "[server]\nlisten = \"x\"\nmax_bdy = \"1MiB\"\n", ":3:1: unknown key server.max_bdy"},
		{"flag spelled with dash", "[server]\nmax-body = \"1MiB\"\n", ":2:1: unknown key server.max-body"},
		{"unknown table key", "[[table]]\nname = \"r\"\ntokn = \"x\"\n", ":3:1: unknown key table.tokn"},
		{"unknown column key", col + "nul = true\n", ":6:1: unknown key table.column.nul"},
		{"several unknown keys", "a = 1\n[server]\nb = 2\n", ":1:1: unknown key a; " + "PATH:3:1: unknown key server.b"},
		{"key after [[table]] meant for server", "[[table]]\nname = \"r\"\nlisten = \"x\"\n", ":3:1: unknown key table.listen"},
		{"syntax error", "[[table]]\nname = \"r\n", ":2:10: basic strings cannot have new lines"},
		{"duplicate key", "[[table]]\nname = \"r\"\nname = \"s\"\n", ":3:1: name: key name is already defined"},
		{"not_null not a bool", col + "not_null = \"yes\"\n", ":6:12: table.column.not_null: cannot decode TOML string into bool"},
		{"name not a string", "[[table]]\nname = 5\n", ":2:8: table.name: cannot decode TOML integer into string"},
		{"column not a table", "[[table]]\nname = \"r\"\ncolumn = \"x\"\n", ":3:10: table.column: cannot decode TOML string into an array of tables ([[table.column]])"},
		{"server not a table", "server = 1\n", ":1:10: server: cannot decode TOML integer into a table ([server])"},
		{"server value an array", "[server]\nlisten = [\"a\"]\n", ": server.listen: want a string, an integer or a boolean, got an array"},
		{"dsn list not of strings", "[server]\ndsn = [1]\n", ": server.dsn: want a string or an array of strings, got an array"},
		{"server value a float", "[server]\nmax_body = 1.5\n", ": server.max_body: want a string, an integer or a boolean, got a float"},
		{"table without name", "[[table]]\ntoken = \"x\"\n", `: table #1: no name`},
		{"column without name", "[[table]]\nname = \"r\"\n[[table.column]]\ntype = \"int\"\n", `: table "r" column #1: no name`},
		{"column without type", "[[table]]\nname = \"r\"\n[[table.column]]\nname = \"a\"\n", `: table "r" column "a": no type`},
		{"bad type", "[[table]]\nname = \"r\"\n[[table.column]]\nname = \"a\"\ntype = \"dubble\"\n", `: table "r" column "a": type "dubble": unknown type`},
		{"bad unknown_columns", "[[table]]\nname = \"r\"\nunknown_columns = \"drop\"\n", `: table "r": unknown_columns = "drop" (want "reject" or "ignore")`},
		{"default of another type", col + "default = \"abc\"\n", `: schema: table "r" column "a": default "abc": not an integer`},
		{"default out of range", col + "default = 3000000000\n", `: schema: table "r" column "a": default "3000000000": out of range for int`},
		{"default a time of day", col + "default = 12:00:00\n", `: table "r" column "a": default: want a string, number, boolean, date or date-time, got a time of day`},
		{"default an array", col + "default = [1]\n", "got an array"},
		{"no columns", "[[table]]\nname = \"r\"\n", `: schema: table "r": no columns`},
		{"reserved column", "[[table]]\nname = \"r\"\n[[table.column]]\nname = \"id\"\ntype = \"int\"\n", `column "id": name reserved`},
		{"duplicate table", col + col, `table "r": declared twice`},
		{"bad table name", "[[table]]\nname = \"a-b\"\n[[table.column]]\nname = \"a\"\ntype = \"int\"\n", `table "a-b": bad name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := write(t, tt.text)
			_, err := Load(p)
			want := strings.ReplaceAll(tt.want, "PATH", p)
			if err == nil || !strings.HasPrefix(err.Error(), "config: "+p) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v\nwant one line, config: %s...%s", err, p, want)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.toml")); err == nil || !strings.Contains(err.Error(), "none.toml: no such file") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestServerFlags(t *testing.T) {
	got := ServerFlags()
	if len(got) < 20 || got[0] != "listen" || got[2] != "max-body" {
		t.Fatalf("%v", got)
	}
	for _, f := range got {
		if f == "config" || strings.Contains(f, "_") {
			t.Fatalf("bad flag %q in %v", f, got)
		}
	}
}

// FuzzParse: any file either loads valid tables or fails with one line.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("[server]\nlisten = 1\n[[table]]\nname = \"x\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("f.toml", data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if err := schema.Validate(file.Tables); err != nil {
			t.Fatalf("loaded tables invalid: %v", err)
		}
	})
}

// TestSettingPositions: each [server] setting knows where it is written,
// whichever way the file spells the table.
func TestSettingPositions(t *testing.T) {
	for _, tt := range []struct {
		text, want string
	}{
		{"# c\n[server]\nlisten = \"x\"\n  max_body = \"1MiB\"\n", "listen@3:1 max_body@4:3"},
		{"server.listen = \"x\"\n\n[[table]]\nname = \"t\"\n[[table.column]]\nname = \"a\"\ntype = \"int\"\n", "listen@1:1"},
		{"server = { listen = \"x\", max_body = 7 }\n", "listen@1:12 max_body@1:26"},
	} {
		f, err := Parse("f.toml", []byte(tt.text))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range f.Server {
			got = append(got, s.Key+"@"+strings.TrimPrefix(f.Where(s), "f.toml:"))
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("%q: got %v, want %s", tt.text, got, tt.want)
		}
	}
}
