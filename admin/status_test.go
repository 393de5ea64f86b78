package admin

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"unsafe"
)

// TestStatusPage: the page shows the current values and draws the last
// samples; the ring's memory is fixed.
func TestStatusPage(t *testing.T) {
	if got := unsafe.Sizeof(Sampler{}.ring); got != 67200 {
		t.Fatalf("ring %d bytes, the package doc says 67,200", got)
	}
	n := uint64(0)
	s := NewSampler(func(x *Sample) {
		n += 100
		*x = Sample{Requests: n, Rows: 2 * n, Queue: 3, Budget: 1 << 20, BudgetMax: 32 << 20, Conns: 7,
			SpoolRecords: 5, RSS: 12 << 20, Heap: 4 << 20, TCPMem: 1 << 20}
	})
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/status", nil))
	if !strings.Contains(w.Body.String(), "No sample yet") {
		t.Fatal("empty ring")
	}
	for range ringLen + 5 { // wraps around
		s.take()
	}
	if len(s.samples()) != ringLen {
		t.Fatalf("%d samples kept, want %d", len(s.samples()), ringLen)
	}
	w = httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/status", nil))
	body, _ := io.ReadAll(w.Result().Body)
	page := string(body)
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		"<tr><th>connections</th><td>7</td></tr>",
		"<tr><th>in-flight budget</th><td>1.0 MiB of 32.0 MiB</td></tr>",
		"<tr><th>mariadbd RSS</th><td>not found on this host</td></tr>",
		"<tr><th>upsink RSS</th><td>12.0 MiB</td></tr>",
		"<svg ",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if c := strings.Count(page, "<polyline"); c != len(series) {
		t.Errorf("%d polylines, want %d", c, len(series))
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "src=") || strings.Contains(page, "href=") || strings.Contains(page, "@import") {
		t.Error("the page must have no script and no external asset")
	}
}
