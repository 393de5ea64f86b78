package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// maxKeptBody is the largest response body respReader keeps; longer bodies
// are read and discarded.
const maxKeptBody = 64 << 10

// response is the little the load generator needs from an HTTP/1.x response.
type response struct {
	status int
	length int64  // Content-Length, -1 if absent
	close  bool   // the server ends the connection after this response
	body   []byte // valid until the next read; nil if longer than maxKeptBody
}

// respReader parses HTTP/1.x responses off one connection: the status line,
// Content-Length, Connection and Transfer-Encoding, and the body. It reuses
// its buffers, so a keep-alive exchange allocates nothing.
type respReader struct {
	br   *bufio.Reader
	body []byte
}

func newRespReader(r io.Reader) *respReader {
	return &respReader{br: bufio.NewReaderSize(r, 4096)}
}

func (rr *respReader) reset(r io.Reader) { rr.br.Reset(r) }

var (
	errBadStatus  = errors.New("malformed status line")
	errBadHeader  = errors.New("malformed header line")
	errBadLength  = errors.New("bad Content-Length")
	errChunked    = errors.New("Transfer-Encoding responses are not supported")
	errNoLength   = errors.New("keep-alive response without Content-Length")
	errHeadTooBig = errors.New("response head line longer than 4 KiB")
)

// line returns the next line without its CRLF (or bare LF).
func (rr *respReader) line() ([]byte, error) {
	l, err := rr.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errHeadTooBig
		}
		if err == io.EOF && len(l) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	l = l[:len(l)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l, nil
}

// read parses one response, skipping interim 1xx responses.
func (rr *respReader) read() (response, error) {
	for {
		r, err := rr.readOne()
		if err != nil || r.status >= 200 || r.status == 101 {
			return r, err
		}
	}
}

func (rr *respReader) readOne() (response, error) {
	r := response{length: -1}
	l, err := rr.line()
	if err != nil {
		return r, err
	}
	// "HTTP/1.1 201 Created": version, SP, three digits, then SP or end.
	if len(l) < 12 || !bytes.HasPrefix(l, []byte("HTTP/1.")) || (l[7] != '0' && l[7] != '1') || l[8] != ' ' ||
		(len(l) > 12 && l[12] != ' ') {
		return r, fmt.Errorf("%w: %q", errBadStatus, trunc(l))
	}
	for _, c := range l[9:12] {
		if c < '0' || c > '9' {
			return r, fmt.Errorf("%w: %q", errBadStatus, trunc(l))
		}
		r.status = r.status*10 + int(c-'0')
	}
	http10 := l[7] == '0'
	r.close = http10
	for {
		l, err = rr.line()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return r, err
		}
		if len(l) == 0 {
			break
		}
		i := bytes.IndexByte(l, ':')
		if i <= 0 {
			return r, fmt.Errorf("%w: %q", errBadHeader, trunc(l))
		}
		name, val := l[:i], bytes.TrimSpace(l[i+1:])
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, ok := parseUint(val)
			if !ok || (r.length >= 0 && r.length != n) {
				return r, fmt.Errorf("%w: %q", errBadLength, trunc(val))
			}
			r.length = n
		case bytes.EqualFold(name, []byte("Connection")):
			if hasToken(val, "close") {
				r.close = true
			} else if http10 && hasToken(val, "keep-alive") {
				r.close = false
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return r, errChunked
		}
	}
	if r.status < 200 || r.status == 204 || r.status == 304 {
		r.length = 0
	}
	switch {
	case r.length < 0 && !r.close:
		return r, errNoLength
	case r.length < 0: // body runs to EOF
		r.body = r.body[:0]
		b := bytes.NewBuffer(rr.body[:0])
		_, err := io.Copy(b, io.LimitReader(rr.br, maxKeptBody))
		if err != nil {
			return r, err
		}
		rr.body = b.Bytes()
		r.body = rr.body
		r.length = int64(len(r.body))
		if n, _ := io.Copy(io.Discard, rr.br); n > 0 {
			r.length += n
			r.body = nil
		}
	case r.length <= maxKeptBody:
		if int64(cap(rr.body)) < r.length {
			rr.body = make([]byte, r.length)
		}
		r.body = rr.body[:r.length]
		if _, err := io.ReadFull(rr.br, r.body); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return r, err
		}
	default:
		if _, err := io.CopyN(io.Discard, rr.br, r.length); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return r, err
		}
	}
	return r, nil
}

func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// hasToken reports whether the comma-separated list v holds tok (any case).
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			t, v = v, nil
		}
		if bytes.EqualFold(bytes.TrimSpace(t), []byte(tok)) {
			return true
		}
	}
	return false
}

func trunc(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// Where an acknowledged upload is durable, from the answer's "durable".
const (
	durableUnsaid uint8 = iota // no "durable" field (the seed's 201, the net/http baseline)
	durableMySQL               // "durable":"mysql"
	durableSpool               // "durable":"spool"
	durableOther               // another value
)

// answer is what the load generator reads from a 2xx answer's JSON:
// 201 {"id":N,"stream":"S","bytes":B,"durable":"mysql"} or
// 202 {"stream":"S","bytes":B,"durable":"spool","spool_seq":N}.
type answer struct {
	id, spoolSeq uint64 // 0 when absent
	durable      uint8
}

// parseAnswer reads an upload's 2xx answer without allocating. bad is a
// reason when the answer does not say what its status promises: a 202 must
// be "durable":"spool" with a spool_seq and no id; a 201 must carry an id
// and, if it says, be "durable":"mysql".
func parseAnswer(status int, b []byte) (a answer, bad string) {
	a.id, _ = jsonUint(b, keyID)
	a.spoolSeq, _ = jsonUint(b, keySpoolSeq)
	if i := bytes.Index(b, keyDurable); i >= 0 {
		v := b[i+len(keyDurable):]
		switch {
		case bytes.HasPrefix(v, valMySQL):
			a.durable = durableMySQL
		case bytes.HasPrefix(v, valSpool):
			a.durable = durableSpool
		default:
			a.durable = durableOther
		}
	}
	switch status {
	case 201:
		if a.id == 0 {
			return a, "201 without an id"
		}
		if a.durable != durableUnsaid && a.durable != durableMySQL {
			return a, `201 not "durable":"mysql"`
		}
	case 202:
		if a.durable != durableSpool {
			return a, `202 not "durable":"spool"`
		}
		if a.spoolSeq == 0 {
			return a, "202 without a spool_seq"
		}
		if a.id != 0 {
			return a, "202 with an id"
		}
	}
	return a, ""
}

// What parseAnswer looks for (as []byte: searching with string(b) would
// copy bodies longer than 32 bytes).
var (
	keyID       = []byte(`"id":`)
	keySpoolSeq = []byte(`"spool_seq":`)
	keyDurable  = []byte(`"durable":"`)
	valMySQL    = []byte(`mysql"`)
	valSpool    = []byte(`spool"`)
)

// jsonUint reads the unsigned integer after key (e.g. `"id":`) in b; ok is
// false when key is absent or no digit follows.
func jsonUint(b, key []byte) (v uint64, ok bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	for _, c := range b[i+len(key):] {
		d := uint64(c - '0')
		if c < '0' || c > '9' || v > (1<<64-1-d)/10 {
			break
		}
		v = v*10 + d
		ok = true
	}
	return v, ok
}
