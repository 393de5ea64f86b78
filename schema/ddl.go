package schema

import (
	"encoding/hex"
	"strings"
)

// CreateSQL is the statement that creates the table if it is missing:
//
//	CREATE TABLE IF NOT EXISTS `name` (
//	  `id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
//	  `received_at` DATETIME(6) NOT NULL,
//	  `col` type NOT NULL|NULL [DEFAULT literal], ...
//	) DEFAULT CHARSET=utf8mb4
//
// Names are backquoted (they are checked by Validate: no quoting needed
// beyond that). A default is canonicalised through AppendValue and written
// as a literal that holds no user text unescaped: numbers bare, dates and
// times in quotes (digits and separators only), strings, JSON and blobs
// as X'hex' (MariaDB stores those bytes unchanged in a utf8mb4 column; the
// _utf8mb4 X'hex' introducer form is mangled for TEXT, BLOB and JSON
// columns by MariaDB 10.11, which keeps it as an unescaped '…' expression). A timestamp default is UTC, so run the
// statement in a session with time_zone = '+00:00' (as the store's is).
// The table must have passed Validate; a default that is not a value of its
// type is left out.
func (t *Table) CreateSQL() string {
	var b strings.Builder
	b.WriteString("CREATE TABLE IF NOT EXISTS `")
	b.WriteString(t.Name)
	b.WriteString("` (`" + ColID + "` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, `" + ColReceivedAt + "` DATETIME(6) NOT NULL")
	for i := range t.Columns {
		c := &t.Columns[i]
		b.WriteString(", `")
		b.WriteString(c.Name)
		b.WriteString("` ")
		b.WriteString(c.Type.SQL())
		if c.NotNull {
			b.WriteString(" NOT NULL")
		} else {
			b.WriteString(" NULL")
		}
		if lit, ok := c.defaultLiteral(); ok {
			b.WriteString(" DEFAULT ")
			b.WriteString(lit)
		}
	}
	b.WriteString(") DEFAULT CHARSET=utf8mb4")
	return b.String()
}

// defaultLiteral is the column's default as an SQL literal.
func (c *Column) defaultLiteral() (string, bool) {
	if c.Default == nil {
		return "", false
	}
	v, err := c.Type.AppendValue(nil, []byte(*c.Default))
	if err != nil {
		return "", false
	}
	switch c.Type.Kind {
	case TinyInt, SmallInt, Int, BigInt, Double, Decimal, Bool:
		return string(v), true // [-+.0-9e] only
	case Date, Datetime, Timestamp:
		return "'" + string(v) + "'", true // [-: .0-9] only
	default: // Varchar, Text, Blob, JSON
		return "X'" + hex.EncodeToString(v) + "'", true
	}
}
