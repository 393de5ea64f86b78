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

// resolve finds out whether batch id committed after an unknown outcome. It
// does not return until the database has answered; meanwhile jobs arriving in
// the queue are failed fast. On return s.conn is a fresh connection.
func (s *Store) resolve(id uint64, n int, oldID uint64, oldStart int64) (first uint64, committed bool) {
	backoff := minBackoff
	for {
		if s.conn == nil {
			if err := s.connect(); err != nil {
				s.log.Warn("store: ledger lookup waiting for database", "batch", id, "err", err, "retry_in", backoff)
				s.failQueued()
				time.Sleep(backoff)
				backoff = min(2*backoff, maxBackoff)
				continue
			}
		}
		first, committed, err := s.lookup(id, n, oldID, oldStart)
		if err == nil {
			return first, committed
		}
		s.log.Warn("store: ledger lookup failed", "batch", id, "err", err, "retry_in", backoff)
		var me *mysql.MySQLError
		if !errors.As(err, &me) {
			s.dropConn()
		}
		s.failQueued()
		time.Sleep(backoff)
		backoff = min(2*backoff, maxBackoff)
	}
}

// lookup makes sure the old session is gone and reads the ledger.
func (s *Store) lookup(id uint64, n int, oldID uint64, oldStart int64) (first uint64, committed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	// connect has normally done this already (the batch's connection was
	// dropped, so its session was stale); doing it again costs one round trip.
	if err := s.killSession(ctx, s.conn, oldID, oldStart); err != nil {
		return 0, false, err
	}
	var rowCount int
	s.busy()
	err = s.conn.QueryRowContext(ctx, "SELECT first_id, row_count FROM upsink_batches WHERE batch_id="+strconv.FormatUint(id, 10)).Scan(&first, &rowCount)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("store: ledger lookup: %w", err)
	case rowCount != n:
		// Cannot happen with unique batch ids; never acknowledge on it.
		s.log.Error("store: ledger row does not match batch", "batch", id, "rows", n, "ledger_rows", rowCount)
		return 0, false, nil
	}
	return first, true, nil
}

// killSession makes sure session oldID of the server that started at
// oldStart is gone, on c (whose server is s.serverStart): on the same server
// instance (start times agree up to rounding) it may still exist, perhaps in
// the middle of a statement or with a COMMIT still in its socket buffer, so
// it is killed and waited for until it has left the process list. From then
// on its transaction is finished one way or the other and nothing of it can
// commit behind our back. After a restart it is gone and its id may belong to
// someone else: nothing to do.
func (s *Store) killSession(ctx context.Context, c *sql.Conn, oldID uint64, oldStart int64) error {
	if oldID == 0 || oldID == s.connID || s.serverStart-oldStart > 2 || oldStart-s.serverStart > 2 {
		return nil
	}
	s.busy()
	_, err := c.ExecContext(ctx, "KILL CONNECTION "+strconv.FormatUint(oldID, 10))
	var me *mysql.MySQLError
	if err != nil && !(errors.As(err, &me) && (me.Number == 1094 || me.Number == 1095)) { // no such thread / not ours
		return fmt.Errorf("store: kill old session %d: %w", oldID, err)
	}
	q := "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID=" + strconv.FormatUint(oldID, 10)
	for {
		var cnt int
		s.busy()
		if err := c.QueryRowContext(ctx, q).Scan(&cnt); err != nil {
			return fmt.Errorf("store: wait for old session %d: %w", oldID, err)
		}
		if cnt == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: old session %d still present: %w", oldID, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// failQueued fails every job waiting in the queue right now (used while the
// database is down during a resolution, so clients are not kept waiting).
func (s *Store) failQueued() {
	s.spill = s.spill[:0]
	if s.carry != nil {
		s.spill = append(s.spill, s.carry)
		s.carry = nil
	}
	for !s.qclosed && len(s.spill) < s.cfg.MaxBatchRows {
		select {
		case j, ok := <-s.queue:
			if !ok {
				s.qclosed = true
				continue
			}
			s.spill = append(s.spill, j)
			continue
		default:
		}
		break
	}
	if len(s.spill) == 0 {
		return
	}
	s.fail(s.spill)
	s.handBack(s.spill)
	clear(s.spill)
	s.spill = s.spill[:0]
}
