package store

import (
	"context"
	"errors"
	"time"
)

// The writer goroutine: it waits for jobs or for its timer, gathers a batch,
// writes it (retrying once, resolving unknown outcomes) and hands it back.

// run is the writer goroutine.
func (w *writer) run() {
	timer := time.NewTimer(0) // connect right away
	defer timer.Stop()
	for {
		var first *Job
		switch {
		case w.carry != nil:
			first, w.carry = w.carry, nil
		case w.qclosed:
			w.shutdown()
			return
		default:
			q := w.queue
			if w.conn == nil && w.othersUp() {
				// Leave the jobs to a writer that can write them; this one
				// reconnects on its timer. (With no writer up, it takes them
				// to fail them fast.)
				q = nil
			}
			select {
			case j, ok := <-q:
				if !ok {
					w.qclosed = true
					continue
				}
				if w.conn == nil && w.othersUp() && w.giveBack(j) {
					continue // another writer came up while this one waited
				}
				first = j
			case <-timer.C:
				timer.Reset(w.tick())
				continue
			}
		}
		w.collect(first)
		w.handle()
		if w.conn != nil {
			timer.Reset(idlePing)
		}
		// else the timer keeps its reconnect time: jobs failed fast must
		// not put the reconnect off
	}
}

// giveBack puts j back into the queue if there is room and the store is
// not closing.
func (w *writer) giveBack(j *Job) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return false
	}
	select {
	case w.queue <- j:
		return true
	default:
		return false
	}
}

// othersUp reports whether another writer has a working connection.
func (w *writer) othersUp() bool {
	for _, o := range w.writers {
		if o != w && o.up.Load() {
			return true
		}
	}
	return false
}

// tick runs when the writer has been idle: it (re)connects or pings, and
// returns when to tick next.
func (w *writer) tick() time.Duration {
	defer w.idle()
	if w.conn == nil {
		if err := w.connect(0); err != nil {
			w.log.Warn("store: database unreachable", "writer", w.num, "err", err, "retry_in", w.backoff)
			d := w.backoff
			w.backoff = min(2*w.backoff, maxBackoff)
			return d
		}
		return idlePing
	}
	if time.Since(w.lastOK) >= idlePing-idlePing/10 {
		// A short timeout: a ping has nothing to wait for but the server.
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.StallAfter)
		w.busy()
		err := w.conn.PingContext(ctx)
		cancel()
		if err != nil {
			w.log.Warn("store: ping failed", "err", err)
			w.dropConn()
			w.backoff = minBackoff
			return 0
		}
		w.ok()
	}
	if w.num == 0 {
		w.prune()
	}
	return idlePing
}

// collect fills w.batch starting with first, draining the queue up to the
// batch limits. When the queue runs dry before gatherTarget jobs, it waits
// for more up to gatherMax (with a connection only: without one the jobs
// fail fast).
//
// The records replayed from the spool in one batch have consecutive seqs:
// the batch's ledger row holds their range, and a seq in the range that
// another writer's batch holds could be skipped at a later replay although
// that batch never committed. A replayed job that does not follow is
// carried to this writer's next batch.
func (w *writer) collect(first *Job) {
	w.batch = append(w.batch[:0], first)
	size := len(first.Body)
	lastSeq := first.SpoolSeq
	target := w.gatherTarget()
	waiting := false
fill:
	for len(w.batch) < w.cfg.MaxBatchRows && !w.qclosed {
		var j *Job
		var ok bool
		select {
		case j, ok = <-w.queue:
		default:
			if len(w.batch) >= target || w.conn == nil {
				break fill
			}
			if !waiting {
				waiting = true
				w.gather.Reset(gatherMax)
			}
			select {
			case j, ok = <-w.queue:
			case <-w.gather.C:
				waiting = false // fired: nothing to stop
				break fill
			}
		}
		if !ok {
			w.qclosed = true
			break
		}
		if j.SpoolSeq > 0 && lastSeq > 0 && j.SpoolSeq != lastSeq+1 {
			w.carry = j
			break
		}
		if j.SpoolSeq > 0 {
			lastSeq = j.SpoolSeq
		}
		if size+len(j.Body) > w.cfg.MaxBatchBytes {
			w.carry = j
			break
		}
		w.batch = append(w.batch, j)
		size += len(j.Body)
	}
	if waiting {
		w.gather.Stop() // (Go ≥ 1.23: no stale tick is left in C)
	}
}

// gatherMax bounds how long a batch waits for the jobs gatherTarget
// expects: about the cost of one more commit's log flush, paid only while
// the clients just answered are on their way back. Measured (BENCHMARKS.md,
// issue 13): at 8 connections batches went from 4.5 to 8 rows and
// uploads/s from ~4,300 to ~6,500; at 64 and 512 unchanged, p99 lower.
var gatherMax = time.Millisecond

// gatherTarget is how many jobs the next batch waits for (up to gatherMax):
// the previous batch's, whose clients were just answered and are likely to
// send again, plus those that were queued when it was answered.
func (w *writer) gatherTarget() int {
	return min(w.lastBatch, w.cfg.MaxBatchRows)
}

// handle writes w.batch, sets every job's result and hands the batch to OnDone.
func (w *writer) handle() {
	now := time.Now()
	w.valid = w.valid[:0]
	for _, j := range w.batch {
		j.ID, j.Err = 0, nil
		if err := w.validate(j); err != nil {
			// Not the database's doing: retrying, or spooling it to retry
			// later, cannot help.
			w.log.Error("store: job rejected", "tag", j.Tag, "err", err)
			j.Err = &RejectedError{Reason: err.Error()}
			w.rejected.Add(1)
			w.failed.Add(1)
			continue
		}
		w.valid = append(w.valid, j)
	}
	if len(w.valid) > 0 {
		if w.conn == nil {
			w.fail(w.valid) // fail fast while the database is down
		} else {
			w.write(w.valid, now)
		}
	}
	w.idle()
	w.lastBatch = len(w.batch) + len(w.queue)
	w.handBack(w.batch)
	clear(w.batch) // do not keep bodies alive until the next batch
	clear(w.valid)
	w.batch, w.valid = w.batch[:0], w.valid[:0]
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
func (w *writer) validate(j *Job) error {
	if len(j.IdemKey) > 255 {
		return errors.New("idempotency key longer than 255 bytes")
	}
	if j.SpoolSeq > 0 && w.cfg.SpoolID == "" {
		return errors.New("spool seq without Config.SpoolID")
	}
	if j.Table != nil {
		if w.tables[j.Table] == nil {
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
func (w *writer) write(jobs []*Job, now time.Time) {
	err := w.commit(jobs, now)
	if err == nil {
		return
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		w.failWith(jobs, err) // not ErrUnavailable: that would be spooled
		return
	}
	de, ok := asDataError(err)
	if !ok {
		w.fail(jobs)
		return
	}
	if len(jobs) == 1 {
		jobs[0].ID, jobs[0].Err, jobs[0].Prior = 0, &RejectedError{Reason: de.reason}, Answer{}
		w.rejected.Add(1)
		w.failed.Add(1)
		w.log.Error("store: upload refused by the database", "tag", jobs[0].Tag, "stream", string(jobs[0].Stream), "bytes", len(jobs[0].Body), "reason", de.reason)
		return
	}
	w.split.Add(1)
	mid := len(jobs) / 2
	w.log.Warn("store: batch refused a row: splitting it", "rows", len(jobs), "reason", de.reason)
	w.write(jobs[:mid], now)
	w.write(jobs[mid:], now)
}

// commit writes jobs as one batch, resolving unknown outcomes through the
// ledger, and on success sets every job's result. A known failure is
// retried once (not one the data caused: the same rows would fail again);
// the error is returned with the jobs' results unset.
func (w *writer) commit(jobs []*Job, now time.Time) error {
	t0 := time.Now()
	if w.conn == nil {
		if err := w.connect(0); err != nil {
			w.log.Warn("store: reconnect failed", "writer", w.num, "err", err)
			return err
		}
	}
	certFailures := 0
	for attempt := 0; ; attempt++ {
		// A fresh batch id per attempt: on a non-transactional engine a failed
		// attempt may have left its ledger row behind.
		id, err := w.nextBatchID()
		unknown := false
		old := w.sess
		if err == nil {
			err, unknown = w.attempt(id, jobs, now)
		}
		if unknown {
			w.log.Warn("store: batch outcome unknown, resolving via ledger", "writer", w.num, "batch", id, "rows", len(jobs), "err", err)
			w.dropConn()
			w.staleCommit = true // fenced before the lookup
			committed, known := w.resolve(id, len(w.load), old)
			if !known {
				w.log.Error("store: closed with a batch's outcome unknown: its uploads are left unanswered (the ledger knows)", "writer", w.num, "batch", id, "rows", len(jobs))
				return ErrOutcomeUnknown
			}
			w.recovered.Add(1)
			w.log.Info("store: batch outcome resolved", "writer", w.num, "batch", id, "committed", committed)
			if committed {
				err = nil
			} else if w.nonTx && w.loadedN > 0 {
				w.orphanFirst, w.orphanN = w.loadedFirst, w.loadedN
				w.deleteOrphans()
			}
		}
		if err == nil {
			w.settle(jobs)
			w.batches.Add(1)
			rows := w.loadedRows(jobs)
			w.rowsDone.Add(uint64(rows))
			if f := w.cfg.Observe; f != nil {
				f(rows, loadedBytes(jobs, w.verdicts), time.Since(t0))
			}
			w.ok()
			return nil
		}
		retry := attempt == 0
		if (isCertFailure(err) || errors.Is(err, errKeyRace)) && certFailures < maxCertRetries {
			// Another transaction (on Galera: another node's) won: the
			// same batch goes again, after a short pause so the winner's
			// write set is applied here.
			certFailures++
			retry = true
			time.Sleep(time.Duration(certFailures) * 5 * time.Millisecond)
		}
		if _, data := asDataError(err); data || !retry {
			w.log.Error("store: batch failed", "writer", w.num, "batch", id, "rows", len(jobs), "attempt", attempt+1, "err", err)
			return err
		}
		w.log.Warn("store: batch failed, retrying", "writer", w.num, "batch", id, "rows", len(jobs), "attempt", attempt+1, "err", err)
		if w.conn == nil {
			if cerr := w.connect(0); cerr != nil {
				w.log.Warn("store: reconnect failed", "writer", w.num, "err", cerr)
				return err
			}
		}
		// nothing was committed: retry
	}
}

// maxCertRetries: a batch that loses certification (or a deadlock) is
// retried up to this many times beyond the one retry of any known failure.
const maxCertRetries = 4

// nextBatchID takes the next batch id (ids.go).
func (w *writer) nextBatchID() (uint64, error) {
	if w.batchIDs.next < w.batchIDs.end {
		id := w.batchIDs.next
		w.batchIDs.next++
		return id, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	id, err := w.takeIDs(ctx, &w.batchIDs, "/batch", "upsink_batches", "batch_id", 1)
	if err != nil {
		return 0, w.abort(err)
	}
	return id, nil
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
func (w *writer) loadedRows(jobs []*Job) int {
	n := 0
	for i, j := range jobs {
		switch {
		case w.verdicts[i] != vLoad:
		case j.Table != nil:
			n += j.Rows
		default:
			n++
		}
	}
	return n
}

// shutdown runs on the writer after the queue is closed and drained.
func (w *writer) shutdown() {
	w.up.Store(false)
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
		w.curConn.Store(0)
		w.curNode.Store(-1)
	}
}
