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
		var c Conn
		c.Init(Limits{MaxStreams: 8, Flood: 100})
		h := &fuzzHandler{t: t, c: &c, held: map[uint32]bool{}, refuse: step&1 != 0}
		in := append([]byte(Preface), data...)
		st := int(step%64) + 1
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
			for _, id := range h.todo {
				if h.held[id] {
					delete(h.held, id)
					out = c.Respond(out, id, &Response{Status: 200}, []byte("answer"))
				}
			}
			h.todo = h.todo[:0]
			if m := c.held(); m > 64<<10 {
				t.Fatalf("Conn holds %d bytes", m)
			}
			if c.Streams() > 8 {
				t.Fatalf("%d streams", c.Streams())
			}
		}
	})
}
