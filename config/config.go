// Package config loads upsink's TOML configuration file (upsink serve
// --config FILE): the tables structured ingest writes into, and optionally
// the server's settings. It only reads and checks the file; the command
// applies the settings (flags and UPSINK_* variables win over the file) and
// hands the tables to the server.
//
// The layout:
//
//	[server]                  # optional; every key is an `upsink serve` flag,
//	listen = "127.0.0.1:8080" # its name with _ for -, its value as the flag takes it:
//	dsn = "root@unix(/run/mysqld/mysqld.sock)/upsink"
//	max_body = "1MiB"         # sizes and durations as strings ("1MiB", "10s"),
//	batch_rows = 1000         # counts as integers (or strings)
//	spool_dir = "var/spool"   # paths relative to the working directory, as flags
//
//	[[table]]                 # one per table
//	name = "readings"
//	token = "s3cret"          # optional: then Authorization: Bearer s3cret is required
//	unknown_columns = "reject" # or "ignore" (default "reject")
//	  [[table.column]]        # one per column, in order
//	  name = "device"
//	  type = "varchar(64)"
//	  not_null = true         # optional, default false
//	  default = "unknown"     # optional; a string, number, boolean or TOML date/time
//
// A key the layout does not have is an error naming it with its line and
// column, as are TOML syntax errors and values of the wrong TOML type. The
// tables are checked with schema.Validate.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"upsink/schema"
)

// File is a loaded configuration file.
type File struct {
	Path string
	// Server holds the [server] settings present in the file, in the order
	// of ServerFlags.
	Server []Setting
	// Tables are the declared tables, valid (schema.Validate), in file order.
	Tables []schema.Table
}

// Setting is one [server] key: the flag it sets and the flag's text for
// its value (flag.FlagSet.Set takes it).
type Setting struct {
	Key   string // as in the file: max_body
	Flag  string // the upsink serve flag: max-body
	Value string // "1MiB"; integers and booleans in decimal / true, false
	// Line and Col are where the key is written in the file (1-based;
	// 0 when unknown).
	Line, Col int
}

// Where is "PATH:LINE:COL" of the setting in f (or PATH alone when the
// position is unknown), for messages.
func (f *File) Where(s Setting) string {
	if s.Line == 0 {
		return f.Path
	}
	return f.Path + ":" + strconv.Itoa(s.Line) + ":" + strconv.Itoa(s.Col)
}

// server is the [server] table: one key per upsink serve flag (but
// --config). Values are `any` so that a size may be written "1MiB" or
// 1048576; the flag parses them.
type server struct {
	Listen              any `toml:"listen"`
	DSN                 any `toml:"dsn"`
	MaxBody             any `toml:"max_body"`
	MaxInflight         any `toml:"max_inflight"`
	MemoryLimit         any `toml:"memory_limit"`
	HeaderTimeout       any `toml:"header_timeout"`
	IdleTimeout         any `toml:"idle_timeout"`
	RetryAfter          any `toml:"retry_after"`
	Queue               any `toml:"queue"`
	BatchRows           any `toml:"batch_rows"`
	Loops               any `toml:"loops"`
	MaxConns            any `toml:"max_conns"`
	ConnMemory          any `toml:"conn_memory"`
	MinBodyRate         any `toml:"min_body_rate"`
	BodyRateGrace       any `toml:"body_rate_grace"`
	SocketRcvbuf        any `toml:"socket_rcvbuf"`
	SocketSndbuf        any `toml:"socket_sndbuf"`
	ShutdownTimeout     any `toml:"shutdown_timeout"`
	LogLevel            any `toml:"log_level"`
	LogFormat           any `toml:"log_format"`
	Massif              any `toml:"massif"`
	MassifInterval      any `toml:"massif_interval"`
	TLSListen           any `toml:"tls_listen"`
	TLSCert             any `toml:"tls_cert"`
	TLSKey              any `toml:"tls_key"`
	TLSHandshakeTimeout any `toml:"tls_handshake_timeout"`
	SpoolDir            any `toml:"spool_dir"`
	SpoolMax            any `toml:"spool_max"`
	SpoolAfter          any `toml:"spool_after"`
	Writers             any `toml:"writers"`
	IdempotencyTTL      any `toml:"idempotency_ttl"`
	AdminListen         any `toml:"admin_listen"`
	AccessLog           any `toml:"access_log"`
	HTTP2               any `toml:"http2"`
}

type tableDecl struct {
	Name           *string      `toml:"name"`
	Token          string       `toml:"token"`
	UnknownColumns string       `toml:"unknown_columns"`
	Column         []columnDecl `toml:"column"`
}

type columnDecl struct {
	Name    *string `toml:"name"`
	Type    *string `toml:"type"`
	NotNull bool    `toml:"not_null"`
	Default any     `toml:"default"`
}

type document struct {
	Server server      `toml:"server"`
	Table  []tableDecl `toml:"table"`
}

// ServerFlags are the upsink serve flags the [server] table can set, in
// the order of its keys (a key is its flag with _ for -).
func ServerFlags() []string {
	st := reflect.TypeFor[server]()
	out := make([]string, st.NumField())
	for i := range out {
		out[i] = strings.ReplaceAll(st.Field(i).Tag.Get("toml"), "_", "-")
	}
	return out
}

// Load reads, parses and checks the file at path. Errors are one line:
// "config: PATH:LINE:COL: ..." where the position is known, else
// "config: PATH: ...".
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load of data already read; path is only for messages.
func Parse(path string, data []byte) (*File, error) {
	var doc document
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, decodeError(path, err)
	}
	f := &File{Path: path}
	pos := serverKeyPositions(data)
	sv := reflect.ValueOf(doc.Server)
	for i, flagName := range ServerFlags() {
		v := sv.Field(i).Interface()
		if v == nil {
			continue
		}
		key := sv.Type().Field(i).Tag.Get("toml")
		text, ok := settingText(v)
		if _, list := v.([]any); list && key != "dsn" {
			ok = false // only dsn takes a list
		}
		if !ok {
			want := "a string, an integer or a boolean"
			if key == "dsn" {
				want = "a string or an array of strings"
			}
			return nil, fmt.Errorf("config: %s: server.%s: want %s, got %s", path, key, want, tomlType(v))
		}
		p := pos[key]
		f.Server = append(f.Server, Setting{Key: key, Flag: flagName, Value: text, Line: p.Line, Col: p.Column})
	}
	for i := range doc.Table {
		t, err := table(&doc.Table[i], i)
		if err != nil {
			return nil, fmt.Errorf("config: %s: %w", path, err)
		}
		f.Tables = append(f.Tables, t)
	}
	if err := schema.Validate(f.Tables); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return f, nil
}

func table(d *tableDecl, i int) (schema.Table, error) {
	var t schema.Table
	if d.Name == nil {
		return t, errors.New("table #" + strconv.Itoa(i+1) + ": no name")
	}
	t.Name, t.Token = *d.Name, d.Token
	where := "table " + strconv.Quote(t.Name)
	switch d.UnknownColumns {
	case "", "reject":
		t.Unknown = schema.RejectUnknown
	case "ignore":
		t.Unknown = schema.IgnoreUnknown
	default:
		return t, errors.New(where + ": unknown_columns = " + strconv.Quote(d.UnknownColumns) + " (want \"reject\" or \"ignore\")")
	}
	for j := range d.Column {
		cd := &d.Column[j]
		if cd.Name == nil {
			return t, errors.New(where + " column #" + strconv.Itoa(j+1) + ": no name")
		}
		c := schema.Column{Name: *cd.Name, NotNull: cd.NotNull}
		where := where + " column " + strconv.Quote(c.Name)
		if cd.Type == nil {
			return t, errors.New(where + ": no type")
		}
		var err error
		if c.Type, err = schema.ParseType(*cd.Type); err != nil {
			return t, errors.New(where + ": " + err.Error())
		}
		if cd.Default != nil {
			s, ok := defaultText(cd.Default)
			if !ok {
				return t, errors.New(where + ": default: want a string, number, boolean, date or date-time, got " + tomlType(cd.Default))
			}
			c.Default = &s
		}
		t.Columns = append(t.Columns, c)
	}
	return t, nil
}

// settingText is a [server] value as its flag's text.
func settingText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case int64:
		return strconv.FormatInt(v, 10), true
	case bool:
		return strconv.FormatBool(v), true
	case []any: // a list of strings (dsn = ["...", "..."]), as one comma-separated text
		parts := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return "", false
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), len(parts) > 0
	}
	return "", false
}

// defaultText is a column default as the text schema.Type.AppendValue
// reads: TOML numbers in decimal, booleans true/false, dates as
// YYYY-MM-DD, local date-times as YYYY-MM-DDTHH:MM:SS[.f] (UTC, by the
// schema's rule), offset date-times in RFC 3339.
func defaultText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case int64:
		return strconv.FormatInt(v, 10), true
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	case toml.LocalDate:
		return v.String(), true
	case toml.LocalDateTime:
		return v.String(), true
	case time.Time:
		return v.Format(time.RFC3339Nano), true
	}
	return "", false
}

func tomlType(v any) string {
	switch v.(type) {
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case float64:
		return "a float"
	case toml.LocalTime:
		return "a time of day"
	case toml.LocalDate, toml.LocalDateTime, time.Time:
		return "a date"
	}
	return fmt.Sprintf("%T", v)
}

// decodeError turns the TOML library's errors into one line with the
// position: unknown keys (all of them), syntax errors, wrong value types.
func decodeError(path string, err error) error {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		var b strings.Builder
		for i, e := range sm.Errors {
			if i > 0 {
				b.WriteString("; ")
			}
			row, col := e.Position()
			fmt.Fprintf(&b, "%s:%d:%d: unknown key %s", path, row, col, strings.Join(e.Key(), "."))
		}
		return errors.New("config: " + b.String())
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		// "cannot decode TOML string into struct field config.columnDecl.NotNull of type bool"
		if i := strings.Index(msg, " into struct field "); i >= 0 {
			if j := strings.LastIndex(msg, " of type "); j > i {
				msg = msg[:i] + " into " + goTypeName(msg[j+len(" of type "):])
			}
		}
		if k := de.Key(); len(k) > 0 {
			msg = strings.Join(k, ".") + ": " + msg
		}
		return fmt.Errorf("config: %s:%d:%d: %s", path, row, col, msg)
	}
	return fmt.Errorf("config: %s: %v", path, strings.ReplaceAll(err.Error(), "\n", "; "))
}

// goTypeName names a destination type of the decoder in TOML's words.
func goTypeName(t string) string {
	switch t = strings.TrimPrefix(t, "*"); t {
	case "[]config.tableDecl":
		return "an array of tables ([[table]])"
	case "[]config.columnDecl":
		return "an array of tables ([[table.column]])"
	case "config.server":
		return "a table ([server])"
	}
	return t
}

// serverKeyPositions finds where each [server] key is written: under a
// [server] header, as server.KEY = …, or in server = { KEY = … }. The
// document has already decoded, so a parse error here only ends the search.
func serverKeyPositions(data []byte) map[string]unstable.Position {
	out := map[string]unstable.Position{}
	var p unstable.Parser
	p.Reset(data)
	var table []string
	keyOf := func(it unstable.Iterator) []string {
		var k []string
		for it.Next() {
			k = append(k, string(it.Node().Data))
		}
		return k
	}
	record := func(path []string, kv *unstable.Node) {
		if len(path) == 2 && path[0] == "server" {
			if _, seen := out[path[1]]; !seen {
				out[path[1]] = p.Shape(kv.Raw).Start
			}
		}
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyOf(e.Children())
		case unstable.KeyValue:
			path := append(append([]string(nil), table...), keyOf(e.Key())...)
			record(path, e)
			if v := e.Value(); len(path) == 1 && path[0] == "server" && v.Kind == unstable.InlineTable {
				it := v.Children()
				for it.Next() {
					kv := it.Node()
					record(append([]string{"server"}, keyOf(kv.Key())...), kv)
				}
			}
		}
	}
	return out
}
