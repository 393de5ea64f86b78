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
func (s *Store) deleteOrphans() {
	if s.orphanN == 0 || s.conn == nil {
		return
	}
	b := append(s.sqlBuf[:0], "DELETE FROM uploads WHERE id BETWEEN "...)
	b = strconv.AppendUint(b, s.orphanFirst, 10)
	b = append(b, " AND "...)
	b = strconv.AppendUint(b, s.orphanFirst+s.orphanN-1, 10)
	s.sqlBuf = b
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	s.busy()
	if _, err := s.conn.ExecContext(ctx, string(b)); err != nil {
		s.log.Error("store: could not delete the rows of a failed batch yet", "first_id", s.orphanFirst, "rows", s.orphanN, "err", err)
		return
	}
	s.log.Info("store: deleted the rows of a failed batch (non-transactional engine)", "first_id", s.orphanFirst, "rows", s.orphanN)
	s.orphanFirst, s.orphanN = 0, 0
}
