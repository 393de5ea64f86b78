package store

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"upsink/schema"
)

var readings = &schema.Table{Name: "readings", Columns: []schema.Column{
	{Name: "device", Type: schema.Type{Kind: schema.Varchar, Len: 8}, NotNull: true},
	{Name: "temp", Type: schema.Type{Kind: schema.Double}},
}}

const createReadings = "CREATE TABLE readings (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, received_at DATETIME(6) NOT NULL," +
	" device VARCHAR(8) NOT NULL, temp DOUBLE NULL) DEFAULT CHARSET=utf8mb4"

func rowsJob(tag uint64, key string, rows ...string) *Job {
	body := strings.Join(rows, "\n") + "\n"
	j := keyed(tag, "", key, body)
	j.Stream = nil
	j.Table, j.Rows = readings, len(rows)
	return j
}

// TestRowsReader: the LOAD file of a table's jobs is each job's lines with
// its received_at in front, whatever the size of the reads.
func TestRowsReader(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 3, 4, 5, 678901000, time.UTC)
	jobs := []*Job{
		{Body: []byte("a\t1\nb\t\\N\n"), Rows: 2, ReceivedAt: t0},
		{Body: []byte("c\t3\n"), Rows: 1, ReceivedAt: t0.Add(time.Second)},
	}
	want := "1\t2026-12-02 03:04:05.678901\ta\t1\n2\t2026-12-02 03:04:05.678901\tb\t\\N\n3\t2026-12-02 03:04:06.678901\tc\t3\n"
	for _, size := range []int{1, 2, 7, 16, 1 << 10} {
		var r rowsReader
		r.reset(jobs, time.Time{}, 1)
		var got []byte
		buf := make([]byte, size)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil || n == 0 {
				t.Fatalf("read %d: n %d err %v", size, n, err)
			}
		}
		if string(got) != want {
			t.Fatalf("reads of %d bytes:\n%q\nwant\n%q", size, got, want)
		}
		r.rewind()
		if n, _ := r.Read(buf); string(buf[:n]) != want[:min(n, len(want))] {
			t.Fatalf("rewind does not restart the file")
		}
	}
}

// TestRowsLoaded: ingest jobs for a table share a batch with uploads; each
// gets the id of its first row, rows in order with their received_at; a job
// whose rows the database refuses is refused alone; a keyed retry gets the
// first answer without new rows.
func TestRowsLoaded(t *testing.T) {
	g := newWarmGate()
	s, _, db := openTest(t, Config{Writers: 1, OnDone: g.onDone, Tables: []*schema.Table{readings}}, nil, createReadings)
	jobs := []*Job{
		rowsJob(1, "k", "dev1\t20.5", "dev2\t\\N"),
		keyed(2, "s", "", "an upload"),
		rowsJob(3, "", "dev3\t-1"),
		rowsJob(4, "", "much-too-long\t1"), // varchar(8): a warning, refused
		rowsJob(5, "", "dev5\t5", "dev6\t6", "dev7\t7"),
	}
	submitBatch(t, s, g, jobs)
	for _, i := range []int{0, 1, 2, 4} {
		if jobs[i].Err != nil || jobs[i].ID == 0 {
			t.Fatalf("job %d: id %d err %v", i, jobs[i].ID, jobs[i].Err)
		}
	}
	var re *RejectedError
	if !errors.As(jobs[3].Err, &re) {
		t.Fatalf("too long a value: %v, want RejectedError", jobs[3].Err)
	}
	check := func(id uint64, device string, temp *float64, at time.Time) {
		t.Helper()
		var d string
		var tp *float64
		var got time.Time
		if err := db.QueryRow("SELECT device, temp, received_at FROM readings WHERE id = ?", id).Scan(&d, &tp, &got); err != nil {
			t.Fatalf("row %d: %v", id, err)
		}
		if d != device || (tp == nil) != (temp == nil) || (tp != nil && *tp != *temp) || !got.Equal(at.UTC().Truncate(time.Microsecond)) {
			t.Fatalf("row %d: %q %v %v, want %q %v %v", id, d, tp, got, device, temp, at)
		}
	}
	f := func(v float64) *float64 { return &v }
	check(jobs[0].ID, "dev1", f(20.5), jobs[0].ReceivedAt)
	check(jobs[0].ID+1, "dev2", nil, jobs[0].ReceivedAt)
	check(jobs[2].ID, "dev3", f(-1), jobs[2].ReceivedAt)
	for k := range 3 {
		check(jobs[4].ID+uint64(k), "dev"+string(rune('5'+k)), f(float64(5+k)), jobs[4].ReceivedAt)
	}
	if n := countRows(t, db, "readings"); n != 6 {
		t.Fatalf("%d rows in readings, want 6", n)
	}

	retry := rowsJob(6, "k", "dev1\t20.5", "dev2\t\\N")
	mustSubmit(t, s, retry)
	g.col.waitFor(t, len(jobs)+1)
	if retry.Err != nil || retry.Prior != (Answer{Status: 201, ID: jobs[0].ID}) {
		t.Fatalf("keyed retry: %+v %v, want the first answer", retry.Prior, retry.Err)
	}
	// The same key on an upload stream is another scope.
	up := keyed(7, "readings", "k", "dev1\t20.5\ndev2\t\\N\n")
	mustSubmit(t, s, up)
	g.col.waitFor(t, len(jobs)+2)
	if up.Err != nil || up.Prior.Status != 0 {
		t.Fatalf("same key on a stream: %+v %v, want a new row", up.Prior, up.Err)
	}
	if n := countRows(t, db, "readings"); n != 6 {
		t.Fatalf("%d rows in readings after the retry, want 6", n)
	}
}

func TestRowsJobValidation(t *testing.T) {
	s, col, _ := openTest(t, Config{Tables: []*schema.Table{readings}}, nil, createReadings)
	other := &schema.Table{Name: "other", Columns: readings.Columns}
	bad := []*Job{
		{Tag: 1, Table: other, Rows: 1, Body: []byte("a\t1\n")},
		{Tag: 2, Table: readings, Rows: 2, Body: []byte("a\t1\n")},
		{Tag: 3, Table: readings, Rows: 1, Body: []byte("a\t1")},
		{Tag: 4, Table: readings, Rows: 1},
	}
	for _, j := range bad {
		mustSubmit(t, s, j)
	}
	col.waitFor(t, len(bad))
	for _, j := range bad {
		var re *RejectedError
		if !errors.As(j.Err, &re) {
			t.Fatalf("job %d: %v, want RejectedError", j.Tag, j.Err)
		}
	}
}
