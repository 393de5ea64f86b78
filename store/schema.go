package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-sql-driver/mysql"

	"upsink/schema"
)

// The connection: the DSN the store builds, connecting, session settings and
// checks, the tables, dropping a broken connection.

// connect opens the pinned connection, sets the session up and creates the
// tables if missing.
func (s *Store) connect() error {
	if h := s.hooks.connect; h != nil {
		if err := h(); err != nil {
			return fmt.Errorf("store: connect (test hook): %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	s.busy()
	c, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store: connect: %w", err)
	}
	err = s.setup(ctx, c)
	if err == nil && s.staleID != 0 {
		// A dropped connection's session may still be running a statement
		// of a failed batch, holding its locks (the AUTO-INC lock of a LOAD)
		// or, after a stall, have bytes still on their way to it. Nothing
		// happens on the new connection before it is gone.
		err = s.killSession(ctx, c, s.staleID, s.staleStart)
	}
	if err != nil {
		_ = c.Raw(func(any) error { return driver.ErrBadConn })
		_ = c.Close()
		return err
	}
	s.staleID = 0
	s.conn = c
	s.backoff = minBackoff
	s.lastOK = time.Now()
	s.log.Info("store: connected", "conn_id", s.connID)
	s.deleteOrphans()
	s.ready.Store(true)
	return nil
}

// sessionSetup is every store session's settings: strict, UTC, consecutive ids.
const sessionSetup = "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone='+00:00', auto_increment_increment=1, auto_increment_offset=1"

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

func (s *Store) setup(ctx context.Context, c *sql.Conn) error {
	if _, err := c.ExecContext(ctx, sessionSetup); err != nil {
		return fmt.Errorf("store: session setup: %w", err)
	}
	var id uint64
	var start int64
	var localInfile int
	if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID(), CAST(UNIX_TIMESTAMP() AS SIGNED) - CAST(VARIABLE_VALUE AS SIGNED), @@GLOBAL.local_infile"+
		" FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='UPTIME'").Scan(&id, &start, &localInfile); err != nil {
		return fmt.Errorf("store: session id: %w", err)
	}
	if localInfile == 0 {
		// The driver always offers LOCAL INFILE (and needs no allowAllFiles
		// for Reader:: names); the server must accept it.
		return errors.New("store: the server has local_infile=OFF; upsink writes with LOAD DATA LOCAL and needs it ON")
	}
	for _, q := range []string{createUploads, createLedger, createIdem} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("store: create tables: %w", err)
		}
	}
	if err := prepareTables(ctx, c, s.cfg.Tables); err != nil {
		s.log.Error("store: a declared table disagrees with the database: nothing is written until it is fixed", "err", err)
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
	if nonTx := txCapable != "YES"; nonTx != s.nonTx || s.connID == 0 {
		s.nonTx = nonTx
		if nonTx {
			s.log.Warn("store: uploads uses a non-transactional engine: a batch that fails after its LOAD cannot be rolled back; its rows are deleted when the connection still works")
		}
	}
	var maxBatch uint64
	if err := c.QueryRowContext(ctx, "SELECT COALESCE(MAX(batch_id), 0) FROM upsink_batches").Scan(&maxBatch); err != nil {
		return fmt.Errorf("store: read ledger: %w", err)
	}
	if maxBatch >= s.nextBatch {
		s.nextBatch = maxBatch + 1
	}
	s.connID, s.serverStart = id, start
	s.curConn.Store(id)
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

// PrepareTables connects to dsn once, creates the declared tables that are
// missing and checks every one against its declaration (for a start-time
// check: upsink refuses to start on a disagreement). reachable is false when
// the database could not be asked; the writer then does the same at its
// first connect.
func PrepareTables(ctx context.Context, dsn string, tables []*schema.Table) (reachable bool, err error) {
	db, err := openDB(dsn, slog.Default())
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

// dropConn discards the pinned connection (it is closed, not returned to the pool).
func (s *Store) dropConn() {
	if s.conn == nil {
		return
	}
	_ = s.conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = s.conn.Close()
	s.conn = nil
	s.staleID, s.staleStart = s.connID, s.serverStart
	s.ready.Store(false)
}

// driverLogger routes the driver's own messages (e.g. broken pipes it then
// reports as errors) to slog instead of its default stderr logger.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) { l.log.Warn("store: mysql driver", "msg", fmt.Sprint(v...)) }

// openDB builds the *sql.DB the writer draws its one pinned connection from:
// the DSN as the user gave it plus what the store relies on.
func openDB(dsn string, log *slog.Logger) (*sql.DB, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: parse DSN: %w", err)
	}
	if mc.DBName == "" {
		return nil, errors.New("store: DSN names no database")
	}
	mc.ParseTime = true
	mc.InterpolateParams = false // nothing user-supplied is ever interpolated; bodies travel in the LOAD DATA stream
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
		return nil, fmt.Errorf("store: DSN: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	return db, nil
}
