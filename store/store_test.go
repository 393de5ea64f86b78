package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"upsink/internal/testdb"
)

// collector records what OnDone hands back.
type collector struct {
	mu    sync.Mutex
	jobs  map[uint64]*Job // by Tag
	dup   []uint64
	calls int
	ch    chan struct{} // signalled once per OnDone call
}

func newCollector() *collector {
	return &collector{jobs: map[uint64]*Job{}, ch: make(chan struct{}, 1<<16)}
}

func (c *collector) onDone(batch []*Job) {
	c.mu.Lock()
	c.calls++
	for _, j := range batch {
		if _, ok := c.jobs[j.Tag]; ok {
			c.dup = append(c.dup, j.Tag)
		}
		c.jobs[j.Tag] = j
	}
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.jobs)
}

func (c *collector) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d jobs done", c.count(), n)
		}
		select {
		case <-c.ch:
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.dup) > 0 {
		t.Fatalf("jobs handed back twice: %v", c.dup)
	}
}

func waitReady(t testing.TB, s *Store) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("store never became ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitConnected waits until every writer has its connection.
func waitConnected(t testing.TB, s *Store) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for slices.Contains(s.connectionIDs(), 0) {
		if time.Now().After(deadline) {
			t.Fatalf("writers never all connected: %v", s.connectionIDs())
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitReady(t, s)
}

// openTest opens a store on a fresh database; it returns the store, the
// collector and a *sql.DB (parseTime) on the same database for checks.
// Statements in setup run on the fresh database before the store opens.
func openTest(t testing.TB, cfg Config, hooks *testHooks, setup ...string) (*Store, *collector, *sql.DB) {
	t.Helper()
	return openTestVia(t, nil, cfg, hooks, setup...)
}

// openTestVia is openTest with the store's DSN rewritten by via (if not nil),
// e.g. to route the store's connections through a fault proxy; the checking
// *sql.DB keeps the direct DSN.
func openTestVia(t testing.TB, via func(*mysql.Config), cfg Config, hooks *testHooks, setup ...string) (*Store, *collector, *sql.DB) {
	t.Helper()
	s, col, db := openTestNoWait(t, via, cfg, hooks, setup...)
	waitConnected(t, s)
	return s, col, db
}

// openTestWaitReady is openTest that waits only until one writer is up.
func openTestWaitReady(t testing.TB, cfg Config, hooks *testHooks, setup ...string) (*Store, *collector, *sql.DB) {
	t.Helper()
	s, col, db := openTestNoWait(t, nil, cfg, hooks, setup...)
	waitReady(t, s)
	return s, col, db
}

func openTestNoWait(t testing.TB, via func(*mysql.Config), cfg Config, hooks *testHooks, setup ...string) (*Store, *collector, *sql.DB) {
	t.Helper()
	dsn := testdb.New(t)
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	mc.ParseTime = true
	check := testdb.Open(t, mc.FormatDSN())
	for _, q := range setup {
		if _, err := check.Exec(q); err != nil {
			t.Fatalf("setup %q: %v", q, err)
		}
	}
	col := newCollector()
	cfg.DSN = dsn
	if via != nil {
		smc, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		via(smc)
		cfg.DSN = smc.FormatDSN()
	}
	if cfg.OnDone == nil {
		cfg.OnDone = col.onDone
	}
	s, err := open(cfg, hooks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, col, check
}

func mustSubmit(t testing.TB, s *Store, j *Job) {
	t.Helper()
	for {
		err := s.Submit(j)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrQueueFull) {
			t.Fatalf("submit: %v", err)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

type row struct {
	stream, remote, ctype, body []byte
	at                          time.Time
}

func readRow(t *testing.T, db *sql.DB, id uint64) row {
	t.Helper()
	var r row
	err := db.QueryRow("SELECT stream, received_at, remote_addr, content_type, body FROM uploads WHERE id=?", id).
		Scan(&r.stream, &r.at, &r.remote, &r.ctype, &r.body)
	if err != nil {
		t.Fatalf("row %d: %v", id, err)
	}
	return r
}

func countRows(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRoundTrip(t *testing.T) {
	s, col, db := openTest(t, Config{}, nil)
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(rand.IntN(256))
	}
	at := time.Date(2025, 6, 7, 8, 9, 10, 123456789, time.FixedZone("CEST", 2*3600))
	cases := []struct {
		name  string
		job   Job
		wantT time.Time
	}{
		{"all bytes", Job{Stream: []byte("s1"), ContentType: []byte("application/octet-stream"), Body: allBytes()}, at},
		{"tabs newlines backslashes", Job{Stream: []byte("s2"), ContentType: []byte("text/plain"), Body: []byte("a\tb\nc\\d\r\n\\\\\t\t\n\n")}, at},
		{"backslash N", Job{Stream: []byte("s3"), ContentType: []byte("\\N"), Body: []byte("\\N")}, at},
		{"empty", Job{Stream: []byte("s4"), ContentType: []byte(""), Body: []byte{}}, at},
		{"NUL only", Job{Stream: []byte("s5"), ContentType: []byte{0}, Body: []byte{0, 0, 0}}, at},
		{"1 MiB random", Job{Stream: []byte("s6"), ContentType: []byte("image/png"), Body: big}, at},
		{"binary content type", Job{Stream: []byte("s7"), ContentType: []byte("x/\xff\xfe\t\n\\\x00"), Body: []byte("x")}, at},
		{"max lengths", Job{Stream: bytes.Repeat([]byte("s"), 64), ContentType: bytes.Repeat([]byte{0xee}, 255), Body: []byte("y")}, at},
	}
	for i := range cases {
		c := &cases[i]
		c.job.Tag = uint64(i)
		c.job.RemoteAddr = []byte(fmt.Sprintf("203.0.113.%d:%d", i, 40000+i))
		c.job.ReceivedAt = at
		c.wantT = at.UTC().Truncate(time.Microsecond)
		mustSubmit(t, s, &c.job)
	}
	col.waitFor(t, len(cases))
	ids := map[uint64]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := &c.job
			if j.Err != nil || j.ID == 0 {
				t.Fatalf("job: id %d err %v", j.ID, j.Err)
			}
			if ids[j.ID] {
				t.Fatalf("id %d assigned twice", j.ID)
			}
			ids[j.ID] = true
			r := readRow(t, db, j.ID)
			if !bytes.Equal(r.body, j.Body) {
				t.Errorf("body differs (len %d vs %d)", len(r.body), len(j.Body))
			}
			if !bytes.Equal(r.stream, j.Stream) || !bytes.Equal(r.remote, j.RemoteAddr) || !bytes.Equal(r.ctype, j.ContentType) {
				t.Errorf("fields differ: %q %q %q", r.stream, r.remote, r.ctype)
			}
			if !r.at.Equal(c.wantT) {
				t.Errorf("received_at %v, want %v", r.at, c.wantT)
			}
		})
	}
	if got := countRows(t, db, "uploads"); got != len(cases) {
		t.Fatalf("%d rows, want %d", got, len(cases))
	}
	st := s.Stats()
	if st.Rows != uint64(len(cases)) || st.Failed != 0 || st.Recovered != 0 {
		t.Fatalf("stats %+v", st)
	}
	var ledgerRows int
	if err := db.QueryRow("SELECT COALESCE(SUM(row_count),0) FROM upsink_batches").Scan(&ledgerRows); err != nil || ledgerRows != len(cases) {
		t.Fatalf("ledger rows %d (%v), want %d", ledgerRows, err, len(cases))
	}
}

// TestInvalidJobRejected: a job the table cannot hold is failed on its own
// without failing the rest of its batch.
func TestInvalidJobRejected(t *testing.T) {
	s, col, db := openTest(t, Config{}, nil)
	jobs := []*Job{
		{Tag: 1, Stream: bytes.Repeat([]byte("s"), 65), Body: []byte("too long stream")},
		{Tag: 2, Stream: []byte("ok"), Body: []byte("fine")},
		{Tag: 3, Stream: []byte("caf\xc3\xa9"), Body: []byte("not ascii")},
	}
	for _, j := range jobs {
		mustSubmit(t, s, j)
	}
	col.waitFor(t, len(jobs))
	var re0, re2 *RejectedError
	if !errors.As(jobs[0].Err, &re0) || !errors.As(jobs[2].Err, &re2) || jobs[1].Err != nil {
		t.Fatalf("errs %v %v %v, want RejectedError, nil, RejectedError", jobs[0].Err, jobs[1].Err, jobs[2].Err)
	}
	if got := countRows(t, db, "uploads"); got != 1 {
		t.Fatalf("%d rows, want 1", got)
	}
}

func TestConcurrentBatching(t *testing.T) {
	s, col, db := openTest(t, Config{}, nil)
	const G, N = 20, 500
	var wg sync.WaitGroup
	for g := range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range N {
				tag := uint64(g*N + i)
				j := &Job{Tag: tag, Stream: []byte("bulk"), RemoteAddr: []byte("10.0.0.1:1"), ContentType: []byte("text/plain"),
					ReceivedAt: time.Now(), Body: []byte(fmt.Sprintf("body-%d-%d\t\n\\%x", g, i, rand.Uint64()))}
				mustSubmit(t, s, j)
			}
		}()
	}
	wg.Wait()
	col.waitFor(t, G*N)
	byID := map[uint64]*Job{}
	for _, j := range col.jobs {
		if j.Err != nil || j.ID == 0 {
			t.Fatalf("job %d: id %d err %v", j.Tag, j.ID, j.Err)
		}
		if o := byID[j.ID]; o != nil {
			t.Fatalf("id %d given to jobs %d and %d", j.ID, o.Tag, j.Tag)
		}
		byID[j.ID] = j
	}
	rows, err := db.Query("SELECT id, body FROM uploads")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id uint64
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			t.Fatal(err)
		}
		j := byID[id]
		if j == nil || !bytes.Equal(j.Body, body) {
			t.Fatalf("row %d does not match its job", id)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != G*N {
		t.Fatalf("%d rows, want %d", n, G*N)
	}
	st := s.Stats()
	t.Logf("stats: %+v (OnDone calls %d)", st, col.calls)
	if st.Rows != G*N || st.Batches >= G*N || st.Failed != 0 {
		t.Fatalf("stats %+v: want %d rows in fewer batches", st, G*N)
	}
}

func TestQueueFull(t *testing.T) {
	s, col, db := openTest(t, Config{QueueLen: 4}, nil)
	ctx := context.Background()
	lock, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, "LOCK TABLES uploads WRITE"); err != nil {
		t.Fatal(err)
	}
	accepted := 0
	full := false
	for i := 0; i < 200 && !full; i++ {
		err := s.Submit(&Job{Tag: uint64(i), Stream: []byte("q"), Body: []byte("x")})
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, ErrQueueFull):
			full = true
		default:
			t.Fatalf("submit: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !full {
		t.Fatal("queue never reported full")
	}
	// 4 queued + the batch the writer took before blocking on the lock.
	t.Logf("accepted %d jobs before ErrQueueFull (QueueLen 4)", accepted)
	if accepted < 4 {
		t.Fatalf("only %d accepted before the queue was full", accepted)
	}
	if col.count() != 0 {
		t.Fatalf("%d jobs done while the table was locked", col.count())
	}
	if _, err := lock.ExecContext(ctx, "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, accepted)
	for _, j := range col.jobs {
		if j.Err != nil {
			t.Fatalf("job %d: %v", j.Tag, j.Err)
		}
	}
	if got := countRows(t, db, "uploads"); got != accepted {
		t.Fatalf("%d rows, want %d", got, accepted)
	}
}

func TestUnreachable(t *testing.T) {
	for _, dsn := range []string{"::::", "root@unix(/tmp/x.sock)/db?timeout=bogus", "root@unix(/tmp/x.sock)/"} {
		if s, err := Open(Config{DSN: dsn, OnDone: func([]*Job) {}}); err == nil {
			s.Close()
			t.Fatalf("Open accepted the bad DSN %q", dsn)
		}
	}
	before := runtime.NumGoroutine()
	s, err := Open(Config{DSN: "root@unix(/nonexistent/upsink-test.sock)/upsink", OnDone: func([]*Job) {}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if s.Ready() {
		t.Fatal("Ready with no database")
	}
	if err := s.Submit(&Job{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Submit: %v, want ErrUnavailable", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Submit(&Job{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v, want ErrClosed", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after Close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killer returns a function that KILLs the writer's current session from an
// admin connection.
func killer(t *testing.T) func(w *writer) {
	admin := testdb.Open(t, testdb.New(t))
	return func(w *writer) {
		if _, err := admin.Exec(fmt.Sprintf("KILL CONNECTION %d", w.sess.id)); err != nil {
			t.Errorf("kill %d: %v", w.sess.id, err)
		}
		time.Sleep(20 * time.Millisecond) // let the server act on it
	}
}

// TestFailures covers the failure paths of a batch transaction: clean errors
// before COMMIT (rollback, retry once or fail) and unknown outcomes resolved
// through the ledger (committed or not). In every case each job is reported
// once, acknowledged jobs have exactly one row with their body, failed jobs
// have none.
func TestFailures(t *testing.T) {
	errBoom := errors.New("boom")
	cases := []struct {
		name          string
		hooks         func(t *testing.T, c *failureCounts) *testHooks
		wantErr       error
		wantRecovered uint64
	}{
		{
			name: "error after load, retried",
			hooks: func(t *testing.T, c *failureCounts) *testHooks {
				return &testHooks{afterLoad: func(*writer) error {
					if c.armed.Load() && c.afterLoad.Add(1) == 1 {
						return errBoom
					}
					return nil
				}}
			},
		},
		{
			name: "error after load twice, failed",
			hooks: func(t *testing.T, c *failureCounts) *testHooks {
				return &testHooks{afterLoad: func(*writer) error {
					if c.armed.Load() && c.afterLoad.Add(1) <= 2 {
						return errBoom
					}
					return nil
				}}
			},
			wantErr: ErrUnavailable,
		},
		{
			name: "connection killed before load, retried",
			hooks: func(t *testing.T, c *failureCounts) *testHooks {
				forceLoad(t) // a round trip of its own, before the one with COMMIT
				kill := killer(t)
				return &testHooks{beforeLoad: func(w *writer) {
					if c.armed.Load() && c.afterLoad.Add(1) == 1 {
						kill(w)
						// START TRANSACTION and the LOAD fail on the dead
						// connection: a known failure.
					}
				}}
			},
		},
		{
			name: "connection killed after load: unknown, not committed, retried",
			hooks: func(t *testing.T, c *failureCounts) *testHooks {
				kill := killer(t)
				return &testHooks{afterLoad: func(w *writer) error {
					if c.armed.Load() && c.afterLoad.Add(1) == 1 {
						kill(w)
						// The last round trip (check, ledger, COMMIT) fails
						// on the dead connection: its outcome is unknown.
					}
					return nil
				}}
			},
			wantRecovered: 1,
		},
		{
			name: "connection killed before commit: unknown, not committed, retried",
			hooks: func(t *testing.T, c *failureCounts) *testHooks {
				kill := killer(t)
				return &testHooks{beforeCommit: func(w *writer) {
					if c.armed.Load() && c.beforeCommit.Add(1) == 1 {
						kill(w)
					}
				}}
			},
			wantRecovered: 1,
		},
		{
			name: "commit reply lost: unknown, committed",
			hooks: func(t *testing.T, c *failureCounts) *testHooks {
				return &testHooks{afterCommit: func(w *writer) error {
					if c.armed.Load() && c.afterCommit.Add(1) == 1 {
						return errBoom
					}
					return nil
				}}
			},
			wantRecovered: 1,
		},
		{
			name: "connection killed after commit: unknown, committed",
			hooks: func(t *testing.T, c *failureCounts) *testHooks {
				kill := killer(t)
				return &testHooks{afterCommit: func(w *writer) error {
					if c.armed.Load() && c.afterCommit.Add(1) == 1 {
						kill(w)
						return mysql.ErrInvalidConn
					}
					return nil
				}}
			},
			wantRecovered: 1,
		},
	}
	for _, engine := range []string{"InnoDB", "Aria"} {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				testFailure(t, engine, tc.hooks, tc.wantErr, tc.wantRecovered)
			})
		}
	}
}

type failureCounts struct {
	armed                                atomic.Bool // hooks act only on the batch under test
	afterLoad, beforeCommit, afterCommit atomic.Int32
}

// warmGate holds the writer so that jobs submitted meanwhile form one batch:
// submit warm, wait on entered (its OnDone runs and blocks), queue the jobs
// under test, close release. Other batches go to col.
type warmGate struct {
	warm             *Job
	entered, release chan struct{}
	col              *collector
}

const warmTag = 1 << 40

func newWarmGate() *warmGate {
	return &warmGate{
		warm:    &Job{Tag: warmTag, Stream: []byte("warm-up"), Body: []byte("w")},
		entered: make(chan struct{}),
		release: make(chan struct{}),
		col:     newCollector(),
	}
}

// onDone is the store's OnDone.
func (g *warmGate) onDone(b []*Job) {
	if len(b) == 1 && b[0].Tag == warmTag {
		close(g.entered)
		<-g.release
		return
	}
	g.col.onDone(b)
}

func testFailure(t *testing.T, engine string, hooks func(*testing.T, *failureCounts) *testHooks, wantErr error, wantRecovered uint64) {
	var c failureCounts
	g := newWarmGate()
	col, release := g.col, g.release
	s, _, db := openTest(t, Config{Writers: 1, OnDone: g.onDone}, hooks(t, &c),
		createUploads+" ENGINE="+engine, createLedger+" ENGINE="+engine)
	mustSubmit(t, s, g.warm)
	<-g.entered
	const n = 50
	jobs := make([]*Job, n)
	for i := range jobs {
		jobs[i] = &Job{Tag: uint64(i), Stream: []byte("f"), RemoteAddr: []byte("127.0.0.1:1"),
			ContentType: []byte("t"), ReceivedAt: time.Now(), Body: []byte(fmt.Sprintf("job %d %x", i, rand.Uint64()))}
		mustSubmit(t, s, jobs[i])
	}
	c.armed.Store(true)
	close(release)
	col.waitFor(t, n)
	if col.calls != 1 {
		t.Errorf("%d OnDone calls, want 1 batch", col.calls)
	}
	for _, j := range jobs {
		if j.Err != wantErr {
			t.Fatalf("job %d: err %v, want %v", j.Tag, j.Err, wantErr)
		}
	}
	st := s.Stats()
	if st.Recovered != wantRecovered {
		t.Errorf("Recovered %d, want %d", st.Recovered, wantRecovered)
	}
	if wantErr != nil {
		if got := countRows(t, db, "uploads"); got != 1 { // the warm-up job
			t.Fatalf("%d rows after a failed batch, want only the warm-up row", got)
		}
		if st.Failed != n {
			t.Errorf("Failed %d, want %d", st.Failed, n)
		}
		return
	}
	if got := countRows(t, db, "uploads"); got != n+1 {
		t.Fatalf("%d rows, want %d + warm-up (each job exactly once)", got, n)
	}
	for i, j := range jobs {
		if r := readRow(t, db, j.ID); !bytes.Equal(r.body, j.Body) {
			t.Fatalf("job %d: row %d has body %q, want %q", i, j.ID, r.body, j.Body)
		}
		if i > 0 && j.ID != jobs[i-1].ID+1 {
			t.Fatalf("ids not consecutive: %d after %d", j.ID, jobs[i-1].ID)
		}
	}
	// The store is healthy afterwards.
	waitReady(t, s)
	j := &Job{Tag: 1000, Stream: []byte("after"), Body: []byte("after")}
	mustSubmit(t, s, j)
	col.waitFor(t, n+1)
	if j.Err != nil || readRow(t, db, j.ID).body == nil {
		t.Fatalf("job after recovery: %v", j.Err)
	}
}

// TestCloseDrains: everything accepted before Close is handed to OnDone, and
// committed, by the time Close returns.
func TestCloseDrains(t *testing.T) {
	s, col, db := openTest(t, Config{QueueLen: 10000, MaxBatchRows: 100}, nil)
	accepted := 0
	for i := range 3000 {
		if err := s.Submit(&Job{Tag: uint64(i), Stream: []byte("c"), Body: []byte(fmt.Sprint(i))}); err == nil {
			accepted++
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := col.count(); got != accepted {
		t.Fatalf("%d jobs handed back, %d accepted", got, accepted)
	}
	for _, j := range col.jobs {
		if j.Err != nil {
			t.Fatalf("job %d: %v", j.Tag, j.Err)
		}
	}
	if got := countRows(t, db, "uploads"); got != accepted {
		t.Fatalf("%d rows, want %d", got, accepted)
	}
	if err := s.Submit(&Job{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
}

// BenchmarkStore pushes b.N 1 KiB jobs through Submit/OnDone from many
// goroutines, in batches of at most rows rows (the sizes the HTTP loads
// see: c=64 gives batches of ~32, c=512 of ~230), so that the store alone
// can be set beside `upsink-bench ceiling --rows N`.
func BenchmarkStore(b *testing.B) {
	for _, rows := range []int{32, 64, 229, 1000} {
		b.Run("rows="+strconv.Itoa(rows), func(b *testing.B) { benchStore(b, rows) })
	}
}

func benchStore(b *testing.B, rows int) {
	var done sync.WaitGroup
	s, _, _ := openTest(b, Config{MaxBatchRows: rows, OnDone: func(batch []*Job) { done.Add(-len(batch)) }}, nil)
	body := bytes.Repeat([]byte("0123456789abcdef"), 64)
	var failed atomic.Int64
	done.Add(b.N)
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	var tags atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			j := &Job{Tag: tags.Add(1), Stream: []byte("bench"), RemoteAddr: []byte("198.51.100.7:43210"),
				ContentType: []byte("application/octet-stream"), ReceivedAt: time.Now(), Body: body}
			for {
				err := s.Submit(j)
				if err == nil {
					break
				}
				if !errors.Is(err, ErrQueueFull) {
					failed.Add(1)
					done.Done()
					break
				}
				time.Sleep(50 * time.Microsecond)
			}
		}
	})
	done.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	st := s.Stats()
	if failed.Load() != 0 || st.Failed != 0 {
		b.Fatalf("failures: submit %d, store %d", failed.Load(), st.Failed)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
	if st.Batches > 0 {
		b.ReportMetric(float64(st.Rows)/float64(st.Batches), "rows/batch")
	}
}

// TestLoadWarningFailsBatch: data the server only warns about (LOCAL implies
// IGNORE) is refused instead of being acknowledged truncated.
func TestLoadWarningFailsBatch(t *testing.T) {
	// The LOAD turns a refused value into a warning (1265), the queued INSERT
	// of a small batch into an error (1406): both refuse the row alone.
	for _, tc := range []struct {
		name, want string
		load       bool
	}{{"load", "1265", true}, {"insert", "1406", false}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.load {
				forceLoad(t)
			}
			s, col, db := openTest(t, Config{}, nil)
			if _, err := db.Exec("ALTER TABLE uploads MODIFY stream VARCHAR(4) CHARACTER SET ascii NOT NULL"); err != nil {
				t.Fatal(err)
			}
			j := &Job{Tag: 1, Stream: []byte("longer-than-4"), Body: []byte("x")}
			mustSubmit(t, s, j)
			col.waitFor(t, 1)
			var re *RejectedError
			if !errors.As(j.Err, &re) || j.ID != 0 || !strings.Contains(re.Reason, tc.want) {
				t.Fatalf("job: id %d err %v, want a RejectedError for %s", j.ID, j.Err, tc.want)
			}
			if got := countRows(t, db, "uploads"); got != 0 {
				t.Fatalf("%d rows after a failed batch", got)
			}
		})
	}
}

// forceLoad makes the store send uploads by LOAD DATA LOCAL however small
// the batch (insertMaxBytes), for the rest of the test.
func forceLoad(t *testing.T) {
	old := insertMaxBytes
	insertMaxBytes = -1
	t.Cleanup(func() { insertMaxBytes = old })
}

// TestUnknownWhileDatabaseDown: the reply to COMMIT is lost and the database
// then stays unreachable for a while. The batch must be neither failed nor
// acknowledged until the ledger answers; jobs queued behind it are failed fast
// meanwhile.
func TestUnknownWhileDatabaseDown(t *testing.T) {
	var down atomic.Bool
	var downConnects atomic.Int32
	var armed atomic.Bool
	col := newCollector()
	var order []string // OnDone calls, in order
	var mu sync.Mutex
	var behind []*Job
	hooks := &testHooks{
		afterCommit: func(w *writer) error {
			if !armed.CompareAndSwap(true, false) {
				return nil
			}
			// Jobs arriving while the batch is in flight.
			for i := range 5 {
				j := &Job{Tag: uint64(100 + i), Stream: []byte("behind"), Body: []byte("b")}
				if err := w.Submit(j); err != nil {
					t.Errorf("submit behind: %v", err)
				}
				behind = append(behind, j)
			}
			down.Store(true)
			return errors.New("reply lost")
		},
		connect: func(*writer) error {
			if down.Load() {
				if downConnects.Add(1) >= 4 {
					down.Store(false)
				}
				return errors.New("database down")
			}
			return nil
		},
	}
	onDone := func(b []*Job) {
		mu.Lock()
		order = append(order, string(b[0].Stream))
		mu.Unlock()
		col.onDone(b)
	}
	s, _, db := openTest(t, Config{Writers: 1, OnDone: onDone}, hooks)
	armed.Store(true)
	j := &Job{Tag: 1, Stream: []byte("inflight"), Body: []byte("the batch")}
	mustSubmit(t, s, j)
	col.waitFor(t, 6)
	if j.Err != nil || j.ID == 0 {
		t.Fatalf("in-flight job: id %d err %v, want committed", j.ID, j.Err)
	}
	if r := readRow(t, db, j.ID); string(r.body) != "the batch" {
		t.Fatalf("row %d: %q", j.ID, r.body)
	}
	for _, b := range behind {
		if b.Err != ErrUnavailable {
			t.Fatalf("job behind: %v, want ErrUnavailable", b.Err)
		}
	}
	mu.Lock()
	if order[0] != "behind" || order[len(order)-1] != "inflight" {
		t.Errorf("OnDone order %v: queued jobs should fail before the unknown batch resolves", order)
	}
	mu.Unlock()
	if st := s.Stats(); st.Recovered != 1 || st.Failed != 5 || st.Rows != 1 {
		t.Fatalf("stats %+v", st)
	}
	if n := downConnects.Load(); n < 4 {
		t.Fatalf("%d failed connects, want the writer to keep probing", n)
	}
	if got := countRows(t, db, "uploads"); got != 1 {
		t.Fatalf("%d rows, want 1", got)
	}
}

// TestIdleConnectionKilled: the server drops the idle writer connection; the
// next job is still committed (reconnect by ping or by the batch's retry).
func TestIdleConnectionKilled(t *testing.T) {
	s, col, db := openTest(t, Config{}, nil)
	for _, id := range s.connectionIDs() {
		if _, err := db.Exec(fmt.Sprintf("KILL CONNECTION %d", id)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	waitConnected(t, s)
	j := &Job{Tag: 1, Stream: []byte("k"), Body: []byte("after kill")}
	mustSubmit(t, s, j)
	col.waitFor(t, 1)
	if j.Err != nil {
		t.Fatalf("job: %v", j.Err)
	}
	if got := countRows(t, db, "uploads"); got != 1 {
		t.Fatalf("%d rows, want 1", got)
	}
}
