package main

import "strings"

// dsnList is the --dsn flag: several database nodes, in order of
// preference, given as repeated flags or as one comma-separated list.
type dsnList struct{ p *[]string }

func (d dsnList) String() string {
	if d.p == nil {
		return ""
	}
	return strings.Join(*d.p, ",")
}

// Set appends the DSNs of v (a DSN or a comma-separated list of them).
func (d dsnList) Set(v string) error {
	*d.p = append(*d.p, splitDSNs(v)...)
	return nil
}

func (d dsnList) Get() any { return *d.p }

// splitDSNs splits a comma-separated list of go-sql-driver DSNs. A DSN's
// parameters may hold commas (sql_mode=A,B), so a piece without the '/'
// every DSN has before its database name continues the previous DSN.
func splitDSNs(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		switch {
		case p == "":
		case len(out) > 0 && !strings.Contains(p, "/"):
			out[len(out)-1] += "," + p
		default:
			out = append(out, p)
		}
	}
	return out
}
