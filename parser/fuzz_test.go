package parser

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func sameRequest(a, b *Request) bool {
	eq := func(x, y []byte) bool { return (x == nil) == (y == nil) && bytes.Equal(x, y) }
	return eq(a.Method, b.Method) && eq(a.Target, b.Target) && a.Minor == b.Minor &&
		a.ContentLength == b.ContentLength && a.Chunked == b.Chunked && a.KeepAlive == b.KeepAlive &&
		a.Expect100 == b.Expect100 && eq(a.ContentType, b.ContentType) && eq(a.Host, b.Host) &&
		eq(a.IdempotencyKey, b.IdempotencyKey) && a.Fields == b.Fields
}

func FuzzParse(f *testing.F) {
	for _, tt := range validTests {
		f.Add([]byte(tt.in))
	}
	for _, tt := range errorTests {
		if len(tt.in) < 1024 {
			f.Add([]byte(tt.in))
		}
	}
	f.Add([]byte("POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"))
	f.Add([]byte("GET http://[::1]:80/%zz HTTP/1.1\r\nHost: [::1]\r\n\r\n"))

	f.Fuzz(func(t *testing.T, buf []byte) {
		var r Request
		n, err := Parse(buf, &r)
		if n < 0 || n > len(buf) || n > MaxHeaderBytes {
			t.Fatalf("n = %d, len %d", n, len(buf))
		}
		var pe *Error
		switch {
		case err == nil:
			if n == 0 {
				t.Fatal("success with n == 0")
			}
		case err == ErrNeedMore:
			if n != 0 {
				t.Fatal("ErrNeedMore with n != 0")
			}
			if len(buf) >= MaxHeaderBytes {
				t.Fatal("ErrNeedMore for a buffer of MaxHeaderBytes")
			}
			return
		case errors.As(err, &pe):
			if n != 0 {
				t.Fatal("error with n != 0")
			}
			// An error is proven by the bytes seen: more bytes do not change it.
			var r2 Request
			if _, err2 := Parse(append(bytes.Clone(buf), "\r\n\r\n"...), &r2); err2 != err {
				t.Fatalf("error %v became %v with more bytes", err, err2)
			}
			return
		default:
			t.Fatalf("unexpected error type %T %v", err, err)
		}

		// Success: the head alone parses the same, its last byte is needed,
		// and bytes after it do not matter.
		head := bytes.Clone(buf[:n])
		var r2 Request
		n2, err2 := Parse(head, &r2)
		if err2 != nil || n2 != n || !sameRequest(&r, &r2) {
			t.Fatalf("head alone: %d, %v, %s; want %d, %s", n2, err2, dumpReq(&r2), n, dumpReq(&r))
		}
		if _, err2 := Parse(head[:n-1], &r2); err2 != ErrNeedMore {
			t.Fatalf("head minus one byte: %v", err2)
		}
		n2, err2 = Parse(append(head, "XYZ\r\n"...), &r2)
		if err2 != nil || n2 != n || !sameRequest(&r, &r2) {
			t.Fatalf("head + junk: %d, %v", n2, err2)
		}
		crossCheckNetHTTP(t, head, &r)
	})
}

// crossCheckNetHTTP checks that net/http agrees with an accepted head: it
// may be stricter about the URL and about how duplicate Content-Length
// values are spelled, but must accept the request line and fields, and must
// resolve the same framing and connection handling.
func crossCheckNetHTTP(t *testing.T, head []byte, r *Request) {
	t.Helper()
	// net/http does not skip leading empty lines.
	for len(head) > 0 && (head[0] == '\r' || head[0] == '\n') {
		head = head[1:]
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) || strings.Contains(err.Error(), "Content-Length") {
			return
		}
		t.Fatalf("Parse accepted %q but net/http: %v", head, err)
	}
	if req.Method != string(r.Method) || req.RequestURI != string(r.Target) || req.ProtoMajor != 1 ||
		req.ProtoMinor != int(r.Minor) {
		t.Fatalf("request line: net/http %q %q %q", req.Method, req.RequestURI, req.Proto)
	}
	if req.Close != !r.KeepAlive {
		t.Fatalf("net/http Close %v, KeepAlive %v", req.Close, r.KeepAlive)
	}
	wantCL := r.ContentLength
	switch {
	case r.Chunked:
		wantCL = -1
		if len(req.TransferEncoding) != 1 || req.TransferEncoding[0] != "chunked" {
			t.Fatalf("net/http TransferEncoding %q", req.TransferEncoding)
		}
	case wantCL < 0:
		wantCL = 0
	}
	if req.ContentLength != wantCL {
		t.Fatalf("net/http ContentLength %d, ours %d", req.ContentLength, r.ContentLength)
	}
	if r.Target[0] == '/' && (req.Host != string(r.Host)) {
		t.Fatalf("net/http Host %q, ours %q", req.Host, r.Host)
	}
	if vv := req.Header["Content-Type"]; (len(vv) == 0) != (r.ContentType == nil) ||
		len(vv) > 0 && vv[0] != string(r.ContentType) {
		t.Fatalf("net/http Content-Type %q, ours %q", vv, r.ContentType)
	}
	if vv := req.Header["Idempotency-Key"]; (len(vv) == 0) != (r.IdempotencyKey == nil) ||
		len(vv) > 1 || len(vv) == 1 && vv[0] != string(r.IdempotencyKey) {
		t.Fatalf("net/http Idempotency-Key %q, ours %q", vv, r.IdempotencyKey)
	}
	if req.Header.Get("Expect") != "" && r.Minor == 1 && !r.Expect100 {
		t.Fatalf("net/http Expect %q, not Expect100", req.Header["Expect"])
	}
}

// Reference grammar for an Idempotency-Key value: an RFC 8941 sf-string of
// printable ASCII with the two escapes, or a token of visible ASCII without
// DQUOTE.
var (
	sfStringRE = regexp.MustCompile(`^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"$`)
	keyTokenRE = regexp.MustCompile(`^[\x21\x23-\x7e]+$`)
)

// FuzzIdempotencyKey checks IdempotencyKey against the reference grammar,
// strconv.Unquote and a round trip, and Parse against IdempotencyKey for the
// same value in a head.
func FuzzIdempotencyKey(f *testing.F) {
	for _, tt := range idemKeyTests {
		f.Add([]byte(tt.value))
	}
	f.Add([]byte(`"a\"`))
	f.Add([]byte(`"\\"`))
	f.Fuzz(func(t *testing.T, v []byte) {
		key, err := IdempotencyKey(v, nil)
		var want []byte
		switch {
		case sfStringRE.Match(v):
			s, uerr := strconv.Unquote(string(v))
			if uerr != nil {
				t.Fatalf("%q: strconv.Unquote: %v", v, uerr)
			}
			want = []byte(s)
		case keyTokenRE.Match(v):
			want = v
		}
		ok := len(want) >= 1 && len(want) <= MaxIdempotencyKey
		if ok != (err == nil) || ok && !bytes.Equal(key, want) {
			t.Fatalf("%q: IdempotencyKey = %q, %v; reference %q (ok %v)", v, key, err, want, ok)
		}
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Status != 400 || key != nil {
				t.Fatalf("%q: error %T %v, key %q", v, err, err, key)
			}
		} else if k2, err2 := IdempotencyKey(quoteKey(key), nil); err2 != nil || !bytes.Equal(k2, key) {
			t.Fatalf("%q: round trip %q, %v", v, k2, err2)
		}

		// In a head, Parse agrees (when v is a field value at all).
		if bytes.ContainsAny(v, "\r\n") {
			return // would end the field line
		}
		in := append([]byte("POST /u HTTP/1.1\r\nHost: h\r\nIdempotency-Key: "), v...)
		in = append(in, "\r\nContent-Length: 0\r\n\r\n"...)
		var r Request
		n, perr := Parse(in, &r)
		if perr == ErrBadHeader || perr == ErrObsFold || perr == ErrHeaderTooLarge {
			return // v is not a field value (CR, LF, control bytes) or too big
		}
		tv := trimOWS(v)
		_, terr := IdempotencyKey(tv, nil)
		if perr != errOrNil(asError(terr)) {
			t.Fatalf("%q: Parse %v, IdempotencyKey(trimmed) %v", v, perr, terr)
		}
		if perr == nil && (n != len(in) || !bytes.Equal(r.IdempotencyKey, tv)) {
			t.Fatalf("%q: Parse = %d, raw %q", v, n, r.IdempotencyKey)
		}
	})
}

func asError(err error) *Error {
	pe, _ := err.(*Error)
	return pe
}

// decodeSplit decodes in in pieces whose sizes come from cuts, cycled (each
// byte b gives a piece of b%64+1 bytes), saving and restoring the decoder
// between calls.
func decodeSplit(in, cuts []byte) (body, rest []byte, err error) {
	if len(cuts) == 0 {
		cuts = []byte{0}
	}
	i := 0
	return decodeAll(in, func(left int) int {
		c := int(cuts[i%len(cuts)])%64 + 1
		i++
		return min(c, left)
	}, true)
}

func FuzzChunked(f *testing.F) {
	for _, tt := range chunkedTests {
		f.Add([]byte(tt.in), []byte{0})
		f.Add([]byte(tt.in), []byte{7, 1, 60, 3})
	}
	for _, tt := range chunkedErrorTests {
		if len(tt.in) < 1024 {
			f.Add([]byte(tt.in), []byte{2, 0, 5})
		}
	}
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		body, rest, err := decodeAll(in, func(left int) int { return left }, false)
		if err == nil && !bytes.HasSuffix(in, rest) {
			t.Fatal("rest is not a suffix of the input")
		}

		body2, rest2, err2 := decodeSplit(in, cuts)
		if err2 != err || !bytes.Equal(body, body2) || !bytes.Equal(rest, rest2) {
			t.Fatalf("one shot: %q %q %v\nsplit %v: %q %q %v", body, rest, err, cuts, body2, rest2, err2)
		}
		if err != nil {
			return
		}

		// net/http's decoder must read the same body: it stops after the
		// last-chunk line and ignores extensions and trailers.
		got, gerr := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(in)))
		if gerr != nil {
			s := gerr.Error()
			if strings.Contains(s, "too much non-data") || strings.Contains(s, "too large") {
				return
			}
			// RFC 9112 allows BWS before ";"; net/http does not.
			if s == "invalid byte in chunk length" && (bytes.Contains(in, []byte(" ;")) || bytes.Contains(in, []byte("\t;"))) {
				return
			}
			t.Fatalf("we decoded %q but net/http: %v", body, gerr)
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("we decoded %q but net/http %q", body, got)
		}
	})
}
