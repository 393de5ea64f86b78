package tlsbridge

import (
	"bytes"
	"io"
	"runtime"
	"testing"
	"time"
)

// TestEchoAllocs: once a connection is established, a request-sized message
// decrypted on the loop, echoed and encrypted back allocates almost nothing
// in the whole process (client included): the plaintext buffer comes from
// the bridge's own pool and goes back to it when emptied. It used to come
// from bytebufferpool, which after its calibration (42,000 puts) dropped
// every buffer, so each message cost a fresh 16 KiB. What remains is
// crypto/tls's own: a 16-byte reader per record read, on each side.
func TestEchoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops pooled buffers at random")
	}
	s := startServer(t, Config{}, nil)
	s.asIs.Store(true)
	c, err := dialTLS(s.addr, clientConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	msg := bytes.Repeat([]byte("0123456789abcdef"), 70) // 1,120 B: a 1 KiB upload with its head
	got := make([]byte, len(msg))
	echo := func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
	}
	// Past bytebufferpool's calibration, so that a pool that stops
	// keeping the buffers shows below.
	for range 45000 {
		echo()
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo %q", got[:32])
	}
	const n = 2000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		echo()
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d B and %.1f allocations per echoed message (process-wide)", per, float64(after.Mallocs-before.Mallocs)/n)
	if per >= 1024 {
		t.Fatalf("%d B allocated per echoed message, want < 1 KiB", per)
	}
}
