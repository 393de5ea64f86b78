package store

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// TestWritersConcurrent: several writers commit uploads submitted from
// several goroutines; every job is committed once, with its own id and its
// own body, and the writers together hold one connection each.
func TestWritersConcurrent(t *testing.T) {
	const writers, submitters, each = 4, 8, 250
	s, col, db := openTest(t, Config{Writers: writers, QueueLen: submitters * each}, nil)
	if got := len(s.connectionIDs()); got != writers {
		t.Fatalf("%d writers, want %d", got, writers)
	}
	jobs := make([]*Job, submitters*each)
	var wg sync.WaitGroup
	for g := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				k := g*each + i
				jobs[k] = &Job{Tag: uint64(k), Stream: []byte("w"), Body: []byte(fmt.Sprintf("job %d", k))}
				if err := s.Submit(jobs[k]); err != nil {
					t.Errorf("submit %d: %v", k, err)
				}
			}
		}()
	}
	wg.Wait()
	col.waitFor(t, len(jobs))
	seen := make(map[uint64]bool, len(jobs))
	for k, j := range jobs {
		if j.Err != nil || j.ID == 0 || seen[j.ID] {
			t.Fatalf("job %d: id %d err %v (seen before: %v)", k, j.ID, j.Err, seen[j.ID])
		}
		seen[j.ID] = true
	}
	if got := countRows(t, db, "uploads"); got != len(jobs) {
		t.Fatalf("%d rows, want %d", got, len(jobs))
	}
	rows, err := db.Query("SELECT id, body FROM uploads")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	byID := make(map[uint64]*Job, len(jobs))
	for _, j := range jobs {
		byID[j.ID] = j
	}
	for rows.Next() {
		var id uint64
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			t.Fatal(err)
		}
		if j := byID[id]; j == nil || !bytes.Equal(j.Body, body) {
			t.Fatalf("row %d: body %q does not belong to its job", id, body)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestIDsAboveExistingRows: ids continue above rows written before (by
// auto-increment), and a row written by someone else into the writer's
// block costs a retry with a new block, not the upload.
func TestIDsAboveExistingRows(t *testing.T) {
	s, col, db := openTest(t, Config{Writers: 1}, nil,
		createUploads,
		"INSERT INTO uploads (stream, received_at, remote_addr, content_type, body) VALUES ('old', NOW(), '', '', 'a'), ('old', NOW(), '', '', 'b')")
	var maxOld uint64
	if err := db.QueryRow("SELECT MAX(id) FROM uploads").Scan(&maxOld); err != nil {
		t.Fatal(err)
	}
	j1 := &Job{Tag: 1, Stream: []byte("new"), Body: []byte("one")}
	mustSubmit(t, s, j1)
	col.waitFor(t, 1)
	if j1.Err != nil || j1.ID <= maxOld {
		t.Fatalf("job 1: id %d err %v, want an id above %d", j1.ID, j1.Err, maxOld)
	}
	// The writer's next id, taken by an insert from outside upsink.
	if _, err := db.Exec("INSERT INTO uploads (id, stream, received_at, remote_addr, content_type, body) VALUES (?, 'intruder', NOW(), '', '', 'x')", j1.ID+1); err != nil {
		t.Fatal(err)
	}
	j2 := &Job{Tag: 2, Stream: []byte("new"), Body: []byte("two")}
	mustSubmit(t, s, j2)
	col.waitFor(t, 2)
	if j2.Err != nil || j2.ID <= j1.ID+1 {
		t.Fatalf("job 2: id %d err %v, want committed above %d", j2.ID, j2.Err, j1.ID+1)
	}
	if r := readRow(t, db, j2.ID); string(r.body) != "two" {
		t.Fatalf("row %d: %q", j2.ID, r.body)
	}
	if got := countRows(t, db, "uploads"); got != 5 {
		t.Fatalf("%d rows, want 5", got)
	}
}

// TestCertFailureRetried: a certification failure (1213, as Galera reports
// it) is retried beyond the one retry of other known failures; past
// maxCertRetries the batch fails.
func TestCertFailureRetried(t *testing.T) {
	for _, tc := range []struct {
		failures int32
		wantErr  error
	}{
		{1 + maxCertRetries - 1, nil},
		{1 + maxCertRetries, ErrUnavailable},
	} {
		t.Run(fmt.Sprint(tc.failures), func(t *testing.T) {
			var left atomic.Int32
			hooks := &testHooks{afterLoad: func(*writer) error {
				if left.Add(-1) >= 0 {
					return &mysql.MySQLError{Number: 1213, Message: "Deadlock: wsrep aborted transaction"}
				}
				return nil
			}}
			s, col, db := openTest(t, Config{Writers: 1}, hooks)
			left.Store(tc.failures)
			j := &Job{Tag: 1, Stream: []byte("c"), Body: []byte("certified")}
			mustSubmit(t, s, j)
			col.waitFor(t, 1)
			if j.Err != tc.wantErr {
				t.Fatalf("err %v, want %v", j.Err, tc.wantErr)
			}
			want := 1
			if tc.wantErr != nil {
				want = 0
			}
			if got := countRows(t, db, "uploads"); got != want {
				t.Fatalf("%d rows, want %d", got, want)
			}
		})
	}
}

// TestCollectKeepsSeqsConsecutive: a batch's replayed records have
// consecutive spool seqs (its ledger range must hold no seq of another
// writer's batch); one that does not follow waits for the next batch.
func TestCollectKeepsSeqsConsecutive(t *testing.T) {
	s := &Store{cfg: Config{MaxBatchRows: 100, MaxBatchBytes: 1 << 20}, queue: make(chan *Job, 16)}
	w := &writer{Store: s}
	job := func(seq uint64) *Job { return &Job{Tag: seq, SpoolSeq: seq, Body: []byte("x")} }
	for _, j := range []*Job{job(2), {Tag: 100, Body: []byte("live")}, job(3), job(5), job(6), job(8)} {
		s.queue <- j
	}
	var got [][]uint64
	first := job(1)
	for first != nil {
		w.collect(first)
		var tags []uint64
		for _, j := range w.batch {
			tags = append(tags, j.Tag)
		}
		got = append(got, tags)
		first, w.carry = w.carry, nil
	}
	want := [][]uint64{{1, 2, 100, 3}, {5, 6}, {8}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
}

// TestCollectGathers: after a batch of n jobs the next batch waits (up to
// gatherMax) until n jobs are there, so that the clients just answered
// share one commit instead of splitting into two half batches; it stops
// waiting at gatherMax, and never waits without a connection.
func TestCollectGathers(t *testing.T) {
	old := gatherMax
	t.Cleanup(func() { gatherMax = old })
	newW := func(conn *sql.Conn) *writer {
		s := &Store{cfg: Config{MaxBatchRows: 100, MaxBatchBytes: 1 << 20}, queue: make(chan *Job, 16)}
		w := &writer{Store: s, conn: conn, gather: time.NewTimer(time.Hour), lastBatch: 5}
		w.gather.Stop()
		return w
	}
	job := func(tag uint64) *Job { return &Job{Tag: tag, Body: []byte("x")} }

	t.Run("waits for the previous batch's count", func(t *testing.T) {
		gatherMax = time.Hour // a missing job hangs the test instead of passing it
		w := newW(&sql.Conn{})
		go func() {
			for tag := uint64(2); tag <= 5; tag++ {
				// One at a time, each after collect took the last: a
				// collect that did not wait would return with fewer.
				for len(w.queue) > 0 {
					runtime.Gosched()
				}
				w.queue <- job(tag)
			}
		}()
		w.collect(job(1))
		if len(w.batch) != 5 {
			t.Fatalf("batch of %d, want 5", len(w.batch))
		}
	})
	t.Run("stops at gatherMax", func(t *testing.T) {
		gatherMax = 5 * time.Millisecond
		w := newW(&sql.Conn{})
		w.queue <- job(2)
		w.collect(job(1))
		if len(w.batch) != 2 {
			t.Fatalf("batch of %d, want 2", len(w.batch))
		}
	})
	t.Run("no wait without a connection", func(t *testing.T) {
		gatherMax = time.Hour
		w := newW(nil)
		w.collect(job(1))
		if len(w.batch) != 1 {
			t.Fatalf("batch of %d, want 1", len(w.batch))
		}
	})
}

// TestWriterWithoutConnectionLeavesJobs: a writer that cannot connect (its
// node is down) leaves the queue to the writer that can, instead of taking
// jobs only to fail them.
func TestWriterWithoutConnectionLeavesJobs(t *testing.T) {
	hooks := &testHooks{connect: func(w *writer) error {
		if w.num == 0 {
			return errors.New("node down for writer 0")
		}
		return nil
	}}
	s, col, db := openTestWaitReady(t, Config{Writers: 2}, hooks)
	const n = 200
	jobs := make([]*Job, n)
	for i := range jobs {
		jobs[i] = &Job{Tag: uint64(i), Stream: []byte("w"), Body: []byte(fmt.Sprint("job ", i))}
		mustSubmit(t, s, jobs[i])
		if i%20 == 19 {
			col.waitFor(t, i+1) // in waves, so that both writers wait on the queue
		}
	}
	col.waitFor(t, n)
	for _, j := range jobs {
		if j.Err != nil {
			t.Fatalf("job %d: %v", j.Tag, j.Err)
		}
	}
	if got := countRows(t, db, "uploads"); got != n {
		t.Fatalf("%d rows, want %d", got, n)
	}
}

// TestIdleMemoryPerWriter (run without -race by make test, whose ALLOCTESTS
// pattern names it): what one more writer holds once connected and idle
// after a batch (its two batch slices, its readers, the driver's buffers and
// session): measured as the live heap with 1 and with 9 writers, and bounded
// per writer (ARCHITECTURE.md, "Who owns which memory").
func TestIdleMemoryPerWriter(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's own allocations would be counted")
	}
	// Each writer has written the largest batch that goes as an INSERT
	// (insertMaxBytes of bodies): its statement buffer and the driver's
	// packet buffer stay at about twice that (hex) for the next one.
	const perWriter = 384 << 10
	heap := func(writers int) uint64 {
		s, col, _ := openTest(t, Config{Writers: writers}, nil)
		body := bytes.Repeat([]byte("x"), insertMaxBytes/4)
		for i := range writers * 8 {
			mustSubmit(t, s, &Job{Tag: uint64(i), Stream: []byte("m"), Body: body})
		}
		col.waitFor(t, writers*8)
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		live := ms.HeapAlloc
		runtime.KeepAlive(s)
		s.Close()
		return live
	}
	one := heap(1)
	nine := heap(9)
	per := (int64(nine) - int64(one)) / 8
	t.Logf("live heap: 1 writer %d B, 9 writers %d B: %d B per writer", one, nine, per)
	if per > perWriter {
		t.Fatalf("%d B per writer, want at most %d", per, perWriter)
	}
}

// TestInsertAndLoadPaths: a batch goes as a queued INSERT of hex literals
// when its bodies are small, else by LOAD DATA LOCAL; either way every byte
// of every field arrives as it was sent, and a zero ReceivedAt is the
// batch's time.
func TestInsertAndLoadPaths(t *testing.T) {
	at := time.Date(2026, 12, 2, 3, 4, 5, 678901000, time.UTC)
	for _, load := range []bool{false, true} {
		t.Run(fmt.Sprint("load=", load), func(t *testing.T) {
			if load {
				forceLoad(t)
			}
			s, col, db := openTest(t, Config{Writers: 1}, nil)
			jobs := []*Job{
				{Tag: 1, Stream: []byte("s"), RemoteAddr: []byte("[::1]:9"), ContentType: []byte("a\tb\\N"), ReceivedAt: at, Body: allBytes()},
				{Tag: 2, Stream: []byte("t"), Body: nil},
				{Tag: 3, Stream: []byte("u"), ContentType: []byte("\\N"), ReceivedAt: at, Body: bytes.Repeat([]byte("\x00'\"\\\n"), 2000)},
			}
			before := time.Now().Add(-time.Second)
			for _, j := range jobs {
				mustSubmit(t, s, j)
			}
			col.waitFor(t, len(jobs))
			for _, j := range jobs {
				if j.Err != nil {
					t.Fatalf("job %d: %v", j.Tag, j.Err)
				}
				r := readRow(t, db, j.ID)
				if !bytes.Equal(r.stream, j.Stream) || !bytes.Equal(r.remote, j.RemoteAddr) || !bytes.Equal(r.ctype, j.ContentType) || !bytes.Equal(r.body, j.Body) {
					t.Fatalf("job %d: row %+v differs", j.Tag, r)
				}
				switch {
				case !j.ReceivedAt.IsZero() && !r.at.Equal(at):
					t.Fatalf("job %d: received_at %v, want %v", j.Tag, r.at, at)
				case j.ReceivedAt.IsZero() && (r.at.Before(before) || r.at.After(time.Now().Add(time.Second))):
					t.Fatalf("job %d: received_at %v, want the batch's time", j.Tag, r.at)
				}
			}
		})
	}
}

// TestCloseWithOutcomeUnknown: a batch whose COMMIT reply is lost while the
// database becomes unreachable cannot be resolved; Close (a process
// stopping) must still return, handing the job back with ErrOutcomeUnknown:
// not ErrUnavailable, which the durable layer would spool (a second copy of
// a row that is in fact committed).
func TestCloseWithOutcomeUnknown(t *testing.T) {
	var down atomic.Bool
	var attempts atomic.Int64
	hooks := &testHooks{
		afterCommit: func(w *writer) error {
			if !down.Load() {
				down.Store(true)
				return errors.New("reply lost")
			}
			return nil
		},
		connect: func(w *writer) error {
			if down.Load() {
				attempts.Add(1)
				return errors.New("database unreachable")
			}
			return nil
		},
	}
	s, col, db := openTestWaitReady(t, Config{}, hooks)
	j := &Job{Tag: 1, Stream: []byte("unknown"), Body: []byte("committed, reply lost")}
	mustSubmit(t, s, j)
	deadline := time.Now().Add(20 * time.Second)
	for attempts.Load() < 2 { // resolve is probing the unreachable database
		if time.Now().After(deadline) {
			t.Fatal("the writer never tried to resolve the batch")
		}
		time.Sleep(5 * time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return while the batch's outcome was unknown")
	}
	col.waitFor(t, 1)
	if !errors.Is(j.Err, ErrOutcomeUnknown) {
		t.Fatalf("job error %v, want ErrOutcomeUnknown", j.Err)
	}
	if got := countRows(t, db, "uploads"); got != 1 {
		t.Fatalf("%d rows: the batch did commit", got)
	}
}
