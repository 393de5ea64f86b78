package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"

	"upsink/server"
)

// checkConfigRun runs upsink check-config with args and returns its exit
// code, its report by setting (value and source) and stderr.
func checkConfigRun(t *testing.T, args ...string) (int, map[string][2]string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := serve(args, &errb, &out)
	rep := map[string][2]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		if f[0] == "table" {
			rep["table "+f[1]] = [2]string{strings.Join(f[2:len(f)-2], " "), strings.Join(f[len(f)-2:], " ")}
			continue
		}
		rep[f[0]] = [2]string{f[1], strings.Join(f[2:], " ")}
	}
	return code, rep, errb.String()
}

// clearEnv unsets the UPSINK_* settings a developer's shell may hold.
func clearEnv(t *testing.T) {
	for _, name := range []string{"UPSINK_DSN", "UPSINK_LISTEN", "UPSINK_MAX_BODY", "UPSINK_CONFIG", "UPSINK_LOG_LEVEL", "UPSINK_LOG_FORMAT"} {
		t.Setenv(name, "")
		// t.Setenv restores it afterwards; an empty value would still be "set".
		unsetenv(t, name)
	}
}

// TestSettingsPrecedence: flags > environment > --config file > defaults,
// each reported with its source by check-config.
func TestSettingsPrecedence(t *testing.T) {
	clearEnv(t)
	p := writeConfig(t, "[server]\nlisten = \"127.0.0.1:9001\"\n  max_body = \"2MiB\"\ndsn = \"file:pw-file@unix(/f.sock)/db\"\nbatch_rows = 7\n")
	code, rep, stderr := checkConfigRun(t, "--config", p)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	want := map[string][2]string{
		"listen":       {"127.0.0.1:9001", "file " + p + ":2:1"},
		"max-body":     {"2MiB", "file " + p + ":3:3"},
		"batch-rows":   {"7", "file " + p + ":5:1"},
		"dsn":          {"file:*****@unix(/f.sock)/db", "file " + p + ":4:1"},
		"idle-timeout": {"30s", "default"},
		"max-inflight": {"32MiB", "default"},
		"config":       {p, "flag --config"},
		"loops":        {strconv.Itoa(server.DefaultLoops()), "default (half the CPUs)"},
	}
	check := func(what string, rep map[string][2]string, want map[string][2]string) {
		t.Helper()
		for k, w := range want {
			if rep[k] != w {
				t.Errorf("%s: %s = %q, want %q", what, k, rep[k], w)
			}
		}
	}
	check("file", rep, want)

	// The environment wins over the file, UPSINK_DSN included; UPSINK_CONFIG names the file.
	t.Setenv("UPSINK_LISTEN", "127.0.0.1:9002")
	t.Setenv("UPSINK_DSN", "env:pw-env@tcp(db:3306)/x")
	t.Setenv("UPSINK_MAX_BODY", "3MiB")
	t.Setenv("UPSINK_CONFIG", p)
	code, rep, stderr = checkConfigRun(t)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	want["listen"] = [2]string{"127.0.0.1:9002", "env UPSINK_LISTEN"}
	want["dsn"] = [2]string{"env:*****@tcp(db:3306)/x", "env UPSINK_DSN"}
	want["max-body"] = [2]string{"3MiB", "env UPSINK_MAX_BODY"}
	want["config"] = [2]string{p, "env UPSINK_CONFIG"}
	check("env", rep, want)

	// Flags win over both; a bad value in the environment does not matter
	// when the flag is given.
	t.Setenv("UPSINK_MAX_BODY", "2XB")
	code, rep, stderr = checkConfigRun(t, "--listen", "127.0.0.1:9003", "--max-body=1536KiB", "--dsn", "flag@unix(/s)/d")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	want["listen"] = [2]string{"127.0.0.1:9003", "flag --listen"}
	want["max-body"] = [2]string{"1536KiB", "flag --max-body"}
	want["dsn"] = [2]string{"flag@unix(/s)/d", "flag --dsn"}
	check("flags", rep, want)

	// An explicit loop count is shown as given.
	code, rep, stderr = checkConfigRun(t, "--loops", "3", "--max-body=1MiB", "--dsn", "flag@unix(/s)/d")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	check("loops", rep, map[string][2]string{"loops": {"3", "flag --loops"}})
}

// TestSettingsErrors: a bad value is one line naming its source, exit 2.
func TestSettingsErrors(t *testing.T) {
	clearEnv(t)
	p := writeConfig(t, "# settings\n\n[server]\n  max_body = \"2XB\"\n")
	for _, tt := range []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"UPSINK_MAX_BODY", "2XB"}, []string{"--dsn", "x@unix(/s)/d"},
			`upsink check-config: UPSINK_MAX_BODY: bad size "2XB" (want bytes, or a number with KiB, MiB or GiB)`},
		{nil, []string{"--dsn", "x@unix(/s)/d", "--config", p},
			`upsink check-config: config: ` + p + `:4:3: server.max_body: bad size "2XB" (want bytes, or a number with KiB, MiB or GiB)`},
		{nil, []string{"--dsn", "x@unix(/s)/d", "--max-body", "2XB"},
			`upsink check-config: --max-body: bad size "2XB" (want bytes, or a number with KiB, MiB or GiB)`},
		{[]string{"UPSINK_IDLE_TIMEOUT", "soon"}, []string{"--dsn", "x@unix(/s)/d"},
			`upsink check-config: UPSINK_IDLE_TIMEOUT: bad duration "soon" (want e.g. 500ms, 10s, 1m30s)`},
		{[]string{"UPSINK_LOOPS", "many"}, []string{"--dsn", "x@unix(/s)/d"}, `upsink check-config: UPSINK_LOOPS: bad integer "many"`},
		{[]string{"UPSINK_LOG_LEVEL", "loud"}, []string{"--dsn", "x@unix(/s)/d"},
			`upsink check-config: UPSINK_LOG_LEVEL: bad level "loud" (want debug, info, warn or error)`},
		{nil, []string{"--dsn", "x@unix(/s)/d", "--log-format", "xml"}, `upsink check-config: --log-format: bad format "xml" (want text or json)`},
		{nil, []string{"--dsn", "x@unix(/s)/d", "--config", writeConfig(t, "[server]\nlog_format = \"xml\"\n")},
			`server.log_format: bad format "xml"`},
		{nil, []string{"--dsn", "x@unix(/s)/d", "--max-body", "2MiB", "--max-inflight", "1MiB"}, "upsink check-config: server: max inflight"},
		{nil, []string{"--dsn", "x@unix(/s)/d", "--listen", "nope"}, `upsink check-config: server: listen address "nope"`},
		{nil, nil, "upsink check-config: no database: pass --dsn or set UPSINK_DSN"},
		{nil, []string{"--dsn", "x@unix(/s)/d", "--config", writeConfig(t, "[server]\nlisen = 1\n")}, ":2:1: unknown key server.lisen"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			if tt.env != nil {
				t.Setenv(tt.env[0], tt.env[1])
			}
			code, rep, stderr := checkConfigRun(t, tt.args...)
			if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tt.want) || len(rep) != 0 {
				t.Fatalf("exit %d, stderr %q, report %v: want 2 and one line with %q", code, stderr, rep, tt.want)
			}
		})
	}
}

// TestCheckConfigMasks: the DSN's password and the tables' tokens never
// appear; tables are listed with their column count and whether they have
// a token; unknown UPSINK_* variables are a warning (exit 0), upsink's own
// test variables are not.
func TestCheckConfigMasks(t *testing.T) {
	clearEnv(t)
	t.Setenv("UPSINK_NOPE", "1")
	t.Setenv("UPSINK_ALSO_NOT", "")
	t.Setenv("UPSINK_REQUIRE_DB", "0")
	p := writeConfig(t, "[server]\ndsn = \"app:Pa55@w:rd@tcp(db.example:3306)/upsink?timeout=5s\"\n"+
		"[[table]]\nname = \"r\"\ntoken = \"T0KEN-s3cret\"\n[[table.column]]\nname = \"a\"\ntype = \"int\"\n[[table.column]]\nname = \"b\"\ntype = \"text\"\n"+
		"[[table]]\nname = \"open\"\n[[table.column]]\nname = \"a\"\ntype = \"int\"\n")
	var out, errb bytes.Buffer
	code := serve([]string{"--config", p}, &errb, &out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if s := out.String(); strings.Contains(s, "Pa55") || strings.Contains(s, "w:rd") || strings.Contains(s, "T0KEN") || strings.Contains(s, "s3cret") {
		t.Fatalf("a secret in the report:\n%s", s)
	}
	if want := "upsink check-config: warning: ignoring environment variables that name no setting: UPSINK_ALSO_NOT, UPSINK_NOPE\n"; errb.String() != want {
		t.Fatalf("stderr %q, want %q", errb.String(), want)
	}
	_, rep, _ := checkConfigRun(t, "--config", p)
	if got := rep["dsn"][0]; got != "app:*****@tcp(db.example:3306)/upsink?timeout=5s" {
		t.Errorf("dsn shown as %q", got)
	}
	if got := rep["table r"]; got != [2]string{"2 columns, token set", "file " + p} {
		t.Errorf("table r: %q", got)
	}
	if got := rep["table open"]; got != [2]string{"1 column, no token", "file " + p} {
		t.Errorf("table open: %q", got)
	}
}

func TestMaskDSN(t *testing.T) {
	for in, want := range map[string]string{
		"root@unix(/run/mysqld/mysqld.sock)/upsink": "root@unix(/run/mysqld/mysqld.sock)/upsink",
		"u:p@tcp(h:3306)/d":                         "u:*****@tcp(h:3306)/d",
		"u:p@ss:w/rd@tcp(h)/d?x=1":                  "u:*****@tcp(h)/d?x=1",
		"u:@tcp(h)/d":                               "u:*****@tcp(h)/d",
		"/d":                                        "/d",
		"":                                          "",
	} {
		if got := maskDSN(in); got != want {
			t.Errorf("maskDSN(%q) = %q, want %q", in, got, want)
		}
	}
}

// unsetenv unsets name for the rest of the test (after t.Setenv, which
// restores it).
func unsetenv(t *testing.T, name string) {
	t.Helper()
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}

// TestLogFormat: --log-format json writes one JSON object per line; the
// level can change while it runs.
func TestLogFormat(t *testing.T) {
	var b bytes.Buffer
	level := new(slog.LevelVar)
	log, err := newLogger(&b, "json", level)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("upsink: serving", "listen", "http://127.0.0.1:8080")
	level.Set(slog.LevelDebug)
	log.Debug("shown")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines %q", lines)
	}
	var rec struct{ Msg, Listen, Level string }
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec.Msg != "upsink: serving" || rec.Listen != "http://127.0.0.1:8080" || rec.Level != "INFO" {
		t.Fatalf("%q: %+v %v", lines[0], rec, err)
	}
	if _, err := newLogger(&b, "xml", level); err == nil {
		t.Fatal("xml accepted")
	}
}
