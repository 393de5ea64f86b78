package bench

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRespReader(t *testing.T) {
	type want struct {
		status int
		length int64
		close  bool
		body   string
	}
	tests := []struct {
		name  string
		in    string
		want  []want // responses read in order
		errIs error  // error of the read after them (nil: io.EOF)
		errIn string // or a substring of it
	}{
		{"upsink 201", "HTTP/1.1 201 Created\r\nDate: Mon, 23 Nov 2026 03:31:56 GMT\r\nContent-Type: application/json\r\nContent-Length: 36\r\n\r\n{\"id\":1,\"stream\":\"s\",\"bytes\":1024}\n\n",
			[]want{{201, 36, false, "{\"id\":1,\"stream\":\"s\",\"bytes\":1024}\n\n"}}, nil, ""},
		{"pipelined two", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nHTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\ncontent-length: 0\r\nConnection: close\r\n\r\n",
			[]want{{200, 3, false, "ok\n"}, {503, 0, true, ""}}, nil, ""},
		{"header case and spaces", "HTTP/1.1 201 Created\r\ncOnTeNt-LeNgTh:    2   \r\nCONNECTION: Keep-Alive, Close\r\n\r\nhi",
			[]want{{201, 2, true, "hi"}}, nil, ""},
		{"bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", []want{{200, 2, false, "ok"}}, nil, ""},
		{"reason phrase optional", "HTTP/1.1 204\r\n\r\n", []want{{204, 0, false, ""}}, nil, ""},
		{"100 continue skipped", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", []want{{201, 1, false, "x"}}, nil, ""},
		{"http/1.0 closes by default", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", []want{{200, 1, true, "x"}}, nil, ""},
		{"http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", []want{{200, 1, false, "x"}}, nil, ""},
		{"close-delimited body", "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\nbad request\n", []want{{400, 12, true, "bad request\n"}}, nil, ""},
		{"equal duplicate length", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", []want{{200, 1, false, "x"}}, nil, ""},
		{"body longer than kept is discarded", "HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("z", 70000),
			[]want{{200, 70000, false, ""}}, nil, ""},

		{"truncated body", "HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nabc", nil, io.ErrUnexpectedEOF, ""},
		{"truncated head", "HTTP/1.1 201 Created\r\nContent-Len", nil, io.ErrUnexpectedEOF, ""},
		{"eof after status line", "HTTP/1.1 201 Created\r\n", nil, io.ErrUnexpectedEOF, ""},
		{"not http", "SSH-2.0-OpenSSH_9.2\r\n", nil, errBadStatus, ""},
		{"http/2 preface", "HTTP/2 200\r\n\r\n", nil, errBadStatus, ""},
		{"non-digit status", "HTTP/1.1 2x1 Created\r\n\r\n", nil, errBadStatus, ""},
		{"status glued to reason", "HTTP/1.1 2011Created\r\n\r\n", nil, errBadStatus, ""},
		{"header without colon", "HTTP/1.1 200 OK\r\nContent-Length 1\r\n\r\nx", nil, errBadHeader, ""},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", nil, errBadLength, ""},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", nil, errBadLength, ""},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", nil, errChunked, ""},
		{"keep-alive without length", "HTTP/1.1 200 OK\r\n\r\nx", nil, errNoLength, ""},
		{"header line too long", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 5000) + "\r\n\r\n", nil, errHeadTooBig, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr := newRespReader(strings.NewReader(tt.in))
			for i, w := range tt.want {
				r, err := rr.read()
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				if r.status != w.status || r.length != w.length || r.close != w.close {
					t.Fatalf("response %d: got status %d length %d close %v, want %d %d %v", i, r.status, r.length, r.close, w.status, w.length, w.close)
				}
				if w.length <= maxKeptBody && string(r.body) != w.body {
					t.Fatalf("response %d: body %q, want %q", i, r.body, w.body)
				}
			}
			_, err := rr.read()
			wantErr := tt.errIs
			if wantErr == nil && len(tt.want) > 0 {
				wantErr = io.EOF
			}
			if !errors.Is(err, wantErr) {
				t.Fatalf("final read: err %v, want %v", err, wantErr)
			}
		})
	}
}

// A keep-alive exchange must not allocate: the load generator's own garbage
// would otherwise compete with the server it measures.
func TestRespReaderNoAlloc(t *testing.T) {
	msg := "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 36\r\n\r\n{\"id\":1,\"stream\":\"s\",\"bytes\":1024}\n\n"
	src := strings.NewReader(msg)
	rr := newRespReader(src)
	if _, err := rr.read(); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(msg)
		rr.reset(src)
		if r, err := rr.read(); err != nil || r.status != 201 {
			t.Fatal(r.status, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per response, want 0", allocs)
	}
}

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		id, seq  uint64
		durable  uint8
		badMatch string // substring of the reason, "" for none
	}{
		{"201 mysql", 201, `{"id":42,"stream":"s","bytes":1024,"durable":"mysql"}`, 42, 0, durableMySQL, ""},
		{"201 seed (no durable)", 201, `{"id":7,"stream":"s","bytes":1}` + "\n", 7, 0, durableUnsaid, ""},
		{"202 spool", 202, `{"stream":"s","bytes":1024,"durable":"spool","spool_seq":981}`, 0, 981, durableSpool, ""},
		{"202 spool, fields reordered", 202, `{"spool_seq":3,"durable":"spool","stream":"x.y","bytes":0}`, 0, 3, durableSpool, ""},
		{"big id", 201, `{"id":18446744073709551615}`, 18446744073709551615, 0, durableUnsaid, ""},
		{"200 without json", 200, "ok\n", 0, 0, durableUnsaid, ""},

		{"201 without id", 201, `{"stream":"s","bytes":1}`, 0, 0, durableUnsaid, "without an id"},
		{"201 id not a number", 201, `{"id":"x"}`, 0, 0, durableUnsaid, "without an id"},
		{"201 spool", 201, `{"id":1,"durable":"spool"}`, 1, 0, durableSpool, `not "durable":"mysql"`},
		{"201 other durable", 201, `{"id":1,"durable":"disk"}`, 1, 0, durableOther, `not "durable":"mysql"`},
		{"202 mysql", 202, `{"durable":"mysql","spool_seq":1}`, 0, 1, durableMySQL, `not "durable":"spool"`},
		{"202 without durable", 202, `{"spool_seq":1}`, 0, 1, durableUnsaid, `not "durable":"spool"`},
		{"202 without spool_seq", 202, `{"durable":"spool"}`, 0, 0, durableSpool, "without a spool_seq"},
		{"202 with an id", 202, `{"id":5,"durable":"spool","spool_seq":2}`, 5, 2, durableSpool, "with an id"},
		{"202 empty", 202, ``, 0, 0, durableUnsaid, `not "durable":"spool"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, bad := parseAnswer(tt.status, []byte(tt.body))
			if a.id != tt.id || a.spoolSeq != tt.seq || a.durable != tt.durable {
				t.Errorf("got %+v, want id %d spool_seq %d durable %d", a, tt.id, tt.seq, tt.durable)
			}
			if (tt.badMatch == "") != (bad == "") || !strings.Contains(bad, tt.badMatch) {
				t.Errorf("bad = %q, want %q", bad, tt.badMatch)
			}
		})
	}
	body := []byte(`{"stream":"s","bytes":1024,"durable":"spool","spool_seq":981}`)
	if n := testing.AllocsPerRun(100, func() { parseAnswer(202, body) }); n != 0 {
		t.Errorf("parseAnswer allocs = %v", n)
	}
}
