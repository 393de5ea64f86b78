package schema

import (
	"strings"
	"testing"
)

func str(s string) *string { return &s }

func col(name, typ string) Column {
	ty, err := ParseType(typ)
	if err != nil {
		panic(err)
	}
	return Column{Name: name, Type: ty}
}

func TestValidate(t *testing.T) {
	good := func() []Table {
		return []Table{{Name: "readings", Token: "s3cret-_.~+/=", Columns: []Column{col("device", "varchar(64)"), col("temp", "double")}},
			{Name: "Other_2", Columns: []Column{col("x", "int")}}}
	}
	if err := Validate(good()); err != nil {
		t.Fatalf("good tables: %v", err)
	}
	if err := Validate(nil); err != nil {
		t.Fatalf("no tables: %v", err)
	}
	tests := []struct {
		name string
		edit func(ts []Table)
		want string
	}{
		{"bad table name", func(ts []Table) { ts[0].Name = "1abc" }, `table "1abc": bad name`},
		{"empty table name", func(ts []Table) { ts[0].Name = "" }, `table "": bad name`},
		{"table name with quote", func(ts []Table) { ts[0].Name = "a`b" }, "bad name"},
		{"table name 65 chars", func(ts []Table) { ts[0].Name = strings.Repeat("a", 65) }, "bad name"},
		{"reserved uploads", func(ts []Table) { ts[0].Name = "Uploads" }, "reserved for upsink's own tables"},
		{"reserved upsink_", func(ts []Table) { ts[0].Name = "upsink_batches" }, "reserved"},
		{"duplicate table", func(ts []Table) { ts[1].Name = "READINGS" }, `table "READINGS": declared twice`},
		{"token with space", func(ts []Table) { ts[0].Token = "a b" }, "token must be visible ASCII"},
		{"token non-ascii", func(ts []Table) { ts[0].Token = "é" }, "token must be visible ASCII"},
		{"no columns", func(ts []Table) { ts[1].Columns = nil }, `table "Other_2": no columns`},
		{"bad column name", func(ts []Table) { ts[0].Columns[0].Name = "de-vice" }, `table "readings" column "de-vice": bad name`},
		{"column id", func(ts []Table) { ts[0].Columns[0].Name = "ID" }, `column "ID": name reserved`},
		{"column received_at", func(ts []Table) { ts[0].Columns[0].Name = "received_at" }, "name reserved"},
		{"duplicate column", func(ts []Table) { ts[0].Columns[1].Name = "Device" }, `column "Device": declared twice`},
		{"invalid type", func(ts []Table) { ts[0].Columns[0].Type = Type{Kind: Varchar} }, `invalid type "varchar(0)"`},
		{"unsigned double", func(ts []Table) { ts[0].Columns[1].Type.Unsigned = true }, "invalid type"},
		{"bad default", func(ts []Table) { ts[0].Columns[1].Default = str("warm") }, `column "temp": default "warm": not a number`},
		{"long default", func(ts []Table) { ts[0].Columns[0].Type.Len = 2; ts[0].Columns[0].Default = str("abc") }, "longer than 2 characters"},
		{"bad unknown rule", func(ts []Table) { ts[0].Unknown = 7 }, "unknown-columns"},
	}
	for _, tt := range tests {
		ts := good()
		tt.edit(ts)
		err := Validate(ts)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want one line containing %q", tt.name, err, tt.want)
		}
	}
	// not_null with a default is fine
	ts := good()
	ts[0].Columns[1].NotNull, ts[0].Columns[1].Default = true, str("21.5")
	if err := Validate(ts); err != nil {
		t.Fatalf("not_null + default: %v", err)
	}
}

func TestCreateSQL(t *testing.T) {
	tb := Table{Name: "readings", Columns: []Column{col("device", "varchar(64)"), col("temp", "double"), col("ts", "timestamp(3)"), col("note", "text"), col("raw", "blob"), col("ok", "bool"), col("day", "date"), col("doc", "json")}}
	tb.Columns[0].NotNull, tb.Columns[0].Default = true, str("it's a \\ 'quote'")
	tb.Columns[1].Default = str("+21.50")
	tb.Columns[2].Default = str("2025-06-01T12:00:00+02:00")
	tb.Columns[4].Default = str("\x00\xff")
	tb.Columns[5].Default = str("TRUE")
	tb.Columns[6].Default = str("2024-02-29")
	tb.Columns[7].Default = str(`{"a":1}`)
	want := "CREATE TABLE IF NOT EXISTS `readings` (`id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, `received_at` DATETIME(6) NOT NULL, " +
		"`device` varchar(64) NOT NULL DEFAULT X'697427732061205c202771756f746527', `temp` double NULL DEFAULT 21.5, " +
		"`ts` timestamp(3) NULL DEFAULT '2025-06-01 10:00:00.000', `note` text NULL, `raw` blob NULL DEFAULT X'00ff', `ok` tinyint(1) NULL DEFAULT 1, " +
		"`day` date NULL DEFAULT '2024-02-29', `doc` json NULL DEFAULT X'7b2261223a317d') DEFAULT CHARSET=utf8mb4"
	if got := tb.CreateSQL(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
