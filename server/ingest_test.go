package server

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"upsink/durable"
	"upsink/internal/faultproxy"
	"upsink/internal/testdb"
	"upsink/schema"
)

func ingestTables(t *testing.T) []schema.Table {
	t.Helper()
	col := func(name, typ string, notNull bool) schema.Column {
		ty, err := schema.ParseType(typ)
		if err != nil {
			t.Fatal(err)
		}
		return schema.Column{Name: name, Type: ty, NotNull: notNull}
	}
	tables := []schema.Table{
		{Name: "readings", Columns: []schema.Column{col("device", "varchar(64)", true), col("temp", "double", false), col("ts", "datetime(6)", false)}},
		{Name: "secure", Token: "s3cret", Columns: []schema.Column{col("v", "int", false)}},
	}
	if err := schema.Validate(tables); err != nil {
		t.Fatal(err)
	}
	return tables
}

type ingestReply struct {
	status int
	body   string
	hdr    http.Header
}

func ingestPost(t *testing.T, addr, path, ctype, body string, hdr ...string) ingestReply {
	t.Helper()
	r, err := ingestPostErr(addr, path, ctype, body, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ingestPostErr is ingestPost for goroutines other than the test's.
func ingestPostErr(addr, path, ctype, body string, hdr ...string) (ingestReply, error) {
	req, err := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		return ingestReply{}, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ingestReply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return ingestReply{resp.StatusCode, string(b), resp.Header}, err
}

type rowsAnswer struct {
	Table    string `json:"table"`
	Rows     int    `json:"rows"`
	FirstID  uint64 `json:"first_id"`
	Durable  string `json:"durable"`
	SpoolSeq uint64 `json:"spool_seq"`
}

func decodeRowsAnswer(t *testing.T, r ingestReply, status int) rowsAnswer {
	t.Helper()
	var a rowsAnswer
	if r.status != status {
		t.Fatalf("status %d %q, want %d", r.status, r.body, status)
	}
	if err := json.Unmarshal([]byte(r.body), &a); err != nil {
		t.Fatalf("answer %q: %v", r.body, err)
	}
	return a
}

func countTable(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestIngestOverHTTP: every format into a declared table, all or nothing,
// and every error a client can get, with its status and body.
func TestIngestOverHTTP(t *testing.T) {
	dsn := testdb.New(t)
	db := testdb.Open(t, dsn)
	_, addr := startServer(t, dsn, func(c *Config) { c.Tables = ingestTables(t) })
	waitReady(t, addr)

	a := decodeRowsAnswer(t, ingestPost(t, addr, "/ingest/readings", "application/x-ndjson",
		`{"device":"d1","temp":21.5,"ts":"2026-12-02T03:04:05.5+01:00"}`+"\n\n"+`{"device":"d2"}`+"\n"+`{"device":"d3","temp":null}`+"\n"), 201)
	if a.Table != "readings" || a.Rows != 3 || a.FirstID == 0 || a.Durable != "mysql" {
		t.Fatalf("ndjson: %+v", a)
	}
	var dev string
	var temp sql.NullFloat64
	var ts sql.NullString
	if err := db.QueryRow("SELECT device, temp, ts FROM readings WHERE id = ?", a.FirstID).Scan(&dev, &temp, &ts); err != nil {
		t.Fatal(err)
	}
	if dev != "d1" || temp.Float64 != 21.5 || ts.String != "2026-12-02 02:04:05.500000" {
		t.Fatalf("first row: %q %v %q (ts in UTC)", dev, temp, ts.String)
	}
	if err := db.QueryRow("SELECT device FROM readings WHERE id = ?", a.FirstID+2).Scan(&dev); err != nil || dev != "d3" {
		t.Fatalf("third row: %q %v", dev, err)
	}

	csv := "\ufeffdevice,temp\r\n\"a, \"\"quoted\"\" name\",1.5\r\nb,\r\n"
	if a := decodeRowsAnswer(t, ingestPost(t, addr, "/ingest/readings", "text/csv; charset=utf-8", csv), 201); a.Rows != 2 {
		t.Fatalf("csv: %+v", a)
	}
	if err := db.QueryRow("SELECT device FROM readings WHERE temp = 1.5").Scan(&dev); err != nil || dev != `a, "quoted" name` {
		t.Fatalf("csv row: %q %v", dev, err)
	}
	if a := decodeRowsAnswer(t, ingestPost(t, addr, "/ingest/readings?header=absent&columns=temp,device", "text/csv", "7,x\n8,y\n"), 201); a.Rows != 2 {
		t.Fatalf("csv without header: %+v", a)
	}
	if a := decodeRowsAnswer(t, ingestPost(t, addr, "/ingest/readings", "application/json", `[{"device":"j1"},{"device":"j2","temp":-3e2}]`), 201); a.Rows != 2 {
		t.Fatalf("json: %+v", a)
	}
	if a := decodeRowsAnswer(t, ingestPost(t, addr, "/ingest/readings", "application/x-www-form-urlencoded", "device=f%201&temp=4"), 201); a.Rows != 1 {
		t.Fatalf("form: %+v", a)
	}
	stored := countTable(t, db, "readings")
	if stored != 10 {
		t.Fatalf("%d rows, want 10", stored)
	}

	// Keyed: the same request again gets the first answer, no rows.
	first := ingestPost(t, addr, "/ingest/readings", "application/x-ndjson", `{"device":"k"}`+"\n", "Idempotency-Key", `"ing-1"`)
	again := ingestPost(t, addr, "/ingest/readings", "application/x-ndjson", `{"device":"k"}`+"\n", "Idempotency-Key", `"ing-1"`)
	if first.status != 201 || again.body != first.body || again.hdr.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("keyed retry: %d %q then %d %q %v", first.status, first.body, again.status, again.body, again.hdr)
	}
	stored++

	// Bad requests store nothing.
	var big strings.Builder
	for i := 1; i <= 10000; i++ {
		temp := "1"
		if i == 9999 {
			temp = `"abc"`
		}
		fmt.Fprintf(&big, `{"device":"b%d","temp":%s}`+"\n", i, temp)
	}
	for _, c := range []struct {
		name, path, ctype, body string
		hdr                     []string
		status                  int
		want                    string
		wantHdr                 [2]string
	}{
		{"bad value on line 9999 of 10000", "/ingest/readings", "application/x-ndjson", big.String(), nil, 400,
			`{"error":"not a number (want decimal notation, e.g. -1.5e3)","line":9999,"column":"temp","value":"abc"}` + "\n", [2]string{}},
		{"unknown column", "/ingest/readings", "application/json", `{"device":"x","humidity":3}`, nil, 400,
			`{"error":"unknown column","index":0,"column":"humidity"}` + "\n", [2]string{}},
		{"not null missing", "/ingest/readings", "application/x-ndjson", `{"temp":1}` + "\n", nil, 400, "", [2]string{}},
		{"no records", "/ingest/readings", "application/json", `[]`, nil, 400, `{"error":"no records"}` + "\n", [2]string{}},
		{"over --max-body", "/ingest/readings", "application/x-ndjson", strings.Repeat(" ", 1<<20+1), nil, 413, "body larger than the limit of 1048576 bytes\n", [2]string{}},
		{"unknown table", "/ingest/nope", "application/json", `{}`, nil, 404, "no such table\n", [2]string{}},
		{"wrong content type", "/ingest/readings", "application/xml", `<a/>`, nil, 415, reason415 + "\n", [2]string{}},
		{"bad query", "/ingest/readings?header=maybe", "text/csv", "a\n", nil, 400, "", [2]string{}},
		{"no token", "/ingest/secure", "application/json", `{"v":1}`, nil, 401, "missing or wrong bearer token\n", [2]string{"Www-Authenticate", "Bearer"}},
		{"wrong token", "/ingest/secure", "application/json", `{"v":1}`, []string{"Authorization", "Bearer nope"}, 401, "", [2]string{"Www-Authenticate", "Bearer"}},
	} {
		r := ingestPost(t, addr, c.path, c.ctype, c.body, c.hdr...)
		if r.status != c.status || (c.want != "" && r.body != c.want) || (c.wantHdr[0] != "" && r.hdr.Get(c.wantHdr[0]) != c.wantHdr[1]) {
			t.Fatalf("%s: %d %q %v, want %d %q", c.name, r.status, r.body, r.hdr, c.status, c.want)
		}
	}
	if n := countTable(t, db, "readings"); n != stored {
		t.Fatalf("%d rows after bad requests, want %d", n, stored)
	}
	if a := decodeRowsAnswer(t, ingestPost(t, addr, "/ingest/secure", "application/json", `{"v":7}`, "Authorization", "Bearer s3cret"), 201); a.Rows != 1 {
		t.Fatalf("with the token: %+v", a)
	}
}

// TestIngestSpooled: with MariaDB away, an ingest request is answered 202
// from the spool and its rows reach the table once MariaDB is back.
func TestIngestSpooled(t *testing.T) {
	dsn := testdb.New(t)
	db := testdb.Open(t, dsn)
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := faultproxy.New(t, mc.Net, mc.Addr)
	mc.Net, mc.Addr = "tcp", proxy.Addr()
	_, addr := startServer(t, mc.FormatDSN(), func(c *Config) {
		c.Tables = ingestTables(t)
		c.Spool = durable.SpoolConfig{Dir: t.TempDir(), After: 200 * time.Millisecond}
		c.Store.StallAfter = 500 * time.Millisecond
	})
	until(t, "the database to be up", func() bool { _, r := readyz(t, addr); return r.Database == "up" })
	proxy.Down()
	until(t, "the database to be down", func() bool { _, r := readyz(t, addr); return r.Database == "down" })
	a := decodeRowsAnswer(t, ingestPost(t, addr, "/ingest/readings", "text/csv", "device,temp\ns1,1\ns2,2\n", "Idempotency-Key", "sp-1"), 202)
	if a.Rows != 2 || a.Durable != "spool" || a.SpoolSeq == 0 || a.FirstID != 0 {
		t.Fatalf("spooled: %+v", a)
	}
	again := decodeRowsAnswer(t, ingestPost(t, addr, "/ingest/readings", "text/csv", "device,temp\ns1,1\ns2,2\n", "Idempotency-Key", "sp-1"), 202)
	if again != a {
		t.Fatalf("keyed retry while spooled: %+v, want %+v", again, a)
	}
	proxy.Up()
	until(t, "the spool to drain", func() bool {
		_, r := readyz(t, addr)
		return r.Database == "up" && r.Spool.Records == 0
	})
	if n := countTable(t, db, "readings"); n != 2 {
		t.Fatalf("%d rows after the replay, want 2", n)
	}
}

// TestIngestConcurrentTables: clients ingest into two tables and upload at
// once; every request's rows are in its table once, each request's ids
// consecutive from its first_id, and no two requests share an id.
func TestIngestConcurrentTables(t *testing.T) {
	dsn := testdb.New(t)
	db := testdb.Open(t, dsn)
	tables := ingestTables(t)
	tables[1].Token = ""
	_, addr := startServer(t, dsn, func(c *Config) { c.Tables = tables })
	waitReady(t, addr)
	const workers, each = 8, 15
	type done struct {
		table         string
		first, rows   int
		worker, index int
	}
	results := make(chan done, workers*each)
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				var r ingestReply
				var err error
				switch i % 3 {
				case 0:
					r, err = ingestPostErr(addr, "/ingest/readings", "text/csv", fmt.Sprintf("device,temp\nw%d-%d-a,%d\nw%d-%d-b,%d\n", w, i, i, w, i, i))
				case 1:
					r, err = ingestPostErr(addr, "/ingest/secure", "application/x-ndjson", fmt.Sprintf("{\"v\":%d}\n{\"v\":%d}\n{\"v\":%d}\n", w, i, -i))
				default:
					r, err = ingestPostErr(addr, "/upload/mixed", "text/plain", fmt.Sprintf("upload %d %d", w, i))
				}
				if err != nil || r.status != 201 {
					errs <- fmt.Errorf("worker %d request %d: %d %q %v", w, i, r.status, r.body, err)
					return
				}
				if i%3 == 2 {
					continue
				}
				var a rowsAnswer
				if err := json.Unmarshal([]byte(r.body), &a); err != nil {
					errs <- err
					return
				}
				results <- done{a.Table, int(a.FirstID), a.Rows, w, i}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(results)
	seen := map[string]map[int]bool{"readings": {}, "secure": {}}
	n := map[string]int{}
	for d := range results {
		for k := d.first; k < d.first+d.rows; k++ {
			if seen[d.table][k] {
				t.Fatalf("%s id %d given to two requests", d.table, k)
			}
			seen[d.table][k] = true
		}
		n[d.table] += d.rows
		if d.table == "readings" {
			var dev string
			if err := db.QueryRow("SELECT device FROM readings WHERE id = ?", d.first+1).Scan(&dev); err != nil || dev != fmt.Sprintf("w%d-%d-b", d.worker, d.index) {
				t.Fatalf("readings id %d: %q %v, want the request's second row", d.first+1, dev, err)
			}
		}
	}
	if countTable(t, db, "readings") != n["readings"] || countTable(t, db, "secure") != n["secure"] || n["readings"] != workers*5*2 || n["secure"] != workers*5*3 {
		t.Fatalf("rows: readings %d secure %d, answered %v", countTable(t, db, "readings"), countTable(t, db, "secure"), n)
	}
}
