// Package parser is an incremental, zero-allocation HTTP/1.1 request parser:
// it parses a request head out of the bytes a connection has buffered so far
// (Parse) and decodes a chunked request body in place (Chunked). It does one
// job, framing; routing, bodies of fixed length and responses belong to the
// server.
//
// Nothing in a parse path allocates. Every []byte a Request holds aliases the
// buffer given to Parse, and every error is a package-level *Error that
// carries the HTTP status to answer with, or ErrNeedMore.
//
// The rules are those of RFC 9112 and RFC 9110, mostly as net/http applies
// them, but stricter wherever a lenient reading could let a front end and
// this server frame a message differently:
//
//   - In the request head a line ends at LF, and a CR right before that LF
//     is part of the line ending (RFC 9112 §2.2 allows a recipient to accept
//     a bare LF, and net/textproto does). A CR anywhere else is an error.
//     Leading empty lines before the request line are skipped.
//   - In chunked framing (chunk-size lines, the CRLF after chunk data and the
//     trailer section) only CRLF ends a line, as in net/http since Go 1.24.
//   - The request-target must be origin-form ("/..."), asterisk-form ("*")
//     or absolute-form ("scheme://..."), of visible US-ASCII bytes only.
//     Authority-form (CONNECT) is rejected.
//   - Transfer-Encoding must be a single field line whose value is exactly
//     "chunked"; anything else is ErrUnknownTE (501). Transfer-Encoding
//     together with Content-Length is rejected rather than resolved.
//   - An HTTP/1.1 request must carry exactly one Host field (RFC 9112 §3.2).
//   - Idempotency-Key (draft-ietf-httpapi-idempotency-key-header) may appear
//     at most once, and its value must be an RFC 8941 sf-string of printable
//     ASCII with only the \" and \\ escapes, or a bare token of visible
//     ASCII without DQUOTE; the key is 1..MaxIdempotencyKey bytes. Parse
//     validates it and keeps the value as sent; IdempotencyKey undoes the
//     quoting.
package parser

import (
	"errors"
	"slices"
)

const (
	// MaxHeaderBytes bounds the request head: leading empty lines, the
	// request line and the header section including its final CRLF. A longer
	// head is ErrHeaderTooLarge. It also bounds a chunked body's trailer
	// section (ErrTrailerTooLarge).
	MaxHeaderBytes = 16 << 10
	// MaxFields bounds the number of header fields (ErrTooManyFields).
	MaxFields = 100
	// MaxTargetBytes bounds the request-target (ErrURITooLong).
	MaxTargetBytes = 8 << 10
	// MaxChunkLine bounds a chunk-size line including chunk extensions and
	// its CRLF (ErrBadChunk).
	MaxChunkLine = 4 << 10
	// MaxIdempotencyKey bounds an Idempotency-Key, counted after unescaping
	// (ErrIdemKeyTooLong).
	MaxIdempotencyKey = 255
)

// Error is a parse error that maps to an HTTP status and a one-line reason.
// All of them are package-level variables, so returning one never allocates
// and they can be compared with ==.
type Error struct {
	Status int    // HTTP status code to answer with
	Reason string // one line, no trailing newline
}

// Error returns the reason.
func (e *Error) Error() string { return e.Reason }

// ErrNeedMore is returned when the buffer does not yet hold a complete
// request head. It is not an *Error: the caller should read more and retry.
var ErrNeedMore = errors.New("parser: need more bytes")

// Errors returned by Parse and Chunked.Decode.
var (
	ErrBadRequestLine   = &Error{400, "malformed request line"}
	ErrBadVersion       = &Error{505, "HTTP version not supported"}
	ErrBadHeader        = &Error{400, "malformed header field"}
	ErrObsFold          = &Error{400, "obsolete line folding in header field"}
	ErrBadContentLength = &Error{400, "invalid Content-Length"}
	ErrCLAndTE          = &Error{400, "both Content-Length and Transfer-Encoding"}
	ErrUnknownTE        = &Error{501, "unsupported Transfer-Encoding"}
	ErrTEInHTTP10       = &Error{400, "Transfer-Encoding in HTTP/1.0 request"}
	ErrHeaderTooLarge   = &Error{431, "request header too large"}
	ErrTooManyFields    = &Error{431, "too many header fields"}
	ErrURITooLong       = &Error{414, "request-target too long"}
	ErrBadExpect        = &Error{417, "unsupported expectation"}
	ErrMissingHost      = &Error{400, "missing Host header"}
	ErrBadHost          = &Error{400, "repeated or malformed Host header"}
	ErrBadChunk         = &Error{400, "malformed chunked encoding"}
	ErrTrailerTooLarge  = &Error{431, "trailer section too large"}

	ErrIdemKeyRepeated = &Error{400, "more than one Idempotency-Key"}
	ErrIdemKeyEmpty    = &Error{400, "empty Idempotency-Key"}
	ErrIdemKeyTooLong  = &Error{400, "Idempotency-Key longer than 255 bytes"}
	ErrIdemKeyString   = &Error{400, "malformed Idempotency-Key string (printable ASCII, only \\\" and \\\\ escapes)"}
	ErrIdemKeyToken    = &Error{400, "malformed Idempotency-Key token (visible ASCII, no DQUOTE)"}
)

// Request is a parsed request head. All []byte fields alias the buffer
// passed to Parse and are valid only as long as it is.
type Request struct {
	Method        []byte // a token; not checked against a list
	Target        []byte // the request-target, as sent
	Minor         uint8  // 1 for HTTP/1.1, 0 for HTTP/1.0
	ContentLength int64  // -1 when absent
	Chunked       bool   // Transfer-Encoding: chunked
	KeepAlive     bool   // whether the connection may be reused after this request
	Expect100     bool   // Expect: 100-continue (HTTP/1.1 only; ignored in HTTP/1.0)
	ContentType   []byte // nil when absent; the first one if repeated
	Host          []byte // nil when absent
	// IdempotencyKey is the Idempotency-Key field value as sent (OWS
	// trimmed), nil when absent: an sf-string still quoted and escaped, or a
	// bare token. Parse has validated it; IdempotencyKey(r.IdempotencyKey,
	// dst) gives the key itself.
	IdempotencyKey []byte
	// Authorization is the first Authorization field's value (OWS
	// trimmed), nil when absent; not interpreted here.
	Authorization []byte
	Fields        int // number of header fields
}

// Byte classes.
const (
	cTchar  = 1 << iota // token character (RFC 9110 §5.6.2)
	cValue              // field-vchar, SP or HTAB: allowed inside a field value
	cTarget             // allowed in a request-target: visible US-ASCII
	cHost               // allowed in a Host value, as net/http's ValidHostHeader
	cScheme             // ALPHA / DIGIT / "+" / "-" / "."
)

var class [256]uint8

func init() {
	for c := 0; c < 256; c++ {
		var k uint8
		switch {
		case c >= 0x21 && c <= 0x7e:
			k |= cValue | cTarget
		case c >= 0x80, c == ' ', c == '\t':
			k |= cValue
		}
		alnum := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if alnum || c < 0x80 && indexByte("!#$%&'*+-.^_`|~", byte(c)) {
			k |= cTchar
		}
		if alnum || c < 0x80 && indexByte("!$%&()*+,-.:;=[']_~", byte(c)) {
			k |= cHost
		}
		if alnum || c == '+' || c == '-' || c == '.' {
			k |= cScheme
		}
		class[c] = k
	}
}

func indexByte(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// equalFold reports whether b equals the lower-case ASCII string s, ignoring
// ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

func trimOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isOWS(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// nextElem splits the first element off a comma-separated list and returns
// it with OWS trimmed, and the rest of the list after the comma. ok is false
// when list is exhausted.
func nextElem(list []byte) (elem, rest []byte, ok bool) {
	if list == nil {
		return nil, nil, false
	}
	for i := 0; i < len(list); i++ {
		if list[i] == ',' {
			return trimOWS(list[:i]), list[i+1:], true
		}
	}
	return trimOWS(list), nil, true
}

// more is the answer when the head runs past what buf holds: wait for more
// bytes, unless the head already cannot fit in MaxHeaderBytes.
func more(buf []byte) (int, error) {
	if len(buf) >= MaxHeaderBytes {
		return 0, ErrHeaderTooLarge
	}
	return 0, ErrNeedMore
}

// Parse parses one request head at the start of buf. On success it returns
// the number of bytes of the head (leading empty lines, request line, fields
// and the empty line), and r is filled; the body, if any, starts at buf[n:].
//
// If buf holds no complete head yet, Parse returns (0, ErrNeedMore), unless
// what is there already proves an error (a bad byte, a request-target longer
// than MaxTargetBytes, more than MaxFields fields, more than MaxHeaderBytes
// without the end of the head, a bad Content-Length, ...): then it returns
// that *Error at once, so a client sending garbage is answered without
// waiting for the rest. On error r holds whatever was parsed so far.
//
// Line endings: a line ends at LF, with or without a CR before it (RFC 9112
// §2.2 permits accepting a bare LF; net/textproto does). A CR not followed
// by LF is an error.
//
// Parse keeps no state between calls: it rescans buf from the start. A
// caller that receives a head in many small reads need call it again only
// when the bytes just read contain a '\n' or the buffer has reached
// MaxHeaderBytes, since no head can end otherwise; only the early errors
// are delayed by that, and a byte-at-a-time client then costs O(lines)
// scans instead of O(bytes).
func Parse(buf []byte, r *Request) (n int, err error) {
	*r = Request{ContentLength: -1}
	b := buf
	if len(b) > MaxHeaderBytes {
		b = b[:MaxHeaderBytes]
	}

	// Leading empty lines (RFC 9112 §2.2).
	i := 0
	for i < len(b) {
		if b[i] == '\n' {
			i++
			continue
		}
		if b[i] == '\r' {
			if i+1 == len(b) {
				return more(buf)
			}
			if b[i+1] != '\n' {
				return 0, ErrBadRequestLine
			}
			i += 2
			continue
		}
		break
	}

	// Method SP.
	start := i
	for i < len(b) && class[b[i]]&cTchar != 0 {
		i++
	}
	if i == len(b) {
		return more(buf)
	}
	if i == start || b[i] != ' ' {
		return 0, ErrBadRequestLine
	}
	r.Method = b[start:i]
	i++

	// Request-target SP.
	start = i
	for i < len(b) && class[b[i]]&cTarget != 0 {
		i++
	}
	if i-start > MaxTargetBytes {
		return 0, ErrURITooLong
	}
	if i == len(b) {
		if !validTarget(b[start:i], false) {
			return 0, ErrBadRequestLine
		}
		return more(buf)
	}
	if b[i] != ' ' || !validTarget(b[start:i], true) {
		return 0, ErrBadRequestLine
	}
	r.Target = b[start:i]
	i++

	// HTTP-version line-end.
	const pattern = "HTTP/D.D"
	v := b[i:]
	for k := 0; k < len(v) && k < len(pattern); k++ {
		if pattern[k] == 'D' {
			if v[k] < '0' || v[k] > '9' {
				return 0, ErrBadRequestLine
			}
		} else if v[k] != pattern[k] {
			return 0, ErrBadRequestLine
		}
	}
	if len(v) <= len(pattern) {
		return more(buf)
	}
	switch v[8] {
	case '\n':
		i += 9
	case '\r':
		if len(v) == 9 {
			return more(buf)
		}
		if v[9] != '\n' {
			return 0, ErrBadRequestLine
		}
		i += 10
	default:
		return 0, ErrBadRequestLine
	}
	if v[5] != '1' || v[7] > '1' {
		return 0, ErrBadVersion
	}
	r.Minor = v[7] - '0'

	// Header fields.
	var hasTE, hasHost, hasClose, hasKeepAlive bool
	for {
		if i == len(b) {
			return more(buf)
		}
		switch b[i] {
		case '\n':
			i++
			goto done
		case '\r':
			if i+1 == len(b) {
				return more(buf)
			}
			if b[i+1] != '\n' {
				return 0, ErrBadHeader
			}
			i += 2
			goto done
		case ' ', '\t':
			if r.Fields > 0 {
				return 0, ErrObsFold
			}
			return 0, ErrBadHeader
		}
		name, value, m, e := scanField(b[i:], true)
		if e != nil {
			return 0, e
		}
		if m == 0 {
			return more(buf)
		}
		i += m
		r.Fields++
		if r.Fields > MaxFields {
			return 0, ErrTooManyFields
		}

		switch len(name) {
		case 4:
			if equalFold(name, "host") {
				if hasHost {
					return 0, ErrBadHost
				}
				hasHost = true
				for _, c := range value {
					if class[c]&cHost == 0 {
						return 0, ErrBadHost
					}
				}
				r.Host = value
			}
		case 6:
			if equalFold(name, "expect") && len(value) > 0 {
				if !equalFold(value, "100-continue") {
					return 0, ErrBadExpect
				}
				r.Expect100 = r.Minor == 1
			}
		case 10:
			if equalFold(name, "connection") {
				for tok, rest, ok := nextElem(value); ok; tok, rest, ok = nextElem(rest) {
					if equalFold(tok, "close") {
						hasClose = true
					} else if equalFold(tok, "keep-alive") {
						hasKeepAlive = true
					}
				}
			}
		case 12:
			if r.ContentType == nil && equalFold(name, "content-type") {
				r.ContentType = value
			}
		case 13:
			if r.Authorization == nil && equalFold(name, "authorization") {
				r.Authorization = value
			}
		case 14:
			if equalFold(name, "content-length") {
				if !parseContentLength(value, &r.ContentLength) {
					return 0, ErrBadContentLength
				}
				if hasTE {
					return 0, ErrCLAndTE
				}
			}
		case 15:
			if equalFold(name, "idempotency-key") {
				if r.IdempotencyKey != nil {
					return 0, ErrIdemKeyRepeated
				}
				if _, e := scanIdemKey(value); e != nil {
					return 0, e
				}
				r.IdempotencyKey = value
			}
		case 17:
			if equalFold(name, "transfer-encoding") {
				if r.Minor == 0 {
					return 0, ErrTEInHTTP10
				}
				if hasTE || !equalFold(value, "chunked") {
					return 0, ErrUnknownTE
				}
				if r.ContentLength >= 0 {
					return 0, ErrCLAndTE
				}
				hasTE = true
				r.Chunked = true
			}
		}
	}
done:
	if !hasHost && r.Minor == 1 {
		return 0, ErrMissingHost
	}
	r.KeepAlive = !hasClose && (r.Minor == 1 || hasKeepAlive)
	return i, nil
}

// validTarget reports whether t is (complete) or may still become
// (!complete) a request-target in origin-form, asterisk-form or
// absolute-form. t holds visible US-ASCII bytes only.
func validTarget(t []byte, complete bool) bool {
	if len(t) == 0 {
		return !complete
	}
	switch c := t[0]; {
	case c == '/':
		return true
	case c == '*':
		return len(t) == 1
	case 'a' <= lower(c) && lower(c) <= 'z':
		// absolute-form: scheme "://" 1*char
		i := 1
		for i < len(t) && class[t[i]]&cScheme != 0 {
			i++
		}
		const sep = "://"
		for k := 0; k < len(sep); k++ {
			if i+k == len(t) {
				return !complete
			}
			if t[i+k] != sep[k] {
				return false
			}
		}
		return !complete || len(t) > i+len(sep)
	}
	return false
}

// scanField parses the field line at the start of b: field-name ":" OWS
// field-value OWS, ended by CRLF or, if bareLF, by LF alone. It returns the
// name, the value without OWS, and the length of the line with its ending.
// If the line is incomplete and nothing proves it bad, it returns m == 0.
// b[0] is neither SP, HTAB, CR nor LF.
func scanField(b []byte, bareLF bool) (name, value []byte, m int, err *Error) {
	i := 0
	for i < len(b) && class[b[i]]&cTchar != 0 {
		i++
	}
	if i == len(b) {
		return nil, nil, 0, nil
	}
	if i == 0 || b[i] != ':' {
		return nil, nil, 0, ErrBadHeader
	}
	name = b[:i]
	i++
	start := i
	for i < len(b) && class[b[i]]&cValue != 0 {
		i++
	}
	if i == len(b) {
		return nil, nil, 0, nil
	}
	end := i
	switch b[i] {
	case '\r':
		if i+1 == len(b) {
			return nil, nil, 0, nil
		}
		if b[i+1] != '\n' {
			return nil, nil, 0, ErrBadHeader
		}
		i += 2
	case '\n':
		if !bareLF {
			return nil, nil, 0, ErrBadHeader
		}
		i++
	default:
		return nil, nil, 0, ErrBadHeader
	}
	return name, trimOWS(b[start:end]), i, nil
}

// parseContentLength parses a Content-Length value, a comma-separated list
// of identical 1*DIGIT values (RFC 9110 §8.6), into *cl, which holds -1 or a
// value from an earlier Content-Length field that must match.
func parseContentLength(v []byte, cl *int64) bool {
	for elem, rest, ok := nextElem(v); ok; elem, rest, ok = nextElem(rest) {
		if len(elem) == 0 || len(elem) > 19 {
			return false
		}
		var n int64
		for _, c := range elem {
			if c < '0' || c > '9' {
				return false
			}
			d := int64(c - '0')
			if n > (1<<63-1-d)/10 {
				return false
			}
			n = n*10 + d
		}
		if *cl >= 0 && *cl != n {
			return false
		}
		*cl = n
	}
	return true
}

// IdempotencyKey checks raw, an Idempotency-Key field value as sent (such as
// Request.IdempotencyKey), and appends the key it carries to dst: the
// content of an sf-string with its escapes undone, or a bare token as is.
// So "abc" and abc are the same key. It allocates only if dst lacks the
// capacity (at most MaxIdempotencyKey bytes are appended). On failure it
// returns dst unchanged and one of the ErrIdemKey* errors (status 400).
func IdempotencyKey(raw, dst []byte) ([]byte, error) {
	n, e := scanIdemKey(raw)
	if e != nil {
		return dst, e
	}
	dst = slices.Grow(dst, n)
	if raw[0] != '"' {
		return append(dst, raw...), nil
	}
	raw = raw[1 : len(raw)-1]
	for i := 0; i < len(raw); i++ {
		if raw[i] == '\\' {
			i++
		}
		dst = append(dst, raw[i])
	}
	return dst, nil
}

// scanIdemKey validates an Idempotency-Key field value (OWS already trimmed)
// and returns the length of the key it carries.
func scanIdemKey(v []byte) (int, *Error) {
	if len(v) == 0 {
		return 0, ErrIdemKeyEmpty
	}
	if v[0] != '"' {
		// A bare token: visible ASCII without DQUOTE.
		for _, c := range v {
			if c < 0x21 || c > 0x7e || c == '"' {
				return 0, ErrIdemKeyToken
			}
		}
		if len(v) > MaxIdempotencyKey {
			return 0, ErrIdemKeyTooLong
		}
		return len(v), nil
	}
	// sf-string (RFC 8941 §3.3.3): DQUOTE *( unescaped / "\\" ( DQUOTE / "\\" ) ) DQUOTE,
	// unescaped being %x20-21 / %x23-5B / %x5D-7E; nothing may follow.
	n := 0
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
			if i == len(v) || v[i] != '"' && v[i] != '\\' {
				return 0, ErrIdemKeyString
			}
		case c == '"':
			if i != len(v)-1 {
				return 0, ErrIdemKeyString
			}
			if n == 0 {
				return 0, ErrIdemKeyEmpty
			}
			if n > MaxIdempotencyKey {
				return 0, ErrIdemKeyTooLong
			}
			return n, nil
		case c < 0x20 || c > 0x7e:
			return 0, ErrIdemKeyString
		}
		n++
	}
	return 0, ErrIdemKeyString // no closing DQUOTE
}
