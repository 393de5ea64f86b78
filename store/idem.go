package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Idempotency keys, inside the batch transaction. Before the LOAD, the
// writer locks the batch's keys in upsink_idem (SELECT ... FOR UPDATE): a key
// committed before with the same body fingerprint gives its job that first
// answer (Job.Prior) and no row; with another fingerprint, ErrKeyMismatch.
// The other keyed jobs are loaded, and their keys inserted with their answers
// after the LOAD, in the same transaction as their rows, so a key and its row
// can never disagree. A key whose expires_at has passed counts as absent and
// is replaced. Keys are pruned after Config.IdempotencyTTL (prune).
//
// A key's scope is its upload's stream, or for structured ingest "/" and
// its table's name (no stream name holds a "/"), in the stream column.
//
// Two jobs of one batch with one key (which the server's in-flight check
// makes rare: a spooled record and its retry, after a restart) are judged
// against each other like against a committed key: the later one takes the
// earlier one's answer, or ErrKeyMismatch.

const createIdem = `CREATE TABLE IF NOT EXISTS upsink_idem (
  stream VARCHAR(80) CHARACTER SET ascii NOT NULL,
  idem_key VARBINARY(255) NOT NULL,
  fingerprint BINARY(32) NOT NULL,
  status SMALLINT UNSIGNED NOT NULL,
  upload_id BIGINT UNSIGNED NOT NULL,
  spool_seq BIGINT UNSIGNED NOT NULL,
  expires_at DATETIME(6) NOT NULL,
  PRIMARY KEY (stream, idem_key),
  KEY expires (expires_at))`

// verdict is what the current attempt does with one job.
type verdict uint8

const (
	vLoad     verdict = iota // loaded as a row
	vPrior                   // its key was committed with this body: answered from w.priors
	vMismatch                // its key was committed with another body
	vSameAs                  // its key is an earlier job's in this batch, same body: that job's answer (w.sameAs)
)

// judgeKeys sets w.verdicts (and w.priors, w.sameAs) for jobs and fills
// w.load with the jobs to load. It runs in the batch's transaction, before
// the LOAD.
func (w *writer) judgeKeys(ctx context.Context, jobs []*Job) error {
	w.verdicts = w.verdicts[:0]
	w.priors = w.priors[:0]
	w.sameAs = w.sameAs[:0]
	w.ids = w.ids[:0]
	w.load = w.load[:0]
	keyed := 0
	for range jobs {
		w.verdicts = append(w.verdicts, vLoad)
		w.priors = append(w.priors, Answer{})
		w.sameAs = append(w.sameAs, 0)
		w.ids = append(w.ids, 0)
	}
	for i, j := range jobs {
		if len(j.IdemKey) == 0 {
			continue
		}
		keyed++
		for k := 0; k < i; k++ {
			o := jobs[k]
			if len(o.IdemKey) > 0 && w.verdicts[k] == vLoad && bytes.Equal(o.IdemKey, j.IdemKey) && sameScope(o, j) {
				if o.Fingerprint == j.Fingerprint {
					w.verdicts[i], w.sameAs[i] = vSameAs, int32(k)
				} else {
					w.verdicts[i] = vMismatch
				}
				break
			}
		}
	}
	if err := w.skipReplayed(ctx, jobs); err != nil {
		return err
	}
	if keyed > 0 {
		if err := w.lockKeys(ctx, jobs); err != nil {
			return err
		}
	}
	for i, j := range jobs {
		if w.verdicts[i] == vLoad && j.Table == nil {
			w.load = append(w.load, j)
		}
	}
	return nil
}

// sameScope reports whether two jobs' keys share a scope.
func sameScope(a, b *Job) bool {
	if a.Table != nil || b.Table != nil {
		return a.Table == b.Table
	}
	return bytes.Equal(a.Stream, b.Stream)
}

// scopeIs reports whether j's key scope is the stream column's value s.
func scopeIs(j *Job, s []byte) bool {
	if j.Table != nil {
		return len(s) == len(j.Table.Name)+1 && s[0] == '/' && string(s[1:]) == j.Table.Name
	}
	return bytes.Equal(j.Stream, s)
}

// skipReplayed marks the replayed jobs whose seq a ledger row already holds
// (a replay that committed before a crash or a lost reply, then read again
// from the spool): they are answered without a row. Only this instance's
// writer writes its spool's ranges, so nothing needs locking.
func (w *writer) skipReplayed(ctx context.Context, jobs []*Job) error {
	lo, hi := spoolRange(jobs)
	if lo == 0 {
		return nil
	}
	b := append(w.sqlBuf[:0], "SELECT spool_first, spool_last FROM upsink_batches WHERE spool_id='"...)
	b = append(b, w.cfg.SpoolID...)
	b = append(b, "' AND spool_last >= "...)
	b = strconv.AppendUint(b, lo, 10)
	b = append(b, " AND spool_first <= "...)
	b = strconv.AppendUint(b, hi, 10)
	w.sqlBuf = b
	if err := w.flush(ctx); err != nil {
		return err
	}
	w.busy()
	rows, err := w.conn.QueryContext(ctx, string(b))
	if err != nil {
		return fmt.Errorf("store: read replayed ranges: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var first, last uint64
		if err := rows.Scan(&first, &last); err != nil {
			return fmt.Errorf("store: read replayed ranges: %w", err)
		}
		for i, j := range jobs {
			if j.SpoolSeq >= first && j.SpoolSeq <= last && w.verdicts[i] != vPrior {
				w.verdicts[i], w.priors[i] = vPrior, Answer{Status: 202, SpoolSeq: j.SpoolSeq}
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: read replayed ranges: %w", err)
	}
	return nil
}

// lockKeys reads (and locks) the batch's keys that are already committed.
// Keys and streams travel as hex literals: nothing user-supplied is ever
// quoted into SQL.
func (w *writer) lockKeys(ctx context.Context, jobs []*Job) error {
	b, n := w.appendKeyList(append(w.sqlBuf[:0], "SELECT stream, idem_key, fingerprint, status, upload_id, spool_seq, expires_at > NOW(6) FROM upsink_idem WHERE (stream, idem_key) IN ("...), jobs)
	b = append(b, ") FOR UPDATE"...)
	w.sqlBuf = b
	if n == 0 {
		return nil
	}
	if err := w.flush(ctx); err != nil {
		return err
	}
	w.busy()
	rows, err := w.conn.QueryContext(ctx, string(b))
	if err != nil {
		return fmt.Errorf("store: read idempotency keys: %w", err)
	}
	defer rows.Close()
	var stream, key, fp []byte
	var a Answer
	var live bool
	for rows.Next() {
		if err := rows.Scan(&stream, &key, &fp, &a.Status, &a.ID, &a.SpoolSeq, &live); err != nil {
			return fmt.Errorf("store: read idempotency keys: %w", err)
		}
		if !live {
			continue // expired, not yet pruned: absent, overwritten below
		}
		for i, j := range jobs {
			if w.verdicts[i] != vLoad || !bytes.Equal(j.IdemKey, key) || !scopeIs(j, stream) {
				continue
			}
			if bytes.Equal(j.Fingerprint[:], fp) {
				w.verdicts[i], w.priors[i] = vPrior, a
			} else {
				w.verdicts[i] = vMismatch
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: read idempotency keys: %w", err)
	}
	return nil
}

// appendKeyList appends "(X'stream',X'key'),…" for the keyed jobs the
// attempt loads, and how many.
func (w *writer) appendKeyList(b []byte, jobs []*Job) ([]byte, int) {
	n := 0
	for i, j := range jobs {
		if len(j.IdemKey) == 0 || w.verdicts[i] != vLoad {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = append(appendKey(b, j), ')')
		n++
	}
	return b, n
}

// appendKey appends "(X'stream',X'key'" — a job's key as the start of a
// row value, in hex literals.
func appendKey(b []byte, j *Job) []byte {
	b = append(b, "(X'"...)
	if j.Table != nil {
		b = append(b, "2f"...) // "/"
		b = hex.AppendEncode(b, []byte(j.Table.Name))
	} else {
		b = hex.AppendEncode(b, j.Stream)
	}
	b = append(b, "',X'"...)
	b = hex.AppendEncode(b, j.IdemKey)
	return append(b, '\'')
}

// insertKeys records the loaded keyed jobs' keys with their answers: 201 and
// the row's id, or, for a record replayed from the spool, the 202 its client
// got.
func (w *writer) insertKeys(ctx context.Context, jobs []*Job) error {
	// Expired keys of the batch go first (they count as absent); then a
	// plain INSERT: a live key that appeared since lockKeys read (possible
	// only on Galera, where FOR UPDATE locks one node: another instance
	// committed it through another node) fails it with a duplicate key
	// instead of being overwritten, and the batch is retried (errKeyRace).
	b, n := w.appendKeyList(append(w.sqlBuf[:0], "DELETE FROM upsink_idem WHERE (stream, idem_key) IN ("...), jobs)
	if n == 0 {
		return nil
	}
	b = append(b, ") AND expires_at < NOW(6);\nINSERT INTO upsink_idem (stream, idem_key, fingerprint, status, upload_id, spool_seq, expires_at) VALUES "...)
	ttl := strconv.FormatInt(int64(w.cfg.IdempotencyTTL/time.Second), 10)
	n = 0
	for i, j := range jobs {
		if len(j.IdemKey) == 0 || w.verdicts[i] != vLoad {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = append(appendKey(b, j), ",X'"...)
		b = hex.AppendEncode(b, j.Fingerprint[:])
		b = append(b, "',"...)
		if j.SpoolSeq > 0 {
			b = append(b, "202,0,"...)
			b = strconv.AppendUint(b, j.SpoolSeq, 10)
		} else {
			b = append(b, "201,"...)
			b = strconv.AppendUint(b, w.ids[i], 10)
			b = append(b, ",0"...)
		}
		b = append(b, ",NOW(6) + INTERVAL "...)
		b = append(b, ttl...)
		b = append(b, " SECOND)"...)
		n++
	}
	w.sqlBuf = b
	if _, err := w.exec(ctx, string(b)); err != nil {
		if cerr, ok := checkError(err); ok { // the last LOAD's check
			return cerr
		}
		var me *mysql.MySQLError
		if errors.As(err, &me) && me.Number == 1062 {
			return fmt.Errorf("%w: %w", errKeyRace, err)
		}
		return fmt.Errorf("store: insert idempotency keys: %w", err)
	}
	return nil
}

// errKeyRace: an Idempotency-Key of the batch was committed by another
// instance after the batch read its keys; retried like a certification
// failure (the retry finds the key and answers from it).
var errKeyRace = errors.New("store: idempotency key committed meanwhile by another instance")

// settle sets every job's result after its attempt committed.
func (w *writer) settle(jobs []*Job) {
	for i, j := range jobs {
		j.ID, j.Err, j.Prior = 0, nil, Answer{}
		switch w.verdicts[i] {
		case vLoad:
			j.ID = w.ids[i]
		case vPrior:
			j.Prior = w.priors[i]
			j.ID = j.Prior.ID
			w.prior.Add(1)
		case vMismatch:
			j.Err = ErrKeyMismatch
		}
	}
	for i, j := range jobs { // after the loop above: the earlier job's answer is known
		if w.verdicts[i] != vSameAs {
			continue
		}
		k := w.sameAs[i]
		o := jobs[k]
		switch {
		case w.verdicts[k] == vMismatch: // the committed key has another body than both
			j.Err = ErrKeyMismatch
			continue
		case w.verdicts[k] == vPrior:
			j.Prior = o.Prior
		case o.SpoolSeq > 0:
			j.Prior = Answer{Status: 202, SpoolSeq: o.SpoolSeq}
		default:
			j.Prior = Answer{Status: 201, ID: o.ID}
		}
		j.ID = j.Prior.ID
		w.prior.Add(1)
	}
}

// prune deletes, in bounded batches, idempotency keys past their expiry and
// ledger rows older than the TTL (the ledger is only read for batches in
// flight at a crash and for spool records replayed but not yet acknowledged,
// both far younger). Called by the idle writer; one batch of each per call.
func (w *writer) prune() {
	if w.conn == nil || time.Since(w.lastPrune) < pruneEvery {
		return
	}
	w.lastPrune = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	ttl := strconv.FormatInt(int64(w.cfg.IdempotencyTTL/time.Second), 10)
	for _, q := range [...]string{
		"DELETE FROM upsink_idem WHERE expires_at < NOW(6) LIMIT " + strconv.Itoa(pruneBatch),
		"DELETE FROM upsink_batches WHERE committed_at < NOW(6) - INTERVAL " + ttl + " SECOND LIMIT " + strconv.Itoa(pruneBatch),
	} {
		w.busy()
		res, err := w.conn.ExecContext(ctx, q)
		if err != nil {
			w.log.Warn("store: prune failed", "err", err)
			return
		}
		if n, err := res.RowsAffected(); err == nil && n > 0 {
			w.pruned.Add(uint64(n))
			if n == int64(pruneBatch) {
				w.lastPrune = time.Time{} // more to do: again at the next idle tick
			}
		}
	}
}

// Pruning: at most pruneBatch rows of each table per idle tick, at most
// every pruneEvery unless a tick found a full batch.
var (
	pruneEvery = 10 * time.Second
	pruneBatch = 1000
)

// spoolRange is the lowest and highest SpoolSeq of the replayed jobs among
// jobs (0, 0: none).
func spoolRange(jobs []*Job) (lo, hi uint64) {
	for _, j := range jobs {
		if j.SpoolSeq == 0 {
			continue
		}
		if lo == 0 || j.SpoolSeq < lo {
			lo = j.SpoolSeq
		}
		hi = max(hi, j.SpoolSeq)
	}
	return lo, hi
}

func validSpoolID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}
