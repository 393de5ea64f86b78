package h2

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/net/http2"
)

func wantCalm(t *testing.T, s *srv) {
	t.Helper()
	var e *Error
	if !errors.As(s.err, &e) || e.Code != ErrEnhanceYourCalm {
		t.Fatalf("error %v, want ENHANCE_YOUR_CALM", s.err)
	}
	if got := s.frames(); !strings.HasSuffix(got[len(got)-1], "ENHANCE_YOUR_CALM") || !strings.HasPrefix(got[len(got)-1], "GOAWAY") {
		t.Fatalf("last frame %q", got[len(got)-1])
	}
	if h := s.c.Held(); h > 64<<10 {
		t.Fatalf("holds %d bytes", h)
	}
}

func TestFloods(t *testing.T) {
	cases := []struct {
		name    string
		release bool
		send    func(cl *client)
	}{
		{"rapid reset", true, func(cl *client) {
			for id := uint32(1); id < 2400; id += 2 {
				cl.headers(id, false, get...)
				cl.fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
		}},
		{"rapid reset, not released", false, func(cl *client) {
			for id := uint32(1); id < 2400; id += 2 {
				cl.headers(id, false, get...)
				cl.fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
		}},
		{"MadeYouReset", true, func(cl *client) {
			for id := uint32(1); id < 2400; id += 2 {
				cl.headers(id, false, get...)
				cl.fr.WriteWindowUpdate(id, 0)
			}
		}},
		{"PING", false, func(cl *client) {
			for i := 0; i < 1100; i++ {
				cl.fr.WritePing(false, [8]byte{})
			}
		}},
		{"SETTINGS", false, func(cl *client) {
			for i := 0; i < 1100; i++ {
				cl.fr.WriteSettings()
			}
		}},
		{"empty DATA", false, func(cl *client) {
			cl.headers(1, false, get...)
			for i := 0; i < 1100; i++ {
				cl.fr.WriteData(1, false, nil)
			}
		}},
		{"empty DATA on a stream we reset", false, func(cl *client) {
			cl.headers(1, false, kv("X-Upper", "1")...)
			for i := 0; i < 1100; i++ {
				cl.fr.WriteData(1, false, nil)
			}
		}},
		{"HEADERS on a stream we reset", false, func(cl *client) {
			cl.headers(1, false, kv("X-Upper", "1")...)
			for i := 0; i < 1100; i++ {
				cl.headers(1, true, "x-trailer", "1")
			}
		}},
		{"PRIORITY", false, func(cl *client) {
			for i := 0; i < 1100; i++ {
				cl.fr.WritePriority(uint32(1+2*i), http2.PriorityParam{StreamDep: 0, Weight: 1})
			}
		}},
		{"tiny CONTINUATIONs", false, func(cl *client) {
			b := cl.block(kv("x", strings.Repeat("a", 3000))...)
			cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:1]})
			for i := 1; i < len(b); i++ {
				cl.fr.WriteContinuation(1, false, b[i:i+1])
			}
		}},
		{"empty CONTINUATIONs", false, func(cl *client) {
			cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: cl.block(get...)})
			for i := 0; i < 1100; i++ {
				cl.fr.WriteContinuation(1, false, nil)
			}
		}},
		{"endless header block", false, func(cl *client) {
			cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: cl.block(get...)})
			for i := 0; i < 100; i++ {
				cl.fr.WriteContinuation(1, false, make([]byte, 16384))
			}
		}},
		{"HPACK bomb", false, func(cl *client) {
			cl.headers(1, true, kv("x-bomb", strings.Repeat("b", 4000))...)
			f := kv()
			for i := 0; i < 100; i++ {
				f = append(f, "x-bomb", strings.Repeat("b", 4000))
			}
			cl.headers(3, true, f...)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, step := range []int{0, 1000} {
				s := newSrv(t, Limits{})
				if tc.release {
					s.h.release = &s.c
				}
				cl := newClient()
				tc.send(cl)
				s.feed(cl.take(), step)
				if s.c.Streams() > 100 {
					t.Fatalf("%d streams", s.c.Streams())
				}
				wantCalm(t, s)
			}
		})
	}
}

// TestUsefulRequestsRefill: a client that pings between its requests is
// no flood.
func TestUsefulRequestsRefill(t *testing.T) {
	s := newSrv(t, Limits{Flood: 10})
	cl := newClient()
	for id := uint32(1); id < 400; id += 2 {
		cl.fr.WritePing(false, [8]byte{})
		cl.req(id, "GET", "/", nil)
		s.feed(cl.take(), 0)
		s.out = s.c.Respond(s.out, id, &Response{Status: 200}, nil)
		s.out = s.out[:0]
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
}
