package spool

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeSpool appends n records (body sizes from body) into a fresh spool in
// dir, closes it and returns the records and the offsets of each record in
// the single segment 1.
func writeSpool(t *testing.T, dir string, n int, body func(i int) int) ([]*Record, []int64) {
	t.Helper()
	e := openEnv(t, dir, Options{}, nil)
	var recs []*Record
	offs := []int64{0}
	for i := range n {
		r := rec(i, body(i))
		e.mustAdd(r)
		sz, _ := recordSize(r)
		recs = append(recs, r)
		offs = append(offs, offs[len(offs)-1]+sz)
	}
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	return recs, offs
}

// A crash tears the last record at any byte: Open truncates it, logs it once
// with segment, offset and reason, keeps every earlier record, and appends
// from there with the torn record's seq.
func TestTornTailAtEveryOffset(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "src")
	recs, offs := writeSpool(t, src, 5, func(i int) int { return 20 + i*30 })
	image, err := os.ReadFile(filepath.Join(src, segName(1)))
	if err != nil {
		t.Fatal(err)
	}
	lastStart, end := offs[4], offs[5]
	if int64(len(image)) != end {
		t.Fatalf("segment is %d bytes, want %d", len(image), end)
	}
	for cut := lastStart; cut < end; cut++ {
		dir := filepath.Join(root, fmt.Sprint(cut))
		os.MkdirAll(dir, 0o750)
		if err := os.WriteFile(filepath.Join(dir, segName(1)), image[:cut], 0o640); err != nil {
			t.Fatal(err)
		}
		e := openEnv(t, dir, Options{}, nil)
		var want []string
		if cut > lastStart {
			reason := fmt.Sprintf("short record (%d of %d bytes)", cut-lastStart, end-lastStart)
			if cut-lastStart < headerSize {
				reason = fmt.Sprintf("short header (%d of 40 bytes)", cut-lastStart)
			}
			want = []string{fmt.Sprintf(`WARN "spool: torn tail truncated" bytes=%d component=spool offset=%d reason=%s segment=%s`,
				cut-lastStart, lastStart, reason, segName(1))}
		}
		var got []string
		for _, l := range e.log.all() {
			got = append(got, l.String())
		}
		if !slices.Equal(got, want) {
			t.Fatalf("cut at %d: logged\n%q\nwant\n%q", cut, got, want)
		}
		if sz := fileSize(t, filepath.Join(dir, segName(1))); sz != lastStart {
			t.Fatalf("cut at %d: segment is %d bytes after Open, want %d", cut, sz, lastStart)
		}
		read := e.readAll(0)
		if len(read) != 4 {
			t.Fatalf("cut at %d: %d records", cut, len(read))
		}
		for i, r := range read {
			sameRecord(t, r, recs[i])
		}
		if seq := e.mustAdd(rec(99, 10)); seq != 5 {
			t.Fatalf("cut at %d: next seq %d, want 5", cut, seq)
		}
		e.reopen()
		if l := e.log.all(); len(l) != 0 {
			t.Fatalf("cut at %d: second Open logged %v (a torn tail is logged once)", cut, l)
		}
		if read := e.readAll(0); len(read) != 5 {
			t.Fatalf("cut at %d: %d records after the new append", cut, len(read))
		}
		e.s.Close()
		os.RemoveAll(dir)
	}
}

// Garbage after the last record (a crash after the file grew but before its
// data reached the disk leaves zeros; a partial overwrite leaves noise) is a
// torn tail too.
func TestTornTailGarbage(t *testing.T) {
	noise := make([]byte, 3000)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(rng.UintN(256))
	}
	for _, tc := range []struct {
		name   string
		tail   []byte
		reason string
	}{
		{"zeros", make([]byte, 4096), "bad magic 00000000"},
		{"noise", noise, fmt.Sprintf("bad magic %x", noise[:4])},
		{"header of zeros", append([]byte("UPSP\x00\x00\x00\x00\x01"), make([]byte, 100)...),
			fmt.Sprintf("CRC mismatch (stored 00000000, computed %08x)", crc32.Checksum(append([]byte{version}, make([]byte, 31)...), castagnoli))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			recs, offs := writeSpool(t, dir, 3, func(i int) int { return 100 })
			path := filepath.Join(dir, segName(1))
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(tc.tail)
			f.Close()
			e := openEnv(t, dir, Options{}, nil)
			l := e.log.atLeast(slog.LevelWarn)
			if len(l) != 1 || l[0].msg != "spool: torn tail truncated" || l[0].attrs["offset"] != fmt.Sprint(offs[3]) ||
				l[0].attrs["bytes"] != fmt.Sprint(len(tc.tail)) || l[0].attrs["reason"] != tc.reason {
				t.Fatalf("logged %v", l)
			}
			got := e.readAll(0)
			if len(got) != 3 {
				t.Fatalf("%d records", len(got))
			}
			for i, r := range got {
				sameRecord(t, r, recs[i])
			}
		})
	}
}

// One changed byte in a record's payload is caught by the CRC. In the last
// record it is a torn tail; in the middle of a segment the segment is
// truncated there, the intact records after it are dropped and counted, the
// loud log says so, and their seqs are not given again.
func TestFlippedPayloadByte(t *testing.T) {
	for _, tc := range []struct {
		name    string
		victim  int // record whose body byte is flipped
		level   slog.Level
		msg     string
		dropped uint64
	}{
		{"last record", 4, slog.LevelWarn, "spool: torn tail truncated", 0},
		{"middle record", 2, slog.LevelError, "spool: corrupt record inside a segment: truncated there, intact records after it dropped", 2},
		{"first record", 0, slog.LevelError, "spool: corrupt record inside a segment: truncated there, intact records after it dropped", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			recs, offs := writeSpool(t, dir, 5, func(i int) int { return 200 })
			path := filepath.Join(dir, segName(1))
			b, _ := os.ReadFile(path)
			b[offs[tc.victim+1]-50] ^= 0x10 // inside the victim's body
			os.WriteFile(path, b, 0o640)

			e := openEnv(t, dir, Options{}, nil)
			l := e.log.atLeast(slog.LevelWarn)
			if len(l) != 1 || l[0].level != tc.level || l[0].msg != tc.msg || l[0].attrs["offset"] != fmt.Sprint(offs[tc.victim]) ||
				!bytes.HasPrefix([]byte(l[0].attrs["reason"]), []byte("CRC mismatch")) {
				t.Fatalf("logged %v", l)
			}
			if tc.dropped > 0 && (l[0].attrs["dropped_records"] != fmt.Sprint(tc.dropped) ||
				l[0].attrs["first_dropped_seq"] != fmt.Sprint(tc.victim+2) || l[0].attrs["last_dropped_seq"] != "5") {
				t.Fatalf("dropped records not counted: %v", l[0])
			}
			st := e.s.Stats()
			if st.Dropped != tc.dropped || st.Records != uint64(tc.victim) {
				t.Fatalf("stats %+v", st)
			}
			got := e.readAll(0)
			if len(got) != tc.victim {
				t.Fatalf("%d records kept, want %d", len(got), tc.victim)
			}
			for i, r := range got {
				sameRecord(t, r, recs[i])
			}
			want := uint64(tc.victim + 1) // the damaged record's seq may be given again ...
			if tc.dropped > 0 {
				want = 6 // ... the seqs of intact records never are
			}
			if seq := e.mustAdd(rec(50, 10)); seq != want {
				t.Fatalf("next seq %d, want %d", seq, want)
			}
			if got := e.readAll(0); len(got) != tc.victim+1 || got[len(got)-1].Seq != want {
				t.Fatalf("after the new append: %d records", len(got))
			}
		})
	}
}

// Corruption in a sealed segment cuts that segment only; later segments stay.
func TestCorruptionInSealedSegment(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, Options{SegmentBytes: 1024}, nil)
	for i := range 9 {
		e.mustAdd(recSized(t, i, 340)) // segments 1, 4, 7
	}
	e.s.Close()
	path := filepath.Join(dir, segName(4))
	b, _ := os.ReadFile(path)
	b[340+100] ^= 1 // record 5
	os.WriteFile(path, b, 0o640)
	e.reopen()
	var seqs []uint64
	for _, r := range e.readAll(0) {
		seqs = append(seqs, r.Seq)
	}
	if !slices.Equal(seqs, []uint64{1, 2, 3, 4, 7, 8, 9}) {
		t.Fatalf("seqs %v", seqs)
	}
	if l := e.log.atLeast(slog.LevelError); len(l) != 1 || l[0].attrs["segment"] != segName(4) || l[0].attrs["dropped_records"] != "1" {
		t.Fatalf("logged %v", l)
	}
	if seq := e.mustAdd(rec(9, 1)); seq != 10 {
		t.Fatalf("next seq %d", seq)
	}
	// Ack across the gap deletes both older segments.
	if err := e.s.Ack(7); err != nil {
		t.Fatal(err)
	}
	if got := segFiles(t, dir); !slices.Equal(got, []uint64{7, 10}) {
		t.Fatalf("segments %v", got)
	}
}

// A segment cut to nothing by recovery is deleted unless it is the last one,
// and a torn first record of a new segment leaves an empty active segment
// with the right name.
func TestTornNewSegment(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, Options{SegmentBytes: 1024}, nil)
	for i := range 4 {
		e.mustAdd(recSized(t, i, 340)) // segments 1 (1..3), 4 (4)
	}
	e.s.Close()
	os.Truncate(filepath.Join(dir, segName(4)), 30)
	e.reopen()
	if got := segFiles(t, dir); !slices.Equal(got, []uint64{1, 4}) || fileSize(t, filepath.Join(dir, segName(4))) != 0 {
		t.Fatalf("segments %v", got)
	}
	if seq := e.mustAdd(rec(4, 1)); seq != 4 {
		t.Fatalf("seq %d", seq)
	}
}

// FuzzRecover: whatever bytes a segment holds, Open neither panics nor fails,
// and everything it keeps reads back as valid records with consecutive seqs.
func FuzzRecover(f *testing.F) {
	var seg []byte
	for i := range 3 {
		seg = appendRecord(seg, rec(i, 30), uint64(i+1))
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-7])
	f.Add(append(bytes.Clone(seg), "UPSP\x01\x00"...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, segName(1)), b, 0o640)
		s, err := Open(dir, Options{OnDone: func([]*Record) {}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		rd := s.NewReader(0)
		defer rd.Close()
		var n uint64
		for {
			r, err := rd.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("record %d: %v", n+1, err)
			}
			if n++; r.Seq != n {
				t.Fatalf("seq %d, want %d", r.Seq, n)
			}
		}
		if st := s.Stats(); st.Records != n {
			t.Fatalf("Stats.Records %d, read %d", st.Records, n)
		}
	})
}
