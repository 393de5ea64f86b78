package spool

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	ErrFull      = errors.New("spool: full")             // MaxBytes reached: nothing appended
	ErrQueueFull = errors.New("spool: queue full")       // the writer's queue is at QueueLen or QueueBytes
	ErrTooLarge  = errors.New("spool: record too large") // larger than a segment, or a field longer than the format allows
	ErrNoSpace   = errors.New("spool: filesystem full")  // ENOSPC or EDQUOT from the filesystem (the OS error is wrapped too)
	ErrClosed    = errors.New("spool: closed")
	ErrLocked    = errors.New("spool: directory in use by another spool")
	ErrCorrupt   = errCorrupt
)

// FlagRows marks a record whose Body is rows for the table named by Stream
// (structured ingest: LOAD DATA text, one line per row) rather than one
// upload's body.
const FlagRows uint8 = 1

// Record is one upload. For Append the caller fills the metadata and Body and
// owns the record and its slices until OnDone hands it back; meanwhile only
// the writer goroutine touches it (it reads the fields and sets Seq and Err),
// and the caller must not change it. A Reader hands out records whose slices
// point into its buffer, valid until its next call.
type Record struct {
	Stream         []byte
	ContentType    []byte
	RemoteAddr     []byte    // "ip:port" text
	IdempotencyKey []byte    // may be empty
	ReceivedAt     time.Time // stored as unix nanoseconds; zero is stored as the time of the write
	Body           []byte
	Flags          uint8  // FlagRows or 0; stored
	Tag            uint64 // opaque to the spool: the caller's handle; not stored

	// Set by the spool before OnDone (and by a Reader):
	Seq uint64 // the record's spool_seq; 0 on error
	Err error  // nil = appended and fsync'd; otherwise nothing of it is on disk

	size int64 // encoded length, set by Append
}

// Options configure a Spool. Zero values select the defaults. Open copies
// them; they are read-only afterwards.
type Options struct {
	MaxBytes     int64 // total bytes of live segment files, queued records included; default 1 GiB (see DefaultMaxBytes)
	SegmentBytes int64 // a segment is closed before it would exceed this; also the largest record; default 64 MiB, at most MaxBytes/4
	QueueLen     int   // records waiting for the writer; default 4096
	QueueBytes   int64 // their encoded bytes; default 16 MiB (one record larger than this is taken when the queue is empty)
	// OnDone is called by the writer goroutine once per group of appended
	// records, after the fsync that covers them (or after their failure),
	// with every record's Seq and Err set. It must not block, must not
	// retain the slice (the records are the caller's again) and must not call
	// Close; it may call Append and Ack.
	OnDone func(batch []*Record)
	Logger *slog.Logger // default slog.Default()
}

const (
	defaultMaxBytes     = 1 << 30
	defaultSegmentBytes = 64 << 20
	defaultQueueLen     = 4096
	defaultQueueBytes   = 16 << 20
	minSegmentBytes     = headerSize + 1
	idFile              = "spool.id"
)

// Stats describe the spool at one instant (a value, owned by the caller). The backlog (Records, Bytes, Oldest) is the
// durable records not yet acknowledged with Ack; it is computed from counters
// kept per segment, without reading the disk.
type Stats struct {
	Records uint64    // backlog: records appended (fsync'd) and not yet acknowledged
	Bytes   int64     // backlog: their bytes on disk; exact to within indexEvery (128 KiB) when Ack stopped inside a segment
	Oldest  time.Time // backlog: ReceivedAt of its first record (to within indexEvery, erring older); zero when empty
	LastSeq uint64    // the last seq given to a durable record (after Open: the highest ever seen); 0 if none
	Acked   uint64    // the highest seq acknowledged

	DiskBytes int64 // bytes of live segment files (acknowledged records not yet deleted included)
	Segments  int   // live segment files
	QueueLen  int   // records waiting for the writer

	Appended uint64 // records appended since Open
	Failed   uint64 // records handed back with an error since Open
	Fsyncs   uint64 // fsyncs of segment data since Open (group fsync: many records per fsync)
	Dropped  uint64 // intact records dropped at Open because they followed a corrupt one in their segment
}

// Spool is a durable append-only log of uploads in segment files under one
// directory. See the package documentation.
//
// Goroutines: Append, Ack, Stats, NewReader, ID and Close may be called from
// any goroutine. One writer goroutine (writer.go) owns the active segment
// file and the fields in w; OnDone runs on it.
type Spool struct {
	dir  string
	opt  Options
	log  *slog.Logger
	id   string
	dirf *os.File // the locked directory; fsync'd after segments are created
	open openFunc
	page int64

	// MaxBytes account: bytes of live segment files plus bytes of records
	// queued or being written. Append adds, the writer subtracts what it
	// fails to write, Ack subtracts deleted segments.
	used atomic.Int64

	// The queue. Append adds under qmu; the writer swaps pending out.
	qmu     sync.Mutex
	pending []*Record
	qbytes  int64
	closing bool
	wake    chan struct{} // capacity 1: "pending or ackRotate changed"

	ackRotate atomic.Bool // Ack asks the writer to close a fully acknowledged active segment

	// Segment state shared by the writer, Ack, Stats and readers.
	mu      sync.Mutex
	segs    []*segment // ascending by base; the last is the active segment
	acked   uint64
	lastSeq uint64
	stopped bool // the writer has exited (Close)

	appended, failed, fsyncs, dropped atomic.Uint64

	done      chan struct{} // closed by the writer when it exits
	closeErr  error         // set by the writer before done is closed, then by the first Close
	closeOnce sync.Once

	w writer // owned by the writer goroutine
}

// Open recovers the spool in dir (created if missing) and starts its writer.
// Torn or corrupt tails are truncated and logged (see the package
// documentation); they never make Open fail. Open fails if dir cannot be
// created, read or locked (ErrLocked: another Spool has it open) or a
// segment cannot be opened or truncated.
func Open(dir string, opt Options) (*Spool, error) { return open(dir, opt, openOS) }

func open(dir string, opt Options, of openFunc) (*Spool, error) {
	if opt.OnDone == nil {
		return nil, errors.New("spool: Options.OnDone is required")
	}
	if opt.MaxBytes < 0 || opt.SegmentBytes < 0 || opt.QueueLen < 0 || opt.QueueBytes < 0 {
		return nil, errors.New("spool: negative Options value")
	}
	if opt.MaxBytes == 0 {
		opt.MaxBytes = defaultMaxBytes
	}
	if opt.SegmentBytes == 0 {
		opt.SegmentBytes = defaultSegmentBytes
	}
	if opt.SegmentBytes > opt.MaxBytes/4 {
		// Keep several segments within MaxBytes, so that acknowledged records
		// waiting in a segment that is still being filled never hold much of it.
		opt.SegmentBytes = opt.MaxBytes / 4
	}
	if opt.SegmentBytes < minSegmentBytes {
		return nil, fmt.Errorf("spool: SegmentBytes %d is below %d", opt.SegmentBytes, minSegmentBytes)
	}
	if opt.QueueLen == 0 {
		opt.QueueLen = defaultQueueLen
	}
	if opt.QueueBytes == 0 {
		opt.QueueBytes = defaultQueueBytes
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w", err)
	}
	dirf, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{
		dir:     dir,
		opt:     opt,
		log:     opt.Logger.With("component", "spool"),
		dirf:    dirf,
		open:    of,
		page:    int64(os.Getpagesize()),
		pending: make([]*Record, 0, opt.QueueLen),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	if s.id, err = loadID(dir, dirf, s.log); err != nil {
		dirf.Close()
		return nil, err
	}
	if err := s.recover(); err != nil {
		if s.w.f != nil {
			s.w.f.Close()
		}
		dirf.Close()
		return nil, err
	}
	s.w.init(opt.QueueLen)
	go s.run()
	return s, nil
}

// ID is the spool's identity: 32 hex digits chosen at random when the
// directory was first used and kept in its spool.id file. Sequence numbers
// are unique within one ID; a consumer that records replayed seqs (the store's
// ledger) should key them by (ID, seq), so that several instances, or a
// spool directory wiped and started afresh, never confuse each other's seqs.
func (s *Spool) ID() string { return s.id }

// Ack tells the spool that every record with seq <= upTo is committed
// elsewhere. Segment files whose records are all acknowledged are deleted
// before Ack returns; the active segment, once fully acknowledged and at
// least SegmentBytes/8 long, is closed and deleted by the writer soon after.
// Acknowledging past the last durable seq is an error and acknowledges only
// up to it. Any goroutine; acknowledgements below an earlier one are no-ops.
func (s *Spool) Ack(upTo uint64) error {
	var err error
	var dead []*segment
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return ErrClosed
	}
	if upTo > s.lastSeq {
		err = fmt.Errorf("spool: ack of seq %d past the last durable seq %d", upTo, s.lastSeq)
		upTo = s.lastSeq
	}
	if upTo <= s.acked {
		s.mu.Unlock()
		return err
	}
	s.acked = upTo
	live := s.segs[:0]
	for i, g := range s.segs {
		if i < len(s.segs)-1 && (g.empty() || g.last <= upTo) {
			dead = append(dead, g)
			continue
		}
		live = append(live, g)
	}
	clear(s.segs[len(live):])
	s.segs = live
	act := s.segs[len(s.segs)-1]
	rotate := !act.empty() && act.last <= upTo && act.size >= s.opt.SegmentBytes/8
	s.mu.Unlock()

	for _, g := range dead {
		if rerr := s.remove(g); rerr != nil && err == nil {
			err = rerr
		}
	}
	if rotate {
		s.ackRotate.Store(true)
		s.signal()
	}
	return err
}

// remove deletes the file of a segment already taken off s.segs.
func (s *Spool) remove(g *segment) error {
	s.used.Add(-g.size)
	if err := os.Remove(segPath(s.dir, g.base)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("spool: cannot delete an acknowledged segment", "segment", segName(g.base), "err", err)
		return fmt.Errorf("spool: delete segment %s: %w", segName(g.base), err)
	}
	return nil
}

// Stats returns the backlog and counters. Any goroutine; it takes the
// segment lock for a walk over the live segments (at most MaxBytes /
// SegmentBytes + 1 of them).
func (s *Spool) Stats() Stats {
	s.qmu.Lock()
	ql := len(s.pending)
	s.qmu.Unlock()
	st := Stats{
		QueueLen: ql,
		Appended: s.appended.Load(),
		Failed:   s.failed.Load(),
		Fsyncs:   s.fsyncs.Load(),
		Dropped:  s.dropped.Load(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.LastSeq, st.Acked, st.Segments = s.lastSeq, s.acked, len(s.segs)
	for _, g := range s.segs {
		st.DiskBytes += g.size
		if g.empty() || g.last <= s.acked {
			continue
		}
		if g.first > s.acked {
			st.Records += g.count()
			st.Bytes += g.size
			if st.Oldest.IsZero() && len(g.index) > 0 {
				st.Oldest = nanosTime(g.index[0].recvAt)
			}
			continue
		}
		// Ack stopped inside this segment.
		st.Records += g.last - s.acked
		cp := g.seek(s.acked + 1)
		st.Bytes += g.size - cp.off
		if st.Oldest.IsZero() {
			st.Oldest = nanosTime(cp.recvAt)
		}
	}
	return st
}

// Close stops accepting appends, writes and fsyncs every record already
// accepted (each is handed to OnDone), closes the active segment and releases
// the directory. Everything appended stays in the spool for the next Open.
// Readers should be closed first. Idempotent.
func (s *Spool) Close() error {
	s.qmu.Lock()
	s.closing = true
	s.qmu.Unlock()
	s.signal()
	<-s.done
	s.closeOnce.Do(func() {
		if err := s.dirf.Close(); err != nil && s.closeErr == nil {
			s.closeErr = fmt.Errorf("spool: close directory: %w", err)
		}
	})
	return s.closeErr
}

func (s *Spool) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// loadID reads the spool's identity, or creates it for a new (or wiped)
// directory: written to a temporary file, fsync'd, renamed, directory fsync'd.
func loadID(dir string, d *os.File, log *slog.Logger) (string, error) {
	p := filepath.Join(dir, idFile)
	b, err := os.ReadFile(p)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if _, herr := hex.DecodeString(id); herr == nil && len(id) == 32 {
			return id, nil
		}
		log.Warn("spool: unreadable spool.id replaced by a new identity", "content", string(b))
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("spool: read %s: %w", idFile, err)
	}
	var raw [16]byte
	rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return "", fmt.Errorf("spool: create %s: %w", idFile, err)
	}
	_, err = f.WriteString(id + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("spool: write %s: %w", idFile, noSpace(err))
	}
	if err := syncDir(d); err != nil {
		return "", err
	}
	return id, nil
}

// MaxBytes is the spool's bound (Options.MaxBytes after defaults).
func (s *Spool) MaxBytes() int64 { return s.opt.MaxBytes }

// Used is the bytes the spool counts against MaxBytes now: live segment files
// plus records queued or being written. Any goroutine; one atomic load.
func (s *Spool) Used() int64 { return s.used.Load() }
