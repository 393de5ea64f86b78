package massif

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var sink [][]byte

//go:noinline
func allocSome(n, size int) {
	for range n {
		sink = append(sink, make([]byte, size))
	}
}

// check parses the file as ms_print does and returns the snapshot count,
// the number of detailed and of peak snapshots.
func check(t *testing.T, path string) (n, detailed, peaks int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var lines []string
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "desc: ") || !strings.HasPrefix(lines[1], "cmd: ") || lines[2] != "time_unit: ms" {
		t.Fatalf("header: %q", lines[:min(3, len(lines))])
	}
	nodeRe := regexp.MustCompile(`^\s*n(\d+):\s*(\d+)(.*)$`)
	i := 3
	field := func(name string) int64 {
		v, ok := strings.CutPrefix(lines[i], name+"=")
		if !ok {
			t.Fatalf("line %q: want %s=", lines[i], name)
		}
		i++
		x, _ := strconv.ParseInt(v, 10, 64)
		if name == "heap_tree" {
			switch v {
			case "empty":
				return 0
			case "detailed":
				return 1
			case "peak":
				return 2
			}
			t.Fatalf("heap_tree=%s", v)
		}
		return x
	}
	var tree func(total int64)
	tree = func(total int64) {
		m := nodeRe.FindStringSubmatch(lines[i])
		if m == nil {
			t.Fatalf("not a node: %q", lines[i])
		}
		i++
		k, _ := strconv.Atoi(m[1])
		b, _ := strconv.ParseInt(m[2], 10, 64)
		if b > total {
			t.Fatalf("node %d B > total %d B", b, total)
		}
		for range k {
			tree(total)
		}
	}
	for i < len(lines) {
		if got := field("snapshot"); got != int64(n) {
			t.Fatalf("snapshot=%d, want %d", got, n)
		}
		field("time")
		total := field("mem_heap_B") + field("mem_heap_extra_B") + field("mem_stacks_B")
		switch field("heap_tree") {
		case 1:
			detailed++
			tree(total)
		case 2:
			peaks++
			tree(total)
		}
		n++
	}
	return n, detailed, peaks
}

func TestWriterFormatAndMsPrint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "massif.out")
	w, err := Start(path, Options{Interval: 5 * time.Millisecond, DetailedEvery: 4, ProfileRate: 4096, MaxSnapshots: 40})
	if err != nil {
		t.Fatal(err)
	}
	// The file is complete from the start.
	if n, _, _ := check(t, path); n != 1 {
		t.Fatalf("%d snapshots at start", n)
	}
	for range 20 {
		allocSome(50, 8<<10)
		time.Sleep(4 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // enough ticks to cull at least once
	sink = nil
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal("second Stop:", err)
	}
	n, detailed, peaks := check(t, path)
	if n < 5 || n > 41 || detailed < 1 || peaks != 1 {
		t.Fatalf("%d snapshots, %d detailed, %d peak", n, detailed, peaks)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "massif.allocSome (massif/massif_test.go:") {
		t.Fatalf("the allocating function is not in any tree:\n%s", b)
	}
	msPrint(t, path)
}

// msPrint runs valgrind's ms_print on the file: it must accept it and draw
// the graph. Skipped (with a message) where ms_print is not installed.
func msPrint(t *testing.T, path string) {
	t.Helper()
	mp, err := exec.LookPath("ms_print")
	if err != nil {
		t.Skip("ms_print not installed (Debian: apt-get install valgrind): format checked by the parser above only")
	}
	out, err := exec.Command(mp, path).CombinedOutput()
	if err != nil {
		t.Fatalf("ms_print: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"Command:", "Number of snapshots:", "Detailed snapshots:", "(peak)", "^", "(heap allocation functions) malloc/new/new[], --alloc-fns, etc.", "->"} {
		if !strings.Contains(s, want) {
			t.Fatalf("ms_print output lacks %q:\n%s", want, s)
		}
	}
	t.Logf("ms_print:\n%s", s[:min(len(s), 3000)])
}
