package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/go-sql-driver/mysql"

	"upsink/schema"
)

// The database's own ceiling for upsink's row shape (issue 13): one client
// streaming LOAD DATA LOCAL INFILE of 1 KiB rows into a table shaped like
// upsink's uploads, ROWS rows per transaction, back to back on one
// connection for a duration. Nothing else runs: no HTTP, no queue, no
// ledger, no id reservation. upsink's uploads/s divided by this is how much
// of what the database can take upsink delivers.

// CeilingConfig is one ceiling run.
type CeilingConfig struct {
	DSN        string        // go-sql-driver DSN naming a database
	Table      string        // created if missing, upsink's uploads shape
	Duration   time.Duration // start no transaction after this
	Rows       int           // rows per transaction (LOAD DATA statement)
	BodySize   int           // bytes of each row's body
	Watch      []WatchSpec   // processes whose CPU and memory are sampled (mariadbd)
	WatchEvery time.Duration
	Command    string
}

// CeilingResult is what a ceiling run measured.
type CeilingResult struct {
	Command      string  `json:"command"`
	Table        string  `json:"table"`
	Engine       string  `json:"engine"`
	Version      string  `json:"mariadb_version"`
	FlushAtTrx   string  `json:"innodb_flush_log_at_trx_commit"`
	RowsPerTx    int     `json:"rows_per_tx"`
	BodyBytes    int     `json:"body_bytes"`
	Duration     float64 `json:"duration_s"`
	Elapsed      float64 `json:"elapsed_s"` // first START TRANSACTION to the last COMMIT's answer
	Rows         int64   `json:"rows"`      // rows in committed transactions
	Transactions int64   `json:"transactions"`
	StreamBytes  int64   `json:"stream_bytes"` // LOAD DATA text streamed (escaped)
	RowsPerSec   float64 `json:"rows_per_s"`
	TxPerSec     float64 `json:"tx_per_s"`
	TxLatency    Latency `json:"tx_latency"`   // START TRANSACTION .. COMMIT answered
	LoadLatency  Latency `json:"load_latency"` // the LOAD DATA statement alone
	CountBefore  int64   `json:"count_before"`
	CountAfter   int64   `json:"count_after"`
	CountOK      bool    `json:"count_ok"` // CountAfter - CountBefore == Rows
	CPU          CPU     `json:"tool_cpu"`
	// Machine: the whole machine's CPUs during the run (all processes).
	Machine *MachineCPU `json:"machine_cpu,omitempty"`
	// CPU seconds per 1,000 committed rows, by process ("tool" is this
	// one, the others the --watch names).
	CPUPer1kRows map[string]float64 `json:"cpu_s_per_1000_rows"`
	Memory       []WatchResult      `json:"memory,omitempty"`
	Err          string             `json:"error,omitempty"`
}

// ceilingSession is the session upsink's store sets up (store/schema.go).
const ceilingSession = "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone='+00:00'"

// ceilingCreate is upsink's uploads table (store/schema.go createUploads)
// under another name.
func ceilingCreate(table string) string {
	return "CREATE TABLE IF NOT EXISTS `" + table + "` (\n" +
		"  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,\n" +
		"  stream VARCHAR(64) CHARACTER SET ascii NOT NULL,\n" +
		"  received_at DATETIME(6) NOT NULL,\n" +
		"  remote_addr VARCHAR(64) CHARACTER SET ascii NOT NULL,\n" +
		"  content_type VARBINARY(255) NOT NULL,\n" +
		"  body LONGBLOB NOT NULL)"
}

var ceilingSeq atomic.Uint64

// ceilingRows renders the LOAD DATA file of one transaction on the fly, as
// the store's tsvReader does (store/tsv.go): per row stream, received_at
// (now, DATETIME(6) text), remote_addr, content_type and body, tab
// separated, escaped by schema.LoadEscape. Bodies are what `upsink-bench
// load` sends: a 42-byte marker naming the run and the row, then the
// shared filler, so every body is distinct and the escaped text is the
// same as upsink streams for load's uploads.
type ceilingRows struct {
	n      int // rows per file
	row    int // rows rendered so far in this file
	seq    uint64
	body   []byte // marker + filler; the marker's sequence is rewritten per row
	line   []byte // the current row, rendered and escaped
	off    int    // bytes of line already read
	bytes  int64  // streamed in total
	portLo uint16
}

func newCeilingRows(rows, bodySize int, runID uint64) *ceilingRows {
	r := &ceilingRows{n: rows, body: makeFiller(bodySize), portLo: uint16(32768 + runID%16384)}
	copy(r.body, "ub 0000000000000000 0000 0000000000000000\n")
	putHex(r.body[markRun:markRun+16], runID)
	return r
}

// rewind starts the next transaction's file (the driver calls the handler,
// hence this, once per LOAD DATA statement).
func (r *ceilingRows) rewind() { r.row, r.line, r.off = 0, r.line[:0], 0 }

func (r *ceilingRows) render() {
	r.seq++
	putHex(r.body[markSeq:markSeq+16], r.seq)
	putHex(r.body[markWork:markWork+4], r.seq%2000) // as if from 2,000 connections
	b := append(r.line[:0], "bench\t"...)
	b = appendDatetime6(b, time.Now())
	b = append(b, "\t127.0.0.1:"...)
	b = strconv.AppendUint(b, uint64(r.portLo)+r.seq%2000, 10)
	b = append(b, "\tapplication/octet-stream\t"...)
	for _, c := range r.body {
		if e := schema.LoadEscape[c]; e != 0 {
			b = append(b, '\\', e)
		} else {
			b = append(b, c)
		}
	}
	r.line = append(b, '\n')
	r.off = 0
	r.row++
}

func (r *ceilingRows) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if r.off == len(r.line) {
			if r.row == r.n {
				break
			}
			r.render()
		}
		k := copy(p[n:], r.line[r.off:])
		n += k
		r.off += k
	}
	r.bytes += int64(n)
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// appendDatetime6 appends t in UTC as "YYYY-MM-DD HH:MM:SS.ffffff" (the
// store renders received_at the same way).
func appendDatetime6(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, "2006-01-02 15:04:05.000000")
}

// openCeilingDB opens dsn with the driver options upsink's store uses
// (store/schema.go openDB) and one connection.
func openCeilingDB(dsn string) (*sql.DB, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	if mc.DBName == "" {
		return nil, errors.New("the DSN names no database")
	}
	mc.ParseTime = true
	mc.InterpolateParams = false
	mc.MultiStatements = true // as the store (each statement here goes alone)
	mc.AllowAllFiles = false  // Reader:: handlers need no file allowlist
	mc.Loc = time.UTC
	if mc.Timeout == 0 {
		mc.Timeout = 2 * time.Second
	}
	if mc.ReadTimeout == 0 {
		mc.ReadTimeout = 5 * time.Second
	}
	if mc.WriteTimeout == 0 {
		mc.WriteTimeout = 5 * time.Second
	}
	conn, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	return db, nil
}

// Ceiling runs one ceiling measurement. A result with Err set (and an
// error) is returned when the run failed after it started.
func Ceiling(cfg CeilingConfig) (*CeilingResult, error) {
	switch {
	case cfg.DSN == "":
		return nil, errors.New("--dsn is required")
	case !tableName.MatchString(cfg.Table):
		return nil, fmt.Errorf("bad table name %q", cfg.Table)
	case cfg.Rows < 1 || cfg.Rows > 1_000_000:
		return nil, fmt.Errorf("--rows %d out of range [1, 1000000]", cfg.Rows)
	case cfg.BodySize < markerLen || cfg.BodySize > 16<<20:
		return nil, fmt.Errorf("--body %d out of range [%d B, 16 MiB]", cfg.BodySize, markerLen)
	case cfg.Duration <= 0 || cfg.Duration > MaxDuration:
		return nil, fmt.Errorf("-d %s out of range (0, %s]", cfg.Duration, MaxDuration)
	}
	db, err := openCeilingDB(cfg.DSN)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	res := &CeilingResult{Command: cfg.Command, Table: cfg.Table, RowsPerTx: cfg.Rows, BodyBytes: cfg.BodySize,
		Duration: cfg.Duration.Seconds(), CPUPer1kRows: map[string]float64{}}
	for _, q := range []string{ceilingSession, ceilingCreate(cfg.Table)} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("%.40s...: %w", q, err)
		}
	}
	var localInfile string
	if err := c.QueryRowContext(ctx, "SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@local_infile").Scan(&res.Version, &res.FlushAtTrx, &localInfile); err != nil {
		return nil, fmt.Errorf("server variables: %w", err)
	}
	if localInfile != "1" && localInfile != "ON" {
		return nil, errors.New("the server has local_infile=OFF; LOAD DATA LOCAL needs it ON")
	}
	if err := c.QueryRowContext(ctx, "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?", cfg.Table).Scan(&res.Engine); err != nil {
		return nil, fmt.Errorf("table engine: %w", err)
	}
	if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM `"+cfg.Table+"`").Scan(&res.CountBefore); err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}

	rows := newCeilingRows(cfg.Rows, cfg.BodySize, rand.Uint64())
	name := "upsink_ceiling_" + strconv.FormatUint(ceilingSeq.Add(1), 10)
	mysql.RegisterReaderHandler(name, func() io.Reader {
		rows.rewind()
		return rows
	})
	defer mysql.DeregisterReaderHandler(name)
	load := "LOAD DATA LOCAL INFILE 'Reader::" + name + "' INTO TABLE `" + cfg.Table + "` CHARACTER SET binary" +
		` FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'` +
		` (stream, received_at, remote_addr, content_type, body)`

	txH := hdrhistogram.New(1, int64(MaxDuration/time.Microsecond), 3)
	loadH := hdrhistogram.New(1, int64(MaxDuration/time.Microsecond), 3)
	smp, err := StartSampler(SamplerConfig{Watch: cfg.Watch, Every: cfg.WatchEvery})
	if err != nil {
		return nil, err
	}
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	st0, stErr := ReadStatCPU()
	start := time.Now()
	end := start.Add(cfg.Duration)
	var runErr error
	for time.Now().Before(end) {
		t0 := time.Now()
		if runErr = ceilingTx(ctx, c, load, cfg.Rows, loadH); runErr != nil {
			break
		}
		_ = txH.RecordValue(max(time.Since(t0).Microseconds(), 1))
		res.Rows += int64(cfg.Rows)
		res.Transactions++
	}
	elapsed := time.Since(start)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	st1, stErr1 := ReadStatCPU()
	if stErr == nil && stErr1 == nil {
		res.Machine = machineBetween(st0, st1, elapsed)
	}
	sres := smp.Stop()
	res.Memory = sres.Procs
	res.CPU = cpuBetween(&ru0, &ru1, elapsed)
	res.Elapsed = elapsed.Seconds()
	res.StreamBytes = rows.bytes
	if s := elapsed.Seconds(); s > 0 {
		res.RowsPerSec = float64(res.Rows) / s
		res.TxPerSec = float64(res.Transactions) / s
	}
	res.TxLatency, res.LoadLatency = summarize(txH), summarize(loadH)
	if res.Rows > 0 {
		res.CPUPer1kRows["tool"] = (res.CPU.User + res.CPU.Sys) / float64(res.Rows) * 1000
		for _, m := range res.Memory {
			if m.Err == "" {
				res.CPUPer1kRows[m.Name] = m.CPU / float64(res.Rows) * 1000
			}
		}
	}
	// A failed transaction was rolled back (or its connection is gone):
	// count on a fresh connection if need be.
	if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM `"+cfg.Table+"`").Scan(&res.CountAfter); err != nil {
		cerr := fmt.Errorf("count after: %w", err)
		if c2, err2 := db.Conn(ctx); err2 == nil {
			cerr = c2.QueryRowContext(ctx, "SELECT COUNT(*) FROM `"+cfg.Table+"`").Scan(&res.CountAfter)
			c2.Close()
		}
		if cerr != nil {
			runErr = errors.Join(runErr, cerr)
		}
	}
	res.CountOK = res.CountAfter-res.CountBefore == res.Rows
	if runErr == nil && !res.CountOK {
		runErr = fmt.Errorf("COUNT(*) grew by %d, %d rows were committed", res.CountAfter-res.CountBefore, res.Rows)
	}
	if runErr != nil {
		res.Err = runErr.Error()
	}
	return res, runErr
}

// ceilingTx is one transaction: START TRANSACTION, the LOAD DATA, COMMIT.
func ceilingTx(ctx context.Context, c *sql.Conn, load string, n int, loadH *hdrhistogram.Histogram) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("start transaction: %w", err)
	}
	t0 := time.Now()
	r, err := tx.ExecContext(ctx, load)
	if err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("load data: %w", err)
	}
	_ = loadH.RecordValue(max(time.Since(t0).Microseconds(), 1))
	if k, err := r.RowsAffected(); err != nil || k != int64(n) {
		_ = tx.Rollback()
		return fmt.Errorf("load data: %d rows affected of %d (%v)", k, n, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func summarize(h *hdrhistogram.Histogram) Latency {
	return Latency{P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90), P99: h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9), Max: h.Max(), Mean: h.Mean(), N: h.TotalCount()}
}

// FormatCeiling writes the human-readable summary.
func FormatCeiling(w io.Writer, r *CeilingResult) {
	fmt.Fprintf(w, "ceiling: LOAD DATA LOCAL of %d-byte rows, %d rows per transaction, one connection, %gs into %s (%s; MariaDB %s, innodb_flush_log_at_trx_commit=%s)\n",
		r.BodyBytes, r.RowsPerTx, r.Duration, r.Table, r.Engine, r.Version, r.FlushAtTrx)
	fmt.Fprintf(w, "  rows/s        %.1f  (%d rows in %d transactions in %.2f s; %.1f transactions/s; %.1f MiB streamed)\n",
		r.RowsPerSec, r.Rows, r.Transactions, r.Elapsed, r.TxPerSec, float64(r.StreamBytes)/(1<<20))
	fmt.Fprintf(w, "  transaction   p50 %s  p99 %s  max %s  (LOAD DATA alone: p50 %s  p99 %s)\n",
		us(r.TxLatency.P50), us(r.TxLatency.P99), us(r.TxLatency.Max), us(r.LoadLatency.P50), us(r.LoadLatency.P99))
	ok := "= rows committed"
	if !r.CountOK {
		ok = "!= rows committed: MISMATCH"
	}
	fmt.Fprintf(w, "  COUNT(*)      %d -> %d (+%d %s)\n", r.CountBefore, r.CountAfter, r.CountAfter-r.CountBefore, ok)
	fmt.Fprintf(w, "  tool cpu      user %.2f s  sys %.2f s  = %.2f of %d cores; %.4f s per 1,000 rows (%.1f µs per row)\n",
		r.CPU.User, r.CPU.Sys, r.CPU.Cores, r.CPU.NCPU, r.CPUPer1kRows["tool"], r.CPUPer1kRows["tool"]*1000)
	for _, m := range r.Memory {
		fmt.Fprintf(w, "  watched       %s (pid %d): CPU %.2f s = %.2f cores; %.4f s per 1,000 rows (%.1f µs per row); peak RSS %s\n",
			m.Name, m.PID, m.CPU, m.Cores, r.CPUPer1kRows[m.Name], r.CPUPer1kRows[m.Name]*1000, MiB(m.PeakRSS))
		if m.Err != "" {
			fmt.Fprintf(w, "    sampling error: %s\n", m.Err)
		}
	}
	if m := r.Machine; m != nil {
		fmt.Fprintf(w, "  machine       %.2f cores busy (all processes, irq and softirq included), iowait %.2f, steal %.2f\n", m.Busy, m.IOWait, m.Steal)
	}
	if r.Err != "" {
		fmt.Fprintf(w, "  ERROR         %s\n", r.Err)
	}
}
