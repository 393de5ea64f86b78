package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"upsink/conn"
)

// TestH2RequestPathAllocs drives HTTP/2 uploads through the machine —
// frames, HPACK, route, body copy, submit, completion, HEADERS + DATA
// answer — and asserts it allocates nothing per request once warm, as over
// HTTP/1.1 (TestRequestPathAllocs).
func TestH2RequestPathAllocs(t *testing.T) {
	h, fs, fc := newTestHandler(t)
	var setup bytes.Buffer
	setup.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&setup, nil)
	_ = fr.WriteSettings()
	_ = fr.WriteSettingsAck()
	// Header blocks without the dynamic table, so that every request's
	// block is the same bytes: the first carries the table size update.
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.SetMaxDynamicTableSizeLimit(0)
	block := func() []byte {
		hb.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/upload/sensors"}, {":authority", "x"},
			{"content-type", "text/plain"}, {"content-length", "1024"}, {"user-agent", "h2load"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return bytes.Clone(hb.Bytes())
	}
	first, steady := block(), block()
	request := func(b []byte) []byte {
		var w bytes.Buffer
		f := http2.NewFramer(&w, nil)
		_ = f.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b, EndHeaders: true})
		_ = f.WriteData(1, true, bytes.Repeat([]byte("b"), 1024))
		return w.Bytes()
	}
	req := request(steady)
	hdrLen := 9 + len(steady)
	id := uint32(1)
	run := func(p []byte) {
		// this request's stream id in both frame headers
		binary.BigEndian.PutUint32(p[5:9], id)
		binary.BigEndian.PutUint32(p[hdrLen+5:hdrLen+9], id)
		id += 2
		fc.in = p
		fc.out.Reset()
		if act := h.OnTraffic(fc); act != gnet.None {
			t.Fatalf("action %v", act)
		}
		if len(fs.queued) != 1 {
			t.Fatalf("%d uploads submitted; output %q", len(fs.queued), fc.out.Bytes())
		}
		fs.flush()
		r := fc.el.pending
		fc.el.pending = nil
		_ = r.Run(context.Background())
		if len(fc.in) != 0 || h.slab.At(fc.fd).Flags.State() != conn.StateH2 {
			t.Fatalf("left %d bytes, state %d", len(fc.in), h.slab.At(fc.fd).Flags.State())
		}
	}
	fc.in = setup.Bytes()
	if act := h.OnTraffic(fc); act != gnet.None || h.slab.At(fc.fd).Flags.State() != conn.StateH2 {
		t.Fatalf("preface: action %v state %d", act, h.slab.At(fc.fd).Flags.State())
	}
	warm := request(first)
	hdrLen = 9 + len(first)
	run(warm)
	hdrLen = 9 + len(steady)
	for range 200 {
		run(bytes.Clone(req))
	}
	if !bytes.Contains(fc.out.Bytes(), []byte(`"durable":"mysql"`)) {
		t.Fatalf("answer %q", fc.out.Bytes())
	}
	allocs := testing.AllocsPerRun(500, func() { run(req) })
	if raceEnabled {
		t.Logf("race detector on: %.1f allocations per request not asserted", allocs)
	} else if allocs != 0 {
		t.Fatalf("%.1f allocations per HTTP/2 request", allocs)
	}
	if h.reqs.inUse() != 0 {
		t.Fatalf("%d records in use", h.reqs.inUse())
	}
}
