package store

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"upsink/internal/faultproxy"
)

// Timing of the stall tests: the driver's read/write deadlines and the
// store's StallAfter, short so the tests take seconds, long enough that a
// healthy statement on a busy machine under -race never trips them.
const (
	stallIOTimeout = 2 * time.Second
	stallAfter     = time.Second
)

// waitUntil polls cond until it holds; the deadline only guards liveness.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openProxied opens a store whose connections go through a fault proxy of
// their own, with short read/write deadlines. The proxy is resumed before the
// store is closed, so a failing test cannot leave Close waiting for a
// resolution.
func openProxied(t *testing.T, cfg Config, hooks *testHooks, setup ...string) (*Store, *collector, *sql.DB, *faultproxy.Proxy) {
	t.Helper()
	var p *faultproxy.Proxy
	via := func(mc *mysql.Config) {
		p = faultproxy.New(t, mc.Net, mc.Addr)
		mc.Net, mc.Addr = "tcp", p.Addr()
		mc.ReadTimeout, mc.WriteTimeout = stallIOTimeout, stallIOTimeout
	}
	cfg.StallAfter = stallAfter
	s, col, db := openTestVia(t, via, cfg, hooks, setup...)
	t.Cleanup(p.Resume) // runs before the store's Close (cleanups run last first)
	return s, col, db, p
}

// TestStallWhileIdle: the database stops answering while the writer is idle.
// Ready goes false and Submit refuses within a bounded time; once the
// database answers again the store is ready and commits.
func TestStallWhileIdle(t *testing.T) {
	s, col, db, p := openProxied(t, Config{}, nil)
	p.Stall(faultproxy.Both)
	waitUntil(t, "Ready to go false", func() bool { return !s.Ready() })
	if err := s.Submit(&Job{Tag: 1, Stream: []byte("x")}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Submit while stalled: %v, want ErrUnavailable", err)
	}
	p.Resume()
	waitReady(t, s)
	j := &Job{Tag: 2, Stream: []byte("after"), Body: []byte("after the stall")}
	mustSubmit(t, s, j)
	col.waitFor(t, 1)
	if j.Err != nil {
		t.Fatalf("job after the stall: %v", j.Err)
	}
	if r := readRow(t, db, j.ID); !bytes.Equal(r.body, j.Body) {
		t.Fatalf("row %d: %q", j.ID, r.body)
	}
}

// TestStallMidBatch: the database stalls in the middle of a batch
// transaction. Jobs queued behind the batch are failed fast with
// ErrUnavailable while the stall lasts; the batch's own jobs get the answer
// the table bears out: committed rows with the reported ids, or
// ErrUnavailable and no row. When COMMIT may have reached the server, that
// answer waits until the ledger can be read after the stall.
func TestStallMidBatch(t *testing.T) {
	cases := []struct {
		name    string
		engines []string
		at      string // hook that stalls: "beforeLoad", "afterLoad" (before the last round trip) or "beforeCommit" (the same point)
		dir     faultproxy.Dir
		cut     bool // cut the connections (dropping what is held) before resuming
		// expected answer of the batch, if determined: "" (either, as long as the table agrees),
		// "committed", or "failed early" (ErrUnavailable, answered while still stalled)
		want string
	}{
		// The LOAD (with START TRANSACTION) never arrives: a known failure,
		// nothing can commit.
		{"stall before load", []string{"InnoDB", "Aria"}, "beforeLoad", faultproxy.Both, false, "failed early"},
		// The last round trip (check, ledger INSERT, COMMIT) is held: the
		// outcome is unknown until the ledger tells.
		{"stall after load", []string{"InnoDB", "Aria"}, "afterLoad", faultproxy.Both, false, ""},
		// COMMIT is held in the proxy and delivered on resume, racing the
		// KILL of the old session: either way the ledger tells.
		{"stall before commit", []string{"InnoDB", "Aria"}, "beforeCommit", faultproxy.Both, false, ""},
		// COMMIT is held and then dropped: not committed, retried, committed.
		{"stall before commit then cut", []string{"InnoDB"}, "beforeCommit", faultproxy.Both, true, ""},
		// COMMIT reaches the server, its reply is held: committed, unknown
		// to the writer until the ledger says so.
		{"reply to commit lost in a stall", []string{"InnoDB"}, "beforeCommit", faultproxy.Replies, false, "committed"},
	}
	for _, tc := range cases {
		for _, engine := range tc.engines {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				testStallMidBatch(t, engine, tc.at, tc.dir, tc.cut, tc.want)
			})
		}
	}
}

func testStallMidBatch(t *testing.T, engine, at string, dir faultproxy.Dir, cut bool, want string) {
	var (
		armed, stalled atomic.Bool
		connects       atomic.Int32 // connect attempts since the stall
		p              *faultproxy.Proxy
		s              *Store
		behind         []*Job // submitted behind the stalled batch and accepted
	)
	stall := func() {
		if !armed.CompareAndSwap(true, false) {
			return
		}
		p.Stall(dir)
		// Jobs arriving while the batch is stuck: accepted (Ready is still
		// true), they must not wait for it.
		for i := range 5 {
			j := &Job{Tag: uint64(1000 + i), Stream: []byte("behind"), Body: []byte("b")}
			if err := s.Submit(j); err == nil {
				behind = append(behind, j)
			}
		}
		stalled.Store(true) // publishes behind to the test goroutine
	}
	hooks := &testHooks{
		connect: func(*writer) error {
			if stalled.Load() {
				connects.Add(1)
			}
			return nil
		},
	}
	if at == "beforeLoad" {
		forceLoad(t) // the LOAD is a round trip of its own, before the one with COMMIT
	}
	switch at {
	case "beforeLoad":
		hooks.beforeLoad = func(*writer) { stall() }
	case "afterLoad":
		hooks.afterLoad = func(*writer) error { stall(); return nil }
	case "beforeCommit":
		hooks.beforeCommit = func(*writer) { stall() }
	}

	// The warm-up batch holds the writer while the jobs under test are
	// queued, so that they form one batch.
	g := newWarmGate()
	col, release, warm := g.col, g.release, g.warm
	var db *sql.DB
	s, _, db, p = openProxied(t, Config{Writers: 1, OnDone: g.onDone}, hooks,
		createUploads+" ENGINE="+engine, createLedger+" ENGINE="+engine)
	mustSubmit(t, s, warm)
	<-g.entered
	const n = 20
	jobs := make([]*Job, n)
	for i := range jobs {
		jobs[i] = &Job{Tag: uint64(i), Stream: []byte("stall"), RemoteAddr: []byte("127.0.0.1:1"),
			ContentType: []byte("t"), ReceivedAt: time.Now(), Body: []byte(fmt.Sprintf("job %d %x", i, rand.Uint64()))}
		mustSubmit(t, s, jobs[i])
	}
	armed.Store(true)
	close(release)

	waitUntil(t, "the stall", stalled.Load)
	answered := func(js []*Job) func() bool {
		return func() bool {
			col.mu.Lock()
			defer col.mu.Unlock()
			for _, j := range js {
				if col.jobs[j.Tag] == nil {
					return false
				}
			}
			return true
		}
	}
	// While stalled: the jobs behind are failed fast, new ones refused.
	waitUntil(t, "the jobs behind the stalled batch to be failed", answered(behind))
	for _, j := range behind {
		if j.Err != ErrUnavailable || j.ID != 0 {
			t.Fatalf("job behind: id %d err %v, want ErrUnavailable", j.ID, j.Err)
		}
	}
	if s.Ready() {
		t.Fatal("Ready while the batch is stalled")
	}
	if err := s.Submit(&Job{Tag: 2000, Stream: []byte("late")}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Submit while stalled: %v, want ErrUnavailable", err)
	}
	if want == "failed early" {
		// Nothing was sent that could commit: the true answer needs no ledger.
		waitUntil(t, "the batch to be failed while stalled", answered(jobs))
	} else {
		// COMMIT may have run: no answer until the ledger can tell. Once the
		// writer has given up on its connection and probed twice, the batch
		// must still be unanswered.
		waitUntil(t, "the writer to probe the stalled database", func() bool { return connects.Load() >= 2 })
		if answered(jobs[:1])() {
			t.Fatalf("batch answered (err %v) while its outcome could not be known", jobs[0].Err)
		}
	}
	if cut {
		p.Cut()
	}
	p.Resume()
	waitUntil(t, "the batch to be answered", answered(jobs))
	// The reconnect kills the old session (and, on Aria, deletes the rows of
	// a failed batch) before the store is ready again.
	waitReady(t, s)

	col.mu.Lock()
	if len(col.dup) > 0 {
		t.Fatalf("jobs handed back twice: %v", col.dup)
	}
	col.mu.Unlock()
	acked := 0
	for i, j := range jobs {
		switch {
		case j.Err == nil:
			acked++
			if r := readRow(t, db, j.ID); !bytes.Equal(r.body, j.Body) {
				t.Fatalf("job %d acknowledged as id %d, which holds %q", i, j.ID, r.body)
			}
		case j.Err == ErrUnavailable && j.ID == 0:
		default:
			t.Fatalf("job %d: id %d err %v", i, j.ID, j.Err)
		}
	}
	if acked != 0 && acked != n {
		t.Fatalf("%d of %d jobs of one batch acknowledged", acked, n)
	}
	switch want {
	case "committed":
		if acked != n || s.Stats().Recovered == 0 {
			t.Fatalf("acknowledged %d of %d, stats %+v: want the batch committed and recovered", acked, n, s.Stats())
		}
	case "failed early":
		if acked != 0 {
			t.Fatalf("acknowledged %d jobs of a batch that failed before COMMIT", acked)
		}
	}
	wantRows := acked
	if warm.Err == nil {
		wantRows++
	}
	if got := countRows(t, db, "uploads"); got != wantRows {
		t.Fatalf("%d rows in uploads, want %d (%d acknowledged + warm-up %v)", got, wantRows, acked, warm.Err)
	}
	t.Logf("batch acknowledged: %v; stats %+v", acked == n, s.Stats())

	// And the store works again.
	j := &Job{Tag: 3000, Stream: []byte("after"), Body: []byte("after the stall")}
	mustSubmit(t, s, j)
	waitUntil(t, "the job after the stall", answered([]*Job{j}))
	if j.Err != nil {
		t.Fatalf("job after the stall: %v", j.Err)
	}
}

// TestCloseWhileStalled: with no batch of unknown outcome, Close returns
// while the database is still stalled: every call is bounded by the driver's
// deadlines or a context, and nothing waits for the database to come back.
func TestCloseWhileStalled(t *testing.T) {
	s, _, _, p := openProxied(t, Config{}, nil)
	p.Stall(faultproxy.Both)
	waitUntil(t, "Ready to go false", func() bool { return !s.Ready() })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return while the database was stalled")
	}
}
