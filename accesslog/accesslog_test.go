package accesslog

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWritesLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "access.log")
	l, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		l.Append([]byte(fmt.Sprintf("line %d\n", i)))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if n := strings.Count(string(b), "\n"); n != 1000 || !strings.HasPrefix(string(b), "line 0\n") {
		t.Fatalf("%d lines in the file", n)
	}
	if w, d := l.Stats(); w != 1000 || d != 0 {
		t.Fatalf("written %d dropped %d", w, d)
	}
}

// TestSlowDiskDropsLines: with the writer stuck on a write, Append neither
// blocks nor grows memory: past the buffer, lines are dropped and counted.
func TestSlowDiskDropsLines(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "access.log"), Options{Buffer: 1000, Flush: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// Fill the pipe so that the writer's next write blocks (nobody reads).
	_ = w.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		if _, err := w.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	_ = w.SetWriteDeadline(time.Time{})
	l.mu.Lock()
	old := l.f
	l.f = w
	l.mu.Unlock()
	old.Close()
	line := []byte(strings.Repeat("x", 99) + "\n")
	for range 100 { // 10 KiB of lines into a 1,000-byte buffer, the writer stuck
		l.Append(line)
	}
	if _, d := l.Stats(); d == 0 {
		t.Fatal("no line dropped with the disk stuck")
	}
	l.mu.Lock()
	held := cap(l.active) + cap(l.spare)
	l.mu.Unlock()
	if held > 2000 {
		t.Fatalf("buffers grew to %d bytes", held)
	}
	go io.Copy(io.Discard, r)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	written, dropped := l.Stats()
	if written+dropped != 100 {
		t.Fatalf("written %d + dropped %d != 100", written, dropped)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "access.log")
	l, err := Open(p, Options{Flush: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l.Append([]byte("before\n"))
	deadline := time.Now().Add(10 * time.Second)
	for w, _ := l.Stats(); w < 1; w, _ = l.Stats() {
		if time.Now().After(deadline) {
			t.Fatal("first line never written")
		}
		time.Sleep(time.Millisecond)
	}
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	l.Reopen()
	l.Append([]byte("after\n"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(p + ".1")
	cur, _ := os.ReadFile(p)
	if string(old) != "before\n" || string(cur) != "after\n" {
		t.Fatalf("rotated %q, new %q", old, cur)
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "a.log"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	line := bytes.Repeat([]byte("y"), 80)
	if n := testing.AllocsPerRun(1000, func() { l.Append(line) }); n != 0 {
		t.Fatalf("%.1f allocations per Append", n)
	}
}
