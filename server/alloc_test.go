package server

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"upsink/accesslog"
	"upsink/budget"
	"upsink/conn"
	"upsink/durable"
	"upsink/schema"
	"upsink/store"
)

// fakeConn is the part of gnet.Conn the handler uses, over in-memory buffers.
type fakeConn struct {
	gnet.Conn // nil: any other method panics
	fd        int
	in        []byte
	out       bytes.Buffer
	outHeld   int // what OutboundBuffered reports: answers gnet could not send yet
	el        *fakeLoop
	addr      net.Addr
}

func (f *fakeConn) Fd() int                   { return f.fd }
func (f *fakeConn) InboundBuffered() int      { return len(f.in) }
func (f *fakeConn) OutboundBuffered() int     { return f.outHeld }
func (f *fakeConn) RemoteAddr() net.Addr      { return f.addr }
func (f *fakeConn) EventLoop() gnet.EventLoop { return f.el }
func (f *fakeConn) Write(p []byte) (int, error) {
	return f.out.Write(p)
}
func (f *fakeConn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(f.in) {
		n = len(f.in)
	}
	return f.in[:n], nil
}
func (f *fakeConn) Discard(n int) (int, error) {
	if n <= 0 || n >= len(f.in) {
		n = len(f.in)
	}
	f.in = f.in[n:]
	return n, nil
}

type fakeLoop struct {
	gnet.EventLoop
	pending gnet.Runnable
	closed  int
}

func (l *fakeLoop) Execute(_ context.Context, r gnet.Runnable) error { l.pending = r; return nil }
func (l *fakeLoop) Close(gnet.Conn) error                            { l.closed++; return nil }

// fakeStore commits synchronously when the test calls flush.
type fakeStore struct {
	ready  bool
	queued []*durable.Upload
	nextID uint64
	onDone func(*durable.Upload)
}

func (f *fakeStore) Ready() bool { return f.ready }
func (f *fakeStore) Status() durable.Status {
	return durable.Status{Ready: f.ready, Database: f.ready}
}
func (f *fakeStore) Submit(u *durable.Upload) error {
	if !f.ready {
		return durable.ErrUnavailable
	}
	f.queued = append(f.queued, u)
	return nil
}
func (f *fakeStore) flush() {
	for _, u := range f.queued {
		f.nextID++
		u.Answer = store.Answer{Status: 201, ID: f.nextID}
		f.onDone(u)
	}
	f.queued = f.queued[:0]
}

func newTestHandler(t testing.TB) (*handler, *fakeStore, *fakeConn) {
	cfg := Config{Listen: "127.0.0.1:1", MaxConns: 64, HeaderTimeout: time.Minute, IdleTimeout: time.Minute}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	h := newHandler(&cfg, nil)
	fs := &fakeStore{ready: true, onDone: h.onDone}
	h.st = fs
	fc := &fakeConn{fd: 7, el: &fakeLoop{}, addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}}
	if _, act := h.OnOpen(fc); act != gnet.None {
		t.Fatal("OnOpen refused")
	}
	return h, fs, fc
}

// TestRequestPathAllocs drives whole requests through the machine — parse,
// route, body copy, submit, completion, 201 — and asserts it allocates nothing
// per request once pools are warm.
func TestRequestPathAllocs(t *testing.T) {
	h, fs, fc := newTestHandler(t)
	body := strings.Repeat("b", 1024)
	upload := "POST /upload/sensors HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nAccept: */*\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + body
	chunked := "POST /upload/sensors HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n" + body[:512] + "\r\n200\r\n" + body[:512] + "\r\n0\r\n\r\n"
	health := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	notFound := "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
	h.tables = map[string]*schema.Table{"readings": {Name: "readings", Columns: []schema.Column{
		{Name: "device", Type: schema.Type{Kind: schema.Varchar, Len: 32}, NotNull: true},
		{Name: "temp", Type: schema.Type{Kind: schema.Double}},
		{Name: "ts", Type: schema.Type{Kind: schema.Datetime, Prec: 6}},
	}}}
	var nd, cs strings.Builder
	cs.WriteString("device,temp,ts\r\n")
	for i := range 100 {
		fmt.Fprintf(&nd, `{"device":"sensor-%04d","temp":%d.5,"ts":"2026-12-02T03:04:05.123456Z"}`+"\n", i, i)
		fmt.Fprintf(&cs, "\"sensor, %04d\",%d.5,2026-12-02 03:04:05\r\n", i, i)
	}
	ingestReq := func(ctype, body string) string {
		return "POST /ingest/readings?header=present HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	tests := []struct {
		name   string
		req    string
		commit bool
		want   string
	}{
		{"upload", upload, true, "HTTP/1.1 201 Created"},
		{"chunked upload", chunked, true, "HTTP/1.1 201 Created"},
		{"pipelined healthz", health + health + health, false, "HTTP/1.1 200 OK"},
		{"not found", notFound, false, "HTTP/1.1 404 Not Found"},
		{"ingest ndjson", ingestReq("application/x-ndjson", nd.String()), true, "HTTP/1.1 201 Created"},
		{"ingest csv", ingestReq("text/csv", cs.String()), true, "HTTP/1.1 201 Created"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqBytes := []byte(tt.req)
			run := func() {
				fc.in = reqBytes
				fc.out.Reset()
				s := h.slab.At(fc.fd)
				if act := h.OnTraffic(fc); act != gnet.None {
					t.Fatalf("action %v", act)
				}
				if tt.commit {
					if s.Flags.State() != conn.StateCommit || len(fs.queued) != 1 {
						t.Fatalf("not suspended on commit: state %d queued %d", s.Flags.State(), len(fs.queued))
					}
					fs.flush()
					if fc.el.pending == nil {
						t.Fatal("completion not scheduled on the loop")
					}
					r := fc.el.pending
					fc.el.pending = nil
					_ = r.Run(context.Background())
				}
				if len(fc.in) != 0 || s.Flags.State() != conn.StateHead {
					t.Fatalf("left %d bytes, state %d", len(fc.in), s.Flags.State())
				}
			}
			run()
			if !bytes.HasPrefix(fc.out.Bytes(), []byte(tt.want)) {
				t.Fatalf("answer %q", fc.out.String())
			}
			allocs := testing.AllocsPerRun(200, run)
			if raceEnabled {
				t.Logf("race detector on: %.1f allocations per request not asserted (make test asserts them without -race)", allocs)
			} else if allocs != 0 {
				t.Fatalf("%.1f allocations per request", allocs)
			}
			if st := h.budget.Used(); st != 0 || h.reqs.inUse() != 0 {
				t.Fatalf("leaked budget %d / records %d", st, h.reqs.inUse())
			}
		})
	}
}

// TestSuspendedClientCannotGrowMemory: bytes pipelined behind a request that
// waits for its commit are bounded; past the bound they are dropped and the
// connection closes after its answer.
func TestSuspendedClientCannotGrowMemory(t *testing.T) {
	h, fs, fc := newTestHandler(t)
	fc.in = []byte("POST /upload/s HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nA")
	h.OnTraffic(fc)
	s := h.slab.At(fc.fd)
	if s.Flags.State() != conn.StateCommit {
		t.Fatalf("state %d", s.Flags.State())
	}
	fc.in = bytes.Repeat([]byte("x"), maxPipelined+1)
	h.OnTraffic(fc)
	if len(fc.in) != 0 || s.Flags&conn.FlagCloseAfter == 0 {
		t.Fatalf("overflow kept %d bytes, closeAfter=%v", len(fc.in), s.Flags&conn.FlagCloseAfter != 0)
	}
	fs.flush()
	fc.el.pending.Run(context.Background())
	if !strings.Contains(fc.out.String(), "Connection: close") || fc.el.closed != 1 {
		t.Fatalf("answer %q closed=%d", fc.out.String(), fc.el.closed)
	}
}

// TestCloseWhileCommitting: a connection that goes away while its upload is
// being committed frees its record when the commit completes, and a new
// connection on the same fd is not answered for it.
func TestCloseWhileCommitting(t *testing.T) {
	h, fs, fc := newTestHandler(t)
	fc.in = []byte("POST /upload/s HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nA")
	h.OnTraffic(fc)
	h.OnClose(fc, nil)
	h.OnOpen(fc) // the fd is reused by a new connection
	fc.out.Reset()
	fs.flush()
	fc.el.pending.Run(context.Background())
	if fc.out.Len() != 0 {
		t.Fatalf("new connection got an answer meant for the old one: %q", fc.out.String())
	}
	if h.reqs.inUse() != 0 || h.budget.Used() != 0 {
		t.Fatalf("leaked: records %d budget %d", h.reqs.inUse(), h.budget.Used())
	}
}

// TestHeldBytesCharged: an incomplete head and bytes sent ahead of a pending
// commit are charged to the in-flight budget and released when consumed or
// when the connection closes; past the budget the client gets 503.
func TestHeldBytesCharged(t *testing.T) {
	h, fs, fc := newTestHandler(t)
	partial := []byte("POST /upload/s HTTP/1.1\r\nHost: x\r\n")
	fc.in = partial
	h.OnTraffic(fc)
	if got := h.budget.Used(); got != int64(len(partial)) {
		t.Fatalf("incomplete head charged %d, want %d", got, len(partial))
	}
	fc.in = []byte("POST /upload/s HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nA" + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	h.OnTraffic(fc)
	ahead := int64(len("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	if got := h.budget.Used(); got != metaMax+1+ahead {
		t.Fatalf("suspended: charged %d, want body %d + ahead %d", got, metaMax+1, ahead)
	}
	fs.flush()
	fc.el.pending.Run(context.Background())
	if got := h.budget.Used(); got != 0 || !strings.Contains(fc.out.String(), "200 OK") {
		t.Fatalf("after resume: charged %d, answers %q", got, fc.out.String())
	}
	// Over budget: a head that cannot be held is refused.
	h.budget = budget.New(10)
	fc.out.Reset()
	fc.in = partial
	h.OnTraffic(fc)
	if !strings.HasPrefix(fc.out.String(), "HTTP/1.1 503 ") {
		t.Fatalf("over budget: %q", fc.out.String())
	}
	h.OnClose(fc, nil)
	if got := h.budget.Used(); got != 0 {
		t.Fatalf("closed connection still charged %d", got)
	}
}

// TestHeadRescanOnlyOnNewLine: bytes that end no line are held without a
// re-parse, and the head still completes and is answered when its end arrives.
func TestHeadRescanOnlyOnNewLine(t *testing.T) {
	h, _, fc := newTestHandler(t)
	req := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + strings.Repeat("v", 300) + "\r\n\r\n"
	s := h.slab.At(fc.fd)
	for i := 1; i <= len(req); i++ {
		fc.in = []byte(req[:i]) // gnet keeps what we do not discard
		h.OnTraffic(fc)
		if i < len(req) {
			if fc.out.Len() != 0 {
				t.Fatalf("answered after %d bytes", i)
			}
			if int(s.Scan) != i || int(s.Held) != i {
				t.Fatalf("scanned %d, held %d bytes, want %d", s.Scan, s.Held, i)
			}
		}
	}
	if !strings.HasPrefix(fc.out.String(), "HTTP/1.1 200 OK") || s.Held != 0 || h.budget.Used() != 0 {
		t.Fatalf("answer %q held %d budget %d", fc.out.String(), s.Held, h.budget.Used())
	}
}

// TestAccessLogAllocs: with --access-log on, an upload still allocates
// nothing on the loop, and its line reaches the file.
func TestAccessLogAllocs(t *testing.T) {
	h, fs, fc := newTestHandler(t)
	p := filepath.Join(t.TempDir(), "access.log")
	alog, err := accesslog.Open(p, accesslog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.alog = alog
	req := []byte("POST /upload/logged HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	run := func() {
		fc.in = req
		fc.out.Reset()
		h.OnTraffic(fc)
		fs.flush()
		r := fc.el.pending
		fc.el.pending = nil
		_ = r.Run(context.Background())
	}
	run()
	allocs := testing.AllocsPerRun(100, run)
	if err := alog.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 102 || !strings.HasSuffix(lines[0], " 127.0.0.1:4242 upload 201 55") {
		t.Fatalf("%d lines, first %q", len(lines), lines[0])
	}
	if raceEnabled {
		t.Logf("race detector on: %.1f allocations not asserted", allocs)
	} else if allocs != 0 {
		t.Fatalf("%.1f allocations per request with the access log on", allocs)
	}
}
