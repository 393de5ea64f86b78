package spool

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// Many records across many segments come back intact, in order, with
// consecutive seqs, before and after a restart, from any starting seq.
func TestRoundTripAcrossSegments(t *testing.T) {
	for _, tc := range []struct {
		name    string
		segment int64
		n       int
		body    func(i int) int
	}{
		{"small segments", 4 << 10, 400, func(i int) int { return i * 37 % 1500 }},
		{"one record per segment", 1100, 50, func(i int) int { return 1000 }},
		{"large records", 1 << 20, 12, func(i int) int { return 200<<10 + i }},
		{"default segment", 0, 300, func(i int) int { return 1024 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			e := openEnv(t, dir, Options{SegmentBytes: tc.segment, MaxBytes: 1 << 30}, nil)
			want := make([]*Record, tc.n)
			for i := range want {
				want[i] = rec(i, tc.body(i))
				if seq := e.mustAdd(want[i]); seq != uint64(i+1) {
					t.Fatalf("record %d got seq %d", i, seq)
				}
			}
			check := func(after int) {
				t.Helper()
				got := e.readAll(uint64(after))
				if len(got) != tc.n-after {
					t.Fatalf("read %d records after %d, want %d", len(got), after, tc.n-after)
				}
				for i, g := range got {
					if g.Seq != uint64(after+i+1) {
						t.Fatalf("record %d has seq %d", after+i, g.Seq)
					}
					sameRecord(t, g, want[after+i])
				}
			}
			check(0)
			check(tc.n / 3)
			check(tc.n)
			if tc.segment != 0 && len(segFiles(t, dir)) < 2 {
				t.Fatalf("expected several segments, have %d", len(segFiles(t, dir)))
			}
			e.reopen()
			check(0)
			check(tc.n - 1)
			if l := e.log.atLeast(slog.LevelWarn); len(l) != 0 {
				t.Fatalf("clean reopen logged %v", l)
			}
			st := e.s.Stats()
			if st.Records != uint64(tc.n) || st.LastSeq != uint64(tc.n) || st.Acked != 0 {
				t.Fatalf("stats after reopen: %+v", st)
			}
		})
	}
}

// Sequence numbers continue after a restart, also when every record was
// acknowledged and every segment holding one deleted.
func TestSeqContinuesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, Options{SegmentBytes: 2048}, nil)
	for i := range 10 {
		e.mustAdd(rec(i, 300))
	}
	e.reopen()
	if seq := e.mustAdd(rec(10, 300)); seq != 11 {
		t.Fatalf("after restart seq %d, want 11", seq)
	}
	if err := e.s.Ack(11); err != nil {
		t.Fatal(err)
	}
	e.s.Close() // a barrier: the writer has closed the acknowledged active segment
	if files := segFiles(t, dir); len(files) != 1 || files[0] != 12 {
		t.Fatalf("after acknowledging everything: segments %v, want only the empty 12", files)
	}
	e.reopen()
	if st := e.s.Stats(); st.Records != 0 || st.Bytes != 0 || !st.Oldest.IsZero() || st.LastSeq != 11 || st.Acked != 11 {
		t.Fatalf("stats of a drained spool: %+v", st)
	}
	if seq := e.mustAdd(rec(11, 300)); seq != 12 {
		t.Fatalf("after draining and restarting seq %d, want 12", seq)
	}
	if err := e.s.Ack(11); err != nil { // the consumer's ledger may repeat an old Ack at start
		t.Fatal(err)
	}
}

// Ack deletes exactly the segments whose records are all acknowledged.
func TestAckDeletesOnlyFullyAckedSegments(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, Options{SegmentBytes: 1024}, nil)
	const n = 20
	for i := range n {
		e.mustAdd(recSized(t, i, 340)) // 3 records per segment
	}
	var bases []uint64 // 1, 4, 7, ..., 19 (the active one holds 19 and 20)
	for b := uint64(1); b <= n; b += 3 {
		bases = append(bases, b)
	}
	if got := segFiles(t, dir); !slices.Equal(got, bases) {
		t.Fatalf("segments %v, want %v", got, bases)
	}
	acked := uint64(0)
	for _, tc := range []struct {
		ack  uint64
		want []uint64
	}{
		{0, bases},
		{2, bases},                 // segment 1..3 not complete
		{3, bases[1:]},             // 1..3 done
		{8, bases[2:]},             // 4..6 done, 7..9 not
		{5, bases[2:]},             // a lower Ack: no-op
		{18, bases[len(bases)-1:]}, // everything before the active segment
	} {
		if err := e.s.Ack(tc.ack); err != nil {
			t.Fatalf("Ack(%d): %v", tc.ack, err)
		}
		acked = max(acked, tc.ack)
		if got := segFiles(t, dir); !slices.Equal(got, tc.want) {
			t.Fatalf("after Ack(%d): segments %v, want %v", tc.ack, got, tc.want)
		}
		if st := e.s.Stats(); st.Records != n-acked || st.Acked != acked {
			t.Fatalf("after Ack(%d): backlog %d records, acked %d", tc.ack, st.Records, st.Acked)
		}
		// A reader still finds every record above the Ack.
		got := e.readAll(acked)
		if len(got) != int(n-acked) || (len(got) > 0 && got[0].Seq != acked+1) {
			t.Fatalf("after Ack(%d): read %d records", tc.ack, len(got))
		}
	}
	if err := e.s.Ack(n + 5); err == nil {
		t.Fatal("Ack past the last seq accepted")
	}
	if st := e.s.Stats(); st.Acked != n || st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("Ack past the end should acknowledge up to the end: %+v", st)
	}
	e.s.Close() // barrier: the writer has replaced the acknowledged active segment
	if got := segFiles(t, dir); !slices.Equal(got, []uint64{n + 1}) {
		t.Fatalf("after acknowledging everything: segments %v", got)
	}
}

// The backlog's counters follow appends and acknowledgements.
func TestBacklogStats(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, Options{SegmentBytes: 64 << 10}, nil)
	var sizes []int64
	for i := range 30 {
		r := rec(i, 1000)
		sz, _ := recordSize(r)
		sizes = append(sizes, sz)
		e.mustAdd(r)
	}
	sum := func(from int) (b int64) {
		for _, s := range sizes[from:] {
			b += s
		}
		return b
	}
	st := e.s.Stats()
	if st.Records != 30 || st.Bytes != sum(0) || !st.Oldest.Equal(rec(0, 0).ReceivedAt) || st.DiskBytes != sum(0) || st.Appended != 30 {
		t.Fatalf("stats %+v, want 30 records, %d bytes, oldest %v", st, sum(0), rec(0, 0).ReceivedAt)
	}
	e.s.Ack(10)
	st = e.s.Stats()
	// Inside a segment the bytes and age are exact to one index spacing: here
	// the whole segment is one spacing, so they still count from its start.
	if st.Records != 20 || st.Bytes != sum(0) || !st.Oldest.Equal(rec(0, 0).ReceivedAt) {
		t.Fatalf("after Ack(10): %+v", st)
	}
	e.reopen()
	if st := e.s.Stats(); st.Records != 30 || st.Acked != 0 {
		t.Fatalf("after reopen (Ack is the consumer's to repeat): %+v", st)
	}
}

// A full spool refuses at once with ErrFull and accepts again once
// acknowledged segments are deleted.
func TestErrFull(t *testing.T) {
	dir := t.TempDir()
	const size = 1000
	e := openEnv(t, dir, Options{MaxBytes: 16 * size, SegmentBytes: 4 * size}, nil)
	n := 0
	for ; n < 100; n++ {
		err := e.s.Append(recSized(t, n, size))
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if res := e.c.next(t); res.err != nil {
			t.Fatal(res.err)
		}
	}
	if n != 16 {
		t.Fatalf("ErrFull after %d records, want 16", n)
	}
	if st := e.s.Stats(); st.DiskBytes != 16*size || st.Segments != 4 {
		t.Fatalf("stats when full: %+v", st)
	}
	if err := e.s.Ack(8); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if _, err := e.add(recSized(t, 100+i, size)); err != nil {
			t.Fatalf("append after Ack freed two segments: %v", err)
		}
	}
	if err := e.s.Append(recSized(t, 200, size)); !errors.Is(err, ErrFull) {
		t.Fatalf("got %v, want ErrFull again", err)
	}
}

func TestErrTooLargeAndClosed(t *testing.T) {
	e := openEnv(t, t.TempDir(), Options{SegmentBytes: 4096}, nil)
	if err := e.s.Append(rec(0, 4096)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if seq := e.mustAdd(recSized(t, 1, 4096)); seq != 1 {
		t.Fatal(seq)
	}
	e.s.Close()
	if err := e.s.Append(rec(2, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
	if err := e.s.Ack(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
	if err := e.s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// The queue is bounded by count and bytes; full is an immediate error.
func TestQueueFull(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  Options
		want int // appends accepted while the writer is held in its first fsync
	}{
		{"count", Options{QueueLen: 4}, 4},
		{"bytes", Options{QueueBytes: 3000}, 2}, // records of ~1.1 KiB
		{"one large record alone", Options{QueueBytes: 100}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFaultFS()
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			fs.syncHook = func(string) {
				once.Do(func() { close(entered); <-release })
			}
			e := openEnv(t, t.TempDir(), tc.opt, fs.open)
			if err := e.s.Append(rec(0, 1000)); err != nil {
				t.Fatal(err)
			}
			<-entered // the writer holds record 0 in its fsync; the queue is empty
			accepted := 0
			var err error
			for i := 1; i < 100; i++ {
				if err = e.s.Append(rec(i, 1000)); err != nil {
					break
				}
				accepted++
			}
			if !errors.Is(err, ErrQueueFull) || accepted != tc.want {
				t.Fatalf("accepted %d then %v; want %d then ErrQueueFull", accepted, err, tc.want)
			}
			if st := e.s.Stats(); st.QueueLen != tc.want {
				t.Fatalf("QueueLen %d", st.QueueLen)
			}
			close(release)
			for range accepted + 1 {
				if res := e.c.next(t); res.err != nil {
					t.Fatal(res.err)
				}
			}
		})
	}
}

func TestDirectoryLocked(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, Options{}, nil)
	_, err := Open(dir, Options{OnDone: func([]*Record) {}})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	id := e.s.ID()
	e.reopen() // Close released the lock
	if e.s.ID() != id || len(id) != 32 {
		t.Fatalf("ID %q changed to %q", id, e.s.ID())
	}
	other := openEnv(t, t.TempDir(), Options{}, nil)
	if other.s.ID() == id {
		t.Fatal("two spools share an ID")
	}
}

// Readers see records as they become durable, in order, while the writer
// appends, and do not stumble over segments deleted under them.
func TestReaderFollowsWriter(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, Options{SegmentBytes: 8 << 10}, nil)
	const n = 600
	durable := make(chan struct{}, n) // one token per record reported by OnDone
	go func() {
		for i := range n {
			if err := e.s.Append(rec(i, i%900)); err != nil {
				t.Error(err)
				return
			}
			if res := <-e.c.ch; res.err != nil {
				t.Error(res.err)
				return
			}
			durable <- struct{}{}
		}
	}()
	rd := e.s.NewReader(0)
	defer rd.Close()
	var last uint64
	for got, waited := 0, 0; got < n; {
		r, err := rd.Next()
		if errors.Is(err, io.EOF) {
			if waited == n {
				t.Fatalf("EOF after %d records with all %d durable", got, n)
			}
			<-durable // wait for more: no sleeping
			waited++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.Seq != last+1 {
			t.Fatalf("seq %d after %d", r.Seq, last)
		}
		sameRecord(t, *r, rec(int(r.Seq-1), int(r.Seq-1)%900))
		last = r.Seq
		got++
		if got%50 == 0 {
			if err := e.s.Ack(r.Seq - 10); err != nil { // deletes segments behind the reader while it reads
				t.Fatal(err)
			}
		}
	}
}

// A record that changes on disk after Open is reported by the reader, never
// handed out, and the reader does not move past it.
func TestReaderReportsCorruption(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, Options{}, nil)
	for i := range 3 {
		e.mustAdd(rec(i, 100))
	}
	path := lastSeg(t, dir)
	b, _ := os.ReadFile(path)
	size0, _ := recordSize(rec(0, 100))
	b[size0+headerSize+5] ^= 1 // record 2's payload
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
	rd := e.s.NewReader(0)
	defer rd.Close()
	if r, err := rd.Next(); err != nil || r.Seq != 1 {
		t.Fatalf("first record: %v", err)
	}
	for range 2 {
		if _, err := rd.Next(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
	}
}

// A reader's buffer grows for a large record and shrinks after it.
func TestReaderBufferBounded(t *testing.T) {
	e := openEnv(t, t.TempDir(), Options{SegmentBytes: 8 << 20}, nil)
	bodies := []int{10, 3 << 20, 10}
	for i, n := range bodies {
		e.mustAdd(rec(i, n))
	}
	rd := e.s.NewReader(0)
	defer rd.Close()
	for i, n := range bodies {
		r, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		sameRecord(t, *r, rec(i, n))
		if got := len(rd.win.buf); (n > readWindow) != (got > readWindow) || got > max(readWindow, n+200) {
			t.Fatalf("record %d (%d bytes): buffer of %d bytes", i, n, got)
		}
	}
}

func TestDefaultMaxBytes(t *testing.T) {
	n, err := DefaultMaxBytes(t.TempDir())
	if err != nil || n <= 0 || n > 1<<30 {
		t.Fatalf("DefaultMaxBytes = %d, %v", n, err)
	}
	if _, err := DefaultMaxBytes(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("no error for a missing directory")
	}
}

// Open refuses options it cannot honour and ignores unknown files.
func TestOpenOptions(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{}); err == nil {
		t.Fatal("Open without OnDone")
	}
	if _, err := Open(t.TempDir(), Options{OnDone: func([]*Record) {}, MaxBytes: -1}); err == nil {
		t.Fatal("negative MaxBytes")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o640)
	os.WriteFile(filepath.Join(dir, "123.seg"), []byte("x"), 0o640)
	e := openEnv(t, dir, Options{MaxBytes: 1 << 20}, nil)
	if e.s.opt.SegmentBytes != 256<<10 {
		t.Fatalf("SegmentBytes %d, want MaxBytes/4", e.s.opt.SegmentBytes)
	}
	if seq := e.mustAdd(rec(0, 1)); seq != 1 {
		t.Fatal(seq)
	}
}
