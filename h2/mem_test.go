package h2

import (
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	"upsink/parser"
)

// nopHandler keeps nothing; it answers from the test.
type nopHandler struct {
	last  uint32
	bytes int
}

func (h *nopHandler) Request(id uint32, r *parser.Request, end bool) { h.last = id }
func (h *nopHandler) Data(id uint32, p []byte, end bool) bool        { h.bytes += len(p); return true }
func (h *nopHandler) Reset(id uint32)                                {}

// uploads is a client's preface and n requests with a 1 KiB body each, as
// a browser-like client encodes them (the dynamic table in use, a new
// idempotency key each time), and where each request starts.
func uploads(n int) (head []byte, reqs [][]byte) {
	cl := newClient()
	head = cl.take()
	body := make([]byte, 1024)
	for i := 0; i < n; i++ {
		cl.req(uint32(1+2*i), "POST", "/v1/uploads", body, "content-type", "application/octet-stream",
			"authorization", "Bearer abcdefghijklmnop", "idempotency-key", fmt.Sprintf(`"key-%d"`, i),
			"user-agent", "test-client/1.0")
		reqs = append(reqs, cl.take())
	}
	return head, reqs
}

// TestNoAllocs: a request with a 1 KiB body and its answer allocate
// nothing in steady state.
func TestNoAllocs(t *testing.T) {
	head, reqs := uploads(1200)
	var c Conn
	c.Init(Limits{})
	h := &nopHandler{}
	out := make([]byte, 0, 64<<10)
	feed := func(p []byte) {
		var n int
		var err error
		out, n, err = c.Feed(out[:0], p, h)
		if err != nil || n != len(p) {
			t.Fatal(err, n, len(p))
		}
	}
	feed(head)
	resp := &Response{Status: 201, ContentType: "application/json", Extra: []Field{{"idempotent-replayed", "false"}}}
	answer := []byte(`{"id":"0123456789abcdef"}`)
	i := 0
	one := func() {
		feed(reqs[i])
		out = c.Respond(out, h.last, resp, answer)
		i++
	}
	for range 100 { // warm up: tables grown
		one()
	}
	if a := testing.AllocsPerRun(1000, one); a != 0 {
		t.Fatalf("%v allocations per request", a)
	}
	if c.Streams() != 0 || h.bytes != 1024*i {
		t.Fatal(c.Streams(), h.bytes)
	}
}

// TestMemory bounds a Conn's size and what it holds idle and after a
// request; -v prints the numbers.
func TestMemory(t *testing.T) {
	size := unsafe.Sizeof(Conn{})
	t.Logf("unsafe.Sizeof(Conn) = %d bytes, stream slot %d bytes", size, unsafe.Sizeof(stream{}))
	if size > 256 {
		t.Fatalf("Conn is %d bytes", size)
	}
	head, reqs := uploads(1)
	const n = 1000
	conns := make([]*Conn, n)
	h := &nopHandler{}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	heap()
	before := heap()
	for i := range conns {
		c := new(Conn)
		c.Init(Limits{})
		if _, _, err := c.Feed(nil, head, h); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	idle := (heap() - before) / n
	for _, c := range conns {
		if _, _, err := c.Feed(nil, reqs[0], h); err != nil {
			t.Fatal(err)
		}
	}
	held := (heap() - before) / n
	for _, c := range conns {
		c.Respond(nil, 1, &Response{Status: 200}, []byte("ok"))
	}
	after := (heap() - before) / n
	t.Logf("heap per Conn: idle after the SETTINGS exchange %d B; holding a request %d B; after its answer %d B (HPACK table %d B, stream table %d slots)",
		idle, held, after, cap(conns[0].dec.buf), cap(conns[0].streams))
	if idle > 512 || held > 2048 || after > 2048 {
		t.Fatalf("a Conn holds too much")
	}
	runtime.KeepAlive(conns)
}
