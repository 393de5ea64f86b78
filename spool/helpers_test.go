package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// result is what OnDone reported for one record.
type result struct {
	tag, seq uint64
	err      error
}

// collector is an OnDone that queues results for the test; its channel is
// large enough that OnDone never blocks in these tests.
type collector struct {
	ch      chan result
	batches chan int // size of each batch
	check   func([]*Record)
}

func newCollector() *collector {
	return &collector{ch: make(chan result, 1<<16), batches: make(chan int, 1<<16)}
}

func (c *collector) onDone(b []*Record) {
	if c.check != nil {
		c.check(b)
	}
	for _, r := range b {
		c.ch <- result{r.Tag, r.Seq, r.Err}
	}
	c.batches <- len(b)
}

func (c *collector) next(t testing.TB) result {
	t.Helper()
	select {
	case r := <-c.ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("OnDone not called within 20 s")
		return result{}
	}
}

// logRec is one captured log line.
type logRec struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (l logRec) String() string {
	keys := make([]string, 0, len(l.attrs))
	for k := range l.attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %q", l.level, l.msg)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, l.attrs[k])
	}
	return b.String()
}

type logs struct {
	mu   sync.Mutex
	recs []logRec
}

func (l *logs) all() []logRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.recs)
}

// atLeast returns the captured lines at level or above.
func (l *logs) atLeast(level slog.Level) []logRec {
	var out []logRec
	for _, r := range l.all() {
		if r.level >= level {
			out = append(out, r)
		}
	}
	return out
}

type captureHandler struct {
	l     *logs
	attrs []slog.Attr
}

func (h captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h captureHandler) Handle(_ context.Context, r slog.Record) error {
	lr := logRec{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		lr.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { lr.attrs[a.Key] = a.Value.String(); return true })
	h.l.mu.Lock()
	h.l.recs = append(h.l.recs, lr)
	h.l.mu.Unlock()
	return nil
}
func (h captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return captureHandler{h.l, append(slices.Clone(h.attrs), as...)}
}
func (h captureHandler) WithGroup(string) slog.Handler { return h }

// env is one open spool under test.
type env struct {
	t   testing.TB
	dir string
	opt Options
	of  openFunc
	s   *Spool
	c   *collector
	log *logs
}

// openEnv opens (or reopens) a spool in dir with opt (OnDone and Logger are
// set here) and registers its Close.
func openEnv(t testing.TB, dir string, opt Options, of openFunc) *env {
	t.Helper()
	e := &env{t: t, dir: dir, opt: opt, of: of, c: newCollector(), log: &logs{}}
	if of == nil {
		e.of = openOS
	}
	e.reopen()
	return e
}

func (e *env) reopen() {
	e.t.Helper()
	if e.s != nil {
		e.s.Close()
	}
	e.c = newCollector()
	e.log = &logs{}
	opt := e.opt
	opt.OnDone = e.c.onDone
	opt.Logger = slog.New(captureHandler{l: e.log})
	s, err := open(e.dir, opt, e.of)
	if err != nil {
		e.t.Fatalf("open: %v", err)
	}
	e.s = s
	e.t.Cleanup(func() { s.Close() })
}

// add appends r and waits for its OnDone.
func (e *env) add(r *Record) (uint64, error) {
	e.t.Helper()
	if err := e.s.Append(r); err != nil {
		return 0, err
	}
	res := e.c.next(e.t)
	if res.tag != r.Tag {
		e.t.Fatalf("OnDone for tag %d, want %d", res.tag, r.Tag)
	}
	return res.seq, res.err
}

func (e *env) mustAdd(r *Record) uint64 {
	e.t.Helper()
	seq, err := e.add(r)
	if err != nil {
		e.t.Fatalf("append tag %d: %v", r.Tag, err)
	}
	return seq
}

// readAll reads every durable record after after.
func (e *env) readAll(after uint64) []Record {
	e.t.Helper()
	rd := e.s.NewReader(after)
	defer rd.Close()
	var out []Record
	for range 1 << 20 {
		r, err := rd.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				e.t.Fatalf("read: %v", err)
			}
			return out
		}
		out = append(out, cloneRecord(r))
	}
	e.t.Fatal("reader did not end")
	return nil
}

func cloneRecord(r *Record) Record {
	c := *r
	c.Stream = bytes.Clone(r.Stream)
	c.ContentType = bytes.Clone(r.ContentType)
	c.RemoteAddr = bytes.Clone(r.RemoteAddr)
	c.IdempotencyKey = bytes.Clone(r.IdempotencyKey)
	c.Body = bytes.Clone(r.Body)
	return c
}

// rec builds a deterministic test record: tag i, a body of n bytes.
func rec(i int, n int) *Record {
	body := make([]byte, n)
	for j := range body {
		body[j] = byte(i*7 + j*13)
	}
	r := &Record{
		Stream:      fmt.Appendf(nil, "stream%d", i%3),
		ContentType: []byte("application/octet-stream"),
		RemoteAddr:  fmt.Appendf(nil, "10.0.%d.%d:%d", i/250%250, i%250, 1024+i),
		ReceivedAt:  time.Unix(1_700_000_000, int64(i)*1000),
		Body:        body,
		Tag:         uint64(i),
	}
	if i%2 == 0 {
		r.IdempotencyKey = fmt.Appendf(nil, "key-%d", i)
	}
	return r
}

func sameRecord(t testing.TB, got Record, want *Record) {
	t.Helper()
	if !bytes.Equal(got.Stream, want.Stream) || !bytes.Equal(got.ContentType, want.ContentType) ||
		!bytes.Equal(got.RemoteAddr, want.RemoteAddr) || !bytes.Equal(got.IdempotencyKey, want.IdempotencyKey) ||
		!bytes.Equal(got.Body, want.Body) || !got.ReceivedAt.Equal(want.ReceivedAt) || got.Flags != want.Flags {
		t.Fatalf("seq %d: record differs from tag %d: got stream %q ct %q addr %q key %q body %d bytes at %v",
			got.Seq, want.Tag, got.Stream, got.ContentType, got.RemoteAddr, got.IdempotencyKey, len(got.Body), got.ReceivedAt)
	}
}

// segFiles lists the segment bases in dir.
func segFiles(t testing.TB, dir string) []uint64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, e := range ents {
		if b, ok := parseSegName(e.Name()); ok {
			out = append(out, b)
		}
	}
	return out
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func lastSeg(t testing.TB, dir string) string {
	t.Helper()
	b := segFiles(t, dir)
	if len(b) == 0 {
		t.Fatal("no segment")
	}
	return filepath.Join(dir, segName(b[len(b)-1]))
}

// faultFS wraps segment files to count and fail writes, fsyncs and truncates.
// Every file opened through it shares its state.
type faultFS struct {
	mu       sync.Mutex
	written  map[string]int64 // highest offset written (less after a truncate)
	synced   map[string]int64 // written as of the last successful Sync
	syncs    int
	writeErr func(name string, off int64, n int) (int, error) // how many bytes to write, and the error after them
	openErr  func(name string, flag int) error
	syncErr  func(name string) error
	truncErr func(name string) error
	syncHook func(name string) // called before each Sync, outside the lock (may block)
}

func newFaultFS() *faultFS {
	return &faultFS{written: map[string]int64{}, synced: map[string]int64{}}
}

func (fs *faultFS) open(name string, flag int) (file, error) {
	fs.mu.Lock()
	fail := fs.openErr
	fs.mu.Unlock()
	if fail != nil {
		if err := fail(name, flag); err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
	}
	f, err := openOS(name, flag)
	if err != nil {
		return nil, err
	}
	if flag&os.O_TRUNC != 0 {
		fs.mu.Lock()
		fs.written[name], fs.synced[name] = 0, 0
		fs.mu.Unlock()
	}
	return &faultFile{file: f, fs: fs, name: name}, nil
}

// allSynced reports whether every byte written through fs was fsync'd.
func (fs *faultFS) set(f func(fs *faultFS)) {
	fs.mu.Lock()
	f(fs)
	fs.mu.Unlock()
}

func (fs *faultFS) allSynced() bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for n, w := range fs.written {
		if fs.synced[n] != w {
			return false
		}
	}
	return true
}

type faultFile struct {
	file
	fs   *faultFS
	name string
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	fail := f.fs.writeErr
	f.fs.mu.Unlock()
	n, ferr := len(p), error(nil)
	if fail != nil {
		n, ferr = fail(f.name, off, len(p))
	}
	got, err := f.file.WriteAt(p[:n], off)
	f.fs.mu.Lock()
	f.fs.written[f.name] = max(f.fs.written[f.name], off+int64(got))
	f.fs.mu.Unlock()
	if err == nil {
		err = ferr
	}
	return got, err
}

func (f *faultFile) Sync() error {
	f.fs.mu.Lock()
	hook, fail := f.fs.syncHook, f.fs.syncErr
	f.fs.mu.Unlock()
	if hook != nil {
		hook(f.name)
	}
	if fail != nil {
		if err := fail(f.name); err != nil {
			return err
		}
	}
	if err := f.file.Sync(); err != nil {
		return err
	}
	f.fs.mu.Lock()
	f.fs.syncs++
	f.fs.synced[f.name] = f.fs.written[f.name]
	f.fs.mu.Unlock()
	return nil
}

func (f *faultFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	fail := f.fs.truncErr
	f.fs.mu.Unlock()
	if fail != nil {
		if err := fail(f.name); err != nil {
			return err
		}
	}
	if err := f.file.Truncate(size); err != nil {
		return err
	}
	f.fs.mu.Lock()
	f.fs.written[f.name] = min(f.fs.written[f.name], size)
	f.fs.mu.Unlock()
	return nil
}

// recSized is rec(i, ·) with the body sized so that the record takes exactly
// total bytes on disk.
func recSized(t testing.TB, i int, total int64) *Record {
	t.Helper()
	r := rec(i, 0)
	meta, _ := recordSize(r)
	if total < meta {
		t.Fatalf("record %d cannot be %d bytes", i, total)
	}
	return rec(i, int(total-meta))
}
