package durable

import (
	"crypto/sha256"
	"errors"
	"io"
	"sync"

	"upsink/spool"
	"upsink/store"
)

// keyTable is what this instance knows of Idempotency-Keys that MariaDB does
// not (yet): keys of uploads in progress here (a second upload with one of
// them is refused with 409 until the first is answered), and keys of
// uploads waiting in the spool (a retry is answered from here with the first
// 202; another body, 422). Once a spooled upload is replayed its key is in
// MariaDB and leaves the table.
//
// Memory: an entry is a map slot plus the key's string (stream, NUL, key: at
// most 64+1+255 bytes) and 48 bytes; in-progress entries are bounded by the
// requests in progress (one per connection), spooled ones by max (MaxKeys,
// default 16,384: at most ~6 MiB with 255-byte keys, ~2 MiB with UUIDs).
// A keyed upload that would be spooled past max is refused (503): its key
// could not be checked on a retry.
//
// Only keyed uploads touch the table; unkeyed ones never allocate here. Any
// goroutine (one mutex).
type keyTable struct {
	mu       sync.Mutex
	m        map[string]*keyEntry
	nspooled int // entries in state spooled, plus reservations
	max      int
}

type keyEntry struct {
	fp   [32]byte
	seq  uint64 // the spool seq of a spooled upload; 0 while in progress
	busy bool   // an upload with this key is in progress here
}

func (t *keyTable) init(max int) {
	t.m = make(map[string]*keyEntry)
	t.max = max
}

// keyID is the table's key: the key's scope, NUL, the key. The scope is
// the upload's stream, or for rows of a declared table "/" and its name (no
// stream name holds a "/" or a NUL).
func keyID(buf []byte, rows bool, stream, key []byte) []byte {
	buf = buf[:0]
	if rows {
		buf = append(buf, '/')
	}
	buf = append(buf, stream...)
	buf = append(buf, 0)
	return append(buf, key...)
}

// begin registers u's key as in progress, or says why not: ErrKeyInProgress,
// ErrKeyMismatch (a spooled upload has the key with another body), or the
// spooled upload's answer (Status 202) for a retry with the same body.
func (t *keyTable) begin(u *Upload) (store.Answer, error) {
	var buf [1 + 64 + 1 + 255]byte
	id := keyID(buf[:0], u.Job.Table != nil, u.Job.Stream, u.Job.IdemKey)
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[string(id)]
	switch {
	case e == nil:
		t.m[string(id)] = &keyEntry{fp: u.Job.Fingerprint, busy: true}
		return store.Answer{}, nil
	case e.busy:
		return store.Answer{}, ErrKeyInProgress
	case e.fp != u.Job.Fingerprint:
		return store.Answer{}, ErrKeyMismatch
	default:
		return store.Answer{Status: 202, SpoolSeq: e.seq}, nil
	}
}

// end clears u's in-progress mark and drops its entry.
func (t *keyTable) end(u *Upload) { t.finish(u, 0) }

// spooled records that u was appended at seq with a reservation: its entry
// stays, answering retries, and its in-progress mark ends.
func (t *keyTable) spooled(u *Upload, seq uint64) { t.finish(u, seq) }

// finish ends u's in-progress mark (a no-op for an upload without one):
// with seq 0 its entry goes, else it stays as the spooled upload's.
func (t *keyTable) finish(u *Upload, seq uint64) {
	if !u.keyed {
		return
	}
	u.keyed = false
	var buf [1 + 64 + 1 + 255]byte
	id := keyID(buf[:0], u.Job.Table != nil, u.Job.Stream, u.Job.IdemKey)
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[string(id)]
	switch {
	case e == nil || !e.busy:
	case seq == 0:
		delete(t.m, string(id))
	default:
		e.seq, e.busy = seq, false
	}
}

// reserve makes room for one more spooled key (false: the table is full).
func (t *keyTable) reserve() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.nspooled >= t.max {
		return false
	}
	t.nspooled++
	return true
}

func (t *keyTable) unreserve() {
	t.mu.Lock()
	t.nspooled--
	t.mu.Unlock()
}

// forget drops the entry of a spooled key once its record is in MariaDB
// (replayed or found there), if it is still that record's.
func (t *keyTable) forget(rows bool, stream, key []byte, seq uint64) {
	var buf [1 + 64 + 1 + 255]byte
	id := keyID(buf[:0], rows, stream, key)
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.m[string(id)]; e != nil && e.seq == seq && !e.busy {
		delete(t.m, string(id))
		t.nspooled--
	}
}

// load reads the keys of every record in the spool (at Open, before any
// upload is taken). Past max, keys are not remembered (logged by the
// caller's count): their retries are checked by MariaDB after the replay.
func (t *keyTable) load(sp *spool.Spool) error {
	rd := sp.NewReader(0)
	defer rd.Close()
	var buf [1 + 64 + 1 + 255]byte
	for {
		r, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(r.IdempotencyKey) == 0 || t.nspooled >= t.max {
			continue
		}
		id := keyID(buf[:0], r.Flags&spool.FlagRows != 0, r.Stream, r.IdempotencyKey)
		if t.m[string(id)] == nil {
			t.nspooled++
		}
		t.m[string(id)] = &keyEntry{seq: r.Seq, fp: sha256.Sum256(r.Body)}
	}
}

// size is the number of keys in the table (tests, stats).
func (t *keyTable) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
