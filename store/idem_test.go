package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func keyed(tag uint64, stream, key, body string) *Job {
	j := &Job{Tag: tag, Stream: []byte(stream), RemoteAddr: []byte("127.0.0.1:1"), ContentType: []byte("t"),
		ReceivedAt: time.Now(), Body: []byte(body), IdemKey: []byte(key)}
	j.Fingerprint = sha256.Sum256(j.Body)
	return j
}

// submitBatch submits jobs while the writer is held, so they form one batch
// (if they fit), and waits for all of them.
func submitBatch(t *testing.T, s *Store, g *warmGate, jobs []*Job) {
	t.Helper()
	mustSubmit(t, s, g.warm)
	<-g.entered
	for _, j := range jobs {
		mustSubmit(t, s, j)
	}
	close(g.release)
	g.col.waitFor(t, len(jobs))
}

// TestBisectRefusesOnlyTheBadRow: one row the database refuses (a body too
// long for the column: a warning under LOAD DATA LOCAL) among 100 in one
// batch; only it is refused, the 99 others are committed once each.
func TestBisectRefusesOnlyTheBadRow(t *testing.T) {
	for _, bad := range []int{0, 37, 99} {
		t.Run(fmt.Sprint(bad), func(t *testing.T) {
			g := newWarmGate()
			s, _, db := openTest(t, Config{Writers: 1, OnDone: g.onDone}, nil)
			if _, err := db.Exec("ALTER TABLE uploads MODIFY body VARBINARY(100) NOT NULL"); err != nil {
				t.Fatal(err)
			}
			jobs := make([]*Job, 100)
			for i := range jobs {
				body := fmt.Sprintf("job %d", i)
				if i == bad {
					body = strings.Repeat("x", 101)
				}
				jobs[i] = keyed(uint64(i), "b", "", body)
			}
			submitBatch(t, s, g, jobs)
			for i, j := range jobs {
				if i == bad {
					var re *RejectedError
					if !errors.As(j.Err, &re) || j.ID != 0 {
						t.Fatalf("bad job: id %d err %v, want RejectedError", j.ID, j.Err)
					}
					continue
				}
				if j.Err != nil {
					t.Fatalf("job %d: %v", i, j.Err)
				}
				if r := readRow(t, db, j.ID); !bytes.Equal(r.body, j.Body) {
					t.Fatalf("job %d: row %d has %q", i, j.ID, r.body)
				}
			}
			if got := countRows(t, db, "uploads"); got != 100 { // 99 + the warm-up
				t.Fatalf("%d rows, want 99 + warm-up", got)
			}
			st := s.Stats()
			if st.Rejected != 1 || st.Split == 0 || st.Split > 2*7 {
				t.Fatalf("stats %+v: want 1 rejected, 1..14 splits", st)
			}
		})
	}
}

// TestIdempotencyKeys: a key's first upload is stored; the same key with the
// same body gets the first answer and no row, across batches and within one;
// with another body ErrKeyMismatch; keys are per stream; an expired key is
// overwritten.
func TestIdempotencyKeys(t *testing.T) {
	g := newWarmGate()
	s, _, db := openTest(t, Config{Writers: 1, OnDone: g.onDone, SpoolID: strings.Repeat("ab", 16)}, nil)
	col := g.col
	first := []*Job{
		keyed(1, "s", "k1", "body one"),
		keyed(2, "s", "k2", "body two"),
		keyed(3, "s", "k1", "body one"), // same key, same body, same batch
		keyed(4, "s", "k2", "other"),    // same key, other body, same batch
		keyed(5, "t", "k1", "body one"), // another stream: another key
		keyed(6, "s", "", "no key"),
		keyed(7, "s", "sp", "spooled"), // replayed from the spool
	}
	first[6].SpoolSeq = 42
	submitBatch(t, s, g, first)
	want := func(j *Job, err error, prior Answer) {
		t.Helper()
		if j.Err != err || j.Prior != prior {
			t.Fatalf("job %d: err %v prior %+v, want %v %+v", j.Tag, j.Err, j.Prior, err, prior)
		}
	}
	want(first[0], nil, Answer{})
	want(first[1], nil, Answer{})
	want(first[2], nil, Answer{Status: 201, ID: first[0].ID})
	want(first[3], ErrKeyMismatch, Answer{})
	want(first[4], nil, Answer{})
	want(first[5], nil, Answer{})
	want(first[6], nil, Answer{})
	if got := countRows(t, db, "uploads"); got != 6 { // 5 + warm-up
		t.Fatalf("%d rows, want 5 + warm-up", got)
	}

	// A later batch: retries.
	again := []*Job{
		keyed(11, "s", "k1", "body one"),
		keyed(12, "s", "k2", "different"),
		keyed(13, "s", "sp", "spooled"),
		keyed(14, "t", "k1", "body one"),
	}
	for _, j := range again {
		mustSubmit(t, s, j)
	}
	col.waitFor(t, len(first)+len(again))
	want(again[0], nil, Answer{Status: 201, ID: first[0].ID})
	if again[0].ID != first[0].ID {
		t.Fatalf("retry id %d, want %d", again[0].ID, first[0].ID)
	}
	want(again[1], ErrKeyMismatch, Answer{})
	want(again[2], nil, Answer{Status: 202, SpoolSeq: 42})
	want(again[3], nil, Answer{Status: 201, ID: first[4].ID})
	if got := countRows(t, db, "uploads"); got != 6 {
		t.Fatalf("%d rows after retries, want still 6", got)
	}
	var lo, hi uint64
	if err := db.QueryRow("SELECT spool_first, spool_last FROM upsink_batches WHERE spool_id = ? ORDER BY batch_id LIMIT 1", strings.Repeat("ab", 16)).Scan(&lo, &hi); err != nil || lo != 42 || hi != 42 {
		t.Fatalf("ledger spool range %d..%d (%v), want 42..42", lo, hi, err)
	}

	// An expired key counts as absent.
	if _, err := db.Exec("UPDATE upsink_idem SET expires_at = NOW(6) - INTERVAL 1 SECOND WHERE idem_key = 'k1' AND stream = 's'"); err != nil {
		t.Fatal(err)
	}
	late := keyed(21, "s", "k1", "new body")
	mustSubmit(t, s, late)
	col.waitFor(t, len(first)+len(again)+1)
	want(late, nil, Answer{})
	if late.ID == first[0].ID || late.ID == 0 {
		t.Fatalf("expired key: id %d", late.ID)
	}
	st := s.Stats()
	if st.Prior != 4 {
		t.Fatalf("Prior %d, want 4", st.Prior)
	}
}

// TestPrune: expired keys and old ledger rows go in bounded batches when the
// writer is idle.
func TestPrune(t *testing.T) {
	// Restored after the store is closed (cleanups run last-in first-out):
	// its writer reads them.
	e, b := pruneEvery, pruneBatch
	t.Cleanup(func() { pruneEvery, pruneBatch = e, b })
	pruneEvery, pruneBatch = 0, 3
	s, col, db := openTest(t, Config{IdempotencyTTL: time.Hour}, nil)
	for i := range 7 {
		mustSubmit(t, s, keyed(uint64(i), "p", fmt.Sprint("k", i), "b"))
		col.waitFor(t, i+1)
	}
	if _, err := db.Exec("UPDATE upsink_idem SET expires_at = NOW(6) - INTERVAL 1 SECOND"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE upsink_batches SET committed_at = NOW(6) - INTERVAL 2 HOUR"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for countRows(t, db, "upsink_idem")+countRows(t, db, "upsink_batches") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not pruned: %d keys, %d ledger rows", countRows(t, db, "upsink_idem"), countRows(t, db, "upsink_batches"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := s.Stats().Pruned; got != 14 {
		t.Fatalf("Pruned %d, want 14", got)
	}
	if got := countRows(t, db, "uploads"); got != 7 {
		t.Fatalf("%d uploads, pruning must not touch them", got)
	}
}
