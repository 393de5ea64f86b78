package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"upsink/internal/testdb"
)

// TestConfigTableDisagrees: a declared table that disagrees with the
// database's is refused at start, in one line naming the table and column;
// a declared table that is missing is created.
func TestConfigTableDisagrees(t *testing.T) {
	dsn := testdb.New(t)
	db := testdb.Open(t, dsn)
	if _, err := db.Exec("CREATE TABLE readings (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY," +
		" received_at DATETIME(6) NOT NULL, device VARCHAR(64) NOT NULL, temp INT NULL) DEFAULT CHARSET=utf8mb4"); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "upsink.toml")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const fresh = `
[[table]]
name = "fresh"
  [[table.column]]
  name = "n"
  type = "int"
`
	write(fresh + `
[[table]]
name = "readings"
  [[table.column]]
  name = "device"
  type = "varchar(64)"
  not_null = true
  [[table.column]]
  name = "temp"
  type = "double"
`)
	var stderr bytes.Buffer
	code := run([]string{"serve", "--config", cfg, "--dsn", dsn, "--listen", "127.0.0.1:0", "--spool-dir", t.TempDir()}, &stderr)
	out := stderr.String()
	if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `table "readings" column "temp"`) {
		t.Fatalf("exit %d, stderr %q: want 2 and one line naming readings.temp", code, out)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'fresh'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("the missing declared table was not created (%d, %v)", n, err)
	}
}
