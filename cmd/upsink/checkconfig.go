package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"upsink/server"
)

// printSettings writes upsink check-config's report: one line per setting,
// its effective value and where it came from (default, file PATH:LINE:COL,
// env UPSINK_X, flag --x), secrets masked, --loops 0 as the count it
// stands for; then one line per declared
// table with its column count and whether it has a token (never the token).
func printSettings(w io.Writer, s *settings) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	s.fs.VisitAll(func(f *flag.Flag) {
		v, src := current(f.Value), s.src[f.Name].String()
		if f.Name == "loops" && v == 0 {
			// 0 is the server's default: show what it resolves to.
			v, src = server.DefaultLoops(), src+" (half the CPUs)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, showValue(f.Name, v), src)
	})
	for _, t := range s.tables {
		token := "no token"
		if t.Token != "" {
			token = "token set"
		}
		cols := "columns"
		if len(t.Columns) == 1 {
			cols = "column"
		}
		fmt.Fprintf(tw, "table %s\t%d %s, %s\t%s\n", t.Name, len(t.Columns), cols, token, "file "+s.file.Path)
	}
	return tw.Flush()
}

// showValue is a setting's value as check-config and the reload log show
// it: sizes with a unit where exact, the DSN's password masked, empty
// strings and strings with spaces quoted.
func showValue(name string, v any) string {
	switch v := v.(type) {
	case int64:
		return formatSize(v)
	case time.Duration:
		return v.String()
	case int:
		return strconv.Itoa(v)
	case []string:
		masked := make([]string, len(v))
		for i, d := range v {
			masked[i] = maskDSN(d)
		}
		return showValue("", strings.Join(masked, ","))
	case string:
		if name == "dsn" {
			v = maskDSN(v)
		}
		if v == "" || strings.ContainsAny(v, " \t\"") {
			return strconv.Quote(v)
		}
		return v
	}
	return fmt.Sprint(v)
}

// formatSize writes n bytes as parseSize reads them: 1MiB, 1536KiB, 1000.
func formatSize(n int64) string {
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.suf
		}
	}
	return strconv.FormatInt(n, 10)
}

// maskDSN replaces the password of a go-sql-driver DSN,
// user:password@net(addr)/db?params, with *****. The driver splits the
// DSN the same way: the database after the last '/', the credentials
// before the last '@' before it, the user before the first ':'.
func maskDSN(dsn string) string {
	slash := strings.LastIndexByte(dsn, '/')
	if slash < 0 {
		slash = len(dsn)
	}
	at := strings.LastIndexByte(dsn[:slash], '@')
	if at < 0 {
		return dsn
	}
	colon := strings.IndexByte(dsn[:at], ':')
	if colon < 0 {
		return dsn
	}
	return dsn[:colon+1] + "*****" + dsn[at:]
}

// checkConfig ends upsink check-config once serve's own checks have
// passed: the server's (server.CheckConfig), then the report on out; the
// UPSINK_* variables that name no setting are a warning on stderr. 0 if
// valid, else 2 with the one-line error.
func checkConfig(out, stderr io.Writer, s *settings, cfg server.Config) int {
	if err := server.CheckConfig(cfg); err != nil {
		fmt.Fprintf(stderr, "upsink check-config: %s\n", oneLine(err))
		return 2
	}
	if len(s.unknownEnv) > 0 {
		fmt.Fprintf(stderr, "upsink check-config: warning: ignoring environment variables that name no setting: %s\n", strings.Join(s.unknownEnv, ", "))
	}
	if err := printSettings(out, s); err != nil {
		fmt.Fprintf(stderr, "upsink check-config: %v\n", err)
		return 1
	}
	return 0
}
