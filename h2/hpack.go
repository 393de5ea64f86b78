package h2

import "unsafe"

// HPACK (RFC 7541): the request decoder with its dynamic table, and the
// response encoder, which never indexes (so the peer's
// SETTINGS_HEADER_TABLE_SIZE does not matter to it).
//
// Our own decoder rather than golang.org/x/net/http2/hpack's: that one
// hands out strings, so every literal field costs an allocation, and its
// dynamic table allocates per entry; this one decodes into a scratch
// buffer and keeps the table in one byte slice, so a steady stream of
// requests allocates nothing.

// staticTable is RFC 7541 Appendix A (index 1 is staticTable[0]).
var staticTable = [61][2]string{
	{":authority", ""}, {":method", "GET"}, {":method", "POST"}, {":path", "/"},
	{":path", "/index.html"}, {":scheme", "http"}, {":scheme", "https"}, {":status", "200"},
	{":status", "204"}, {":status", "206"}, {":status", "304"}, {":status", "400"},
	{":status", "404"}, {":status", "500"}, {"accept-charset", ""}, {"accept-encoding", "gzip, deflate"},
	{"accept-language", ""}, {"accept-ranges", ""}, {"accept", ""}, {"access-control-allow-origin", ""},
	{"age", ""}, {"allow", ""}, {"authorization", ""}, {"cache-control", ""},
	{"content-disposition", ""}, {"content-encoding", ""}, {"content-language", ""}, {"content-length", ""},
	{"content-location", ""}, {"content-range", ""}, {"content-type", ""}, {"cookie", ""},
	{"date", ""}, {"etag", ""}, {"expect", ""}, {"expires", ""},
	{"from", ""}, {"host", ""}, {"if-match", ""}, {"if-modified-since", ""},
	{"if-none-match", ""}, {"if-range", ""}, {"if-unmodified-since", ""}, {"last-modified", ""},
	{"link", ""}, {"location", ""}, {"max-forwards", ""}, {"proxy-authenticate", ""},
	{"proxy-authorization", ""}, {"range", ""}, {"referer", ""}, {"refresh", ""},
	{"retry-after", ""}, {"server", ""}, {"set-cookie", ""}, {"strict-transport-security", ""},
	{"transfer-encoding", ""}, {"user-agent", ""}, {"vary", ""}, {"via", ""},
	{"www-authenticate", ""},
}

// entryOverhead is what RFC 7541 §4.1 adds to an entry's size.
const entryOverhead = 32

// entry is a dynamic table entry: its name and value are
// decoder.buf[off:off+nlen] and the vlen bytes after.
type entry struct{ off, nlen, vlen uint32 }

// decoder is the HPACK decoding context of a connection. Touched only by
// the connection's loop.
type decoder struct {
	limit uint32  // SETTINGS_HEADER_TABLE_SIZE we announced: the most a size update may ask
	size  uint32  // the table's current maximum size
	used  uint32  // sum of the entries' sizes
	buf   []byte  // entries' bytes, oldest first; grown as needed up to limit
	ents  []entry // oldest first
	first bool    // no field decoded yet in this block: a size update may come
}

func (d *decoder) init(limit uint32) {
	*d = decoder{limit: limit, size: limit, buf: d.buf[:0], ents: d.ents[:0]}
}

// evict drops the oldest entries until used+need <= size.
func (d *decoder) evict(need uint32) {
	k := 0
	for k < len(d.ents) && d.used+need > d.size {
		e := d.ents[k]
		d.used -= e.nlen + e.vlen + entryOverhead
		k++
	}
	if k == 0 {
		return
	}
	if k == len(d.ents) {
		d.ents, d.buf = d.ents[:0], d.buf[:0]
		return
	}
	shift := d.ents[k].off
	n := copy(d.buf, d.buf[shift:])
	d.buf = d.buf[:n]
	n = copy(d.ents, d.ents[k:])
	d.ents = d.ents[:n]
	for i := range d.ents {
		d.ents[i].off -= shift
	}
}

// insert adds name and value as the newest entry (RFC 7541 §4.4).
func (d *decoder) insert(name, value []byte) {
	sz := uint32(len(name)+len(value)) + entryOverhead
	if sz > d.size {
		d.evict(d.size + 1) // empties the table
		return
	}
	d.evict(sz)
	if need := len(d.buf) + len(name) + len(value); need > cap(d.buf) {
		// Grow by doubling, never past the table's bound, so a connection
		// whose peer indexes little holds little.
		b := make([]byte, len(d.buf), max(min(max(2*cap(d.buf), 256), int(d.size)), need))
		copy(b, d.buf)
		d.buf = b
	}
	off := uint32(len(d.buf))
	d.buf = append(append(d.buf, name...), value...)
	d.ents = append(d.ents, entry{off, uint32(len(name)), uint32(len(value))})
	d.used += sz
}

// lookup is index i's name and value (static or dynamic).
func (d *decoder) lookup(i uint64) (name, value []byte, ok bool) {
	if i == 0 {
		return nil, nil, false
	}
	if i <= uint64(len(staticTable)) {
		e := &staticTable[i-1]
		return stringBytes(e[0]), stringBytes(e[1]), true
	}
	i -= uint64(len(staticTable))
	if i > uint64(len(d.ents)) {
		return nil, nil, false
	}
	e := d.ents[uint64(len(d.ents))-i]
	return d.buf[e.off : e.off+e.nlen], d.buf[e.off+e.nlen : e.off+e.nlen+e.vlen], true
}

// readInt reads an integer with an n-bit prefix (RFC 7541 §5.1) from p.
func readInt(p []byte, n uint) (v uint64, rest []byte, ok bool) {
	if len(p) == 0 {
		return 0, p, false
	}
	mask := uint64(1)<<n - 1
	v = uint64(p[0]) & mask
	p = p[1:]
	if v < mask {
		return v, p, true
	}
	for shift := uint(0); len(p) > 0; shift += 7 {
		if shift > 28 { // values up to 2^32 are plenty
			return 0, p, false
		}
		b := p[0]
		p = p[1:]
		v += uint64(b&0x7f) << shift
		if b&0x80 == 0 {
			return v, p, true
		}
	}
	return 0, p, false
}

// readString appends a string literal (RFC 7541 §5.2) at p's start to dst,
// failing if dst would pass limit bytes.
func readString(dst, p []byte, limit int) ([]byte, []byte, hpackErr) {
	if len(p) == 0 {
		return dst, p, hpackBad
	}
	huff := p[0]&0x80 != 0
	n, p, ok := readInt(p, 7)
	if !ok || n > uint64(len(p)) {
		return dst, p, hpackBad
	}
	s := p[:n]
	p = p[n:]
	if huff {
		dst, err := huffDecode(dst, s, limit)
		return dst, p, err
	}
	if len(dst)+len(s) > limit {
		return dst, p, hpackTooLarge
	}
	return append(dst, s...), p, hpackOK
}

// hpackErr tells why a field could not be decoded.
type hpackErr uint8

const (
	hpackOK       hpackErr = iota
	hpackBad               // COMPRESSION_ERROR
	hpackTooLarge          // the decoded list passes the limit
)

// next decodes the field representation at p's start, appending its name
// and then its value to sc (at most limit bytes in all); it returns the
// rest of p. A dynamic table size update appends nothing and has nlen -1.
func (d *decoder) next(sc, p []byte, limit int) (out []byte, nlen int, rest []byte, err hpackErr) {
	start := len(sc)
	b := p[0]
	var idx uint64
	var ok bool
	switch {
	case b&0x80 != 0: // indexed
		if idx, p, ok = readInt(p, 7); !ok {
			return sc, 0, p, hpackBad
		}
		name, value, ok := d.lookup(idx)
		if !ok {
			return sc, 0, p, hpackBad
		}
		if start+len(name)+len(value) > limit {
			return sc, 0, p, hpackTooLarge
		}
		d.first = false
		sc = append(append(sc, name...), value...)
		return sc, len(name), p, hpackOK
	case b&0xe0 == 0x20: // dynamic table size update
		if idx, p, ok = readInt(p, 5); !ok || !d.first || idx > uint64(d.limit) {
			return sc, 0, p, hpackBad
		}
		d.size = uint32(idx)
		d.evict(0)
		return sc, -1, p, hpackOK
	}
	// Literal: with incremental indexing (01), without (0000) or never
	// indexed (0001).
	index := b&0xc0 == 0x40
	prefix := uint(4)
	if index {
		prefix = 6
	}
	if idx, p, ok = readInt(p, prefix); !ok {
		return sc, 0, p, hpackBad
	}
	d.first = false
	if idx == 0 {
		if sc, p, err = readString(sc, p, limit); err != hpackOK {
			return sc, 0, p, err
		}
	} else {
		name, _, ok := d.lookup(idx)
		if !ok {
			return sc, 0, p, hpackBad
		}
		if start+len(name) > limit {
			return sc, 0, p, hpackTooLarge
		}
		sc = append(sc, name...)
	}
	nlen = len(sc) - start
	if sc, p, err = readString(sc, p, limit); err != hpackOK {
		return sc, 0, p, err
	}
	if index {
		d.insert(sc[start:start+nlen], sc[start+nlen:])
	}
	return sc, nlen, p, hpackOK
}

// stringBytes is s's bytes, not to be written.
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
