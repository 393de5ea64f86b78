package bench

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"upsink/internal/testdb"
)

// The ceiling tool on the test MariaDB: about a second of 200-row
// transactions, every committed row counted, every body distinct and
// stored as rendered; a second run into the same table counts only its own.
func TestCeiling(t *testing.T) {
	dsn := testdb.New(t)
	db := testdb.Open(t, dsn)
	r, err := Ceiling(CeilingConfig{DSN: dsn, Table: "ceil", Duration: time.Second, Rows: 200, BodySize: 1024,
		Watch: []WatchSpec{{Name: "self", PID: os.Getpid()}}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Rows <= 0 || r.Transactions <= 0 || r.Rows != 200*r.Transactions || !r.CountOK || r.CountBefore != 0 || r.CountAfter != r.Rows {
		t.Fatalf("result %+v", r)
	}
	if r.RowsPerSec <= 0 || r.Engine != "InnoDB" || r.TxLatency.N != r.Transactions || r.CPUPer1kRows["tool"] <= 0 || r.CPUPer1kRows["self"] <= 0 {
		t.Fatalf("result %+v", r)
	}
	var n, distinct, shaped int64
	filler := makeFiller(1024)[markerLen:]
	if err := db.QueryRow("SELECT COUNT(*), COUNT(DISTINCT body), SUM(LENGTH(body) = 1024 AND SUBSTRING(body, 43) = ? AND body LIKE 'ub %' AND stream = 'bench' AND content_type = 'application/octet-stream' AND remote_addr LIKE '127.0.0.1:%') FROM ceil", filler).
		Scan(&n, &distinct, &shaped); err != nil {
		t.Fatal(err)
	}
	if n != r.Rows || distinct != n || shaped != n {
		t.Fatalf("COUNT(*) %d, distinct bodies %d, as rendered %d; %d rows reported", n, distinct, shaped, r.Rows)
	}
	// The second run, through the command line, counts from where the first ended.
	out := filepath.Join(t.TempDir(), "c.json")
	var stdout, stderr bytes.Buffer
	if rc := Main([]string{"ceiling", "--dsn", dsn, "--table", "ceil", "-d", "300ms", "--rows", "50", "--body", "100", "--json-out", out}, &stdout, &stderr); rc != 0 {
		t.Fatalf("exit %d: %s", rc, stderr.String())
	}
	if !strings.Contains(stdout.String(), "rows/s") || !strings.Contains(stdout.String(), "= rows committed") {
		t.Fatalf("output %s", stdout.String())
	}
	var r2 CeilingResult
	b, _ := os.ReadFile(out)
	if err := json.Unmarshal(b, &r2); err != nil {
		t.Fatal(err)
	}
	if r2.CountBefore != r.Rows || r2.Rows <= 0 || r2.CountAfter != r.Rows+r2.Rows || !r2.CountOK || r2.BodyBytes != 100 {
		t.Fatalf("second run %+v", r2)
	}
	if rc := Main([]string{"ceiling", "--dsn", dsn, "--table", "no-such`name"}, io.Discard, &stderr); rc == 0 {
		t.Fatal("bad table name accepted")
	}
}

// The rendered file: one line per row, five tab-separated fields, the body
// escaped (the filler's newlines as \n), distinct markers, rewind per file.
func TestCeilingRows(t *testing.T) {
	r := newCeilingRows(3, 100, 0xabc)
	var all []byte
	for pass := range 2 {
		r.rewind()
		b, err := io.ReadAll(io.LimitReader(r, 1<<20))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(lines) != 3 {
			t.Fatalf("pass %d: %d lines", pass, len(lines))
		}
		for i, l := range lines {
			f := strings.Split(l, "\t")
			if len(f) != 5 || f[0] != "bench" || len(f[1]) != 26 || !strings.HasPrefix(f[2], "127.0.0.1:") || f[3] != "application/octet-stream" {
				t.Fatalf("line %q", l)
			}
			seq := strconv.FormatUint(uint64(pass*3+i+1), 16)
			if !strings.HasPrefix(f[4], "ub 0000000000000abc ") || !strings.HasSuffix(f[4][:41], seq) || !strings.Contains(f[4], `\n`) {
				t.Fatalf("body %q", f[4])
			}
		}
		all = append(all, b...)
	}
	if int64(len(all)) != r.bytes {
		t.Fatalf("bytes %d, counted %d", len(all), r.bytes)
	}
	// Small reads give the same bytes.
	r2 := newCeilingRows(3, 100, 0xabc)
	var got []byte
	for pass := range 2 {
		_ = pass
		r2.rewind()
		p := make([]byte, 7)
		for {
			n, err := r2.Read(p)
			got = append(got, p[:n]...)
			if err == io.EOF {
				break
			}
		}
	}
	// Timestamps differ between the two renderings: compare without them.
	strip := func(b []byte) string {
		var s []string
		for l := range strings.SplitSeq(string(b), "\n") {
			f := strings.Split(l, "\t")
			if len(f) == 5 {
				f[1] = ""
			}
			s = append(s, strings.Join(f, "\t"))
		}
		return strings.Join(s, "\n")
	}
	if strip(got) != strip(all) {
		t.Fatalf("7-byte reads differ:\n%q\n%q", got, all)
	}
}
