package store

import (
	"time"
)

// The stall watchdog: while the writers wait on the database, nothing else
// would notice that the database stopped answering. Each writer stamps the
// time before each database call (busy) and clears it when it has nothing
// outstanding (idle); the watchdog looks every DivertAfter/4. When every
// writer has had a call outstanding for longer than StallAfter, the store is
// not ready (Submit
// refuses, /readyz answers 503) and fails every job waiting in the queue with
// ErrUnavailable, again at each look while the stall lasts. Nothing in
// flight is touched: the stalled call ends by the driver's read/write
// timeout, and the batch it belongs to gets its true answer from the writer
// (see "Stalls" in the package doc). Ready turns true again when a database
// call of the writer succeeds.
//
// Earlier, at DivertAfter (the server's --spool-after), the store only
// diverts: Submit refuses with ErrBusy and queued jobs are handed back with
// ErrBusy (nothing of them was sent), so the caller can make them durable in
// its spool instead of letting them wait behind the call. Ready stays true:
// a slow statement is not yet a dead database. Diverting ends with the call.

// busy records that the writer is about to wait on the database (a statement,
// a ping, a connect). Each call restarts the stall clock: a batch of several
// quick statements is not a stall however long it takes in all.
func (w *writer) busy() {
	w.busySince.Store(int64(time.Since(w.epoch)) + 1)
	w.diverting.Store(false)
}

// idle records that the writer waits on nothing.
func (w *writer) idle() {
	w.busySince.Store(0)
	w.diverting.Store(false)
}

// waiting is how long the writer that has waited least on its current
// database call has waited: with several writers, the store stalls only
// when every one of them does (a free writer takes the queued jobs).
// 0: some writer waits on nothing.
func (s *Store) waiting() time.Duration {
	now := int64(time.Since(s.epoch)) + 1
	least := time.Duration(-1)
	for _, w := range s.writers {
		since := w.busySince.Load()
		if since == 0 {
			return 0
		}
		if d := time.Duration(now - since); least < 0 || d < least {
			least = d
		}
	}
	return max(least, 0)
}

// watch is the watchdog goroutine; it returns when stopWatch is closed.
func (s *Store) watch() {
	defer close(s.watchDone)
	t := time.NewTicker(max(s.cfg.DivertAfter/4, time.Millisecond))
	defer t.Stop()
	stalled := false
	spill := make([]*Job, 0, s.cfg.MaxBatchRows)
	for {
		select {
		case <-s.stopWatch:
			return
		case <-t.C:
		}
		d := s.waiting()
		if d < s.cfg.DivertAfter {
			stalled = false
			s.diverting.Store(false) // also if set just after the writer's busy or idle cleared it
			continue
		}
		if d < s.cfg.StallAfter {
			if !s.diverting.Swap(true) {
				s.log.Info("store: database call slow: diverting new and queued jobs", "waiting_for", d.Round(time.Millisecond))
			}
			spill = s.drainFail(spill, ErrBusy)
			continue
		}
		s.diverting.Store(true)
		wasStalled := s.stalled.Swap(true)
		if !stalled {
			stalled = true
			if !wasStalled {
				s.log.Warn("store: database stalled: not ready, failing queued jobs", "waiting_for", d.Round(time.Millisecond))
			}
		}
		spill = s.drainFail(spill, ErrUnavailable)
	}
}

// drainFail takes every job waiting in the queue right now (without blocking
// and without touching the writer's carry) and hands them back failed with
// why, MaxBatchRows per OnDone call. buf is scratch; it is returned for
// reuse.
func (s *Store) drainFail(buf []*Job, why error) []*Job {
	for {
		buf = buf[:0]
	drain:
		for len(buf) < s.cfg.MaxBatchRows {
			select {
			case j, ok := <-s.queue:
				if !ok {
					break drain
				}
				buf = append(buf, j)
			default:
				break drain
			}
		}
		if len(buf) == 0 {
			return buf
		}
		s.failWith(buf, why)
		s.handBack(buf)
		clear(buf)
		if len(buf) < s.cfg.MaxBatchRows {
			return buf[:0]
		}
	}
}
