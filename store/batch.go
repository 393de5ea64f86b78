package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"

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
//
// Round trips: statements that need no answer of their own ride in front of
// the next one as a multi-statement (w.pre): START TRANSACTION, a small
// batch's INSERT of uploads (insertMaxBytes) and each warning check
// (checkLoadSQL) go with the statement after them, and the last check, the
// ledger row and COMMIT go together. A small batch of uploads without keys
// is one round trip; a larger one two ("START TRANSACTION; LOAD ..." and
// "check; INSERT INTO upsink_batches ...; COMMIT"). It was six. On Galera
// every statement goes alone (see exec).
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
			return w.abort(err), false
		}
	}
	if err := w.reserveTables(ctx, jobs); err != nil {
		return w.abort(err), false
	}
	w.pre, w.txOpen = append(w.pre[:0], "START TRANSACTION"...), false
	if err := w.judgeKeys(ctx, jobs); err != nil {
		return w.abort(err), false
	}
	n := uint64(len(w.load))
	if n > 0 {
		if err = w.loadRows(ctx, now, first); err != nil {
			return w.abort(err), false
		}
		k := first
		for i, j := range jobs {
			if j.Table == nil && w.verdicts[i] == vLoad {
				w.ids[i] = k
				k++
			}
		}
	}
	if err := w.loadTables(ctx, jobs, now); err != nil {
		return w.abort(err), false
	}
	if err := w.insertKeys(ctx, jobs); err != nil {
		return w.abort(err), false
	}
	if h := w.hooks.afterLoad; h != nil {
		if err := h(w); err != nil {
			return w.abort(fmt.Errorf("store: after load (test hook): %w", err)), false
		}
	}
	if h := w.hooks.beforeCommit; h != nil {
		h(w)
	}
	// What is queued (a small batch's INSERT, the last check), the ledger
	// row and COMMIT, in one round trip. From here on the outcome of an
	// error is unknown (COMMIT may have run), except those only a statement
	// before COMMIT raises (failedBeforeCommit).
	if w.galera {
		// One statement per round trip on Galera (see exec).
		// No check is queued there (readWarnings read them already).
		if _, err := w.exec(ctx, w.ledgerSQL(id, first, n, jobs)); err != nil {
			return w.abort(fmt.Errorf("store: ledger insert: %w", err)), false
		}
		_, err = w.exec(ctx, "COMMIT")
	} else {
		_, err = w.exec(ctx, w.ledgerSQL(id, first, n, jobs)+";\nCOMMIT")
	}
	if err != nil {
		if cause, ok := failedBeforeCommit(err); ok {
			return w.abort(cause), false
		}
		return fmt.Errorf("store: ledger and commit: %w", err), true
	}
	w.txOpen = false
	if h := w.hooks.afterCommit; h != nil {
		if err := h(w); err != nil {
			return fmt.Errorf("store: commit (test hook): %w", err), true
		}
	}
	return nil, false
}

// exec runs q on the writer's connection after the statements waiting in
// w.pre, in one round trip (a multi-statement; the result is q's).
//
// On a Galera node every statement goes alone and a LOAD's warnings are
// read with SELECT @@warning_count: a transaction aborted there by a
// replicated one (a "brute force" abort) must fail the next statement with
// a deadlock, and inside a compound statement that error can be lost
// (measured: store.TestGaleraInstancesShareAKey saw a batch reported
// committed whose rows and ledger row were not there).
func (w *writer) exec(ctx context.Context, q string) (sql.Result, error) {
	if w.galera && len(w.pre) > 0 {
		if err := w.flush(ctx); err != nil {
			return nil, err
		}
	}
	if len(w.pre) > 0 {
		w.pre = append(append(w.pre, ";\n"...), q...)
		q = unsafe.String(unsafe.SliceData(w.pre), len(w.pre)) // the driver copies it into its packet before returning; w.pre is not touched until then
		w.txOpen = true
	}
	w.busy()
	res, err := w.conn.ExecContext(ctx, q)
	w.pre = w.pre[:0]
	return res, err
}

// later appends a statement to w.pre.
func (w *writer) later(stmt string) {
	if len(w.pre) > 0 {
		w.pre = append(w.pre, ";\n"...)
	}
	w.pre = append(w.pre, stmt...)
}

// flush sends the statements waiting in w.pre on their own (before a query,
// whose rows are read from the first result).
func (w *writer) flush(ctx context.Context) error {
	if len(w.pre) == 0 {
		return nil
	}
	q := string(w.pre)
	w.pre = w.pre[:0]
	w.txOpen = true
	w.busy()
	if _, err := w.conn.ExecContext(ctx, q); err != nil {
		if cerr, ok := checkError(err); ok {
			return cerr
		}
		return fmt.Errorf("store: %s: %w", firstWords(q), err)
	}
	return nil
}

func firstWords(q string) string {
	if len(q) > 40 {
		return q[:40] + "..."
	}
	return q
}

// failedBeforeCommit classifies an error of the last round trip, which
// carries COMMIT: errors the server sends only for a statement before it (a
// multi-statement stops at the first error) or for a transaction it rolled
// back mean nothing was committed. It returns the batch's error for them.
func failedBeforeCommit(err error) (error, bool) {
	if cerr, ok := checkError(err); ok {
		return cerr, true
	}
	if isCertFailure(err) {
		return fmt.Errorf("store: commit: %w", err), true
	}
	if de, ok := asDataError(err); ok {
		return de, true // a row the queued INSERT refused
	}
	if dup := idTaken(err); dup != nil {
		return dup, true
	}
	return nil, false
}

// idTaken maps a duplicate key (1062) from the queued INSERT of uploads to
// errIDTaken (an id of the block was taken by a row written outside
// upsink: the retry takes new blocks); nil for other errors.
func idTaken(err error) error {
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == 1062 {
		return fmt.Errorf("%w: %w", errIDTaken, err)
	}
	return nil
}

// isCertFailure reports a deadlock error (1213): on Galera, a transaction
// that lost certification against another node's ("Deadlock: wsrep aborted
// transaction"), also at COMMIT; on InnoDB a lock deadlock. Either way the
// server rolled the transaction back, and the batch may simply be retried.
func isCertFailure(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1213
}

// loadRows streams w.load into uploads with ids first.. and checks that
// every row was inserted; its warning check goes with the next statement.
func (w *writer) loadRows(ctx context.Context, now time.Time, first uint64) error {
	n := uint64(len(w.load))
	if h := w.hooks.beforeLoad; h != nil {
		h(w)
	}
	if !w.galera && bodyBytes(w.load) <= insertMaxBytes {
		w.insertRows(now, first)
		w.loadedFirst, w.loadedN = first, n
		w.later(checkLoadSQL)
		return nil
	}
	w.rd.reset(w.load, now, first)
	res, err := w.exec(ctx, w.loadSQL)
	w.rd.reset(nil, time.Time{}, 0)
	if err != nil {
		if cerr, ok := checkError(err); ok { // the previous LOAD's check
			return cerr
		}
		return fmt.Errorf("store: load batch: %w", err)
	}
	affected, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: load batch: rows affected: %w", err)
	}
	w.loadedFirst, w.loadedN = first, uint64(affected)
	return w.checkLoad(ctx, "uploads", affected, n)
}

// insertMaxBytes: the uploads of a batch whose bodies total at most this go
// as one multi-row INSERT of hex literals, queued in front of the next round
// trip (so a small batch is one round trip in all), instead of a LOAD DATA
// LOCAL, which costs a round trip of its own plus the server's request for
// the file. Their SQL text (twice the bodies, in w.pre) is the only copy of
// a batch the store makes; larger batches stream through the LOAD reader.
// A plain INSERT fails whole on a refused row or a taken id (strict mode),
// so its row count needs no check. Not on Galera (see exec). A variable so
// that tests can force the LOAD.
var insertMaxBytes = 64 << 10

func bodyBytes(jobs []*Job) int {
	n := 0
	for _, j := range jobs {
		n += len(j.Body)
	}
	return n
}

// insertRows queues the INSERT of w.load with ids first.. (see insertMaxBytes).
func (w *writer) insertRows(now time.Time, first uint64) {
	b := w.pre
	if len(b) > 0 {
		b = append(b, ";\n"...)
	}
	b = append(b, "INSERT INTO uploads (id, stream, received_at, remote_addr, content_type, body) VALUES "...)
	for i, j := range w.load {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '(')
		b = strconv.AppendUint(b, first+uint64(i), 10)
		b = appendHex(b, j.Stream)
		b = append(b, ",'"...)
		t := j.ReceivedAt
		if t.IsZero() {
			t = now
		}
		b = appendDatetime6(b, t)
		b = append(b, '\'')
		b = appendHex(b, j.RemoteAddr)
		b = appendHex(b, j.ContentType)
		b = appendHex(b, j.Body)
		b = append(b, ')')
	}
	w.pre = b
}

// appendHex appends ",X'…'": v as a hex literal (nothing user-supplied is
// ever quoted into SQL).
func appendHex(b, v []byte) []byte {
	b = append(b, ",X'"...)
	b = hex.AppendEncode(b, v)
	return append(b, '\'')
}

// checkLoad checks a LOAD's row count and queues its warning check
// (checkLoadSQL) in front of the next statement: the driver does not expose
// the warning count of the OK packet, and the warning list lasts until the
// next statement that uses a table.
func (w *writer) checkLoad(ctx context.Context, table string, affected int64, n uint64) error {
	if w.galera {
		if err := w.readWarnings(ctx); err != nil {
			return err
		}
	} else {
		w.later(checkLoadSQL)
	}
	if uint64(affected) != n {
		return fmt.Errorf("store: load into %s: %d rows affected, want %d", table, affected, n)
	}
	return nil
}

// checkLoadSQL fails (1644, "upsink: N warnings, first: CODE: MESSAGE") when
// the statement before it left warnings: with LOCAL the server cannot stop
// the transfer, so it turns data errors (truncation, bad values, duplicate
// keys) into warnings even in strict mode. An anonymous compound statement
// (MariaDB 10.1.1+) sees the previous statement's diagnostics, and an error
// stops the rest of a multi-statement, so nothing after it runs.
const checkLoadSQL = "BEGIN NOT ATOMIC DECLARE n INT DEFAULT @@warning_count; DECLARE c INT DEFAULT 0; DECLARE m VARCHAR(512) DEFAULT '';" +
	" IF n > 0 THEN GET DIAGNOSTICS CONDITION 1 c = MYSQL_ERRNO, m = MESSAGE_TEXT;" +
	" SET m = CONCAT('upsink: ', n, ' warnings, first: ', c, ': ', m); SIGNAL SQLSTATE '45000' SET MYSQL_ERRNO = 1644, MESSAGE_TEXT = m; END IF; END"

const checkPrefix = "upsink: "

// checkError turns checkLoadSQL's error into the batch's error: a
// dataError (bisect), or errIDTaken for a duplicate key (1062: an id of the
// block was taken by a row written outside upsink; the writer drops its
// blocks and the retry takes new ones above every existing id).
func checkError(err error) (error, bool) {
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1644 || !strings.HasPrefix(me.Message, checkPrefix) {
		return nil, false
	}
	return warningsError(me.Message[len(checkPrefix):]), true
}

// warningsError is the batch's error for a LOAD that left warnings, from
// their description "N warnings, first: CODE: MESSAGE" (as checkLoadSQL and
// readWarnings write it): errIDTaken for a duplicate key, else a dataError.
func warningsError(reason string) error {
	if strings.Contains(reason, " warnings, first: 1062: ") {
		return fmt.Errorf("%w: %s", errIDTaken, reason)
	}
	return &dataError{reason}
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

// readWarnings fails the batch if the statement before left warnings, as
// checkLoadSQL does, in its own round trips (Galera: see exec).
func (w *writer) readWarnings(ctx context.Context) error {
	var count int
	w.busy()
	if err := w.conn.QueryRowContext(ctx, "SELECT @@warning_count").Scan(&count); err != nil {
		return fmt.Errorf("store: load batch: warnings: %w", err)
	}
	if count == 0 {
		return nil
	}
	var level, msg string
	var code int
	if err := w.conn.QueryRowContext(ctx, "SHOW WARNINGS LIMIT 1").Scan(&level, &code, &msg); err != nil {
		return fmt.Errorf("store: load batch: %d warnings (show warnings: %w)", count, err)
	}
	return warningsError(fmt.Sprintf("%d warnings, first: %d: %s", count, code, msg))
}

// errIDTaken: a LOAD found one of its ids already used.
var errIDTaken = errors.New("store: load batch: an id of the block is already used")

// abort rolls the transaction back after a failure that happened before
// COMMIT was sent and drops the connection unless the server still answers.
// It returns cause. On a non-transactional engine the rollback leaves the
// loaded rows in place, so abort deletes them (they were never acknowledged;
// left behind they would become duplicates when the client retries), at once
// or, if the connection is gone, right after the next connect. A cause
// that says an id was taken drops the writer's id blocks.
func (w *writer) abort(cause error) error {
	w.pre = w.pre[:0]
	if errors.Is(cause, errIDTaken) {
		w.dropBlocks()
	}
	// The connection still works if the server answered: the ROLLBACK, or
	// (no transaction yet) the failed statement with an error of its own.
	var me *mysql.MySQLError
	alive := errors.As(cause, &me)
	var de *dataError
	if errors.As(cause, &de) || errors.Is(cause, errIDTaken) {
		alive = true // the check's own error
	}
	if w.txOpen && w.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		w.busy()
		_, err := w.conn.ExecContext(ctx, "ROLLBACK")
		cancel()
		alive = err == nil
		w.txOpen = false
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
