package h2

import (
	"strings"
	"testing"

	"golang.org/x/net/http2"

	"upsink/parser"
)

// fuzzHandler answers every request after each Feed, releases every reset
// stream, and checks the handler contract.
type fuzzHandler struct {
	t      *testing.T
	c      *Conn
	todo   []uint32
	held   map[uint32]bool
	refuse bool
}

func (h *fuzzHandler) Request(id uint32, r *parser.Request, end bool) {
	if h.held[id] {
		h.t.Fatalf("stream %d requested twice", id)
	}
	h.held[id] = true
	h.todo = append(h.todo, id)
}

func (h *fuzzHandler) Data(id uint32, p []byte, end bool) bool {
	if !h.held[id] {
		h.t.Fatalf("data for stream %d not held", id)
	}
	return !h.refuse
}

func (h *fuzzHandler) Reset(id uint32) {
	if !h.held[id] {
		h.t.Fatalf("reset of stream %d not held", id)
	}
	delete(h.held, id)
	h.c.Release(id)
}

func FuzzFeed(f *testing.F) {
	seed := func(send func(cl *client)) {
		cl := newClient()
		send(cl)
		f.Add(cl.take()[len(Preface):], uint16(7))
	}
	seed(func(cl *client) { cl.req(1, "GET", "/", nil); cl.req(3, "POST", "/x", []byte("body")) })
	seed(func(cl *client) {
		cl.fr.WriteSettings(http2Setting(setInitialWindowSize, 0))
		cl.req(1, "GET", "/", nil)
		cl.fr.WriteWindowUpdate(1, 5)
		cl.fr.WriteSettings(http2Setting(setInitialWindowSize, 3))
	})
	seed(func(cl *client) {
		cl.headers(1, false, get...)
		cl.fr.WriteRSTStream(1, 8)
		cl.fr.WriteData(1, true, []byte("x"))
		cl.fr.WritePing(false, [8]byte{})
	})
	seed(func(cl *client) {
		b := cl.block(kv("x-long", strings.Repeat("v", 100))...)
		cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:10], EndStream: true, PadLength: 3})
		cl.fr.WriteContinuation(1, true, b[10:])
		cl.headers(3, false, kv("content-length", "2", "te", "trailers")...)
		cl.fr.WriteDataPadded(3, false, []byte("ab"), []byte{0, 0})
		cl.headers(3, true, "x-t", "1")
		cl.fr.WritePriority(5, http2.PriorityParam{StreamDep: 3})
		cl.fr.WriteGoAway(0, 0, nil)
	})
	f.Fuzz(func(t *testing.T, data []byte, step uint16) {
		feedInSteps(t, Limits{MaxStreams: 8, Flood: 100}, append([]byte(Preface), data...), int(step%64)+1, step&1 != 0,
			func(int) []byte { return []byte("answer") })
	})
}

// feedInSteps feeds in to a fresh Conn st bytes at a time, as a loop would,
// answering the streams the handler holds with answer(i) (i: the stream's
// place among those to answer; nil: not now), and checks after every step
// what a Conn must keep: done after an error, no more than one partial
// frame left, at most 64 KiB held, at most MaxStreams streams.
func feedInSteps(t *testing.T, l Limits, in []byte, st int, refuse bool, answer func(i int) []byte) {
	var c Conn
	c.Init(l)
	h := &fuzzHandler{t: t, c: &c, held: map[uint32]bool{}, refuse: refuse}
	var out, buf []byte
	for len(in) > 0 {
		k := min(st, len(in))
		buf = append(buf, in[:k]...)
		in = in[k:]
		var n int
		var err error
		out, n, err = c.Feed(out[:0], buf, h)
		buf = buf[n:]
		if err != nil {
			if !c.Done() {
				t.Fatal("not done after an error")
			}
			return
		}
		if len(buf) > headerLen+int(c.lim.MaxFrame) {
			t.Fatalf("%d bytes left", len(buf))
		}
		for i, id := range h.todo {
			if body := answer(i); h.held[id] && body != nil {
				delete(h.held, id)
				out = c.Respond(out, id, &Response{Status: 200}, body)
			}
		}
		h.todo = h.todo[:0]
		if m := c.Held(); m > 64<<10 {
			t.Fatalf("Conn holds %d bytes", m)
		}
		if c.Streams() > int(c.lim.MaxStreams) {
			t.Fatalf("%d streams", c.Streams())
		}
	}
}

// FuzzFrames builds well-framed input from the fuzzer's bytes, so that it
// reaches the stream states rather than the frame-size checks: each frame
// is [type, flags, stream, length] then length bytes of payload; type 1
// with payload byte 0x00 sends a valid request block instead.
func FuzzFrames(f *testing.F) {
	f.Add([]byte{1, 4, 1, 1, 0, 0, 0, 1, 3, 0, 5, 'h', 'e', 'l', 'l', 'o', 3, 0, 1, 4, 0, 0, 0, 8}, uint16(3))
	f.Add([]byte{4, 0, 0, 6, 0, 4, 0, 0, 0, 0, 1, 5, 1, 1, 0, 8, 0, 1, 4, 0, 0, 0, 0, 5, 1, 5, 1, 1, 0}, uint16(0))
	f.Add([]byte{1, 0, 1, 1, 0, 9, 0, 1, 0, 9, 4, 1, 0, 0, 1, 1, 1, 3, 1, 1, 0}, uint16(1))
	f.Fuzz(fuzzFrames)
}

var reqBlock = newClient().block(kv("content-length", "5")...)

func fuzzFrames(t *testing.T, data []byte, step uint16) {
	var in []byte
	in = append(in, Preface...)
	in = appendFrameHeader(in, 0, frameSettings, 0, 0)
	for len(data) >= 4 {
		typ, flags, id, n := data[0]%10, data[1], uint32(data[2]%16), int(data[3])
		data = data[4:]
		n = min(n, len(data))
		p := data[:n]
		data = data[n:]
		if typ == frameHeaders && n == 1 && p[0] == 0 {
			p = reqBlock
		}
		in = append(appendFrameHeader(in, len(p), typ, flags, id), p...)
	}
	feedInSteps(t, Limits{MaxStreams: 4, Flood: 50}, in, int(step%128)+1, step&1 != 0, func(i int) []byte {
		if (i+int(step))%3 == 0 {
			return nil
		}
		return make([]byte, int(step)%20000)
	})
}
