package parser

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// Realistic heads, shared with the benchmarks.
const (
	curlHead = "PUT /upload/backup-2024.tar.gz HTTP/1.1\r\n" +
		"Host: uploads.example.com:8080\r\n" +
		"User-Agent: curl/8.5.0\r\n" +
		"Accept: */*\r\n" +
		"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1cGxvYWRlciJ9.c2lnbmF0dXJl\r\n" +
		"Content-Type: application/octet-stream\r\n" +
		"Content-Length: 1048576\r\n" +
		"X-Upload-Checksum: sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\r\n" +
		"Expect: 100-continue\r\n" +
		"\r\n"

	browserHead = "POST /api/v2/uploads/multipart?session=8f14e45fceea167a5a36dedd4bea2543&part=17 HTTP/1.1\r\n" +
		"Host: www.example.com\r\n" +
		"Connection: keep-alive\r\n" +
		"Content-Length: 524288\r\n" +
		"sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n" +
		"sec-ch-ua-mobile: ?0\r\n" +
		"sec-ch-ua-platform: \"Linux\"\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n" +
		"Content-Type: multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW\r\n" +
		"Accept: application/json, text/plain, */*\r\n" +
		"Origin: https://www.example.com\r\n" +
		"Sec-Fetch-Site: same-origin\r\n" +
		"Sec-Fetch-Mode: cors\r\n" +
		"Sec-Fetch-Dest: empty\r\n" +
		"Referer: https://www.example.com/dashboard/files?folder=inbox&view=grid\r\n" +
		"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
		"Accept-Language: en-US,en;q=0.9,de;q=0.8,fr;q=0.7\r\n" +
		"Cookie: _ga=GA1.2.1234567890.1700000000; session_id=3c59dc048e8850243be8079a5c74d079; theme=dark; csrftoken=45c48cce2e2d7fbdea1afaf5688ad8c5\r\n" +
		"X-Requested-With: XMLHttpRequest\r\n" +
		"X-CSRF-Token: 45c48cce2e2d7fbdea1afaf5688ad8c5\r\n" +
		"X-Upload-Id: 6512bd43d9caa6e02c990b0a82652dca\r\n" +
		"X-Upload-Part: 17\r\n" +
		"X-Upload-Parts: 64\r\n" +
		"Cache-Control: no-cache\r\n" +
		"Pragma: no-cache\r\n" +
		"DNT: 1\r\n" +
		"Upgrade-Insecure-Requests: 1\r\n" +
		"Priority: u=1, i\r\n" +
		"Sec-GPC: 1\r\n" +
		"X-Client-Version: web-4.12.0\r\n" +
		"Authorization: Basic dXBsb2FkZXI6c2VjcmV0cGFzc3dvcmQ=\r\n" +
		"\r\n"
)

type wantReq struct {
	method, target string
	minor          uint8
	cl             int64
	chunked        bool
	keepAlive      bool
	expect100      bool
	ctype, host    *string // nil: absent
	fields         int
}

func sp(s string) *string { return &s }

func optEqual(got []byte, want *string) bool {
	if want == nil {
		return got == nil
	}
	return got != nil && string(got) == *want
}

func checkReq(t *testing.T, r *Request, w wantReq) {
	t.Helper()
	if string(r.Method) != w.method || string(r.Target) != w.target || r.Minor != w.minor ||
		r.ContentLength != w.cl || r.Chunked != w.chunked || r.KeepAlive != w.keepAlive ||
		r.Expect100 != w.expect100 || !optEqual(r.ContentType, w.ctype) || !optEqual(r.Host, w.host) ||
		r.Fields != w.fields {
		t.Errorf("got %s\nwant %+v (ctype %v host %v)", dumpReq(r), w, deref(w.ctype), deref(w.host))
	}
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return strconv.Quote(*p)
}

func dumpReq(r *Request) string {
	q := func(b []byte) string {
		if b == nil {
			return "<nil>"
		}
		return strconv.Quote(string(b))
	}
	return "{method " + q(r.Method) + " target " + q(r.Target) + " minor " + strconv.Itoa(int(r.Minor)) +
		" cl " + strconv.FormatInt(r.ContentLength, 10) + " chunked " + strconv.FormatBool(r.Chunked) +
		" keepAlive " + strconv.FormatBool(r.KeepAlive) + " expect100 " + strconv.FormatBool(r.Expect100) +
		" ctype " + q(r.ContentType) + " host " + q(r.Host) + " idem " + q(r.IdempotencyKey) +
		" fields " + strconv.Itoa(r.Fields) + "}"
}

var validTests = []struct {
	name string
	in   string
	want wantReq
}{
	{"curl upload", curlHead, wantReq{"PUT", "/upload/backup-2024.tar.gz", 1, 1048576, false, true, true,
		sp("application/octet-stream"), sp("uploads.example.com:8080"), 8}},
	{"browser", browserHead, wantReq{"POST", "/api/v2/uploads/multipart?session=8f14e45fceea167a5a36dedd4bea2543&part=17", 1, 524288, false, true, false,
		sp("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW"), sp("www.example.com"), 30}},
	{"minimal 1.1", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, nil, sp("a"), 1}},
	{"1.0 no host", "GET /x HTTP/1.0\r\n\r\n",
		wantReq{"GET", "/x", 0, -1, false, false, false, nil, nil, 0}},
	{"1.0 keep-alive", "GET /x HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
		wantReq{"GET", "/x", 0, -1, false, true, false, nil, nil, 1}},
	{"1.0 keep-alive and close", "GET /x HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
		wantReq{"GET", "/x", 0, -1, false, false, false, nil, nil, 1}},
	{"1.1 close in list", "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade ,\t CLOSE , foo\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, false, false, nil, sp("h"), 2}},
	{"1.1 close on second line", "GET / HTTP/1.1\r\nConnection: foo\r\nHost: h\r\nconnection: close\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, false, false, nil, sp("h"), 3}},
	{"1.1 closed not a token", "GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, nil, sp("h"), 2}},
	{"chunked", "POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
		wantReq{"POST", "/u", 1, -1, true, true, false, nil, sp("h"), 2}},
	{"chunked case and OWS", "POST /u HTTP/1.1\r\nHost: h\r\ntransfer-encoding: \t ChUnKeD \t\r\n\r\n",
		wantReq{"POST", "/u", 1, -1, true, true, false, nil, sp("h"), 2}},
	{"identical CL lines", "POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\nContent-Length: 42\r\n\r\n",
		wantReq{"POST", "/u", 1, 42, false, true, false, nil, sp("h"), 3}},
	{"identical CL list", "POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 42 , 42,042\r\n\r\n",
		wantReq{"POST", "/u", 1, 42, false, true, false, nil, sp("h"), 2}},
	{"CL zero", "POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
		wantReq{"POST", "/u", 1, 0, false, true, false, nil, sp("h"), 2}},
	{"CL max int64", "POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n",
		wantReq{"POST", "/u", 1, 1<<63 - 1, false, true, false, nil, sp("h"), 2}},
	{"expect case-insensitive", "PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
		wantReq{"PUT", "/u", 1, 1, false, true, true, nil, sp("h"), 3}},
	{"expect ignored in 1.0", "PUT /u HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
		wantReq{"PUT", "/u", 0, -1, false, false, false, nil, nil, 1}},
	{"empty expect ignored", "PUT /u HTTP/1.1\r\nHost: h\r\nExpect:\r\n\r\n",
		wantReq{"PUT", "/u", 1, -1, false, true, false, nil, sp("h"), 2}},
	{"leading empty lines", "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, nil, sp("h"), 1}},
	{"bare LF everywhere", "\nGET / HTTP/1.1\nHost: h\nContent-Type: text/plain\n\n",
		wantReq{"GET", "/", 1, -1, false, true, false, sp("text/plain"), sp("h"), 2}},
	{"mixed line endings", "GET / HTTP/1.1\r\nHost: h\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, nil, sp("h"), 1}},
	{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, nil, sp(""), 1}},
	{"host ipv6", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, nil, sp("[::1]:8080"), 1}},
	{"OWS trimmed, empty value", "GET / HTTP/1.1\r\nHost: \t h \t \r\nX-Empty:\r\nX-Spaces:   \r\nContent-Type:\t a b \r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, sp("a b"), sp("h"), 4}},
	{"first content-type wins", "GET / HTTP/1.1\r\nHost: h\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, sp("a"), sp("h"), 3}},
	{"obs-text in value", "GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, nil, sp("h"), 2}},
	{"odd method token", "M-SEARCH * HTTP/1.1\r\nHost: h\r\n\r\n",
		wantReq{"M-SEARCH", "*", 1, -1, false, true, false, nil, sp("h"), 1}},
	{"absolute-form", "GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n",
		wantReq{"GET", "http://example.com/a?b", 1, -1, false, true, false, nil, sp("example.com"), 1}},
	{"all tchars in name", "GET / HTTP/1.1\r\nHost: h\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, nil, sp("h"), 2}},
	{"idempotent upload", idemHead, wantReq{"POST", "/upload/sensors", 1, 312, false, true, false,
		sp("application/json"), sp("127.0.0.1:8080"), 5}},
	{"idempotency key token", "POST /u HTTP/1.1\r\nidempotency-KEY:  k_1 \r\nHost: h\r\n\r\n",
		wantReq{"POST", "/u", 1, -1, false, true, false, nil, sp("h"), 2}},
	{"colon in value", "GET / HTTP/1.1\r\nHost: h:1\r\nX: a:b: c\r\n\r\n",
		wantReq{"GET", "/", 1, -1, false, true, false, nil, sp("h:1"), 2}},
}

func TestParseValid(t *testing.T) {
	for _, tt := range validTests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			n, err := Parse([]byte(tt.in), &r)
			if err != nil || n != len(tt.in) {
				t.Fatalf("Parse = %d, %v; want %d, nil", n, err, len(tt.in))
			}
			checkReq(t, &r, tt.want)
		})
	}
}

// TestParseIncremental feeds every prefix of each valid request: each must
// ask for more bytes, and the whole must parse the same as in one piece.
// Trailing body bytes must not change the result either.
func TestParseIncremental(t *testing.T) {
	for _, tt := range validTests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			var r Request
			for i := 0; i < len(in); i++ {
				// A fresh copy with exact capacity, so reads past the
				// prefix would be caught by the race detector / bounds.
				p := bytes.Clone(in[:i])
				if n, err := Parse(p, &r); err != ErrNeedMore || n != 0 {
					t.Fatalf("prefix %d %q: Parse = %d, %v; want 0, ErrNeedMore", i, p, n, err)
				}
			}
			withBody := append(bytes.Clone(in), "BODY\r\n\r\nGET / HTTP/1.1\r\n"...)
			n, err := Parse(withBody, &r)
			if err != nil || n != len(in) {
				t.Fatalf("Parse = %d, %v; want %d, nil", n, err, len(in))
			}
			checkReq(t, &r, tt.want)
		})
	}
}

func TestParsePipelined(t *testing.T) {
	var all []byte
	for _, tt := range validTests {
		all = append(all, tt.in...)
	}
	var r Request
	for i, tt := range validTests {
		n, err := Parse(all, &r)
		if err != nil || n != len(tt.in) {
			t.Fatalf("request %d (%s): Parse = %d, %v; want %d, nil", i, tt.name, n, err, len(tt.in))
		}
		checkReq(t, &r, tt.want)
		all = all[n:]
	}
	if len(all) != 0 {
		t.Fatalf("%d bytes left", len(all))
	}
	if _, err := Parse(all, &r); err != ErrNeedMore {
		t.Fatalf("Parse(empty) = %v", err)
	}
}

func fields(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString("X-F" + strconv.Itoa(i) + ": v\r\n")
	}
	return b.String()
}

var errorTests = []struct {
	name   string
	in     string
	want   *Error
	status int
	early  bool // in is incomplete: the error must come without the end of the head
}{
	// Request line.
	{"empty method", " / HTTP/1.1\r\n\r\n", ErrBadRequestLine, 400, false},
	{"bad method byte", "GE(T / HTTP/1.1\r\n", ErrBadRequestLine, 400, true},
	{"method control byte", "GE\x00", ErrBadRequestLine, 400, true},
	{"tab after method", "GET\t/ HTTP/1.1\r\n\r\n", ErrBadRequestLine, 400, false},
	{"two spaces", "GET  / HTTP/1.1\r\n\r\n", ErrBadRequestLine, 400, false},
	{"target control byte", "GET /a\x01b HTTP/1.1\r\n", ErrBadRequestLine, 400, true},
	{"target DEL", "GET /a\x7f", ErrBadRequestLine, 400, true},
	{"target non-ASCII", "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", ErrBadRequestLine, 400, true},
	{"target tab", "GET /a\tb HTTP/1.1\r\n\r\n", ErrBadRequestLine, 400, true},
	{"target relative", "GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", ErrBadRequestLine, 400, false},
	{"target authority-form", "CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", ErrBadRequestLine, 400, false},
	{"target bad first byte", "GET ?a", ErrBadRequestLine, 400, true},
	{"target star with more", "OPTIONS *a", ErrBadRequestLine, 400, true},
	{"target scheme without host", "GET http:// HTTP/1.1\r\nHost: h\r\n\r\n", ErrBadRequestLine, 400, false},
	{"target scheme bad sep", "GET http:/x", ErrBadRequestLine, 400, true},
	{"HTTP/0.9", "GET /\r\n\r\n", ErrBadRequestLine, 400, false},
	{"missing version", "GET / \r\n\r\n", ErrBadRequestLine, 400, false},
	{"lower-case version", "GET / http/1.1\r\n", ErrBadRequestLine, 400, true},
	{"version garbage", "GET / HTTP/x.1\r\n", ErrBadRequestLine, 400, true},
	{"version two digits", "GET / HTTP/1.10\r\nHost: h\r\n\r\n", ErrBadRequestLine, 400, false},
	{"version short", "GET / HTTP/1\r\nHost: h\r\n\r\n", ErrBadRequestLine, 400, false},
	{"space after version", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", ErrBadRequestLine, 400, false},
	{"bare CR after version", "GET / HTTP/1.1\rHost: h\r\n\r\n", ErrBadRequestLine, 400, true},
	{"bare CR before request line", "\r\rGET / HTTP/1.1\r\n\r\n", ErrBadRequestLine, 400, true},
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", ErrBadVersion, 505, true},
	{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", ErrBadVersion, 505, true},
	{"HTTP/0.9 line", "GET / HTTP/0.9\r\n\r\n", ErrBadVersion, 505, true},
	{"HTTP/3.0", "GET / HTTP/3.0\n", ErrBadVersion, 505, true},
	{"target too long", "GET /" + strings.Repeat("a", MaxTargetBytes), ErrURITooLong, 414, true},
	{"target too long complete", "GET /" + strings.Repeat("a", MaxTargetBytes) + " HTTP/1.1\r\nHost: h\r\n\r\n", ErrURITooLong, 414, false},

	// Field lines.
	{"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", ErrBadHeader, 400, true},
	{"space in name", "GET / HTTP/1.1\r\nX Y: h\r\n", ErrBadHeader, 400, true},
	{"missing colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", ErrBadHeader, 400, true},
	{"empty name", "GET / HTTP/1.1\r\n: v\r\n\r\n", ErrBadHeader, 400, true},
	{"control byte in name", "GET / HTTP/1.1\r\nX\x01Y: v\r\n", ErrBadHeader, 400, true},
	{"non-ASCII name", "GET / HTTP/1.1\r\nX\xc3\xa9: v\r\n", ErrBadHeader, 400, true},
	{"NUL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", ErrBadHeader, 400, true},
	{"DEL in value", "GET / HTTP/1.1\r\nX: a\x7f", ErrBadHeader, 400, true},
	{"ESC in value", "GET / HTTP/1.1\r\nX: a\x1b", ErrBadHeader, 400, true},
	{"bare CR in value", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", ErrBadHeader, 400, true},
	{"bare CR ends head", "GET / HTTP/1.1\r\nHost: h\r\n\rX", ErrBadHeader, 400, true},
	{"whitespace before first field", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", ErrBadHeader, 400, true},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", ErrObsFold, 400, true},
	{"obs-fold tab", "GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", ErrObsFold, 400, true},

	// Host.
	{"missing host", "GET / HTTP/1.1\r\nX: a\r\n\r\n", ErrMissingHost, 400, false},
	{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n", ErrBadHost, 400, true},
	{"bad host byte", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", ErrBadHost, 400, true},
	{"host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", ErrBadHost, 400, true},

	// Content-Length.
	{"CL empty", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", ErrBadContentLength, 400, true},
	{"CL sign", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", ErrBadContentLength, 400, true},
	{"CL negative", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", ErrBadContentLength, 400, true},
	{"CL hex", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", ErrBadContentLength, 400, true},
	{"CL space inside", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 0\r\n\r\n", ErrBadContentLength, 400, true},
	{"CL overflow", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n", ErrBadContentLength, 400, true},
	{"CL 20 digits", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 00000000000000000001\r\n\r\n", ErrBadContentLength, 400, true},
	{"CL differing lines", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", ErrBadContentLength, 400, true},
	{"CL differing list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", ErrBadContentLength, 400, true},
	{"CL empty list element", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n", ErrBadContentLength, 400, true},

	// Transfer-Encoding.
	{"CL then TE", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ErrCLAndTE, 400, true},
	{"TE then CL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", ErrCLAndTE, 400, true},
	{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", ErrUnknownTE, 501, true},
	{"TE identity", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", ErrUnknownTE, 501, true},
	{"TE chunked twice", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", ErrUnknownTE, 501, true},
	{"TE two lines", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ErrUnknownTE, 501, true},
	{"TE empty", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", ErrUnknownTE, 501, true},
	{"TE with parameter", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", ErrUnknownTE, 501, true},
	{"TE chunkedx", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunkedx\r\n\r\n", ErrUnknownTE, 501, true},
	{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ErrTEInHTTP10, 400, true},

	// Expect.
	{"expect other", "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", ErrBadExpect, 417, true},
	{"expect list", "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue, foo\r\n\r\n", ErrBadExpect, 417, true},
	{"expect other in 1.0", "PUT / HTTP/1.0\r\nExpect: x\r\n\r\n", ErrBadExpect, 417, true},

	// Limits.
	{"too many fields", "GET / HTTP/1.1\r\nHost: h\r\n" + fields(MaxFields), ErrTooManyFields, 431, true},
	{"head too large", "GET / HTTP/1.1\r\nHost: h\r\nX: " + strings.Repeat("v", MaxHeaderBytes), ErrHeaderTooLarge, 431, true},
	{"head too large by one", "GET / HTTP/1.1\r\nHost: h\r\nX: " +
		strings.Repeat("v", MaxHeaderBytes-len("GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n")+1) + "\r\n\r\n", ErrHeaderTooLarge, 431, false},
	{"empty lines too large", strings.Repeat("\r\n", MaxHeaderBytes/2), ErrHeaderTooLarge, 431, true},
	{"method too large", strings.Repeat("G", MaxHeaderBytes), ErrHeaderTooLarge, 431, true},

	// Idempotency-Key (more cases in idemKeyTests).
	{"idem key twice", "POST /u HTTP/1.1\r\nIdempotency-Key: \"a\"\r\nidempotency-key: \"a\"\r\n", ErrIdemKeyRepeated, 400, true},
	{"idem key twice, second empty", "POST /u HTTP/1.1\r\nHost: h\r\nIdempotency-Key: a\r\nIDEMPOTENCY-KEY:\r\n\r\n", ErrIdemKeyRepeated, 400, true},
	{"idem key empty", "POST /u HTTP/1.1\r\nHost: h\r\nIdempotency-Key: \t\r\n\r\n", ErrIdemKeyEmpty, 400, true},
	{"idem key empty string", "POST /u HTTP/1.1\r\nIdempotency-Key: \"\"\r\n", ErrIdemKeyEmpty, 400, true},
	{"idem key unterminated", "POST /u HTTP/1.1\r\nHost: h\r\nIdempotency-Key: \"abc\r\n\r\n", ErrIdemKeyString, 400, true},
	{"idem key bad escape", "POST /u HTTP/1.1\r\nIdempotency-Key: \"a\\nb\"\r\n", ErrIdemKeyString, 400, true},
	{"idem key list", "POST /u HTTP/1.1\r\nIdempotency-Key: \"a\", \"b\"\r\n", ErrIdemKeyString, 400, true},
	{"idem key space in token", "POST /u HTTP/1.1\r\nIdempotency-Key: a b\r\n", ErrIdemKeyToken, 400, true},
	{"idem key too long", "POST /u HTTP/1.1\r\nIdempotency-Key: " + strings.Repeat("k", MaxIdempotencyKey+1) + "\r\n", ErrIdemKeyTooLong, 400, true},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range errorTests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			n, err := Parse([]byte(tt.in), &r)
			if err != tt.want || n != 0 {
				t.Fatalf("Parse = %d, %v; want 0, %v", n, err, tt.want)
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Status != tt.status {
				t.Fatalf("status = %d, want %d", pe.Status, tt.status)
			}
			if pe.Error() != pe.Reason || pe.Reason == "" || strings.ContainsAny(pe.Reason, "\r\n") {
				t.Fatalf("bad reason %q", pe.Reason)
			}
		})
	}
}

// TestParseErrorPrefixes checks that an error, once reported for a prefix,
// is the one reported for the whole input: no prefix reports an error the
// whole input would not, and every early error case is early.
func TestParseErrorPrefixes(t *testing.T) {
	for _, tt := range errorTests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			var r Request
			for i := 0; i < len(in); i++ {
				n, err := Parse(in[:i], &r)
				if n != 0 || (err != ErrNeedMore && err != tt.want) {
					t.Fatalf("prefix %d: Parse = %d, %v; want 0, ErrNeedMore or %v", i, n, err, tt.want)
				}
			}
			if tt.early {
				// The error must be reported without the rest of the head,
				// and must not change if more bytes follow.
				more := append(bytes.Clone(in), "\r\n\r\n"...)
				if _, err := Parse(more, &r); err != tt.want {
					t.Fatalf("with more bytes: %v, want %v", err, tt.want)
				}
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	var r Request

	// Exactly MaxFields fields is fine.
	in := "GET / HTTP/1.1\r\nHost: h\r\n" + fields(MaxFields-1) + "\r\n"
	if n, err := Parse([]byte(in), &r); err != nil || n != len(in) || r.Fields != MaxFields {
		t.Errorf("MaxFields: Parse = %d, %v, fields %d", n, err, r.Fields)
	}

	// A target of exactly MaxTargetBytes is fine.
	target := "/" + strings.Repeat("a", MaxTargetBytes-1)
	in = "GET " + target + " HTTP/1.1\r\nHost: h\r\n\r\n"
	if n, err := Parse([]byte(in), &r); err != nil || n != len(in) || string(r.Target) != target {
		t.Errorf("MaxTargetBytes: Parse = %d, %v", n, err)
	}

	// A head of exactly MaxHeaderBytes is fine, with or without more bytes
	// after it; leading empty lines count.
	for _, lead := range []string{"", "\r\n", "\n\r\n"} {
		pre := lead + "GET / HTTP/1.1\r\nHost: h\r\nX: "
		in = pre + strings.Repeat("v", MaxHeaderBytes-len(pre)-4) + "\r\n\r\n"
		if len(in) != MaxHeaderBytes {
			t.Fatal("bad test")
		}
		for _, extra := range []string{"", "BODY", strings.Repeat("b", MaxHeaderBytes)} {
			if n, err := Parse([]byte(in+extra), &r); err != nil || n != MaxHeaderBytes {
				t.Errorf("MaxHeaderBytes lead %q extra %d: Parse = %d, %v", lead, len(extra), n, err)
			}
		}
		// One byte short of the end: still waiting.
		if _, err := Parse([]byte(in[:len(in)-1]), &r); err != ErrNeedMore {
			t.Errorf("MaxHeaderBytes-1: %v", err)
		}
	}
}

func TestErrorsDistinct(t *testing.T) {
	all := []*Error{ErrBadRequestLine, ErrBadVersion, ErrBadHeader, ErrObsFold, ErrBadContentLength,
		ErrCLAndTE, ErrUnknownTE, ErrTEInHTTP10, ErrHeaderTooLarge, ErrTooManyFields, ErrURITooLong,
		ErrBadExpect, ErrMissingHost, ErrBadHost, ErrBadChunk, ErrTrailerTooLarge,
		ErrIdemKeyRepeated, ErrIdemKeyEmpty, ErrIdemKeyTooLong, ErrIdemKeyString, ErrIdemKeyToken}
	seen := map[string]bool{}
	for _, e := range all {
		if seen[e.Reason] {
			t.Errorf("duplicate reason %q", e.Reason)
		}
		seen[e.Reason] = true
		if e.Status < 400 || e.Status > 599 {
			t.Errorf("%q: status %d", e.Reason, e.Status)
		}
	}
	var pe *Error
	if errors.As(ErrNeedMore, &pe) {
		t.Error("ErrNeedMore is an *Error")
	}
}

func TestParseAllocs(t *testing.T) {
	for _, in := range []string{curlHead, browserHead, idemHead} {
		buf := []byte(in)
		var r Request
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := Parse(buf, &r); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Parse allocs = %v, want 0", allocs)
		}
		allocs = testing.AllocsPerRun(100, func() {
			if _, err := Parse(buf[:len(buf)-1], &r); err != ErrNeedMore {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Parse (need more) allocs = %v, want 0", allocs)
		}
	}
	for _, in := range []string{"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nIdempotency-Key: \"a\\b\"\r\n\r\n"} {
		buf := []byte(in)
		var r Request
		if allocs := testing.AllocsPerRun(100, func() { Parse(buf, &r) }); allocs != 0 {
			t.Errorf("Parse (error) allocs = %v, want 0", allocs)
		}
	}

	// IdempotencyKey into a buffer with room: no allocation either.
	var r Request
	if _, err := Parse([]byte(idemHead), &r); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 0, MaxIdempotencyKey)
	allocs := testing.AllocsPerRun(100, func() {
		k, err := IdempotencyKey(r.IdempotencyKey, dst[:0])
		if err != nil || string(k) != `run-7"3\` {
			t.Fatalf("IdempotencyKey = %q, %v", k, err)
		}
	})
	if allocs != 0 {
		t.Errorf("IdempotencyKey allocs = %v, want 0", allocs)
	}
}

// idemHead is a retrying client's upload.
const idemHead = "POST /upload/sensors HTTP/1.1\r\n" +
	"Host: 127.0.0.1:8080\r\n" +
	"User-Agent: upsink-bench\r\n" +
	"Content-Type: application/json\r\n" +
	"Idempotency-Key: \"run-7\\\"3\\\\\"\r\n" +
	"Content-Length: 312\r\n" +
	"\r\n"

var idemKeyTests = []struct {
	name  string
	value string // the field value as sent, OWS included
	raw   string // Request.IdempotencyKey
	key   string // IdempotencyKey(raw)
	err   *Error
}{
	{"sf-string", `"abc-123"`, `"abc-123"`, "abc-123", nil},
	{"token", "abc-123", "abc-123", "abc-123", nil},
	{"stripe token", "idem_5f7d9e1c2b", "idem_5f7d9e1c2b", "idem_5f7d9e1c2b", nil},
	{"OWS trimmed", " \t\"k\" \t", `"k"`, "k", nil},
	{"one byte", `"x"`, `"x"`, "x", nil},
	{"one byte token", "x", "x", "x", nil},
	{"space inside string", `"a b"`, `"a b"`, "a b", nil},
	{"only a space", `" "`, `" "`, " ", nil},
	{"escaped quote", `"a\"b"`, `"a\"b"`, `a"b`, nil},
	{"escaped backslash", `"a\\b"`, `"a\\b"`, `a\b`, nil},
	{"only escapes", `"\"\\"`, `"\"\\"`, `"\`, nil},
	{"all printable", `"` + printable + `"`, `"` + printable + `"`, strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(printable), nil},
	{"token with backslash and comma", `a\b,c;d=e`, `a\b,c;d=e`, `a\b,c;d=e`, nil},
	{"string of 255", `"` + strings.Repeat("k", 255) + `"`, `"` + strings.Repeat("k", 255) + `"`, strings.Repeat("k", 255), nil},
	{"token of 255", strings.Repeat("k", 255), strings.Repeat("k", 255), strings.Repeat("k", 255), nil},
	{"255 after unescaping", `"` + strings.Repeat(`\"`, 255) + `"`, `"` + strings.Repeat(`\"`, 255) + `"`, strings.Repeat(`"`, 255), nil},

	{"empty", "", "", "", ErrIdemKeyEmpty},
	{"only OWS", " \t ", "", "", ErrIdemKeyEmpty},
	{"empty string", `""`, "", "", ErrIdemKeyEmpty},
	{"string of 256", `"` + strings.Repeat("k", 256) + `"`, "", "", ErrIdemKeyTooLong},
	{"token of 256", strings.Repeat("k", 256), "", "", ErrIdemKeyTooLong},
	{"256 after unescaping", `"` + strings.Repeat(`\\`, 256) + `"`, "", "", ErrIdemKeyTooLong},
	{"lone DQUOTE", `"`, "", "", ErrIdemKeyString},
	{"unterminated", `"abc`, "", "", ErrIdemKeyString},
	{"escaped closing quote", `"abc\"`, "", "", ErrIdemKeyString},
	{"trailing backslash", `"abc\`, "", "", ErrIdemKeyString},
	{"bad escape n", `"a\nb"`, "", "", ErrIdemKeyString},
	{"bad escape u", `"\u0041"`, "", "", ErrIdemKeyString},
	{"bytes after string", `"a"b`, "", "", ErrIdemKeyString},
	{"parameters after string", `"a";x=1`, "", "", ErrIdemKeyString},
	{"two strings", `"a", "b"`, "", "", ErrIdemKeyString},
	{"tab inside string", "\"a\tb\"", "", "", ErrIdemKeyString},
	{"non-ASCII inside string", "\"caf\xc3\xa9\"", "", "", ErrIdemKeyString},
	{"non-ASCII token", "caf\xc3\xa9", "", "", ErrIdemKeyToken},
	{"DQUOTE inside token", `ab"c"`, "", "", ErrIdemKeyToken},
	{"space inside token", "a b", "", "", ErrIdemKeyToken},
	{"tab inside token", "a\tb", "", "", ErrIdemKeyToken},
}

// printable is every byte an sf-string may hold, with DQUOTE and backslash
// escaped.
var printable = func() string {
	var b strings.Builder
	for c := byte(0x20); c <= 0x7e; c++ {
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}()

func TestParseIdempotencyKey(t *testing.T) {
	for _, tt := range idemKeyTests {
		t.Run(tt.name, func(t *testing.T) {
			for _, name := range []string{"Idempotency-Key", "idempotency-key", "IDEMPOTENCY-KEY"} {
				in := "POST /u HTTP/1.1\r\nHost: h\r\n" + name + ":" + tt.value + "\r\nContent-Length: 0\r\n\r\n"
				var r Request
				n, err := Parse([]byte(in), &r)
				if tt.err != nil {
					if err != tt.err || n != 0 {
						t.Fatalf("%s: Parse = %d, %v; want 0, %v", name, n, err, tt.err)
					}
				} else if err != nil || n != len(in) || string(r.IdempotencyKey) != tt.raw || r.IdempotencyKey == nil {
					t.Fatalf("%s: Parse = %d, %v, %s; want %d, key %q", name, n, err, dumpReq(&r), len(in), tt.raw)
				}
			}

			// IdempotencyKey on the trimmed value: the same verdict, and
			// the key appended after what dst held.
			v := trimOWS([]byte(tt.value))
			got, err := IdempotencyKey(v, []byte("pre:"))
			if err != errOrNil(tt.err) {
				t.Fatalf("IdempotencyKey = %q, %v; want %v", got, err, tt.err)
			}
			want := "pre:" + tt.key
			if tt.err != nil {
				want = "pre:"
			}
			if string(got) != want {
				t.Fatalf("IdempotencyKey = %q; want %q", got, want)
			}
			if tt.err == nil {
				// The key quoted again as an sf-string is the same key.
				if k2, err := IdempotencyKey(quoteKey(got[4:]), nil); err != nil || string(k2) != tt.key {
					t.Fatalf("round trip: %q, %v", k2, err)
				}
			}
		})
	}
}

// errOrNil turns a nil *Error into a nil error.
func errOrNil(e *Error) error {
	if e == nil {
		return nil
	}
	return e
}

// quoteKey serializes k as an sf-string.
func quoteKey(k []byte) []byte {
	q := []byte{'"'}
	for _, c := range k {
		if c == '"' || c == '\\' {
			q = append(q, '\\')
		}
		q = append(q, c)
	}
	return append(q, '"')
}

func TestParseIdempotencyKeyAbsent(t *testing.T) {
	var r Request
	if _, err := Parse([]byte(curlHead), &r); err != nil || r.IdempotencyKey != nil {
		t.Fatalf("Parse = %v, key %q; want nil", err, r.IdempotencyKey)
	}
	// Names that only look alike are other fields.
	in := "POST /u HTTP/1.1\r\nHost: h\r\nIdempotency-Keys: a b\r\nX-Idempotency-Key: \"\r\nIdempotency_Key: \r\n\r\n"
	if _, err := Parse([]byte(in), &r); err != nil || r.IdempotencyKey != nil {
		t.Fatalf("look-alikes: Parse = %v, key %q", err, r.IdempotencyKey)
	}
}

func TestParseAuthorization(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"POST /i HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer s3cret\r\n\r\n", "Bearer s3cret"},
		{"POST /i HTTP/1.1\r\nHost: h\r\nauthorization:   Bearer  x  \r\nAuthorization: Bearer second\r\n\r\n", "Bearer  x"},
		{"POST /i HTTP/1.1\r\nHost: h\r\nX-Authorization: Bearer no\r\n\r\n", ""},
	} {
		var r Request
		if _, err := Parse([]byte(tc.in), &r); err != nil || string(r.Authorization) != tc.want {
			t.Fatalf("%q: Parse = %v, Authorization %q, want %q", tc.in, err, r.Authorization, tc.want)
		}
	}
}
