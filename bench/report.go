package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The results directory that bench/run.sh fills and report reads:
//
//	machine.tsv                  KEY<TAB>VALUE lines, in order
//	run.cmd                      how the whole run was started
//	idle-SERVER.json             IdleResult;  idle-SERVER.server  the server's command line
//	load-SERVER-cCONNS.json      LoadResult;  .server  the server's command line;
//	                             .rows  COUNT(*) of uploads afterwards; .db  mariadbd command line
//	idle-tls-SERVER.json, load-tls-SERVER-cCONNS.json (+ .server, .rows)  the same over HTTPS
//	gobench.txt, gobench.cmd     go test -bench output and its command
//	hsbench.txt, hsbench.cmd     go test -bench=Handshake ./tlsbridge output and its command
//	stall-SERVER.json            StallResult; .server  the server's command line
//	notes.txt                    free text appended verbatim (optional)

var servers = []string{"upsink", "baseline"}

func mainReport(args []string, stderr io.Writer) error {
	fs := newFlags("report", stderr)
	dir := fs.String("dir", "", "results directory written by bench/run.sh")
	out := fs.String("out", "BENCHMARKS.md", "markdown file to write (- for stdout)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	md, err := Report(*dir)
	if err != nil {
		return err
	}
	if *out == "-" {
		_, err = os.Stdout.WriteString(md)
		return err
	}
	// Sections after KeptMarker (bench-vps, the other tools) are not
	// generated from the results: carry them over.
	if old, err := os.ReadFile(*out); err == nil {
		if i := strings.Index(string(old), KeptMarker); i >= 0 {
			md = strings.TrimRight(md, "\n") + "\n\n" + string(old[i:])
		}
	}
	return os.WriteFile(*out, []byte(md), 0o644)
}

// KeptMarker starts the part of BENCHMARKS.md that `report` keeps as it is
// (written by bench/vps.sh and by hand).
const KeptMarker = "<!-- kept by upsink-bench report: everything below -->"

func readText(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readJSON(dir, name string, v any) bool {
	b, err := os.ReadFile(filepath.Join(dir, name))
	return err == nil && json.Unmarshal(b, v) == nil
}

// GoBench is one line of go test -bench output.
type GoBench struct {
	Pkg, Name        string
	NsOp, BOp, Alloc float64
	HasMem           bool
	Metrics          map[string]float64 // b.ReportMetric units, e.g. "handshakes/s"
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+)\s+\d+\s+([\d.]+) ns/op(.*)$`)

// ParseGoBench reads go test -bench -benchmem output.
func ParseGoBench(r io.Reader) []GoBench {
	var out []GoBench
	pkg := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := sc.Text()
		if p, ok := strings.CutPrefix(l, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		m := benchLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		b := GoBench{Pkg: pkg, Name: m[1]}
		b.NsOp, _ = strconv.ParseFloat(m[2], 64)
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i++ {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "B/op":
				b.BOp, b.HasMem = v, true
			case "allocs/op":
				b.Alloc, b.HasMem = v, true
			default:
				if b.Metrics == nil {
					b.Metrics = map[string]float64{}
				}
				b.Metrics[f[i+1]] = v
			}
			i++
		}
		out = append(out, b)
	}
	return out
}

// isStdlibComparison tells a benchmark of net/http (kept beside upsink's
// parser for comparison) from one of upsink's own code.
func isStdlibComparison(name string) bool {
	n := strings.ToLower(name)
	for _, s := range []string{"nethttp", "net_http", "readrequest", "stdlib", "/std", "textproto"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

func kib(b int64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func ms(us int64) string { return fmt.Sprintf("%.2f", float64(us)/1000) }

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func yes(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

// HandshakeRate is the handshakes/s of one BenchmarkHandshake case over
// its -count runs.
type HandshakeRate struct {
	Runs   []float64
	Median float64
}

// HandshakeRates collects the handshakes/s metric of BenchmarkHandshake
// lines by case ("bridge/full", "nethttp/resumed", ...: the name without
// "BenchmarkHandshake/" and the -GOMAXPROCS suffix), median over -count runs.
func HandshakeRates(benches []GoBench) map[string]*HandshakeRate {
	out := map[string]*HandshakeRate{}
	for _, gb := range benches {
		name, ok := strings.CutPrefix(gb.Name, "BenchmarkHandshake/")
		v, has := gb.Metrics["handshakes/s"]
		if !ok || !has {
			continue
		}
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		r := out[name]
		if r == nil {
			r = &HandshakeRate{}
			out[name] = r
		}
		r.Runs = append(r.Runs, v)
	}
	setMedians(out)
	return out
}

func setMedians(rates map[string]*HandshakeRate) {
	for _, r := range rates {
		s := append([]float64(nil), r.Runs...)
		sort.Float64s(s)
		if n := len(s); n%2 == 1 {
			r.Median = s[n/2]
		} else if n > 0 {
			r.Median = (s[n/2-1] + s[n/2]) / 2
		}
	}
}

// WireHandshakeRates reads the hs-SERVER-MODE-RUN.json results of
// `upsink-bench handshakes` in dir, keyed "upsink/full", "baseline/resumed"...,
// with the median over the runs. Runs with errors count as they are (their
// rate covers only the handshakes that succeeded).
func WireHandshakeRates(dir string) map[string]*HandshakeRate {
	out := map[string]*HandshakeRate{}
	files, _ := filepath.Glob(filepath.Join(dir, "hs-*-*-*.json"))
	for _, f := range files {
		parts := strings.Split(strings.TrimSuffix(filepath.Base(f), ".json"), "-")
		if len(parts) != 4 {
			continue
		}
		var r HandshakeResult
		if !readJSON(dir, filepath.Base(f), &r) || r.OK == 0 {
			continue
		}
		k := parts[1] + "/" + parts[2]
		if out[k] == nil {
			out[k] = &HandshakeRate{}
		}
		out[k].Runs = append(out[k].Runs, r.PerSec)
	}
	setMedians(out)
	return out
}

// loadRun is one load-*.json with its rows check.
type loadRun struct {
	server string
	tls    bool
	conns  int
	r      LoadResult
	rows   int64
	hasRow bool
	file   string
	// upsink's ledger after the run (NAME.batches: "BATCHES<TAB>ROWS")
	batches, batchRows int64
	hasBatches         bool
}

func (l *loadRun) peak(name string) int64 {
	for _, m := range l.r.Memory {
		if m.Name == name {
			return m.PeakRSS
		}
	}
	return 0
}

// parseLoadName reads load-SERVER-cN or load-tls-SERVER-cN.
func parseLoadName(base string) (server string, tls bool, ok bool) {
	parts := strings.Split(base, "-")
	switch {
	case len(parts) == 3 && parts[0] == "load" && strings.HasPrefix(parts[2], "c"):
		return parts[1], false, true
	case len(parts) == 4 && parts[0] == "load" && parts[1] == "tls" && strings.HasPrefix(parts[3], "c"):
		return parts[2], true, true
	}
	return "", false, false
}

func readLoads(dir string) []loadRun {
	var loads []loadRun
	files, _ := filepath.Glob(filepath.Join(dir, "load-*.json"))
	for _, f := range files {
		base := strings.TrimSuffix(filepath.Base(f), ".json")
		srv, isTLS, ok := parseLoadName(base)
		if !ok {
			continue
		}
		lr := loadRun{server: srv, tls: isTLS, file: base}
		if !readJSON(dir, base+".json", &lr.r) {
			continue
		}
		lr.conns = lr.r.Conns
		if v := readText(dir, base+".rows"); v != "" {
			lr.rows, _ = strconv.ParseInt(v, 10, 64)
			lr.hasRow = true
		}
		if f := strings.Fields(readText(dir, base+".batches")); len(f) == 2 {
			var e1, e2 error
			lr.batches, e1 = strconv.ParseInt(f[0], 10, 64)
			lr.batchRows, e2 = strconv.ParseInt(f[1], 10, 64)
			lr.hasBatches = e1 == nil && e2 == nil
		}
		loads = append(loads, lr)
	}
	order := func(s string) int {
		for i, x := range servers {
			if x == s {
				return i
			}
		}
		return len(servers)
	}
	sort.Slice(loads, func(i, j int) bool {
		if loads[i].tls != loads[j].tls {
			return !loads[i].tls
		}
		if loads[i].conns != loads[j].conns {
			return loads[i].conns < loads[j].conns
		}
		return order(loads[i].server) < order(loads[j].server)
	})
	return loads
}

func modeName(tls bool) string {
	if tls {
		return "HTTPS"
	}
	return "plain"
}

// Report renders BENCHMARKS.md from a results directory.
func Report(dir string) (string, error) {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	machine := readText(dir, "machine.tsv")
	if machine == "" {
		return "", fmt.Errorf("%s: no machine.tsv (not a bench/run.sh results directory?)", dir)
	}
	meta := map[string]string{}
	w("# upsink benchmarks\n\n")
	w("Generated by `bench/run.sh` (`%s`) from the results in `%s`. Every figure below is from that run; nothing is estimated or carried over.\n\n",
		readText(dir, "run.cmd"), filepath.ToSlash(dir))
	w("## Machine\n\n| | |\n|---|---|\n")
	for _, l := range strings.Split(machine, "\n") {
		k, v, _ := strings.Cut(l, "\t")
		meta[k] = v
		w("| %s | %s |\n", k, mdEsc(v))
	}

	// idle[false] plain, idle[true] HTTPS.
	idle := map[bool]map[string]*IdleResult{false: {}, true: {}}
	stall := map[string]*StallResult{}
	for _, s := range servers {
		for _, t := range []bool{false, true} {
			var r IdleResult
			name := "idle-" + s
			if t {
				name = "idle-tls-" + s
			}
			if readJSON(dir, name+".json", &r) {
				idle[t][s] = &r
			}
		}
		var st StallResult
		if readJSON(dir, "stall-"+s+".json", &st) {
			stall[s] = &st
		}
	}
	loads := readLoads(dir)
	var benches, hsb []GoBench
	if f, err := os.Open(filepath.Join(dir, "gobench.txt")); err == nil {
		benches = ParseGoBench(f)
		f.Close()
	}
	if f, err := os.Open(filepath.Join(dir, "hsbench.txt")); err == nil {
		hsb = ParseGoBench(f)
		f.Close()
	}
	hs := HandshakeRates(hsb)

	byKey := map[string]*loadRun{}
	key := func(server string, tls bool, c int) string { return fmt.Sprintf("%s/%v/%d", server, tls, c) }
	concs := map[bool][]int{}
	for i := range loads {
		l := &loads[i]
		byKey[key(l.server, l.tls, l.conns)] = l
		if l.server == "upsink" {
			concs[l.tls] = append(concs[l.tls], l.conns)
		}
	}

	// Targets first: they are what the reader wants to know.
	w("\n## Targets\n\n| Target | Measured | Verdict |\n|---|---|---|\n")
	if r := idle[false]["upsink"]; r != nil {
		w("| ≤ 1 KiB server RSS per idle plain connection | %.0f B RSS (%.0f B PSS) per connection, %d idle keep-alive connections | %s |\n",
			r.PerConnRSS, r.PerConnPSS, r.Answered, yes(r.PerConnRSS <= 1024 && r.Answered > 0))
		w("| ≤ 10 MiB RSS idle | %s RSS (%s PSS) at start, 0 connections | %s |\n", kib(r.Before.RSS), kib(r.Before.PSS), yes(r.Before.RSS <= 10<<20))
	} else {
		w("| ≤ 1 KiB RSS per idle connection | not measured | — |\n| ≤ 10 MiB RSS idle | not measured | — |\n")
	}
	if r := idle[true]["upsink"]; r != nil {
		other := ""
		if bl := idle[true]["baseline"]; bl != nil {
			other = fmt.Sprintf(" (net/http baseline here: %.0f B)", bl.PerConnRSS)
		}
		w("| ≤ 8 KiB server RSS per idle TLS connection | %.0f B RSS (%.0f B PSS) per connection, %d idle TLS keep-alive connections%s | %s |\n",
			r.PerConnRSS, r.PerConnPSS, r.Answered, other, yes(r.PerConnRSS <= 8192 && r.Answered > 0 && r.Answered == r.Conns))
	} else {
		w("| ≤ 8 KiB RSS per idle TLS connection | not measured | — |\n")
	}
	var parseB []GoBench
	for _, gb := range benches {
		if strings.HasSuffix(gb.Pkg, "/parser") && !isStdlibComparison(gb.Name) {
			parseB = append(parseB, gb)
		}
	}
	if len(parseB) == 0 {
		w("| 0 allocs/op parse | not measured: `go test -bench` found no benchmarks in ./parser in this run | — |\n")
	} else {
		ok := true
		var names []string
		for _, gb := range parseB {
			ok = ok && gb.HasMem && gb.Alloc == 0
			names = append(names, fmt.Sprintf("%s %g allocs/op", gb.Name, gb.Alloc))
		}
		w("| 0 allocs/op parse | %s | %s |\n", strings.Join(names, "; "), yes(ok))
	}
	for _, t := range []bool{false, true} {
		for _, c := range concs[t] {
			u, bl := byKey[key("upsink", t, c)], byKey[key("baseline", t, c)]
			if bl == nil {
				continue
			}
			w("| %s uploads/s beside the net/http server (c=%d) | upsink %.0f/s vs net/http baseline %.0f/s = %s | %s |\n", modeName(t),
				c, u.r.UploadsPerSec, bl.r.UploadsPerSec, ratio(u.r.UploadsPerSec, bl.r.UploadsPerSec), yes(u.r.UploadsPerSec >= bl.r.UploadsPerSec && u.r.Created > 0))
		}
	}
	// The ceiling: the higher of the runs before and after the loads.
	var ceilBefore, ceilAfter *CeilingResult
	if c := new(CeilingResult); readJSON(dir, "ceiling.json", c) {
		ceilBefore = c
	}
	if c := new(CeilingResult); readJSON(dir, "ceiling-after.json", c) {
		ceilAfter = c
	}
	ceil := higherCeiling(ceilBefore, ceilAfter)
	for _, t := range []bool{false, true} {
		for _, g := range ceilingGoals {
			u := byKey[key("upsink", t, g.conns)]
			switch {
			case u == nil && ceil == nil:
				continue
			case u == nil:
				w("| %s uploads/s ≥ %.2f× the database's ceiling (c=%d, issue 13) | not measured at c=%d | — |\n", modeName(t), g.ratio, g.conns, g.conns)
			case ceil == nil || ceil.RowsPerSec <= 0:
				w("| %s uploads/s ≥ %.2f× the database's ceiling (c=%d, issue 13) | upsink %.0f/s; the ceiling was not measured in this run | — |\n", modeName(t), g.ratio, g.conns, u.r.UploadsPerSec)
			default:
				w("| %s uploads/s ≥ %.2f× the database's ceiling (c=%d, issue 13) | upsink %.0f/s vs ceiling %.0f rows/s = %s, p99 %s ms | %s |\n", modeName(t), g.ratio, g.conns,
					u.r.UploadsPerSec, ceil.RowsPerSec, ratio(u.r.UploadsPerSec, ceil.RowsPerSec), ms(u.r.Latency.P99), yes(u.r.UploadsPerSec >= g.ratio*ceil.RowsPerSec && ceil.CountOK && u.r.Created > 0))
			}
		}
	}
	wire := WireHandshakeRates(dir)
	for _, k := range []string{"full", "resumed"} {
		if u, b := wire["upsink/"+k], wire["baseline/"+k]; u != nil && b != nil {
			w("| %s TLS handshakes/s within 10 %% of net/http's (client in its own process, 64 at a time) | upsink %.0f/s vs net/http baseline %.0f/s = %s (median of %d) | %s |\n", k, u.Median, b.Median,
				ratio(u.Median, b.Median), len(u.Runs), yes(u.Median >= 0.9*b.Median))
		} else {
			w("| %s TLS handshakes/s within 10 %% of net/http's (client in its own process) | not measured | — |\n", k)
		}
		if br, nh := hs["bridge/"+k], hs["nethttp/"+k]; br != nil && nh != nil {
			w("| %s TLS handshakes/s, in-process microbenchmark (clients share the servers' Go scheduler) | bridge %.0f/s vs net/http %.0f/s = %s (median of %d) | for information |\n", k, br.Median, nh.Median,
				ratio(br.Median, nh.Median), len(br.Runs))
		}
	}
	if st := stall["upsink"]; st != nil {
		plain := probeFor(st, "http://")
		bounded := st.Opened > 0 && st.StillOpen == 0 && plain != nil && plain.Sent > 0 && plain.OK == plain.Sent
		ps := "no plain probe"
		if plain != nil {
			ps = fmt.Sprintf("plain `/healthz` %d/%d answered (max %.1f ms)", plain.OK, plain.Sent, float64(plain.MaxUs)/1000)
		}
		if p := probeFor(st, "https://"); p != nil {
			ps += fmt.Sprintf(", HTTPS `/healthz` %d/%d", p.OK, p.Sent)
		}
		w("| bounded memory with %d handshakes in flight | peak RSS %s (%s at start, %.0f B per pending handshake, at most %d pending at once); %d closed at once, %d after %.1f s, %d still open after %.0f s; %s | %s |\n",
			st.Opened, kib(st.Peak.RSS), kib(st.Before.RSS), st.PerPending, st.MaxPending, st.ClosedFast, st.ClosedLater, st.CloseMedS, st.StillOpen, st.HoldSecs, ps, yes(bounded))
	}
	w("\n\"The database's ceiling\" is `upsink-bench ceiling` in this run: one connection loading 1 KiB rows with `LOAD DATA LOCAL` in %s-row transactions into a fresh database of the same mariadbd profile, the higher of its runs before and after the load runs (see [Throughput against the database's ceiling](#throughput-against-the-databases-ceiling-issue-13)). ", ceilingRowsText(ceil))
	w("\"Beside the net/http server\" is read here as: at least as many committed uploads per second as the baseline at the same concurrency. \"Bounded memory with handshakes in flight\" is read as: every stalled handshake was closed by the server before the end of the hold (their count and their time are bounded) and plain `/healthz` answered 200 every time it was asked during it; the peak RSS is given for the reader to judge.\n")

	// Ratio matrix.
	w("\n## upsink / baseline, plain and HTTPS\n\nOne figure per cell: upsink's divided by the net/http baseline's, both measured in this run under the same scenario (below 1× is less time or memory for upsink, above 1× more uploads).\n\n")
	w("| Metric | plain | HTTPS |\n|---|---|---|\n")
	cell := func(t bool, f func(t bool) (float64, float64, bool)) string {
		u, bl, ok := f(t)
		if !ok {
			return "—"
		}
		return ratio(u, bl)
	}
	idleF := func(get func(*IdleResult) float64) func(bool) (float64, float64, bool) {
		return func(t bool) (float64, float64, bool) {
			u, bl := idle[t]["upsink"], idle[t]["baseline"]
			if u == nil || bl == nil {
				return 0, 0, false
			}
			return get(u), get(bl), true
		}
	}
	loadF := func(c int, get func(*loadRun) float64) func(bool) (float64, float64, bool) {
		return func(t bool) (float64, float64, bool) {
			u, bl := byKey[key("upsink", t, c)], byKey[key("baseline", t, c)]
			if u == nil || bl == nil {
				return 0, 0, false
			}
			return get(u), get(bl), true
		}
	}
	var allC []int
	seen := map[int]bool{}
	for _, t := range []bool{false, true} {
		for _, c := range concs[t] {
			if !seen[c] {
				seen[c] = true
				allC = append(allC, c)
			}
		}
	}
	sort.Ints(allC)
	type row struct {
		name string
		f    func(bool) (float64, float64, bool)
	}
	var rows []row
	for _, c := range allC {
		rows = append(rows, row{fmt.Sprintf("uploads/s, c=%d", c), loadF(c, func(l *loadRun) float64 { return l.r.UploadsPerSec })})
	}
	for _, c := range allC {
		rows = append(rows, row{fmt.Sprintf("p99 latency, c=%d", c), loadF(c, func(l *loadRun) float64 { return float64(l.r.Latency.P99) })})
	}
	for _, c := range allC {
		rows = append(rows, row{fmt.Sprintf("peak RSS under load, c=%d", c), loadF(c, func(l *loadRun) float64 { return float64(l.peak("server")) })})
	}
	rows = append(rows,
		row{"RSS idle (0 connections)", idleF(func(r *IdleResult) float64 { return float64(r.Before.RSS) })},
		row{"RSS per idle keep-alive connection", idleF(func(r *IdleResult) float64 { return r.PerConnRSS })})
	for _, r := range rows {
		w("| %s | %s | %s |\n", r.name, cell(false, r.f), cell(true, r.f))
	}
	if u, bl := stall["upsink"], stall["baseline"]; u != nil && bl != nil {
		w("| peak RSS with %d stalled handshakes | — | %s |\n", u.Opened, ratio(float64(u.Peak.RSS), float64(bl.Peak.RSS)))
	}

	// Idle.
	idleSection := func(t bool) {
		runs := idle[t]
		if len(runs) == 0 {
			return
		}
		if t {
			w("\n## Idle TLS keep-alive connections: memory per connection\n\n")
			w("As the plain idle run, over HTTPS: `upsink-bench idle --url https://…` dials with a bounded number of parallel dialers (`--parallel`, 64), does a full TLS handshake on every connection (Go's default client: TLS 1.3, X25519MLKEM768, ALPN http/1.1; the server's self-signed ECDSA P-256 certificate trusted with `--cacert`), sends one `GET /healthz`, reads the answer and holds the connection idle. upsink serves plain HTTP on one port and HTTPS on another; the baseline (`--tls-cert/--tls-key`) serves HTTPS only.\n\n")
		} else {
			w("\n## Idle keep-alive connections: memory per connection\n\n")
			w("Each server is started fresh on its own fresh database, waits for `/readyz`, then `upsink-bench idle` samples its memory with 0 connections, opens the connections, sends one `GET /healthz` on each, reads the answer and holds them all idle while sampling `/proc/PID/status` VmRSS and `/proc/PID/smaps_rollup` Pss every 100 ms. Per connection = (held − before) / connections. \"Still open\" is checked after the hold (a 5 ms read that times out means the server still holds the connection).\n\n")
		}
		w("| Server | Connections (answered / still open) | open s | RSS before | RSS held | RSS per conn | PSS before | PSS held | PSS per conn | RSS 1 s after closing |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range servers {
			r := runs[s]
			if r == nil {
				continue
			}
			w("| %s | %d (%d / %d) | %.1f | %s | %s | **%.0f B** | %s | %s | %.0f B | %s |\n", s, r.Conns, r.Answered, r.StillOpen, r.OpenSecs,
				kib(r.Before.RSS), kib(r.Held.RSS), r.PerConnRSS, kib(r.Before.PSS), kib(r.Held.PSS), r.PerConnPSS, kib(r.After.RSS))
		}
		if u, bl := runs["upsink"], runs["baseline"]; u != nil && bl != nil {
			w("\nRatio upsink/baseline: RSS at start %s, RSS per idle connection %s.\n", ratio(float64(u.Before.RSS), float64(bl.Before.RSS)), ratio(u.PerConnRSS, bl.PerConnRSS))
			if t && u.OpenSecs > 0 && bl.OpenSecs > 0 {
				w("\nWhile opening (full handshake + one GET per connection, the tool's parallel dialers on the same CPUs): upsink %.0f connections/s, baseline %.0f/s (%s).\n",
					float64(u.Answered)/u.OpenSecs, float64(bl.Answered)/bl.OpenSecs, ratio(float64(u.Answered)/u.OpenSecs, float64(bl.Answered)/bl.OpenSecs))
			}
		}
		for _, s := range servers {
			if r := runs[s]; r != nil {
				for _, e := range r.ErrSamples {
					w("\n%s error sample: `%s`", s, e)
				}
			}
		}
		w("\nCommands:\n\n```\n")
		for _, s := range servers {
			if r := runs[s]; r != nil {
				name := "idle-" + s
				if t {
					name = "idle-tls-" + s
				}
				w("%s\n%s\n", readText(dir, name+".server")+" &", r.Command)
			}
		}
		w("```\n")
	}
	idleSection(false)
	idleSection(true)

	// Load.
	loadSection := func(t bool) {
		var ls []*loadRun
		for i := range loads {
			if loads[i].tls == t {
				ls = append(ls, &loads[i])
			}
		}
		if len(ls) == 0 {
			return
		}
		if t {
			w("\n## Uploads of 1 KiB bodies over keep-alive TLS into MariaDB\n\n")
			w("As the plain load run, over HTTPS (`--cacert`): each connection does one TLS handshake (a session cache of 64 for reconnects) and then sends its uploads over that TLS session; latency does not include the handshake.\n\n")
		} else {
			w("\n## Uploads of 1 KiB bodies over keep-alive into MariaDB\n\n")
			w("`upsink-bench load`: CONNS persistent connections, one goroutine each, writing a pre-built `POST` (Content-Length, distinct body per request: a run/worker/sequence marker) and parsing the status line, Content-Length and body of the answer. Latency is from the write of the request to the last byte of the answer (HDR histogram, µs resolution). Uploads/s counts 201s only, over the elapsed time including the answers in flight at the end. Peak RSS is the highest VmRSS polled every 100 ms during the run (the server and mariadbd are both fresh for each run). CPU cores = CPU time used during the run (server and mariadbd from /proc/PID/stat, the load generator from its own getrusage) / wall time; if the tool's share approaches the number of cores, the tool, not the server, was the limit.\n\n")
		}
		w("| Server | c | uploads/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | statuses | errors | 201s | rows COUNT(*) | rows = 201s | peak RSS server | peak RSS mariadbd | CPU cores: server / mariadbd / tool |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, l := range ls {
			r := l.r
			var st []string
			keys := make([]string, 0, len(r.Status))
			for k := range r.Status {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				st = append(st, fmt.Sprintf("%s: %d", k, r.Status[k]))
			}
			rows, eq := "not checked", "—"
			if l.hasRow {
				rows = strconv.FormatInt(l.rows, 10)
				eq = "yes"
				if l.rows != r.Created {
					eq = fmt.Sprintf("**NO** (%+d)", l.rows-r.Created)
				}
			}
			srvRSS, dbRSS, srvCPU, dbCPU := "—", "—", "—", "—"
			for _, m := range r.Memory {
				switch m.Name {
				case "server":
					srvRSS, srvCPU = kib(m.PeakRSS), fmt.Sprintf("%.2f", m.Cores)
				case "mariadbd":
					dbRSS, dbCPU = kib(m.PeakRSS), fmt.Sprintf("%.2f", m.Cores)
				}
			}
			errs := strconv.FormatInt(r.Errors, 10)
			if r.Unanswered > 0 {
				errs += fmt.Sprintf(" (+%d unanswered)", r.Unanswered)
			}
			w("| %s | %d | **%.0f** | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s / %s / %.2f (of %d) |\n", l.server, l.conns, r.UploadsPerSec,
				ms(r.Latency.P50), ms(r.Latency.P90), ms(r.Latency.P99), ms(r.Latency.P999), ms(r.Latency.Max),
				strings.Join(st, ", "), errs, r.Created, rows, eq, srvRSS, dbRSS, srvCPU, dbCPU, r.CPU.Cores, r.CPU.NCPU)
		}
		if len(concs[t]) > 0 {
			w("\nRatios upsink/baseline:\n\n| c | uploads/s | p50 | p99 | peak RSS server | peak RSS mariadbd |\n|---|---|---|---|---|---|\n")
			for _, c := range concs[t] {
				u, bl := byKey[key("upsink", t, c)], byKey[key("baseline", t, c)]
				if bl == nil {
					continue
				}
				w("| %d | %s | %s | %s | %s | %s |\n", c, ratio(u.r.UploadsPerSec, bl.r.UploadsPerSec),
					ratio(float64(u.r.Latency.P50), float64(bl.r.Latency.P50)), ratio(float64(u.r.Latency.P99), float64(bl.r.Latency.P99)),
					ratio(float64(u.peak("server")), float64(bl.peak("server"))), ratio(float64(u.peak("mariadbd")), float64(bl.peak("mariadbd"))))
			}
		}
		for _, l := range ls {
			for _, e := range l.r.ErrorSamples {
				w("\n%s c=%d error sample: `%s`", l.server, l.conns, e)
			}
		}
		w("\n\nCommands (DSN socket shown as `$SOCK`; the rows check is `SELECT COUNT(*) FROM uploads` on the run's database right after the run):\n\n```\n")
		for _, l := range ls {
			w("%s &\n%s\n", readText(dir, l.file+".server"), l.r.Command)
		}
		w("```\n")
	}
	loadSection(false)
	loadSection(true)
	ceilingSection(w, dir, ceilBefore, ceilAfter, ceil, byKey, key, concs)
	if db := readText(dir, "mariadbd.cmd"); db != "" {
		w("\nmariadbd, restarted for every run above:\n\n```\n%s\n```\n", db)
	}

	// Handshakes.
	if len(wire) > 0 {
		w("\n## TLS handshakes per second over the wire\n\n")
		w("`upsink-bench handshakes`: each server fresh with HTTPS on; the tool, in its own process, does N handshakes 64 at a time, each on a new TCP connection closed once the client's side of the handshake is done (Go's default client: TLS 1.3, X25519MLKEM768, ALPN http/1.1, the self-signed certificate trusted with `--cacert`); resumed runs first obtain a session ticket and resume every handshake from it. Median of the runs; the tool shares the 2 CPUs with the server.\n\n")
		w("| handshake | upsink/s | net/http baseline/s | upsink / baseline | runs (upsink; baseline) | within 10 %% |\n|---|---|---|---|---|---|\n")
		for _, k := range []string{"full", "resumed"} {
			u, b := wire["upsink/"+k], wire["baseline/"+k]
			if u == nil || b == nil {
				continue
			}
			w("| %s | %.0f | %.0f | %s | %s; %s | %s |\n", k, u.Median, b.Median, ratio(u.Median, b.Median), joinF(u.Runs), joinF(b.Runs), yes(u.Median >= 0.9*b.Median))
		}
		var one HandshakeResult
		if readJSON(dir, "hs-upsink-full-1.json", &one) {
			w("\n```\n%s\n```\n", one.Command)
		}
	}
	if out := readText(dir, "hsbench.txt"); out != "" {
		w("\n## TLS handshakes per second in one process: the bridge beside net/http + crypto/tls\n\n")
		w("`BenchmarkHandshake` (tlsbridge/bench_test.go): the bridge on gnet and a minimal `net/http` + `crypto/tls` server with the same certificate, each in the test process, clients in the same process (`b.RunParallel`, GOMAXPROCS goroutines) dialing, handshaking and closing; full handshakes, and resumed ones from a session ticket. Go's default client: TLS 1.3, X25519MLKEM768. Median of the runs. With GOMAXPROCS client goroutines, each waiting for its handshake, the figure is bounded by the latency of one handshake as much as by CPU; the opening rates of the TLS idle runs above are another view, with 64 concurrent clients.\n\n")
		if len(hs) > 0 {
			w("| handshake | bridge/s | net/http/s | bridge / net/http | runs (bridge; net/http) |\n|---|---|---|---|---|\n")
			for _, k := range []string{"full", "resumed"} {
				br, nh := hs["bridge/"+k], hs["nethttp/"+k]
				if br == nil || nh == nil {
					continue
				}
				w("| %s | %.0f | %.0f | %s | %s; %s |\n", k, br.Median, nh.Median, ratio(br.Median, nh.Median), joinF(br.Runs), joinF(nh.Runs))
			}
			w("\nFor information, not a target: here the clients share one Go scheduler with the servers, and gnet's event loops block in `epoll_wait` holding their Ps, so with GOMAXPROCS=2 goroutines they wake (handshake workers, clients) can wait for the runtime to retake a P; the CPU profile shows the bridge keeping ~1 core busy where net/http keeps ~1.7. With the client in its own process (the table above) the two servers are within 10 %%.\n\n")
		}
		if cmd := readText(dir, "hsbench.cmd"); cmd != "" {
			w("```\n%s\n```\n\n", cmd)
		}
		w("```\n%s\n```\n", out)
	}

	// Stalled handshakes.
	if len(stall) > 0 {
		w("\n## Handshakes in flight: ClientHello, then silence\n\n")
		w("`upsink-bench stall`: each server fresh, HTTPS on; the tool samples the server's RSS, then opens the connections to the TLS port with 64 parallel dialers; each sends one complete ClientHello (a fresh one per connection from Go's default client, TLS 1.3 with X25519MLKEM768) and never anything else; a reader per connection discards what the server sends (its handshake flight, if any) and notes when the server closes it. The hold runs from the first dial and is longer than both servers' 10 s handshake timeout (upsink `--tls-handshake-timeout` default; the baseline's `ReadHeaderTimeout` 10 s bounds net/http's handshake). Meanwhile `/healthz` is probed every 100 ms, each probe on a fresh connection wanting 200 within 2 s: over plain HTTP (upsink only; the baseline has no plain port in this mode) and over HTTPS (a full handshake). Peak RSS is the highest VmRSS sampled every 100 ms; per pending handshake = (peak − start) / the most connections open at one time. Everything here is what clients saw: the servers' own counters are not read.\n\n")
		w("| Server | stalled conns (ClientHello bytes) | most pending at once | closed by the server within 1 s | closed later (min / median / max s) | still open at end | got the server's flight | RSS start | **peak RSS** | per pending handshake | RSS 1 s after | plain /healthz ok/sent (p50 / max ms) | HTTPS /healthz ok/sent (p50 / max ms) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range servers {
			st := stall[s]
			if st == nil {
				continue
			}
			pr := func(prefix string) string {
				p := probeFor(st, prefix)
				if p == nil {
					return "—"
				}
				return fmt.Sprintf("%d/%d (%.1f / %.1f)", p.OK, p.Sent, float64(p.P50us)/1000, float64(p.MaxUs)/1000)
			}
			w("| %s | %d (%d B) | %d | %d | %d (%.1f / %.1f / %.1f) | %d | %d | %s | **%s** | %.0f B | %s | %s | %s |\n", s, st.Opened, st.HelloBytes, st.MaxPending,
				st.ClosedFast, st.ClosedLater, st.CloseMinS, st.CloseMedS, st.CloseMaxS, st.StillOpen, st.GotBytes,
				kib(st.Before.RSS), kib(st.Peak.RSS), st.PerPending, kib(st.After.RSS), pr("http://"), pr("https://"))
		}
		for _, s := range servers {
			if st := stall[s]; st != nil {
				for _, e := range st.ErrSamples {
					w("\n%s error sample: `%s`", s, e)
				}
				for _, p := range st.Probes {
					for _, e := range p.ErrSamples {
						w("\n%s probe %s failure sample: `%s`", s, p.URL, e)
					}
				}
			}
		}
		w("\n\nCommands:\n\n```\n")
		for _, s := range servers {
			if st := stall[s]; st != nil {
				w("%s &\n%s\n", readText(dir, "stall-"+s+".server"), st.Command)
			}
		}
		w("```\n")
	}

	// Go benchmarks.
	w("\n## Go micro-benchmarks\n\n")
	if cmd := readText(dir, "gobench.cmd"); cmd != "" {
		w("```\n%s\n```\n\n", cmd)
	}
	if out := readText(dir, "gobench.txt"); out != "" {
		w("```\n%s\n```\n", out)
	} else {
		w("No output.\n")
	}
	w("\n## How to read this\n\n")
	w("- Both servers run with their defaults apart from `--listen`, `--dsn` and `--idle-timeout` (raised so that idle connections outlive the hold), and the certificate flags in the HTTPS runs: upsink with its default `--memory-limit 48MiB` (a Go soft limit), `--max-inflight 32MiB`, event loops on half the CPUs (at least one: `server.DefaultLoops`), `--tls-handshake-timeout 10s`; the baseline with no GOMEMLIMIT, `--db-conns 16` (database/sql `SetMaxOpenConns`), go-sql-driver's default server-side prepared statements, one autocommit INSERT per request, `http.Server` with `ReadHeaderTimeout` 10 s.\n")
	w("- MariaDB's `max_connections` in the profile bounds the baseline's pool as much as `--db-conns` does.\n")
	w("- The load generator and both servers share the machine's %s CPUs and the loopback; mariadbd commits with `innodb_flush_log_at_trx_commit=1` on this machine's disk, so absolute uploads/s depend on its fsync latency. Ratios are the portable part.\n", meta["nproc"])
	w("- HTTPS runs use one self-signed ECDSA P-256 certificate made by `bin/upsink gencert` for the run (kept in the results directory, `tls/`).\n")
	w("- The JSON results named in the commands (`bench/results/`, git-ignored) hold every figure above plus error samples; `bin/upsink-bench report --dir DIR` re-renders this file from them.\n")
	w("- Go heap is not reported: neither server exposes it, and RSS/PSS is the figure the 256 MB box cares about.\n")
	w("- RSS counts pages the process touched, including the Go runtime's retained heap; PSS splits shared pages (binary text, libc) between the processes mapping them.\n")
	if notes := readText(dir, "notes.txt"); notes != "" {
		w("\n## Notes from this run\n\n%s\n", notes)
	}
	return b.String(), nil
}

// probeFor is the first probe of st whose URL starts with prefix.
func probeFor(st *StallResult, prefix string) *ProbeResult {
	for i := range st.Probes {
		if strings.HasPrefix(st.Probes[i].URL, prefix) {
			return &st.Probes[i]
		}
	}
	return nil
}

func joinF(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}

func mdEsc(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
