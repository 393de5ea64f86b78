// Package store is upsink's only path to MariaDB: a few writer goroutines,
// each on its pinned connection, fed by one bounded queue, each writing
// whatever is queued when it is free as one batch in one transaction (group
// commit).
//
// # Writing a batch
//
// Submit puts a *Job on a buffered channel and never blocks. A free writer
// (Config.Writers of them, default 1) takes the first job, drains whatever
// else is queued (up to MaxBatchRows rows and MaxBatchBytes body bytes) and
// writes it in one transaction on its pinned connection, while another
// writer can load the next batch (InnoDB merges the two commits' log
// flushes):
//
//	UPDATE upsink_ids ... LAST_INSERT_ID(...)   -- a block of ids, now and then, in its own transaction (ids.go)
//	START TRANSACTION; LOAD DATA LOCAL INFILE 'Reader::upsink_batch_N' INTO TABLE uploads (id, ...)
//	BEGIN NOT ATOMIC ... END; INSERT INTO upsink_batches VALUES (batch_id, first, n, NOW(6), ...); COMMIT
//
// Two round trips (multi-statements, batch.go): the compound statement
// fails the batch if the LOAD left warnings (LOCAL implies IGNORE, so bad data
// only warns), and nothing after it runs; the ledger row is written in the
// rows' transaction. On a Galera node each statement goes alone, and the
// warnings are read with SELECT @@warning_count (five round trips): there a
// transaction can be aborted by a replicated one, and that error can be lost
// inside a compound statement.
//
// The file is rendered on the fly from the jobs by a reader registered once
// per writer with the driver's RegisterReaderHandler (see tsv.go), so a
// batch costs a fixed 16 KiB packet buffer however large it is. The driver
// needs no allowAllFiles for Reader:: names; the server needs
// local_infile=ON, which the writer checks at connect (MariaDB's default). A
// zero Job.ReceivedAt is stored as the time the batch was taken from the
// queue.
//
// IDs are chosen by upsink from blocks (ids.go): a batch's rows of one table
// get consecutive ids, written in the LOAD stream, known before COMMIT and
// unique across writers, instances and Galera nodes; the server's
// auto-increment settings are left alone. RowsAffected==n is checked inside
// the transaction; a mismatch rolls back and fails the batch. Acknowledgements
// need no order across writers: each job waits only for its own batch.
//
// # Unknown outcomes
//
// A job is acknowledged (Err==nil) only once its batch is known to be committed.
// An error returned before COMMIT was sent cannot have committed anything (the
// transaction is explicit and database/sql never re-executes statements on a
// *sql.Conn), so the batch is rolled back and retried once. Once the last
// round trip (which carries COMMIT) has been sent, any error leaves the
// outcome unknown, except two the server sends only for a transaction that
// did not commit: the warning check's own (nothing after it ran) and a
// deadlock or certification failure (1213). The writer then discards the
// connection and, on a fresh one:
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
// clients retry and duplicate rows, acknowledging it would be a guess. Only
// Close ends the wait: the jobs then get ErrOutcomeUnknown, neither retried
// nor spooled (a process stopping with the database away must still stop;
// its clients' connections are already closed, unanswered). Jobs
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
// # Several nodes
//
// Config.DSNs may name several nodes of one Galera cluster. Each writer
// connects to the first that answers and is a synced member of the primary
// component, and moves on when its node fails (nodes.go). A certification
// failure (1213, also at COMMIT) is a known failure: the server rolled the
// transaction back, and the batch is retried up to maxCertRetries more times.
// An unknown outcome is resolved as above, preferring the batch's node: if
// that node is gone, on another node once the old one has left the primary
// component, with a causal read (wsrep_sync_wait) of the ledger.
//
// # Where things are
//
//	store.go    Config, Job, Store: Open, Submit, Ready, Close, Stats
//	writer.go   a writer goroutine: idle ticks, gathering a batch, retry, hand-back
//	batch.go    one batch transaction and the ledger row
//	ids.go      blocks of ids for rows and batches
//	nodes.go    connecting to a node, its checks, fencing a dropped session
//	recover.go  unknown outcomes: ask the ledger
//	watchdog.go stalls: not ready and queued jobs failed while calls hang
//	orphans.go  rows a failed batch leaves in a non-transactional table
//	idem.go     Idempotency-Keys and the spool's replayed ranges
//	rows.go     structured ingest: a table's rows in one LOAD
//	bisect.go   one bad row: splitting the batch
//	schema.go   DSN, session setup, the tables
//	tsv.go      the batch rendered as the LOAD DATA file
//
// # Batch ids
//
// Batch ids come from the same blocks (counter "/batch"), so they are unique
// across writers, instances and restarts.
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
	// DSNs are the database servers to write to, in order of preference, in
	// go-sql-driver form (the store adds what it needs, e.g. parseTime and
	// interpolateParams=false, itself); all name one database. Several are
	// nodes of one Galera cluster: each writer uses the first that answers
	// and is a synced member of the primary component, and moves on when
	// its node fails (see "Several nodes"). DSN is shorthand for one.
	DSNs []string
	DSN  string
	// Writers is how many connections write batches at once (default 1).
	// With more, one batch loads while another commits; on the 2-core
	// machine of BENCHMARKS.md ("Writers") 2 and 4 were slower than 1 (the
	// batches get smaller and the CPU is shared), so more is opt-in.
	Writers       int
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
	// ErrOutcomeUnknown: the store was closed while a batch's outcome was
	// unknown and the database could not be asked: its rows may or may
	// not be committed. Neither retried nor spooled (that could store them
	// twice); a spool replay's records stay in the spool (the ledger's seq
	// ranges settle them at the next replay).
	ErrOutcomeUnknown = errors.New("store: closed with the batch's outcome unknown")
	ErrBusy           = errors.New("store: database call outstanding past DivertAfter")
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
	defaultWriters       = 1
	maxWriters           = 16
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
//
// Its fields are set by Open and read by every goroutine; the atomics and
// counters are shared by the writers, the watchdog and the callers of
// Submit, Ready and Stats.
type Store struct {
	cfg     Config
	log     *slog.Logger
	nodes   []*node // one per DSN, in order of preference
	queue   chan *Job
	hooks   *testHooks
	writers []*writer

	mu     sync.RWMutex // Submit holds it shared while sending; Close exclusively while closing queue
	closed bool

	stalled   atomic.Bool // every writer has had a call outstanding past StallAfter (set by the watchdog, cleared by a writer's success)
	diverting atomic.Bool // every writer has had a call outstanding past DivertAfter (set by the watchdog, cleared by busy/idle)
	done      chan struct{}
	closeErr  error // set before done is closed

	doneMu    sync.Mutex // held around each OnDone call (writers and watchdog)
	epoch     time.Time  // monotonic reference for the writers' busySince
	stopWatch chan struct{}
	watchDone chan struct{}

	batches, rowsDone, failed, recovered atomic.Uint64
	rejected, prior, split, pruned       atomic.Uint64
}

// node is one database server of Config.DSNs. Read-only after Open.
type node struct {
	db   *sql.DB
	addr string // host:port or socket path, for logs and Store.Nodes
}

// session identifies a server session: which node, which run of that
// server, which connection, and (on Galera) which cluster member.
type session struct {
	node  int    // index into Store.nodes
	start int64  // server start time (unix s), from its uptime
	id    uint64 // CONNECTION_ID()
	uuid  string // wsrep_gcomm_uuid of a Galera node; "" without wsrep
}

// writer is one pinned connection and the batch it is writing; Config.Writers
// of them take batches from the one queue, so one batch can load while
// another commits. Owned by its goroutine, except busySince, up and curConn
// (read by the watchdog, Ready and tests) and readers the driver calls on
// that same goroutine.
type writer struct {
	*Store
	num int // 0..Writers-1; writer 0 also prunes

	busySince atomic.Int64  // since epoch (+1) when the writer's current database call began; 0 = none
	up        atomic.Bool   // connected, and its last database call succeeded
	curConn   atomic.Uint64 // CONNECTION_ID() of conn, for tests
	curNode   atomic.Int32  // index of conn's node; -1 = none

	readerName string // the driver's Reader:: handler names of rd and rows
	rowsName   string
	loadSQL    string
	tables     map[*schema.Table]*tableLoad

	conn        *sql.Conn
	sess        session  // conn's session
	stale       session  // a dropped connection's session that may still run on its server; fenced before the next batch (id 0: none)
	staleCommit bool     // stale's last batch had COMMIT in flight (an unknown outcome)
	galera      bool     // conn's server runs wsrep
	batchIDs    idBlock  // batch ids (ids.go)
	uploadIDs   idBlock  // ids of rows of uploads
	batch       []*Job   // jobs drained for the current batch, handed to OnDone
	valid       []*Job   // the part of batch that goes to the database
	load        []*Job   // of the current attempt's uploads, those loaded as rows of uploads (idem.go)
	ids         []uint64 // per job of the current attempt: the id of its (first) row once loaded
	group       []*Job   // one table's jobs being loaded (rows.go)
	groupAt     []int    // their indices in the attempt's jobs
	rows        rowsReader
	verdicts    []verdict
	priors      []Answer
	sameAs      []int32
	lastPrune   time.Time
	spill       []*Job // jobs failed fast while resolving an unknown outcome
	carry       *Job   // drained but did not fit in the previous batch
	lastBatch   int    // jobs in the previous batch
	gather      *time.Timer
	qclosed     bool // the queue channel is closed and empty
	lastOK      time.Time
	backoff     time.Duration
	rd          tsvReader
	sqlBuf      []byte
	pre         []byte // statements waiting to go in front of the next one (batch.go)
	txOpen      bool   // a START TRANSACTION was sent and no COMMIT or ROLLBACK since
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
	beforeLoad   func(w *writer)       // just before the uploads' LOAD (with START TRANSACTION in front) is sent
	afterLoad    func(w *writer) error // after the LOADs, before the last round trip (the last check, the ledger insert, COMMIT)
	beforeCommit func(w *writer)       // just before COMMIT is sent
	afterCommit  func(w *writer) error // after COMMIT returned OK; an error means "the reply was lost"
	connect      func(w *writer) error // before each connect; an error means "database unreachable"
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
	if cfg.DSN != "" {
		if len(cfg.DSNs) > 0 {
			return nil, errors.New("store: Config.DSN and Config.DSNs both set")
		}
		cfg.DSNs = []string{cfg.DSN}
	}
	if len(cfg.DSNs) == 0 {
		return nil, errors.New("store: no DSN")
	}
	if cfg.Writers < 0 || cfg.Writers > maxWriters {
		return nil, fmt.Errorf("store: Writers %d outside 1..%d", cfg.Writers, maxWriters)
	}
	if cfg.Writers == 0 {
		cfg.Writers = defaultWriters
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
	s := &Store{
		cfg:       cfg,
		log:       log,
		queue:     make(chan *Job, cfg.QueueLen),
		hooks:     hooks,
		done:      make(chan struct{}),
		epoch:     time.Now(),
		stopWatch: make(chan struct{}),
		watchDone: make(chan struct{}),
	}
	if s.hooks == nil {
		s.hooks = &testHooks{}
	}
	dbName := ""
	for i, dsn := range cfg.DSNs {
		n, name, err := openNode(dsn, cfg.Writers, log)
		if err == nil && i > 0 && name != dbName {
			err = fmt.Errorf("store: DSN %d names database %q, the first names %q: all must name one database", i+1, name, dbName)
		}
		if err != nil {
			for _, n := range s.nodes {
				n.db.Close()
			}
			return nil, err
		}
		dbName = name
		s.nodes = append(s.nodes, n)
	}
	for i := range cfg.Writers {
		w, err := s.newWriter(i)
		if err != nil {
			s.deregister()
			for _, n := range s.nodes {
				n.db.Close()
			}
			return nil, err
		}
		s.writers = append(s.writers, w)
	}
	go s.watch()
	var wg sync.WaitGroup
	for _, w := range s.writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}
	go func() {
		wg.Wait()
		close(s.stopWatch)
		<-s.watchDone
		s.deregister()
		for _, n := range s.nodes {
			if err := n.db.Close(); err != nil && s.closeErr == nil {
				s.closeErr = fmt.Errorf("store: close: %w", err)
			}
		}
		close(s.done)
	}()
	return s, nil
}

// newWriter makes writer num with its reader handlers registered.
func (s *Store) newWriter(num int) (*writer, error) {
	w := &writer{
		Store:      s,
		num:        num,
		readerName: "upsink_batch_" + strconv.FormatUint(readerSeq.Add(1), 10),
		rowsName:   "upsink_rows_" + strconv.FormatUint(readerSeq.Add(1), 10),
		batch:      make([]*Job, 0, s.cfg.MaxBatchRows),
		valid:      make([]*Job, 0, s.cfg.MaxBatchRows),
		backoff:    minBackoff,
		gather:     time.NewTimer(time.Hour),
	}
	w.gather.Stop()
	w.curNode.Store(-1)
	if err := w.initTables(); err != nil {
		return nil, err
	}
	rr := &w.rows
	mysql.RegisterReaderHandler(w.rowsName, func() io.Reader {
		rr.rewind()
		return rr
	})
	w.loadSQL = "LOAD DATA LOCAL INFILE 'Reader::" + w.readerName + `' INTO TABLE uploads CHARACTER SET binary` +
		` FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'` +
		` (id, stream, received_at, remote_addr, content_type, body)`
	rd := &w.rd
	mysql.RegisterReaderHandler(w.readerName, func() io.Reader {
		rd.rewind()
		return rd
	})
	return w, nil
}

// deregister removes the writers' reader handlers from the driver.
func (s *Store) deregister() {
	for _, w := range s.writers {
		mysql.DeregisterReaderHandler(w.readerName)
		mysql.DeregisterReaderHandler(w.rowsName)
	}
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
	if !s.Ready() {
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
func (s *Store) Ready() bool {
	if s.stalled.Load() {
		return false
	}
	for _, w := range s.writers {
		if w.up.Load() {
			return true
		}
	}
	return false
}

// Nodes returns the address of the node each writer is connected to now
// ("" for a writer without a connection), in writer order.
func (s *Store) Nodes() []string {
	out := make([]string, len(s.writers))
	for i, w := range s.writers {
		if n := w.curNode.Load(); n >= 0 {
			out[i] = s.nodes[n].addr
		}
	}
	return out
}

// Close stops accepting jobs, finishes every job already submitted (each is
// committed or failed and handed to OnDone) and closes the database. It is
// idempotent. Against a stalled or unreachable database it returns once the
// call in progress has hit the driver's read/write deadline (5 s by default),
// the batch's one retry has failed to connect (within the connect timeout,
// 5 s) and at most one more idle reconnect attempt has failed: about 15 s
// with the defaults. Jobs still queued are failed at once. If a batch's
// outcome is unknown (COMMIT was sent) and the database cannot be asked,
// Close does not wait for it: the batch's jobs get ErrOutcomeUnknown, which
// is no answer either way (the server has closed their connections by
// then), and the ledger keeps the truth for whoever looks (see the package
// documentation). A database that answers settles the batch first.
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

// closing reports whether Close has been called.
func (s *Store) closing() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
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

// connectionIDs are the writers' current CONNECTION_ID()s (0: none), for tests.
func (s *Store) connectionIDs() []uint64 {
	out := make([]uint64, len(s.writers))
	for i, w := range s.writers {
		out[i] = w.curConn.Load()
	}
	return out
}
