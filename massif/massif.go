// Package massif writes a Go program's memory over time in the text format of
// valgrind's massif tool (massif.out), so that ms_print (and massif-visualizer)
// can draw it: every interval a snapshot of the Go heap from runtime/metrics,
// every Nth snapshot and the peak with a heap tree built from the runtime's
// heap profile (allocation sites, innermost frame first, as massif's trees).
//
//	mem_heap_B       /memory/classes/heap/objects:bytes (live and not yet swept objects)
//	mem_heap_extra_B /memory/classes/heap/unused:bytes + /memory/classes/heap/free:bytes
//	                 (spans' slack and free pages not returned to the OS)
//	mem_stacks_B     /memory/classes/heap/stacks:bytes + /memory/classes/os-stacks:bytes
//
// The tree's proportions are those of runtime.MemProfile's in-use bytes (as of
// the last completed GC cycle, scaled for sampling as pprof does), scaled so
// that its root equals mem_heap_B. Only detailed snapshots walk the profile.
//
// Like massif, at most MaxSnapshots are kept: when full, every other one is
// dropped (never the peak) and the interval doubles. The file is rewritten
// whole (to FILE.tmp, then renamed) at every detailed snapshot and at Stop,
// so it is always complete.
package massif

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"time"
)

// Options of a Writer. Zero values take the defaults.
type Options struct {
	Interval      time.Duration // between snapshots (default 100 ms)
	DetailedEvery int           // every Nth snapshot has a heap tree (default 10)
	MaxSnapshots  int           // kept in the file (default 100, as massif's --max-snapshots)
	Threshold     float64       // percent of the total below which tree nodes are merged (default 1, as massif)
	Depth         int           // deepest tree level (default 30, as massif's --depth)
	ProfileRate   int           // if > 0, runtime.MemProfileRate is set to it at Start
	Desc          string        // the file's desc: line
	Cmd           string        // the file's cmd: line (default os.Args)
}

type snapshot struct {
	ms                  int64
	heap, extra, stacks int64
	tree                string // "" = empty
	detailed, peak      bool
}

func (s *snapshot) total() int64 { return s.heap + s.extra + s.stacks }

// Writer samples the process and writes the massif file.
type Writer struct {
	path     string
	opt      Options
	t0       time.Time
	samples  []metrics.Sample
	mu       sync.Mutex
	snaps    []snapshot
	taken    int // snapshots taken so far (for DetailedEvery)
	peak     int64
	peakTree int64 // total of the snapshot that holds the peak tree
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
	err      error
	recs     []runtime.MemProfileRecord
}

var metricNames = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/os-stacks:bytes",
}

// Start takes the first snapshot, writes the file, and samples in the
// background until Stop.
func Start(path string, opt Options) (*Writer, error) {
	if opt.Interval <= 0 {
		opt.Interval = 100 * time.Millisecond
	}
	if opt.DetailedEvery <= 0 {
		opt.DetailedEvery = 10
	}
	if opt.MaxSnapshots < 4 {
		opt.MaxSnapshots = 100
	}
	if opt.Threshold <= 0 {
		opt.Threshold = 1
	}
	if opt.Depth <= 0 {
		opt.Depth = 30
	}
	if opt.Cmd == "" {
		opt.Cmd = strings.Join(os.Args, " ")
	}
	if opt.ProfileRate > 0 {
		runtime.MemProfileRate = opt.ProfileRate
	}
	if opt.Desc == "" {
		opt.Desc = fmt.Sprintf("Go runtime/metrics heap; trees from the heap profile (MemProfileRate %d) scaled to mem_heap_B", runtime.MemProfileRate)
	}
	w := &Writer{path: path, opt: opt, t0: time.Now(), interval: opt.Interval,
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, n := range metricNames {
		w.samples = append(w.samples, metrics.Sample{Name: n})
	}
	w.snapshot(true)
	if err := w.write(); err != nil {
		return nil, err
	}
	go w.run()
	return w, nil
}

func (w *Writer) run() {
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer func() { t.Stop() }()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			detailed, culled := w.snapshot(false)
			if culled {
				t.Reset(w.interval)
			}
			if detailed {
				if err := w.write(); err != nil && w.err == nil {
					w.err = err
				}
			}
		}
	}
}

// Stop takes a last (detailed) snapshot, writes the file and returns the
// first error met while writing it.
func (w *Writer) Stop() error {
	select {
	case <-w.stop:
		return w.err
	default:
	}
	close(w.stop)
	<-w.done
	w.snapshot(true)
	if err := w.write(); err != nil && w.err == nil {
		w.err = err
	}
	return w.err
}

func u64(v metrics.Value) int64 {
	if v.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(v.Uint64())
}

// snapshot takes one snapshot (detailed if forced, scheduled or a new peak).
func (w *Writer) snapshot(force bool) (detailed, culled bool) {
	metrics.Read(w.samples)
	s := snapshot{
		ms:     time.Since(w.t0).Milliseconds(),
		heap:   u64(w.samples[0].Value),
		extra:  u64(w.samples[1].Value) + u64(w.samples[2].Value),
		stacks: u64(w.samples[3].Value) + u64(w.samples[4].Value),
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s.detailed = force || w.taken%w.opt.DetailedEvery == 0
	w.taken++
	newPeak := s.total() > w.peak
	if newPeak {
		w.peak = s.total()
	}
	// A new peak gets its own tree only when it is 1% above the peak that
	// has one (a slowly rising heap would otherwise walk the profile at
	// every snapshot); the marker stays on the one with the tree.
	treePeak := newPeak && float64(s.total()) >= float64(w.peakTree)*1.01
	if s.detailed || treePeak {
		s.tree = w.tree(s.heap, s.total())
	}
	if treePeak {
		for i := range w.snaps {
			if w.snaps[i].peak {
				w.snaps[i].peak = false
				if !w.snaps[i].detailed {
					w.snaps[i].tree = ""
				}
			}
		}
		s.peak = true
		w.peakTree = s.total()
	}
	w.snaps = append(w.snaps, s)
	if len(w.snaps) > w.opt.MaxSnapshots {
		w.cull()
		culled = true
	}
	return s.detailed || treePeak, culled
}

// cull drops every other snapshot (odd positions, never the peak nor the
// last) and doubles the interval, as massif does when full.
func (w *Writer) cull() {
	kept := w.snaps[:0]
	for i, s := range w.snaps {
		if i%2 == 0 || s.peak || i == len(w.snaps)-1 {
			kept = append(kept, s)
		}
	}
	clear(w.snaps[len(kept):])
	w.snaps = kept
	w.interval *= 2
}

type node struct {
	bytes    float64
	label    string
	children map[string]*node
}

func (n *node) child(key string) *node {
	if n.children == nil {
		n.children = map[string]*node{}
	}
	c := n.children[key]
	if c == nil {
		c = &node{label: key}
		n.children[key] = c
	}
	return c
}

// tree renders the heap tree of the current heap profile, scaled so that
// the root is heapB; nodes below Threshold% of total are merged.
func (w *Writer) tree(heapB, total int64) string {
	var n int
	for {
		var ok bool
		n, ok = runtime.MemProfile(w.recs, false)
		if ok {
			break
		}
		w.recs = make([]runtime.MemProfileRecord, n+n/4+16)
	}
	root := &node{}
	rate := float64(runtime.MemProfileRate)
	var frames []string
	for _, r := range w.recs[:n] {
		inuse := r.AllocBytes - r.FreeBytes
		if inuse <= 0 {
			continue
		}
		est := float64(inuse)
		if rate > 0 && r.AllocObjects > 0 {
			avg := float64(r.AllocBytes) / float64(r.AllocObjects)
			est /= 1 - math.Exp(-avg/rate) // unbias the sample, as pprof does
		}
		frames = frames[:0]
		fr := runtime.CallersFrames(r.Stack())
		for {
			f, more := fr.Next()
			// The runtime's allocation functions (mallocgc, makeslice,
			// newobject, growslice...) are massif's --alloc-fns: the root.
			if len(frames) == 0 && more && strings.HasPrefix(f.Function, "runtime.") {
				continue
			}
			if f.Function != "" {
				frames = append(frames, fmt.Sprintf("0x%X: %s (%s:%d)", f.PC, f.Function, shortFile(f.File), f.Line))
			}
			if !more || len(frames) >= w.opt.Depth {
				break
			}
		}
		root.bytes += est
		cur := root
		for _, k := range frames {
			cur = cur.child(k)
			cur.bytes += est
		}
	}
	scale := 0.0
	if root.bytes > 0 {
		scale = float64(heapB) / root.bytes
	}
	cut := float64(total) * w.opt.Threshold / 100
	var b strings.Builder
	var render func(n *node, depth int, line string)
	render = func(n *node, depth int, line string) {
		var sig []*node
		var insigB float64
		var insigN int
		for _, c := range n.children {
			if c.bytes*scale >= cut && c.bytes*scale >= 1 {
				sig = append(sig, c)
			} else {
				insigB += c.bytes
				insigN++
			}
		}
		slices.SortFunc(sig, func(a, b *node) int {
			switch {
			case a.bytes > b.bytes:
				return -1
			case a.bytes < b.bytes:
				return 1
			}
			return strings.Compare(a.label, b.label)
		})
		nc := len(sig)
		if insigN > 0 {
			nc++
		}
		fmt.Fprintf(&b, "%sn%d: %s\n", strings.Repeat(" ", depth), nc, line)
		for _, c := range sig {
			render(c, depth+1, fmt.Sprintf("%d %s", int64(c.bytes*scale), c.label))
		}
		if insigN > 0 {
			places := "places, all"
			if insigN == 1 {
				places = "place,"
			}
			fmt.Fprintf(&b, "%sn0: %d in %d %s below massif's threshold (%.2f%%)\n",
				strings.Repeat(" ", depth+1), int64(insigB*scale), insigN, places, w.opt.Threshold)
		}
	}
	render(root, 0, fmt.Sprintf("%d (heap allocation functions) malloc/new/new[], --alloc-fns, etc.", heapB))
	return b.String()
}

// shortFile keeps the last two elements of a path (package dir and file).
func shortFile(f string) string {
	d, file := filepath.Split(f)
	if d == "" {
		return file
	}
	return filepath.Base(d) + "/" + file
}

// write renders all snapshots and replaces the file.
func (w *Writer) write() error {
	w.mu.Lock()
	var b bytes.Buffer
	fmt.Fprintf(&b, "desc: %s\ncmd: %s\ntime_unit: ms\n", oneLine(w.opt.Desc), oneLine(w.opt.Cmd))
	for i, s := range w.snaps {
		tree := "empty"
		switch {
		case s.peak:
			tree = "peak"
		case s.tree != "":
			tree = "detailed"
		}
		fmt.Fprintf(&b, "#-----------\nsnapshot=%d\n#-----------\ntime=%d\nmem_heap_B=%d\nmem_heap_extra_B=%d\nmem_stacks_B=%d\nheap_tree=%s\n",
			i, s.ms, s.heap, s.extra, s.stacks, tree)
		if tree != "empty" {
			b.WriteString(s.tree)
		}
	}
	w.mu.Unlock()
	tmp := w.path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, w.path)
}

func oneLine(s string) string { return strings.NewReplacer("\n", " ", "\r", " ").Replace(s) }
