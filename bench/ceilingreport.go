package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// Issue 13's targets: upsink's uploads/s over keep-alive against the
// database's own ceiling for its row shape (`upsink-bench ceiling`), plain
// and HTTPS.
var ceilingGoals = []struct {
	conns int
	ratio float64
}{{64, 0.50}, {512, 0.70}}

func ceilingGoal(c int) (float64, bool) {
	for _, g := range ceilingGoals {
		if g.conns == c {
			return g.ratio, true
		}
	}
	return 0, false
}

func ceilingRowsText(c *CeilingResult) string {
	if c == nil || c.RowsPerTx == 0 {
		return "1,000"
	}
	return strconv.Itoa(c.RowsPerTx)
}

// cpuPerUpload is a process's CPU time during a load run per 201, in µs
// ("tool": the load generator's own), and whether it was measured.
func cpuPerUpload(l *loadRun, name string) (float64, bool) {
	if l.r.Created <= 0 {
		return 0, false
	}
	if name == "tool" {
		return (l.r.CPU.User + l.r.CPU.Sys) / float64(l.r.Created) * 1e6, true
	}
	for _, m := range l.r.Memory {
		if m.Name == name && m.Err == "" {
			return m.CPU / float64(l.r.Created) * 1e6, true
		}
	}
	return 0, false
}

func coresOf(l *loadRun, name string) float64 {
	for _, m := range l.r.Memory {
		if m.Name == name {
			return m.Cores
		}
	}
	return 0
}

func usCell(v float64, ok bool) string {
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%.1f", v)
}

// ceilingSection writes "## Throughput against the database's ceiling
// (issue 13)": the ceiling run, then per mode a row per concurrency of
// upsink's uploads/s, its ratio to the ceiling, latency and CPU per landed
// row of upsink, mariadbd and the load tool.
func ceilingSection(w func(string, ...any), dir string, before, after, ceil *CeilingResult, byKey map[string]*loadRun, key func(string, bool, int) string, concs map[bool][]int) {
	if ceil == nil && len(concs[false])+len(concs[true]) == 0 {
		return
	}
	w("\n## Throughput against the database's ceiling (issue 13)\n\n")
	w("Issue 13 asks for 1 KiB uploads over HTTP keep-alive at ≥ 0.50× the database's own ceiling for upsink's row shape at 64 connections and ≥ 0.70× at 512, plain and HTTPS, with p99 latency, and for the CPU each process spends per landed row, so that the next bottleneck is visible.\n\n")
	w("**The ceiling** is `upsink-bench ceiling`, run in this `make bench` before the load runs and again after them, each time on a fresh mariadbd with the same profile and a fresh database: one connection, upsink's session settings and driver options, a table with the columns of upsink's `uploads` (`id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, stream VARCHAR(64) ascii, received_at DATETIME(6), remote_addr VARCHAR(64) ascii, content_type VARBINARY(255), body LONGBLOB`), and back to back for the duration: `START TRANSACTION`; `LOAD DATA LOCAL INFILE 'Reader::…' INTO TABLE … CHARACTER SET binary FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (stream, received_at, remote_addr, content_type, body)` of %s rows rendered on the fly (go-sql-driver `RegisterReaderHandler`; each body the bytes `upsink-bench load` sends, a distinct 42-byte marker then the shared filler, escaped as the store escapes); `COMMIT`. Nothing else runs: no HTTP, no queue, no ledger row, no id block (ids come from AUTO_INCREMENT). Rows/s counts rows of committed transactions over the time from the first `START TRANSACTION` to the last `COMMIT`'s answer; `COUNT(*)` afterwards must equal them. The ratios below divide by the higher of the two runs (one whose count checked out): the most the database showed on this machine in this run, so that a slow moment of the machine during one ceiling run does not flatter upsink.\n\n", ceilingRowsText(ceil))
	if ceil == nil {
		w("The ceiling was not measured in this run (no `ceiling.json`): no ratios.\n")
	} else {
		dbUs, dbOK := ceilingDBus(ceil)
		w("| ceiling run | rows/s | transactions/s (rows each) | transaction p50 / p99 ms | LOAD DATA p50 / p99 ms | rows committed = COUNT(*) | mariadbd CPU cores | CPU µs per row: mariadbd / ceiling tool | whole machine: busy / iowait / steal cores | MiB streamed | engine, innodb_flush_log_at_trx_commit |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range []struct {
			label string
			c     *CeilingResult
		}{{"before the load runs", before}, {"after the load runs", after}} {
			if r.c == nil {
				continue
			}
			label := r.label
			if r.c == ceil {
				label = "**" + label + "** (the ratios' denominator)"
			}
			ceilingRow(w, label, r.c)
		}
		for _, c := range []*CeilingResult{before, after} {
			if c != nil && c.Err != "" {
				w("\nA ceiling run ended with an error: `%s`\n", c.Err)
			}
		}
		if before != nil && after != nil && before.RowsPerSec > 0 {
			if d := after.RowsPerSec/before.RowsPerSec - 1; d > 0.15 || d < -0.15 {
				w("\nThe two ceiling runs differ by %+.0f %%: the machine did not stay the same through this run (another load on it, the host: see steal, the disk), and the ratios below are only as good as that; the whole-machine CPU columns show what else ran.\n", 100*d)
			} else {
				w("\nThe two ceiling runs are within %.0f %% of each other.\n", 100*max(d, -d))
			}
		}
		cmd := readText(dir, "ceiling.cmd")
		if cmd == "" {
			cmd = ceil.Command
		}
		w("\n```\n%s\n```\n", cmd)
		for _, t := range []bool{false, true} {
			if len(concs[t]) == 0 {
				continue
			}
			w("\n### %s: upsink against the ceiling\n\n", map[bool]string{false: "Plain HTTP", true: "HTTPS"}[t])
			w("| c | upsink uploads/s | × ceiling | target | p50 ms | p99 ms | rows = 201s | upsink's transactions/s (mean rows each) | CPU µs per upload: upsink | mariadbd | load tool | all three | CPU cores busy (of %d): the three / whole machine | net/http baseline uploads/s (× ceiling) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n", ncpuOf(byKey, key, t, concs[t]))
			var disturbed []int
			for _, c := range concs[t] {
				u := byKey[key("upsink", t, c)]
				goal := "—"
				if g, ok := ceilingGoal(c); ok {
					goal = fmt.Sprintf("≥ %.2f×: %s", g, yes(u.r.UploadsPerSec >= g*ceil.RowsPerSec && ceil.CountOK && u.r.Created > 0))
				}
				eq := "—"
				if u.hasRow {
					eq = "yes"
					if u.rows != u.r.Created {
						eq = fmt.Sprintf("**NO** (%+d)", u.rows-u.r.Created)
					}
				}
				su, okU := cpuPerUpload(u, "server")
				sd, okD := cpuPerUpload(u, "mariadbd")
				st, okT := cpuPerUpload(u, "tool")
				bl := "not run"
				if b := byKey[key("baseline", t, c)]; b != nil {
					bl = fmt.Sprintf("%.0f (%s)", b.r.UploadsPerSec, ratio(b.r.UploadsPerSec, ceil.RowsPerSec))
				}
				three := coresOf(u, "server") + coresOf(u, "mariadbd") + u.r.CPU.Cores
				mach := "—"
				if m := u.r.Machine; m != nil {
					mach = fmt.Sprintf("%.2f", m.Busy)
					if m.Steal >= 0.05 {
						mach += fmt.Sprintf(" (steal %.2f)", m.Steal)
					}
					if m.Busy-three >= otherLoad {
						mach += fmt.Sprintf(" **(+%.2f: other work)**", m.Busy-three)
						disturbed = append(disturbed, c)
					}
				}
				txs := "—"
				if u.hasBatches && u.batches > 0 && u.r.Elapsed > 0 {
					txs = fmt.Sprintf("%.0f (%.1f)", float64(u.batches)/u.r.Elapsed, float64(u.batchRows)/float64(u.batches))
				}
				w("| %d | **%.0f** | **%s** | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f / %s | %s |\n", c, u.r.UploadsPerSec, ratio(u.r.UploadsPerSec, ceil.RowsPerSec), goal,
					ms(u.r.Latency.P50), ms(u.r.Latency.P99), eq, txs, usCell(su, okU), usCell(sd, okD), usCell(st, okT), usCell(su+sd+st, okU && okD && okT),
					three, mach, bl)
			}
			if len(disturbed) > 0 {
				w("\n**Disturbed:** during the runs at c=%s the whole machine was busier than these three processes by %.1f cores or more: something else ran on the machine, and those rows understate upsink.\n", joinInts(disturbed), otherLoad)
			}
			// Where the CPU goes at the targets' concurrencies.
			for _, g := range ceilingGoals {
				u := byKey[key("upsink", t, g.conns)]
				if u == nil {
					continue
				}
				su, okU := cpuPerUpload(u, "server")
				sd, okD := cpuPerUpload(u, "mariadbd")
				st, okT := cpuPerUpload(u, "tool")
				if !okU || !okD || !okT {
					continue
				}
				busy := coresOf(u, "server") + coresOf(u, "mariadbd") + u.r.CPU.Cores
				top, topV := "upsink", su
				if sd > topV {
					top, topV = "mariadbd", sd
				}
				if st > topV {
					top, topV = "the load tool", st
				}
				sum := su + sd + st
				w("\nAt c=%d: %.2f of %d cores busy; per upload upsink %.1f µs, mariadbd %.1f µs", g.conns, busy, u.r.CPU.NCPU, su, sd)
				if dbOK {
					w(" (%.1f µs per row in the ceiling run, %s)", dbUs, ratio(sd, dbUs))
				}
				w(", the load tool %.1f µs: %.1f µs in all, of which %s %.0f %%. ", st, sum, top, 100*topV/sum)
				if n := float64(u.r.CPU.NCPU); n > 0 && sum > 0 {
					w("At that cost the %d cores could land at most %.0f uploads/s (%s the ceiling) if nothing waited.", u.r.CPU.NCPU, n/sum*1e6, ratio(n/sum*1e6, ceil.RowsPerSec))
					if need := g.ratio * ceil.RowsPerSec; need > 0 {
						w(" The target (%.2f×: %.0f uploads/s) needs the three to spend at most %.1f µs per upload in all, the load tool's included, with every core busy and nothing waiting.", g.ratio, need, n/need*1e6)
					}
				}
				w("\n")
			}
		}
		w("\nCPU per upload is the process's CPU time during the load run divided by that run's 201s, in µs: upsink's and mariadbd's from `/proc/PID/stat` between the start and the end of the run (`upsink-bench load --watch`), the load tool's from its own `getrusage`. \"All three\" is their sum, what one landed upload costs this machine; \"CPU cores busy\" is the three processes' CPU time over the run's wall time, beside the whole machine's (`/proc/stat`: every process, and the kernel's interrupt and softirq time, where loopback TCP is largely processed and not charged to any of the three; the difference is that plus whatever else ran, give or take a few percent as the two are read from different files at slightly different moments; \"steal\", shown from 0.05 cores, is CPU time the hypervisor gave to others; a difference of %.1f cores or more is marked as other work). The ceiling's mariadbd figure is what the database spends per row when nothing but rows arrives; mariadbd's figure under upsink, above it, is what upsink's transactions cost the database beyond the rows (more and smaller transactions at low concurrency, the ledger row per batch). upsink's transactions are its batches as its ledger (`upsink_batches`) holds them after the run: their number over the run's wall time, and the mean rows per batch; with c closed-loop clients no batch can hold more than c rows. The load tool runs on the same %s cores as the servers: its CPU is taken from them, so on this machine the ratios are lower than with clients elsewhere. upsink's store writes with one connection too (one writer by default), in batches of up to 1,000 rows formed from what waits in its queue.\n",
			otherLoad, strconv.Itoa(ceil.CPU.NCPU))
	}
}

func ncpuOf(byKey map[string]*loadRun, key func(string, bool, int) string, t bool, cs []int) int {
	for _, c := range cs {
		if u := byKey[key("upsink", t, c)]; u != nil && u.r.CPU.NCPU > 0 {
			return u.r.CPU.NCPU
		}
	}
	return 0
}

// ceilingDBus is mariadbd's CPU µs per row in a ceiling run.
func ceilingDBus(c *CeilingResult) (float64, bool) {
	for _, m := range c.Memory {
		if m.Name == "mariadbd" && m.Err == "" && c.Rows > 0 {
			return m.CPU / float64(c.Rows) * 1e6, true
		}
	}
	return 0, false
}

func ceilingRow(w func(string, ...any), label string, c *CeilingResult) {
	db, dbCores := "—", "—"
	if v, ok := ceilingDBus(c); ok {
		db = fmt.Sprintf("%.1f", v)
		for _, m := range c.Memory {
			if m.Name == "mariadbd" {
				dbCores = fmt.Sprintf("%.2f", m.Cores)
			}
		}
	}
	count := fmt.Sprintf("%d = %d: yes", c.Rows, c.CountAfter-c.CountBefore)
	if !c.CountOK {
		count = fmt.Sprintf("%d vs %d: **NO**", c.Rows, c.CountAfter-c.CountBefore)
	}
	tool := 0.0
	if c.Rows > 0 {
		tool = (c.CPU.User + c.CPU.Sys) / float64(c.Rows) * 1e6
	}
	mach := "—"
	if m := c.Machine; m != nil {
		mach = fmt.Sprintf("%.2f / %.2f / %.2f", m.Busy, m.IOWait, m.Steal)
	}
	w("| %s | **%.0f** | %.1f (%d) | %s / %s | %s / %s | %s | %s | %s / %.1f | %s | %.0f | %s, %s |\n", label, c.RowsPerSec, c.TxPerSec, c.RowsPerTx,
		ms(c.TxLatency.P50), ms(c.TxLatency.P99), ms(c.LoadLatency.P50), ms(c.LoadLatency.P99), count, dbCores, db, tool, mach,
		float64(c.StreamBytes)/(1<<20), c.Engine, c.FlushAtTrx)
}

// higherCeiling is the ceiling run with the higher rows/s among those that
// committed rows and whose COUNT(*) checked out (else the one there is).
func higherCeiling(a, b *CeilingResult) *CeilingResult {
	ok := func(c *CeilingResult) bool { return c != nil && c.CountOK && c.Rows > 0 && c.Err == "" }
	switch {
	case ok(a) && ok(b):
		if b.RowsPerSec > a.RowsPerSec {
			return b
		}
		return a
	case ok(b):
		return b
	case a != nil:
		return a
	}
	return b
}

// otherLoad: the whole machine busier than the three processes of a load
// run by this many cores means something else ran (loopback softirq and
// the sampling skew stay well under it: within ±0.15 cores in quiet runs).
const otherLoad = 0.3

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}
