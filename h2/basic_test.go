package h2

import (
	"bytes"
	"fmt"
	"testing"
)

var steps = []int{0, 1, 7, 100}

func TestRequestAnswer(t *testing.T) {
	for _, step := range steps {
		t.Run(fmt.Sprint("step", step), func(t *testing.T) {
			s := newSrv(t, Limits{})
			cl := newClient()
			cl.req(1, "GET", "/a?b", nil, "authorization", "Bearer x", "idempotency-key", ` "k1" `)
			cl.req(3, "POST", "/up", []byte("hello"), "content-type", "text/plain")
			s.feed(cl.take(), step)
			if s.err != nil {
				t.Fatal(s.err)
			}
			got := s.frames()
			if len(got) != 2 || !has(got, "SETTINGS MAX_CONCURRENT_STREAMS=100 MAX_HEADER_LIST_SIZE=16384") || got[1] != "SETTINGS ack" {
				t.Fatalf("frames %q", got)
			}
			want := []reqRec{
				{1, "GET", "/a?b", "example.com", "", `"k1"`, "Bearer x", -1, true, 2},
				{3, "POST", "/up", "example.com", "text/plain", "", "", 5, false, 2},
			}
			if fmt.Sprint(s.h.reqs) != fmt.Sprint(want) {
				t.Fatalf("requests\n%v\nwant\n%v", s.h.reqs, want)
			}
			if string(s.h.body[3]) != "hello" || !s.h.ended[3] {
				t.Fatalf("body %q ended %v", s.h.body[3], s.h.ended[3])
			}
			if s.c.Streams() != 2 {
				t.Fatalf("streams %d", s.c.Streams())
			}
			s.out = s.c.Respond(s.out, 3, &Response{Status: 201, ContentType: "application/json", Extra: []Field{{"Retry-After", "3"}}}, []byte(`{"id":1}`))
			s.out = s.c.Respond(s.out, 1, &Response{Status: 204}, nil)
			got = s.frames()
			want2 := []string{
				`HEADERS 3 :status=201 content-type=application/json content-length=8 retry-after=3`,
				`DATA 3 es "{\"id\":1}"`,
				`HEADERS 1 es :status=204`,
			}
			if fmt.Sprint(got) != fmt.Sprint(want2) {
				t.Fatalf("answers\n%q\nwant\n%q", got, want2)
			}
			if s.c.Streams() != 0 {
				t.Fatalf("streams %d after answers", s.c.Streams())
			}
		})
	}
}

func TestManyStreamsInterleaved(t *testing.T) {
	s := newSrv(t, Limits{})
	cl := newClient()
	const n = 20
	for i := uint32(0); i < n; i++ {
		cl.headers(1+2*i, false, ":method", "PUT", ":scheme", "http", ":path", fmt.Sprint("/", i), "host", "h")
	}
	for round := 0; round < 3; round++ {
		for i := uint32(0); i < n; i++ {
			cl.fr.WriteData(1+2*i, round == 2, []byte(fmt.Sprint(i, "-", round, ";")))
		}
	}
	s.feed(cl.take(), 13)
	if s.err != nil {
		t.Fatal(s.err)
	}
	s.frames()
	for i := uint32(0); i < n; i++ {
		id := 1 + 2*i
		if w := fmt.Sprintf("%d-0;%d-1;%d-2;", i, i, i); string(s.h.body[id]) != w || !s.h.ended[id] {
			t.Fatalf("stream %d body %q", id, s.h.body[id])
		}
		if s.h.reqs[i].host != "h" || s.h.reqs[i].target != fmt.Sprint("/", i) {
			t.Fatalf("request %v", s.h.reqs[i])
		}
	}
	for i := n - 1; i >= 0; i-- {
		s.out = s.c.Respond(s.out, uint32(1+2*i), &Response{Status: 200}, []byte("ok"))
	}
	got := s.frames()
	if len(got) != 2*n || got[0] != "HEADERS 39 :status=200 content-length=2" || got[1] != `DATA 39 es "ok"` {
		t.Fatalf("answers %q", got)
	}
}

// TestSendFlowControl: the peer's initial window 0, then WINDOW_UPDATE
// and SETTINGS let the answer out; its frame size splits DATA.
func TestSendFlowControl(t *testing.T) {
	for _, step := range steps {
		s := newSrv(t, Limits{})
		cl := newClient()
		cl.buf.Reset()
		cl.buf.WriteString(Preface)
		cl.fr.WriteSettings(http2Setting(setInitialWindowSize, 0))
		cl.req(1, "GET", "/", nil)
		s.feed(cl.take(), step)
		s.frames()
		s.out = s.c.Respond(s.out, 1, &Response{Status: 200}, bytes.Repeat([]byte("x"), 100))
		if got := s.frames(); len(got) != 1 || got[0] != "HEADERS 1 :status=200 content-length=100" {
			t.Fatalf("with window 0: %q", got)
		}
		cl.fr.WriteWindowUpdate(1, 30)
		s.feed(cl.take(), step)
		if got := s.frames(); len(got) != 1 || got[0] != fmt.Sprintf("DATA 1 %q", bytes.Repeat([]byte("x"), 30)) {
			t.Fatalf("after WINDOW_UPDATE 30: %q", got)
		}
		cl.fr.WriteSettings(http2Setting(setInitialWindowSize, 1000))
		s.feed(cl.take(), step)
		if got := s.frames(); len(got) != 2 || got[0] != "SETTINGS ack" || got[1] != fmt.Sprintf("DATA 1 es %q", bytes.Repeat([]byte("x"), 70)) {
			t.Fatalf("after SETTINGS: %q", got)
		}
		if s.c.Streams() != 0 || s.err != nil {
			t.Fatal(s.c.Streams(), s.err)
		}
	}
	// Frame size: an answer of 20000 bytes goes out as 16384 + 3616.
	s := newSrv(t, Limits{})
	cl := newClient()
	cl.req(1, "GET", "/", nil)
	s.feed(cl.take(), 0)
	s.frames()
	s.out = s.c.Respond(s.out, 1, &Response{Status: 200}, make([]byte, 20000))
	got := s.frames()
	if len(got) != 3 || len(got[1]) < 16384 || !has(got[2:], "DATA 1 es") {
		t.Fatalf("split answer: %d frames", len(got))
	}
}

// TestRecvWindow: the windows are returned, batched.
func TestRecvWindow(t *testing.T) {
	s := newSrv(t, Limits{})
	cl := newClient()
	cl.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/")
	for i := 0; i < 4; i++ {
		cl.fr.WriteData(1, false, make([]byte, 10000))
	}
	s.feed(cl.take(), 0)
	got := s.frames()
	if !has(got, "WINDOW_UPDATE 0 40000") || !has(got, "WINDOW_UPDATE 1 40000") || len(got) != 4 {
		t.Fatalf("%q", got)
	}
	// Padding counts too.
	cl.fr.WriteDataPadded(1, false, make([]byte, 10000), make([]byte, 255))
	cl.fr.WriteDataPadded(1, false, make([]byte, 10000), make([]byte, 255))
	cl.fr.WriteDataPadded(1, false, make([]byte, 10000), make([]byte, 255))
	cl.fr.WriteDataPadded(1, true, make([]byte, 10000), make([]byte, 255))
	s.feed(cl.take(), 0)
	if got := s.frames(); !has(got, "WINDOW_UPDATE 0 41024") || len(got) != 1 {
		t.Fatalf("%q", got)
	}
	if len(s.h.body[1]) != 80000 || !s.h.ended[1] || s.err != nil {
		t.Fatal(len(s.h.body[1]), s.err)
	}
}

// TestEarlyAnswer: an answer before the body's end is followed by
// RST_STREAM NO_ERROR, and the DATA in flight is dropped quietly.
func TestEarlyAnswer(t *testing.T) {
	s := newSrv(t, Limits{})
	cl := newClient()
	cl.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/", "content-length", "100")
	cl.fr.WriteData(1, false, make([]byte, 10))
	s.feed(cl.take(), 0)
	s.frames()
	s.out = s.c.Respond(s.out, 1, &Response{Status: 413}, []byte("too big"))
	if got := s.frames(); fmt.Sprint(got) != `[HEADERS 1 :status=413 content-length=7 DATA 1 es "too big" RST 1 NO_ERROR]` {
		t.Fatalf("%q", got)
	}
	cl.fr.WriteData(1, false, make([]byte, 50))
	cl.fr.WriteData(1, true, make([]byte, 40))
	cl.req(3, "GET", "/", nil)
	s.feed(cl.take(), 0)
	if got := s.frames(); len(got) != 0 || s.err != nil || len(s.h.reqs) != 2 || len(s.h.body[1]) != 10 {
		t.Fatalf("%q %v %d", got, s.err, len(s.h.reqs))
	}
}

// TestPeerReset: the handler is told, the slot held until Release; a full
// table refuses streams.
func TestPeerReset(t *testing.T) {
	s := newSrv(t, Limits{MaxStreams: 2})
	cl := newClient()
	cl.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/")
	cl.fr.WriteRSTStream(1, http2ErrCancel)
	cl.headers(3, false, ":method", "POST", ":scheme", "http", ":path", "/")
	cl.headers(5, false, ":method", "POST", ":scheme", "http", ":path", "/")
	s.feed(cl.take(), 0)
	got := s.frames()
	if fmt.Sprint(s.h.resets) != "[1]" || !has(got, "RST 5 REFUSED_STREAM") || s.c.Streams() != 2 || len(s.h.reqs) != 2 {
		t.Fatalf("%q resets %v streams %d", got, s.h.resets, s.c.Streams())
	}
	if out := s.c.Respond(nil, 1, &Response{Status: 200}, nil); len(out) != 0 {
		t.Fatal("answered a reset stream")
	}
	s.c.Release(1)
	cl.headers(7, true, ":method", "GET", ":scheme", "http", ":path", "/")
	s.feed(cl.take(), 0)
	if got := s.frames(); len(got) != 0 || len(s.h.reqs) != 3 || s.c.Streams() != 2 {
		t.Fatalf("%q %d", got, s.c.Streams())
	}
}

func TestShutdown(t *testing.T) {
	s := newSrv(t, Limits{})
	cl := newClient()
	cl.req(1, "GET", "/", nil)
	s.feed(cl.take(), 0)
	s.frames()
	s.out = s.c.Shutdown(s.out)
	if s.c.Done() {
		t.Fatal("done with a stream open")
	}
	cl.req(3, "GET", "/", nil)
	s.feed(cl.take(), 0)
	s.out = s.c.Respond(s.out, 1, &Response{Status: 200}, nil)
	got := s.frames()
	if fmt.Sprint(got) != "[GOAWAY 1 NO_ERROR RST 3 REFUSED_STREAM HEADERS 1 es :status=200 content-length=0]" || !s.c.Done() {
		t.Fatalf("%q done %v", got, s.c.Done())
	}
}

// TestBigAnswers: a head larger than a frame goes out in CONTINUATION; a
// body the windows hold back beyond maxPending ends the stream.
func TestBigAnswers(t *testing.T) {
	s := newSrv(t, Limits{})
	cl := newClient()
	cl.req(1, "GET", "/", nil)
	s.feed(cl.take(), 0)
	s.frames()
	long := string(bytes.Repeat([]byte("v"), 20000))
	s.out = s.c.Respond(s.out, 1, &Response{Status: 503, Extra: []Field{{"X-Long", long}}}, []byte("x"))
	got := s.frames()
	if len(got) != 2 || got[0] != "HEADERS 1 :status=503 content-length=1 x-long="+long || got[1] != `DATA 1 es "x"` {
		t.Fatalf("%.100q", got)
	}

	cl.fr.WriteSettings(http2Setting(setInitialWindowSize, 0))
	cl.req(3, "GET", "/", nil)
	s.feed(cl.take(), 0)
	s.frames()
	s.out = s.c.Respond(s.out, 3, &Response{Status: 200}, make([]byte, maxPending+1))
	if got := s.frames(); fmt.Sprint(got) != "[HEADERS 3 :status=200 content-length=16385 RST 3 INTERNAL_ERROR]" || s.c.Streams() != 0 {
		t.Fatalf("%q %d", got, s.c.Streams())
	}
}

// TestTableDropped: after a burst, an idle connection holds no stream
// table.
func TestTableDropped(t *testing.T) {
	s := newSrv(t, Limits{})
	cl := newClient()
	for id := uint32(1); id < 40; id += 2 {
		cl.headers(id, false, get...)
	}
	s.feed(cl.take(), 0)
	for id := uint32(1); id < 40; id += 2 {
		s.out = s.c.Respond(s.out, id, &Response{Status: 200}, []byte("x"))
	}
	if s.c.Streams() != 0 || s.c.streams != nil || s.err != nil {
		t.Fatal(s.c.Streams(), cap(s.c.streams), s.err)
	}
	// Answers held back, released by one WINDOW_UPDATE (flushAll frees
	// them all).
	cl.fr.WriteSettings(http2Setting(setInitialWindowSize, 0))
	for id := uint32(41); id < 80; id += 2 {
		cl.req(id, "GET", "/", nil)
	}
	s.feed(cl.take(), 0)
	for id := uint32(41); id < 80; id += 2 {
		s.out = s.c.Respond(s.out, id, &Response{Status: 200}, []byte("x"))
	}
	cl.fr.WriteSettings(http2Setting(setInitialWindowSize, 10))
	s.feed(cl.take(), 0)
	if s.c.Streams() != 0 || s.c.streams != nil || s.err != nil {
		t.Fatal(s.c.Streams(), cap(s.c.streams), s.err)
	}
}
