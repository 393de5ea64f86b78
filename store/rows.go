package store

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
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
	sql string // its LOAD DATA statement
}

func (s *Store) initTables() error {
	s.tables = make(map[*schema.Table]*tableLoad, len(s.cfg.Tables))
	for _, t := range s.cfg.Tables {
		if t == nil || t.Name == "" || len(t.Columns) == 0 {
			return fmt.Errorf("store: a table without a name or columns")
		}
		cols := make([]string, 0, len(t.Columns)+1)
		cols = append(cols, "`"+schema.ColReceivedAt+"`")
		for _, c := range t.Columns {
			cols = append(cols, "`"+c.Name+"`")
		}
		s.tables[t] = &tableLoad{sql: "LOAD DATA LOCAL INFILE 'Reader::" + s.rowsName + "' INTO TABLE `" + t.Name + "` CHARACTER SET binary" +
			` FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n' (` + strings.Join(cols, ", ") + ")"}
	}
	return nil
}

// loadTables loads the ingest jobs among s.load, one LOAD per table, and
// sets their ids in s.ids. jobs is the attempt's batch (s.ids is indexed
// like it).
func (s *Store) loadTables(ctx context.Context, tx *sql.Tx, jobs []*Job, now time.Time) error {
	for i, j := range jobs {
		if j.Table == nil || s.verdicts[i] != vLoad || s.ids[i] != 0 {
			continue
		}
		// The jobs of j's table not loaded yet, in batch order.
		s.group = s.group[:0]
		s.groupAt = s.groupAt[:0]
		n := 0
		for k := i; k < len(jobs); k++ {
			if jobs[k].Table == j.Table && s.verdicts[k] == vLoad {
				s.group = append(s.group, jobs[k])
				s.groupAt = append(s.groupAt, k)
				n += jobs[k].Rows
			}
		}
		first, err := s.loadTable(ctx, tx, j.Table, n, now)
		if err != nil {
			return err
		}
		for g, k := range s.groupAt {
			s.ids[k] = first
			first += uint64(s.group[g].Rows)
		}
	}
	return nil
}

// loadTable runs one table's LOAD over s.group (n rows) and checks it.
func (s *Store) loadTable(ctx context.Context, tx *sql.Tx, t *schema.Table, n int, now time.Time) (uint64, error) {
	s.rows.reset(s.group, now)
	s.busy()
	res, err := tx.ExecContext(ctx, s.tables[t].sql)
	s.rows.reset(nil, time.Time{})
	if err != nil {
		return 0, fmt.Errorf("store: load rows into %s: %w", t.Name, err)
	}
	affected, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: load rows into %s: rows affected: %w", t.Name, err)
	}
	var first uint64
	var warnings int
	s.busy()
	if err := tx.QueryRowContext(ctx, "SELECT LAST_INSERT_ID(), @@warning_count").Scan(&first, &warnings); err != nil {
		return 0, fmt.Errorf("store: load rows into %s: insert id: %w", t.Name, err)
	}
	if warnings != 0 {
		return 0, loadWarning(ctx, tx, warnings)
	}
	if affected != int64(n) || first == 0 {
		return 0, fmt.Errorf("store: load rows into %s: %d rows affected, first id %d, want %d rows", t.Name, affected, first, n)
	}
	var maxID uint64
	s.busy()
	if err := tx.QueryRowContext(ctx, "SELECT MAX(id) FROM `"+t.Name+"`").Scan(&maxID); err != nil {
		return 0, fmt.Errorf("store: check ids of %s: %w", t.Name, err)
	}
	if maxID != first+uint64(n)-1 {
		return 0, fmt.Errorf("store: check ids of %s: max id %d, want %d: ids not contiguous", t.Name, maxID, first+uint64(n)-1)
	}
	return first, nil
}

// rowsReader renders the LOAD DATA file of one table's jobs: each line of
// each job's Body with the job's received_at in front. Owned by the writer
// goroutine (the driver reads on it).
type rowsReader struct {
	jobs  []*Job
	now   time.Time
	job   int // current job
	off   int // bytes of its Body consumed
	ts    int // bytes of the timestamp field (with its tab) written for the current line; -1 = the line's body is being copied
	tsBuf [33]byte
	tsLen int
}

func (r *rowsReader) reset(jobs []*Job, now time.Time) {
	r.jobs, r.now = jobs, now
	r.rewind()
}

func (r *rowsReader) rewind() {
	r.job, r.off, r.ts = 0, 0, 0
	if len(r.jobs) > 0 {
		r.render()
	}
}

func (r *rowsReader) render() {
	t := r.jobs[r.job].ReceivedAt
	if t.IsZero() {
		t = r.now
	}
	b := appendDatetime6(r.tsBuf[:0], t)
	b = append(b, '\t')
	r.tsLen = len(b)
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
			r.ts = 0 // the next line starts with its timestamp
		}
	}
	if n == 0 && r.job >= len(r.jobs) {
		return 0, io.EOF
	}
	return n, nil
}

// countLines is the number of rows in a rows body (each ends with '\n').
func countLines(b []byte) int { return bytes.Count(b, []byte{'\n'}) }
