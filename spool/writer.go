package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"syscall"
	"time"
)

// writeBuf is the writer's buffer: records are copied into it (the one copy
// of a small body) and written with one pwrite per buffer-full; a part larger
// than half of it (a large body) is written straight from the caller's slice.
const writeBuf = 256 << 10

// Append queues r for the writer without blocking. nil means r will be handed
// to OnDone exactly once, after the fsync that covers it (Err nil, Seq set)
// or after its write failed (Err set: nothing of it is on disk). An error
// means r was not queued and OnDone will not see it: ErrClosed, ErrTooLarge,
// ErrQueueFull, ErrFull. Any goroutine; safe on an event loop (a mutex held
// for a few instructions, no allocation).
func (s *Spool) Append(r *Record) error {
	size, err := recordSize(r)
	if err != nil {
		return err
	}
	if size > s.opt.SegmentBytes {
		return fmt.Errorf("%w: %d bytes, segments hold %d", ErrTooLarge, size, s.opt.SegmentBytes)
	}
	s.qmu.Lock()
	switch {
	case s.closing:
		err = ErrClosed
	case len(s.pending) >= s.opt.QueueLen, len(s.pending) > 0 && s.qbytes+size > s.opt.QueueBytes:
		err = ErrQueueFull
	case s.used.Add(size) > s.opt.MaxBytes:
		s.used.Add(-size)
		err = ErrFull
	default:
		r.size, r.Seq, r.Err = size, 0, nil
		s.pending = append(s.pending, r)
		s.qbytes += size
	}
	s.qmu.Unlock()
	if err == nil {
		s.signal()
	}
	return err
}

// writer is the state of the writer goroutine; nothing else touches it
// (recover.go fills it before the goroutine starts).
type writer struct {
	f       file
	seg     *segment // the active segment (its shared fields change under Spool.mu)
	off     int64    // bytes written to f; equals seg.size between groups
	dropped int64    // pages before this offset were dropped from the page cache
	next    uint64   // seq of the next record
	lastCP  int64    // offset of the active segment's last checkpoint; -1 for none
	broken  error    // a failed group could not be truncated away: retried before anything else is written

	buf    []byte // writeBuf capacity
	bufOff int64  // file offset of buf[0]
	spare  []*Record
	cps    []checkpoint // checkpoints of the group being written
}

func (w *writer) init(queueLen int) {
	w.buf = make([]byte, 0, writeBuf)
	w.spare = make([]*Record, 0, queueLen)
}

// run is the writer goroutine: it takes whatever is queued, writes it, fsyncs
// once per segment touched (group fsync) and hands the batch to OnDone.
func (s *Spool) run() {
	defer close(s.done)
	for {
		<-s.wake
		s.qmu.Lock()
		batch := s.pending
		s.pending = s.w.spare[:0]
		s.qbytes = 0
		closing := s.closing
		s.qmu.Unlock()

		if s.ackRotate.Swap(false) {
			s.rotateAcked()
		}
		if len(batch) > 0 {
			s.writeBatch(batch)
			s.opt.OnDone(batch)
			clear(batch) // the records are the caller's again
		}
		s.w.spare = batch[:0]
		if closing {
			break
		}
	}
	w := &s.w
	w.f.DropCache(w.dropped, w.off-w.dropped)
	if err := w.f.Close(); err != nil {
		s.closeErr = fmt.Errorf("spool: close segment %s: %w", segName(w.seg.base), err)
	}
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
}

// writeBatch writes batch in groups, one per segment it touches, each ended
// by one fsync; every record gets its Seq or its Err.
func (s *Spool) writeBatch(batch []*Record) {
	now := time.Now().UnixNano()
	ok := 0
	for len(batch) > 0 {
		n, err := s.writeGroup(batch, now)
		if err == nil {
			ok += n
			if batch = batch[n:]; len(batch) > 0 {
				err = s.rotate() // the next record does not fit in the active segment
			}
		}
		if err != nil {
			var lost int64
			for _, r := range batch {
				r.Seq, r.Err = 0, err
				lost += r.size
			}
			s.used.Add(-lost)
			s.failed.Add(uint64(len(batch)))
			break
		}
	}
	s.appended.Add(uint64(ok))
}

// writeGroup writes the records of batch that fit into the active segment,
// fsyncs them, drops their pages from the cache and publishes them to
// readers, Ack and Stats. It returns how many it wrote; on error none of
// them is on disk (the segment was truncated back) and the caller fails the
// rest of the batch.
func (s *Spool) writeGroup(batch []*Record, now int64) (int, error) {
	w := &s.w
	if w.broken != nil {
		if err := s.repair(); err != nil {
			return 0, err
		}
	}
	start, first, lastCP := w.off, w.next, w.lastCP
	w.buf, w.bufOff, w.cps = w.buf[:0], w.off, w.cps[:0]
	n := 0
	var err error
	for _, r := range batch {
		if w.off > 0 && w.off+r.size > s.opt.SegmentBytes {
			break
		}
		recvAt := now
		if !r.ReceivedAt.IsZero() {
			recvAt = r.ReceivedAt.UnixNano()
		}
		if w.lastCP < 0 || w.off-w.lastCP >= indexEvery {
			w.cps = append(w.cps, checkpoint{seq: w.next, off: w.off, recvAt: recvAt})
			w.lastCP = w.off
		}
		if err = s.put(r, w.next, recvAt); err != nil {
			break
		}
		r.Seq = w.next
		w.next++
		w.off += r.size
		n++
	}
	if err == nil {
		err = s.flush()
	}
	if err == nil && n > 0 {
		if err = w.f.Sync(); err != nil {
			err = fmt.Errorf("spool: fsync %s: %w", segName(w.seg.base), noSpace(err))
		}
		s.fsyncs.Add(1)
	}
	if err != nil {
		w.next, w.lastCP = first, lastCP
		s.truncate(start, err)
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	s.mu.Lock()
	g := w.seg
	if g.empty() {
		g.first = first
	}
	g.last, g.size = w.next-1, w.off
	g.index = append(g.index, w.cps...)
	s.lastSeq = g.last
	s.mu.Unlock()
	// Drop the pages now on disk, except the last partial one: the next
	// group writes into it, and dropping it would make the kernel read it back.
	if end := w.off &^ (s.page - 1); end > w.dropped {
		w.f.DropCache(w.dropped, end-w.dropped)
		w.dropped = end
	}
	return n, nil
}

// put encodes r with seq into the write buffer. The CRC is computed over the
// caller's slices before any part is written, so the header is complete by
// the time the buffer is flushed; large parts bypass the buffer.
func (s *Spool) put(r *Record, seq uint64, recvAt int64) error {
	w := &s.w
	if cap(w.buf)-len(w.buf) < headerSize {
		if err := s.flush(); err != nil {
			return err
		}
	}
	h := w.buf[len(w.buf) : len(w.buf)+headerSize]
	w.buf = w.buf[:len(w.buf)+headerSize]
	crc := putHeader(h, r, seq, recvAt)
	crc = crc32.Update(crc, castagnoli, r.Stream)
	crc = crc32.Update(crc, castagnoli, r.ContentType)
	crc = crc32.Update(crc, castagnoli, r.RemoteAddr)
	crc = crc32.Update(crc, castagnoli, r.IdempotencyKey)
	crc = crc32.Update(crc, castagnoli, r.Body)
	putCRC(h, crc)
	for _, p := range [...][]byte{r.Stream, r.ContentType, r.RemoteAddr, r.IdempotencyKey, r.Body} {
		if err := s.part(p); err != nil {
			return err
		}
	}
	return nil
}

func (s *Spool) part(p []byte) error {
	w := &s.w
	if len(p) <= cap(w.buf)-len(w.buf) {
		w.buf = append(w.buf, p...)
		return nil
	}
	if err := s.flush(); err != nil {
		return err
	}
	if len(p) <= cap(w.buf)/2 {
		w.buf = append(w.buf, p...)
		return nil
	}
	if _, err := w.f.WriteAt(p, w.bufOff); err != nil {
		return fmt.Errorf("spool: write %s: %w", segName(w.seg.base), noSpace(err))
	}
	w.bufOff += int64(len(p))
	return nil
}

func (s *Spool) flush() error {
	w := &s.w
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.f.WriteAt(w.buf, w.bufOff); err != nil {
		w.buf = w.buf[:0]
		return fmt.Errorf("spool: write %s: %w", segName(w.seg.base), noSpace(err))
	}
	w.bufOff += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

// truncate cuts the active segment back to off, the end of its last good
// record, after a failed group, and makes the cut durable: a record that was
// reported failed must never be found later, whole or torn. If the truncate
// or its fsync fails, the segment is marked broken and nothing more is
// written into it until repair succeeds.
func (s *Spool) truncate(off int64, cause error) {
	w := &s.w
	w.off, w.buf = off, w.buf[:0]
	err := w.f.Truncate(off)
	if err == nil {
		err = w.f.Sync()
	}
	if err != nil {
		w.broken = fmt.Errorf("spool: segment %s cannot be truncated back to %d after %v: %w", segName(w.seg.base), off, cause, err)
		s.log.Error("spool: cannot truncate a failed write; appends fail until it can", "segment", segName(w.seg.base), "offset", off, "err", err)
		return
	}
	w.broken = nil
}

func (s *Spool) repair() error {
	cause := s.w.broken
	s.truncate(s.w.off, cause)
	if s.w.broken != nil {
		return s.w.broken
	}
	s.log.Info("spool: failed write truncated; appending again", "segment", segName(s.w.seg.base), "offset", s.w.off)
	return nil
}

// rotate closes the active segment (all of it fsync'd) and starts a new one
// named by the next seq. The new file's directory entry is fsync'd before
// anything is written to it. The old segment is deleted at once if Ack
// already covers it.
func (s *Spool) rotate() error {
	w := &s.w
	if w.broken != nil {
		if err := s.repair(); err != nil {
			return err
		}
	}
	name := segPath(s.dir, w.next)
	f, err := s.open(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("spool: create segment: %w", noSpace(err))
	}
	if err := syncDir(s.dirf); err != nil {
		f.Close()
		os.Remove(name)
		return noSpace(err)
	}
	old, oldf := w.seg, w.f
	oldf.DropCache(w.dropped, w.off-w.dropped)
	if err := oldf.Close(); err != nil {
		s.log.Warn("spool: close segment", "segment", segName(old.base), "err", err)
	}
	g := &segment{base: w.next}
	w.f, w.seg, w.off, w.dropped, w.lastCP = f, g, 0, 0, -1
	s.mu.Lock()
	s.segs = append(s.segs, g)
	dead := old.empty() || old.last <= s.acked
	if dead {
		n := len(s.segs)
		s.segs[n-2], s.segs[n-1] = g, nil
		s.segs = s.segs[:n-1]
	}
	s.mu.Unlock()
	if dead {
		s.remove(old)
	}
	return nil
}

// rotateAcked closes and deletes the active segment if Ack has covered all
// of it (and it is still worth a new file: see Ack).
func (s *Spool) rotateAcked() {
	s.mu.Lock()
	g := s.w.seg
	do := !g.empty() && g.last <= s.acked
	s.mu.Unlock()
	if !do {
		return
	}
	if err := s.rotate(); err != nil {
		s.log.Warn("spool: cannot start a new segment after an acknowledgement; retried at the next Ack or when the segment fills", "err", err)
	}
}

// noSpace marks ENOSPC (and EDQUOT) errors with ErrNoSpace, keeping the cause.
func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		if !errors.Is(err, ErrNoSpace) {
			return fmt.Errorf("%w: %w", ErrNoSpace, err)
		}
	}
	return err
}
