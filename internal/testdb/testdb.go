// Package testdb gives each test its own throwaway database on the real MariaDB
// that `make test` starts on a private unix socket.
//
// The server's DSN comes from UPSINK_TEST_DSN (go-sql-driver form, no database
// name needed). Without it the test is skipped, unless UPSINK_REQUIRE_DB=1 (set
// by `make test` and CI), in which case it fails: the suite must never pass by
// silently skipping everything that crosses the database boundary.
package testdb

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// New creates a fresh database, registers its removal with t.Cleanup, and returns
// a DSN that selects it.
func New(t testing.TB) string {
	t.Helper()
	base := os.Getenv("UPSINK_TEST_DSN")
	if base == "" {
		if os.Getenv("UPSINK_REQUIRE_DB") == "1" {
			t.Fatal("testdb: UPSINK_TEST_DSN is empty but UPSINK_REQUIRE_DB=1")
		}
		t.Skip("testdb: UPSINK_TEST_DSN not set (run `make test`)")
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("testdb: parse UPSINK_TEST_DSN: %v", err)
	}
	cfg.DBName = ""
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("testdb: open: %v", err)
	}
	defer admin.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "upsink_t_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("testdb: create %s: %v", name, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("mysql", cfg.FormatDSN())
		if err == nil {
			_, _ = db.Exec("DROP DATABASE IF EXISTS " + name)
			db.Close()
		}
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}

// Open returns a *sql.DB on dsn and closes it with t.Cleanup.
func Open(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("testdb: open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
