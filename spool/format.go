package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// The record layout; see "On disk" in the package documentation.
const (
	headerSize = 40
	version    = 1

	offMagic    = 0
	offCRC      = 4
	offVersion  = 8
	offFlags    = 9
	offStream   = 10
	offCType    = 12
	offAddr     = 14
	offKey      = 16
	offReserved = 18
	offBody     = 20
	offSeq      = 24
	offRecvAt   = 32
	crcFrom     = 8 // the CRC covers header[crcFrom:] and the payload

	maxMeta = 1<<16 - 1 // each metadata field's length is a uint16
	maxBody = 1<<32 - 1 // the body's length is a uint32
)

// magic opens every record: "UPSP".
var magic = [4]byte{'U', 'P', 'S', 'P'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt is what the decoder reports for bytes that are not a whole valid
// record; the recovery scan and the reader wrap it with where it was found.
var errCorrupt = errors.New("spool: corrupt record")

// header is a parsed record header.
type header struct {
	crc                      uint32
	stream, ctype, addr, key uint16
	body                     uint32
	seq                      uint64
	recvAt                   int64
	flags                    uint8
}

// payloadLen is the number of bytes after the header.
func (h *header) payloadLen() int64 {
	return int64(h.stream) + int64(h.ctype) + int64(h.addr) + int64(h.key) + int64(h.body)
}

// size is the record's length on disk, header included.
func (h *header) size() int64 { return headerSize + h.payloadLen() }

// parseHeader checks what can be checked without the payload: the magic, the
// version and the zero fields. The CRC is checked by the caller over
// b[crcFrom:headerSize] and the payload.
func parseHeader(b []byte) (header, error) {
	if len(b) < headerSize {
		return header{}, fmt.Errorf("%w: short header (%d of %d bytes)", errCorrupt, len(b), headerSize)
	}
	if [4]byte(b[offMagic:offMagic+4]) != magic {
		return header{}, fmt.Errorf("%w: bad magic %x", errCorrupt, b[offMagic:offMagic+4])
	}
	if b[offVersion] != version {
		return header{}, fmt.Errorf("%w: unknown version %d", errCorrupt, b[offVersion])
	}
	if b[offFlags]&^FlagRows != 0 || b[offReserved] != 0 || b[offReserved+1] != 0 {
		return header{}, fmt.Errorf("%w: reserved bits set", errCorrupt)
	}
	le := binary.LittleEndian
	return header{
		flags:  b[offFlags],
		crc:    le.Uint32(b[offCRC:]),
		stream: le.Uint16(b[offStream:]),
		ctype:  le.Uint16(b[offCType:]),
		addr:   le.Uint16(b[offAddr:]),
		key:    le.Uint16(b[offKey:]),
		body:   le.Uint32(b[offBody:]),
		seq:    le.Uint64(b[offSeq:]),
		recvAt: int64(le.Uint64(b[offRecvAt:])),
	}, nil
}

// recordSize is the encoded length of r, or an error if a field is longer
// than the format allows.
func recordSize(r *Record) (int64, error) {
	if len(r.Stream) > maxMeta || len(r.ContentType) > maxMeta || len(r.RemoteAddr) > maxMeta || len(r.IdempotencyKey) > maxMeta {
		return 0, fmt.Errorf("%w: a metadata field is longer than %d bytes", ErrTooLarge, maxMeta)
	}
	if int64(len(r.Body)) > maxBody {
		return 0, fmt.Errorf("%w: body of %d bytes", ErrTooLarge, len(r.Body))
	}
	return headerSize + int64(len(r.Stream)+len(r.ContentType)+len(r.RemoteAddr)+len(r.IdempotencyKey)) + int64(len(r.Body)), nil
}

// putHeader writes r's header with seq into h (headerSize bytes) and returns
// the CRC state after the header fields; the caller continues it over the
// payload with crc32.Update and stores the result with putCRC.
func putHeader(h []byte, r *Record, seq uint64, recvAt int64) uint32 {
	le := binary.LittleEndian
	copy(h[offMagic:], magic[:])
	h[offVersion] = version
	h[offFlags] = r.Flags & FlagRows
	le.PutUint16(h[offStream:], uint16(len(r.Stream)))
	le.PutUint16(h[offCType:], uint16(len(r.ContentType)))
	le.PutUint16(h[offAddr:], uint16(len(r.RemoteAddr)))
	le.PutUint16(h[offKey:], uint16(len(r.IdempotencyKey)))
	h[offReserved], h[offReserved+1] = 0, 0
	le.PutUint32(h[offBody:], uint32(len(r.Body)))
	le.PutUint64(h[offSeq:], seq)
	le.PutUint64(h[offRecvAt:], uint64(recvAt))
	return crc32.Update(0, castagnoli, h[crcFrom:headerSize])
}

func putCRC(h []byte, crc uint32) { binary.LittleEndian.PutUint32(h[offCRC:], crc) }

// appendRecord appends r encoded with seq to dst (tests and the fuzz target;
// the writer encodes in place, see writer.go).
func appendRecord(dst []byte, r *Record, seq uint64) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, headerSize)...)
	crc := putHeader(dst[start:], r, seq, r.ReceivedAt.UnixNano())
	for _, p := range [...][]byte{r.Stream, r.ContentType, r.RemoteAddr, r.IdempotencyKey, r.Body} {
		dst = append(dst, p...)
		crc = crc32.Update(crc, castagnoli, p)
	}
	putCRC(dst[start:], crc)
	return dst
}

// decode reads one record from the front of b. The record's slices point into
// b. It returns the record's length; an error wrapping errCorrupt means b does
// not start with a whole valid record (too short, bad magic or version, or a
// CRC mismatch).
func decode(b []byte, r *Record) (int, error) {
	h, err := parseHeader(b)
	if err != nil {
		return 0, err
	}
	n := h.size()
	if int64(len(b)) < n {
		return 0, fmt.Errorf("%w: short record (%d of %d bytes)", errCorrupt, len(b), n)
	}
	crc := crc32.Update(0, castagnoli, b[crcFrom:headerSize])
	crc = crc32.Update(crc, castagnoli, b[headerSize:n])
	if crc != h.crc {
		return 0, fmt.Errorf("%w: CRC mismatch (stored %08x, computed %08x)", errCorrupt, h.crc, crc)
	}
	p := b[headerSize:n:n]
	take := func(k int) []byte {
		f := p[:k:k]
		p = p[k:]
		return f
	}
	r.Stream = take(int(h.stream))
	r.ContentType = take(int(h.ctype))
	r.RemoteAddr = take(int(h.addr))
	r.IdempotencyKey = take(int(h.key))
	r.Body = take(int(h.body))
	r.Flags = h.flags
	r.ReceivedAt = time.Unix(0, h.recvAt)
	r.Seq = h.seq
	r.Err = nil
	return int(n), nil
}
