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
// The same kill, and the wait, happen at every reconnect after a connection was
// dropped without a clean close, known failures included: a session left
// behind may still run a statement of the failed batch and hold its locks
// (a LOAD holds the table's AUTO-INC lock), or, after a stall, still receive
// bytes in flight. Nothing is done on the new connection until it is gone.
//
// # Stalls
//
// A server that stops answering (SIGSTOP, a blackholed route, a lock that is
// not released) is noticed in two ways. The driver's per-read and per-write
// deadlines (readTimeout/writeTimeout, 5 s unless the DSN sets them; see
// defaultReadTimeout for why that suits a healthy 8 MiB batch) end the call
// that waits: before COMMIT was sent that is a known failure (the session's
// open transaction is never committed, as no COMMIT was sent: the server rolls
// it back when the session ends or is killed), after it an unknown outcome,
// resolved as above. And a watchdog goroutine sees any database call of the
// writer outstanding for Config.StallAfter (2 s): Ready turns false at once
// (Submit refuses, /readyz says 503) and every job waiting in the queue is
// failed with ErrUnavailable, and again while the stall lasts, so no upload
// waits behind the stalled batch. The batch itself is answered by the writer
// alone, only with what is known. Idle pings time out after StallAfter.
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
// # Where things are
//
//	store.go    Config, Job, Store: Open, Submit, Ready, Close, Stats
//	writer.go   the writer goroutine: idle ticks, gathering a batch, retry, hand-back
//	batch.go    one batch transaction and the ledger row
//	recover.go  unknown outcomes: kill the old session, ask the ledger
//	watchdog.go stalls: not ready and queued jobs failed while a call hangs
//	orphans.go  rows a failed batch leaves in a non-transactional table
//	schema.go   DSN, connect, session setup, the tables
//	tsv.go      the batch rendered as the LOAD DATA file
//
// # Batch ids
//
// batch_id = startup unix seconds << 32 | sequence. The writer also raises the
// next id to MAX(batch_id)+1 of the ledger on every connect, so ids stay unique
// across restarts even if the clock went back or two processes started in the
// same second (one writer at a time is assumed throughout).
package store

import (
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"upsink/schema"
)

// Config configures a Store. Zero values select the defaults.
type Config struct {
	DSN           string        // go-sql-driver form; the store adds what it needs (e.g. parseTime, interpolateParams=false, the reader handler name) itself
	QueueLen      int           // bounded queue capacity in jobs; default 4096
	MaxBatchRows  int           // default 1000
	MaxBatchBytes int           // sum of body bytes per batch; default 8 MiB
	RetryAfter    time.Duration // (informational for callers) default 1s
	Logger        *slog.Logger  // default slog.Default()
	StallAfter    time.Duration // a database call outstanding this long makes the store not ready and fails queued jobs; default 2s (see "Stalls" in the package doc)
	// DivertAfter: while a database call has been outstanding this long,
	// Submit refuses (ErrBusy) and queued jobs are handed back with
	// ErrBusy, so the caller can make them durable elsewhere (the spool).
	// Default: StallAfter (no earlier diversion). See "Stalls".
	DivertAfter time.Duration
	// IdempotencyTTL is how long an Idempotency-Key and its answer are kept
	// (upsink_idem), and the batch ledger with them; default 24h, at least
	// a minute. Both are pruned in bounded batches when the writer is idle.
	IdempotencyTTL time.Duration
	// SpoolID identifies the spool whose records are replayed through this
	// store (Job.SpoolSeq); it keys their ranges in the ledger. Required
	// when any job carries a SpoolSeq.
	SpoolID string
	// Tables are the declared tables of structured ingest (jobs with a
	// Table must point to one of them). Their tables are created at
	// connect when missing.
	Tables []*schema.Table
	// Observe, when set, is called by the writer after each committed
	// batch with its rows, its body bytes and how long it took (attempts and
	// unknown-outcome resolution included); it must not block.
	Observe func(rows, bytes int, d time.Duration)
	OnDone  func(batch []*Job) // called once per finished batch after every job's ID/Err is set, by the writer goroutine or (jobs failed while the database stalls) its watchdog, one call at a time; must not block; must not retain the slice
}

// Job is one upload. The caller owns it and its byte slices until OnDone hands it back; the store only reads them.
type Job struct {
	Stream      []byte
	ContentType []byte
	RemoteAddr  []byte    // "ip:port" text
	ReceivedAt  time.Time // stored as UTC DATETIME(6)
	Body        []byte
	Tag         uint64 // opaque to the store; the caller's handle
	// Table is set for structured ingest: Body then holds Rows rows for it
	// (rows.go), ID is the id of the first, and Stream is the table's name
	// (kept with the rows if they are spooled).
	Table *schema.Table
	Rows  int
	// IdemKey is the upload's Idempotency-Key (empty: none) and Fingerprint
	// the SHA-256 of its body (set by the caller when IdemKey is). The key
	// is scoped to the stream; see idem.go.
	IdemKey     []byte
	Fingerprint [32]byte
	// SpoolSeq > 0 marks a record replayed from the spool Config.SpoolID:
	// its seq is recorded in the ledger in the same transaction as its row.
	// SpoolAnswer is the answer its client got (202 with that seq), stored
	// with its key.
	SpoolSeq uint64
	// Set by the writer before OnDone:
	ID  uint64 // id of the committed row (0 on error)
	Err error  // nil = committed durably (or Prior); otherwise why not — never nil unless committed
	// Prior is set (Err nil) when the key was already committed with the
	// same body: no row was written, and Prior is the first answer.
	Prior Answer
}

// Answer is what an upload's client was told: 201 with the row's id, or
// 202 with the spool seq it was appended at. Status 0 = none.
type Answer struct {
	Status   uint16
	ID       uint64
	SpoolSeq uint64
}

var (
	ErrQueueFull   = errors.New("store: queue full")
	ErrUnavailable = errors.New("store: database unavailable")
	ErrClosed      = errors.New("store: closed")
	ErrBusy        = errors.New("store: database call outstanding past DivertAfter")
	// ErrKeyMismatch: the Idempotency-Key was already used with a different body.
	ErrKeyMismatch = errors.New("store: idempotency key reused with a different body")
)

// RejectedError is a job's Err when the database refused that row itself
// (its batch was split until only it failed; see bisect.go). Retrying it
// cannot succeed.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return "store: row refused by the database: " + e.Reason }

// Stats are cumulative counters since Open, plus the current queue length.
type Stats struct {
	Batches   uint64 // batches committed
	Rows      uint64 // rows committed: one per upload, Rows per ingest job
	Failed    uint64 // jobs handed back with ErrUnavailable
	Recovered uint64 // batches whose outcome was unknown and was resolved through the ledger
	Rejected  uint64 // jobs refused by the database alone (after bisecting their batch)
	Prior     uint64 // jobs answered from their Idempotency-Key's first answer, no row written
	Split     uint64 // batches split in two because one of their rows was refused
	Pruned    uint64 // idempotency keys and ledger rows pruned after IdempotencyTTL
	QueueLen  int    // jobs waiting in the queue now
}

const (
	defaultQueueLen      = 4096
	defaultMaxBatchRows  = 1000
	defaultMaxBatchBytes = 8 << 20
	defaultRetryAfter    = time.Second
	defaultDialTimeout   = 2 * time.Second
	defaultStallAfter    = 2 * time.Second
	defaultIdemTTL       = 24 * time.Hour
	minIdemTTL           = time.Minute
	// The driver's per-read and per-write deadlines (readTimeout and
	// writeTimeout in the DSN, which override these). They bound how long
	// the server may stay silent within one statement, not the statement:
	// a LOAD DATA is streamed in 16 KiB packets, each write its own
	// deadline, and the reply after the last packet only waits for the rows
	// still buffered. The longest healthy silence is a COMMIT's log flush
	// (one fsync of at most ~8 MiB of redo for the largest batch), well
	// under a second on a working disk; 5 s leaves room for a slow one while
	// a stopped or blackholed server is noticed within seconds.
	defaultReadTimeout  = 5 * time.Second
	defaultWriteTimeout = 5 * time.Second
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

	ready     atomic.Bool
	diverting atomic.Bool   // a database call has been outstanding past DivertAfter (set by the watchdog, cleared by busy/idle)
	curConn   atomic.Uint64 // CONNECTION_ID() of the writer's connection, for tests
	done      chan struct{}
	closeErr  error // set by the writer before done is closed

	doneMu    sync.Mutex   // held around each OnDone call (writer and watchdog)
	epoch     time.Time    // monotonic reference for busySince
	busySince atomic.Int64 // since epoch (+1) when the writer's current database call began; 0 = none
	stopWatch chan struct{}
	watchDone chan struct{}

	batches, rowsDone, failed, recovered atomic.Uint64
	rejected, prior, split, pruned       atomic.Uint64

	// Owned by the writer goroutine.
	conn        *sql.Conn
	connID      uint64 // CONNECTION_ID() of conn
	serverStart int64  // server start time (unix s) as seen on conn
	staleID     uint64 // session of a dropped connection that may still run on the server; killed at the next connect
	staleStart  int64  // its server's start time
	nextBatch   uint64
	batch       []*Job   // jobs drained for the current batch, handed to OnDone
	valid       []*Job   // the part of batch that goes to the database
	load        []*Job   // of the current attempt's uploads, those loaded as rows of uploads (idem.go)
	ids         []uint64 // per job of the current attempt: the id of its (first) row once loaded
	group       []*Job   // one table's jobs being loaded (rows.go)
	groupAt     []int    // their indices in the attempt's jobs
	tables      map[*schema.Table]*tableLoad
	rowsName    string
	rows        rowsReader
	verdicts    []verdict
	priors      []Answer
	sameAs      []int32
	lastPrune   time.Time
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
	if cfg.QueueLen < 0 || cfg.MaxBatchRows < 0 || cfg.MaxBatchBytes < 0 || cfg.RetryAfter < 0 || cfg.StallAfter < 0 {
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
	if cfg.StallAfter == 0 {
		cfg.StallAfter = defaultStallAfter
	}
	if cfg.DivertAfter <= 0 || cfg.DivertAfter > cfg.StallAfter {
		cfg.DivertAfter = cfg.StallAfter
	}
	if cfg.IdempotencyTTL == 0 {
		cfg.IdempotencyTTL = defaultIdemTTL
	}
	if cfg.IdempotencyTTL < minIdemTTL {
		return nil, fmt.Errorf("store: IdempotencyTTL %s is below %s", cfg.IdempotencyTTL, minIdemTTL)
	}
	if cfg.SpoolID != "" && !validSpoolID(cfg.SpoolID) {
		return nil, fmt.Errorf("store: SpoolID %q is not 32 hex digits", cfg.SpoolID)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "store")
	db, err := openDB(cfg.DSN, log)
	if err != nil {
		return nil, err
	}

	s := &Store{
		cfg:        cfg,
		log:        log,
		db:         db,
		queue:      make(chan *Job, cfg.QueueLen),
		readerName: "upsink_batch_" + strconv.FormatUint(readerSeq.Add(1), 10),
		hooks:      hooks,
		done:       make(chan struct{}),
		epoch:      time.Now(),
		stopWatch:  make(chan struct{}),
		watchDone:  make(chan struct{}),
		nextBatch:  uint64(uint32(time.Now().Unix())) << 32,
		batch:      make([]*Job, 0, cfg.MaxBatchRows),
		valid:      make([]*Job, 0, cfg.MaxBatchRows),
		backoff:    minBackoff,
	}
	if s.hooks == nil {
		s.hooks = &testHooks{}
	}
	s.rowsName = "upsink_rows_" + strconv.FormatUint(readerSeq.Add(1), 10)
	if err := s.initTables(); err != nil {
		db.Close()
		return nil, err
	}
	rr := &s.rows
	mysql.RegisterReaderHandler(s.rowsName, func() io.Reader {
		rr.rewind()
		return rr
	})
	s.loadSQL = "LOAD DATA LOCAL INFILE 'Reader::" + s.readerName + `' INTO TABLE uploads CHARACTER SET binary` +
		` FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'` +
		` (stream, received_at, remote_addr, content_type, body)`
	rd := &s.rd
	mysql.RegisterReaderHandler(s.readerName, func() io.Reader {
		rd.rewind()
		return rd
	})
	go s.watch()
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
	if s.diverting.Load() {
		return ErrBusy
	}
	select {
	case s.queue <- j:
		return nil
	default:
		return ErrQueueFull
	}
}

// Ready reports whether the writer's connection answers (refreshed by every
// batch and by a ping about every second when idle). It turns false when the
// connection is lost and when a database call has been outstanding for
// Config.StallAfter.
func (s *Store) Ready() bool { return s.ready.Load() }

// Close stops accepting jobs, finishes every job already submitted (each is
// committed or failed and handed to OnDone) and closes the database. It is
// idempotent. Against a stalled or unreachable database it returns once the
// call in progress has hit the driver's read/write deadline (5 s by default),
// the batch's one retry has failed to connect (within the connect timeout,
// 5 s) and at most one more idle reconnect attempt has failed: about 15 s
// with the defaults. Jobs still queued are failed at once. The one exception: if
// a batch's outcome is unknown (COMMIT was sent), Close waits until the
// database answers and the ledger tells, because any answer before that
// would be a guess (see the package documentation).
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
		Rows:      s.rowsDone.Load(),
		Failed:    s.failed.Load(),
		Recovered: s.recovered.Load(),
		Rejected:  s.rejected.Load(),
		Prior:     s.prior.Load(),
		Split:     s.split.Load(),
		Pruned:    s.pruned.Load(),
		QueueLen:  len(s.queue),
	}
}

func (s *Store) connectionID() uint64 { return s.curConn.Load() }
