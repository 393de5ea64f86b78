package spool

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"slices"
	"strings"
)

// scanChunk is the recovery scan's read buffer (and its CRC chunk): recovery
// holds no more than this of a segment in memory, whatever the record sizes.
const scanChunk = 64 << 10

// recover runs in Open, before the writer starts: it scans every segment,
// truncates bad tails, and sets up the segment list, the MaxBytes account and
// the writer's active segment and next seq.
func (s *Spool) recover() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: read directory: %w", err)
	}
	var bases []uint64
	for _, e := range entries {
		if base, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)

	sc := &window{buf: make([]byte, scanChunk)}
	var top uint64 // the highest seq of any intact record seen, dropped ones included
	for _, base := range bases {
		g, t, err := s.scan(base, top, sc)
		if err != nil {
			return err
		}
		top = max(top, t)
		s.segs = append(s.segs, g)
	}

	// The next seq is above every intact record ever seen (a consumer may
	// have seen them) and not below the last segment's name (which keeps the
	// count when every record has been acknowledged and deleted).
	next := top + 1
	var act *segment
	if n := len(s.segs); n > 0 {
		last := s.segs[n-1]
		next = max(next, last.base)
		if (last.empty() && last.base == next) || (!last.empty() && last.last+1 == next) {
			act = last // clean: keep appending to it
		}
	}
	var f file
	if act != nil {
		f, err = s.open(segPath(s.dir, act.base), os.O_RDWR)
		if err != nil {
			return fmt.Errorf("spool: open segment %s: %w", segName(act.base), err)
		}
	} else {
		act = &segment{base: next}
		if f, err = s.open(segPath(s.dir, next), os.O_RDWR|os.O_CREATE|os.O_TRUNC); err != nil {
			return fmt.Errorf("spool: create segment: %w", noSpace(err))
		}
		if err := syncDir(s.dirf); err != nil {
			f.Close()
			return noSpace(err)
		}
		s.segs = append(s.segs, act)
	}
	s.w.f = f

	// Empty segments other than the active one hold nothing: delete them.
	live := s.segs[:0]
	for _, g := range s.segs {
		if g != act && g.empty() {
			if err := os.Remove(segPath(s.dir, g.base)); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("spool: cannot delete an empty segment", "segment", segName(g.base), "err", err)
				live = append(live, g) // harmless: kept and retried at the next Open
				continue
			}
			continue
		}
		live = append(live, g)
	}
	s.segs = live

	// Nothing below the oldest record left is in the spool any more: count it
	// as acknowledged. Seqs up to next-1 are never given again, so acknowledging
	// them (a consumer's ledger may be ahead of the last Ack) is allowed.
	var used int64
	s.acked = next - 1
	for i := len(s.segs) - 1; i >= 0; i-- {
		g := s.segs[i]
		used += g.size
		if !g.empty() {
			s.acked = g.first - 1
		}
	}
	s.used.Store(used)
	s.lastSeq = next - 1
	s.w.seg, s.w.off, s.w.next = act, act.size, next
	s.w.dropped = act.size &^ (s.page - 1) // the scan dropped the whole file from the cache
	s.w.lastCP = -1
	if n := len(act.index); n > 0 {
		s.w.lastCP = act.index[n-1].off
	}
	return nil
}

// scan checks one segment record by record: magic, version, length within
// the file, CRC, and seq (the first is the segment's base, each next one
// more). At the first record that fails, the rest of the file is cut off and
// logged: as a torn tail if nothing intact follows, as corruption (an error,
// with what was dropped) if intact records follow. floor is the highest seq
// of the earlier segments. It returns the segment and the highest seq of any
// intact record in the file, dropped ones included.
func (s *Spool) scan(base, floor uint64, sc *window) (*segment, uint64, error) {
	name := segName(base)
	path := segPath(s.dir, base)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, fmt.Errorf("spool: stat segment %s: %w", name, err)
	}
	size := fi.Size()
	f, err := s.open(path, os.O_RDWR)
	if err != nil {
		return nil, 0, fmt.Errorf("spool: open segment %s: %w", name, err)
	}
	defer f.Close()
	sc.reset(f, size)

	g := &segment{base: base}
	off, expect, lastCP := int64(0), base, int64(-1)
	reason := ""
	if base <= floor {
		reason = fmt.Sprintf("segment name %d is not above seq %d of an earlier segment", base, floor)
	}
	for reason == "" && off < size {
		h, why, err := check(sc, off, size)
		if err != nil {
			return nil, 0, fmt.Errorf("spool: read segment %s: %w", name, err)
		}
		if why == "" && h.seq != expect {
			why = fmt.Sprintf("seq %d where %d was expected", h.seq, expect)
		}
		if why != "" {
			reason = why
			break
		}
		if lastCP < 0 || off-lastCP >= indexEvery {
			g.index = append(g.index, checkpoint{seq: h.seq, off: off, recvAt: h.recvAt})
			lastCP = off
		}
		if g.empty() {
			g.first = h.seq
		}
		g.last = h.seq
		off += h.size()
		expect++
	}
	top := g.last
	if off < size {
		n, first, last, err := resync(sc, off+1, size, expect)
		if err != nil {
			return nil, 0, fmt.Errorf("spool: read segment %s: %w", name, err)
		}
		if n == 0 {
			s.log.Warn("spool: torn tail truncated", "segment", name, "offset", off, "bytes", size-off, "reason", reason)
		} else {
			s.dropped.Add(n)
			top = max(top, last)
			s.log.Error("spool: corrupt record inside a segment: truncated there, intact records after it dropped",
				"segment", name, "offset", off, "bytes", size-off, "reason", reason,
				"dropped_records", n, "first_dropped_seq", first, "last_dropped_seq", last)
		}
		err = f.Truncate(off)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			return nil, 0, fmt.Errorf("spool: truncate segment %s at %d: %w", name, off, err)
		}
	}
	f.DropCache(0, size)
	g.size = off
	return g, top, nil
}

// check verifies the record at off without holding more than scanChunk of
// it: why is "" for a good record, else what is wrong. err is an I/O error.
func check(sc *window, off, size int64) (h header, why string, err error) {
	if size-off < headerSize {
		return h, fmt.Sprintf("short header (%d of %d bytes)", size-off, headerSize), nil
	}
	hb, err := sc.view(off, headerSize)
	if err != nil {
		return h, "", err
	}
	if h, err = parseHeader(hb); err != nil {
		return h, strings.TrimPrefix(err.Error(), errCorrupt.Error()+": "), nil
	}
	end := off + h.size()
	if end > size {
		return h, fmt.Sprintf("short record (%d of %d bytes)", size-off, h.size()), nil
	}
	crc := crc32.Update(0, castagnoli, hb[crcFrom:headerSize])
	for p := off + headerSize; p < end; {
		k := min(int64(scanChunk), end-p)
		b, err := sc.view(p, int(k))
		if err != nil {
			return h, "", err
		}
		crc = crc32.Update(crc, castagnoli, b)
		p += k
	}
	if crc != h.crc {
		return h, fmt.Sprintf("CRC mismatch (stored %08x, computed %08x)", h.crc, crc), nil
	}
	return h, "", nil
}

// resync counts the intact records in [from, size) after a bad one, for the
// log and so that their seqs are never given again. Candidates start with the
// magic and must pass every check, with a seq that could follow the bad
// record: at least expect, above the previous one found, and at most one per
// headerSize bytes of what is left (a record copied inside an upload's body
// cannot push the seqs far ahead).
func resync(sc *window, from, size int64, expect uint64) (n, first, last uint64, err error) {
	ceiling := expect + uint64((size-from)/headerSize) + 1
	p := from
	for size-p >= headerSize {
		k := min(int64(scanChunk), size-p)
		b, err := sc.view(p, int(k))
		if err != nil {
			return n, first, last, err
		}
		i := bytes.Index(b, magic[:])
		if i < 0 {
			p += k - int64(len(magic)-1) // the magic may straddle the chunk's end
			continue
		}
		p += int64(i)
		h, why, err := check(sc, p, size)
		if err != nil {
			return n, first, last, err
		}
		if why == "" && h.seq >= expect && h.seq > last && h.seq <= ceiling {
			if n == 0 {
				first = h.seq
			}
			n, last = n+1, h.seq
			p += h.size()
			continue
		}
		p++
	}
	return n, first, last, nil
}
