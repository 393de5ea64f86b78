package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const hsOutput = `goos: linux
goarch: amd64
pkg: upsink/tlsbridge
cpu: Intel(R) Xeon(R) Processor
BenchmarkHandshake/bridge/full-2         	    2374	    990545 ns/op	      1010 handshakes/s
BenchmarkHandshake/bridge/resumed-2      	    2937	    846666 ns/op	      1181 handshakes/s
BenchmarkHandshake/nethttp/full-2        	    4374	    475086 ns/op	      2105 handshakes/s
BenchmarkHandshake/nethttp/resumed-2     	    5715	    382713 ns/op	      2613 handshakes/s
BenchmarkHandshake/bridge/full-2         	    2374	    990545 ns/op	      1200 handshakes/s
BenchmarkHandshake/bridge/resumed-2      	    2937	    846666 ns/op	      2500 handshakes/s
BenchmarkHandshake/nethttp/full-2        	    4374	    475086 ns/op	      2000 handshakes/s
BenchmarkHandshake/nethttp/resumed-2     	    5715	    382713 ns/op	      2700 handshakes/s
BenchmarkHandshake/bridge/full-2         	    2374	    990545 ns/op	      1100 handshakes/s
BenchmarkHandshake/bridge/resumed-2      	    2937	    846666 ns/op	      2400 handshakes/s
BenchmarkHandshake/nethttp/full-2        	    4374	    475086 ns/op	      2200 handshakes/s
BenchmarkHandshake/nethttp/resumed-2     	    5715	    382713 ns/op	      2600 handshakes/s
BenchmarkStore-2   52414	     24179 ns/op	       988.9 rows/batch	     41357 rows/s	     234 B/op	       4 allocs/op
PASS
`

func TestParseGoBenchMetrics(t *testing.T) {
	bs := ParseGoBench(strings.NewReader(hsOutput))
	if len(bs) != 13 {
		t.Fatalf("got %d lines", len(bs))
	}
	if b := bs[0]; b.Pkg != "upsink/tlsbridge" || b.Name != "BenchmarkHandshake/bridge/full-2" || b.NsOp != 990545 || b.Metrics["handshakes/s"] != 1010 || b.HasMem {
		t.Fatalf("first: %+v", b)
	}
	st := bs[12]
	if !st.HasMem || st.BOp != 234 || st.Alloc != 4 || st.Metrics["rows/batch"] != 988.9 || st.Metrics["rows/s"] != 41357 {
		t.Fatalf("store: %+v", st)
	}
	if _, ok := st.Metrics["B/op"]; ok {
		t.Fatal("B/op taken as a metric")
	}
}

func TestHandshakeRates(t *testing.T) {
	hs := HandshakeRates(ParseGoBench(strings.NewReader(hsOutput)))
	want := map[string]float64{"bridge/full": 1100, "bridge/resumed": 2400, "nethttp/full": 2105, "nethttp/resumed": 2613}
	if len(hs) != len(want) {
		t.Fatalf("cases %v", hs)
	}
	for k, v := range want {
		if hs[k] == nil || hs[k].Median != v || len(hs[k].Runs) != 3 {
			t.Errorf("%s: %+v, want median %v", k, hs[k], v)
		}
	}
	// Even count: mean of the middle two; no -N suffix is fine too.
	hs = HandshakeRates([]GoBench{
		{Name: "BenchmarkHandshake/bridge/full", Metrics: map[string]float64{"handshakes/s": 10}},
		{Name: "BenchmarkHandshake/bridge/full", Metrics: map[string]float64{"handshakes/s": 20}},
		{Name: "BenchmarkOther/x-2", Metrics: map[string]float64{"handshakes/s": 5}},
		{Name: "BenchmarkHandshake/nethttp/full-8", Metrics: map[string]float64{"rows/s": 5}},
	})
	if len(hs) != 1 || hs["bridge/full"].Median != 15 {
		t.Fatalf("even: %+v", hs)
	}
}

func TestParseLoadName(t *testing.T) {
	for _, c := range []struct {
		in     string
		server string
		tls    bool
		ok     bool
	}{
		{"load-upsink-c64", "upsink", false, true},
		{"load-tls-baseline-c512", "baseline", true, true},
		{"load-tls-upsink", "", false, false},
		{"load-upsink-64", "", false, false},
		{"idle-upsink-c64", "", false, false},
		{"load-a-b-c-c1", "", false, false},
	} {
		s, tl, ok := parseLoadName(c.in)
		if s != c.server || tl != c.tls || ok != c.ok {
			t.Errorf("%s: %q %v %v", c.in, s, tl, ok)
		}
	}
}

func writeResult(t *testing.T, dir, name string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func load(conns int, ups float64, p99 int64, created int64, peak int64) LoadResult {
	return LoadResult{Conns: conns, UploadsPerSec: ups, Created: created, Status: map[string]int64{"201": created},
		Latency: Latency{P50: p99 / 2, P99: p99}, Memory: []WatchResult{{Name: "server", PeakRSS: peak}, {Name: "mariadbd", PeakRSS: 50 << 20}},
		Command: "upsink-bench load ..."}
}

// A results directory with plain and HTTPS runs of both servers, the
// handshake benchmark and the stall runs renders every table, ratio and
// verdict from those figures.
func TestReportPlainAndTLS(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"machine.tsv": "nproc\t2\nCPU\ttest cpu",
		"run.cmd":     "make bench",
		"hsbench.txt": hsOutput,
		"hsbench.cmd": "go test -run='^$' -bench=Handshake ./tlsbridge",
		"gobench.txt": "pkg: upsink/parser\nBenchmarkParse/curl-2  100  429.4 ns/op  868.74 MB/s  0 B/op  0 allocs/op\n",
	}
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idle := func(before, held int64, per float64) IdleResult {
		return IdleResult{Conns: 10000, Answered: 10000, StillOpen: 10000, Before: Mem{RSS: before}, Held: Mem{RSS: held}, PerConnRSS: per, Command: "upsink-bench idle ..."}
	}
	writeResult(t, dir, "idle-upsink.json", idle(8<<20, 14<<20, 600))
	writeResult(t, dir, "idle-baseline.json", idle(8<<20, 200<<20, 20000))
	writeResult(t, dir, "idle-tls-upsink.json", idle(10<<20, 70<<20, 6000))
	writeResult(t, dir, "idle-tls-baseline.json", idle(10<<20, 400<<20, 40000))
	writeResult(t, dir, "load-upsink-c64.json", load(64, 9000, 20000, 9000, 14<<20))
	writeResult(t, dir, "load-baseline-c64.json", load(64, 1800, 140000, 1800, 15<<20))
	writeResult(t, dir, "load-tls-upsink-c64.json", load(64, 4000, 30000, 4000, 20<<20))
	writeResult(t, dir, "load-tls-baseline-c64.json", load(64, 1600, 150000, 1600, 40<<20))
	writeResult(t, dir, "load-tls-upsink-c512.json", load(512, 1000, 30000, 1000, 20<<20))
	writeResult(t, dir, "load-tls-baseline-c512.json", load(512, 2000, 150000, 2000, 40<<20))
	for _, n := range []string{"load-tls-upsink-c64", "load-tls-baseline-c64", "load-upsink-c64", "load-baseline-c64", "load-tls-upsink-c512"} {
		var r LoadResult
		b, _ := os.ReadFile(filepath.Join(dir, n+".json"))
		_ = json.Unmarshal(b, &r)
		_ = os.WriteFile(filepath.Join(dir, n+".rows"), []byte(strconv.FormatInt(r.Created, 10)), 0o644)
	}
	_ = os.WriteFile(filepath.Join(dir, "load-tls-baseline-c512.rows"), []byte("1999"), 0o644)
	writeResult(t, dir, "stall-upsink.json", StallResult{Conns: 5000, Opened: 5000, HelloBytes: 1498, MaxPending: 1100, ClosedFast: 3972, ClosedLater: 1028,
		CloseMinS: 10, CloseMedS: 10.1, CloseMaxS: 10.2, Before: Mem{RSS: 10 << 20}, Peak: Mem{RSS: 13 << 20}, PerPending: 2860, HoldSecs: 13,
		Probes:  []ProbeResult{{URL: "http://127.0.0.1:1/healthz", Sent: 120, OK: 120}, {URL: "https://127.0.0.1:2/healthz", Sent: 90, OK: 10, Failed: 80, ErrSamples: []string{"tls: EOF"}}},
		Command: "upsink-bench stall ..."})
	writeResult(t, dir, "stall-baseline.json", StallResult{Conns: 5000, Opened: 5000, MaxPending: 5000, ClosedLater: 5000, Before: Mem{RSS: 10 << 20}, Peak: Mem{RSS: 130 << 20}, PerPending: 25000,
		Probes: []ProbeResult{{URL: "https://127.0.0.1:3/healthz", Sent: 100, OK: 100}}})

	for i, v := range []float64{1900, 2000, 1950} {
		writeResult(t, dir, "hs-upsink-full-"+strconv.Itoa(i+1)+".json", HandshakeResult{OK: 4000, PerSec: v, Command: "upsink-bench handshakes --addr x"})
		writeResult(t, dir, "hs-baseline-full-"+strconv.Itoa(i+1)+".json", HandshakeResult{OK: 4000, PerSec: v + 100})
		writeResult(t, dir, "hs-upsink-resumed-"+strconv.Itoa(i+1)+".json", HandshakeResult{OK: 4000, PerSec: v / 2})
		writeResult(t, dir, "hs-baseline-resumed-"+strconv.Itoa(i+1)+".json", HandshakeResult{OK: 4000, PerSec: v})
	}

	md, err := Report(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| ≤ 1 KiB server RSS per idle plain connection | 600 B RSS",
		"| ≤ 8 KiB server RSS per idle TLS connection | 6000 B RSS (0 B PSS) per connection, 10000 idle TLS keep-alive connections (net/http baseline here: 40000 B) | **met** |",
		"| plain uploads/s beside the net/http server (c=64) | upsink 9000/s vs net/http baseline 1800/s = 5.00× | **met** |",
		"| HTTPS uploads/s beside the net/http server (c=64) | upsink 4000/s vs net/http baseline 1600/s = 2.50× | **met** |",
		"| HTTPS uploads/s beside the net/http server (c=512) | upsink 1000/s vs net/http baseline 2000/s = 0.50× | **not met** |",
		"| full TLS handshakes/s within 10 % of net/http's (client in its own process, 64 at a time) | upsink 1950/s vs net/http baseline 2050/s = 0.95× (median of 3) | **met** |",
		"| resumed TLS handshakes/s within 10 % of net/http's (client in its own process, 64 at a time) | upsink 975/s vs net/http baseline 1950/s = 0.50× (median of 3) | **not met** |",
		"| full TLS handshakes/s, in-process microbenchmark (clients share the servers' Go scheduler) | bridge 1100/s vs net/http 2105/s = 0.52× (median of 3) | for information |",
		"| resumed TLS handshakes/s, in-process microbenchmark (clients share the servers' Go scheduler) | bridge 2400/s vs net/http 2613/s = 0.92× (median of 3) | for information |",
		"## TLS handshakes per second over the wire",
		"| full | 1950 | 2050 | 0.95× | 1900, 2000, 1950; 2000, 2100, 2050 | **met** |",
		"| bounded memory with 5000 handshakes in flight | peak RSS 13.0 MiB (10.0 MiB at start, 2860 B per pending handshake, at most 1100 pending at once); 3972 closed at once, 1028 after 10.1 s, 0 still open after 13 s; plain `/healthz` 120/120 answered (max 0.0 ms), HTTPS `/healthz` 10/90 | **met** |",
		"| uploads/s, c=64 | 5.00× | 2.50× |",
		"| uploads/s, c=512 | — | 0.50× |",
		"| p99 latency, c=64 | 0.14× | 0.20× |",
		"| peak RSS under load, c=64 | 0.93× | 0.50× |",
		"| RSS idle (0 connections) | 1.00× | 1.00× |",
		"| RSS per idle keep-alive connection | 0.03× | 0.15× |",
		"| peak RSS with 5000 stalled handshakes | — | 0.10× |",
		"## Idle TLS keep-alive connections: memory per connection",
		"## Uploads of 1 KiB bodies over keep-alive TLS into MariaDB",
		"| full | 1100 | 2105 | 0.52× | 1010, 1200, 1100; 2105, 2000, 2200 |\n",
		"| upsink | 5000 (1498 B) | 1100 | 3972 | 1028 (10.0 / 10.1 / 10.2) | 0 |",
		"| 120/120 (0.0 / 0.0) | 10/90 (0.0 / 0.0) |",
		"| baseline | 5000 (0 B) | 5000 | 0 | 5000",
		"| — | 100/100 (0.0 / 0.0) |",
		"upsink probe https://127.0.0.1:2/healthz failure sample: `tls: EOF`",
		"| **NO** (-1) |",
		"go test -run='^$' -bench=Handshake ./tlsbridge",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// Plain sections come before the HTTPS ones.
	if strings.Index(md, "## Idle keep-alive") > strings.Index(md, "## Idle TLS") ||
		strings.Index(md, "## Uploads of 1 KiB bodies over keep-alive into") > strings.Index(md, "## Uploads of 1 KiB bodies over keep-alive TLS") {
		t.Error("section order")
	}
	if t.Failed() {
		t.Log(md)
	}
}

// A plain-only results directory (an older run) still renders, marking the
// TLS targets as not measured.
func TestReportPlainOnly(t *testing.T) {
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "machine.tsv"), []byte("nproc\t2"), 0o644)
	writeResult(t, dir, "load-upsink-c64.json", load(64, 9000, 20000, 9000, 14<<20))
	md, err := Report(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| ≤ 8 KiB RSS per idle TLS connection | not measured | — |", "| full TLS handshakes/s within 10 % of net/http's (client in its own process) | not measured | — |", "| uploads/s, c=64 | — | — |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "## Handshakes in flight") || strings.Contains(md, "bounded memory") {
		t.Error("stall section without stall results")
	}
}

func TestWireHandshakeRates(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r HandshakeResult) {
		b, _ := json.Marshal(r)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("hs-upsink-full-1.json", HandshakeResult{OK: 10, PerSec: 100})
	write("hs-upsink-full-2.json", HandshakeResult{OK: 10, PerSec: 300})
	write("hs-upsink-full-3.json", HandshakeResult{OK: 10, PerSec: 200})
	write("hs-baseline-resumed-1.json", HandshakeResult{OK: 10, PerSec: 50})
	write("hs-baseline-resumed-2.json", HandshakeResult{OK: 0, PerSec: 0}) // nothing succeeded: not a rate
	write("hs-bad.json", HandshakeResult{OK: 10, PerSec: 1})
	got := WireHandshakeRates(dir)
	if len(got) != 2 {
		t.Fatalf("keys %v", got)
	}
	if u := got["upsink/full"]; u == nil || u.Median != 200 || len(u.Runs) != 3 {
		t.Fatalf("upsink/full %+v", u)
	}
	if b := got["baseline/resumed"]; b == nil || b.Median != 50 || len(b.Runs) != 1 {
		t.Fatalf("baseline/resumed %+v", b)
	}
}

// With a ceiling run: issue 13's targets in the Targets table and the
// ceiling section with the ratio, latency and CPU per landed row of each
// process, plain and HTTPS; a baseline not run at a concurrency says so.
func TestReportCeiling(t *testing.T) {
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "machine.tsv"), []byte("nproc\t2"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "ceiling.cmd"), []byte("upsink-bench ceiling --dsn 'root@unix($SOCK)/b_ceiling' -d 15s"), 0o644)
	writeResult(t, dir, "ceiling.json", CeilingResult{RowsPerTx: 1000, Rows: 400000, Transactions: 400, RowsPerSec: 40000, TxPerSec: 40,
		CountBefore: 0, CountAfter: 400000, CountOK: true, Engine: "InnoDB", FlushAtTrx: "1", StreamBytes: 420 << 20,
		TxLatency: Latency{P50: 20000, P99: 30000}, LoadLatency: Latency{P50: 18000, P99: 28000},
		CPU: CPU{User: 0.6, Sys: 0.2, NCPU: 2}, Memory: []WatchResult{{Name: "mariadbd", CPU: 4, Cores: 0.4}}, Machine: &MachineCPU{Busy: 1.5, IOWait: 0.25, Steal: 0.01}})
	writeResult(t, dir, "ceiling-after.json", CeilingResult{RowsPerTx: 1000, Rows: 300000, Transactions: 300, RowsPerSec: 30000, TxPerSec: 30, CountAfter: 300000, CountOK: true})
	lr := func(c int, ups float64, created int64, srv, db, tool float64) LoadResult {
		r := load(c, ups, 50000, created, 14<<20)
		r.Memory[0].CPU, r.Memory[0].Cores = srv, srv/10
		r.Memory[1].CPU, r.Memory[1].Cores = db, db/10
		r.CPU = CPU{User: tool, NCPU: 2, Cores: tool / 10}
		r.Machine = &MachineCPU{Busy: 1.9}
		r.Elapsed = 10
		return r
	}
	writeResult(t, dir, "load-upsink-c64.json", lr(64, 21000, 210000, 2.1, 4.2, 1.05))
	writeResult(t, dir, "load-upsink-c512.json", lr(512, 25000, 250000, 2.5, 5, 2.5))
	writeResult(t, dir, "load-baseline-c512.json", lr(512, 2000, 20000, 1, 1, 1))
	tlsRun := lr(64, 10000, 100000, 3, 2, 1)
	tlsRun.Machine.Busy = 0.65 // nothing else ran
	writeResult(t, dir, "load-tls-upsink-c64.json", tlsRun)
	_ = os.WriteFile(filepath.Join(dir, "load-upsink-c64.rows"), []byte("210000"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "load-upsink-c64.batches"), []byte("5000\t210000\n"), 0o644)
	md, err := Report(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| plain uploads/s ≥ 0.50× the database's ceiling (c=64, issue 13) | upsink 21000/s vs ceiling 40000 rows/s = 0.53×, p99 50.00 ms | **met** |",
		"| plain uploads/s ≥ 0.70× the database's ceiling (c=512, issue 13) | upsink 25000/s vs ceiling 40000 rows/s = 0.62×, p99 50.00 ms | **not met** |",
		"| HTTPS uploads/s ≥ 0.50× the database's ceiling (c=64, issue 13) | upsink 10000/s vs ceiling 40000 rows/s = 0.25×, p99 50.00 ms | **not met** |",
		"| HTTPS uploads/s ≥ 0.70× the database's ceiling (c=512, issue 13) | not measured at c=512 | — |",
		"## Throughput against the database's ceiling (issue 13)",
		"| **before the load runs** (the ratios' denominator) | **40000** | 40.0 (1000) | 20.00 / 30.00 | 18.00 / 28.00 | 400000 = 400000: yes | 0.40 | 10.0 / 2.0 | 1.50 / 0.25 / 0.01 | 420 | InnoDB, 1 |",
		"| after the load runs | **30000** | 30.0 (1000) |",
		"The two ceiling runs differ by -25 %: the machine did not stay the same",
		"upsink-bench ceiling --dsn 'root@unix($SOCK)/b_ceiling' -d 15s",
		"### Plain HTTP: upsink against the ceiling",
		"| 64 | **21000** | **0.53×** | ≥ 0.50×: **met** | 25.00 | 50.00 | yes | 500 (42.0) | 10.0 | 20.0 | 5.0 | 35.0 | 0.74 / 1.90 **(+1.16: other work)** | not run |",
		"| 512 | **25000** | **0.62×** | ≥ 0.70×: **not met** | 25.00 | 50.00 | — | — | 10.0 | 20.0 | 10.0 | 40.0 | 1.00 / 1.90 **(+0.90: other work)** | 2000 (0.05×) |",
		"**Disturbed:** during the runs at c=64, 512 the whole machine was busier",
		"### HTTPS: upsink against the ceiling",
		"| 64 | **10000** | **0.25×** | ≥ 0.50×: **not met** | 25.00 | 50.00 | — | — | 30.0 | 20.0 | 10.0 | 60.0 | 0.60 / 0.65 | not run |",
		"At c=512: 1.00 of 2 cores busy; per upload upsink 10.0 µs, mariadbd 20.0 µs (10.0 µs per row in the ceiling run, 2.00×), the load tool 10.0 µs: 40.0 µs in all, of which mariadbd 50 %. At that cost the 2 cores could land at most 50000 uploads/s (1.25× the ceiling) if nothing waited. The target (0.70×: 28000 uploads/s) needs the three to spend at most 71.4 µs per upload in all, the load tool's included, with every core busy and nothing waiting.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
	// A higher ceiling after the loads is the denominator.
	writeResult(t, dir, "ceiling-after.json", CeilingResult{RowsPerTx: 1000, Rows: 500000, Transactions: 500, RowsPerSec: 50000, TxPerSec: 50, CountAfter: 500000, CountOK: true})
	md, _ = Report(dir)
	for _, want := range []string{
		"| plain uploads/s ≥ 0.50× the database's ceiling (c=64, issue 13) | upsink 21000/s vs ceiling 50000 rows/s = 0.42×, p99 50.00 ms | **not met** |",
		"| before the load runs | **40000** |",
		"| **after the load runs** (the ratios' denominator) | **50000** |",
		"The two ceiling runs differ by +25 %",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// Without a ceiling run the targets say so and there is no ratio.
	_ = os.Remove(filepath.Join(dir, "ceiling-after.json"))
	_ = os.Remove(filepath.Join(dir, "ceiling.json"))
	md, _ = Report(dir)
	if !strings.Contains(md, "| plain uploads/s ≥ 0.50× the database's ceiling (c=64, issue 13) | upsink 21000/s; the ceiling was not measured in this run | — |") ||
		!strings.Contains(md, "The ceiling was not measured in this run") {
		t.Error("no-ceiling report")
	}
}
