package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// While the writer is in an fsync, everything appended meanwhile waits and is
// then written with one fsync; OnDone runs only once every byte written has
// been fsync'd.
func TestGroupFsync(t *testing.T) {
	fs := newFaultFS()
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fs.syncHook = func(string) { once.Do(func() { close(entered); <-release }) }
	e := openEnv(t, t.TempDir(), Options{SegmentBytes: 1 << 20}, fs.open)
	var early atomic.Int32
	e.c.check = func([]*Record) {
		if !fs.allSynced() {
			early.Add(1)
		}
	}
	if err := e.s.Append(rec(0, 1024)); err != nil {
		t.Fatal(err)
	}
	<-entered
	const n = 500
	for i := 1; i <= n; i++ {
		if err := e.s.Append(rec(i, 1024)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case r := <-e.c.ch:
		t.Fatalf("OnDone for tag %d before its fsync returned", r.tag)
	default:
	}
	close(release)
	for i := 0; i <= n; i++ {
		if r := e.c.next(t); r.err != nil || r.seq != uint64(i+1) {
			t.Fatalf("record %d: seq %d err %v", i, r.seq, r.err)
		}
	}
	if b1, b2 := <-e.c.batches, <-e.c.batches; b1 != 1 || b2 != n {
		t.Fatalf("batches of %d and %d, want 1 and %d", b1, b2, n)
	}
	if st := e.s.Stats(); st.Fsyncs != 2 || fs.syncs != 2 || st.Appended != n+1 {
		t.Fatalf("%d appends took %d fsyncs (%d seen by the file)", st.Appended, st.Fsyncs, fs.syncs)
	}
	if early.Load() != 0 {
		t.Fatal("OnDone ran with bytes written and not fsync'd")
	}
}

// One batch that spans several segments: one fsync per segment, one OnDone
// after the last. If a new segment cannot be created, the records already
// fsync'd in the batch keep their success and only the rest fail.
func TestBatchAcrossSegments(t *testing.T) {
	for _, failCreate := range []bool{false, true} {
		t.Run(fmt.Sprint("failCreate=", failCreate), func(t *testing.T) {
			fs := newFaultFS()
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			fs.syncHook = func(string) { once.Do(func() { close(entered); <-release }) }
			dir := t.TempDir()
			e := openEnv(t, dir, Options{SegmentBytes: 4096}, fs.open) // 3 records of ~1.1 KiB per segment
			var early atomic.Int32
			e.c.check = func([]*Record) {
				if !fs.allSynced() {
					early.Add(1)
				}
			}
			e.s.Append(rec(0, 1024))
			<-entered
			for i := 1; i < 10; i++ {
				if err := e.s.Append(rec(i, 1024)); err != nil {
					t.Fatal(err)
				}
			}
			if failCreate {
				fs.set(func(fs *faultFS) {
					fs.openErr = func(_ string, flag int) error {
						if flag&os.O_CREATE != 0 {
							return syscall.ENOSPC
						}
						return nil
					}
				})
			}
			close(release)
			for i := range 10 {
				r := e.c.next(t)
				if failCreate && i >= 3 {
					if !errors.Is(r.err, ErrNoSpace) || r.seq != 0 {
						t.Fatalf("record %d: seq %d err %v, want ErrNoSpace", i, r.seq, r.err)
					}
					continue
				}
				if r.err != nil || r.seq != uint64(i+1) {
					t.Fatalf("record %d: seq %d err %v", i, r.seq, r.err)
				}
			}
			wantSyncs, wantSegs := uint64(5), []uint64{1, 4, 7, 10}
			if failCreate {
				wantSyncs, wantSegs = 2, []uint64{1}
			}
			if st := e.s.Stats(); st.Fsyncs != wantSyncs || <-e.c.batches != 1 || <-e.c.batches != 9 {
				t.Fatalf("fsyncs %d, want %d", st.Fsyncs, wantSyncs)
			}
			if got := segFiles(t, dir); !slices.Equal(got, wantSegs) {
				t.Fatalf("segments %v, want %v", got, wantSegs)
			}
			if early.Load() != 0 {
				t.Fatal("OnDone ran with bytes written and not fsync'd")
			}
		})
	}
}

// Many concurrent appenders, each waiting for its record like a client
// waiting for its 202: far fewer fsyncs than records, OnDone never before
// the fsync, every seq given once.
func TestConcurrentAppendsShareFsyncs(t *testing.T) {
	const writers, each = 64, 40
	fs := newFaultFS()
	chans := make([]chan result, writers)
	for i := range chans {
		chans[i] = make(chan result, 1)
	}
	var early atomic.Int32
	s, err := open(t.TempDir(), Options{SegmentBytes: 256 << 10, Logger: slog.New(slog.DiscardHandler), OnDone: func(b []*Record) {
		if !fs.allSynced() {
			early.Add(1)
		}
		for _, r := range b {
			chans[r.Tag>>32] <- result{r.Tag, r.Seq, r.Err}
		}
	}}, fs.open)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seen := make([]atomic.Bool, writers*each+1)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				r := rec(g*each+i, 1024)
				r.Tag = uint64(g)<<32 | uint64(i)
				if err := s.Append(r); err != nil {
					t.Error(err)
					return
				}
				res := <-chans[g]
				if res.err != nil || res.tag != r.Tag || res.seq == 0 || res.seq > writers*each || seen[res.seq].Swap(true) {
					t.Errorf("append %d/%d: %+v", g, i, res)
					return
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	t.Logf("%d records, %d fsyncs (%.1f records per fsync)", st.Appended, st.Fsyncs, float64(st.Appended)/float64(st.Fsyncs))
	if st.Appended != writers*each || st.Fsyncs >= st.Appended/2 {
		t.Fatalf("%d records took %d fsyncs", st.Appended, st.Fsyncs)
	}
	if early.Load() != 0 {
		t.Fatal("OnDone ran with bytes written and not fsync'd")
	}
}

// Injected failures: the failed records get their error, nothing of them is
// left in the segment, the spool goes on once the fault is gone, and a
// reopen finds no torn tail.
func TestInjectedFaults(t *testing.T) {
	eio := syscall.EIO
	for _, tc := range []struct {
		name    string
		inject  func(fs *faultFS)
		lift    func(fs *faultFS)
		wantErr error
		later   int // further appends that still fail after the fault is lifted (a truncate still failing)
	}{
		{"ENOSPC mid-record", func(fs *faultFS) {
			fs.writeErr = func(_ string, off int64, n int) (int, error) { return n / 2, syscall.ENOSPC }
		}, func(fs *faultFS) { fs.writeErr = nil }, ErrNoSpace, 0},
		{"EIO on fsync", func(fs *faultFS) {
			fs.syncErr = func(string) error { return eio }
		}, func(fs *faultFS) { fs.syncErr = nil }, eio, 0},
		{"ENOSPC on fsync", func(fs *faultFS) {
			fs.syncErr = func(string) error { return syscall.ENOSPC }
		}, func(fs *faultFS) { fs.syncErr = nil }, ErrNoSpace, 0},
		{"truncate fails too", func(fs *faultFS) {
			fs.writeErr = func(_ string, off int64, n int) (int, error) { return n - 1, syscall.ENOSPC }
			fs.truncErr = func(string) error { return eio }
		}, func(fs *faultFS) {
			fs.writeErr = nil
			calls := 0
			fs.truncErr = func(string) error { // fails once more, then works
				if calls++; calls == 1 {
					return eio
				}
				return nil
			}
		}, ErrNoSpace, 1},
		{"ENOSPC creating a segment", func(fs *faultFS) {
			fs.openErr = func(_ string, flag int) error {
				if flag&os.O_CREATE != 0 {
					return syscall.ENOSPC
				}
				return nil
			}
		}, func(fs *faultFS) { fs.openErr = nil }, ErrNoSpace, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFaultFS()
			dir := t.TempDir()
			e := openEnv(t, dir, Options{SegmentBytes: 4096}, fs.open)
			var want []*Record
			for i := range 3 { // 3 of 1.1 KiB: the 4th needs a new segment
				r := rec(i, 1024)
				e.mustAdd(r)
				want = append(want, r)
			}
			fs.set(tc.inject)
			if _, err := e.add(rec(3, 1024)); !errors.Is(err, tc.wantErr) {
				t.Fatalf("append during the fault: %v, want %v", err, tc.wantErr)
			}
			fs.set(tc.lift)
			for range tc.later {
				if _, err := e.add(rec(3, 1024)); err == nil {
					t.Fatal("append succeeded while the failed write could not be truncated")
				}
			}
			r := rec(3, 1024)
			if seq, err := e.add(r); err != nil || seq != 4 {
				t.Fatalf("append after the fault: seq %d, %v", seq, err)
			}
			want = append(want, r)
			st := e.s.Stats()
			var onDisk int64
			for _, b := range segFiles(t, dir) {
				onDisk += fileSize(t, filepath.Join(dir, segName(b)))
			}
			if onDisk != st.DiskBytes || st.Failed != uint64(1+tc.later) || st.Appended != 4 {
				t.Fatalf("files hold %d bytes; stats %+v", onDisk, st)
			}
			e.reopen()
			if l := e.log.atLeast(slog.LevelWarn); len(l) != 0 {
				t.Fatalf("reopen found damage: %v", l)
			}
			got := e.readAll(0)
			if len(got) != len(want) {
				t.Fatalf("%d records after reopen", len(got))
			}
			for i, g := range got {
				sameRecord(t, g, want[i])
			}
		})
	}
}

// A real full filesystem: a 1 MiB tmpfs (needs root; skipped otherwise).
func TestENOSPCOnTmpfs(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s); TestInjectedFaults covers ENOSPC through the file interface", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	e := openEnv(t, mnt, Options{MaxBytes: 64 << 20, SegmentBytes: 128 << 10}, nil)
	ok := 0
	var err error
	for i := range 1000 {
		if _, err = e.add(rec(i, 4000)); err != nil {
			break
		}
		ok++
	}
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("after %d records: %v, want ENOSPC", ok, err)
	}
	t.Logf("%d records of 4 KiB fit; then: %v", ok, err)
	if _, err := e.add(rec(ok, 4000)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("second append on a full filesystem: %v", err)
	}
	st := e.s.Stats()
	var onDisk int64
	for _, b := range segFiles(t, mnt) {
		onDisk += fileSize(t, filepath.Join(mnt, segName(b)))
	}
	if onDisk != st.DiskBytes || st.Records != uint64(ok) {
		t.Fatalf("segment files hold %d bytes, stats %+v", onDisk, st)
	}
	e.reopen()
	if l := e.log.atLeast(slog.LevelWarn); len(l) != 0 {
		t.Fatalf("torn record left behind: %v", l)
	}
	if got := e.readAll(0); len(got) != ok {
		t.Fatalf("%d records readable, %d acknowledged", len(got), ok)
	}
	// Space comes back when acknowledged segments are deleted.
	if err := e.s.Ack(uint64(ok / 2)); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := e.add(rec(2000+i, 4000)); err != nil {
			t.Fatalf("append %d after space was freed: %v", i, err)
		}
	}
}

// The append path allocates nothing once warm: not Append, not the writer.
func TestAppendAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	e := openEnv(t, t.TempDir(), Options{}, nil)
	r := rec(0, 1024)
	cycle := func() {
		if err := e.s.Append(r); err != nil {
			panic(err)
		}
		<-e.c.ch
		<-e.c.batches
	}
	for range 200 {
		cycle()
	}
	if a := testing.AllocsPerRun(2000, cycle); a != 0 {
		t.Fatalf("%.2f allocations per append", a)
	}
}

// BenchmarkAppend: appends/s with group fsync, 1 KiB records, each appender
// waiting for its record's OnDone before the next (as a client waits for its
// 202). Set TMPDIR to put the spool on the disk to measure.
func BenchmarkAppend(b *testing.B) {
	for _, c := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("appenders=%d", c), func(b *testing.B) { benchAppend(b, c, 1024) })
	}
}

func benchAppend(b *testing.B, conc, body int) {
	chans := make([]chan struct{}, conc)
	recs := make([]*Record, conc)
	for i := range chans {
		chans[i] = make(chan struct{}, 1)
		recs[i] = rec(i, body)
		recs[i].Tag = uint64(i)
	}
	s, err := Open(b.TempDir(), Options{MaxBytes: 16 << 30, Logger: slog.New(slog.DiscardHandler), OnDone: func(batch []*Record) {
		for _, r := range batch {
			if r.Err != nil {
				panic(r.Err)
			}
			chans[r.Tag] <- struct{}{}
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for g := range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := s.Append(recs[g]); err != nil {
					panic(err)
				}
				<-chans[g]
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(b.N)/el.Seconds(), "appends/s")
	b.ReportMetric(float64(b.N)/float64(max(st.Fsyncs, 1)), "records/fsync")
}

// residentPages counts the pages of path in the page cache (mincore).
func residentPages(t *testing.T, path string) (resident, total int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size() == 0 {
		return 0, 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	// x/sys v0.30.0 has no Mincore wrapper for linux.
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	for _, v := range vec {
		resident += int(v & 1)
	}
	return resident, len(vec)
}

// What the writer fsync'd, and what a reader has read, leaves the page cache
// (all but the partial page at the end of the segment).
func TestPageCacheDropped(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type == unix.TMPFS_MAGIC {
		t.Skip("the temporary directory is on tmpfs, where the page cache is the storage")
	}
	e := openEnv(t, dir, Options{}, nil)
	for i := range 1000 {
		if err := e.s.Append(rec(i, 1024)); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			for range 50 {
				if r := e.c.next(t); r.err != nil {
					t.Fatal(r.err)
				}
			}
		}
	}
	path := lastSeg(t, dir)
	if res, total := residentPages(t, path); total < 200 || res > 1 {
		t.Fatalf("after appends: %d of %d pages resident", res, total)
	}
	if got := e.readAll(0); len(got) != 1000 {
		t.Fatalf("%d records", len(got))
	}
	if res, total := residentPages(t, path); res > 1 {
		t.Fatalf("after reading: %d of %d pages resident", res, total)
	}
	e.reopen() // the recovery scan reads everything
	if res, total := residentPages(t, path); res > 1 {
		t.Fatalf("after the recovery scan: %d of %d pages resident", res, total)
	}
}
