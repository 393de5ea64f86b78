package schema

import (
	"errors"
	"strconv"
	"strings"
)

// Checking declarations before anything uses them.

// Validate checks tables as declared: names match ^[A-Za-z_][A-Za-z0-9_]{0,63}$;
// table names are unique and column names unique within their table
// (case-insensitively, as MariaDB compares column names); no table is
// "uploads" or starts with "upsink_" (upsink's own tables); no column is
// id or received_at (upsink adds those); every table has at least one
// column; every type is valid; every default is a value of its column's
// type (AppendValue); a token is visible ASCII without spaces. A column may
// be not_null and have a default. The error names the table and column, on
// one line.
func Validate(tables []Table) error {
	seen := make(map[string]bool, len(tables))
	for i := range tables {
		t := &tables[i]
		if !ValidName(t.Name) {
			return errors.New("schema: table " + strconv.Quote(t.Name) + ": bad name (want [A-Za-z_][A-Za-z0-9_]*, at most 64 characters)")
		}
		low := strings.ToLower(t.Name)
		if low == "uploads" || strings.HasPrefix(low, "upsink_") {
			return errors.New("schema: table " + strconv.Quote(t.Name) + ": name reserved for upsink's own tables (uploads, upsink_*)")
		}
		if seen[low] {
			return errors.New("schema: table " + strconv.Quote(t.Name) + ": declared twice")
		}
		seen[low] = true
		for _, c := range t.Token {
			if c <= ' ' || c > '~' {
				return errors.New("schema: table " + strconv.Quote(t.Name) + ": token must be visible ASCII without spaces")
			}
		}
		if t.Unknown != RejectUnknown && t.Unknown != IgnoreUnknown {
			return errors.New("schema: table " + strconv.Quote(t.Name) + ": bad unknown-columns rule")
		}
		if len(t.Columns) == 0 {
			return errors.New("schema: table " + strconv.Quote(t.Name) + ": no columns")
		}
		cols := make(map[string]bool, len(t.Columns))
		for j := range t.Columns {
			if err := t.validateColumn(&t.Columns[j], cols); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *Table) validateColumn(c *Column, seen map[string]bool) error {
	where := "schema: table " + strconv.Quote(t.Name) + " column " + strconv.Quote(c.Name) + ": "
	if !ValidName(c.Name) {
		return errors.New(where + "bad name (want [A-Za-z_][A-Za-z0-9_]*, at most 64 characters)")
	}
	low := strings.ToLower(c.Name)
	if low == ColID || low == ColReceivedAt {
		return errors.New(where + "name reserved (upsink adds id and received_at to every table)")
	}
	if seen[low] {
		return errors.New(where + "declared twice")
	}
	seen[low] = true
	if pt, err := ParseType(c.Type.String()); err != nil || pt != c.Type {
		return errors.New(where + "invalid type " + strconv.Quote(c.Type.String()))
	}
	if c.Default != nil {
		if _, err := c.Type.AppendValue(nil, []byte(*c.Default)); err != nil {
			return errors.New(where + "default " + strconv.Quote(*c.Default) + ": " + err.Error())
		}
	}
	return nil
}

// ValidName reports whether s is a valid table or column name:
// ^[A-Za-z_][A-Za-z0-9_]{0,63}$.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
