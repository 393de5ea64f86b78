package spool

import (
	"fmt"
	"io"
	"time"
)

// indexEvery is the spacing of a segment's sparse index: a checkpoint is kept
// for the first record of a segment and then for the first record at least
// this many bytes after the previous checkpoint. 1 GiB of spool costs at most
// 8,192 checkpoints (192 KiB); readers seek with them, and the backlog's
// bytes and oldest age are exact to within one spacing.
const indexEvery = 128 << 10

// checkpoint locates one record in its segment.
type checkpoint struct {
	seq    uint64
	off    int64
	recvAt int64 // unix nanoseconds
}

// segment is the in-memory state of one segment file. It is shared: the
// writer goroutine changes the fields of the active (last) segment, and
// recovery fills them before the writer starts; Ack, Stats and readers read
// them. Every access after Open holds Spool.mu.
type segment struct {
	base        uint64 // from the file name: the seq of its first record
	first, last uint64 // seqs of its first and last durable records; 0, 0 while empty
	size        int64  // durable bytes: [0, size) holds whole records, fsync'd
	index       []checkpoint
}

func (g *segment) empty() bool { return g.last == 0 }

func (g *segment) count() uint64 {
	if g.empty() {
		return 0
	}
	return g.last - g.first + 1 // records in a segment have consecutive seqs (recover.go enforces it)
}

// seek returns the checkpoint of the last indexed record whose seq is at most
// seq (the segment's first record if none is): reading from its offset finds
// seq without scanning the records before it.
func (g *segment) seek(seq uint64) checkpoint {
	lo, hi := 0, len(g.index) // find the first checkpoint with seq > target
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if g.index[m].seq <= seq {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		if len(g.index) > 0 {
			return g.index[0]
		}
		return checkpoint{}
	}
	return g.index[lo-1]
}

// window is a bounded read buffer over a file: view returns the bytes at
// [off, off+n) from the buffer, reading a new window from off when they are
// not in it. The buffer grows only when a caller asks for more than it holds
// (a record larger than the window), so its size is at most
// max(initial, the largest view asked for). Owned by one goroutine.
type window struct {
	f     file
	buf   []byte
	start int64 // file offset of buf[0]
	n     int   // valid bytes in buf
	limit int64 // never read at or past this offset
}

func (w *window) reset(f file, limit int64) {
	w.f, w.start, w.n, w.limit = f, 0, 0, limit
}

func (w *window) view(off int64, n int) ([]byte, error) {
	if off >= w.start && off+int64(n) <= w.start+int64(w.n) {
		i := int(off - w.start)
		return w.buf[i : i+n : i+n], nil
	}
	if off+int64(n) > w.limit {
		return nil, fmt.Errorf("read of %d bytes at %d past the end (%d): %w", n, off, w.limit, io.ErrUnexpectedEOF)
	}
	if n > len(w.buf) {
		w.buf = make([]byte, n)
	}
	want := int(min(int64(len(w.buf)), w.limit-off))
	got, err := w.f.ReadAt(w.buf[:want], off)
	if got < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		w.n = 0
		return nil, fmt.Errorf("read %d bytes at %d: %w", n, off, err)
	}
	w.start, w.n = off, got
	return w.buf[:n:n], nil
}

// shrink drops a buffer grown for a large record once it is no longer needed.
func (w *window) shrink(size int) {
	if len(w.buf) > 4*size {
		w.buf, w.n = make([]byte, size), 0
	}
}

func nanosTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
