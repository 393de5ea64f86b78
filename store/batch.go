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
// On success (or an unknown outcome) w.verdicts says what became of each job
// and w.ids the ids of the loaded ones; settle turns that into the jobs'
// results once the commit is known. id is the batch id (ids.go).
func (w *writer) attempt(id uint64, jobs []*Job, now time.Time) (err error, unknown bool) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	w.loadedFirst, w.loadedN = 0, 0
	// Ids for every row the batch may load, before the transaction: a
	// block is taken in a transaction of its own (ids.go).
	var nUp uint64
	for _, j := range jobs {
		if j.Table == nil {
			nUp++
		}
	}
	var first uint64
	if nUp > 0 {
		if first, err = w.takeIDs(ctx, &w.uploadIDs, "uploads", "uploads", "id", nUp); err != nil {
			return w.abort(nil, err), false
		}
	}
	if err := w.reserveTables(ctx, jobs); err != nil {
		return w.abort(nil, err), false
	}
	w.busy()
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return w.abort(nil, fmt.Errorf("store: begin: %w", err)), false
	}
	if err := w.judgeKeys(ctx, tx, jobs); err != nil {
		return w.abort(tx, err), false
	}
	n := uint64(len(w.load))
	if n > 0 {
		if err = w.loadRows(ctx, tx, now, first); err != nil {
			return w.abort(tx, err), false
		}
		k := first
		for i, j := range jobs {
			if j.Table == nil && w.verdicts[i] == vLoad {
				w.ids[i] = k
				k++
			}
		}
	}
	if err := w.loadTables(ctx, tx, jobs, now); err != nil {
		return w.abort(tx, err), false
	}
	if err := w.insertKeys(ctx, tx, jobs); err != nil {
		return w.abort(tx, err), false
	}
	if h := w.hooks.afterLoad; h != nil {
		if err := h(w); err != nil {
			return w.abort(tx, fmt.Errorf("store: after load (test hook): %w", err)), false
		}
	}
	w.busy()
	if _, err := tx.ExecContext(ctx, w.ledgerSQL(id, first, n, jobs)); err != nil {
		return w.abort(tx, fmt.Errorf("store: ledger insert: %w", err)), false
	}
	if h := w.hooks.beforeCommit; h != nil {
		h(w)
	}
	// From here on the outcome of any error is unknown (COMMIT may have
	// run), except a certification failure, which Galera reports only for
	// a transaction it rolled back.
	w.busy()
	if err := tx.Commit(); err != nil {
		if isCertFailure(err) {
			return fmt.Errorf("store: commit: %w", err), false
		}
		return fmt.Errorf("store: commit: %w", err), true
	}
	if h := w.hooks.afterCommit; h != nil {
		if err := h(w); err != nil {
			return fmt.Errorf("store: commit (test hook): %w", err), true
		}
	}
	return nil, false
}

// isCertFailure reports a deadlock error (1213): on Galera, a transaction
// that lost certification against another node's ("Deadlock: wsrep aborted
// transaction"), also at COMMIT; on InnoDB a lock deadlock. Either way the
// server rolled the transaction back, and the batch may simply be retried.
func isCertFailure(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1213
}

// loadRows streams w.load into uploads with ids first.. and checks what
// the server did with it: every row inserted, no warning.
func (w *writer) loadRows(ctx context.Context, tx *sql.Tx, now time.Time, first uint64) error {
	n := uint64(len(w.load))
	w.rd.reset(w.load, now, first)
	w.busy()
	res, err := tx.ExecContext(ctx, w.loadSQL)
	w.rd.reset(nil, time.Time{}, 0)
	if err != nil {
		return fmt.Errorf("store: load batch: %w", err)
	}
	affected, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: load batch: rows affected: %w", err)
	}
	w.loadedFirst, w.loadedN = first, uint64(affected)
	return w.checkLoad(ctx, tx, "uploads", affected, n)
}

// checkLoad checks a LOAD's result: n rows inserted and no warning. The
// OK packet's warning count is not exposed by the driver, so it is read
// (@@warning_count does not reset the warning list).
func (w *writer) checkLoad(ctx context.Context, tx *sql.Tx, table string, affected int64, n uint64) error {
	var warnings int
	w.busy()
	if err := tx.QueryRowContext(ctx, "SELECT @@warning_count").Scan(&warnings); err != nil {
		return fmt.Errorf("store: load into %s: warnings: %w", table, err)
	}
	if warnings != 0 {
		err := loadWarning(ctx, tx, warnings)
		if errors.Is(err, errIDTaken) {
			w.dropBlocks()
		}
		return err
	}
	if uint64(affected) != n {
		return fmt.Errorf("store: load into %s: %d rows affected, want %d", table, affected, n)
	}
	return nil
}

// ledgerSQL is the batch's ledger row: its id, its rows, and the range of
// spool seqs it replays (the replayer submits in seq order and waits for
// each window, so the replayed jobs of one batch span a range of which every
// seq not in the batch was committed before).
func (w *writer) ledgerSQL(id, first, n uint64, jobs []*Job) string {
	lo, hi := spoolRange(jobs)
	b := append(w.sqlBuf[:0], "INSERT INTO upsink_batches (batch_id, first_id, row_count, committed_at, spool_id, spool_first, spool_last) VALUES ("...)
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
		b = append(b, w.cfg.SpoolID...) // 32 hex digits, checked at Open
		b = append(b, "',"...)
		b = strconv.AppendUint(b, lo, 10)
		b = append(b, ',')
		b = strconv.AppendUint(b, hi, 10)
		b = append(b, ')')
	}
	w.sqlBuf = b
	return string(b)
}

// loadWarning builds the error for a LOAD DATA that raised warnings: with
// LOCAL the server cannot stop the transfer, so it treats data errors
// (truncation, bad values) as warnings even in strict mode. Any warning fails
// the batch.
//
// A duplicate-key warning (1062) is not the data's fault: an id of the block
// was taken by a row written outside upsink. It is errIDTaken; the writer
// drops its blocks and the retry takes new ones above every existing id.
func loadWarning(ctx context.Context, tx *sql.Tx, count int) error {
	var level, msg string
	var code int
	if err := tx.QueryRowContext(ctx, "SHOW WARNINGS LIMIT 1").Scan(&level, &code, &msg); err != nil {
		return fmt.Errorf("store: load batch: %d warnings (show warnings: %w)", count, err)
	}
	if code == 1062 {
		return fmt.Errorf("%w: %s", errIDTaken, msg)
	}
	return &dataError{fmt.Sprintf("%d warnings, first: %s %d: %s", count, level, code, msg)}
}

// errIDTaken: a LOAD found one of its ids already used.
var errIDTaken = errors.New("store: load batch: an id of the block is already used")

// abort rolls tx back after a failure that happened before COMMIT was sent and
// drops the connection unless the server still answers. It returns cause.
// On a non-transactional engine the rollback leaves the loaded rows in place,
// so abort deletes them (they were never acknowledged; left behind they would
// become duplicates when the client retries), at once or, if the connection is
// gone, right after the next connect.
func (w *writer) abort(tx *sql.Tx, cause error) error {
	// The connection still works if the server answered: the ROLLBACK, or
	// (no transaction yet) the failed statement with an error of its own.
	var me *mysql.MySQLError
	alive := errors.As(cause, &me)
	if tx != nil {
		w.busy()
		alive = tx.Rollback() == nil
	}
	if !alive {
		w.dropConn()
	}
	if w.nonTx && w.loadedN > 0 {
		if w.orphanN > 0 {
			w.log.Error("store: rows of a failed batch left in a non-transactional table", "first_id", w.orphanFirst, "rows", w.orphanN)
		}
		w.orphanFirst, w.orphanN = w.loadedFirst, w.loadedN
		w.deleteOrphans()
	}
	w.loadedFirst, w.loadedN = 0, 0
	return cause
}
