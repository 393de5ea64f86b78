package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The results directory bench/vps.sh fills:
//
//	info.tsv            KEY<TAB>VALUE
//	load-N.json         LoadResult of each load process (N = 1 watched memory)
//	cgroup.json         CgroupResult right after the load (processes still in it)
//	memory.tsv/.png/.svg  samples and plot;  upsink.massif  upsink's heap (ms_print)

func mainReportVPS(args []string, stdout, stderr io.Writer) error {
	return mainSectionReport("report-vps", "results directory written by bench/vps.sh", vpsBegin, vpsEnd, ReportVPS, args, stdout, stderr)
}

// mainSectionReport is the command behind report-vps and attack-report: it
// renders a results directory's section with render, prints it, and with
// --into splices it into a markdown file between begin and end.
func mainSectionReport(name, dirHelp, begin, end string, render func(io.Writer, string) error, args []string, stdout, stderr io.Writer) error {
	fs := newFlags(name, stderr)
	dir := fs.String("dir", "", dirHelp)
	into := fs.String("into", "", "also put the section into this markdown file, between "+begin+" and "+end+" (appended after the kept-sections marker if absent)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	var b strings.Builder
	if err := render(&b, *dir); err != nil {
		return err
	}
	if _, err := io.WriteString(stdout, b.String()); err != nil {
		return err
	}
	if *into == "" {
		return nil
	}
	old, err := os.ReadFile(*into)
	if err != nil {
		return err
	}
	return os.WriteFile(*into, []byte(spliceMarked(string(old), begin, end, b.String())), 0o644)
}

const (
	vpsBegin = "<!-- bench-vps -->"
	vpsEnd   = "<!-- /bench-vps -->"
)

// spliceSection replaces the text between the bench-vps markers of doc with
// section (or appends the markers and section after KeptMarker, adding that
// marker at the end if needed).
func spliceSection(doc, section string) string { return spliceMarked(doc, vpsBegin, vpsEnd, section) }

// spliceMarked replaces the text between begin and end in doc with section
// (or appends the markers and section after KeptMarker, adding that marker
// at the end if needed).
func spliceMarked(doc, begin, end, section string) string {
	block := begin + "\n" + strings.TrimRight(section, "\n") + "\n" + end
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i >= 0 && j > i {
		return doc[:i] + block + doc[j+len(end):]
	}
	if !strings.Contains(doc, KeptMarker) {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + KeptMarker + "\n"
	}
	return strings.TrimRight(doc, "\n") + "\n\n" + block + "\n"
}

// ReportVPS writes the markdown summary of a bench/vps.sh run.
func ReportVPS(w io.Writer, dir string) error {
	files, _ := filepath.Glob(filepath.Join(dir, "load-*.json"))
	sort.Strings(files)
	if len(files) == 0 {
		return fmt.Errorf("no load-*.json in %s", dir)
	}
	var loads []LoadResult
	for _, f := range files {
		var r LoadResult
		if !readJSON(dir, filepath.Base(f), &r) {
			return fmt.Errorf("cannot read %s", f)
		}
		loads = append(loads, r)
	}
	var cg CgroupResult
	haveCg := readJSON(dir, "cgroup.json", &cg)

	fmt.Fprintf(w, "## bench-vps: upsink and MariaDB in one memory cgroup\n\n| | |\n|---|---|\n")
	for _, l := range strings.Split(readText(dir, "info.tsv"), "\n") {
		if k, v, ok := strings.Cut(l, "\t"); ok {
			fmt.Fprintf(w, "| %s | %s |\n", k, v)
		}
	}
	var (
		ups, elapsed           float64
		created, errs, unans   int64
		connects               int64
		p99, p999, maxl        int64
		lost, dup, chg, idm    int64
		acked, unackedPresent  int64
		verified, verifyFailed bool
		conns                  int
		other                  = map[string]int64{}
		toolCores              float64
	)
	for _, r := range loads {
		ups += r.UploadsPerSec
		created += r.Created
		errs += r.Errors
		unans += r.Unanswered
		conns += r.Conns
		connects += r.Connects
		elapsed = max(elapsed, r.Elapsed)
		p99, p999, maxl = max(p99, r.Latency.P99), max(p999, r.Latency.P999), max(maxl, r.Latency.Max)
		toolCores += r.CPU.Cores
		for k, n := range r.Status {
			if k != "201" {
				other[k] += n
			}
		}
		if v := r.Verify; v != nil {
			verified = true
			lost += v.Lost
			dup += v.Duplicated
			chg += v.Mismatched
			idm += v.IDMismatch
			acked += v.Acked
			unackedPresent += v.UnackedPresent
			verifyFailed = verifyFailed || !v.OK
		}
	}
	goal := func(ok bool) string {
		if ok {
			return "**met**"
		}
		return "**missed**"
	}
	fmt.Fprintf(w, "\n| measure | value | goal |\n|---|---|---|\n")
	fmt.Fprintf(w, "| connections | %d (in %d load processes) | |\n", conns, len(loads))
	fmt.Fprintf(w, "| connections opened (a connection the server closed or refused is opened again) | %d | = clients (no handshake refused): %s |\n", connects, goal(connects == int64(conns)))
	fmt.Fprintf(w, "| uploads/s (201s, all load processes) | **%.0f** (%d in %.1f s) | |\n", ups, created, elapsed)
	fmt.Fprintf(w, "| latency p99 / p99.9 / max (worst process) | %s / %s / %s ms | |\n", ms(p99), ms(p999), ms(maxl))
	fmt.Fprintf(w, "| errors / unanswered / other statuses | %d / %d / %v | |\n", errs, unans, other)
	if verified {
		fmt.Fprintf(w, "| verify: acknowledged | %d | |\n", acked)
		fmt.Fprintf(w, "| verify: lost / duplicated / changed | %d / %d / %d | 0 / 0 / 0: %s |\n", lost, dup, chg, goal(lost == 0 && dup == 0 && chg == 0))
		fmt.Fprintf(w, "| verify: id answered ≠ row id; not acknowledged but stored | %d; %d | |\n", idm, unackedPresent)
	}
	for _, m := range loads[0].Memory {
		fmt.Fprintf(w, "| peak RSS %s (sampled every 100 ms; VmHWM) | %s (%s); peak PSS %s | |\n", m.Name, MiB(m.PeakRSS), MiB(m.HWM), MiB(m.PeakPSS))
	}
	if loads[0].TCPMemPeak > 0 {
		fmt.Fprintf(w, "| kernel TCP memory peak (whole machine, /proc/net/sockstat) | %s | |\n", MiB(loads[0].TCPMemPeak))
	}
	if haveCg {
		fmt.Fprintf(w, "| cgroup v%d peak (%s) | **%s** of %s | under the limit: %s |\n", cg.Version, peakName(cg.Version), MiB(cg.Peak), MiB(cg.Limit), goal(cg.Peak < cg.Limit))
		fmt.Fprintf(w, "| cgroup failcnt (times usage hit the limit, page cache included) | %d | 0: %s |\n", cg.Failcnt, goal(cg.Failcnt == 0))
		fmt.Fprintf(w, "| OOM kills in the cgroup | %d | 0: %s |\n", cg.OOMKill, goal(cg.OOMKill == 0))
		if cg.RSS > 0 || cg.Cache > 0 {
			fmt.Fprintf(w, "| cgroup at the end: anon / page cache | %s / %s | |\n", MiB(cg.RSS), MiB(cg.Cache))
		}
		if cg.TCPPeak > 0 {
			fmt.Fprintf(w, "| cgroup TCP buffers peak (v1 kmem.tcp) | %s | |\n", MiB(cg.TCPPeak))
		}
		for _, n := range cg.Notes {
			fmt.Fprintf(w, "| note | %s | |\n", n)
		}
	}
	fmt.Fprintf(w, "| load tool CPU (cores, all processes) | %.2f | |\n", toolCores)
	fmt.Fprintf(w, "\nMemory over time (`memory.png`, `memory.svg`, samples in `memory.tsv`, all in the results directory; the last published run is ![memory](docs/bench-vps-memory.png)); upsink's Go heap: `ms_print upsink.massif`.\n")
	if verifyFailed {
		fmt.Fprintf(w, "\n**The verifier found acknowledged uploads lost, duplicated or changed.**\n")
	}
	return nil
}

func peakName(v int) string {
	if v == 2 {
		return "memory.peak"
	}
	return "memory.max_usage_in_bytes"
}
