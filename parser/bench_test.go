package parser

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

var benchHeads = []struct {
	name string
	head string
}{
	{"curl", curlHead},       // curl upload, 8 fields
	{"browser", browserHead}, // browser upload, 30 fields
}

func BenchmarkParse(b *testing.B) {
	for _, bh := range benchHeads {
		b.Run(bh.name, func(b *testing.B) {
			buf := []byte(bh.head)
			var r Request
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := Parse(buf, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkNetHTTPReadRequest(b *testing.B) {
	for _, bh := range benchHeads {
		b.Run(bh.name, func(b *testing.B) {
			buf := []byte(bh.head)
			rd := bytes.NewReader(buf)
			br := bufio.NewReader(rd)
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				rd.Reset(buf)
				br.Reset(rd)
				if _, err := http.ReadRequest(br); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkChunked(b *testing.B) {
	enc, _ := body1K()
	in := []byte(enc)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		var d Chunked
		p := in
		for !d.Done() {
			_, n, err := d.Decode(p)
			if err != nil || n == 0 {
				b.Fatal(err, n)
			}
			p = p[n:]
		}
	}
}
