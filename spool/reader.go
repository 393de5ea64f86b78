package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// readWindow is a Reader's buffer; it grows only to hold a record larger
// than it (so at most to the largest record read, bounded by SegmentBytes)
// and shrinks back after.
const readWindow = 64 << 10

// Reader hands out durable records in seq order. It reads only what the
// writer has fsync'd, through a bounded buffer, and drops what it has read
// from the page cache. One goroutine at a time; any number of Readers may
// run beside the writer, Ack and each other.
type Reader struct {
	s     *Spool
	after uint64 // the last seq handed out, or where reading started
	base  uint64 // the segment open in f (when f != nil)
	f     file
	off   int64 // offset of the next record in f
	limit int64 // durable end of the segment as last seen
	seal  bool  // the segment is no longer the active one: limit is final
	drop  int64 // pages before this offset were dropped from the cache
	win   window
	rec   Record
}

// NewReader returns a reader of the records with seq > after. Records the
// spool no longer has (acknowledged and deleted) are skipped.
func (s *Spool) NewReader(after uint64) *Reader {
	return &Reader{s: s, after: after, win: window{buf: make([]byte, readWindow)}}
}

// Next returns the next record. Its slices point into the Reader's buffer and
// stay valid until the next call to Next or Close. At the end of what is
// durable it returns io.EOF; later calls return records appended since. A
// record that fails its checks on a later read (the disk changed since Open
// checked it) yields an error wrapping ErrCorrupt, and so does every call
// after it: the spool never skips a record on its own.
func (r *Reader) Next() (*Record, error) {
	r.win.shrink(readWindow)
	for {
		if r.f == nil {
			ok, err := r.openNext()
			if err != nil || !ok {
				return nil, err
			}
		}
		if !r.seal {
			r.refresh()
		}
		if r.off >= r.limit {
			if !r.seal {
				return nil, io.EOF
			}
			r.closeSeg()
			continue
		}
		rec, err := r.read()
		if err != nil {
			return nil, err
		}
		if rec.Seq <= r.after {
			continue
		}
		r.after = rec.Seq
		if end := r.off &^ (r.s.page - 1); end > r.drop {
			r.f.DropCache(r.drop, end-r.drop)
			r.drop = end
		}
		return rec, nil
	}
}

// read decodes the record at r.off and moves past it.
func (r *Reader) read() (*Record, error) {
	where := func(err error) error {
		return fmt.Errorf("spool: segment %s offset %d: %w", segName(r.base), r.off, err)
	}
	hb, err := r.win.view(r.off, headerSize)
	if err != nil {
		return nil, where(err)
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, where(err)
	}
	n := h.size()
	if r.off+n > r.limit {
		return nil, where(fmt.Errorf("%w: record of %d bytes past the durable end %d", errCorrupt, n, r.limit))
	}
	b, err := r.win.view(r.off, int(n))
	if err != nil {
		return nil, where(err)
	}
	if _, err := decode(b, &r.rec); err != nil {
		return nil, where(err)
	}
	r.off += n
	return &r.rec, nil
}

// openNext opens the first live segment holding a seq above r.after and
// positions r.off at the indexed record nearest before it. ok is false when
// no segment has one yet.
func (r *Reader) openNext() (ok bool, err error) {
	for range 3 { // a segment deleted by Ack between the lookup and the open: look again
		s := r.s
		s.mu.Lock()
		var g *segment
		for i, c := range s.segs {
			if !c.empty() && c.last > r.after {
				g = c
				r.limit, r.seal = c.size, i < len(s.segs)-1
				break
			}
		}
		var cp checkpoint
		if g != nil {
			cp = g.seek(r.after + 1)
		}
		s.mu.Unlock()
		if g == nil {
			return false, io.EOF
		}
		f, err := s.open(segPath(s.dir, g.base), os.O_RDONLY)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("spool: open segment %s: %w", segName(g.base), err)
		}
		f.NoReadahead()
		r.f, r.base, r.off, r.drop = f, g.base, cp.off, cp.off&^(s.page-1)
		r.win.reset(f, r.limit)
		return true, nil
	}
	return false, fmt.Errorf("spool: segments keep disappearing under the reader")
}

// refresh reads the durable end of the active segment being read.
func (r *Reader) refresh() {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, g := range s.segs {
		if g.base == r.base {
			r.limit, r.seal = g.size, i < len(s.segs)-1
			r.win.limit = r.limit
			return
		}
	}
	r.seal = true // deleted by Ack: it was sealed, and our descriptor still reads it
}

func (r *Reader) closeSeg() {
	r.f.DropCache(0, r.limit) // all of it: cheap once per segment, and catches any page the drops behind missed
	r.f.Close()
	r.f = nil
}

// Close releases the open segment.
func (r *Reader) Close() error {
	if r.f != nil {
		r.closeSeg()
	}
	return nil
}
