// Package store is upsink's only path to MariaDB: one writer goroutine on one pinned connection, fed by a bounded
// queue, writing whatever is queued when it is free as one batch in one transaction (group commit).
//
// # Writing a batch
//
// Submit puts a *Job on a buffered channel and never blocks. The writer
// goroutine takes the first job, drains whatever else is queued (up to
// MaxBatchRows rows and MaxBatchBytes body bytes) and writes it in one
// transaction on its pinned connection:
//
//	START TRANSACTION
//	LOAD DATA LOCAL INFILE 'Reader::upsink_batch_N' INTO TABLE uploads ...
//	SELECT LAST_INSERT_ID(), @@warning_count -- first id; warnings must be 0: LOCAL implies IGNORE, so bad data only warns
//	SELECT MAX(id) FROM uploads    -- must be first+n-1
//	INSERT INTO upsink_batches VALUES (batch_id, first, n, NOW(6))   -- the ledger
//	COMMIT
//
// The file is rendered on the fly from the jobs by a reader registered once per
// Store with the driver's RegisterReaderHandler (see tsv.go), so a batch costs a
// fixed 16 KiB packet buffer however large it is. The driver needs no
// allowAllFiles for Reader:: names; the server needs local_infile=ON, which the
// writer checks at connect (MariaDB's default). A zero Job.ReceivedAt is stored
// as the time the batch was taken from the queue.
//
// IDs: after LOAD DATA, LAST_INSERT_ID() is the id of the first row. With a single
// writer, auto_increment_increment=1 and innodb_autoinc_lock_mode<=1 (LOAD DATA
// is a "bulk insert" there and holds the table's AUTO-INC lock for the whole
// statement) the rows get first..first+n-1 in file order, so job i gets
// first+i. RowsAffected==n and MAX(id)==first+n-1 are checked inside the
// transaction; any mismatch rolls back and fails the batch.
//
// # Unknown outcomes
//
// A job is acknowledged (Err==nil) only once its batch is known to be committed.
// An error returned before COMMIT was sent cannot have committed anything (the
// transaction is explicit and database/sql never re-executes statements on a
// *sql.Conn or *sql.Tx), so the batch is rolled back and retried once. Once
// COMMIT has been sent, any error (including the COMMIT call's own) leaves the
// outcome unknown. The writer then discards the connection and, on a fresh one:
//
//  1. KILLs the old session if the server is the same instance (same start
//     time) and waits until it has left the process list: from then on the old
//     transaction is finished one way or the other and can no longer commit
//     behind our back (a COMMIT still in a socket buffer, for example);
//  2. looks the batch_id up in the ledger, which was written in the same
//     transaction as the rows: found means committed (IDs come from the
//     ledger's first_id), absent means nothing was committed and the batch is
//     retried once.
//
// While the database cannot answer, the writer keeps probing with backoff (up
// to ~1 s) and does not report the batch either way: failing it would make
// clients retry and duplicate rows, acknowledging it would be a guess. Jobs
// queued meanwhile are failed fast with ErrUnavailable, and Submit rejects new
// ones because Ready() is false. Each resolution counts in Stats.Recovered.
//
// On a non-transactional engine (Aria, the tight profile) acknowledgements stay
// correct: the ledger row is written only after all rows are loaded and checked,
// so "ledger row present" still implies "rows present". What is lost is the
// rollback: a batch that fails after its LOAD leaves rows nobody acknowledged.
// The writer deletes them by id range (the LOAD told it the range; the engine
// is detected at connect), at once or right after reconnecting. Only when the
// connection dies during the LOAD itself (range unknown), or the process or
// server crashes in between, do they stay behind, and the client's retry makes
// them duplicates. InnoDB has none of this.
//
// # Batch ids
//
// batch_id = startup unix seconds << 32 | sequence. The writer also raises the
// next id to MAX(batch_id)+1 of the ledger on every connect, so ids stay unique
// across restarts even if the clock went back or two processes started in the
// same second (one writer at a time is assumed throughout).
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Config configures a Store. Zero values select the defaults.
type Config struct {
	DSN           string             // go-sql-driver form; the store adds what it needs (e.g. parseTime, interpolateParams=false, the reader handler name) itself
	QueueLen      int                // bounded queue capacity in jobs; default 4096
	MaxBatchRows  int                // default 1000
	MaxBatchBytes int                // sum of body bytes per batch; default 8 MiB
	RetryAfter    time.Duration      // (informational for callers) default 1s
	Logger        *slog.Logger       // default slog.Default()
	OnDone        func(batch []*Job) // called on the writer goroutine once per finished batch, after every job's ID/Err is set; must not block; must not retain the slice
}

// Job is one upload. The caller owns it and its byte slices until OnDone hands it back; the store only reads them.
type Job struct {
	Stream      []byte
	ContentType []byte
	RemoteAddr  []byte    // "ip:port" text
	ReceivedAt  time.Time // stored as UTC DATETIME(6)
	Body        []byte
	Tag         uint64 // opaque to the store; the caller's handle
	// Set by the writer before OnDone:
	ID  uint64 // auto-increment id of the committed row (0 on error)
	Err error  // nil = committed durably; otherwise ErrUnavailable (db down / batch failed, nothing committed) — never nil unless committed
}

var (
	ErrQueueFull   = errors.New("store: queue full")
	ErrUnavailable = errors.New("store: database unavailable")
	ErrClosed      = errors.New("store: closed")
)

// Stats are cumulative counters since Open, plus the current queue length.
type Stats struct {
	Batches   uint64 // batches committed
	Rows      uint64 // rows committed (= jobs acknowledged)
	Failed    uint64 // jobs handed back with ErrUnavailable
	Recovered uint64 // batches whose outcome was unknown and was resolved through the ledger
	QueueLen  int    // jobs waiting in the queue now
}

const (
	defaultQueueLen      = 4096
	defaultMaxBatchRows  = 1000
	defaultMaxBatchBytes = 8 << 20
	defaultRetryAfter    = time.Second
	defaultDialTimeout   = 2 * time.Second
)

// Timing of the writer; variables so tests can shorten them.
var (
	idlePing       = time.Second // ping the idle connection this often
	minBackoff     = 50 * time.Millisecond
	maxBackoff     = time.Second      // reconnect / ledger probe backoff cap
	connectTimeout = 5 * time.Second  // connect + session setup + schema
	batchTimeout   = 60 * time.Second // one batch transaction, COMMIT included
	lookupTimeout  = 10 * time.Second // kill old session + wait + ledger lookup
)

var readerSeq atomic.Uint64

// Store is upsink's writer. See the package documentation.
type Store struct {
	cfg        Config
	log        *slog.Logger
	db         *sql.DB
	queue      chan *Job
	readerName string
	loadSQL    string
	hooks      *testHooks

	mu     sync.RWMutex // Submit holds it shared while sending; Close exclusively while closing queue
	closed bool

	ready    atomic.Bool
	curConn  atomic.Uint64 // CONNECTION_ID() of the writer's connection, for tests
	done     chan struct{}
	closeErr error // set by the writer before done is closed

	batches, rows, failed, recovered atomic.Uint64

	// Owned by the writer goroutine.
	conn        *sql.Conn
	connID      uint64 // CONNECTION_ID() of conn
	serverStart int64  // server start time (unix s) as seen on conn
	nextBatch   uint64
	batch       []*Job // jobs drained for the current batch, handed to OnDone
	valid       []*Job // the part of batch that goes to the database
	spill       []*Job // jobs failed fast while resolving an unknown outcome
	carry       *Job   // drained but did not fit in the previous batch
	qclosed     bool   // the queue channel is closed and empty
	lastOK      time.Time
	backoff     time.Duration
	rd          tsvReader
	sqlBuf      []byte
	// Non-transactional engine (Aria in the tight profile): ROLLBACK does not
	// undo the LOAD, so a failed batch deletes its own rows when it can.
	nonTx       bool
	loadedFirst uint64 // rows first..first+loadedN-1 were loaded by the current attempt
	loadedN     uint64
	orphanFirst uint64 // rows of a failed attempt still to be deleted (non-transactional engine)
	orphanN     uint64
}

// testHooks let tests inject failures at precise points of a batch transaction.
// An error returned by a hook is treated like an error of the statement it follows.
type testHooks struct {
	afterLoad    func(s *Store) error // after the LOAD DATA checks, before the ledger insert
	beforeCommit func(s *Store)       // just before COMMIT is sent
	afterCommit  func(s *Store) error // after COMMIT returned OK; an error means "the reply was lost"
	connect      func() error         // before each connect; an error means "database unreachable"
}

// Open validates cfg and starts the writer. It does not fail when the database
// is unreachable: the writer connects in the background, creates the tables if
// missing and keeps retrying; Ready reports when it is up.
func Open(cfg Config) (*Store, error) { return open(cfg, nil) }

func open(cfg Config, hooks *testHooks) (*Store, error) {
	if cfg.OnDone == nil {
		return nil, errors.New("store: Config.OnDone is required")
	}
	if cfg.QueueLen < 0 || cfg.MaxBatchRows < 0 || cfg.MaxBatchBytes < 0 || cfg.RetryAfter < 0 {
		return nil, errors.New("store: negative Config value")
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = defaultQueueLen
	}
	if cfg.MaxBatchRows == 0 {
		cfg.MaxBatchRows = defaultMaxBatchRows
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = defaultMaxBatchBytes
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = defaultRetryAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	mc, err := mysql.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("store: parse DSN: %w", err)
	}
	if mc.DBName == "" {
		return nil, errors.New("store: DSN names no database")
	}
	mc.ParseTime = true
	mc.InterpolateParams = false // nothing user-supplied is ever interpolated; bodies travel in the LOAD DATA stream
	mc.AllowAllFiles = false     // Reader:: handlers need no file allowlist
	mc.Loc = time.UTC
	if mc.Timeout == 0 {
		mc.Timeout = defaultDialTimeout
	}
	log := cfg.Logger.With("component", "store")
	mc.Logger = driverLogger{log}
	connector, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, fmt.Errorf("store: DSN: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)

	s := &Store{
		cfg:        cfg,
		log:        log,
		db:         db,
		queue:      make(chan *Job, cfg.QueueLen),
		readerName: "upsink_batch_" + strconv.FormatUint(readerSeq.Add(1), 10),
		hooks:      hooks,
		done:       make(chan struct{}),
		nextBatch:  uint64(uint32(time.Now().Unix())) << 32,
		batch:      make([]*Job, 0, cfg.MaxBatchRows),
		valid:      make([]*Job, 0, cfg.MaxBatchRows),
		backoff:    minBackoff,
	}
	if s.hooks == nil {
		s.hooks = &testHooks{}
	}
	s.loadSQL = "LOAD DATA LOCAL INFILE 'Reader::" + s.readerName + `' INTO TABLE uploads CHARACTER SET binary` +
		` FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'` +
		` (stream, received_at, remote_addr, content_type, body)`
	rd := &s.rd
	mysql.RegisterReaderHandler(s.readerName, func() io.Reader {
		rd.rewind()
		return rd
	})
	go s.run()
	return s, nil
}

// Submit queues j without blocking. It returns ErrClosed after Close,
// ErrUnavailable while !Ready(), ErrQueueFull when the queue is full; nil means
// the job will be handed to OnDone exactly once.
func (s *Store) Submit(j *Job) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if !s.ready.Load() {
		return ErrUnavailable
	}
	select {
	case s.queue <- j:
		return nil
	default:
		return ErrQueueFull
	}
}

// Ready reports whether the writer's connection answers (refreshed by every
// batch and by a ping about every second when idle).
func (s *Store) Ready() bool { return s.ready.Load() }

// Close stops accepting jobs, finishes every job already submitted (each is
// committed or failed and handed to OnDone) and closes the database. It is
// idempotent. If a batch's outcome is unknown and the database stays down,
// Close waits until it answers (see the package documentation).
func (s *Store) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.queue)
	}
	s.mu.Unlock()
	<-s.done
	return s.closeErr
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	return Stats{
		Batches:   s.batches.Load(),
		Rows:      s.rows.Load(),
		Failed:    s.failed.Load(),
		Recovered: s.recovered.Load(),
		QueueLen:  len(s.queue),
	}
}

// run is the writer goroutine.
func (s *Store) run() {
	defer close(s.done)
	timer := time.NewTimer(0) // connect right away
	defer timer.Stop()
	for {
		var first *Job
		switch {
		case s.carry != nil:
			first, s.carry = s.carry, nil
		case s.qclosed:
			s.shutdown()
			return
		default:
			select {
			case j, ok := <-s.queue:
				if !ok {
					s.qclosed = true
					continue
				}
				first = j
			case <-timer.C:
				timer.Reset(s.tick())
				continue
			}
		}
		s.collect(first)
		s.handle()
		if s.conn != nil {
			timer.Reset(idlePing)
		} else {
			timer.Reset(s.backoff)
		}
	}
}

// tick runs when the writer has been idle: it (re)connects or pings, and
// returns when to tick next.
func (s *Store) tick() time.Duration {
	if s.conn == nil {
		if err := s.connect(); err != nil {
			s.log.Warn("store: database unreachable", "err", err, "retry_in", s.backoff)
			d := s.backoff
			s.backoff = min(2*s.backoff, maxBackoff)
			return d
		}
		return idlePing
	}
	if time.Since(s.lastOK) >= idlePing-idlePing/10 {
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		err := s.conn.PingContext(ctx)
		cancel()
		if err != nil {
			s.log.Warn("store: ping failed", "err", err)
			s.dropConn()
			s.backoff = minBackoff
			return 0
		}
		s.lastOK = time.Now()
		s.ready.Store(true)
	}
	return idlePing
}

// collect fills s.batch starting with first, draining the queue without
// blocking up to the batch limits.
func (s *Store) collect(first *Job) {
	s.batch = append(s.batch[:0], first)
	size := len(first.Body)
	for len(s.batch) < s.cfg.MaxBatchRows && !s.qclosed {
		select {
		case j, ok := <-s.queue:
			if !ok {
				s.qclosed = true
				return
			}
			if size+len(j.Body) > s.cfg.MaxBatchBytes {
				s.carry = j
				return
			}
			s.batch = append(s.batch, j)
			size += len(j.Body)
		default:
			return
		}
	}
}

// handle writes s.batch, sets every job's result and hands the batch to OnDone.
func (s *Store) handle() {
	now := time.Now()
	s.valid = s.valid[:0]
	for _, j := range s.batch {
		j.ID, j.Err = 0, nil
		if err := validate(j); err != nil {
			s.log.Error("store: job rejected", "tag", j.Tag, "err", err)
			j.Err = ErrUnavailable
			s.failed.Add(1)
			continue
		}
		s.valid = append(s.valid, j)
	}
	if len(s.valid) > 0 {
		if s.conn == nil {
			s.fail(s.valid) // fail fast while the database is down
		} else {
			s.write(s.valid, now)
		}
	}
	s.cfg.OnDone(s.batch)
	clear(s.batch) // do not keep bodies alive until the next batch
	clear(s.valid)
	s.batch, s.valid = s.batch[:0], s.valid[:0]
}

func (s *Store) fail(jobs []*Job) {
	for _, j := range jobs {
		j.ID, j.Err = 0, ErrUnavailable
	}
	s.failed.Add(uint64(len(jobs)))
}

// validate rejects jobs the table cannot hold exactly (in a LOAD DATA LOCAL
// they would only raise warnings, failing the whole batch).
func validate(j *Job) error {
	if len(j.Stream) > 64 || !isASCII(j.Stream) {
		return errors.New("stream longer than 64 bytes or not ASCII")
	}
	if len(j.RemoteAddr) > 64 || !isASCII(j.RemoteAddr) {
		return errors.New("remote address longer than 64 bytes or not ASCII")
	}
	if len(j.ContentType) > 255 {
		return errors.New("content type longer than 255 bytes")
	}
	if !j.ReceivedAt.IsZero() {
		if y := j.ReceivedAt.UTC().Year(); y < 1000 || y > 9999 {
			return errors.New("received_at outside years 1000..9999")
		}
	}
	return nil
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// write commits jobs as one batch, resolving unknown outcomes through the
// ledger, and sets every job's ID/Err.
func (s *Store) write(jobs []*Job, now time.Time) {
	for attempt := 0; ; attempt++ {
		// A fresh batch id per attempt: on a non-transactional engine a failed
		// attempt may have left its ledger row behind.
		id := s.nextBatch
		s.nextBatch++
		oldID, oldStart := s.connID, s.serverStart
		first, err, unknown := s.attempt(id, jobs, now)
		if unknown {
			s.log.Warn("store: batch outcome unknown, resolving via ledger", "batch", id, "rows", len(jobs), "err", err)
			s.dropConn()
			var committed bool
			first, committed = s.resolve(id, len(jobs), oldID, oldStart)
			s.recovered.Add(1)
			s.log.Info("store: batch outcome resolved", "batch", id, "committed", committed, "first_id", first)
			if committed {
				err = nil
			} else if s.nonTx && s.loadedN > 0 {
				s.orphanFirst, s.orphanN = s.loadedFirst, s.loadedN
				s.deleteOrphans()
			}
		}
		if err == nil {
			for i, j := range jobs {
				j.ID, j.Err = first+uint64(i), nil
			}
			s.batches.Add(1)
			s.rows.Add(uint64(len(jobs)))
			s.lastOK = time.Now()
			s.ready.Store(true)
			return
		}
		s.log.Error("store: batch failed", "batch", id, "rows", len(jobs), "attempt", attempt+1, "err", err)
		if attempt == 0 {
			if s.conn == nil {
				if cerr := s.connect(); cerr != nil {
					s.log.Warn("store: reconnect failed", "err", cerr)
				}
			}
			if s.conn != nil {
				continue // nothing was committed: retry once
			}
		}
		s.fail(jobs)
		return
	}
}

// attempt runs one batch transaction. unknown reports that COMMIT may have
// been executed although an error came back. On a known failure the
// transaction is rolled back and, if the connection may be broken, dropped.
func (s *Store) attempt(id uint64, jobs []*Job, now time.Time) (first uint64, err error, unknown bool) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	tx, err := s.conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, s.abort(nil, fmt.Errorf("store: begin: %w", err)), false
	}
	n := uint64(len(jobs))
	s.loadedFirst, s.loadedN = 0, 0
	s.rd.reset(jobs, now)
	res, err := tx.ExecContext(ctx, s.loadSQL)
	s.rd.reset(nil, time.Time{})
	if err != nil {
		return 0, s.abort(tx, fmt.Errorf("store: load batch: %w", err)), false
	}
	affected, err := res.RowsAffected()
	if err != nil {
		return 0, s.abort(tx, fmt.Errorf("store: load batch: rows affected: %w", err)), false
	}
	// The OK packet of LOAD DATA carries no insert id; LAST_INSERT_ID() has the
	// first one. Neither it nor @@warning_count resets the warning list (only
	// statements that use tables do), so both are read in one round trip.
	var warnings int
	if err := tx.QueryRowContext(ctx, "SELECT LAST_INSERT_ID(), @@warning_count").Scan(&first, &warnings); err != nil {
		return 0, s.abort(tx, fmt.Errorf("store: load batch: insert id: %w", err)), false
	}
	if first != 0 {
		s.loadedFirst, s.loadedN = first, uint64(affected)
	}
	if uint64(affected) != n || first == 0 {
		return 0, s.abort(tx, fmt.Errorf("store: load batch: %d rows affected, first id %d, want %d rows", affected, first, n)), false
	}
	if warnings != 0 {
		return 0, s.abort(tx, loadWarning(ctx, tx, warnings)), false
	}
	var maxID uint64
	if err := tx.QueryRowContext(ctx, "SELECT MAX(id) FROM uploads").Scan(&maxID); err != nil {
		return 0, s.abort(tx, fmt.Errorf("store: check ids: %w", err)), false
	}
	if maxID != first+n-1 {
		return 0, s.abort(tx, fmt.Errorf("store: check ids: max id %d, want %d (first %d + %d rows): ids not contiguous", maxID, first+n-1, first, n)), false
	}
	if h := s.hooks.afterLoad; h != nil {
		if err := h(s); err != nil {
			return 0, s.abort(tx, fmt.Errorf("store: after load (test hook): %w", err)), false
		}
	}
	b := append(s.sqlBuf[:0], "INSERT INTO upsink_batches (batch_id, first_id, row_count, committed_at) VALUES ("...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, first, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, n, 10)
	b = append(b, ",NOW(6))"...)
	s.sqlBuf = b
	if _, err := tx.ExecContext(ctx, string(b)); err != nil {
		return 0, s.abort(tx, fmt.Errorf("store: ledger insert: %w", err)), false
	}
	if h := s.hooks.beforeCommit; h != nil {
		h(s)
	}
	// From here on the outcome of any error is unknown: COMMIT may have run.
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("store: commit: %w", err), true
	}
	if h := s.hooks.afterCommit; h != nil {
		if err := h(s); err != nil {
			return 0, fmt.Errorf("store: commit (test hook): %w", err), true
		}
	}
	return first, nil, false
}

// loadWarning builds the error for a LOAD DATA that raised warnings: with
// LOCAL the server cannot stop the transfer, so it treats data errors
// (truncation, bad values) as warnings even in strict mode. Any warning fails
// the batch.
func loadWarning(ctx context.Context, tx *sql.Tx, count int) error {
	var level, msg string
	var code int
	if err := tx.QueryRowContext(ctx, "SHOW WARNINGS LIMIT 1").Scan(&level, &code, &msg); err != nil {
		return fmt.Errorf("store: load batch: %d warnings (show warnings: %w)", count, err)
	}
	return fmt.Errorf("store: load batch: %d warnings, first: %s %d: %s", count, level, code, msg)
}

// abort rolls tx back after a failure that happened before COMMIT was sent and
// drops the connection unless the server still answers. It returns cause.
// On a non-transactional engine the rollback leaves the loaded rows in place,
// so abort deletes them (they were never acknowledged; left behind they would
// become duplicates when the client retries), at once or, if the connection is
// gone, right after the next connect.
func (s *Store) abort(tx *sql.Tx, cause error) error {
	// The connection still works if the server answered: the ROLLBACK, or
	// (no transaction yet) the failed statement with an error of its own.
	var me *mysql.MySQLError
	alive := errors.As(cause, &me)
	if tx != nil {
		alive = tx.Rollback() == nil
	}
	if !alive {
		s.dropConn()
	}
	if s.nonTx && s.loadedN > 0 {
		if s.orphanN > 0 {
			s.log.Error("store: rows of a failed batch left in a non-transactional table", "first_id", s.orphanFirst, "rows", s.orphanN)
		}
		s.orphanFirst, s.orphanN = s.loadedFirst, s.loadedN
		s.deleteOrphans()
	}
	s.loadedFirst, s.loadedN = 0, 0
	return cause
}

// deleteOrphans deletes the rows of a failed attempt on a non-transactional
// engine, if there is a connection; otherwise (or on error) they stay pending
// for the next connect. The range holds only ids that attempt's LOAD returned,
// which no one else can own, so deleting them is safe from any session.
func (s *Store) deleteOrphans() {
	if s.orphanN == 0 || s.conn == nil {
		return
	}
	b := append(s.sqlBuf[:0], "DELETE FROM uploads WHERE id BETWEEN "...)
	b = strconv.AppendUint(b, s.orphanFirst, 10)
	b = append(b, " AND "...)
	b = strconv.AppendUint(b, s.orphanFirst+s.orphanN-1, 10)
	s.sqlBuf = b
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	if _, err := s.conn.ExecContext(ctx, string(b)); err != nil {
		s.log.Error("store: could not delete the rows of a failed batch yet", "first_id", s.orphanFirst, "rows", s.orphanN, "err", err)
		return
	}
	s.log.Info("store: deleted the rows of a failed batch (non-transactional engine)", "first_id", s.orphanFirst, "rows", s.orphanN)
	s.orphanFirst, s.orphanN = 0, 0
}

// connect opens the pinned connection, sets the session up and creates the
// tables if missing.
func (s *Store) connect() error {
	if h := s.hooks.connect; h != nil {
		if err := h(); err != nil {
			return fmt.Errorf("store: connect (test hook): %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	c, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store: connect: %w", err)
	}
	if err := s.setup(ctx, c); err != nil {
		_ = c.Raw(func(any) error { return driver.ErrBadConn })
		_ = c.Close()
		return err
	}
	s.conn = c
	s.backoff = minBackoff
	s.lastOK = time.Now()
	s.log.Info("store: connected", "conn_id", s.connID)
	s.deleteOrphans()
	s.ready.Store(true)
	return nil
}

const (
	createUploads = `CREATE TABLE IF NOT EXISTS uploads (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  stream VARCHAR(64) CHARACTER SET ascii NOT NULL,
  received_at DATETIME(6) NOT NULL,
  remote_addr VARCHAR(64) CHARACTER SET ascii NOT NULL,
  content_type VARBINARY(255) NOT NULL,
  body LONGBLOB NOT NULL)`
	createLedger = `CREATE TABLE IF NOT EXISTS upsink_batches (
  batch_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  first_id BIGINT UNSIGNED NOT NULL,
  row_count INT UNSIGNED NOT NULL,
  committed_at DATETIME(6) NOT NULL)`
)

func (s *Store) setup(ctx context.Context, c *sql.Conn) error {
	if _, err := c.ExecContext(ctx, "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone='+00:00', auto_increment_increment=1, auto_increment_offset=1"); err != nil {
		return fmt.Errorf("store: session setup: %w", err)
	}
	var id uint64
	var start int64
	var localInfile int
	if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID(), CAST(UNIX_TIMESTAMP() AS SIGNED) - CAST(VARIABLE_VALUE AS SIGNED), @@GLOBAL.local_infile"+
		" FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='UPTIME'").Scan(&id, &start, &localInfile); err != nil {
		return fmt.Errorf("store: session id: %w", err)
	}
	if localInfile == 0 {
		// The driver always offers LOCAL INFILE (and needs no allowAllFiles
		// for Reader:: names); the server must accept it.
		return errors.New("store: the server has local_infile=OFF; upsink writes with LOAD DATA LOCAL and needs it ON")
	}
	for _, q := range []string{createUploads, createLedger} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("store: create tables: %w", err)
		}
	}
	var txCapable string
	err := c.QueryRowContext(ctx, "SELECT e.TRANSACTIONS FROM information_schema.TABLES t JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE"+
		" WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = 'uploads'").Scan(&txCapable)
	if err != nil {
		return fmt.Errorf("store: table engine: %w", err)
	}
	if nonTx := txCapable != "YES"; nonTx != s.nonTx || s.connID == 0 {
		s.nonTx = nonTx
		if nonTx {
			s.log.Warn("store: uploads uses a non-transactional engine: a batch that fails after its LOAD cannot be rolled back; its rows are deleted when the connection still works")
		}
	}
	var maxBatch uint64
	if err := c.QueryRowContext(ctx, "SELECT COALESCE(MAX(batch_id), 0) FROM upsink_batches").Scan(&maxBatch); err != nil {
		return fmt.Errorf("store: read ledger: %w", err)
	}
	if maxBatch >= s.nextBatch {
		s.nextBatch = maxBatch + 1
	}
	s.connID, s.serverStart = id, start
	s.curConn.Store(id)
	return nil
}

// dropConn discards the pinned connection (it is closed, not returned to the pool).
func (s *Store) dropConn() {
	if s.conn == nil {
		return
	}
	_ = s.conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = s.conn.Close()
	s.conn = nil
	s.ready.Store(false)
}

// resolve finds out whether batch id committed after an unknown outcome. It
// does not return until the database has answered; meanwhile jobs arriving in
// the queue are failed fast. On return s.conn is a fresh connection.
func (s *Store) resolve(id uint64, n int, oldID uint64, oldStart int64) (first uint64, committed bool) {
	backoff := minBackoff
	for {
		if s.conn == nil {
			if err := s.connect(); err != nil {
				s.log.Warn("store: ledger lookup waiting for database", "batch", id, "err", err, "retry_in", backoff)
				s.failQueued()
				time.Sleep(backoff)
				backoff = min(2*backoff, maxBackoff)
				continue
			}
		}
		first, committed, err := s.lookup(id, n, oldID, oldStart)
		if err == nil {
			return first, committed
		}
		s.log.Warn("store: ledger lookup failed", "batch", id, "err", err, "retry_in", backoff)
		var me *mysql.MySQLError
		if !errors.As(err, &me) {
			s.dropConn()
		}
		s.failQueued()
		time.Sleep(backoff)
		backoff = min(2*backoff, maxBackoff)
	}
}

// lookup makes sure the old session is gone and reads the ledger.
func (s *Store) lookup(id uint64, n int, oldID uint64, oldStart int64) (first uint64, committed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	// Same server instance (start times agree up to rounding)? Then the old
	// session may still exist: kill it and wait until it has left. After a
	// restart it is gone and its id may belong to someone else.
	if oldID != 0 && oldID != s.connID && s.serverStart-oldStart <= 2 && oldStart-s.serverStart <= 2 {
		_, err := s.conn.ExecContext(ctx, "KILL CONNECTION "+strconv.FormatUint(oldID, 10))
		var me *mysql.MySQLError
		if err != nil && !(errors.As(err, &me) && (me.Number == 1094 || me.Number == 1095)) { // no such thread / not ours
			return 0, false, fmt.Errorf("store: kill old session %d: %w", oldID, err)
		}
		q := "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID=" + strconv.FormatUint(oldID, 10)
		for {
			var cnt int
			if err := s.conn.QueryRowContext(ctx, q).Scan(&cnt); err != nil {
				return 0, false, fmt.Errorf("store: wait for old session %d: %w", oldID, err)
			}
			if cnt == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return 0, false, fmt.Errorf("store: old session %d still present: %w", oldID, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	var rowCount int
	err = s.conn.QueryRowContext(ctx, "SELECT first_id, row_count FROM upsink_batches WHERE batch_id="+strconv.FormatUint(id, 10)).Scan(&first, &rowCount)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("store: ledger lookup: %w", err)
	case rowCount != n:
		// Cannot happen with unique batch ids; never acknowledge on it.
		s.log.Error("store: ledger row does not match batch", "batch", id, "rows", n, "ledger_rows", rowCount)
		return 0, false, nil
	}
	return first, true, nil
}

// failQueued fails every job waiting in the queue right now (used while the
// database is down during a resolution, so clients are not kept waiting).
func (s *Store) failQueued() {
	s.spill = s.spill[:0]
	if s.carry != nil {
		s.spill = append(s.spill, s.carry)
		s.carry = nil
	}
	for !s.qclosed && len(s.spill) < s.cfg.MaxBatchRows {
		select {
		case j, ok := <-s.queue:
			if !ok {
				s.qclosed = true
				continue
			}
			s.spill = append(s.spill, j)
			continue
		default:
		}
		break
	}
	if len(s.spill) == 0 {
		return
	}
	s.fail(s.spill)
	s.cfg.OnDone(s.spill)
	clear(s.spill)
	s.spill = s.spill[:0]
}

// shutdown runs on the writer after the queue is closed and drained.
func (s *Store) shutdown() {
	s.ready.Store(false)
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
	mysql.DeregisterReaderHandler(s.readerName)
	if err := s.db.Close(); err != nil {
		s.closeErr = fmt.Errorf("store: close: %w", err)
	}
}

// driverLogger routes the driver's own messages (e.g. broken pipes it then
// reports as errors) to slog instead of its default stderr logger.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) { l.log.Warn("store: mysql driver", "msg", fmt.Sprint(v...)) }

func (s *Store) connectionID() uint64 { return s.curConn.Load() }
