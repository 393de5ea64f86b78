package durable

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"upsink/internal/faultproxy"
	"upsink/internal/testdb"
	"upsink/spool"
	"upsink/store"
)

// harness is a Sink on a fresh database reached through a fault proxy, with
// a spool in a temporary directory, and the uploads it was given.
type harness struct {
	t       *testing.T
	dsn     string // through the proxy
	writers int    // store writers (0: the default)
	proxy   *faultproxy.Proxy
	db      *sql.DB // direct, for checks
	dir     string
	k       *Sink

	mu   sync.Mutex
	ups  []*Upload
	done map[uint64]bool
	ch   chan struct{}
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dsn := testdb.New(t)
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	mc.ParseTime = true
	h := &harness{t: t, db: testdb.Open(t, mc.FormatDSN()), dir: t.TempDir(), done: map[uint64]bool{}, ch: make(chan struct{}, 1)}
	h.proxy = faultproxy.New(t, mc.Net, mc.Addr)
	mc.Net, mc.Addr = "tcp", h.proxy.Addr()
	h.dsn = mc.FormatDSN()
	return h
}

func (h *harness) open(cfg SpoolConfig) {
	h.t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = h.dir
	}
	if cfg.After == 0 {
		cfg.After = 200 * time.Millisecond
	}
	k, err := Open(Config{
		Store:  store.Config{DSN: h.dsn, StallAfter: 500 * time.Millisecond, Writers: h.writers},
		Spool:  cfg,
		Upload: h.upload,
		OnDone: h.onDone,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.k = k
	h.t.Cleanup(func() { k.Close() })
}

func (h *harness) close() {
	h.t.Helper()
	if err := h.k.Close(); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) upload(tag uint64) *Upload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ups[tag]
}

func (h *harness) onDone(u *Upload) {
	h.mu.Lock()
	if h.done[u.Job.Tag] {
		h.t.Errorf("upload %d answered twice", u.Job.Tag)
	}
	h.done[u.Job.Tag] = true
	h.mu.Unlock()
	select {
	case h.ch <- struct{}{}:
	default:
	}
}

// newUpload makes an upload (not yet submitted).
func (h *harness) newUpload(key, body string) *Upload {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := &Upload{Job: store.Job{Stream: []byte("s"), ContentType: []byte("text/plain"), RemoteAddr: []byte("127.0.0.1:9"),
		ReceivedAt: time.Now(), Body: []byte(body), IdemKey: []byte(key), Tag: uint64(len(h.ups))}}
	h.ups = append(h.ups, u)
	return u
}

// submit submits a new upload and waits for its answer.
func (h *harness) submit(key, body string) *Upload {
	h.t.Helper()
	u := h.newUpload(key, body)
	if err := h.k.Submit(u); err != nil {
		if err == ErrAnswered {
			return u
		}
		u.Err = err
		return u
	}
	h.wait(u)
	return u
}

func (h *harness) wait(u *Upload) {
	h.t.Helper()
	h.until("upload answered", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.done[u.Job.Tag]
	})
}

func (h *harness) until(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case <-h.ch:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// rows returns the bodies in the table with their count.
func (h *harness) rows() map[string]int {
	h.t.Helper()
	rs, err := h.db.Query("SELECT body FROM uploads")
	if err != nil {
		h.t.Fatal(err)
	}
	defer rs.Close()
	m := map[string]int{}
	for rs.Next() {
		var b []byte
		if err := rs.Scan(&b); err != nil {
			h.t.Fatal(err)
		}
		m[string(b)]++
	}
	return m
}

func wantAnswer(t *testing.T, u *Upload, status uint16) {
	t.Helper()
	if u.Err != nil || u.Answer.Status != status {
		t.Fatalf("upload %d: answer %+v err %v, want %d", u.Job.Tag, u.Answer, u.Err, status)
	}
}

// TestSpoolWhileDatabaseDown: MariaDB goes away; uploads are answered 202
// from the spool, keyed retries get the first 202; MariaDB comes back, the
// spool is replayed in order and drained, every upload is in the table once
// with its original received_at, and a keyed retry now gets the 202 from
// MariaDB.
func TestSpoolWhileDatabaseDown(t *testing.T) {
	h := newHarness(t)
	h.open(SpoolConfig{})
	h.until("database ready", func() bool { return h.k.Status().Database })
	for i := range 5 {
		wantAnswer(t, h.submit("", fmt.Sprint("before ", i)), 201)
	}

	h.proxy.Down()
	h.until("database down", func() bool { return !h.k.Status().Database })
	if !h.k.Status().Ready {
		t.Fatal("not ready while the spool has room")
	}
	var spooled []*Upload
	for i := range 40 {
		key := ""
		if i%4 == 0 {
			key = fmt.Sprint("key-", i)
		}
		u := h.submit(key, fmt.Sprint("during ", i))
		wantAnswer(t, u, 202)
		if n := len(spooled); n > 0 && u.Answer.SpoolSeq <= spooled[n-1].Answer.SpoolSeq {
			t.Fatalf("spool seqs not increasing: %d after %d", u.Answer.SpoolSeq, spooled[n-1].Answer.SpoolSeq)
		}
		spooled = append(spooled, u)
	}
	retry := h.submit("key-8", "during 8")
	if !retry.Replayed || retry.Answer != spooled[8].Answer {
		t.Fatalf("keyed retry while spooled: %+v replayed %v, want %+v", retry.Answer, retry.Replayed, spooled[8].Answer)
	}
	if other := h.submit("key-8", "another body"); other.Err != ErrKeyMismatch {
		t.Fatalf("same key, other body: err %v, want ErrKeyMismatch", other.Err)
	}
	st := h.k.Status()
	if st.Backlog.Records != 40 || st.Backlog.Oldest.IsZero() {
		t.Fatalf("backlog %+v, want 40 records", st.Backlog)
	}

	h.proxy.Up()
	h.until("spool drained", func() bool { return h.k.Status().Backlog.Records == 0 })
	rows := h.rows()
	if len(rows) != 45 {
		t.Fatalf("%d distinct rows, want 45", len(rows))
	}
	for body, n := range rows {
		if n != 1 {
			t.Fatalf("%q stored %d times", body, n)
		}
	}
	// Replayed rows keep when they were received, in seq order.
	var got time.Time
	if err := h.db.QueryRow("SELECT received_at FROM uploads WHERE body = 'during 0'").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := spooled[0].Job.ReceivedAt.UTC().Truncate(time.Microsecond); !got.Equal(want) {
		t.Fatalf("replayed received_at %v, want %v", got, want)
	}
	var firstID, lastID uint64
	if err := h.db.QueryRow("SELECT (SELECT id FROM uploads WHERE body='during 0'), (SELECT id FROM uploads WHERE body='during 39')").Scan(&firstID, &lastID); err != nil || firstID >= lastID {
		t.Fatalf("replay out of order: ids %d, %d (%v)", firstID, lastID, err)
	}
	// The key is in MariaDB now, with its first answer.
	again := h.submit("key-8", "during 8")
	if !again.Replayed || again.Answer != spooled[8].Answer {
		t.Fatalf("keyed retry after replay: %+v replayed %v, want %+v", again.Answer, again.Replayed, spooled[8].Answer)
	}
	if len(h.rows()) != 45 {
		t.Fatal("a retry stored a row")
	}
	h.close()
	if n := h.k.keys.size(); n != 0 {
		t.Fatalf("%d keys left in the table after the replay", n)
	}
}

// TestReplaySkipsCommittedRanges: the process died after a replayed batch
// committed and before the spool heard of it (Ack). At the next start the
// same records are read again; the ledger's range makes the writer skip
// them: nothing is stored twice, and the rest is replayed.
func TestReplaySkipsCommittedRanges(t *testing.T) {
	h := newHarness(t)
	h.open(SpoolConfig{}) // creates the tables and the spool's identity
	h.until("database ready", func() bool { return h.k.Status().Database })
	h.close()

	var mu sync.Mutex
	appended := 0
	sp, err := spool.Open(h.dir, spool.Options{OnDone: func(b []*spool.Record) {
		mu.Lock()
		appended += len(b)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]spool.Record, 10)
	for i := range recs {
		recs[i] = spool.Record{Stream: []byte("s"), Body: []byte(fmt.Sprint("rec ", i)), ReceivedAt: time.Now()}
		if err := sp.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	id := sp.ID()
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if appended != 10 || recs[3].Seq == 0 {
		t.Fatalf("appended %d", appended)
	}
	// As if records 0..3 had been replayed: their rows and their ledger range.
	for i := range 4 {
		if _, err := h.db.Exec("INSERT INTO uploads (stream, received_at, remote_addr, content_type, body) VALUES ('s', NOW(6), '', '', ?)", recs[i].Body); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.db.Exec("INSERT INTO upsink_batches (batch_id, first_id, row_count, committed_at, spool_id, spool_first, spool_last) VALUES (1, 1, 4, NOW(6), ?, ?, ?)",
		id, recs[0].Seq, recs[3].Seq); err != nil {
		t.Fatal(err)
	}

	h.open(SpoolConfig{})
	h.until("spool drained", func() bool { return h.k.Status().Backlog.Records == 0 })
	rows := h.rows()
	for i := range recs {
		if n := rows[string(recs[i].Body)]; n != 1 {
			t.Fatalf("record %d stored %d times, want once", i, n)
		}
	}
	if len(rows) != 10 {
		t.Fatalf("%d rows, want 10", len(rows))
	}
}

// TestSpoolAfterSlowCall: a database call outstanding longer than
// SpoolAfter (a LOAD waiting on a table lock) diverts the uploads queued
// behind it to the spool at once; the one in the stuck batch waits for its
// true answer. Nothing is stored twice after the lock goes and the spool
// drains.
func TestSpoolAfterSlowCall(t *testing.T) {
	h := newHarness(t)
	// One writer: with more, each free writer also takes a batch into a
	// LOAD that waits for the lock, and only the uploads queued behind all
	// of them are diverted.
	h.writers = 1
	h.open(SpoolConfig{After: 150 * time.Millisecond})
	h.until("database ready", func() bool { return h.k.Status().Database })
	wantAnswer(t, h.submit("", "warm"), 201)

	lock, err := h.db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(t.Context(), "LOCK TABLES uploads WRITE"); err != nil {
		t.Fatal(err)
	}
	// Released before the store closes (cleanups run last first), also if
	// the test fails: else Close waits for the locked batch.
	t.Cleanup(func() {
		_, _ = lock.ExecContext(context.Background(), "UNLOCK TABLES")
		lock.Close()
	})
	stuck := h.newUpload("", "stuck")
	if err := h.k.Submit(stuck); err != nil {
		t.Fatal(err)
	}
	h.until("the batch waits for the lock", func() bool {
		var n int
		// A small batch is an INSERT in a multi-statement, a larger one a LOAD.
		if err := h.db.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE (INFO LIKE 'LOAD DATA%' OR INFO LIKE '%INSERT INTO uploads%') AND STATE LIKE 'Waiting for table%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	// The uploads behind it are spooled, without waiting for the LOAD
	// (which must not outlast the driver's 5 s read timeout: the lock goes
	// as soon as they are answered).
	behind := make([]*Upload, 5)
	for i := range behind {
		behind[i] = h.newUpload("", fmt.Sprint("behind ", i))
		if err := h.k.Submit(behind[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range behind {
		h.wait(u)
		wantAnswer(t, u, 202)
	}
	if _, err := lock.ExecContext(t.Context(), "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	h.wait(stuck)
	wantAnswer(t, stuck, 201)
	h.until("spool drained", func() bool { return h.k.Status().Backlog.Records == 0 })
	rows := h.rows()
	if len(rows) != 7 {
		t.Fatalf("%d rows, want 7: %v", len(rows), rows)
	}
	for body, n := range rows {
		if n != 1 {
			t.Fatalf("%q stored %d times", body, n)
		}
	}
}

// TestSpoolFull: with MariaDB down and a small spool, uploads are answered
// 202 until the spool is full, then refused (ErrUnavailable: 503); every
// one answered 202 is replayed once MariaDB is back.
func TestSpoolFull(t *testing.T) {
	h := newHarness(t)
	h.open(SpoolConfig{MaxBytes: 64 << 10})
	h.until("database ready", func() bool { return h.k.Status().Database })
	h.proxy.Down()
	h.until("database down", func() bool { return !h.k.Status().Database })
	body := strings.Repeat("x", 1000)
	var ok []*Upload
	refused := 0
	for i := 0; i < 200 && refused < 3; i++ {
		u := h.submit("", fmt.Sprintf("%04d %s", i, body))
		switch {
		case u.Err == nil:
			wantAnswer(t, u, 202)
			ok = append(ok, u)
		case errors.Is(u.Err, ErrUnavailable):
			refused++
		default:
			t.Fatalf("upload %d: %v", i, u.Err)
		}
	}
	if refused == 0 || len(ok) < 20 {
		t.Fatalf("%d spooled, %d refused: want the spool to fill", len(ok), refused)
	}
	if h.k.Status().Ready {
		t.Fatal("ready with the database down and the spool full")
	}
	h.proxy.Up()
	h.until("spool drained", func() bool { return h.k.Status().Backlog.Records == 0 })
	rows := h.rows()
	if len(rows) != len(ok) {
		t.Fatalf("%d rows, want the %d spooled", len(rows), len(ok))
	}
	for _, u := range ok {
		if rows[string(u.Job.Body)] != 1 {
			t.Fatalf("spooled upload %d not stored once", u.Job.Tag)
		}
	}
}

// TestKeysSurviveRestart: a keyed upload spooled before a restart is
// answered from the spool after it (same 202), before MariaDB is back.
func TestKeysSurviveRestart(t *testing.T) {
	h := newHarness(t)
	h.open(SpoolConfig{})
	h.until("database ready", func() bool { return h.k.Status().Database })
	h.proxy.Down()
	h.until("database down", func() bool { return !h.k.Status().Database })
	first := h.submit("restart-key", "body")
	wantAnswer(t, first, 202)
	h.close()

	h.open(SpoolConfig{})
	again := h.submit("restart-key", "body")
	if !again.Replayed || again.Answer != first.Answer {
		t.Fatalf("after restart: %+v replayed %v err %v, want %+v", again.Answer, again.Replayed, again.Err, first.Answer)
	}
	h.proxy.Up()
	h.until("spool drained", func() bool { return h.k.Status().Backlog.Records == 0 })
	if rows := h.rows(); len(rows) != 1 || rows["body"] != 1 {
		t.Fatalf("rows %v, want one", rows)
	}
}

// TestIdempotencyInMariaDB: keys committed with their rows answer retries
// (201, same id) and refuse another body (422); an upload whose key is in
// progress here is refused at Submit (409).
func TestIdempotencyInMariaDB(t *testing.T) {
	h := newHarness(t)
	h.open(SpoolConfig{})
	h.until("database ready", func() bool { return h.k.Status().Database })
	first := h.submit("k", "one")
	wantAnswer(t, first, 201)
	again := h.submit("k", "one")
	if !again.Replayed || again.Answer != first.Answer {
		t.Fatalf("retry: %+v replayed %v, want %+v", again.Answer, again.Replayed, first.Answer)
	}
	if other := h.submit("k", "two"); !errors.Is(other.Err, ErrKeyMismatch) {
		t.Fatalf("other body: %v", other.Err)
	}
	// In progress: the first is registered until answered.
	u := h.newUpload("busy", "x")
	if _, err := h.k.keys.begin(u); err != nil {
		t.Fatal(err)
	}
	if dup := h.submit("busy", "x"); dup.Err != ErrKeyInProgress {
		t.Fatalf("key in progress: %v", dup.Err)
	}
	if len(h.rows()) != 1 {
		t.Fatal("want one row")
	}
}

func TestKeyTable(t *testing.T) {
	var kt keyTable
	kt.init(2)
	up := func(key, body string) *Upload {
		u := &Upload{Job: store.Job{Stream: []byte("s"), IdemKey: []byte(key), Body: []byte(body)}}
		u.Job.Fingerprint = [32]byte{body[0]}
		return u
	}
	a := up("a", "1")
	if _, err := kt.begin(a); err != nil {
		t.Fatal(err)
	}
	a.keyed = true
	if _, err := kt.begin(up("a", "1")); err != ErrKeyInProgress {
		t.Fatalf("in progress: %v", err)
	}
	if _, err := kt.begin(&Upload{Job: store.Job{Stream: []byte("t"), IdemKey: []byte("a")}}); err != nil {
		t.Fatalf("other stream: %v", err)
	}
	if !kt.reserve() {
		t.Fatal("reserve")
	}
	kt.spooled(a, 7)
	if ans, err := kt.begin(up("a", "1")); err != nil || ans != (store.Answer{Status: 202, SpoolSeq: 7}) {
		t.Fatalf("spooled: %+v %v", ans, err)
	}
	if _, err := kt.begin(up("a", "2")); err != ErrKeyMismatch {
		t.Fatalf("spooled, other body: %v", err)
	}
	if !kt.reserve() || kt.reserve() {
		t.Fatal("reservations past max")
	}
	kt.unreserve()
	kt.forget(false, []byte("s"), []byte("a"), 7)
	if _, err := kt.begin(up("a", "1")); err != nil {
		t.Fatalf("after forget: %v", err)
	}
	if kt.nspooled != 0 {
		t.Fatalf("nspooled %d", kt.nspooled)
	}
	if !bytes.Equal(keyID(nil, false, []byte("s"), []byte("k")), []byte("s\x00k")) ||
		!bytes.Equal(keyID(nil, true, []byte("s"), []byte("k")), []byte("/s\x00k")) {
		t.Fatal("keyID")
	}
}

// TestKeysPastMaxKeys: past MaxKeys keyed uploads are still spooled (202),
// their keys not remembered here; a retry of one is spooled again (another
// seq) and MariaDB finds its key at replay: each stored once.
func TestKeysPastMaxKeys(t *testing.T) {
	h := newHarness(t)
	h.open(SpoolConfig{MaxKeys: 2})
	h.until("database ready", func() bool { return h.k.Status().Database })
	h.proxy.Down()
	h.until("database down", func() bool { return !h.k.Status().Database })
	var first []*Upload
	for i := range 4 {
		u := h.submit(fmt.Sprint("mk-", i), fmt.Sprint("body ", i))
		wantAnswer(t, u, 202)
		first = append(first, u)
	}
	if got := h.k.Status().UnkeyedSpooled; got != 2 {
		t.Fatalf("UnkeyedSpooled %d, want 2", got)
	}
	for i, f := range first {
		r := h.submit(fmt.Sprint("mk-", i), fmt.Sprint("body ", i))
		wantAnswer(t, r, 202)
		if remembered := i < 2; remembered != (r.Replayed && r.Answer == f.Answer) {
			t.Fatalf("retry %d: %+v replayed %v (first %+v)", i, r.Answer, r.Replayed, f.Answer)
		}
	}
	h.proxy.Up()
	h.until("spool drained", func() bool { return h.k.Status().Backlog.Records == 0 })
	rows := h.rows()
	if len(rows) != 4 {
		t.Fatalf("rows %v, want 4", rows)
	}
	for b, n := range rows {
		if n != 1 {
			t.Fatalf("%q stored %d times", b, n)
		}
	}
}
