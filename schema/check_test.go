package schema

import (
	"context"
	"database/sql"
	"strconv"
	"testing"

	"upsink/internal/testdb"
)

// every kind, with defaults, as the config file would declare them
func fullTable() Table {
	tb := Table{Name: "readings", Columns: []Column{
		col("device", "varchar(64)"), col("temp", "double"), col("t8", "tinyint"), col("u8", "tinyint unsigned"), col("i16", "smallint"),
		col("i32", "int unsigned"), col("i64", "bigint"), col("u64", "bigint unsigned"), col("price", "decimal(10,2)"), col("note", "text"),
		col("raw", "blob"), col("ok", "bool"), col("day", "date"), col("at", "datetime(6)"), col("at0", "datetime"), col("ts", "timestamp(3)"), col("doc", "json"),
	}}
	tb.Columns[0].NotNull, tb.Columns[0].Default = true, str("it's a \\ 'quote' ☃")
	tb.Columns[1].Default = str("-1.5e-7")
	tb.Columns[3].NotNull, tb.Columns[3].Default = true, str("255")
	tb.Columns[7].Default = str("18446744073709551615")
	tb.Columns[8].Default = str("-12345678.90")
	tb.Columns[9].Default = str("it's \\ text")
	tb.Columns[10].Default = str("\x00\xff'")
	tb.Columns[11].Default = str("true")
	tb.Columns[12].Default = str("2024-02-29")
	tb.Columns[13].Default = str("2025-06-01T12:00:00.5+02:00")
	tb.Columns[15].NotNull, tb.Columns[15].Default = true, str("2038-01-19 03:14:07.999")
	tb.Columns[16].Default = str(`{"a":[1,"x'\"y"]}`)
	return tb
}

// conn is a connection to a fresh database in UTC, as the store's session is.
func conn(t *testing.T) (*sql.Conn, context.Context) {
	t.Helper()
	ctx := context.Background()
	db := testdb.Open(t, testdb.New(t))
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.ExecContext(ctx, "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone='+00:00'"); err != nil {
		t.Fatal(err)
	}
	return c, ctx
}

func exec(t *testing.T, ctx context.Context, c *sql.Conn, q string) {
	t.Helper()
	if _, err := c.ExecContext(ctx, q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestCreateAndCheck(t *testing.T) {
	c, ctx := conn(t)
	tb := fullTable()
	if err := Validate([]Table{tb}); err != nil {
		t.Fatal(err)
	}
	exec(t, ctx, c, tb.CreateSQL())
	exec(t, ctx, c, tb.CreateSQL()) // IF NOT EXISTS
	if err := tb.Check(ctx, c); err != nil {
		t.Fatalf("check after create: %v", err)
	}
	// The defaults arrive as declared (canonicalised, in UTC).
	exec(t, ctx, c, "INSERT INTO readings (received_at) VALUES (NOW(6))")
	var device, price, day, at, ts, doc, note string
	var temp float64
	var u8 int
	var u64 uint64
	var raw []byte
	var ok bool
	if err := c.QueryRowContext(ctx, "SELECT device, temp, u8, u64, price, note, raw, ok, day, at, ts, doc FROM readings").
		Scan(&device, &temp, &u8, &u64, &price, &note, &raw, &ok, &day, &at, &ts, &doc); err != nil {
		t.Fatal(err)
	}
	got := []string{device, strconv.FormatFloat(temp, 'g', -1, 64), strconv.Itoa(u8), strconv.FormatUint(u64, 10), price, note, string(raw), strconv.FormatBool(ok), day, at, ts, doc}
	want := []string{"it's a \\ 'quote' ☃", "-1.5e-07", "255", "18446744073709551615", "-12345678.90", "it's \\ text", "\x00\xff'", "true", "2024-02-29",
		"2025-06-01 10:00:00.500000", "2038-01-19 03:14:07.999", `{"a":[1,"x'\"y"]}`}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("default %d: got %q, want %q", i, got[i], want[i])
		}
	}
}

// TestAppendValueReadBack: what AppendValue renders, MariaDB stores as
// the same value (strict mode, UTC session).
func TestAppendValueReadBack(t *testing.T) {
	c, ctx := conn(t)
	tb := fullTable()
	exec(t, ctx, c, tb.CreateSQL())
	tests := []struct{ col, in, back string }{
		{"temp", "1e21", "1e+21"}, {"temp", "0.1", "0.1"}, {"temp", "1.7976931348623157e308", "1.7976931348623157e+308"}, {"temp", "5e-324", "5e-324"},
		{"t8", "-128", "-128"}, {"u64", "18446744073709551615", "18446744073709551615"}, {"i64", "-9223372036854775808", "-9223372036854775808"},
		{"price", "-00012345678.9", "-12345678.90"}, {"price", ".5", "0.50"}, {"device", "😀" + string(make([]byte, 0)), "😀"},
		{"at", "2024-02-28T23:00:00.123456-05:30", "2024-02-29 04:30:00.123456"}, {"at0", "1700000000", "2023-11-14 22:13:20"},
		{"ts", "2038-01-19T05:14:07.999+02:00", "2038-01-19 03:14:07.999"}, {"ts", "1", "1970-01-01 00:00:01.000"}, {"day", "9999-12-31", "9999-12-31"},
		{"at0", "1000-01-01 00:00:00", "1000-01-01 00:00:00"}, {"ok", "FALSE", "0"}, {"doc", `[1, {"b": null}]`, `[1, {"b": null}]`},
	}
	types := map[string]Type{}
	for _, cl := range tb.Columns {
		types[cl.Name] = cl.Type
	}
	for _, tt := range tests {
		v, err := types[tt.col].AppendValue(nil, []byte(tt.in))
		if err != nil {
			t.Fatalf("%s %q: %v", tt.col, tt.in, err)
		}
		exec(t, ctx, c, "DELETE FROM readings")
		if _, err := c.ExecContext(ctx, "INSERT INTO readings (received_at, "+tt.col+") VALUES (NOW(6), ?)", string(v)); err != nil {
			t.Fatalf("%s %q as %q: %v", tt.col, tt.in, v, err)
		}
		var back string
		if err := c.QueryRowContext(ctx, "SELECT "+tt.col+" FROM readings").Scan(&back); err != nil {
			t.Fatal(err)
		}
		if back != tt.back {
			t.Errorf("%s %q -> %q: MariaDB has %q, want %q", tt.col, tt.in, v, back, tt.back)
		}
	}
}

func TestCheckDisagreements(t *testing.T) {
	small := func() Table {
		tb := Table{Name: "readings", Columns: []Column{col("device", "varchar(64)"), col("temp", "double"), col("n", "int"), col("doc", "json"), col("ok", "bool")}}
		tb.Columns[0].NotNull = true
		return tb
	}
	tests := []struct {
		name  string
		alter string // applied to the table made from small()
		edit  func(tb *Table)
		want  string // "" = the check passes
	}{
		{"same", "", nil, ""},
		{"other type", "ALTER TABLE readings MODIFY temp INT NULL", nil, `schema: table "readings" column "temp": existing type int(11), declared double`},
		{"missing column", "ALTER TABLE readings DROP COLUMN temp", nil, `schema: table "readings" column "temp": missing from the existing table (declared double)`},
		{"nullable, declared not_null", "ALTER TABLE readings MODIFY device VARCHAR(64) NULL", nil, `schema: table "readings" column "device": existing column is nullable, declared not_null`},
		{"not null, declared nullable", "ALTER TABLE readings MODIFY temp DOUBLE NOT NULL", nil,
			`schema: table "readings" column "temp": existing column is NOT NULL, declared nullable (add not_null = true, or ALTER the column to NULL)`},
		{"shorter varchar", "ALTER TABLE readings MODIFY device VARCHAR(32) NOT NULL", nil, `schema: table "readings" column "device": existing type varchar(32), declared varchar(64)`},
		{"latin1", "ALTER TABLE readings MODIFY device VARCHAR(64) CHARACTER SET latin1 NOT NULL", nil, `schema: table "readings" column "device": existing character set latin1, want utf8mb4`},
		{"unsigned", "ALTER TABLE readings MODIFY n INT UNSIGNED NULL", nil, `schema: table "readings" column "n": existing type int(10) unsigned, declared int`},
		{"json without check", "ALTER TABLE readings MODIFY doc LONGTEXT NULL", nil, `schema: table "readings" column "doc": existing type longtext without a json_valid check, declared json`},
		{"bool as tinyint(4)", "ALTER TABLE readings MODIFY ok TINYINT NULL", nil, `schema: table "readings" column "ok": existing type tinyint(4), declared bool`},
		{"extra nullable column", "ALTER TABLE readings ADD COLUMN extra INT NULL", nil, ""},
		{"extra column with default", "ALTER TABLE readings ADD COLUMN extra INT NOT NULL DEFAULT 0", nil, ""},
		{"extra generated column", "ALTER TABLE readings ADD COLUMN g INT AS (n + 1) VIRTUAL", nil, ""},
		{"extra not null column", "ALTER TABLE readings ADD COLUMN extra INT NOT NULL", nil,
			`schema: table "readings" column "extra": not declared, and NOT NULL without a default in the existing table (no row could be inserted)`},
		{"id not auto_increment", "ALTER TABLE readings MODIFY id BIGINT UNSIGNED NOT NULL", nil,
			`schema: table "readings" column "id": existing bigint(20) unsigned NOT NULL, want bigint unsigned NOT NULL auto_increment`},
		{"received_at datetime(0)", "ALTER TABLE readings MODIFY received_at DATETIME NOT NULL", nil,
			`schema: table "readings" column "received_at": existing datetime NOT NULL, want datetime(6) NOT NULL`},
		{"no such table", "DROP TABLE readings", nil, `schema: table "readings": no such table in the database`},
		{"declared tinyint, table tinyint(1)", "", func(tb *Table) { tb.Columns[4].Type = Type{Kind: TinyInt} }, ""},
		{"declared column the table lacks", "", func(tb *Table) { tb.Columns = append(tb.Columns, col("new", "date")) },
			`schema: table "readings" column "new": missing from the existing table (declared date)`},
		{"column case differs", "", func(tb *Table) { tb.Columns[1].Name = "TEMP" }, ""},
	}
	c, ctx := conn(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exec(t, ctx, c, "DROP TABLE IF EXISTS readings")
			tb := small()
			exec(t, ctx, c, tb.CreateSQL())
			if tt.alter != "" {
				exec(t, ctx, c, tt.alter)
			}
			if tt.edit != nil {
				tt.edit(&tb)
			}
			err := tb.Check(ctx, c)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("check: %v", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Fatalf("check: %v\nwant: %s", err, tt.want)
			}
		})
	}
}

// A table made by hand, with MariaDB's display widths and JSON alias,
// passes the check of the declaration it matches.
func TestCheckHandMadeTable(t *testing.T) {
	c, ctx := conn(t)
	exec(t, ctx, c, "CREATE TABLE m (id bigint(20) unsigned NOT NULL AUTO_INCREMENT, received_at datetime(6) NOT NULL, a int(11), b bigint(20) unsigned NOT NULL DEFAULT 0,"+
		" c tinyint(1), d json, e timestamp(6) NULL, note varchar(10) NULL, PRIMARY KEY (id)) DEFAULT CHARSET=utf8mb4")
	tb := Table{Name: "m", Columns: []Column{col("a", "int"), col("b", "bigint unsigned"), col("c", "bool"), col("d", "json"), col("e", "timestamp(6)")}}
	tb.Columns[1].NotNull = true
	if err := tb.Check(ctx, c); err != nil {
		t.Fatal(err)
	}
}
