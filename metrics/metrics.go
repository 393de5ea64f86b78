// Package metrics is upsink's Prometheus exposition (issue 10): a set of
// metrics with their help texts, written in the Prometheus text format by
// github.com/VictoriaMetrics/metrics (HELP and TYPE lines, Go runtime and
// process metrics included) for the admin listener's /metrics.
//
// Two kinds of metric: ones updated where the event happens (the store's
// batch histograms: vm.PrometheusHistogram, whose Update allocates nothing),
// and ones read at scrape time from the counters the packages keep anyway
// (Server.Stats and friends), written by the functions given to Func. The
// request path itself only bumps plain atomics.
//
// A Set may be used from any goroutine.
package metrics

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"sync"

	vm "github.com/VictoriaMetrics/metrics"
)

func init() { vm.ExposeMetadata(true) }

// Set is one process's metrics.
type Set struct {
	vm *vm.Set

	mu    sync.Mutex
	help  map[string]string // metric family -> its help text
	funcs []func(w io.Writer)
	buf   bytes.Buffer // scrape scratch, under mu
}

// New returns an empty Set.
func New() *Set {
	return &Set{vm: vm.NewSet(), help: map[string]string{}}
}

// Histogram registers a Prometheus histogram (le buckets at bounds).
func (s *Set) Histogram(name, help string, bounds []float64) *vm.PrometheusHistogram {
	s.Help(name, help)
	return s.vm.NewPrometheusHistogramExt(name, bounds)
}

// Help records the help text of a metric family written by a Func.
func (s *Set) Help(family, help string) {
	s.mu.Lock()
	s.help[family] = help
	s.mu.Unlock()
}

// Func registers f, called at each scrape to write metrics read at that
// moment; it writes them with Counter and Gauge (all samples of one family
// together) and gives each family its Help.
func (s *Set) Func(f func(w io.Writer)) {
	s.mu.Lock()
	s.funcs = append(s.funcs, f)
	s.mu.Unlock()
}

// Counter writes one sample of a counter (name may carry labels:
// `name{k="v"}`); the family's name ends in _total.
func Counter(w io.Writer, name string, v uint64) { vm.WriteCounterUint64(w, name, v) }

// Gauge writes one sample of a gauge.
func Gauge(w io.Writer, name string, v float64) { vm.WriteGaugeFloat64(w, name, v) }

// dropped are library metrics whose names promtool refuses and upsink does
// not need.
var dropped = map[string]bool{"go_cgo_calls_count": true, "go_cpu_count": true, "go_gc_forced_count": true}

// family is the metric family a text-format line is about.
func family(line string) string {
	if strings.HasPrefix(line, "# ") {
		f := strings.Fields(line)
		if len(f) >= 3 {
			return f[2]
		}
		return ""
	}
	end := strings.IndexAny(line, "{ ")
	if end < 0 {
		return line
	}
	return line[:end]
}

// defaultHelp is the help of the Go runtime and process metrics the library
// writes.
const defaultHelp = "Go runtime or process metric, as github.com/VictoriaMetrics/metrics exposes it."

// WritePrometheus writes every metric of s, then the Go runtime and process
// metrics, in the Prometheus text format with one HELP and one TYPE line per
// family. Two naming slips of the library's own Go and process metrics that
// promtool's linter refuses are mended on the way: process_io_*_total
// families are typed counter (they are), and the three go_*_count gauges
// (cgo calls, CPUs, forced GCs) are left out.
func (s *Set) WritePrometheus(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
	s.vm.WritePrometheus(&s.buf)
	for _, f := range s.funcs {
		f(&s.buf)
	}
	vm.WriteProcessMetrics(&s.buf)
	bw := bufio.NewWriter(w)
	seen := make(map[string]bool, 64)
	sc := bufio.NewScanner(bytes.NewReader(s.buf.Bytes()))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if fam := family(line); dropped[fam] {
			continue
		}
		switch {
		case strings.HasPrefix(line, "# HELP "):
			fam, _, _ := strings.Cut(line[len("# HELP "):], " ")
			if seen["h"+fam] {
				continue
			}
			seen["h"+fam] = true
			help := s.help[fam]
			if help == "" {
				help = defaultHelp
			}
			bw.WriteString("# HELP " + fam + " " + help + "\n")
		case strings.HasPrefix(line, "# TYPE "):
			fam, _, _ := strings.Cut(line[len("# TYPE "):], " ")
			if seen["t"+fam] {
				continue
			}
			seen["t"+fam] = true
			if strings.HasSuffix(fam, "_total") && strings.HasSuffix(line, " gauge") {
				line = "# TYPE " + fam + " counter"
			}
			bw.WriteString(line + "\n")
		default:
			bw.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return bw.Flush()
}
