package h2

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2"
)

var get = []string{":method", "GET", ":scheme", "http", ":path", "/"}

func kv(extra ...string) []string { return append(append([]string(nil), get...), extra...) }

// TestMalformed: requests RFC 9113 §8 calls malformed get RST_STREAM
// PROTOCOL_ERROR and never reach the handler; the connection goes on.
func TestMalformed(t *testing.T) {
	cases := []struct {
		name string
		send func(cl *client)
	}{
		{"uppercase name", func(cl *client) { cl.headers(1, true, kv("X-Up", "1")...) }},
		{"connection", func(cl *client) { cl.headers(1, true, kv("connection", "close")...) }},
		{"keep-alive", func(cl *client) { cl.headers(1, true, kv("keep-alive", "1")...) }},
		{"transfer-encoding", func(cl *client) { cl.headers(1, true, kv("transfer-encoding", "chunked")...) }},
		{"upgrade", func(cl *client) { cl.headers(1, true, kv("upgrade", "h2c")...) }},
		{"te gzip", func(cl *client) { cl.headers(1, true, kv("te", "gzip")...) }},
		{"no :path", func(cl *client) { cl.headers(1, true, ":method", "GET", ":scheme", "http") }},
		{"no :method", func(cl *client) { cl.headers(1, true, ":scheme", "http", ":path", "/") }},
		{"no :scheme", func(cl *client) { cl.headers(1, true, ":method", "GET", ":path", "/") }},
		{"empty :path", func(cl *client) { cl.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "") }},
		{"two :method", func(cl *client) { cl.headers(1, true, kv(":method", "GET")...) }},
		{":status", func(cl *client) { cl.headers(1, true, kv(":status", "200")...) }},
		{"unknown pseudo", func(cl *client) { cl.headers(1, true, kv(":foo", "x")...) }},
		{"pseudo after regular", func(cl *client) {
			cl.headers(1, true, ":method", "GET", ":scheme", "http", "x", "1", ":path", "/")
		}},
		{"newline in value", func(cl *client) { cl.headers(1, true, kv("x", "a\nb")...) }},
		{"bad content-length", func(cl *client) { cl.headers(1, true, kv("content-length", "1x")...) }},
		{"content-length without body", func(cl *client) { cl.headers(1, true, kv("content-length", "3")...) }},
		{"content-length too small", func(cl *client) {
			cl.headers(1, false, kv("content-length", "3")...)
			cl.fr.WriteData(1, true, []byte("abcd"))
		}},
		{"content-length too large", func(cl *client) {
			cl.headers(1, false, kv("content-length", "5")...)
			cl.fr.WriteData(1, true, []byte("abcd"))
		}},
		{"content-length and trailers", func(cl *client) {
			cl.headers(1, false, kv("content-length", "5")...)
			cl.fr.WriteData(1, false, []byte("abcd"))
			cl.headers(1, true, "x-trailer", "1")
		}},
		{"pseudo in trailers", func(cl *client) {
			cl.headers(1, false, get...)
			cl.headers(1, true, ":path", "/")
		}},
		{"trailers without END_STREAM", func(cl *client) {
			cl.headers(1, false, get...)
			cl.headers(1, false, "x-trailer", "1")
		}},
		{"depends on itself", func(cl *client) {
			cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: cl.block(get...), EndStream: true, EndHeaders: true,
				Priority: http2.PriorityParam{StreamDep: 1, Weight: 1}})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSrv(t, Limits{})
			cl := newClient()
			tc.send(cl)
			cl.req(3, "GET", "/next", nil)
			s.feed(cl.take(), 0)
			got := s.frames()
			if s.err != nil || !has(got, "RST 1 PROTOCOL_ERROR") || has(got, "GOAWAY") {
				t.Fatalf("%q %v", got, s.err)
			}
			if n := len(s.h.reqs); n == 0 || s.h.reqs[n-1].target != "/next" || s.h.ended[1] {
				t.Fatalf("requests %v", s.h.reqs)
			}
			if s.c.Streams() != 1 && !(len(s.h.resets) == 1 && s.c.Streams() == 2) {
				t.Fatalf("streams %d resets %v", s.c.Streams(), s.h.resets)
			}
		})
	}
}

func TestTrailersAccepted(t *testing.T) {
	s := newSrv(t, Limits{})
	cl := newClient()
	cl.headers(1, false, kv("content-length", "4", "te", "trailers")...)
	cl.fr.WriteData(1, false, []byte("abcd"))
	cl.headers(1, true, "x-checksum", "1")
	s.feed(cl.take(), 1)
	if got := s.frames(); s.err != nil || has(got, "RST") || !s.h.ended[1] || string(s.h.body[1]) != "abcd" {
		t.Fatalf("%q %v", got, s.err)
	}
}

// TestStreamErrors: errors confined to a stream.
func TestStreamErrors(t *testing.T) {
	cases := []struct {
		name, want string
		send       func(cl *client)
	}{
		{"WINDOW_UPDATE 0", "RST 1 PROTOCOL_ERROR", func(cl *client) { cl.headers(1, false, get...); cl.fr.WriteWindowUpdate(1, 0) }},
		{"stream window overflow", "RST 1 FLOW_CONTROL_ERROR", func(cl *client) {
			cl.headers(1, false, get...)
			cl.fr.WriteWindowUpdate(1, 1<<31-1)
		}},
		{"PRIORITY on itself", "RST 1 PROTOCOL_ERROR", func(cl *client) {
			cl.fr.WritePriority(1, http2.PriorityParam{StreamDep: 1})
		}},
		{"PRIORITY length 4", "RST 1 FRAME_SIZE_ERROR", func(cl *client) { cl.fr.WriteRawFrame(http2.FramePriority, 0, 1, []byte{0, 0, 0, 3}) }},
		{"DATA half-closed", "RST 1 STREAM_CLOSED", func(cl *client) { cl.headers(1, true, get...); cl.fr.WriteData(1, true, []byte("x")) }},
		{"HEADERS half-closed", "RST 1 STREAM_CLOSED", func(cl *client) { cl.headers(1, true, get...); cl.headers(1, true, get...) }},
		{"DATA after RST", "RST 1 STREAM_CLOSED", func(cl *client) {
			cl.headers(1, false, get...)
			cl.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			cl.fr.WriteData(1, true, []byte("x"))
		}},
		{"HEADERS after RST", "RST 1 STREAM_CLOSED", func(cl *client) {
			cl.headers(1, false, get...)
			cl.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			cl.headers(1, true, get...)
		}},
		{"DATA beyond stream window", "RST 1 FLOW_CONTROL_ERROR", func(cl *client) {
			cl.buf.Reset()
			cl.buf.WriteString(Preface)
			cl.fr.WriteSettings()
			cl.fr.WriteWindowUpdate(0, 100000)
			cl.headers(1, false, get...)
			for i := 0; i < 5; i++ {
				cl.fr.WriteData(1, false, make([]byte, 16000))
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSrv(t, Limits{StreamWindow: 65535, ConnWindow: 1 << 20})
			s.h.refuse = tc.name == "DATA beyond stream window" // no stream WINDOW_UPDATE
			cl := newClient()
			tc.send(cl)
			s.feed(cl.take(), 0)
			got := s.frames()
			if s.err != nil || !has(got, tc.want) {
				t.Fatalf("%q %v", got, s.err)
			}
		})
	}
}

func setting(id uint16, v uint32) []byte {
	return []byte{byte(id >> 8), byte(id), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// TestConnErrors: connection errors: GOAWAY, an error, h.Reset for held
// streams, nothing consumed afterwards.
func TestConnErrors(t *testing.T) {
	cases := []struct {
		name string
		code ErrCode
		send func(cl *client)
	}{
		{"DATA on idle", ErrProtocol, func(cl *client) { cl.fr.WriteData(3, true, []byte("x")) }},
		{"DATA on stream 0", ErrProtocol, func(cl *client) { cl.fr.WriteData(0, true, []byte("x")) }},
		{"RST on idle", ErrProtocol, func(cl *client) { cl.fr.WriteRSTStream(3, 8) }},
		{"WINDOW_UPDATE on idle", ErrProtocol, func(cl *client) { cl.fr.WriteWindowUpdate(3, 1) }},
		{"CONTINUATION on idle", ErrProtocol, func(cl *client) { cl.fr.WriteContinuation(3, true, cl.block(get...)) }},
		{"DATA on an even stream", ErrProtocol, func(cl *client) { cl.headers(5, true, get...); cl.fr.WriteData(4, true, []byte("x")) }},
		{"RST on an even stream", ErrProtocol, func(cl *client) { cl.headers(5, true, get...); cl.fr.WriteRSTStream(4, 8) }},
		{"WINDOW_UPDATE on an even stream", ErrProtocol, func(cl *client) { cl.headers(5, true, get...); cl.fr.WriteWindowUpdate(4, 1) }},
		{"even stream", ErrProtocol, func(cl *client) { cl.headers(2, true, get...) }},
		{"stream below last", ErrProtocol, func(cl *client) { cl.headers(7, true, get...); cl.headers(5, true, get...) }},
		{"HEADERS on closed", ErrStreamClosed, func(cl *client) { cl.headers(3, true, get...); cl.fr.WriteRSTStream(3, 8); cl.headers(3, true, get...) }},
		{"header block interrupted", ErrProtocol, func(cl *client) {
			cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: cl.block(get...)})
			cl.fr.WritePriority(3, http2.PriorityParam{StreamDep: 3})
		}},
		{"header block other stream", ErrProtocol, func(cl *client) {
			cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: cl.block(get...)})
			cl.fr.WriteContinuation(5, true, nil)
		}},
		{"PING length", ErrFrameSize, func(cl *client) { cl.fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 6)) }},
		{"PING on stream", ErrProtocol, func(cl *client) { cl.fr.WriteRawFrame(http2.FramePing, 0, 3, make([]byte, 8)) }},
		{"SETTINGS ACK payload", ErrFrameSize, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameSettings, 1, 0, setting(1, 1)) }},
		{"SETTINGS length", ErrFrameSize, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameSettings, 0, 0, make([]byte, 5)) }},
		{"SETTINGS on stream", ErrProtocol, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameSettings, 0, 1, nil) }},
		{"ENABLE_PUSH 2", ErrProtocol, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameSettings, 0, 0, setting(2, 2)) }},
		{"INITIAL_WINDOW_SIZE 2^31", ErrFlowControl, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameSettings, 0, 0, setting(4, 1<<31)) }},
		{"MAX_FRAME_SIZE small", ErrProtocol, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameSettings, 0, 0, setting(5, 16383)) }},
		{"MAX_FRAME_SIZE large", ErrProtocol, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameSettings, 0, 0, setting(5, 1<<24)) }},
		{"WINDOW_UPDATE 0", ErrProtocol, func(cl *client) { cl.fr.WriteWindowUpdate(0, 0) }},
		{"WINDOW_UPDATE length", ErrFrameSize, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, make([]byte, 3)) }},
		{"connection window overflow", ErrFlowControl, func(cl *client) { cl.fr.WriteWindowUpdate(0, 1<<31-1) }},
		{"settings window overflow", ErrFlowControl, func(cl *client) {
			cl.headers(3, false, get...)
			cl.fr.WriteWindowUpdate(3, 1<<31-1-65535)
			cl.fr.WriteRawFrame(http2.FrameSettings, 0, 0, setting(4, 65536))
		}},
		{"RST length", ErrFrameSize, func(cl *client) {
			cl.headers(3, false, get...)
			cl.fr.WriteRawFrame(http2.FrameRSTStream, 0, 3, make([]byte, 3))
		}},
		{"GOAWAY on stream", ErrProtocol, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameGoAway, 0, 3, make([]byte, 8)) }},
		{"PUSH_PROMISE", ErrProtocol, func(cl *client) { cl.fr.WriteRawFrame(http2.FramePushPromise, 4, 3, make([]byte, 4)) }},
		{"frame too large", ErrFrameSize, func(cl *client) { cl.headers(3, false, get...); cl.fr.WriteData(3, false, make([]byte, 16385)) }},
		{"DATA padding", ErrProtocol, func(cl *client) {
			cl.headers(3, false, get...)
			cl.fr.WriteRawFrame(http2.FrameData, 8, 3, []byte{5, 1, 2})
		}},
		{"HPACK index 0", ErrCompression, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameHeaders, 5, 3, []byte{0x80}) }},
		{"HPACK index past table", ErrCompression, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameHeaders, 5, 3, []byte{0xff, 0x10}) }},
		{"HPACK size update too large", ErrCompression, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameHeaders, 5, 3, []byte{0x3f, 0xe2, 0x1f}) }},
		{"HPACK size update after field", ErrCompression, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameHeaders, 5, 3, []byte{0x82, 0x20}) }},
		{"HPACK huffman EOS", ErrCompression, func(cl *client) {
			cl.fr.WriteRawFrame(http2.FrameHeaders, 5, 3, []byte{0x82, 0x84, 0x41, 0x84, 0xff, 0xff, 0xff, 0xff})
		}},
		{"HPACK truncated", ErrCompression, func(cl *client) { cl.fr.WriteRawFrame(http2.FrameHeaders, 5, 3, []byte{0x82, 0x44, 0x05, 'a'}) }},
		{"header block too large", ErrEnhanceYourCalm, func(cl *client) {
			cl.headers(3, true, kv("x", strings.Repeat("a", 9000), "y", strings.Repeat("b", 9000))...)
		}},
		{"DATA beyond connection window", ErrFlowControl, func(cl *client) {
			cl.headers(3, false, get...)
			for i := 0; i < 5; i++ {
				cl.fr.WriteData(3, false, make([]byte, 16000))
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSrv(t, Limits{})
			s.h.refuse = true // no WINDOW_UPDATE for streams
			s.h.release = &s.c
			cl := newClient()
			if tc.name == "DATA beyond connection window" {
				s.c.Init(Limits{ConnWindow: 65535})
				s.c.lim.ConnWindow = 1 << 30 // never returned
			}
			cl.headers(1, false, get...) // a stream the handler holds
			tc.send(cl)
			cl.req(1001, "GET", "/after", nil)
			s.feed(cl.take(), 0)
			var e *Error
			if !errors.As(s.err, &e) || e.Code != tc.code {
				t.Fatalf("error %v, want %v", s.err, tc.code)
			}
			got := s.frames()
			if g := got[len(got)-1]; !strings.HasPrefix(g, "GOAWAY ") || !strings.HasSuffix(g, " "+tc.code.String()) {
				t.Fatalf("%q", got)
			}
			if !slices.Contains(s.h.resets, 1) {
				t.Fatalf("resets %v", s.h.resets)
			}
			out, n, err := s.c.Feed(nil, []byte("anything at all"), &s.h)
			if len(out) != 0 || n != 0 || err == nil || !s.c.Done() {
				t.Fatal("Feed after the error", out, n, err)
			}
		})
	}
}

func TestBadStart(t *testing.T) {
	for _, in := range []string{"GET / HTTP/1.1\r\n\r\nxxxxxxxxxxxxx", Preface + "\x00\x00\x08\x06\x00\x00\x00\x00\x00pingping"} {
		s := newSrv(t, Limits{})
		s.feed([]byte(in), 1)
		var e *Error
		if !errors.As(s.err, &e) || e.Code != ErrProtocol || !has(s.frames(), "GOAWAY 0 PROTOCOL_ERROR") {
			t.Fatalf("%q: %v", in, s.err)
		}
	}
}

// TestContinuation: a block across many CONTINUATIONs, fed byte by byte.
func TestContinuation(t *testing.T) {
	s := newSrv(t, Limits{})
	cl := newClient()
	b := cl.block(kv("x-long", strings.Repeat("v", 300))...)
	cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:10], EndStream: true})
	for i := 10; i < len(b); i += 50 {
		cl.fr.WriteContinuation(1, i+50 >= len(b), b[i:min(i+50, len(b))])
	}
	s.feed(cl.take(), 1)
	if s.err != nil || len(s.h.reqs) != 1 || !s.h.reqs[0].end {
		t.Fatal(s.err, s.h.reqs)
	}
	if bytes.Contains(s.out, []byte("RST")) {
		t.Fatal("RST")
	}
}

// TestClosedAfterAnswer: frames on a stream closed both ways (answered,
// body complete) are a connection error STREAM_CLOSED; WINDOW_UPDATE and
// PRIORITY there are ignored.
func TestClosedAfterAnswer(t *testing.T) {
	for _, data := range []bool{true, false} {
		s := newSrv(t, Limits{})
		cl := newClient()
		cl.req(1, "GET", "/", nil)
		s.feed(cl.take(), 0)
		s.out = s.c.Respond(s.out, 1, &Response{Status: 200}, []byte("ok"))
		s.frames()
		cl.fr.WriteWindowUpdate(1, 10)
		cl.fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 9})
		cl.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		s.feed(cl.take(), 0)
		if got := s.frames(); len(got) != 0 || s.err != nil {
			t.Fatalf("%q %v", got, s.err)
		}
		if data {
			cl.fr.WriteData(1, true, []byte("x"))
		} else {
			cl.headers(1, true, get...)
		}
		s.feed(cl.take(), 0)
		var e *Error
		if !errors.As(s.err, &e) || e.Code != ErrStreamClosed || !has(s.frames(), "GOAWAY 1 STREAM_CLOSED") {
			t.Fatalf("data %v: %v", data, s.err)
		}
	}
}
