package bench

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Sent is what a load run recorded about its requests for Verify: each
// acknowledged (2xx) upload with the id it was answered and the hash of its
// body, each one answered otherwise, each one written but not answered, and
// (--idempotency) each one still failing when its retries ran out. Keys are
// worker<<48 | sequence, as in the body's marker; with --idempotency each
// upload (key) is in exactly one list, whatever its attempts were.
type Sent struct {
	Acks     []ack
	Nacks    []nack
	NoAnswer []uint64
	GivenUp  []uint64
}

// VerifyResult is the verdict on one run's uploads in the database.
type VerifyResult struct {
	Table          string           `json:"table"`
	RunID          string           `json:"run_id"`
	Acked          int64            `json:"acked"`                   // 2xx answers
	AckedMySQL     int64            `json:"acked_mysql"`             // of those, not 202 (committed; the id is checked)
	AckedSpool     int64            `json:"acked_spool"`             // of those, 202 (spooled; no id to check, the row appears after replay)
	Rows           int64            `json:"rows"`                    // rows of this run in the table
	Found          int64            `json:"found"`                   // acked, present exactly once, same bytes
	Lost           int64            `json:"lost"`                    // acked, absent
	Duplicated     int64            `json:"duplicated"`              // uploads (acked or not) present more than once
	DuplicateRows  int64            `json:"duplicate_rows"`          // rows beyond the first of those
	Mismatched     int64            `json:"mismatched"`              // acked, present once, different bytes
	IDMismatch     int64            `json:"id_mismatch"`             // acked with an id other than the row's
	NotAcked       int64            `json:"not_acked"`               // written, answered non-2xx, not answered, or given up
	UnackedPresent int64            `json:"unacked_present"`         // of those (or unrecorded), present in the table
	GivenUp        int64            `json:"given_up"`                // --idempotency: uploads still failing when the retries ran out (may be present, at most once)
	Status422      int64            `json:"status_422"`              // uploads answered 422 (same key, other body): must not happen
	PresentAfter   map[string]int64 `json:"present_after,omitempty"` // status (or "no answer", "unrecorded") -> present count
	Seconds        float64          `json:"seconds"`
	OK             bool             `json:"ok"` // nothing acknowledged is lost or changed, nothing stored twice, no 422
}

var tableName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

type storedRow struct{ key, hash, id uint64 }

// verifyDBWait bounds how long Verify waits for the database to answer:
// a fault run may end with mariadbd still restarting (the spool can be
// empty, so drained, while the database is down).
const verifyDBWait = 60 * time.Second

// waitDB pings db every 200 ms until it answers, for at most d.
func waitDB(ctx context.Context, db *sql.DB, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := db.PingContext(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("database not answering after %s: %w", d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Verify checks, in the database of dsn, that every acknowledged upload of
// the run (bodies starting "ub RUNID ") is stored exactly once with the same
// bytes (the first 64 bits of SHA-256, computed by the server), and counts
// what is there that was not acknowledged.
func Verify(dsn, table, runID string, sent *Sent) (*VerifyResult, error) {
	t0 := time.Now()
	if !tableName.MatchString(table) {
		return nil, fmt.Errorf("bad table name %q", table)
	}
	if len(runID) != 16 {
		return nil, fmt.Errorf("bad run id %q", runID)
	}
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	if mc.DBName == "" {
		return nil, fmt.Errorf("dsn %q names no database", dsn)
	}
	db, err := sql.Open("mysql", mc.FormatDSN())
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := waitDB(ctx, db, verifyDBWait); err != nil {
		return nil, err
	}
	prefix := "ub " + runID + " "
	q := "SELECT id, SUBSTRING(body, 21, 22), LEFT(SHA2(body, 256), 16) FROM `" + table + "` WHERE LEFT(body, 20) = ?"
	rs, err := db.QueryContext(ctx, q, prefix)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var (
		stored []storedRow
		mark   sql.RawBytes
		sum    sql.RawBytes
		id     uint64
	)
	for rs.Next() {
		if err := rs.Scan(&id, &mark, &sum); err != nil {
			return nil, err
		}
		key, ok := parseMarkTail(mark)
		if !ok {
			continue // not one of ours after all
		}
		h, err := strconv.ParseUint(string(sum), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("bad SHA2 %q", sum)
		}
		stored = append(stored, storedRow{key: key, hash: h, id: id})
	}
	if err := rs.Err(); err != nil {
		return nil, err
	}
	r := judge(stored, sent)
	r.Table, r.RunID, r.Seconds = table, runID, time.Since(t0).Seconds()
	return r, nil
}

// parseMarkTail reads "WWWW SSSSSSSSSSSSSSSS\n" (the marker after the run id).
func parseMarkTail(b []byte) (uint64, bool) {
	if len(b) != 22 || b[4] != ' ' || b[21] != '\n' {
		return 0, false
	}
	var w, s [8]byte
	if _, err := hex.Decode(w[6:], b[0:4]); err != nil {
		return 0, false
	}
	if _, err := hex.Decode(s[:], b[5:21]); err != nil {
		return 0, false
	}
	wk := uint64(w[6])<<8 | uint64(w[7])
	var seq uint64
	for _, c := range s {
		seq = seq<<8 | uint64(c)
	}
	return markKey(int(wk), seq), true
}

// judge compares the stored rows with what was sent.
func judge(stored []storedRow, sent *Sent) *VerifyResult {
	r := &VerifyResult{Acked: int64(len(sent.Acks)), Rows: int64(len(stored)), GivenUp: int64(len(sent.GivenUp)),
		NotAcked: int64(len(sent.Nacks) + len(sent.NoAnswer) + len(sent.GivenUp)), PresentAfter: map[string]int64{}}
	for _, a := range sent.Acks {
		if a.spool {
			r.AckedSpool++
		} else {
			r.AckedMySQL++
		}
	}
	slices.SortFunc(stored, func(a, b storedRow) int { return cmpU64(a.key, b.key) })
	acks := slices.Clone(sent.Acks)
	slices.SortFunc(acks, func(a, b ack) int { return cmpU64(a.key, b.key) })
	other := map[uint64]string{}
	for _, n := range sent.Nacks {
		other[n.key] = strconv.Itoa(n.status)
		if n.status == 422 {
			r.Status422++
		}
	}
	for _, k := range sent.GivenUp {
		other[k] = "given up"
	}
	for _, k := range sent.NoAnswer {
		other[k] = "no answer"
	}
	i := 0 // into acks
	for j := 0; j < len(stored); {
		k := stored[j].key
		n := 1
		for j+n < len(stored) && stored[j+n].key == k {
			n++
		}
		if n > 1 {
			r.Duplicated++
			r.DuplicateRows += int64(n - 1)
		}
		for i < len(acks) && acks[i].key < k {
			r.Lost++ // acked, nothing stored
			i++
		}
		if i < len(acks) && acks[i].key == k {
			a := acks[i]
			i++
			switch {
			case n > 1:
			case stored[j].hash != a.hash:
				r.Mismatched++
			default:
				r.Found++
			}
			if a.id != 0 && a.id != stored[j].id && n == 1 {
				r.IDMismatch++
			}
		} else {
			r.UnackedPresent++
			why, ok := other[k]
			if !ok {
				why = "unrecorded"
			}
			r.PresentAfter[why]++
		}
		j += n
	}
	r.Lost += int64(len(acks) - i)
	if len(r.PresentAfter) == 0 {
		r.PresentAfter = nil
	}
	r.OK = r.Lost == 0 && r.Duplicated == 0 && r.Mismatched == 0 && r.Status422 == 0
	return r
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// FormatVerify writes the verdict.
func FormatVerify(w io.Writer, v *VerifyResult) {
	verdict := "OK"
	if !v.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "  verify      %s: %d acknowledged (%d x 201, %d x 202), %d found once with the same bytes; lost %d, duplicated %d (%d extra rows), changed %d, id mismatch %d  [table %s, %d rows of run %s, %.1f s]\n",
		verdict, v.Acked, v.AckedMySQL, v.AckedSpool, v.Found, v.Lost, v.Duplicated, v.DuplicateRows, v.Mismatched, v.IDMismatch, v.Table, v.Rows, v.RunID, v.Seconds)
	if v.Status422 > 0 {
		fmt.Fprintf(w, "              %d answered 422 (same key, different body): must not happen\n", v.Status422)
	}
	fmt.Fprintf(w, "              not acknowledged %d (given up %d), of which present anyway %d", v.NotAcked, v.GivenUp, v.UnackedPresent)
	for k, n := range v.PresentAfter {
		fmt.Fprintf(w, "  [%s: %d]", k, n)
	}
	fmt.Fprintln(w)
}
