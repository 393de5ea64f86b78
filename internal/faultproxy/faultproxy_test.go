package faultproxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echo starts a line echo server and returns its address and a channel that
// receives every line it got.
func echo(t *testing.T) (string, <-chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					got <- line
					if _, err := io.WriteString(c, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), got
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStallResumeCut(t *testing.T) {
	up, got := echo(t)
	p := New(t, "tcp", up)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func(s string) {
		t.Helper()
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
		if line, err := r.ReadString('\n'); err != nil || line != s {
			t.Fatalf("read %q, %v; want %q", line, err, s)
		}
		if g := <-got; g != s {
			t.Fatalf("upstream got %q, want %q", g, s)
		}
	}
	roundTrip("one\n")

	// Requests stalled: the line is held, upstream sees nothing until Resume.
	p.Stall(Requests)
	if _, err := io.WriteString(c, "two\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request to be held", func() bool { return p.Held(Requests) == 1 })
	select {
	case g := <-got:
		t.Fatalf("upstream got %q through a stall", g)
	default:
	}
	p.Resume()
	if line, err := r.ReadString('\n'); err != nil || line != "two\n" {
		t.Fatalf("after resume: %q, %v", line, err)
	}
	<-got

	// Replies stalled: upstream gets the line, the echo is held.
	p.Stall(Replies)
	if _, err := io.WriteString(c, "three\n"); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != "three\n" {
		t.Fatalf("upstream got %q", g)
	}
	waitFor(t, "the reply to be held", func() bool { return p.Held(Replies) == 1 })
	p.Resume()
	if line, err := r.ReadString('\n'); err != nil || line != "three\n" {
		t.Fatalf("after resume: %q, %v", line, err)
	}

	// Cut while stalled: held bytes are dropped, the client sees the close.
	p.Stall(Both)
	if _, err := io.WriteString(c, "four\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request to be held", func() bool { return p.Held(Requests) == 1 })
	p.Cut()
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("read %q after Cut", line)
	}
	waitFor(t, "the pair to be gone", func() bool { return p.Conns() == 0 })
	p.Resume()
	select {
	case g := <-got:
		t.Fatalf("upstream got %q after Cut", g)
	default:
	}

	// New connections work after a cut.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c, r = c2, bufio.NewReader(c2)
	roundTrip("five\n")
	p.Close()
	p.Close()
}
