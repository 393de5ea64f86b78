package server

import (
	"testing"
	"unsafe"

	"github.com/panjf2000/gnet/v2"

	"upsink/conn"
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
	if got := unsafe.Sizeof(request{}); got > 200 {
		t.Errorf("request record %d bytes, budget says at most 200", got)
	}
	if metaMax != 383 {
		t.Errorf("metaMax %d, budget says 383", metaMax)
	}
	if maxPipelined != 64<<10 || maxOutbound != 256<<10 {
		t.Errorf("pipelining bounds changed: %d %d", maxPipelined, maxOutbound)
	}
	t.Logf("slot 32 B, ref 16 B, request record %d B", unsafe.Sizeof(request{}))
}
