// Package spool is upsink's durable local log of uploads for when MariaDB is
// away: an upload appended here and fsync'd is durable (the server may answer
// 202 with its spool_seq), and stays here until a consumer (the store's
// replayer) has committed it elsewhere and acknowledged it with Ack.
//
// # On disk
//
// A spool is a directory holding segment files and spool.id (the spool's
// random identity, 32 hex digits; see Spool.ID). Segment files are named by
// the seq of their first record, zero-padded to 20 digits:
//
//	00000000000000000001.seg  00000000000000051742.seg  ...
//
// A segment is a sequence of records and nothing else (no file header); a new
// one is started when the next record would take the active one past
// Options.SegmentBytes (64 MiB by default). Every record, little-endian:
//
//	offset size field
//	0      4    magic "UPSP"
//	4      4    CRC32C (Castagnoli) of bytes 8..end of the record (header fields after the CRC, then the payload)
//	8      1    version (1)
//	9      1    flags: 0, or FlagRows (1): Body is rows for the table named by the stream field
//	10     2    S: stream length
//	12     2    C: content type length
//	14     2    A: remote address length
//	16     2    K: idempotency key length (0 = no key)
//	18     2    reserved (0)
//	20     4    B: body length
//	24     8    seq
//	32     8    received_at, unix nanoseconds
//	40     S+C+A+K+B  payload: stream, content type, remote address, idempotency key, body
//
// A record's length is 40+S+C+A+K+B. Seqs start at 1, are consecutive within
// a segment (the first one is the segment's name) and increase across
// segments; they may skip across segments (records dropped at recovery, see
// below), so consumers must not assume consecutive seqs overall.
//
// # Appending: one writer, group fsync
//
// Append queues a *Record (the caller keeps its memory until OnDone) in a
// queue bounded by count and bytes and never blocks: a full queue is
// ErrQueueFull, a full spool (Options.MaxBytes) ErrFull. One writer goroutine
// takes everything queued, copies small records into a 256 KiB buffer (large
// bodies are written from the caller's slice), writes with pwrite, calls
// fdatasync once per segment touched, and only then hands the whole batch to
// OnDone with each record's Seq, or Err. After the fsync the written pages
// are dropped from the page cache (posix_fadvise DONTNEED; the last partial
// page is kept until it fills), so the spool does not crowd the small box.
// Readers read through their own window with the kernel's readahead off
// (POSIX_FADV_RANDOM: pages read ahead asynchronously could arrive after
// their range was dropped) and drop what they have read; the recovery scan
// drops each segment after scanning it.
//
// A failed write or fsync (ENOSPC, wrapped in ErrNoSpace, or EIO) fails every
// record of its group and the rest of the batch. The segment is truncated back
// to the end of its last good record and the truncation fsync'd before
// anything else is written, so a record reported failed is never found later,
// whole or torn; if the truncation itself fails, nothing more is written
// until it succeeds. Appends succeed again as soon as the filesystem has room.
// Seqs of failed records are given again to the next records.
//
// # Recovery at Open
//
// Open reads every segment through a 64 KiB buffer, checking each record's
// magic, version, length against the file, CRC and seq. At the first bad
// record in a segment it searches the rest of that segment for intact records
// and truncates the file there (and fsyncs it):
//
//   - nothing intact after it: a torn tail (a crash during a write; those
//     records were never acknowledged). Logged once at Warn,
//     "spool: torn tail truncated", with segment, offset, bytes, reason.
//   - intact records after it: corruption inside the segment (the disk changed
//     fsync'd data). The records cannot be located reliably past the bad one,
//     so they are dropped with it; logged at Error, "spool: corrupt record
//     inside a segment: truncated there, intact records after it dropped",
//     with the count and seq range dropped (Stats.Dropped). Their seqs are
//     never given again. Later segments are kept.
//
// Neither stops Open. A record torn by a crash was never acknowledged; its
// seq may be given again. A record written whole but not yet fsync'd when the
// process died may survive and be replayed although its client got no answer
// (as with any write-ahead log): the Idempotency-Key makes that client's retry
// harmless.
//
// # Consuming
//
// NewReader(after) yields the durable records with seq > after in seq order
// (only what has been fsync'd is visible). The consumer commits them elsewhere
// together with the last seq it committed (the store's ledger, keyed by
// (Spool.ID, seq)) and then calls Ack(seq); on restart it starts a reader
// after its ledger's seq and Acks it again. Ack deletes every segment whose
// records are all acknowledged; the active segment, once fully acknowledged
// and at least SegmentBytes/8 long, is closed and deleted by the writer. The
// seq count survives the deletion of every record: the last segment (possibly
// empty) is always kept and named by the next seq.
//
// # Memory
//
// The queue holds pointers (the bodies are the caller's, already counted by
// the server's budget); the writer owns a 256 KiB buffer, recovery a 64 KiB
// one, each Reader 64 KiB (grown for a larger record while it is read), and
// each segment a sparse index of one 24-byte checkpoint per 128 KiB
// (Stats' backlog bytes and oldest age, and readers' seeks, use it).
//
// # Where things are
//
//	doc.go      this
//	format.go   the record layout: encode, parse, decode
//	spool.go    Options, Record, Stats, Spool: Open, ID, Ack, Stats, Close
//	writer.go   Append, the writer goroutine, group fsync, rotation, failed writes
//	recover.go  the scan at Open: torn tails, corruption
//	reader.go   Reader
//	segment.go  in-memory segment state, its sparse index, the read window
//	file.go     segment files, fadvise, the directory lock, DefaultMaxBytes
package spool
