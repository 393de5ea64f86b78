package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
)

// One batch transaction: LOAD DATA, the checks, the ledger row, COMMIT, and
// what a failure before COMMIT means (rollback, connection kept or dropped).

// attempt runs one batch transaction. unknown reports that COMMIT may have
// been executed although an error came back. On a known failure the
// transaction is rolled back and, if the connection may be broken, dropped.
// On success (or an unknown outcome) s.verdicts says what became of each job
// and s.ids the ids of the loaded ones (first is the first upload's, for the
// ledger); settle turns that into the jobs' results once the commit is known.
func (s *Store) attempt(id uint64, jobs []*Job, now time.Time) (first uint64, err error, unknown bool) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	s.busy()
	tx, err := s.conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, s.abort(nil, fmt.Errorf("store: begin: %w", err)), false
	}
	s.loadedFirst, s.loadedN = 0, 0
	if err := s.judgeKeys(ctx, tx, jobs); err != nil {
		return 0, s.abort(tx, err), false
	}
	n := uint64(len(s.load))
	if n > 0 {
		if first, err = s.loadRows(ctx, tx, now); err != nil {
			return 0, s.abort(tx, err), false
		}
		k := first
		for i, j := range jobs {
			if j.Table == nil && s.verdicts[i] == vLoad {
				s.ids[i] = k
				k++
			}
		}
	}
	if err := s.loadTables(ctx, tx, jobs, now); err != nil {
		return 0, s.abort(tx, err), false
	}
	if err := s.insertKeys(ctx, tx, jobs); err != nil {
		return 0, s.abort(tx, err), false
	}
	if h := s.hooks.afterLoad; h != nil {
		if err := h(s); err != nil {
			return 0, s.abort(tx, fmt.Errorf("store: after load (test hook): %w", err)), false
		}
	}
	s.busy()
	if _, err := tx.ExecContext(ctx, s.ledgerSQL(id, first, n, jobs)); err != nil {
		return 0, s.abort(tx, fmt.Errorf("store: ledger insert: %w", err)), false
	}
	if h := s.hooks.beforeCommit; h != nil {
		h(s)
	}
	// From here on the outcome of any error is unknown: COMMIT may have run.
	s.busy()
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("store: commit: %w", err), true
	}
	if h := s.hooks.afterCommit; h != nil {
		if err := h(s); err != nil {
			return 0, fmt.Errorf("store: commit (test hook): %w", err), true
		}
	}
	return first, nil, false
}

// loadRows streams s.load into the table and checks what the server did
// with it: every row inserted, no warning, ids first..first+n-1.
func (s *Store) loadRows(ctx context.Context, tx *sql.Tx, now time.Time) (first uint64, err error) {
	n := uint64(len(s.load))
	s.rd.reset(s.load, now)
	s.busy()
	res, err := tx.ExecContext(ctx, s.loadSQL)
	s.rd.reset(nil, time.Time{})
	if err != nil {
		return 0, fmt.Errorf("store: load batch: %w", err)
	}
	affected, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: load batch: rows affected: %w", err)
	}
	// The OK packet of LOAD DATA carries no insert id; LAST_INSERT_ID() has the
	// first one. Neither it nor @@warning_count resets the warning list (only
	// statements that use tables do), so both are read in one round trip.
	var warnings int
	s.busy()
	if err := tx.QueryRowContext(ctx, "SELECT LAST_INSERT_ID(), @@warning_count").Scan(&first, &warnings); err != nil {
		return 0, fmt.Errorf("store: load batch: insert id: %w", err)
	}
	if first != 0 {
		s.loadedFirst, s.loadedN = first, uint64(affected)
	}
	if warnings != 0 {
		return 0, loadWarning(ctx, tx, warnings)
	}
	if uint64(affected) != n || first == 0 {
		return 0, fmt.Errorf("store: load batch: %d rows affected, first id %d, want %d rows", affected, first, n)
	}
	var maxID uint64
	s.busy()
	if err := tx.QueryRowContext(ctx, "SELECT MAX(id) FROM uploads").Scan(&maxID); err != nil {
		return 0, fmt.Errorf("store: check ids: %w", err)
	}
	if maxID != first+n-1 {
		return 0, fmt.Errorf("store: check ids: max id %d, want %d (first %d + %d rows): ids not contiguous", maxID, first+n-1, first, n)
	}
	return first, nil
}

// ledgerSQL is the batch's ledger row: its id, its rows, and the range of
// spool seqs it replays (the replayer submits in seq order and waits for
// each window, so the replayed jobs of one batch span a range of which every
// seq not in the batch was committed before).
func (s *Store) ledgerSQL(id, first, n uint64, jobs []*Job) string {
	lo, hi := spoolRange(jobs)
	b := append(s.sqlBuf[:0], "INSERT INTO upsink_batches (batch_id, first_id, row_count, committed_at, spool_id, spool_first, spool_last) VALUES ("...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, first, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, n, 10)
	b = append(b, ",NOW(6),"...)
	if lo == 0 {
		b = append(b, "NULL,NULL,NULL)"...)
	} else {
		b = append(b, '\'')
		b = append(b, s.cfg.SpoolID...) // 32 hex digits, checked at Open
		b = append(b, "',"...)
		b = strconv.AppendUint(b, lo, 10)
		b = append(b, ',')
		b = strconv.AppendUint(b, hi, 10)
		b = append(b, ')')
	}
	s.sqlBuf = b
	return string(b)
}

// loadWarning builds the error for a LOAD DATA that raised warnings: with
// LOCAL the server cannot stop the transfer, so it treats data errors
// (truncation, bad values) as warnings even in strict mode. Any warning fails
// the batch.
func loadWarning(ctx context.Context, tx *sql.Tx, count int) error {
	var level, msg string
	var code int
	if err := tx.QueryRowContext(ctx, "SHOW WARNINGS LIMIT 1").Scan(&level, &code, &msg); err != nil {
		return fmt.Errorf("store: load batch: %d warnings (show warnings: %w)", count, err)
	}
	return &dataError{fmt.Sprintf("%d warnings, first: %s %d: %s", count, level, code, msg)}
}

// abort rolls tx back after a failure that happened before COMMIT was sent and
// drops the connection unless the server still answers. It returns cause.
// On a non-transactional engine the rollback leaves the loaded rows in place,
// so abort deletes them (they were never acknowledged; left behind they would
// become duplicates when the client retries), at once or, if the connection is
// gone, right after the next connect.
func (s *Store) abort(tx *sql.Tx, cause error) error {
	// The connection still works if the server answered: the ROLLBACK, or
	// (no transaction yet) the failed statement with an error of its own.
	var me *mysql.MySQLError
	alive := errors.As(cause, &me)
	if tx != nil {
		s.busy()
		alive = tx.Rollback() == nil
	}
	if !alive {
		s.dropConn()
	}
	if s.nonTx && s.loadedN > 0 {
		if s.orphanN > 0 {
			s.log.Error("store: rows of a failed batch left in a non-transactional table", "first_id", s.orphanFirst, "rows", s.orphanN)
		}
		s.orphanFirst, s.orphanN = s.loadedFirst, s.loadedN
		s.deleteOrphans()
	}
	s.loadedFirst, s.loadedN = 0, 0
	return cause
}
