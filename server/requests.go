package server

import (
	"sync"
	"sync/atomic"

	"github.com/valyala/bytebufferpool"

	"upsink/conn"
	"upsink/durable"
	"upsink/ingest"
)

// requests is the table of in-flight request records, one at most per
// HTTP/1.1 connection and per HTTP/2 stream, addressed by index, grown in pages and recycled via a free list.
// get and free may be called from any loop (and free from a completion).
type requests struct {
	mu   sync.Mutex
	tab  *conn.Pages[request]
	idle []uint32 // freed indices
	next uint32
	max  uint32
	used atomic.Int64
}

// request is what a connection holds while it reads a body and waits for the
// commit. Its metadata and body share one pooled buffer. It is touched by the
// loop that owns the connection, and by the durable sink (the store's and
// the spool's writers) between Submit and OnDone (up only).
type request struct {
	up       durable.Upload
	buf      *bytebufferpool.ByteBuffer
	reserved int64      // bytes charged to the budget for the buffer: metaMax + body capacity
	fd       int32      // the connection's fd
	gen      uint32     // the slot's generation when the request started
	left     uint32     // body bytes still expected: of the Content-Length, or of the current chunk
	start    conn.Clock // when the body began (the minimum rate counts from here)
	progress conn.Clock // when body bytes last arrived
	loop     uint8
	chunk    uint8 // chunk decoder state between reads (parser.Chunked.Save)
	streamN  uint8
	peerN    uint8
	ctypeN   uint8
	keyN     uint8         // the Idempotency-Key's bytes after the content type; 0 = none
	format   ingest.Format // ingest: the body's format; FormatInvalid for an upload
	// submitted: handed to the durable sink; the completion frees it (for
	// HTTP/1.1 the slot's FlagSubmitted says the same).
	submitted bool
	queryN    uint16 // ingest: the query string's bytes after the key
	// h2: it came on an HTTP/2 stream (the connection's session maps the
	// stream to it); in the padding, so the record stays 360 B.
	h2 bool
}

func (r *requests) at(idx uint32) *request { return r.tab.At(int(idx)) }

func (r *requests) inUse() int64 { return r.used.Load() }

// get returns a fresh record index, or false when all are in use.
func (r *requests) get() (uint32, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.idle); n > 0 {
		idx := r.idle[n-1]
		r.idle = r.idle[:n-1]
		r.used.Add(1)
		return idx, true
	}
	if r.next >= r.max {
		return 0, false
	}
	r.next++
	r.used.Add(1)
	return r.next - 1, true
}

// free returns the record's buffer and budget and recycles it.
func (r *requests) free(h *handler, idx uint32) {
	rq := r.at(idx)
	if rq.buf != nil {
		bytebufferpool.Put(rq.buf)
	}
	h.budget.Release(rq.reserved)
	*rq = request{}
	r.mu.Lock()
	r.idle = append(r.idle, idx)
	r.mu.Unlock()
	r.used.Add(-1)
}

func (r *request) metaLen() int {
	return int(r.streamN) + int(r.peerN) + int(r.ctypeN) + int(r.keyN) + int(r.queryN)
}

// bodyLen is the number of body bytes received so far.
func (r *request) bodyLen() int { return len(r.buf.B) - r.metaLen() }
