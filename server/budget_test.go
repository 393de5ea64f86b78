package server

import (
	"crypto/tls"
	"runtime"
	"testing"
	"unsafe"

	"github.com/panjf2000/gnet/v2"

	"upsink/conn"
	"upsink/store"
)

// The per-connection and per-request figures of the memory budget in
// ARCHITECTURE.md. If one changes, update the document with it.
func TestMemoryBudget(t *testing.T) {
	if got := unsafe.Sizeof(conn.Slot{}); got != 32 {
		t.Errorf("slot %d bytes, budget says 32", got)
	}
	var ref gnet.Conn
	if got := unsafe.Sizeof(ref); got != 16 {
		t.Errorf("conn ref %d bytes, budget says 16", got)
	}
	if got := unsafe.Sizeof(request{}); got > 360 {
		t.Errorf("request record %d bytes, budget says at most 360", got)
	}
	if metaMax != 383 {
		t.Errorf("metaMax %d, budget says 383", metaMax)
	}
	if maxPipelined != 64<<10 || maxOutbound != 64<<10 {
		t.Errorf("pipelining bounds changed: %d %d", maxPipelined, maxOutbound)
	}
	t.Logf("slot 32 B, ref 16 B, request record %d B", unsafe.Sizeof(request{}))
}

// TestQueueNeverShorterThanConnections: the default commit queue has a slot
// for every connection the slab can hold, so with one upload in flight per
// connection it cannot fill up, plus one for every upload beyond that the
// budget can hold (HTTP/2 streams, each charged at least metaMax).
func TestQueueNeverShorterThanConnections(t *testing.T) {
	cfg := Config{MaxConns: 12345}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if want := 12345 + int(cfg.MaxInflight/metaMax); cfg.Store.QueueLen != want {
		t.Fatalf("queue %d for %d connections and a %d-byte budget, want %d", cfg.Store.QueueLen, cfg.MaxConns, cfg.MaxInflight, want)
	}
	cfg = Config{MaxConns: 100, Store: store.Config{QueueLen: 7}}
	if err := cfg.setDefaults(); err != nil || cfg.Store.QueueLen != 7 {
		t.Fatalf("explicit queue length not kept: %d %v", cfg.Store.QueueLen, err)
	}
}

// TestConnectionCap: the default cap is the smaller of what the fds allow
// (with a reserve) and what ConnMemory allows at a connection's fixed cost;
// an explicit MaxConns is kept up to the fd bound.
func TestConnectionCap(t *testing.T) {
	const fds, loops = 20000, 2
	fdCap := fds - fdReserve(loops)
	tests := []struct {
		name     string
		tls      bool
		maxConns int
		mem      int64
		want     int
	}{
		{"plain: the fds bound it", false, 0, 0, fdCap},
		{"HTTPS: memory bounds it", true, 0, 0, int((128 << 20) / connCost(true))},
		{"small memory", true, 0, 1 << 20, int((1 << 20) / connCost(true))},
		{"no memory bound", true, 0, -1, fdCap},
		{"explicit, under the fds", true, 15000, 0, 15000},
		{"explicit, over the fds", false, 50000, 0, fdCap},
	}
	cert := &tls.Certificate{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Loops: loops, MaxConns: tt.maxConns, ConnMemory: tt.mem, fdLimit: fds}
			if tt.tls {
				cfg.TLSListen, cfg.TLS.Certificate = "127.0.0.1:8443", cert
			}
			if err := cfg.setDefaults(); err != nil {
				t.Fatal(err)
			}
			if cfg.MaxConns != tt.want {
				t.Fatalf("MaxConns %d, want %d", cfg.MaxConns, tt.want)
			}
		})
	}
	if c := connCost(true); c < 10<<10 || c > 11<<10 {
		t.Fatalf("an HTTPS connection's fixed cost %d B, ARCHITECTURE.md says ~10 KiB", c)
	}
}

// TestDefaultLoops: without --loops the server runs half as many event loops
// as Go has CPUs, at least one (upsink shares the machine with its
// database); an explicit count is kept.
func TestDefaultLoops(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	for _, tt := range []struct{ procs, loops, want int }{
		{1, 0, 1}, {2, 0, 1}, {3, 0, 1}, {4, 0, 2}, {16, 0, 8},
		{2, 2, 2}, {1, 3, 3},
	} {
		runtime.GOMAXPROCS(tt.procs)
		cfg := Config{Loops: tt.loops}
		if err := cfg.setDefaults(); err != nil {
			t.Fatal(err)
		}
		if cfg.Loops != tt.want {
			t.Errorf("GOMAXPROCS %d, --loops %d: %d loops, want %d", tt.procs, tt.loops, cfg.Loops, tt.want)
		}
	}
}
