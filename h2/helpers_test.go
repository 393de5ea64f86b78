package h2

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"upsink/parser"
)

// client writes a peer's frames with x/net's Framer and HPACK encoder.
type client struct {
	buf  bytes.Buffer
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

// newClient starts with the preface and an empty SETTINGS.
func newClient() *client {
	cl := &client{}
	cl.buf.WriteString(Preface)
	cl.fr = http2.NewFramer(&cl.buf, nil)
	cl.fr.AllowIllegalWrites = true
	cl.enc = hpack.NewEncoder(&cl.hbuf)
	cl.fr.WriteSettings()
	return cl
}

// block encodes fields given as name, value pairs.
func (cl *client) block(kv ...string) []byte {
	cl.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		cl.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), cl.hbuf.Bytes()...)
}

func (cl *client) headers(id uint32, end bool, kv ...string) {
	cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: cl.block(kv...), EndStream: end, EndHeaders: true})
}

// req writes a request; body nil: none (END_STREAM on HEADERS).
func (cl *client) req(id uint32, method, path string, body []byte, kv ...string) {
	f := []string{":method", method, ":scheme", "https", ":path", path, ":authority", "example.com"}
	if body != nil {
		f = append(f, "content-length", fmt.Sprint(len(body)))
	}
	cl.headers(id, body == nil, append(f, kv...)...)
	if body != nil {
		cl.fr.WriteData(id, true, body)
	}
}

func (cl *client) take() []byte {
	b := append([]byte(nil), cl.buf.Bytes()...)
	cl.buf.Reset()
	return b
}

// reqRec is a request as the handler saw it.
type reqRec struct {
	id                                      uint32
	method, target, host, ctype, idem, auth string
	length                                  int64
	end                                     bool
	fields                                  int
}

// rec is a recording Handler.
type rec struct {
	reqs    []reqRec
	body    map[uint32][]byte
	ended   map[uint32]bool
	resets  []uint32
	refuse  bool // Data returns false
	release *Conn
}

func (r *rec) Request(id uint32, q *parser.Request, end bool) {
	r.reqs = append(r.reqs, reqRec{id, string(q.Method), string(q.Target), string(q.Host), string(q.ContentType),
		string(q.IdempotencyKey), string(q.Authorization), q.ContentLength, end, q.Fields})
}

func (r *rec) Data(id uint32, p []byte, end bool) bool {
	if r.body == nil {
		r.body, r.ended = map[uint32][]byte{}, map[uint32]bool{}
	}
	r.body[id] = append(r.body[id], p...)
	if end {
		r.ended[id] = true
	}
	return !r.refuse
}

func (r *rec) Reset(id uint32) {
	r.resets = append(r.resets, id)
	if r.release != nil {
		r.release.Release(id)
	}
}

// srv is a Conn under test with its handler and output.
type srv struct {
	t       testing.TB
	c       Conn
	h       rec
	in, out []byte
	err     error
}

func newSrv(t testing.TB, l Limits) *srv {
	s := &srv{t: t}
	s.c.Init(l)
	return s
}

// feed gives p to the Conn in pieces of at most step bytes (0: whole).
func (s *srv) feed(p []byte, step int) {
	if step <= 0 {
		step = len(p) + 1
	}
	for len(p) > 0 && s.err == nil {
		k := min(step, len(p))
		s.in = append(s.in, p[:k]...)
		p = p[k:]
		var n int
		s.out, n, s.err = s.c.Feed(s.out, s.in, &s.h)
		s.in = s.in[n:]
		if s.err == nil && len(s.in) > 9+int(s.c.lim.MaxFrame) {
			s.t.Fatalf("%d bytes left unconsumed", len(s.in))
		}
	}
}

// frames decodes and clears the output, one line per frame.
func (s *srv) frames() []string {
	s.t.Helper()
	fr := http2.NewFramer(io.Discard, bytes.NewReader(s.out))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	var got []string
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			s.t.Fatalf("reading our output: %v (after %q)", err, got)
		}
		got = append(got, describe(f))
	}
	s.out = s.out[:0]
	return got
}

func describe(f http2.Frame) string {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		var b strings.Builder
		fmt.Fprintf(&b, "HEADERS %d", f.StreamID)
		if f.StreamEnded() {
			b.WriteString(" es")
		}
		for _, hf := range f.Fields {
			fmt.Fprintf(&b, " %s=%s", hf.Name, hf.Value)
		}
		return b.String()
	case *http2.DataFrame:
		es := ""
		if f.StreamEnded() {
			es = " es"
		}
		return fmt.Sprintf("DATA %d%s %q", f.StreamID, es, f.Data())
	case *http2.RSTStreamFrame:
		return fmt.Sprintf("RST %d %s", f.StreamID, ErrCode(f.ErrCode))
	case *http2.GoAwayFrame:
		return fmt.Sprintf("GOAWAY %d %s", f.LastStreamID, ErrCode(f.ErrCode))
	case *http2.SettingsFrame:
		if f.IsAck() {
			return "SETTINGS ack"
		}
		var b strings.Builder
		b.WriteString("SETTINGS")
		f.ForeachSetting(func(s http2.Setting) error { fmt.Fprintf(&b, " %s=%d", s.ID, s.Val); return nil })
		return b.String()
	case *http2.PingFrame:
		return fmt.Sprintf("PING ack=%v", f.IsAck())
	case *http2.WindowUpdateFrame:
		return fmt.Sprintf("WINDOW_UPDATE %d %d", f.StreamID, f.Increment)
	}
	return fmt.Sprintf("%v", f.Header())
}

// has reports whether some line starts with prefix.
func has(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func http2Setting(id uint16, v uint32) http2.Setting {
	return http2.Setting{ID: http2.SettingID(id), Val: v}
}

const http2ErrCancel = http2.ErrCodeCancel
