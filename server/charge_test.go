package server

import (
	"context"
	"strings"
	"testing"

	"github.com/panjf2000/gnet/v2"

	"upsink/budget"
	"upsink/conn"
)

// TestBodyChargedAsItArrives: a body whose declared length is large and does
// not fit half the budget costs what has arrived (at most twice over, plus its
// metadata), not what it declared, and everything comes back after the answer.
func TestBodyChargedAsItArrives(t *testing.T) {
	h, fs, fc := newTestHandler(t)
	h.budget = budget.New(1536 << 10) // half is 768 KiB: a 1 MiB declaration is not sized up front
	const declared = 1 << 20
	head := "POST /upload/big HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"
	sent := 0
	feed := func(n int) {
		fc.in = []byte(strings.Repeat("b", n))
		if sent == 0 {
			fc.in = append([]byte(head), fc.in...)
		}
		sent += n
		h.OnTraffic(fc)
	}
	for _, n := range []int{10000, 10000, 30000, 100000} {
		feed(n)
		got := h.budget.Used()
		if got < int64(metaMax+sent) || got > int64(metaMax+2*sent) {
			t.Fatalf("after %d of %d body bytes: charged %d, want between %d and %d", sent, declared, got, metaMax+sent, metaMax+2*sent)
		}
	}
	feed(declared - sent)
	if s := h.slab.At(fc.fd); s.Flags.State() != conn.StateCommit {
		t.Fatalf("state %d after the whole body", s.Flags.State())
	}
	if got := h.budget.Used(); got > metaMax+declared {
		t.Fatalf("complete body charged %d, more than %d", got, metaMax+declared)
	}
	fs.flush()
	fc.el.pending.Run(context.Background())
	if !strings.HasPrefix(fc.out.String(), "HTTP/1.1 201 ") {
		t.Fatalf("answer %q", fc.out.String())
	}
	if got := h.budget.Used(); got != 0 {
		t.Fatalf("budget %d after the answer, want 0", got)
	}
}

// TestSmallBodySizedOnce: a small declared body is sized and charged in full
// at its head (one buffer growth), before its bytes arrive.
func TestSmallBodySizedOnce(t *testing.T) {
	h, fs, fc := newTestHandler(t)
	fc.in = []byte("POST /upload/s HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\nab")
	h.OnTraffic(fc)
	if got := h.budget.Used(); got != metaMax+4000 {
		t.Fatalf("charged %d, want %d", got, metaMax+4000)
	}
	r := h.reqs.at(h.slab.At(fc.fd).Req - 1)
	if cap(r.buf.B) < metaMax+4000 && cap(r.buf.B) < r.metaLen()+4000 {
		t.Fatalf("buffer capacity %d not sized for the body", cap(r.buf.B))
	}
	fc.in = []byte(strings.Repeat("c", 3998))
	h.OnTraffic(fc)
	fs.flush()
	fc.el.pending.Run(context.Background())
	if got := h.budget.Used(); got != 0 || !strings.HasPrefix(fc.out.String(), "HTTP/1.1 201 ") {
		t.Fatalf("budget %d, answer %q", got, fc.out.String())
	}
}

// TestChunkedSubmitFailureKeepsBudget is the drift the hardening issue found:
// a chunked upload whose Submit fails used to leave decoder state where the
// held-bytes charge lives, and closing released it as bytes (the budget went
// negative). Now the budget is exactly 0 after the 503 and after the close.
func TestChunkedSubmitFailureKeepsBudget(t *testing.T) {
	h, fs, fc := newTestHandler(t)
	fc.in = []byte("POST /upload/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nfff\r\n")
	h.OnTraffic(fc)
	fs.ready = false // the database goes away before the body ends
	fc.in = append([]byte(strings.Repeat("z", 0xfff)), "\r\n0\r\n\r\n"...)
	h.OnTraffic(fc)
	if !strings.HasPrefix(fc.out.String(), "HTTP/1.1 503 ") {
		t.Fatalf("answer %q", fc.out.String())
	}
	if got := h.budget.Used(); got != 0 {
		t.Fatalf("budget %d after the refused submit, want 0", got)
	}
	h.OnClose(fc, nil)
	if got := h.budget.Used(); got != 0 {
		t.Fatalf("budget %d after close, want 0", got)
	}
}

// TestMinBodyRate: a body below the minimum average rate after the grace
// period gets 408 and a close, one at the rate keeps going, and one that made
// no progress for the idle timeout gets 408 too. The check runs when the
// body's queue entry expires; the test moves the body's clock back instead of
// waiting.
func TestMinBodyRate(t *testing.T) {
	tests := []struct {
		name      string
		sent      int
		ageMs     int64 // how long ago the body started
		stalledMs int64 // how long ago bytes last arrived
		want      string
	}{
		{"below the rate", 3000, 6000, 0, "HTTP/1.1 408 "},
		{"at the rate", 7000, 6000, 0, ""},
		{"within the grace", 10, 4000, 0, ""},
		{"stalled", 70000, 60000, 60000, "HTTP/1.1 408 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, fc := newTestHandler(t)
			fc.in = []byte("POST /upload/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("s", tt.sent))
			h.OnTraffic(fc)
			s := h.slab.At(fc.fd)
			r := h.reqs.at(s.Req - 1)
			now := h.slab.Now()
			r.start = now - conn.Clock(tt.ageMs)
			r.progress = now - conn.Clock(tt.stalledMs)
			l := h.loopAt(0)
			l.tq.Disarm(fc.fd)
			l.onExpire(fc.fd, conn.QueueBody)
			if tt.want == "" {
				if fc.out.Len() != 0 || s.Flags.State() != conn.StateBody || s.Flags.Queue() != conn.QueueBody {
					t.Fatalf("answered %q, state %d queue %d", fc.out.String(), s.Flags.State(), s.Flags.Queue())
				}
				h.OnClose(fc, nil)
			} else {
				if !strings.HasPrefix(fc.out.String(), tt.want) || fc.el.closed != 1 {
					t.Fatalf("answer %q closed %d", fc.out.String(), fc.el.closed)
				}
				h.OnClose(fc, nil) // what gnet does after Close
			}
			if got := h.budget.Used(); got != 0 {
				t.Fatalf("budget %d after close", got)
			}
		})
	}
}

// TestUnsentAnswersCharged: answers gnet could not send are charged while
// held, and a client that lets more than maxOutbound pile up is closed.
func TestUnsentAnswersCharged(t *testing.T) {
	h, _, fc := newTestHandler(t)
	fc.outHeld = 1000
	fc.in = []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	h.OnTraffic(fc)
	if got := h.budget.Used(); got != 1000 {
		t.Fatalf("unsent answers charged %d, want 1000", got)
	}
	fc.outHeld = maxOutbound + 1
	fc.in = []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if act := h.OnTraffic(fc); act != gnet.Close {
		t.Fatalf("a client not reading %d bytes of answers was not closed: %v", fc.outHeld, act)
	}
	h.OnClose(fc, nil)
	if got := h.budget.Used(); got != 0 {
		t.Fatalf("budget %d after close", got)
	}
}
