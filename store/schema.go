package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-sql-driver/mysql"

	"upsink/schema"
)

// The connection: the DSN the store builds, connecting, session settings and
// checks, the tables, dropping a broken connection.

// sessionSetup is every store session's settings: strict and UTC. The
// auto-increment settings are left alone (on Galera each node has its own
// offset): the store chooses its rows' ids itself (ids.go).
const sessionSetup = "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone='+00:00'"

const (
	createUploads = `CREATE TABLE IF NOT EXISTS uploads (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  stream VARCHAR(64) CHARACTER SET ascii NOT NULL,
  received_at DATETIME(6) NOT NULL,
  remote_addr VARCHAR(64) CHARACTER SET ascii NOT NULL,
  content_type VARBINARY(255) NOT NULL,
  body LONGBLOB NOT NULL)`
	createLedger = `CREATE TABLE IF NOT EXISTS upsink_batches (
  batch_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  first_id BIGINT UNSIGNED NOT NULL,
  row_count INT UNSIGNED NOT NULL,
  committed_at DATETIME(6) NOT NULL,
  spool_id CHAR(32) CHARACTER SET ascii NULL,
  spool_first BIGINT UNSIGNED NULL,
  spool_last BIGINT UNSIGNED NULL,
  KEY spool (spool_id, spool_last),
  KEY committed (committed_at))`
	// A ledger created before spool replay (issue 8) gets the new columns.
	alterLedger = `ALTER TABLE upsink_batches
  ADD COLUMN IF NOT EXISTS spool_id CHAR(32) CHARACTER SET ascii NULL,
  ADD COLUMN IF NOT EXISTS spool_first BIGINT UNSIGNED NULL,
  ADD COLUMN IF NOT EXISTS spool_last BIGINT UNSIGNED NULL,
  ADD KEY IF NOT EXISTS spool (spool_id, spool_last),
  ADD KEY IF NOT EXISTS committed (committed_at)`
)

// setupTables creates the tables that are missing, checks the declared
// ones and notes the engine of uploads; c's session is set up.
func (w *writer) setupTables(ctx context.Context, c *sql.Conn) error {
	for _, q := range []string{createUploads, createLedger, createIdem, createIDs} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("store: create tables: %w", err)
		}
	}
	if err := prepareTables(ctx, c, w.cfg.Tables); err != nil {
		w.log.Error("store: a declared table disagrees with the database: nothing is written until it is fixed", "err", err)
		return err
	}
	var hasSpool int
	if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'upsink_batches' AND COLUMN_NAME = 'spool_last'").Scan(&hasSpool); err != nil {
		return fmt.Errorf("store: ledger columns: %w", err)
	}
	if hasSpool == 0 {
		if _, err := c.ExecContext(ctx, alterLedger); err != nil {
			return fmt.Errorf("store: add the ledger's spool columns: %w", err)
		}
	}
	var txCapable string
	err := c.QueryRowContext(ctx, "SELECT e.TRANSACTIONS FROM information_schema.TABLES t JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE"+
		" WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = 'uploads'").Scan(&txCapable)
	if err != nil {
		return fmt.Errorf("store: table engine: %w", err)
	}
	if nonTx := txCapable != "YES"; nonTx != w.nonTx || w.sess.id == 0 {
		w.nonTx = nonTx
		if nonTx {
			w.log.Warn("store: uploads uses a non-transactional engine: a batch that fails after its LOAD cannot be rolled back; its rows are deleted when the connection still works")
		}
	}
	if err := w.seedIDs(ctx, c); err != nil {
		return err
	}
	return nil
}

// prepareTables creates the declared tables that are missing and checks
// that every one agrees with its declaration; c's session must be in UTC
// (defaults of time columns are written in UTC).
func prepareTables(ctx context.Context, c *sql.Conn, tables []*schema.Table) error {
	for _, t := range tables {
		if _, err := c.ExecContext(ctx, t.CreateSQL()); err != nil {
			return fmt.Errorf("store: create table %s: %w", t.Name, err)
		}
		if err := t.Check(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// PrepareTables connects once to the first of dsns that answers, creates
// the declared tables that are missing and checks every one against its
// declaration (for a start-time check: upsink refuses to start on a
// disagreement). reachable is false when no node could be asked; the
// writers then do the same at their first connect.
func PrepareTables(ctx context.Context, dsns []string, tables []*schema.Table) (reachable bool, err error) {
	var errs []error
	for _, dsn := range dsns {
		reachable, err := prepareOn(ctx, dsn, tables)
		if reachable {
			return true, err
		}
		errs = append(errs, err)
	}
	return false, errors.Join(errs...)
}

func prepareOn(ctx context.Context, dsn string, tables []*schema.Table) (reachable bool, err error) {
	db, _, _, err := openDB(dsn, 0, slog.Default())
	if err != nil {
		return false, err
	}
	defer db.Close()
	c, err := db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("store: connect: %w", err)
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, sessionSetup); err != nil {
		return false, fmt.Errorf("store: session setup: %w", err)
	}
	return true, prepareTables(ctx, c, tables)
}

// driverLogger routes the driver's own messages (e.g. broken pipes it then
// reports as errors) to slog instead of its default stderr logger.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) { l.log.Warn("store: mysql driver", "msg", fmt.Sprint(v...)) }

// openDB builds a node's *sql.DB, from which writers draw their pinned
// connections: the DSN as the user gave it plus what the store relies on.
// It returns the DSN's database name and address.
func openDB(dsn string, conns int, log *slog.Logger) (db *sql.DB, name, addr string, err error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, "", "", fmt.Errorf("store: parse DSN: %w", err)
	}
	if mc.DBName == "" {
		return nil, "", "", errors.New("store: DSN names no database")
	}
	mc.ParseTime = true
	mc.InterpolateParams = false // nothing user-supplied is ever interpolated; bodies travel in the LOAD DATA stream
	mc.MultiStatements = true    // a batch's statements share round trips (batch.go); each is built here from numbers and hex literals
	mc.AllowAllFiles = false     // Reader:: handlers need no file allowlist
	mc.Loc = time.UTC
	if mc.Timeout == 0 {
		mc.Timeout = defaultDialTimeout
	}
	// Without them a stopped or blackholed server leaves the writer in a
	// read until the batch's context ends; see defaultReadTimeout.
	if mc.ReadTimeout == 0 {
		mc.ReadTimeout = defaultReadTimeout
	}
	if mc.WriteTimeout == 0 {
		mc.WriteTimeout = defaultWriteTimeout
	}
	mc.Logger = driverLogger{log}
	connector, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, "", "", fmt.Errorf("store: DSN: %w", err)
	}
	db = sql.OpenDB(connector)
	// One pinned connection per writer, and one to fence a dropped session.
	db.SetMaxOpenConns(conns + 1)
	db.SetMaxIdleConns(conns + 1)
	return db, mc.DBName, mc.Addr, nil
}
