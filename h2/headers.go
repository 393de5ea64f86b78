package h2

import (
	"sync"

	"upsink/parser"
)

// Header blocks: decoding a request's (or trailers') fields with the
// connection's HPACK decoder and checking them against RFC 9113 §8.2-8.3.

// scratch is where a header block's kept values are decoded, and the
// request handed to Handler.Request. One is taken from scratchPool for
// each header block and put back right after, so an idle Conn holds none;
// taking and returning a pooled pointer does not allocate.
type scratch struct {
	buf []byte         // decoded names and values, at most Limits.MaxHeaderList bytes
	req parser.Request // aliases buf
}

var scratchPool = sync.Pool{New: func() any {
	return &scratch{buf: make([]byte, 0, parser.MaxHeaderBytes)}
}}

// blockPool holds the buffers that gather a header block split into
// CONTINUATION frames (a *[]byte of at most Limits.MaxHeaderList bytes).
var blockPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 4096)
	return &b
}}

// span is a value's place in scratch.buf; off < 0 when absent.
type span struct{ off, end int }

func (s span) present() bool { return s.off >= 0 }

func (s span) bytes(buf []byte) []byte {
	if s.off < 0 {
		return nil
	}
	return buf[s.off:s.end:s.end]
}

// nameOK[b]: b may appear in a field name sent over HTTP/2 (a token
// character, not upper case).
var nameOK = func() (t [256]bool) {
	for _, c := range "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz" {
		t[c] = true
	}
	return t
}()

func validName(n []byte) bool {
	if len(n) == 0 {
		return false
	}
	for _, c := range n {
		if !nameOK[c] {
			return false
		}
	}
	return true
}

func validValue(v []byte) bool {
	for _, c := range v {
		if c == 0 || c == '\r' || c == '\n' {
			return false
		}
	}
	return true
}

// parseLength parses a content-length value strictly: 1 to 18 digits.
func parseLength(v []byte) int64 {
	if len(v) == 0 || len(v) > 18 {
		return -1
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// Connection errors of header decoding.
var (
	errCompression = &Error{ErrCompression, "malformed header block (HPACK)"}
	errHeaderList  = &Error{ErrEnhanceYourCalm, "header block larger than SETTINGS_MAX_HEADER_LIST_SIZE"}
)

// decodeBlock decodes header block p into sc. The whole block is always
// decoded (the HPACK context must stay in step with the peer's), so a
// malformed request (a stream error) is only reported at the end; a
// non-nil error is a connection error. For trailers (trailers true) sc.req
// is not filled and any pseudo-header is malformed.
func (c *Conn) decodeBlock(sc *scratch, p []byte, trailers bool) (malformed bool, err *Error) {
	d := &c.dec
	d.first = true
	limit := int(c.lim.MaxHeaderList)
	buf := sc.buf[:0]
	none := span{-1, -1}
	method, path, scheme, auth, host := none, none, none, none, none
	ctype, idem, authz := none, none, none
	contentLength, fields, list := int64(-1), 0, 0
	regular := false
	for len(p) > 0 {
		start := len(buf)
		var nlen int
		var e hpackErr
		buf, nlen, p, e = d.next(buf, p, limit)
		switch {
		case e == hpackBad:
			return false, errCompression
		case e == hpackTooLarge:
			return false, errHeaderList
		case nlen < 0:
			continue
		}
		name, value := buf[start:start+nlen], buf[start+nlen:]
		if list += len(name) + len(value) + entryOverhead; list > limit {
			return false, errHeaderList
		}
		at := span{start + nlen, len(buf)}
		var keep *span
		if len(name) > 0 && name[0] == ':' {
			if regular || trailers {
				malformed = true
			}
			switch string(name) {
			case ":method":
				keep = &method
			case ":path":
				keep = &path
			case ":scheme":
				keep = &scheme
			case ":authority":
				keep = &auth
			default: // unknown, or a response's :status
				malformed = true
			}
			if keep != nil && keep.present() { // repeated
				malformed, keep = true, nil
			}
		} else {
			regular = true
			fields++
			if !validName(name) || !validValue(value) {
				malformed = true
			}
			switch string(name) {
			case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
				malformed = true
			case "te":
				malformed = malformed || string(value) != "trailers"
			case "content-length":
				n := parseLength(value)
				if n < 0 || contentLength >= 0 && n != contentLength {
					malformed = true
				}
				contentLength = n
			case "content-type":
				keep = &ctype
			case "host":
				keep = &host
			case "idempotency-key":
				keep = &idem
			case "authorization":
				keep = &authz
			}
			if keep != nil && keep.present() { // the first one counts
				keep = nil
			}
		}
		if keep == nil || trailers {
			buf = buf[:start]
		} else {
			*keep = at
		}
	}
	sc.buf = buf
	if trailers || malformed {
		return malformed, nil
	}
	if !method.present() {
		return true, nil
	}
	if string(method.bytes(buf)) == "CONNECT" {
		if !auth.present() || scheme.present() || path.present() {
			return true, nil
		}
	} else if !scheme.present() || !path.present() || path.end == path.off {
		return true, nil
	}
	r := &sc.req
	*r = parser.Request{
		Method:         method.bytes(buf),
		Target:         path.bytes(buf),
		Minor:          1,
		ContentLength:  contentLength,
		KeepAlive:      true,
		ContentType:    ctype.bytes(buf),
		Host:           auth.bytes(buf),
		IdempotencyKey: trimOWS(idem.bytes(buf)),
		Authorization:  trimOWS(authz.bytes(buf)),
		Fields:         fields,
	}
	if r.Host == nil {
		r.Host = host.bytes(buf)
	}
	if string(method.bytes(buf)) == "CONNECT" {
		r.Target = r.Host
	}
	return false, nil
}
