package admin

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The status page: GET /status, one small HTML page that refreshes itself
// every 5 s, with the current rates and levels and the last 10 minutes of
// memory as an inline SVG drawn here. No script, no external asset.
//
// A Sampler takes one Sample a second into a fixed ring of ringLen; its
// memory is that array (ringLen × 112-byte Samples: 67,200 B), whatever
// happens.

// ringLen is the samples kept: 10 minutes at one a second.
const ringLen = 600

// Sample is one second's state, as the command's read function fills it.
type Sample struct {
	At           time.Time
	Requests     uint64 // requests answered since start
	Rows         uint64 // rows committed since start
	Queue        int64  // jobs waiting for the writer
	Budget       int64  // bytes charged to the in-flight budget
	BudgetMax    int64
	Conns        int64 // open connections
	SpoolRecords int64 // spool backlog
	RSS          int64 // upsink's resident set, bytes
	Heap         int64 // Go heap in use, bytes
	MariaDBRSS   int64 // mariadbd's resident set, bytes (0: not found on this host)
	TCPMem       int64 // the kernel's TCP buffer memory, bytes (/proc/net/sockstat)
}

// Sampler keeps the last ringLen samples. Any goroutine.
type Sampler struct {
	read func(*Sample)

	mu   sync.Mutex
	ring [ringLen]Sample
	next int // where the next sample goes
	n    int // samples in the ring
}

// NewSampler returns a sampler that fills each sample with read (At is set
// by the sampler).
func NewSampler(read func(*Sample)) *Sampler { return &Sampler{read: read} }

// Run takes a sample every second until stop is closed.
func (s *Sampler) Run(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	s.take()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.take()
		}
	}
}

func (s *Sampler) take() {
	var x Sample
	s.read(&x)
	x.At = time.Now()
	s.mu.Lock()
	s.ring[s.next] = x
	s.next = (s.next + 1) % ringLen
	s.n = min(s.n+1, ringLen)
	s.mu.Unlock()
}

// samples returns the ring's samples, oldest first (a copy).
func (s *Sampler) samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Sample, 0, s.n)
	for i := range s.n {
		out = append(out, s.ring[(s.next-s.n+i+ringLen)%ringLen])
	}
	return out
}

// ServeHTTP writes the page.
func (s *Sampler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	writePage(w, s.samples())
}

func writePage(w io.Writer, ss []Sample) {
	io.WriteString(w, `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>upsink status</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:right}th{text-align:left;font-weight:normal;color:#555}svg{background:#fafafa;border:1px solid #ddd}.k{display:inline-block;width:1em;height:.6em;margin:0 .3em 0 1em}</style></head><body><h1>upsink</h1>`)
	if len(ss) == 0 {
		io.WriteString(w, "<p>No sample yet.</p></body></html>\n")
		return
	}
	cur := ss[len(ss)-1]
	var reqRate, rowRate float64
	if len(ss) >= 2 {
		// Over the last (up to) 10 s.
		p := ss[max(0, len(ss)-11)]
		if d := cur.At.Sub(p.At).Seconds(); d > 0 {
			reqRate = float64(cur.Requests-p.Requests) / d
			rowRate = float64(cur.Rows-p.Rows) / d
		}
	}
	fmt.Fprintf(w, "<p>%s, %d samples (one a second, the last 10 minutes kept)</p><table>", cur.At.UTC().Format(time.RFC3339), len(ss))
	row := func(k, v string) { fmt.Fprintf(w, "<tr><th>%s</th><td>%s</td></tr>", k, html.EscapeString(v)) }
	row("requests/s (last 10 s)", strconv.FormatFloat(reqRate, 'f', 1, 64))
	row("rows/s (last 10 s)", strconv.FormatFloat(rowRate, 'f', 1, 64))
	row("commit queue", strconv.FormatInt(cur.Queue, 10))
	row("in-flight budget", mib(cur.Budget)+" of "+mib(cur.BudgetMax))
	row("connections", strconv.FormatInt(cur.Conns, 10))
	row("spool backlog (records)", strconv.FormatInt(cur.SpoolRecords, 10))
	row("upsink RSS", mib(cur.RSS))
	row("Go heap", mib(cur.Heap))
	row("mariadbd RSS", mibOrNone(cur.MariaDBRSS))
	row("kernel TCP memory", mib(cur.TCPMem))
	io.WriteString(w, "</table><h2>Memory, last 10 minutes</h2>")
	writeChart(w, ss)
	io.WriteString(w, "</body></html>\n")
}

var series = []struct {
	name, color string
	get         func(*Sample) int64
}{
	{"upsink RSS", "#1f77b4", func(s *Sample) int64 { return s.RSS }},
	{"Go heap", "#2ca02c", func(s *Sample) int64 { return s.Heap }},
	{"mariadbd RSS", "#d62728", func(s *Sample) int64 { return s.MariaDBRSS }},
	{"kernel TCP", "#9467bd", func(s *Sample) int64 { return s.TCPMem }},
}

// writeChart draws the memory series over the ring's time span.
func writeChart(w io.Writer, ss []Sample) {
	const W, H, pad = 720.0, 240.0, 40.0
	var top int64 = 1 << 20
	for i := range ss {
		for _, sr := range series {
			top = max(top, sr.get(&ss[i]))
		}
	}
	t0 := ss[len(ss)-1].At.Add(-ringLen * time.Second)
	x := func(t time.Time) float64 { return pad + (W-2*pad)*t.Sub(t0).Seconds()/ringLen }
	y := func(v int64) float64 { return H - pad - (H-2*pad)*float64(v)/float64(top) }
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" role="img" aria-label="memory">`, W, H, W, H)
	fmt.Fprintf(w, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`, pad, H-pad, W-pad, H-pad)
	fmt.Fprintf(w, `<text x="4" y="%.0f" font-size="11">%s</text><text x="4" y="%.0f" font-size="11">0</text>`, pad, mib(top), H-pad)
	fmt.Fprintf(w, `<text x="%.0f" y="%.0f" font-size="11">-10 min</text><text x="%.0f" y="%.0f" font-size="11" text-anchor="end">now</text>`, pad, H-pad+16, W-pad, H-pad+16)
	for _, sr := range series {
		var b strings.Builder
		for i := range ss {
			fmt.Fprintf(&b, "%.1f,%.1f ", x(ss[i].At), y(sr.get(&ss[i])))
		}
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, sr.color, strings.TrimSpace(b.String()))
	}
	io.WriteString(w, "</svg><p>")
	for _, sr := range series {
		fmt.Fprintf(w, `<span class="k" style="background:%s"></span>%s`, sr.color, sr.name)
	}
	io.WriteString(w, "</p>")
}

func mib(v int64) string { return strconv.FormatFloat(float64(v)/(1<<20), 'f', 1, 64) + " MiB" }

func mibOrNone(v int64) string {
	if v == 0 {
		return "not found on this host"
	}
	return mib(v)
}

// ProcRSS is the resident set of process pid in bytes (0 if unknown).
func ProcRSS(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// FindProcess returns the pid of a process whose comm is name (0: none).
func FindProcess(name string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.TrimSpace(string(b)) == name {
			return pid
		}
	}
	return 0
}

// TCPMem is the kernel's TCP buffer memory in bytes (/proc/net/sockstat's
// TCP mem, in pages).
func TCPMem() int64 {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "TCP:") {
			continue
		}
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "mem" {
				pages, _ := strconv.ParseInt(f[i+1], 10, 64)
				return pages * int64(os.Getpagesize())
			}
		}
	}
	return 0
}
