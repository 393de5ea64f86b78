package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
)

// The writer goroutine: it waits for jobs or for its timer, gathers a batch,
// writes it (retrying once, resolving unknown outcomes) and hands it back.

// run is the writer goroutine.
func (s *Store) run() {
	defer close(s.done)
	defer func() {
		close(s.stopWatch)
		<-s.watchDone
	}()
	timer := time.NewTimer(0) // connect right away
	defer timer.Stop()
	for {
		var first *Job
		switch {
		case s.carry != nil:
			first, s.carry = s.carry, nil
		case s.qclosed:
			s.shutdown()
			return
		default:
			select {
			case j, ok := <-s.queue:
				if !ok {
					s.qclosed = true
					continue
				}
				first = j
			case <-timer.C:
				timer.Reset(s.tick())
				continue
			}
		}
		s.collect(first)
		s.handle()
		if s.conn != nil {
			timer.Reset(idlePing)
		} else {
			timer.Reset(s.backoff)
		}
	}
}

// tick runs when the writer has been idle: it (re)connects or pings, and
// returns when to tick next.
func (s *Store) tick() time.Duration {
	defer s.idle()
	if s.conn == nil {
		if err := s.connect(); err != nil {
			s.log.Warn("store: database unreachable", "err", err, "retry_in", s.backoff)
			d := s.backoff
			s.backoff = min(2*s.backoff, maxBackoff)
			return d
		}
		return idlePing
	}
	if time.Since(s.lastOK) >= idlePing-idlePing/10 {
		// A short timeout: a ping has nothing to wait for but the server.
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StallAfter)
		s.busy()
		err := s.conn.PingContext(ctx)
		cancel()
		if err != nil {
			s.log.Warn("store: ping failed", "err", err)
			s.dropConn()
			s.backoff = minBackoff
			return 0
		}
		s.lastOK = time.Now()
		s.ready.Store(true)
	}
	s.prune()
	return idlePing
}

// collect fills s.batch starting with first, draining the queue without
// blocking up to the batch limits.
func (s *Store) collect(first *Job) {
	s.batch = append(s.batch[:0], first)
	size := len(first.Body)
	for len(s.batch) < s.cfg.MaxBatchRows && !s.qclosed {
		select {
		case j, ok := <-s.queue:
			if !ok {
				s.qclosed = true
				return
			}
			if size+len(j.Body) > s.cfg.MaxBatchBytes {
				s.carry = j
				return
			}
			s.batch = append(s.batch, j)
			size += len(j.Body)
		default:
			return
		}
	}
}

// handle writes s.batch, sets every job's result and hands the batch to OnDone.
func (s *Store) handle() {
	now := time.Now()
	s.valid = s.valid[:0]
	for _, j := range s.batch {
		j.ID, j.Err = 0, nil
		if err := s.validate(j); err != nil {
			// Not the database's doing: retrying, or spooling it to retry
			// later, cannot help.
			s.log.Error("store: job rejected", "tag", j.Tag, "err", err)
			j.Err = &RejectedError{Reason: err.Error()}
			s.rejected.Add(1)
			s.failed.Add(1)
			continue
		}
		s.valid = append(s.valid, j)
	}
	if len(s.valid) > 0 {
		if s.conn == nil {
			s.fail(s.valid) // fail fast while the database is down
		} else {
			s.write(s.valid, now)
		}
	}
	s.idle()
	s.handBack(s.batch)
	clear(s.batch) // do not keep bodies alive until the next batch
	clear(s.valid)
	s.batch, s.valid = s.batch[:0], s.valid[:0]
}

// handBack calls OnDone; the mutex keeps the writer's and the watchdog's
// calls apart.
func (s *Store) handBack(jobs []*Job) {
	s.doneMu.Lock()
	defer s.doneMu.Unlock()
	s.cfg.OnDone(jobs)
}

func (s *Store) fail(jobs []*Job) { s.failWith(jobs, ErrUnavailable) }

func (s *Store) failWith(jobs []*Job, why error) {
	for _, j := range jobs {
		j.ID, j.Err, j.Prior = 0, why, Answer{}
	}
	s.failed.Add(uint64(len(jobs)))
}

// validate rejects jobs the table cannot hold exactly (in a LOAD DATA LOCAL
// they would only raise warnings, failing the whole batch).
func (s *Store) validate(j *Job) error {
	if len(j.IdemKey) > 255 {
		return errors.New("idempotency key longer than 255 bytes")
	}
	if j.SpoolSeq > 0 && s.cfg.SpoolID == "" {
		return errors.New("spool seq without Config.SpoolID")
	}
	if j.Table != nil {
		if s.tables[j.Table] == nil {
			return errors.New("rows for a table not in Config.Tables")
		}
		if j.Rows <= 0 || len(j.Body) == 0 || j.Body[len(j.Body)-1] != '\n' || countLines(j.Body) != j.Rows {
			return errors.New("rows body does not hold Rows lines")
		}
		return nil
	}
	if len(j.Stream) > 64 || !isASCII(j.Stream) {
		return errors.New("stream longer than 64 bytes or not ASCII")
	}
	if len(j.RemoteAddr) > 64 || !isASCII(j.RemoteAddr) {
		return errors.New("remote address longer than 64 bytes or not ASCII")
	}
	if len(j.ContentType) > 255 {
		return errors.New("content type longer than 255 bytes")
	}
	if !j.ReceivedAt.IsZero() {
		if y := j.ReceivedAt.UTC().Year(); y < 1000 || y > 9999 {
			return errors.New("received_at outside years 1000..9999")
		}
	}
	return nil
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// write commits jobs, splitting the batch when the database refuses one of
// its rows (bisect.go), and sets every job's result.
func (s *Store) write(jobs []*Job, now time.Time) {
	err := s.commit(jobs, now)
	if err == nil {
		return
	}
	de, ok := asDataError(err)
	if !ok {
		s.fail(jobs)
		return
	}
	if len(jobs) == 1 {
		jobs[0].ID, jobs[0].Err, jobs[0].Prior = 0, &RejectedError{Reason: de.reason}, Answer{}
		s.rejected.Add(1)
		s.failed.Add(1)
		s.log.Error("store: upload refused by the database", "tag", jobs[0].Tag, "stream", string(jobs[0].Stream), "bytes", len(jobs[0].Body), "reason", de.reason)
		return
	}
	s.split.Add(1)
	mid := len(jobs) / 2
	s.log.Warn("store: batch refused a row: splitting it", "rows", len(jobs), "reason", de.reason)
	s.write(jobs[:mid], now)
	s.write(jobs[mid:], now)
}

// commit writes jobs as one batch, resolving unknown outcomes through the
// ledger, and on success sets every job's result. A known failure is
// retried once (not one the data caused: the same rows would fail again);
// the error is returned with the jobs' results unset.
func (s *Store) commit(jobs []*Job, now time.Time) error {
	t0 := time.Now()
	if s.conn == nil {
		if err := s.connect(); err != nil {
			s.log.Warn("store: reconnect failed", "err", err)
			return err
		}
	}
	for attempt := 0; ; attempt++ {
		// A fresh batch id per attempt: on a non-transactional engine a failed
		// attempt may have left its ledger row behind.
		id := s.nextBatch
		s.nextBatch++
		oldID, oldStart := s.connID, s.serverStart
		first, err, unknown := s.attempt(id, jobs, now)
		if unknown {
			s.log.Warn("store: batch outcome unknown, resolving via ledger", "batch", id, "rows", len(jobs), "err", err)
			s.dropConn()
			var committed bool
			first, committed = s.resolve(id, len(s.load), oldID, oldStart)
			s.recovered.Add(1)
			s.log.Info("store: batch outcome resolved", "batch", id, "committed", committed, "first_id", first)
			if committed {
				err = nil
			} else if s.nonTx && s.loadedN > 0 {
				s.orphanFirst, s.orphanN = s.loadedFirst, s.loadedN
				s.deleteOrphans()
			}
		}
		if err == nil {
			s.settle(jobs)
			s.batches.Add(1)
			rows := s.loadedRows(jobs)
			s.rowsDone.Add(uint64(rows))
			if f := s.cfg.Observe; f != nil {
				f(rows, loadedBytes(jobs, s.verdicts), time.Since(t0))
			}
			s.lastOK = time.Now()
			s.ready.Store(true)
			return nil
		}
		s.log.Error("store: batch failed", "batch", id, "rows", len(jobs), "attempt", attempt+1, "err", err)
		if _, data := asDataError(err); data || attempt > 0 {
			return err
		}
		if s.conn == nil {
			if cerr := s.connect(); cerr != nil {
				s.log.Warn("store: reconnect failed", "err", cerr)
				return err
			}
		}
		// nothing was committed: retry once
	}
}

// loadedBytes is the body (or rows) bytes of the jobs an attempt loaded.
func loadedBytes(jobs []*Job, verdicts []verdict) int {
	n := 0
	for i, j := range jobs {
		if verdicts[i] == vLoad {
			n += len(j.Body)
		}
	}
	return n
}

// loadedRows is the number of rows the attempt just committed loaded.
func (s *Store) loadedRows(jobs []*Job) int {
	n := 0
	for i, j := range jobs {
		switch {
		case s.verdicts[i] != vLoad:
		case j.Table != nil:
			n += j.Rows
		default:
			n++
		}
	}
	return n
}

// shutdown runs on the writer after the queue is closed and drained.
func (s *Store) shutdown() {
	s.ready.Store(false)
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
	mysql.DeregisterReaderHandler(s.readerName)
	mysql.DeregisterReaderHandler(s.rowsName)
	if err := s.db.Close(); err != nil {
		s.closeErr = fmt.Errorf("store: close: %w", err)
	}
}
