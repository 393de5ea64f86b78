package h2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// TestDecoderRoundTrip decodes what x/net's encoder writes (Huffman,
// dynamic table, evictions in a small table, size updates, never-indexed
// fields) and checks every field.
func TestDecoderRoundTrip(t *testing.T) {
	for _, table := range []uint32{0, 100, 256, 4096} {
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		enc.SetMaxDynamicTableSizeLimit(table)
		enc.SetMaxDynamicTableSize(table)
		var d decoder
		d.init(table)
		rng := rand.New(rand.NewPCG(1, uint64(table)))
		for block := 0; block < 300; block++ {
			buf.Reset()
			var want []string
			for i := rng.IntN(12); i >= 0; i-- {
				f := hpack.HeaderField{
					Name:      fmt.Sprintf("x-%d", rng.IntN(20)),
					Value:     fmt.Sprint(bytes.Repeat([]byte{byte('a' + rng.IntN(26))}, rng.IntN(60)), rng.Uint32()%7),
					Sensitive: rng.IntN(10) == 0,
				}
				if rng.IntN(4) == 0 {
					f.Name, f.Value = ":path", "/"
				}
				if rng.IntN(5) == 0 {
					b := make([]byte, rng.IntN(30))
					for j := range b {
						b[j] = byte(rng.IntN(256))
					}
					f.Value = string(b)
				}
				enc.WriteField(f)
				want = append(want, f.Name+"="+f.Value)
			}
			d.first = true
			p := buf.Bytes()
			var got []string
			var sc []byte
			for len(p) > 0 {
				var n int
				var e hpackErr
				sc, n, p, e = d.next(sc[:0], p, 1<<20)
				if e != hpackOK {
					t.Fatalf("table %d block %d: error %d", table, block, e)
				}
				if n >= 0 {
					got = append(got, string(sc[:n])+"="+string(sc[n:]))
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("table %d block %d:\n%q\nwant\n%q", table, block, got, want)
			}
			if d.used > d.size || cap(d.buf) > int(table) {
				t.Fatalf("table %d: used %d size %d cap %d", table, d.used, d.size, cap(d.buf))
			}
		}
	}
}

func TestHuffman(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 3))
	for i := 0; i < 2000; i++ {
		b := make([]byte, rng.IntN(40))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		enc := hpack.AppendHuffmanString(nil, string(b))
		if mine := appendHuff(nil, string(b)); !bytes.Equal(mine, enc) || huffLen(string(b)) != len(enc) {
			t.Fatalf("encoding %q: %x, want %x", b, mine, enc)
		}
		got, e := huffDecode(nil, enc, 1<<10)
		if e != hpackOK || !bytes.Equal(got, b) {
			t.Fatalf("%q: %q %d", b, got, e)
		}
		if len(b) > 2 {
			if _, e := huffDecode(nil, enc, len(b)-1); e != hpackTooLarge {
				t.Fatalf("limit: %d", e)
			}
		}
	}
	for _, bad := range [][]byte{{0xff, 0xff, 0xff, 0xff}, {0x00}, {0x1f, 0xff}} {
		if _, e := huffDecode(nil, bad, 100); e != hpackBad {
			t.Fatalf("%x decoded", bad)
		}
	}
}

// TestHpackChoice measures, for the upload requests of TestNoAllocs,
// x/net's decoder's allocations against ours (the reason for our own).
func TestHpackChoice(t *testing.T) {
	cl := newClient()
	var blocks [][]byte
	for i := 0; i < 1200; i++ {
		blocks = append(blocks, cl.block(":method", "POST", ":scheme", "https", ":path", "/v1/uploads", ":authority", "example.com",
			"content-length", "1024", "content-type", "application/octet-stream", "authorization", "Bearer abcdefghijklmnop",
			"idempotency-key", fmt.Sprintf(`"key-%d"`, i), "user-agent", "test-client/1.0"))
	}
	xd := hpack.NewDecoder(4096, func(hpack.HeaderField) {})
	i := 0
	x := testing.AllocsPerRun(1000, func() {
		if _, err := xd.Write(blocks[i]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	var d decoder
	d.init(4096)
	sc := make([]byte, 0, 16<<10)
	j := 0
	mine := testing.AllocsPerRun(1000, func() {
		p := blocks[j]
		d.first = true
		for len(p) > 0 {
			var e hpackErr
			if sc, _, p, e = d.next(sc[:0], p, 16<<10); e != hpackOK {
				t.Fatal(e)
			}
		}
		j++
	})
	t.Logf("allocations per request header block: x/net hpack.Decoder %.1f, ours %.1f", x, mine)
	if mine != 0 {
		t.Fatal("our decoder allocates")
	}
}
