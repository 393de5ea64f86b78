package metrics

import (
	"io"
	"strings"
	"testing"
)

func TestWritePrometheus(t *testing.T) {
	s := New()
	h := s.Histogram("upsink_test_seconds", "A test histogram.", []float64{.1, 1})
	h.Update(.5)
	s.Help("upsink_things_total", "Things, by kind.")
	s.Func(func(w io.Writer) {
		Counter(w, `upsink_things_total{kind="a"}`, 3)
		Counter(w, `upsink_things_total{kind="b"}`, 4)
		Gauge(w, "upsink_level", 1.5)
	})
	var b strings.Builder
	if err := s.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		"# HELP upsink_things_total Things, by kind.\n# TYPE upsink_things_total counter\n" +
			`upsink_things_total{kind="a"} 3` + "\n" + `upsink_things_total{kind="b"} 4` + "\n",
		"# HELP upsink_test_seconds A test histogram.\n# TYPE upsink_test_seconds histogram\n",
		`upsink_test_seconds_bucket{le="1"} 1` + "\n",
		"# HELP upsink_level " + defaultHelp + "\n# TYPE upsink_level gauge\nupsink_level 1.5\n",
		"# TYPE process_io_read_bytes_total counter\n",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for fam := range dropped {
		if strings.Contains(page, fam) {
			t.Errorf("page has %s", fam)
		}
	}
}

// TestUpdateDoesNotAllocate: what the store's writer does per batch.
func TestUpdateDoesNotAllocate(t *testing.T) {
	s := New()
	h := s.Histogram("upsink_x_seconds", "x", []float64{.1, 1, 10})
	if n := testing.AllocsPerRun(1000, func() { h.Update(0.3) }); n != 0 {
		t.Fatalf("%.1f allocations per update", n)
	}
}

// BenchmarkWritePrometheus: what one scrape of a Set like upsink's costs
// (-benchmem: bytes allocated per scrape).
func BenchmarkWritePrometheus(b *testing.B) {
	s := New()
	for _, n := range []string{"a", "b", "c"} {
		s.Histogram("upsink_"+n+"_seconds", n, []float64{.001, .01, .1, 1, 10})
	}
	s.Func(func(w io.Writer) {
		for i := range 100 {
			Counter(w, `upsink_requests_total{route="r",status="`+string(rune('a'+i%26))+`"}`, uint64(i))
		}
		for range 30 {
			Gauge(w, "upsink_g", 1)
		}
	})
	b.ReportAllocs()
	for b.Loop() {
		_ = s.WritePrometheus(io.Discard)
	}
}
