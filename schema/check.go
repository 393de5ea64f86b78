package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Checking an existing table against its declaration.

// Querier is what Check reads the catalogue through: a *sql.DB, *sql.Conn
// or *sql.Tx.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// existing is one row of information_schema.COLUMNS.
type existing struct {
	name, colType, nullable, extra string
	charset, def                   sql.NullString
	seen                           bool
}

// Check compares the table in the current database (DATABASE()) with the
// declaration and returns one line naming the table and the first column
// that disagrees:
//
//   - the table is missing;
//   - id is not BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, or received_at not
//     DATETIME(6) NOT NULL;
//   - a declared column is missing, or has another type (integer display
//     widths such as int(11) are ignored; bool is tinyint(1); json is
//     longtext with a json_valid check, or MySQL's json), or its nullability
//     differs from not_null (either way), or varchar/text/json are not
//     utf8mb4;
//   - a column the declaration lacks is NOT NULL without a default (nor
//     auto_increment nor generated): every ingest into the table would fail.
//     Other extra columns are fine: they get NULL or their default.
//
// Defaults are not compared: a different default changes what an omitted
// field stores, never whether a row can be written.
func (t *Table) Check(ctx context.Context, q Querier) error {
	where := "schema: table " + strconv.Quote(t.Name)
	rows, err := q.QueryContext(ctx, "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, EXTRA, CHARACTER_SET_NAME, COLUMN_DEFAULT"+
		" FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", t.Name)
	if err != nil {
		return fmt.Errorf("%s: read its columns: %w", where, err)
	}
	var cols []existing
	byName := map[string]int{}
	for rows.Next() {
		var e existing
		if err := rows.Scan(&e.name, &e.colType, &e.nullable, &e.extra, &e.charset, &e.def); err != nil {
			rows.Close()
			return fmt.Errorf("%s: read its columns: %w", where, err)
		}
		byName[strings.ToLower(e.name)] = len(cols)
		cols = append(cols, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: read its columns: %w", where, err)
	}
	if len(cols) == 0 {
		return errors.New(where + ": no such table in the database")
	}
	find := func(name string) *existing {
		if i, ok := byName[strings.ToLower(name)]; ok {
			cols[i].seen = true
			return &cols[i]
		}
		return nil
	}
	col := func(name string) string { return where + " column " + strconv.Quote(name) }

	if e := find(ColID); e == nil || normalType(e.colType) != "bigint unsigned" || e.nullable != "NO" || !strings.Contains(strings.ToLower(e.extra), "auto_increment") {
		return errors.New(col(ColID) + ": " + describe(e) + ", want bigint unsigned NOT NULL auto_increment")
	}
	if e := find(ColReceivedAt); e == nil || e.colType != "datetime(6)" || e.nullable != "NO" {
		return errors.New(col(ColReceivedAt) + ": " + describe(e) + ", want datetime(6) NOT NULL")
	}
	var checks map[string]bool // json_valid(`col`) clauses, read when needed
	for i := range t.Columns {
		c := &t.Columns[i]
		e := find(c.Name)
		if e == nil {
			return errors.New(col(c.Name) + ": missing from the existing table (declared " + c.Type.String() + ")")
		}
		got := normalType(e.colType)
		ok := got == c.Type.SQL()
		switch c.Type.Kind {
		case TinyInt:
			ok = ok || (!c.Type.Unsigned && e.colType == "tinyint(1)")
		case Bool:
			ok = e.colType == "tinyint(1)"
		case JSON:
			ok = got == "json"
			if got == "longtext" {
				if checks == nil {
					if checks, err = jsonChecks(ctx, q, t.Name); err != nil {
						return fmt.Errorf("%s: read its check constraints: %w", where, err)
					}
				}
				ok = checks[strings.ToLower(e.name)]
				if !ok {
					return errors.New(col(c.Name) + ": existing type longtext without a json_valid check, declared json")
				}
			}
		}
		if !ok {
			return errors.New(col(c.Name) + ": existing type " + e.colType + ", declared " + c.Type.String())
		}
		switch c.Type.Kind {
		case Varchar, Text, JSON:
			if got != "json" && (!e.charset.Valid || e.charset.String != "utf8mb4") {
				return errors.New(col(c.Name) + ": existing character set " + e.charset.String + ", want utf8mb4")
			}
		}
		if nn := e.nullable == "NO"; nn != c.NotNull {
			if nn {
				return errors.New(col(c.Name) + ": existing column is NOT NULL, declared nullable (add not_null = true, or ALTER the column to NULL)")
			}
			return errors.New(col(c.Name) + ": existing column is nullable, declared not_null")
		}
	}
	for i := range cols {
		e := &cols[i]
		if e.seen || e.nullable == "YES" || e.def.Valid {
			continue
		}
		x := strings.ToLower(e.extra)
		if strings.Contains(x, "auto_increment") || strings.Contains(x, "generated") {
			continue
		}
		return errors.New(col(e.name) + ": not declared, and NOT NULL without a default in the existing table (no row could be inserted)")
	}
	return nil
}

// describe is an existing column's type and nullability, for errors.
func describe(e *existing) string {
	if e == nil {
		return "missing"
	}
	s := "existing " + e.colType
	if e.nullable == "NO" {
		s += " NOT NULL"
	}
	if e.extra != "" {
		s += " " + e.extra
	}
	return s
}

// normalType drops the display width of integer types: int(11) -> int,
// bigint(20) unsigned -> bigint unsigned.
func normalType(s string) string {
	for _, k := range []string{"tinyint(", "smallint(", "int(", "bigint("} {
		if strings.HasPrefix(s, k) {
			if end := strings.IndexByte(s, ')'); end > 0 {
				return s[:len(k)-1] + s[end+1:]
			}
		}
	}
	return s
}

// jsonChecks reads the table's check constraints and returns the columns
// (lower case) that have a json_valid(`col`) check, as MariaDB gives its
// JSON columns.
func jsonChecks(ctx context.Context, q Querier, table string) (map[string]bool, error) {
	rows, err := q.QueryContext(ctx, "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?", table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]bool{}
	for rows.Next() {
		var clause string
		if err := rows.Scan(&clause); err != nil {
			return nil, err
		}
		c := strings.TrimSpace(strings.ToLower(clause))
		if strings.HasPrefix(c, "json_valid(`") && strings.HasSuffix(c, "`)") {
			m[c[len("json_valid(`"):len(c)-2]] = true
		}
	}
	return m, rows.Err()
}
