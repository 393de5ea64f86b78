package h2

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/http2"

	"upsink/parser"
)

// echo answers each request, once its body is in, with the body's length
// and the request's target and idempotency key.
type echo struct {
	got  map[uint32]int
	meta map[uint32]string
	done []uint32
}

func (e *echo) Request(id uint32, r *parser.Request, end bool) {
	e.got[id] = 0
	e.meta[id] = string(r.Target) + " " + string(r.IdempotencyKey)
	if end {
		e.done = append(e.done, id)
	}
}

func (e *echo) Data(id uint32, p []byte, end bool) bool {
	e.got[id] += len(p)
	if end {
		e.done = append(e.done, id)
	}
	return true
}

func (e *echo) Reset(id uint32) { delete(e.got, id) }

// serve runs a Conn on one end of a pipe, as a loop would.
func serve(t *testing.T, nc net.Conn, l Limits, quiet bool) {
	pad := quiet // h2spec wants answers longer than a small window
	defer nc.Close()
	var c Conn
	c.Init(l)
	h := &echo{got: map[uint32]int{}, meta: map[uint32]string{}}
	var in, out []byte
	buf := make([]byte, 4096)
	for {
		k, err := nc.Read(buf)
		if err != nil {
			return
		}
		in = append(in, buf[:k]...)
		var n int
		var ferr error
		out, n, ferr = c.Feed(out[:0], in, h)
		in = in[n:]
		for _, id := range h.done {
			body := fmt.Sprintf("%d %s", h.got[id], h.meta[id])
			if pad {
				body += strings.Repeat(".", 1000)
			}
			out = c.Respond(out, id, &Response{Status: 200, ContentType: "text/plain"}, []byte(body))
			delete(h.got, id)
		}
		h.done = h.done[:0]
		if len(out) > 0 {
			if _, err := nc.Write(out); err != nil {
				return
			}
		}
		if ferr != nil || c.Done() {
			if ferr != nil && !quiet {
				t.Errorf("server: %v", ferr)
			}
			nc.Close()
			return
		}
	}
}

// TestInterop: x/net's HTTP/2 client against a Conn: concurrent uploads
// of up to 300 KB, so both flow controls and the HPACK tables work.
func TestInterop(t *testing.T) {
	for _, l := range []Limits{{}, {HeaderTable: 256, StreamWindow: 1000, MaxFrame: 32768, ConnWindow: 1 << 20}} {
		t.Run(fmt.Sprint(l), func(t *testing.T) { interop(t, l) })
	}
}

func interop(t *testing.T, l Limits) {
	// TCP, not net.Pipe: x/net's client writes under a lock its reader
	// needs, which an unbuffered pipe turns into a deadlock.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip(err)
	}
	defer ln.Close()
	go func() {
		sn, err := ln.Accept()
		if err == nil {
			serve(t, sn, l, false)
		}
	}()
	cn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	tr := &http2.Transport{AllowHTTP: true}
	cc, err := tr.NewClientConn(cn)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				size := (g*7919 + i*104729) % 300000
				req, _ := http.NewRequest("POST", fmt.Sprintf("http://example.com/up/%d/%d", g, i), bytes.NewReader(make([]byte, size)))
				req.Header.Set("Idempotency-Key", strconv.Quote(fmt.Sprintf("k%d%d", g, i)))
				res, err := cc.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				want := fmt.Sprintf("%d /up/%d/%d \"k%d%d\"", size, g, i, g, i)
				if res.StatusCode != 200 || string(b) != want || res.ContentLength != int64(len(want)) {
					t.Errorf("got %d %q, want %q", res.StatusCode, b, want)
				}
			}
		}()
	}
	wg.Wait()
}
