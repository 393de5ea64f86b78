// Package schema is the shape of the tables structured ingest writes
// (issue 9): a table's columns and their types as declared in the config
// file, parsed and checked once at start (Validate). It knows the types'
// SQL and their bounds: Type.AppendValue checks one field's text and renders
// what LOAD DATA reads (the hot path of ingest; values.go), Table.CreateSQL
// is the DDL, and Table.Check compares an existing table with its
// declaration through information_schema (the only database access here).
// It reads no input (the config package loads the declarations, the ingest
// package turns request bodies into rows of them).
//
// Every table also has the two columns upsink adds: id BIGINT UNSIGNED
// AUTO_INCREMENT PRIMARY KEY and received_at DATETIME(6).
//
// Values of a Table and its Columns are built at start and read-only after:
// any goroutine may read them.
package schema

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is a column's type family.
type Kind uint8

const (
	KindInvalid Kind = iota
	TinyInt          // TINYINT [UNSIGNED]: -128..127 / 0..255
	SmallInt         // SMALLINT [UNSIGNED]
	Int              // INT [UNSIGNED]
	BigInt           // BIGINT [UNSIGNED]
	Double           // DOUBLE: finite IEEE 754 binary64
	Decimal          // DECIMAL(Prec,Scale)
	Varchar          // VARCHAR(Len), utf8mb4: Len characters
	Text             // TEXT, utf8mb4: at most 65,535 bytes
	Blob             // BLOB: at most 65,535 bytes (base64 in JSON)
	Bool             // BOOL (TINYINT(1)): true/false, 1/0
	Date             // DATE
	Datetime         // DATETIME(Prec)
	Timestamp        // TIMESTAMP(Prec): 1970-01-01 00:00:01 .. 2038-01-19 03:14:07 UTC
	JSON             // JSON (LONGTEXT with a JSON_VALID check in MariaDB)
)

var kindNames = [...]string{"", "tinyint", "smallint", "int", "bigint", "double", "decimal",
	"varchar", "text", "blob", "bool", "date", "datetime", "timestamp", "json"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && k != KindInvalid {
		return kindNames[k]
	}
	return "invalid"
}

// Type is a column type: its kind and parameters.
type Type struct {
	Kind     Kind
	Unsigned bool // integer kinds only
	Len      int  // Varchar: characters (1..16383)
	Prec     int  // Decimal: digits (1..65); Datetime, Timestamp: fractional digits (0..6)
	Scale    int  // Decimal: digits after the point (0..min(30, Prec))
}

// Column is one declared column.
type Column struct {
	Name    string
	Type    Type
	NotNull bool
	Default *string // the default's text as declared (nil: none); checked against Type at start
}

// UnknownColumns says what a record's field naming no column does.
type UnknownColumns uint8

const (
	RejectUnknown UnknownColumns = iota // 400
	IgnoreUnknown                       // dropped
)

// Table is one declared table.
type Table struct {
	Name    string
	Token   string // "" = no token required; else Authorization: Bearer Token
	Unknown UnknownColumns
	Columns []Column
}

// The columns upsink adds to every table; declared columns may not use
// these names.
const (
	ColID         = "id"
	ColReceivedAt = "received_at"
)

// ParseType parses a type as written in the config file, case-insensitive:
// tinyint, smallint, int, bigint (each optionally followed by "unsigned"),
// double, decimal(p,s), varchar(n), text, blob, bool, date, datetime(p),
// timestamp(p) (p optional, default 0), json.
func ParseType(s string) (Type, error) {
	in := strings.ToLower(strings.TrimSpace(s))
	var t Type
	name, rest := in, ""
	if i := strings.IndexAny(in, "( "); i >= 0 {
		name, rest = in[:i], strings.TrimSpace(in[i:])
	}
	var args []int
	if strings.HasPrefix(rest, "(") {
		end := strings.IndexByte(rest, ')')
		if end < 0 {
			return t, fmt.Errorf("type %q: missing )", s)
		}
		for _, a := range strings.Split(rest[1:end], ",") {
			n, err := strconv.Atoi(strings.TrimSpace(a))
			if err != nil || n < 0 {
				return t, fmt.Errorf("type %q: bad parameter %q", s, strings.TrimSpace(a))
			}
			args = append(args, n)
		}
		rest = strings.TrimSpace(rest[end+1:])
	}
	switch name {
	case "tinyint", "smallint", "int", "integer", "bigint":
		t.Kind = map[string]Kind{"tinyint": TinyInt, "smallint": SmallInt, "int": Int, "integer": Int, "bigint": BigInt}[name]
		if len(args) > 0 {
			return t, fmt.Errorf("type %q: integer types take no parameters", s)
		}
		if rest == "unsigned" {
			t.Unsigned, rest = true, ""
		}
	case "double":
		t.Kind = Double
	case "decimal":
		t.Kind = Decimal
		t.Prec, t.Scale = 10, 0
		if len(args) > 0 {
			t.Prec = args[0]
		}
		if len(args) > 1 {
			t.Scale = args[1]
		}
		if len(args) > 2 || t.Prec < 1 || t.Prec > 65 || t.Scale > 30 || t.Scale > t.Prec {
			return t, fmt.Errorf("type %q: decimal(p,s) needs 1 <= p <= 65, 0 <= s <= min(30, p)", s)
		}
		args = nil
	case "varchar":
		t.Kind = Varchar
		if len(args) != 1 || args[0] < 1 || args[0] > 16383 {
			return t, fmt.Errorf("type %q: varchar(n) needs 1 <= n <= 16383", s)
		}
		t.Len, args = args[0], nil
	case "text":
		t.Kind = Text
	case "blob":
		t.Kind = Blob
	case "bool", "boolean":
		t.Kind = Bool
	case "date":
		t.Kind = Date
	case "datetime", "timestamp":
		t.Kind = Datetime
		if name == "timestamp" {
			t.Kind = Timestamp
		}
		if len(args) > 1 || (len(args) == 1 && args[0] > 6) {
			return t, fmt.Errorf("type %q: %s(p) needs 0 <= p <= 6", s, name)
		}
		if len(args) == 1 {
			t.Prec = args[0]
		}
		args = nil
	case "json":
		t.Kind = JSON
	default:
		return t, fmt.Errorf("type %q: unknown type (want tinyint, smallint, int, bigint [unsigned], double, decimal(p,s), varchar(n), text, blob, bool, date, datetime(p), timestamp(p) or json)", s)
	}
	if len(args) > 0 {
		return t, fmt.Errorf("type %q: %s takes no parameters", s, name)
	}
	if rest != "" {
		return t, fmt.Errorf("type %q: unexpected %q", s, rest)
	}
	return t, nil
}

// SQL is the type as MariaDB's CREATE TABLE takes it (and as
// information_schema.COLUMNS.COLUMN_TYPE shows it, for the integer kinds
// without display widths).
func (t Type) SQL() string {
	u := ""
	if t.Unsigned {
		u = " unsigned"
	}
	switch t.Kind {
	case TinyInt, SmallInt, Int, BigInt:
		return t.Kind.String() + u
	case Double:
		return "double"
	case Decimal:
		return "decimal(" + strconv.Itoa(t.Prec) + "," + strconv.Itoa(t.Scale) + ")"
	case Varchar:
		return "varchar(" + strconv.Itoa(t.Len) + ")"
	case Text:
		return "text"
	case Blob:
		return "blob"
	case Bool:
		return "tinyint(1)"
	case Date:
		return "date"
	case Datetime, Timestamp:
		s := t.Kind.String()
		if t.Prec > 0 {
			s += "(" + strconv.Itoa(t.Prec) + ")"
		}
		return s
	case JSON:
		return "json"
	}
	return "invalid"
}

// String is the type as the config file writes it.
func (t Type) String() string {
	if t.Kind == Bool {
		return "bool"
	}
	return t.SQL()
}

// LoadEscape maps a byte to the character that follows the backslash in
// its LOAD DATA escape, or 0 when the byte is written as is: the escaping of
// the text the store loads with `FIELDS TERMINATED BY '\t' ESCAPED BY '\\'
// LINES TERMINATED BY '\n'` (and no ENCLOSED BY). The field separator, the
// line separator, the escape character and NUL are escaped, so every byte
// string round-trips; a literal "\N" becomes `\\N` and is not read as NULL.
// The ingest decoder (rows) and the store (uploads) both escape by it.
var LoadEscape = [256]byte{0: '0', '\t': 't', '\n': 'n', '\\': '\\'}
