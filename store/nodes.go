package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Nodes and connections: which server a writer connects to, what it checks
// there, and how a dropped session is fenced off before anything else is
// written.
//
// A writer connects to the first node of Config.DSNs that answers, takes a
// session, and (on a Galera node: wsrep_on) is a synced member of a primary
// component (wsrep_ready ON, wsrep_cluster_status Primary,
// wsrep_local_state_comment Synced); otherwise it tries the next. A node
// that fails (its connection drops, it stops answering) is left like that:
// the next connect starts again from the first node, so writers return to
// the preferred node once it is back.
//
// Fencing. A session dropped without a clean close may still be running on
// its server: in the middle of a statement of a failed batch, holding its
// locks, or with a COMMIT in its socket buffer. Before a writer writes
// anything on a new connection, that session must be unable to commit:
//
//   - on the same server run (same node, same start time): KILL it and wait
//     until it has left the process list;
//   - on a server that restarted since: it is gone;
//   - on another node, when no COMMIT was in flight on it: nothing to do
//     (its transaction rolls back when the session ends);
//   - on another Galera node of the cluster, when COMMIT was in flight (an
//     unknown outcome): the old node is asked first
//     (KILL there, as above, if it still answers); if it does not answer,
//     the new node must no longer count it as a member
//     (mysql.wsrep_cluster_members). A node outside the primary component
//     can commit nothing, and whatever it had committed was ordered in the
//     primary component before the view changed, so the causal read that
//     follows (wsrep_sync_wait) sees it;
//   - on another server without wsrep: not possible; the writer keeps
//     trying the old node.
//
// After fencing, a Galera session makes one causal read (SET STATEMENT
// wsrep_sync_wait=1) so that its node has applied everything committed
// anywhere in the cluster before: the ledger's spool ranges and the
// idempotency keys this instance wrote through another node are visible.

// openNode opens the *sql.DB of one DSN.
func openNode(dsn string, writers int, log *slog.Logger) (*node, string, error) {
	db, name, addr, err := openDB(dsn, writers, log)
	if err != nil {
		return nil, "", err
	}
	return &node{db: db, addr: addr}, name, nil
}

// connect opens the writer's pinned connection on the first node, from
// prefer on in DSN order (then the ones before it), that passes every check;
// it sets the session up, fences the stale session and creates the tables if
// missing.
func (w *writer) connect(prefer int) error {
	if h := w.hooks.connect; h != nil {
		if err := h(w); err != nil {
			return fmt.Errorf("store: connect (test hook): %w", err)
		}
	}
	var errs []error
	for k := range w.nodes {
		i := (prefer + k) % len(w.nodes)
		err := w.connectTo(i)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// connectTo opens the writer's connection on node i.
func (w *writer) connectTo(i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	w.busy()
	c, err := w.nodes[i].db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store: connect to %s: %w", w.nodes[i].addr, err)
	}
	sess, galera, err := w.identify(ctx, c, i)
	if err == nil {
		err = w.fence(ctx, c, sess)
	}
	if err == nil && galera {
		err = causalRead(ctx, c)
	}
	if err == nil {
		w.sess, w.galera = sess, galera
		err = w.setupTables(ctx, c)
	}
	if err != nil {
		discard(c)
		if w.nodes[i].addr != "" && len(w.nodes) > 1 {
			return fmt.Errorf("%s: %w", w.nodes[i].addr, err)
		}
		return err
	}
	w.stale, w.staleCommit = session{}, false
	w.conn = c
	w.curConn.Store(sess.id)
	w.curNode.Store(int32(i))
	w.backoff = minBackoff
	w.lastOK = time.Now()
	w.log.Info("store: connected", "writer", w.num, "node", w.nodes[i].addr, "conn_id", sess.id, "galera", galera)
	w.deleteOrphans()
	w.ok()
	return nil
}

// identify sets c's session up and reads who it is; on a Galera node it
// also checks that the node may take writes.
func (w *writer) identify(ctx context.Context, c *sql.Conn, node int) (sess session, galera bool, err error) {
	if _, err := c.ExecContext(ctx, sessionSetup); err != nil {
		return sess, false, fmt.Errorf("store: session setup: %w", err)
	}
	rows, err := c.QueryContext(ctx, identifySQL)
	if err != nil {
		return sess, false, fmt.Errorf("store: session id: %w", err)
	}
	defer rows.Close()
	v := make(map[string]string, 9)
	for rows.Next() {
		var name, val string
		if err := rows.Scan(&name, &val); err != nil {
			return sess, false, fmt.Errorf("store: session id: %w", err)
		}
		v[name] = val
	}
	if err := rows.Err(); err != nil {
		return sess, false, fmt.Errorf("store: session id: %w", err)
	}
	now, _ := strconv.ParseInt(v["NOW"], 10, 64)
	up, _ := strconv.ParseInt(v["UPTIME"], 10, 64)
	sess = session{node: node, start: now - up}
	sess.id, _ = strconv.ParseUint(v["CONNECTION_ID"], 10, 64)
	if sess.id == 0 || now == 0 {
		return sess, false, fmt.Errorf("store: session id: unreadable (%v)", v)
	}
	if v["LOCAL_INFILE"] != "ON" && v["LOCAL_INFILE"] != "1" {
		// The driver always offers LOCAL INFILE (and needs no allowAllFiles
		// for Reader:: names); the server must accept it.
		return sess, false, errors.New("store: the server has local_infile=OFF; upsink writes with LOAD DATA LOCAL and needs it ON")
	}
	if v["WSREP_ON"] != "ON" {
		return sess, false, nil
	}
	if v["WSREP_READY"] != "ON" || v["WSREP_CLUSTER_STATUS"] != "Primary" || v["WSREP_LOCAL_STATE_COMMENT"] != "Synced" {
		return sess, true, fmt.Errorf("store: galera node not ready for writes: wsrep_ready %s, cluster status %s, state %s",
			v["WSREP_READY"], v["WSREP_CLUSTER_STATUS"], v["WSREP_LOCAL_STATE_COMMENT"])
	}
	if v["WSREP_LOAD_DATA_SPLITTING"] == "ON" {
		// The node would commit a LOAD every 10,000 rows: a batch (an
		// ingest request's rows) would no longer be all or nothing.
		return sess, true, errors.New("store: galera node has wsrep_load_data_splitting=ON, which commits LOAD DATA in pieces; upsink needs it OFF (the default since MariaDB 10.4)")
	}
	sess.uuid = v["WSREP_GCOMM_UUID"]
	if sess.uuid == "" {
		return sess, true, errors.New("store: galera node without wsrep_gcomm_uuid")
	}
	return sess, true, nil
}

// identifySQL reads, in one round trip, the session's id, the server's start
// and the wsrep state (the wsrep rows are absent on a server without it).
const identifySQL = `SELECT 'CONNECTION_ID', CAST(CONNECTION_ID() AS CHAR)
UNION ALL SELECT 'NOW', CAST(UNIX_TIMESTAMP() AS SIGNED)
UNION ALL SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS
  WHERE VARIABLE_NAME IN ('UPTIME', 'WSREP_READY', 'WSREP_CLUSTER_STATUS', 'WSREP_LOCAL_STATE_COMMENT', 'WSREP_GCOMM_UUID')
UNION ALL SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES
  WHERE VARIABLE_NAME IN ('LOCAL_INFILE', 'WSREP_ON', 'WSREP_LOAD_DATA_SPLITTING')`

// causalRead makes c's node apply everything committed in the cluster before
// it returns (see "Fencing").
func causalRead(ctx context.Context, c *sql.Conn) error {
	var n int
	if err := c.QueryRowContext(ctx, "SET STATEMENT wsrep_sync_wait=1 FOR SELECT COUNT(*) FROM upsink_batches WHERE batch_id=0").Scan(&n); err != nil {
		var me *mysql.MySQLError
		if errors.As(err, &me) && me.Number == 1146 { // no ledger yet: nothing to see
			return nil
		}
		return fmt.Errorf("store: causal read: %w", err)
	}
	return nil
}

// sameRun reports whether two sessions' servers are the same run of one
// node (start times agree up to rounding).
func sameRun(a, b session) bool {
	return a.node == b.node && a.start-b.start <= 2 && b.start-a.start <= 2 && a.uuid == b.uuid
}

// fence makes sure w.stale can no longer commit, from c (session sess); see
// "Fencing".
func (w *writer) fence(ctx context.Context, c *sql.Conn, sess session) error {
	old := w.stale
	if old.id == 0 {
		return nil
	}
	if sameRun(old, sess) {
		return w.killSession(ctx, c, old.id)
	}
	if old.node == sess.node {
		return nil // the server restarted: the old session is gone with it
	}
	if !w.staleCommit {
		// Its transaction was never sent a COMMIT: whatever it did rolls
		// back when the session ends, and its locks are its node's
		// business (a write set from here is certified against them).
		return nil
	}
	if old.uuid == "" || sess.uuid == "" {
		return fmt.Errorf("store: session %d on %s may still commit and no other server can tell: waiting for it", old.id, w.nodes[old.node].addr)
	}
	// Another node of the cluster. Ask the old node first.
	octx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if oc, err := w.nodes[old.node].db.Conn(octx); err == nil {
		defer discard(oc)
		if osess, _, err := w.identify(octx, oc, old.node); err == nil || osess.id != 0 {
			if osess.start-old.start > 2 || old.start-osess.start > 2 {
				return nil // restarted
			}
			return w.killSession(octx, oc, old.id)
		}
	}
	// The old node does not answer: it must have left the primary component.
	var members int
	if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.wsrep_cluster_members WHERE node_uuid = ?", old.uuid).Scan(&members); err != nil {
		return fmt.Errorf("store: fence node %s: %w", w.nodes[old.node].addr, err)
	}
	if members != 0 {
		return fmt.Errorf("store: node %s does not answer but is still a cluster member: waiting until it leaves", w.nodes[old.node].addr)
	}
	return nil
}

// killSession KILLs session id on c's server and waits until it has left
// the process list: from then on its transaction is finished one way or
// the other and nothing of it can commit behind our back.
func (w *writer) killSession(ctx context.Context, c *sql.Conn, id uint64) error {
	w.busy()
	_, err := c.ExecContext(ctx, "KILL CONNECTION "+strconv.FormatUint(id, 10))
	var me *mysql.MySQLError
	if err != nil && !(errors.As(err, &me) && (me.Number == 1094 || me.Number == 1095)) { // no such thread / not ours
		return fmt.Errorf("store: kill old session %d: %w", id, err)
	}
	q := "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID=" + strconv.FormatUint(id, 10)
	for {
		var cnt int
		w.busy()
		if err := c.QueryRowContext(ctx, q).Scan(&cnt); err != nil {
			return fmt.Errorf("store: wait for old session %d: %w", id, err)
		}
		if cnt == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: old session %d still present: %w", id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// dropConn discards the pinned connection (it is closed, not returned to
// the pool); its session is fenced at the next connect.
func (w *writer) dropConn() {
	if w.conn == nil {
		return
	}
	w.staleCommit = false
	discard(w.conn)
	w.conn = nil
	w.stale = w.sess
	w.curConn.Store(0)
	w.curNode.Store(-1)
	w.up.Store(false)
}

// discard closes c without returning it to its pool.
func discard(c *sql.Conn) {
	_ = c.Raw(func(any) error { return driver.ErrBadConn })
	_ = c.Close()
}

// ok records a successful database call of the writer.
func (w *writer) ok() {
	w.lastOK = time.Now()
	w.up.Store(true)
	w.stalled.Store(false)
}
