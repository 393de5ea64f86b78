package parser

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// chunk encodes data as one chunk with the given extension.
func chunk(data, ext string) string {
	const hex = "0123456789abcdef"
	n := len(data)
	var h []byte
	for {
		h = append([]byte{hex[n&15]}, h...)
		n >>= 4
		if n == 0 {
			break
		}
	}
	return string(h) + ext + "\r\n" + data + "\r\n"
}

// body1K is a 1 KiB body in 3 chunks, shared with the benchmarks.
var body1K = func() (enc, data string) {
	d := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_", 16)
	return chunk(d[:300], "") + chunk(d[300:700], ";name=value") + chunk(d[700:], "") + "0\r\n\r\n", d
}

var chunkedTests = []struct {
	name string
	in   string // encoded body
	want string // decoded body
}{
	{"empty body", "0\r\n\r\n", ""},
	{"one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello"},
	{"two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"},
	{"upper-case hex and leading zeros", "000A\r\n0123456789\r\n00\r\n\r\n", "0123456789"},
	{"lower-case hex", "a\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
	{"extensions", "5;foo=bar\r\nhello\r\n6 ; a=\"q s\" ;b\r\nworld!\r\n0;last\r\n\r\n", "helloworld!"},
	{"extension with tab and obs-text", "3\t;x=\xff\tz\r\nabc\r\n0\r\n\r\n", "abc"},
	{"trailers", "3\r\nabc\r\n0\r\nX-Checksum: sha256=abc\r\nExpires:\r\nX-B:  v v \r\n\r\n", "abc"},
	{"data with CRLF inside", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n"},
	{"1 KiB in 3 chunks", func() string { e, _ := body1K(); return e }(), func() string { _, d := body1K(); return d }()},
	{"many one-byte chunks", strings.Repeat("1\r\nx\r\n", 50) + "0\r\n\r\n", strings.Repeat("x", 50)},
}

// decodeAll plays the caller: it feeds in in pieces whose sizes come from
// next, keeps what Decode did not consume, and, if roundTrip, saves and
// restores the decoder between every two calls. It returns the body, the
// bytes left after Done, and the first error.
func decodeAll(in []byte, next func(left int) int, roundTrip bool) (body, rest []byte, err error) {
	var d Chunked
	var pending []byte
	for {
		k := 0
		if len(in) > 0 {
			k = next(len(in))
		}
		pending = append(pending, in[:k]...)
		in = in[k:]
		for !d.Done() {
			if roundTrip {
				st, left := d.Save()
				if st > 7 {
					panic("state does not fit in 3 bits")
				}
				d = RestoreChunked(st, left)
			}
			data, n, err := d.Decode(pending)
			if n < 0 || n > len(pending) || len(data) > n {
				panic("bad consumed")
			}
			body = append(body, data...)
			pending = pending[n:]
			if err != nil {
				return body, nil, err
			}
			if n == 0 {
				// Decode waits only for the end of a line (see its doc).
				if len(pending) > 0 && (bytes.IndexByte(pending, '\n') >= 0 || len(pending) >= MaxHeaderBytes) {
					panic("Decode consumed nothing although a line end or the limit was there")
				}
				break
			}
		}
		if d.Done() {
			return body, append(pending, in...), nil
		}
		if len(in) == 0 && k == 0 {
			return body, nil, errIncomplete
		}
	}
}

var errIncomplete = &Error{0, "incomplete body"}

func TestChunked(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const after = "GET /next HTTP/1.1\r\n"
	for _, tt := range chunkedTests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in + after)
			check := func(how string, body, rest []byte, err error) {
				t.Helper()
				if err != nil || string(body) != tt.want || string(rest) != after {
					t.Fatalf("%s: body %q rest %q err %v; want %q", how, body, rest, err, tt.want)
				}
			}
			whole := func(left int) int { return left }
			body, rest, err := decodeAll(in, whole, false)
			check("one shot", body, rest, err)
			body, rest, err = decodeAll(in, func(int) int { return 1 }, false)
			check("byte by byte", body, rest, err)
			body, rest, err = decodeAll(in, func(int) int { return 1 }, true)
			check("byte by byte with save/restore", body, rest, err)
			for i := 0; i < 50; i++ {
				rt := i%2 == 0
				body, rest, err = decodeAll(in, func(left int) int { return 1 + rng.IntN(left) }, rt)
				check("random splits", body, rest, err)
			}
			// Every single split point, with a save/restore at it.
			for i := 0; i <= len(in); i++ {
				first := true
				body, rest, err = decodeAll(in, func(left int) int {
					if first {
						first = false
						return i
					}
					return left
				}, true)
				check("split", body, rest, err)
			}
		})
	}
}

// TestChunkedContract checks what a single call does on exact inputs.
func TestChunkedContract(t *testing.T) {
	var d Chunked
	// An incomplete size line is not consumed.
	for _, p := range []string{"", "1", "1f", "1f;", "1f;ext", "1f;ext\r", "1f ", "1f \t"} {
		if data, n, err := d.Decode([]byte(p)); data != nil || n != 0 || err != nil {
			t.Fatalf("Decode(%q) = %q, %d, %v", p, data, n, err)
		}
	}
	in := []byte("5\r\nhel")
	data, n, err := d.Decode(in)
	if string(data) != "hel" || n != len(in) || err != nil {
		t.Fatalf("Decode = %q, %d, %v", data, n, err)
	}
	if st, left := d.Save(); st != stData || left != 2 {
		t.Fatalf("Save = %d, %d", st, left)
	}
	in = []byte("lo\r")
	data, n, err = d.Decode(in)
	if string(data) != "lo" || n != 2 || err != nil {
		t.Fatalf("Decode = %q, %d, %v", data, n, err)
	}
	data, n, err = d.Decode(in[2:])
	if len(data) != 0 || n != 0 || err != nil {
		t.Fatalf("Decode(CR) = %q, %d, %v", data, n, err)
	}
	in = []byte("\r\n0\r\nX: y\r\n")
	data, n, err = d.Decode(in)
	if len(data) != 0 || n != len(in) || err != nil || d.Done() {
		t.Fatalf("Decode = %q, %d, %v, done %v", data, n, err, d.Done())
	}
	if st, left := d.Save(); st != stTrailer || left != 6 {
		t.Fatalf("Save = %d, %d", st, left)
	}
	data, n, err = d.Decode([]byte("\r\nGET"))
	if len(data) != 0 || n != 2 || err != nil || !d.Done() {
		t.Fatalf("Decode = %q, %d, %v, done %v", data, n, err, d.Done())
	}
	data, n, err = d.Decode([]byte("GET"))
	if len(data) != 0 || n != 0 || err != nil || !d.Done() {
		t.Fatalf("after done: Decode = %q, %d, %v", data, n, err)
	}
	// Maximal chunk size.
	d = Chunked{}
	data, n, err = d.Decode([]byte("FFFFFFFF\r\nab"))
	if string(data) != "ab" || n != 12 || err != nil {
		t.Fatalf("Decode = %q, %d, %v", data, n, err)
	}
	if _, left := d.Save(); left != 0xFFFFFFFF-2 {
		t.Fatalf("left = %d", left)
	}
	// A bad state from RestoreChunked.
	d = RestoreChunked(7, 0)
	if _, _, err := d.Decode([]byte("0\r\n\r\n")); err != ErrBadChunk {
		t.Fatalf("bad state: %v", err)
	}
}

var chunkedErrorTests = []struct {
	name string
	in   string
	want *Error
}{
	{"empty size line", "\r\n", ErrBadChunk},
	{"no size", ";ext\r\n", ErrBadChunk},
	{"bad hex", "g\r\n", ErrBadChunk},
	{"sign", "+5\r\nhello\r\n", ErrBadChunk},
	{"0x prefix", "0x5\r\nhello\r\n", ErrBadChunk},
	{"space before size", " 5\r\nhello\r\n", ErrBadChunk},
	{"space after size without ext", "5 \r\nhello\r\n", ErrBadChunk},
	{"junk after size", "5x\r\nhello\r\n", ErrBadChunk},
	{"bare LF after size", "5\nhello\r\n", ErrBadChunk},
	{"bare CR after size", "5\rhello\r\n", ErrBadChunk},
	{"control byte in ext", "5;a\x01b\r\nhello\r\n", ErrBadChunk},
	{"LF in ext", "5;a\nb\r\nhello\r\n", ErrBadChunk},
	{"size overflow", "100000000\r\n", ErrBadChunk},
	{"size overflow long", "FFFFFFFFFFFFFFFFF\r\n", ErrBadChunk},
	{"size line too long", "5;" + strings.Repeat("a", MaxChunkLine), ErrBadChunk},
	{"size line too long by one", "5;" + strings.Repeat("a", MaxChunkLine-3) + "\r\nhello\r\n0\r\n\r\n", ErrBadChunk},
	{"zeros too long", strings.Repeat("0", MaxChunkLine), ErrBadChunk},
	{"data too long", "5\r\nhello!\r\n", ErrBadChunk},
	{"missing CRLF after data", "5\r\nhello5\r\nhello\r\n", ErrBadChunk},
	{"bare LF after data", "5\r\nhello\n0\r\n\r\n", ErrBadChunk},
	{"CR and junk after data", "5\r\nhello\rx", ErrBadChunk},
	{"bare LF ends trailer", "0\r\n\n", ErrBadChunk},
	{"bare CR in trailer end", "0\r\n\rx", ErrBadChunk},
	{"bare LF after trailer field", "0\r\nX: y\n\r\n", ErrBadHeader},
	{"bad trailer name", "0\r\nX Y: z\r\n\r\n", ErrBadHeader},
	{"trailer missing colon", "0\r\nXYZ\r\n\r\n", ErrBadHeader},
	{"trailer NUL", "0\r\nX: a\x00\r\n\r\n", ErrBadHeader},
	{"trailer leading space", "0\r\n X: a\r\n\r\n", ErrBadHeader},
	{"trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n", ErrObsFold},
	{"trailer too large", "0\r\nX: " + strings.Repeat("a", MaxHeaderBytes), ErrTrailerTooLarge},
	{"trailer too large in lines", "0\r\n" + strings.Repeat("X-Long-Trailer-Field: "+strings.Repeat("v", 100)+"\r\n", MaxHeaderBytes/100), ErrTrailerTooLarge},
	{"trailer too large by one", "0\r\nX: " + strings.Repeat("a", MaxHeaderBytes-len("X: \r\n\r\n")+1) + "\r\n\r\n", ErrTrailerTooLarge},
}

func TestChunkedErrors(t *testing.T) {
	for _, tt := range chunkedErrorTests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			_, _, err := decodeAll(in, func(left int) int { return left }, false)
			if err != tt.want {
				t.Fatalf("one shot: err %v, want %v", err, tt.want)
			}
			_, _, err = decodeAll(in, func(int) int { return 1 }, true)
			if err != tt.want {
				t.Fatalf("byte by byte: err %v, want %v", err, tt.want)
			}
		})
	}
}

func TestChunkedLimits(t *testing.T) {
	// A size line of exactly MaxChunkLine bytes is fine.
	line := "5;" + strings.Repeat("a", MaxChunkLine-4) + "\r\n"
	if len(line) != MaxChunkLine {
		t.Fatal("bad test")
	}
	body, rest, err := decodeAll([]byte(line+"hello\r\n0\r\n\r\n"), func(l int) int { return l }, false)
	if err != nil || string(body) != "hello" || len(rest) != 0 {
		t.Fatalf("MaxChunkLine: %q %q %v", body, rest, err)
	}
	// A trailer section of exactly MaxHeaderBytes is fine.
	tr := "X: " + strings.Repeat("a", MaxHeaderBytes-len("X: \r\n\r\n")) + "\r\n\r\n"
	if len(tr) != MaxHeaderBytes {
		t.Fatal("bad test")
	}
	for _, split := range []func(int) int{func(l int) int { return l }, func(int) int { return 1 }} {
		body, rest, err = decodeAll([]byte("0\r\n"+tr+"NEXT"), split, true)
		if err != nil || len(body) != 0 || string(rest) != "NEXT" {
			t.Fatalf("MaxHeaderBytes trailer: %q %q %v", body, rest, err)
		}
	}
}

func TestChunkedAllocs(t *testing.T) {
	enc, _ := body1K()
	in := []byte(enc)
	allocs := testing.AllocsPerRun(100, func() {
		var d Chunked
		p := in
		total := 0
		for !d.Done() {
			data, n, err := d.Decode(p)
			if err != nil || n == 0 {
				t.Fatal(err, n)
			}
			total += len(data)
			p = p[n:]
		}
		if total != 1024 {
			t.Fatal(total)
		}
	})
	if allocs != 0 {
		t.Errorf("Decode allocs = %v, want 0", allocs)
	}
	bad := []byte("5\r\nhello!")
	allocs = testing.AllocsPerRun(100, func() {
		var d Chunked
		d.Decode(bad)
		d.Decode(bad[8:])
	})
	if allocs != 0 {
		t.Errorf("Decode (error) allocs = %v, want 0", allocs)
	}
}

func TestChunkedHelper(t *testing.T) {
	// Make sure the test encoder is right, so the tables mean something.
	if got := chunk(strings.Repeat("x", 300), ";e"); !bytes.HasPrefix([]byte(got), []byte("12c;e\r\n")) {
		t.Fatal(got)
	}
}
