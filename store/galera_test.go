package store

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// Tests against a real 3-node Galera cluster (deploy/galera.sh), run by
// `make test-cluster` (bench/cluster.sh) with UPSINK_TEST_GALERA_DIR set to
// the cluster's directory; skipped otherwise. They kill and restart nodes.

// galera is one cluster under test: its directory and its nodes' DSNs (no
// database).
type galera struct {
	dir  string
	dsns [3]string
}

func galeraCluster(t *testing.T) *galera {
	t.Helper()
	dir := os.Getenv("UPSINK_TEST_GALERA_DIR")
	if dir == "" {
		t.Skip("UPSINK_TEST_GALERA_DIR not set (make test-cluster)")
	}
	g := &galera{dir: dir}
	for i := range g.dsns {
		out := g.script(t, "dsn", fmt.Sprint(i+1))
		g.dsns[i] = strings.TrimSpace(out)
	}
	return g
}

// script runs deploy/galera.sh with args on the cluster.
func (g *galera) script(t *testing.T, cmd string, args ...string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	sh := filepath.Join(filepath.Dir(file), "..", "deploy", "galera.sh")
	out, err := exec.Command(sh, append([]string{cmd, g.dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("galera.sh %s %v: %v\n%s", cmd, args, err, out)
	}
	return string(out)
}

// database creates a fresh database on the cluster and returns the three
// nodes' DSNs for it, and a checking *sql.DB on node 2 whose reads are
// causal.
func (g *galera) database(t *testing.T) ([]string, *sql.DB) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "gt_" + hex.EncodeToString(b[:])
	dsns := make([]string, 3)
	for i, d := range g.dsns {
		mc, err := mysql.ParseDSN(d)
		if err != nil {
			t.Fatal(err)
		}
		mc.DBName = name
		dsns[i] = mc.FormatDSN()
	}
	admin, err := sql.Open("mysql", g.dsns[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	mc, _ := mysql.ParseDSN(dsns[1])
	mc.ParseTime = true
	mc.Params = map[string]string{"wsrep_sync_wait": "1"}
	check, err := sql.Open("mysql", mc.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = check.Exec("DROP DATABASE " + name)
		check.Close()
	})
	return dsns, check
}

// restartAll brings back every node that is down (at the end of a test that
// killed one), waiting until the cluster is whole again.
func (g *galera) restartAll(t *testing.T) {
	t.Helper()
	g.script(t, "start")
}

// TestGaleraNodeDiesWithCommitInFlight: the node a writer commits on dies
// and the reply to COMMIT is lost. The writer must neither answer nor retry
// until another node, in the primary component and no longer counting the
// dead one, has read the ledger causally: the batch is then known committed
// (Galera replicated it before the node died), answered once, stored once.
func TestGaleraNodeDiesWithCommitInFlight(t *testing.T) {
	g := galeraCluster(t)
	dsns, check := g.database(t)
	t.Cleanup(func() { g.restartAll(t) })
	var armed atomic.Bool
	var killed atomic.Int32
	hooks := &testHooks{afterCommit: func(w *writer) error {
		if !armed.CompareAndSwap(true, false) {
			return nil
		}
		node := w.sess.node + 1
		killed.Store(int32(node))
		g.script(t, "kill", fmt.Sprint(node))
		return fmt.Errorf("reply lost: node %d killed", node)
	}}
	col := newCollector()
	s, err := open(Config{DSNs: dsns, Writers: 1, OnDone: col.onDone}, hooks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitConnected(t, s)
	armed.Store(true)
	j := &Job{Tag: 1, Stream: []byte("g"), Body: []byte("committed on a node that died")}
	mustSubmit(t, s, j)
	col.waitFor(t, 1)
	if j.Err != nil || j.ID == 0 {
		t.Fatalf("job: id %d err %v, want committed", j.ID, j.Err)
	}
	if st := s.Stats(); st.Recovered != 1 {
		t.Fatalf("Recovered %d, want 1", st.Recovered)
	}
	var n int
	if err := check.QueryRow("SELECT COUNT(*) FROM uploads WHERE id = ? AND body = ?", j.ID, j.Body).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows with the job's id and body: %d (%v), want 1", n, err)
	}
	if got := s.Nodes()[0]; got == "" || strings.Contains(dsns[killed.Load()-1], "("+got+")") {
		t.Fatalf("writer on %q after node %d died", got, killed.Load())
	}
	// The store goes on writing, on the surviving node.
	j2 := &Job{Tag: 2, Stream: []byte("g"), Body: []byte("after the failover")}
	mustSubmit(t, s, j2)
	col.waitFor(t, 2)
	if j2.Err != nil {
		t.Fatalf("job after the failover: %v", j2.Err)
	}
}

// TestGaleraInstancesShareAKey: two instances (stores) on two nodes commit
// uploads with the same Idempotency-Keys at the same time. Whatever
// certification does, each key is stored once and both get its one answer.
func TestGaleraInstancesShareAKey(t *testing.T) {
	g := galeraCluster(t)
	dsns, check := g.database(t)
	const keys = 200
	cols := [2]*collector{newCollector(), newCollector()}
	var stores [2]*Store
	order := [2][]string{{dsns[0], dsns[1], dsns[2]}, {dsns[1], dsns[2], dsns[0]}}
	for i := range stores {
		s, err := Open(Config{DSNs: order[i], Writers: 1, OnDone: cols[i].onDone})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		waitConnected(t, s)
		stores[i] = s
	}
	// In rounds of 10 keys, both instances at once, so that their batches
	// are in flight together on two nodes.
	const round = 10
	jobs := [2][]*Job{}
	for r := 0; r < keys; r += round {
		var start, wg sync.WaitGroup
		start.Add(1)
		for i := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start.Wait()
				for k := r; k < r+round; k++ {
					j := keyed(uint64(k), "shared", fmt.Sprint("key-", k), fmt.Sprint("body-", k))
					jobs[i] = append(jobs[i], j)
					if err := stores[i].Submit(j); err != nil {
						t.Errorf("instance %d: submit: %v", i, err)
					}
				}
			}()
		}
		start.Done()
		wg.Wait()
		cols[0].waitFor(t, r+round)
		cols[1].waitFor(t, r+round)
	}
	for k := range keys {
		a, b := jobs[0][k], jobs[1][k]
		if a.Err != nil || b.Err != nil {
			t.Fatalf("key %d: errors %v / %v", k, a.Err, b.Err)
		}
		if a.ID == 0 || a.ID != b.ID {
			var ids []string
			rows, err := check.Query("SELECT id FROM uploads WHERE body = ?", a.Body)
			if err == nil {
				for rows.Next() {
					var id string
					_ = rows.Scan(&id)
					ids = append(ids, id)
				}
				rows.Close()
			}
			var keyID uint64
			_ = check.QueryRow("SELECT upload_id FROM upsink_idem WHERE idem_key = ?", a.IdemKey).Scan(&keyID)
			var ledger []string
			for _, id := range []uint64{a.ID, b.ID} {
				var bid, first, cnt uint64
				if err := check.QueryRow("SELECT batch_id, first_id, row_count FROM upsink_batches WHERE ? BETWEEN first_id AND first_id + row_count - 1", id).Scan(&bid, &first, &cnt); err == nil {
					ledger = append(ledger, fmt.Sprintf("id %d in batch %d (%d+%d)", id, bid, first, cnt))
				} else {
					ledger = append(ledger, fmt.Sprintf("id %d: %v", id, err))
				}
			}
			t.Fatalf("key %d: ids %d (prior %+v) / %d (prior %+v), want one id for both; rows with its body: %v; key's id %d; ledger: %v", k, a.ID, a.Prior, b.ID, b.Prior, ids, keyID, ledger)
		}
	}
	var rows, distinct int
	if err := check.QueryRow("SELECT COUNT(*), COUNT(DISTINCT body) FROM uploads").Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != keys || distinct != keys {
		t.Fatalf("%d rows (%d distinct bodies), want %d: each key stored once", rows, distinct, keys)
	}
	p0, p1 := stores[0].Stats().Prior, stores[1].Stats().Prior
	t.Logf("prior answers: instance 1 %d, instance 2 %d", p0, p1)
	if p0+p1 != keys {
		t.Fatalf("%d + %d answers from a committed key, want %d (one per key)", p0, p1, keys)
	}
}

// TestGaleraSkipsSplittingNode: a node that would split a LOAD into several
// commits (wsrep_load_data_splitting=ON) is not written to; the writer takes
// the next DSN.
func TestGaleraSkipsSplittingNode(t *testing.T) {
	g := galeraCluster(t)
	dsns, _ := g.database(t)
	admin, err := sql.Open("mysql", g.dsns[2])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("SET GLOBAL wsrep_load_data_splitting = OFF"); err != nil {
			t.Errorf("reset wsrep_load_data_splitting: %v", err)
		}
		admin.Close()
	})
	if _, err := admin.Exec("SET GLOBAL wsrep_load_data_splitting = ON"); err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	s, err := Open(Config{DSNs: []string{dsns[2], dsns[0]}, Writers: 1, OnDone: col.onDone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitConnected(t, s)
	if got := s.Nodes()[0]; !strings.Contains(dsns[0], "("+got+")") {
		t.Fatalf("writer on %q, want node 1 (node 3 splits LOAD DATA)", got)
	}
}
