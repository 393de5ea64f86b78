// Package durable makes each upload durable, and says where: committed in
// MariaDB through the store (201, its row's id), or, when MariaDB cannot take
// it in time, appended to the local spool and fsync'd (202, its spool seq). It
// replays the spool into MariaDB when MariaDB answers again, and keeps the
// Idempotency-Keys of uploads in progress and of those waiting in the spool.
//
// # Where an upload goes
//
// Submit hands the upload to the store. It goes to the spool instead when the
// store refuses it (not ready: MariaDB unreachable or stalled; a database
// call outstanding past SpoolAfter; queue full), and later when the store
// hands it back not committed (a batch failed on the database's side, or it
// waited in the queue behind a call outstanding past SpoolAfter). Only
// failures that leave nothing committed are spooled (the store never reports
// a failure it is not sure of: see package store), so no upload is both
// spooled and committed by its first path. An upload the database refused
// for its own content, or whose key was used with another body, is answered
// so and never spooled.
//
// # Replay
//
// See replay.go: one goroutine feeds the spool to the store in seq order,
// in windows, while MariaDB is ready and the store's queue is short; each
// replayed batch records its seq range in the ledger in the same transaction
// as its rows, and the writer skips seqs the ledger already holds, so a crash
// at any instant neither loses nor doubles a row.
//
// # Idempotency-Key
//
// See keys.go: a key in progress on this instance is refused (409); a key
// waiting in the spool is answered from there (202, same seq); the store
// answers keys already committed (first answer or 422) in the batch
// transaction.
package durable

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"upsink/schema"
	"upsink/spool"
	"upsink/store"
)

var (
	// ErrAnswered: Submit answered the upload at once (u.Answer is set,
	// u.Replayed true): its key waits in the spool with the same body.
	ErrAnswered = errors.New("durable: answered from the idempotency key")
	// ErrKeyInProgress: an upload with the same key is in progress here.
	ErrKeyInProgress = errors.New("durable: idempotency key in progress")
	// ErrUnavailable: neither MariaDB nor the spool can take the upload now.
	ErrUnavailable = errors.New("durable: neither database nor spool can take the upload")
	// ErrKeyMismatch: the key was used before with another body (store.ErrKeyMismatch).
	ErrKeyMismatch = store.ErrKeyMismatch
)

// Config configures a Sink.
type Config struct {
	Store store.Config // OnDone, SpoolID and DivertAfter are set by the Sink
	Spool SpoolConfig
	// Upload maps a tag (Upload.Job.Tag) back to its Upload. Required.
	Upload func(tag uint64) *Upload
	// OnDone is called once for every Upload that Submit accepted (returned
	// nil), with its Answer or Err set, from the store's or the spool's
	// goroutines, one call at a time per goroutine. It must not block.
	OnDone func(u *Upload)
	Logger *slog.Logger
}

// SpoolConfig: where and when uploads are spooled. An empty Dir disables the
// spool: uploads MariaDB cannot take are refused.
type SpoolConfig struct {
	Dir      string
	MaxBytes int64         // default spool.DefaultMaxBytes(Dir): min(1 GiB, half the free space)
	After    time.Duration // spool an upload whose commit waits on a call outstanding this long; default 1 s
	// MaxKeys bounds the Idempotency-Keys remembered for spooled uploads;
	// past it a keyed upload that would be spooled is refused. Default 16,384.
	MaxKeys int
}

// Upload is one upload on its way. The caller fills Job (Stream,
// ContentType, RemoteAddr, ReceivedAt, Body, Tag and, for a keyed upload,
// IdemKey) and owns Upload and its slices; between a Submit that returned
// nil and OnDone only the Sink touches it.
type Upload struct {
	Job store.Job
	// Set before OnDone (or when Submit returns ErrAnswered):
	Answer   store.Answer // 201 + ID, or 202 + SpoolSeq; Status 0 on error
	Replayed bool         // Answer is the first answer of the upload's Idempotency-Key
	Err      error        // ErrUnavailable, ErrKeyMismatch or a *store.RejectedError

	keyed   bool // registered in the key table (in progress)
	keyHeld bool // spooled with a reservation in the key table: its retries are answered from there
}

// Sink routes uploads to MariaDB or the spool. See the package documentation.
type Sink struct {
	cfg  Config
	log  *slog.Logger
	st   *store.Store
	sp   *spool.Spool // nil without a spool
	keys keyTable
	rp   *replayer
	once sync.Once

	tables map[string]*schema.Table // cfg.Store.Tables by name, for replayed rows

	spoolFailed atomic.Int64 // unix nanos of the last failed spool append (full, no space); 0 = none
	failLogAt   atomic.Int64 // unix nanos of the last "spool append failed" line (the spool's writer goroutine only)
	failLogged  atomic.Int64 // failed appends since that line
	unkeyed     atomic.Uint64
}

const (
	defaultSpoolAfter = time.Second
	defaultMaxKeys    = 16384
)

// Open opens the spool (recovering it), rebuilds the keys of spooled
// uploads, opens the store and starts the replayer.
func Open(cfg Config) (*Sink, error) {
	if cfg.Upload == nil || cfg.OnDone == nil {
		return nil, errors.New("durable: Config.Upload and Config.OnDone are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Spool.After <= 0 {
		cfg.Spool.After = defaultSpoolAfter
	}
	if cfg.Spool.MaxKeys <= 0 {
		cfg.Spool.MaxKeys = defaultMaxKeys
	}
	k := &Sink{cfg: cfg, log: cfg.Logger.With("component", "durable")}
	k.keys.init(cfg.Spool.MaxKeys)
	k.tables = make(map[string]*schema.Table, len(cfg.Store.Tables))
	for _, t := range cfg.Store.Tables {
		k.tables[t.Name] = t
	}
	if cfg.Spool.Dir != "" {
		if err := os.MkdirAll(cfg.Spool.Dir, 0o750); err != nil {
			return nil, fmt.Errorf("durable: spool directory: %w", err)
		}
		max := cfg.Spool.MaxBytes
		if max == 0 {
			var err error
			if max, err = spool.DefaultMaxBytes(cfg.Spool.Dir); err != nil {
				return nil, fmt.Errorf("durable: spool size: %w", err)
			}
		}
		sp, err := spool.Open(cfg.Spool.Dir, spool.Options{MaxBytes: max, OnDone: k.spooled, Logger: cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("durable: %w", err)
		}
		k.sp = sp
		if err := k.keys.load(sp); err != nil {
			sp.Close()
			return nil, fmt.Errorf("durable: read the spool's keys: %w", err)
		}
		cfg.Store.SpoolID = sp.ID()
		cfg.Store.DivertAfter = cfg.Spool.After
	}
	cfg.Store.OnDone = k.stored
	if cfg.Store.Logger == nil {
		cfg.Store.Logger = cfg.Logger
	}
	st, err := store.Open(cfg.Store)
	if err != nil {
		if k.sp != nil {
			k.sp.Close()
		}
		return nil, fmt.Errorf("durable: %w", err)
	}
	k.st = st
	if k.sp != nil {
		k.rp = newReplayer(k)
		go k.rp.run()
	}
	return k, nil
}

// Submit starts making u durable. nil: OnDone will be called with u's
// answer. ErrAnswered: u.Answer is set now. Otherwise u was refused
// (ErrKeyInProgress, ErrKeyMismatch, ErrUnavailable) and is the caller's
// again. Any goroutine; it never blocks.
func (k *Sink) Submit(u *Upload) error {
	u.Answer, u.Replayed, u.Err, u.keyed = store.Answer{}, false, nil, false
	if len(u.Job.IdemKey) > 0 {
		u.Job.Fingerprint = sha256.Sum256(u.Job.Body)
		a, err := k.keys.begin(u)
		if err != nil {
			return err
		}
		if a.Status != 0 {
			u.Answer, u.Replayed = a, true
			return ErrAnswered
		}
		u.keyed = true
	}
	if err := k.st.Submit(&u.Job); err == nil {
		return nil
	}
	if err := k.toSpool(u); err != nil {
		k.keys.end(u)
		return err
	}
	return nil
}

// toSpool appends u to the spool; spooled (the spool's OnDone) answers it.
func (k *Sink) toSpool(u *Upload) error {
	if k.sp == nil {
		return ErrUnavailable
	}
	// Past MaxKeys a keyed upload is still spooled, its key not remembered
	// here: a retry of it would be spooled again (202 with another seq) and
	// found by MariaDB at replay, never stored twice.
	u.keyHeld = u.keyed && k.keys.reserve()
	if u.keyed && !u.keyHeld {
		k.unkeyed.Add(1)
	}
	j := &u.Job
	rec := recPool.Get().(*spool.Record)
	*rec = spool.Record{Stream: j.Stream, ContentType: j.ContentType, RemoteAddr: j.RemoteAddr,
		IdempotencyKey: j.IdemKey, ReceivedAt: j.ReceivedAt, Body: j.Body, Tag: j.Tag}
	if j.Table != nil { // rows of a declared table (j.Stream is its name)
		rec.Flags = spool.FlagRows
	}
	if err := k.sp.Append(rec); err != nil {
		putRecord(rec)
		if u.keyHeld {
			k.keys.unreserve()
			u.keyHeld = false
		}
		if !errors.Is(err, spool.ErrQueueFull) {
			k.spoolFailed.Store(time.Now().UnixNano())
		}
		return ErrUnavailable
	}
	return nil
}

// recPool holds the spool's view of uploads being spooled (kept out of
// Upload, which every request record embeds: only spooled uploads need one).
var recPool = sync.Pool{New: func() any { return new(spool.Record) }}

func putRecord(r *spool.Record) {
	*r = spool.Record{}
	recPool.Put(r)
}

// stored is the store's OnDone.
func (k *Sink) stored(batch []*store.Job) {
	for _, j := range batch {
		if j.Tag&replayTag != 0 {
			k.rp.done(j)
			continue
		}
		u := k.cfg.Upload(j.Tag)
		switch {
		case j.Err == nil && j.Prior.Status != 0:
			u.Answer, u.Replayed = j.Prior, true
		case j.Err == nil:
			u.Answer = store.Answer{Status: 201, ID: j.ID}
		case retryable(j.Err):
			// Nothing of it was committed: the spool may take it.
			if k.toSpool(u) == nil {
				continue // answered by spooled
			}
			u.Err = ErrUnavailable
		default:
			u.Err = j.Err // refused for its content, or its key's other body
		}
		k.keys.end(u)
		k.cfg.OnDone(u)
	}
}

// retryable reports whether a job the store handed back failed on the
// database's side with nothing of it committed: it may be spooled, or
// (replayed) submitted again. A refused row or a key's other body is not.
func retryable(err error) bool {
	return errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrBusy) || errors.Is(err, store.ErrClosed)
}

// spooled is the spool's OnDone.
func (k *Sink) spooled(batch []*spool.Record) {
	for _, r := range batch {
		u := k.cfg.Upload(r.Tag)
		seq, err := r.Seq, r.Err
		putRecord(r)
		switch {
		case err == nil && u.keyHeld:
			u.Answer = store.Answer{Status: 202, SpoolSeq: seq}
			k.keys.spooled(u, seq)
		case err == nil:
			u.Answer = store.Answer{Status: 202, SpoolSeq: seq}
			k.keys.end(u)
		default:
			now := time.Now().UnixNano()
			k.spoolFailed.Store(now)
			// At most one line a second: a full or broken disk must not
			// turn a flood of uploads into a flood of log lines.
			if n := k.failLogged.Add(1); now-k.failLogAt.Load() >= int64(time.Second) {
				k.failLogAt.Store(now)
				k.failLogged.Store(0)
				k.log.Warn("durable: spool append failed: upload refused", "err", err, "refused_since_last_line", n)
			}
			if u.keyHeld {
				k.keys.unreserve()
			}
			u.Err = ErrUnavailable
			k.keys.end(u)
		}
		u.keyHeld = false
		k.cfg.OnDone(u)
	}
	if k.rp != nil {
		k.rp.wake()
	}
}

// Ready reports whether an upload can be made durable now: MariaDB is ready,
// or the spool has room.
func (k *Sink) Ready() bool {
	return k.st.Ready() || k.spoolReady()
}

// spoolReady: the spool has room, and no append failed in the last second
// (a full filesystem is only found by writing; one second later uploads are
// let through again to find out whether it still is).
func (k *Sink) spoolReady() bool {
	if k.sp == nil {
		return false
	}
	if t := k.spoolFailed.Load(); t != 0 && time.Since(time.Unix(0, t)) < spoolRetry {
		return false
	}
	max := k.sp.MaxBytes()
	return k.sp.Used() < max-max/64
}

// spoolRetry is how long a failed append makes the spool not ready.
const spoolRetry = time.Second

// Status is what /readyz reports.
type Status struct {
	Ready    bool
	Database bool        // the store is ready
	Nodes    []string    // the database node each store writer is connected to ("" none)
	Spool    bool        // a spool is configured
	Backlog  spool.Stats // the spool's backlog (when Spool)
	// UnkeyedSpooled counts keyed uploads spooled past SpoolConfig.MaxKeys
	// since Open, whose keys were not remembered here.
	UnkeyedSpooled uint64
}

// BacklogAge is how long the oldest spooled upload not yet replayed has
// waited, in seconds (0 when none).
func (s Status) BacklogAge() float64 {
	if s.Backlog.Oldest.IsZero() {
		return 0
	}
	return max(time.Since(s.Backlog.Oldest).Seconds(), 0)
}

// Status returns the sink's state.
func (k *Sink) Status() Status {
	s := Status{Database: k.st.Ready(), Nodes: k.st.Nodes(), Spool: k.sp != nil}
	if k.sp != nil {
		s.Backlog = k.sp.Stats()
	}
	s.Ready = s.Database || k.spoolReady()
	s.UnkeyedSpooled = k.unkeyed.Load()
	return s
}

// Store returns the store (for stats).
func (k *Sink) Store() *store.Store { return k.st }

// Spool returns the spool, nil without one (for stats and tests).
func (k *Sink) Spool() *spool.Spool { return k.sp }

// Close stops the replayer, closes the store (every job it holds is committed,
// or spooled, or failed) and then the spool (everything appended is
// fsync'd and stays for the next Open). Idempotent.
func (k *Sink) Close() error {
	var err error
	k.once.Do(func() {
		if k.rp != nil {
			k.rp.stop()
		}
		err = k.st.Close()
		if k.rp != nil {
			k.rp.wait()
		}
		if k.sp != nil {
			if e := k.sp.Close(); e != nil && err == nil {
				err = e
			}
		}
	})
	return err
}
