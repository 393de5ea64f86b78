package store

import (
	"bytes"
	"io"
	"strconv"
	"testing"
	"time"
)

// unescapeTSV parses the file tsvReader produces back into rows of fields.
func unescapeTSV(t *testing.T, data []byte) [][][]byte {
	t.Helper()
	var rows [][][]byte
	var row [][]byte
	var cur []byte
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch c {
		case '\\':
			i++
			if i == len(data) {
				t.Fatalf("dangling escape at end")
			}
			switch data[i] {
			case '0':
				cur = append(cur, 0)
			case 't':
				cur = append(cur, '\t')
			case 'n':
				cur = append(cur, '\n')
			case '\\':
				cur = append(cur, '\\')
			default:
				t.Fatalf("unexpected escape \\%c", data[i])
			}
		case '\t':
			row = append(row, cur)
			cur = nil
		case '\n':
			row = append(row, cur)
			rows = append(rows, row)
			row, cur = nil, nil
		default:
			cur = append(cur, c)
		}
	}
	if len(row) != 0 || len(cur) != 0 {
		t.Fatalf("trailing partial row")
	}
	return rows
}

func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestTSVRoundTrip(t *testing.T) {
	at := time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.FixedZone("x", 3600))
	now := time.Date(2001, 1, 2, 3, 4, 5, 6000, time.UTC)
	jobs := []*Job{
		{Stream: []byte("s"), RemoteAddr: []byte("1.2.3.4:5"), ContentType: []byte("a\tb"), ReceivedAt: at, Body: allBytes()},
		{Stream: []byte(""), RemoteAddr: []byte(""), ContentType: nil, ReceivedAt: at, Body: nil},
		{Stream: []byte("x"), RemoteAddr: []byte("[::1]:80"), ContentType: []byte("\\N"), Body: []byte("\\N")},
		{Stream: []byte("\\\t\n\x00"), Body: bytes.Repeat([]byte("\\\t\n\x00ab"), 5000)},
	}
	for _, size := range []int{2, 3, 5, 7, 64, 16384} {
		var r tsvReader
		r.reset(jobs, now, 1)
		var out []byte
		buf := make([]byte, size)
		for {
			n, err := r.Read(buf)
			out = append(out, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				t.Fatalf("size %d: Read returned 0, nil", size)
			}
		}
		rows := unescapeTSV(t, out)
		if len(rows) != len(jobs) {
			t.Fatalf("size %d: %d rows, want %d", size, len(rows), len(jobs))
		}
		for i, j := range jobs {
			ts := "2024-02-29 22:59:58.123456"
			if j.ReceivedAt.IsZero() {
				ts = "2001-01-02 03:04:05.000006"
			}
			want := [][]byte{[]byte(strconv.Itoa(i + 1)), j.Stream, []byte(ts), j.RemoteAddr, j.ContentType, j.Body}
			for f := range want {
				if !bytes.Equal(rows[i][f], want[f]) {
					t.Fatalf("size %d row %d field %d: got %q want %q", size, i, f, rows[i][f], want[f])
				}
			}
		}
	}
}

func renderJobs(n, bodyLen int) []*Job {
	body := bytes.Repeat([]byte("ab\tc\\d\n"), bodyLen/7+1)[:bodyLen]
	at := time.Now()
	jobs := make([]*Job, n)
	for i := range jobs {
		jobs[i] = &Job{Stream: []byte("stream"), RemoteAddr: []byte("192.168.100.200:54321"), ContentType: []byte("application/octet-stream"), ReceivedAt: at, Body: body}
	}
	return jobs
}

func drain(r *tsvReader, buf []byte) int {
	total := 0
	for {
		n, err := r.Read(buf)
		total += n
		if err != nil {
			return total
		}
	}
}

// TestTSVNoAllocs: rendering a whole 1000-row batch allocates nothing at all.
func TestTSVNoAllocs(t *testing.T) {
	jobs := renderJobs(1000, 1024)
	var r tsvReader
	r.reset(jobs, time.Now(), 1)
	buf := make([]byte, 16384)
	allocs := testing.AllocsPerRun(20, func() {
		r.rewind()
		drain(&r, buf)
	})
	if raceEnabled {
		t.Logf("race detector on: %v allocations per 1000-row batch (not checked)", allocs)
		return
	}
	if allocs != 0 {
		t.Fatalf("rendering a 1000-row batch allocated %v times, want 0", allocs)
	}
}

func BenchmarkTSVRender(b *testing.B) {
	jobs := renderJobs(1000, 1024)
	var r tsvReader
	r.reset(jobs, time.Now(), 1)
	buf := make([]byte, 16384)
	b.ReportAllocs()
	var bytesOut int
	for b.Loop() {
		r.rewind()
		bytesOut = drain(&r, buf)
	}
	b.SetBytes(int64(bytesOut))
	b.ReportMetric(float64(b.N*len(jobs))/b.Elapsed().Seconds(), "rows/s")
}
