package store

import (
	"context"
	"strconv"
)

// Non-transactional engines (Aria): the rows a failed batch leaves behind.

// deleteOrphans deletes the rows of a failed attempt on a non-transactional
// engine, if there is a connection; otherwise (or on error) they stay pending
// for the next connect. The range holds only ids that attempt's LOAD returned,
// which no one else can own, so deleting them is safe from any session.
func (w *writer) deleteOrphans() {
	if w.orphanN == 0 || w.conn == nil {
		return
	}
	b := append(w.sqlBuf[:0], "DELETE FROM uploads WHERE id BETWEEN "...)
	b = strconv.AppendUint(b, w.orphanFirst, 10)
	b = append(b, " AND "...)
	b = strconv.AppendUint(b, w.orphanFirst+w.orphanN-1, 10)
	w.sqlBuf = b
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	w.busy()
	if _, err := w.conn.ExecContext(ctx, string(b)); err != nil {
		w.log.Error("store: could not delete the rows of a failed batch yet", "first_id", w.orphanFirst, "rows", w.orphanN, "err", err)
		return
	}
	w.log.Info("store: deleted the rows of a failed batch (non-transactional engine)", "first_id", w.orphanFirst, "rows", w.orphanN)
	w.orphanFirst, w.orphanN = 0, 0
}
