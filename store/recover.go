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

// Unknown outcomes: finding out through the ledger, on a fresh connection and
// after the old session is gone, whether a batch committed.

// resolve finds out whether batch id (n uploads) committed after an unknown
// outcome; the batch's connection has been dropped. It does not return until
// a node has answered (known), or the store is closed while none can
// (!known); meanwhile jobs arriving in the queue are failed fast. The
// connection is made preferring the batch's node, and fences the batch's
// session first (nodes.go). On a known return w.conn is a fresh connection.
func (w *writer) resolve(id uint64, n int, old session) (committed, known bool) {
	backoff := minBackoff
	for {
		if w.conn == nil {
			if err := w.connect(old.node); err != nil {
				if w.closing() {
					return false, false
				}
				w.log.Warn("store: ledger lookup waiting for database", "writer", w.num, "batch", id, "err", err, "retry_in", backoff)
				w.failQueued()
				time.Sleep(backoff)
				backoff = min(2*backoff, maxBackoff)
				continue
			}
		}
		committed, err := w.lookup(id, n)
		if err == nil {
			return committed, true
		}
		if w.closing() {
			return false, false
		}
		w.log.Warn("store: ledger lookup failed", "writer", w.num, "batch", id, "err", err, "retry_in", backoff)
		var me *mysql.MySQLError
		if !errors.As(err, &me) {
			w.dropConn()
		}
		w.failQueued()
		time.Sleep(backoff)
		backoff = min(2*backoff, maxBackoff)
	}
}

// lookup reads the ledger (on Galera with a causal read: the batch may have
// committed through another node).
func (w *writer) lookup(id uint64, n int) (committed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	q := "SELECT row_count FROM upsink_batches WHERE batch_id=" + strconv.FormatUint(id, 10)
	if w.galera {
		q = "SET STATEMENT wsrep_sync_wait=1 FOR " + q
	}
	var rowCount int
	w.busy()
	err = w.conn.QueryRowContext(ctx, q).Scan(&rowCount)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("store: ledger lookup: %w", err)
	case rowCount != n:
		// Cannot happen with unique batch ids; never acknowledge on it.
		w.log.Error("store: ledger row does not match batch", "batch", id, "rows", n, "ledger_rows", rowCount)
		return false, nil
	}
	return true, nil
}

// failQueued fails every job waiting in the queue right now (used while the
// database is down during a resolution, so clients are not kept waiting),
// unless another writer is up to write them: then the writer's carried
// job goes back to the queue for it.
func (w *writer) failQueued() {
	if w.othersUp() {
		// Another writer takes them, and this one's carried job too.
		if w.carry != nil && w.giveBack(w.carry) {
			w.carry = nil
		}
		return
	}
	w.spill = w.spill[:0]
	if w.carry != nil {
		w.spill = append(w.spill, w.carry)
		w.carry = nil
	}
	for !w.qclosed && len(w.spill) < w.cfg.MaxBatchRows {
		select {
		case j, ok := <-w.queue:
			if !ok {
				w.qclosed = true
				continue
			}
			w.spill = append(w.spill, j)
			continue
		default:
		}
		break
	}
	if len(w.spill) == 0 {
		return
	}
	w.fail(w.spill)
	w.handBack(w.spill)
	clear(w.spill)
	w.spill = w.spill[:0]
}
