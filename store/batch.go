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
func (s *Store) attempt(id uint64, jobs []*Job, now time.Time) (first uint64, err error, unknown bool) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	s.busy()
	tx, err := s.conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, s.abort(nil, fmt.Errorf("store: begin: %w", err)), false
	}
	n := uint64(len(jobs))
	s.loadedFirst, s.loadedN = 0, 0
	s.rd.reset(jobs, now)
	s.busy()
	res, err := tx.ExecContext(ctx, s.loadSQL)
	s.rd.reset(nil, time.Time{})
	if err != nil {
		return 0, s.abort(tx, fmt.Errorf("store: load batch: %w", err)), false
	}
	affected, err := res.RowsAffected()
	if err != nil {
		return 0, s.abort(tx, fmt.Errorf("store: load batch: rows affected: %w", err)), false
	}
	// The OK packet of LOAD DATA carries no insert id; LAST_INSERT_ID() has the
	// first one. Neither it nor @@warning_count resets the warning list (only
	// statements that use tables do), so both are read in one round trip.
	var warnings int
	s.busy()
	if err := tx.QueryRowContext(ctx, "SELECT LAST_INSERT_ID(), @@warning_count").Scan(&first, &warnings); err != nil {
		return 0, s.abort(tx, fmt.Errorf("store: load batch: insert id: %w", err)), false
	}
	if first != 0 {
		s.loadedFirst, s.loadedN = first, uint64(affected)
	}
	if uint64(affected) != n || first == 0 {
		return 0, s.abort(tx, fmt.Errorf("store: load batch: %d rows affected, first id %d, want %d rows", affected, first, n)), false
	}
	if warnings != 0 {
		return 0, s.abort(tx, loadWarning(ctx, tx, warnings)), false
	}
	var maxID uint64
	s.busy()
	if err := tx.QueryRowContext(ctx, "SELECT MAX(id) FROM uploads").Scan(&maxID); err != nil {
		return 0, s.abort(tx, fmt.Errorf("store: check ids: %w", err)), false
	}
	if maxID != first+n-1 {
		return 0, s.abort(tx, fmt.Errorf("store: check ids: max id %d, want %d (first %d + %d rows): ids not contiguous", maxID, first+n-1, first, n)), false
	}
	if h := s.hooks.afterLoad; h != nil {
		if err := h(s); err != nil {
			return 0, s.abort(tx, fmt.Errorf("store: after load (test hook): %w", err)), false
		}
	}
	b := append(s.sqlBuf[:0], "INSERT INTO upsink_batches (batch_id, first_id, row_count, committed_at) VALUES ("...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, first, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, n, 10)
	b = append(b, ",NOW(6))"...)
	s.sqlBuf = b
	s.busy()
	if _, err := tx.ExecContext(ctx, string(b)); err != nil {
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
	return fmt.Errorf("store: load batch: %d warnings, first: %s %d: %s", count, level, code, msg)
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
