package config

import (
	"context"
	"testing"

	"upsink/internal/testdb"
)

// TestTablesOnMariaDB: the tables of a loaded file create on a real
// MariaDB (UTC session, as the store's) and then pass their check.
func TestTablesOnMariaDB(t *testing.T) {
	f, err := Load(write(t, good))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := testdb.Open(t, testdb.New(t)).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone='+00:00'"); err != nil {
		t.Fatal(err)
	}
	for i := range f.Tables {
		tb := &f.Tables[i]
		if _, err := c.ExecContext(ctx, tb.CreateSQL()); err != nil {
			t.Fatalf("%s: %v", tb.CreateSQL(), err)
		}
		if err := tb.Check(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	var ts, at string
	if _, err := c.ExecContext(ctx, "INSERT INTO readings (received_at, device) VALUES (NOW(6), 'd')"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "INSERT INTO events (received_at) VALUES (NOW(6))"); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRowContext(ctx, "SELECT (SELECT ts FROM readings), (SELECT at FROM events)").Scan(&ts, &at); err != nil {
		t.Fatal(err)
	}
	if ts != "2025-06-01 10:00:00.000000" || at != "2025-01-02 03:04:05.500" {
		t.Fatalf("defaults: ts %q at %q", ts, at)
	}
}
