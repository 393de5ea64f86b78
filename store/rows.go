package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"upsink/schema"
)

// Rows: structured ingest (issue 9). A job whose Table is set carries in
// Body its request's rows for that table as LOAD DATA text: one line per
// row, the declared columns in order, each field escaped as tsv.go escapes
// (the ingest package renders them), NULL as \N. In a batch, the jobs of one
// table are loaded by one LOAD DATA LOCAL per table, in the same transaction
// as the uploads and the ledger row; the reader below puts each job's
// received_at in front of each of its lines. The checks are the uploads'
// ones per table: every row inserted, no warning (a warning fails the batch,
// and bisect then narrows it down to the request whose rows the database
// refuses), ids first..first+n-1. A job's ID is the id of its first row;
// its rows have the next ones in order.

// tableLoad is what the store keeps per declared table.
type tableLoad struct {
	sql   string  // its LOAD DATA statement
	ids   idBlock // the writer's block of ids for it
	first uint64  // the current attempt's reserved ids start here
}

func (w *writer) initTables() error {
	w.tables = make(map[*schema.Table]*tableLoad, len(w.cfg.Tables))
	for _, t := range w.cfg.Tables {
		if t == nil || t.Name == "" || len(t.Columns) == 0 {
			return fmt.Errorf("store: a table without a name or columns")
		}
		cols := make([]string, 0, len(t.Columns)+2)
		cols = append(cols, "`"+schema.ColID+"`", "`"+schema.ColReceivedAt+"`")
		for _, c := range t.Columns {
			cols = append(cols, "`"+c.Name+"`")
		}
		w.tables[t] = &tableLoad{sql: "LOAD DATA LOCAL INFILE 'Reader::" + w.rowsName + "' INTO TABLE `" + t.Name + "` CHARACTER SET binary" +
			` FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n' (` + strings.Join(cols, ", ") + ")"}
	}
	return nil
}

// reserveTables takes, for each table with jobs in the batch, ids for all
// their rows (ids.go); loadTables gives them out.
func (w *writer) reserveTables(ctx context.Context, jobs []*Job) error {
	for i, j := range jobs {
		if j.Table == nil || (i > 0 && seenTable(jobs[:i], j.Table)) {
			continue
		}
		var n uint64
		for _, o := range jobs[i:] {
			if o.Table == j.Table {
				n += uint64(o.Rows)
			}
		}
		tl := w.tables[j.Table]
		first, err := w.takeIDs(ctx, &tl.ids, j.Table.Name, j.Table.Name, schema.ColID, n)
		if err != nil {
			return err
		}
		tl.first = first
	}
	return nil
}

func seenTable(jobs []*Job, t *schema.Table) bool {
	for _, j := range jobs {
		if j.Table == t {
			return true
		}
	}
	return false
}

// loadTables loads the ingest jobs the attempt keeps, one LOAD per table,
// and sets their ids in w.ids. jobs is the attempt's batch (w.ids is indexed
// like it).
func (w *writer) loadTables(ctx context.Context, jobs []*Job, now time.Time) error {
	for i, j := range jobs {
		if j.Table == nil || w.verdicts[i] != vLoad || w.ids[i] != 0 {
			continue
		}
		// The jobs of j's table not loaded yet, in batch order.
		w.group = w.group[:0]
		w.groupAt = w.groupAt[:0]
		n := 0
		for k := i; k < len(jobs); k++ {
			if jobs[k].Table == j.Table && w.verdicts[k] == vLoad {
				w.group = append(w.group, jobs[k])
				w.groupAt = append(w.groupAt, k)
				n += jobs[k].Rows
			}
		}
		first := w.tables[j.Table].first
		if err := w.loadTable(ctx, j.Table, n, now, first); err != nil {
			return err
		}
		for g, k := range w.groupAt {
			w.ids[k] = first
			first += uint64(w.group[g].Rows)
		}
	}
	return nil
}

// loadTable runs one table's LOAD over w.group (n rows, ids first..) and
// checks it.
func (w *writer) loadTable(ctx context.Context, t *schema.Table, n int, now time.Time, first uint64) error {
	w.rows.reset(w.group, now, first)
	res, err := w.exec(ctx, w.tables[t].sql)
	w.rows.reset(nil, time.Time{}, 0)
	if err != nil {
		if cerr, ok := checkError(err); ok { // the previous LOAD's check
			return cerr
		}
		if dup := idTaken(err); dup != nil { // the queued INSERT of uploads
			return dup
		}
		return fmt.Errorf("store: load rows into %s: %w", t.Name, err)
	}
	affected, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: load rows into %s: rows affected: %w", t.Name, err)
	}
	return w.checkLoad(ctx, t.Name, affected, uint64(n))
}

// rowsReader renders the LOAD DATA file of one table's jobs: each line of
// each job's Body with the job's received_at in front. Owned by the writer
// goroutine (the driver reads on it).
type rowsReader struct {
	jobs  []*Job
	now   time.Time
	first uint64 // id of the first line; the others follow in order
	line  uint64 // lines started so far
	job   int    // current job
	off   int    // bytes of its Body consumed
	ts    int    // bytes of the line's prefix (id and received_at, with their tabs) written; -1 = the line's body is being copied
	tsBuf [54]byte
	tsLen int
}

func (r *rowsReader) reset(jobs []*Job, now time.Time, first uint64) {
	r.jobs, r.now, r.first = jobs, now, first
	r.rewind()
}

func (r *rowsReader) rewind() {
	r.job, r.off, r.ts, r.line = 0, 0, 0, 0
	if len(r.jobs) > 0 {
		r.render()
	}
}

// render renders the next line's prefix: its id and its job's received_at.
func (r *rowsReader) render() {
	t := r.jobs[r.job].ReceivedAt
	if t.IsZero() {
		t = r.now
	}
	b := strconv.AppendUint(r.tsBuf[:0], r.first+r.line, 10)
	b = append(b, '\t')
	b = appendDatetime6(b, t)
	b = append(b, '\t')
	r.tsLen = len(b)
	r.line++
}

// Read implements io.Reader.
func (r *rowsReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && r.job < len(r.jobs) {
		body := r.jobs[r.job].Body
		if r.off >= len(body) {
			r.job++
			r.off, r.ts = 0, 0
			if r.job < len(r.jobs) {
				r.render()
			}
			continue
		}
		if r.ts >= 0 {
			c := copy(p[n:], r.tsBuf[r.ts:r.tsLen])
			n += c
			r.ts += c
			if r.ts < r.tsLen {
				break // p is full
			}
			r.ts = -1
		}
		rest := body[r.off:]
		end := len(rest)
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			end = i + 1
		}
		c := copy(p[n:], rest[:end])
		n += c
		r.off += c
		if c == end && rest[end-1] == '\n' {
			r.ts = 0 // the next line starts with its prefix
			if r.off < len(body) {
				r.render()
			}
		}
	}
	if n == 0 && r.job >= len(r.jobs) {
		return 0, io.EOF
	}
	return n, nil
}

// countLines is the number of rows in a rows body (each ends with '\n').
func countLines(b []byte) int { return bytes.Count(b, []byte{'\n'}) }
