package durable

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"upsink/spool"
	"upsink/store"
)

// The replayer feeds the spool to the store in seq order, one window at a
// time: up to replayRows records and replayBytes bytes, copied out of the
// spool's reader into one arena, submitted as ordinary jobs marked with their
// seq (store.Job.SpoolSeq). It submits a window only while the store is
// ready, not diverting, and its queue is short (live uploads go first), and
// waits until every job of the window is handed back. Jobs that failed on the
// database's side are submitted again (only they: the window is not left
// until all of it is in); then Ack(last seq of the window) lets the spool
// delete what is done.
//
// Exactly once: each batch's ledger row holds the seq range of the replayed
// jobs in it, written in the batch's transaction, and the writer answers a
// replayed job whose seq a ledger range already holds without loading it
// (store: judgeKeys). A window's failed jobs are resubmitted only after all
// of the window was handed back, so a range never spans a seq that is not
// committed. A crash after a commit and before Ack therefore replays the
// same records again, and the writer skips them: nothing lost, nothing
// doubled. A replayed record whose key MariaDB already holds is answered from
// the key (its first answer) and not loaded either.
//
// Memory: the arena holds at most replayBytes, or one record if larger
// (bounded by the spool's segment size), and shrinks back after it; plus the
// Reader's 64 KiB window and replayRows job headers.
//
// Goroutines: run is the replayer's own; done is called by the store's
// writer (OnDone); wake by the spool's writer; stop and wait by Close.
type replayer struct {
	k  *Sink
	rd *spool.Reader

	// The window; owned by run, except that done reads the job it is handed
	// (the store set its result) and counts.
	jobs    []store.Job
	state   []jobState
	arena   []byte
	held    *spool.Record // read but not in the window (it did not fit)
	pending atomic.Int32  // jobs submitted and not yet handed back
	back    chan struct{} // signalled when pending reaches 0

	wakeCh chan struct{}
	stopCh chan struct{}
	exited chan struct{}
	once   sync.Once

	replayed, dropped atomic.Uint64
}

type jobState uint8

const (
	jobWaiting jobState = iota // to be submitted
	jobOut                     // submitted
	jobDone                    // committed (or found committed), or dropped
)

const (
	replayTag   = 1 << 63 // Job.Tag bit of replayed jobs; the low bits index the window
	replayRows  = 256
	replayBytes = 4 << 20
	replayPoll  = 100 * time.Millisecond
)

func newReplayer(k *Sink) *replayer {
	return &replayer{
		k:      k,
		rd:     k.sp.NewReader(0),
		jobs:   make([]store.Job, 0, replayRows),
		state:  make([]jobState, 0, replayRows),
		back:   make(chan struct{}, 1),
		wakeCh: make(chan struct{}, 1),
		stopCh: make(chan struct{}),
		exited: make(chan struct{}),
	}
}

func (r *replayer) wake() {
	select {
	case r.wakeCh <- struct{}{}:
	default:
	}
}

func (r *replayer) stop() { r.once.Do(func() { close(r.stopCh) }) }
func (r *replayer) wait() { <-r.exited }
func (r *replayer) stopped() bool {
	select {
	case <-r.stopCh:
		return true
	default:
		return false
	}
}

// pause waits for d, a wake-up or stop; false means stop.
func (r *replayer) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.stopCh:
		return false
	case <-r.wakeCh:
	case <-t.C:
	}
	return true
}

// run is the replayer goroutine.
func (r *replayer) run() {
	defer close(r.exited)
	defer r.rd.Close()
	for !r.stopped() {
		if len(r.jobs) == 0 {
			if err := r.fill(); err != nil {
				r.k.log.Error("durable: spool unreadable: replay stopped", "err", err)
				<-r.stopCh
				return
			}
			if len(r.jobs) == 0 {
				if !r.pause(time.Second) {
					return
				}
				continue
			}
		}
		if !r.clear() {
			if !r.pause(replayPoll) {
				return
			}
			continue
		}
		r.submit()
		<-r.back // every submitted job handed back (Close hands back all)
		if r.settle() {
			r.ack()
		} else if !r.pause(replayPoll) {
			return
		}
	}
}

// clear reports whether the store may take a window now.
func (r *replayer) clear() bool {
	st := r.k.st
	return st.Ready() && st.Stats().QueueLen < replayRows
}

// fill reads the next window from the spool.
func (r *replayer) fill() error {
	r.arena = r.arena[:0]
	if cap(r.arena) > 2*replayBytes {
		r.arena = nil
	}
	for len(r.jobs) < replayRows {
		rec := r.held
		r.held = nil
		if rec == nil {
			var err error
			rec, err = r.rd.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		size := len(rec.Stream) + len(rec.ContentType) + len(rec.RemoteAddr) + len(rec.IdempotencyKey) + len(rec.Body)
		if len(r.jobs) > 0 && len(r.arena)+size > replayBytes {
			r.held = rec // valid until the reader's next call, which waits for the next fill
			return nil
		}
		if len(r.jobs) == 0 && cap(r.arena) < size {
			r.arena = make([]byte, 0, max(size, replayBytes))
		}
		r.jobs = append(r.jobs, store.Job{
			Stream:      r.copy(rec.Stream),
			ContentType: r.copy(rec.ContentType),
			RemoteAddr:  r.copy(rec.RemoteAddr),
			IdemKey:     r.copy(rec.IdempotencyKey),
			Body:        r.copy(rec.Body),
			ReceivedAt:  rec.ReceivedAt,
			SpoolSeq:    rec.Seq,
			Tag:         replayTag | uint64(len(r.jobs)),
		})
		j := &r.jobs[len(r.jobs)-1]
		if len(j.IdemKey) > 0 {
			j.Fingerprint = sha256.Sum256(j.Body)
		}
		st := jobWaiting
		if rec.Flags&spool.FlagRows != 0 {
			j.Table, j.Rows = r.k.tables[string(j.Stream)], bytes.Count(j.Body, []byte{'\n'})
			if j.Table == nil {
				// Its table is no longer declared: nowhere to put the rows.
				r.k.log.Error("durable: spooled rows for a table no longer declared: dropped", "spool_seq", j.SpoolSeq, "table", string(j.Stream), "rows", j.Rows)
				r.dropped.Add(1)
				st = jobDone
				if len(j.IdemKey) > 0 {
					r.k.keys.forget(j.Table != nil, j.Stream, j.IdemKey, j.SpoolSeq)
				}
			}
		}
		r.state = append(r.state, st)
	}
	return nil
}

// copy appends b to the arena (sized for the window beforehand, so the
// slices handed out earlier stay valid).
func (r *replayer) copy(b []byte) []byte {
	n := len(r.arena)
	r.arena = append(r.arena, b...)
	return r.arena[n:len(r.arena):len(r.arena)]
}

// submit hands the window's waiting jobs to the store, in order, until it
// refuses one.
func (r *replayer) submit() {
	r.pending.Add(1) // held until all are submitted, so back fires once
	for i := range r.jobs {
		if r.state[i] != jobWaiting {
			continue
		}
		r.pending.Add(1)
		if err := r.k.st.Submit(&r.jobs[i]); err != nil {
			r.pending.Add(-1)
			break
		}
		r.state[i] = jobOut
	}
	if r.pending.Add(-1) == 0 {
		r.signal()
	}
}

func (r *replayer) signal() {
	select {
	case r.back <- struct{}{}:
	default:
	}
}

// done is called by the store's OnDone for a replayed job.
func (r *replayer) done(*store.Job) {
	if r.pending.Add(-1) == 0 {
		r.signal()
	}
}

// settle looks at the results of the jobs handed back; true when the whole
// window is done.
func (r *replayer) settle() bool {
	all := true
	for i := range r.jobs {
		j := &r.jobs[i]
		if r.state[i] != jobOut {
			all = all && r.state[i] == jobDone
			continue
		}
		switch {
		case j.Err == nil:
			r.state[i] = jobDone
			r.replayed.Add(1)
			if len(j.IdemKey) > 0 {
				r.k.keys.forget(j.Table != nil, j.Stream, j.IdemKey, j.SpoolSeq)
			}
		case retryable(j.Err):
			r.state[i] = jobWaiting // nothing committed: again, with the rest of the window
			all = false
		case errors.Is(j.Err, store.ErrOutcomeUnknown):
			// Closed before the database could say: the record stays in
			// the spool, and the ledger's seq ranges tell at the next
			// replay whether it was committed.
			r.state[i] = jobWaiting
			all = false
		default:
			// The database refuses this row itself, or its key was
			// committed with another body (a retry spooled while MariaDB
			// was away, which could not be checked then). Retrying cannot
			// help; the record's 202 cannot be taken back.
			r.k.log.Error("durable: spooled upload refused at replay: dropped", "spool_seq", j.SpoolSeq,
				"stream", string(j.Stream), "bytes", len(j.Body), "err", j.Err)
			r.state[i] = jobDone
			r.dropped.Add(1)
			if len(j.IdemKey) > 0 {
				r.k.keys.forget(j.Table != nil, j.Stream, j.IdemKey, j.SpoolSeq)
			}
		}
	}
	return all
}

// ack acknowledges the window to the spool and empties it.
func (r *replayer) ack() {
	last := r.jobs[len(r.jobs)-1].SpoolSeq
	if err := r.k.sp.Ack(last); err != nil {
		r.k.log.Warn("durable: spool ack", "seq", last, "err", err)
	}
	clear(r.jobs)
	r.jobs, r.state = r.jobs[:0], r.state[:0]
}
