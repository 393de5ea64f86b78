package main

import (
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"upsink/config"
	"upsink/schema"
)

// Where an upsink serve setting comes from. Flags win over the environment
// (UPSINK_<NAME>, the flag's name upper-cased with _ for -), which wins over
// the --config file's [server] table, which wins over the flag's default.
const (
	fromDefault = "default"
	fromFile    = "file"
	fromEnv     = "env"
	fromFlag    = "flag"
)

// source is where one setting's value came from: its kind and, for
// messages, the flag (--max-body), variable (UPSINK_MAX_BODY) or file
// position (upsink.toml:3:1).
type source struct{ kind, where string }

func (s source) String() string {
	if s.kind == fromDefault {
		return s.kind
	}
	return s.kind + " " + s.where
}

// ownEnv are UPSINK_* variables that are not settings: upsink's own
// scripts and tests use them (deploy/mariadb.sh, deploy/run.sh,
// internal/testdb). They are neither applied nor warned about.
var ownEnv = []string{"UPSINK_TEST_DSN", "UPSINK_REQUIRE_DB", "UPSINK_DB_PROFILE", "UPSINK_DB_TIMEOUT", "UPSINK_STOP_TIMEOUT", "UPSINK_REPO",
	"UPSINK_TEST_GALERA_DIR", "UPSINK_GALERA_PORT", "UPSINK_GALERA_PORT_ASKED", "UPSINK_GALERA_TIMEOUT", "UPSINK_GALERA_OPTIONS", "UPSINK_GALERA_AUTOINC", "UPSINK_GALERA_VERBOSE"}

// envName is the variable that sets flag name: max-body -> UPSINK_MAX_BODY.
func envName(flagName string) string {
	return "UPSINK_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// settings are upsink serve's flags resolved from the command line, the
// environment and the --config file, and where each value came from.
type settings struct {
	fs         *flag.FlagSet
	src        map[string]source // by flag name, every flag
	file       *config.File      // the --config file; nil without one
	tables     []schema.Table    // the file's tables
	unknownEnv []string          // UPSINK_* variables that name no flag (sorted)
}

// checked wraps a flag's value so that a bad value's error says what was
// wrong without the flag package's wording; the caller adds the source.
type checked struct {
	flag.Value
	failed *error // the last error of Set, for the caller
}

// String is the wrapped value's; flag.PrintDefaults also calls it on a zero
// checked (to find the zero value), which has none.
func (c checked) String() string {
	if c.Value == nil {
		return ""
	}
	return c.Value.String()
}

func (c checked) Set(v string) error {
	if _, err := parseAs(c.Value, v); err != nil {
		*c.failed = err
		return err
	}
	if err := c.Value.Set(v); err != nil {
		*c.failed = err
		return err
	}
	return nil
}

// parseAs parses text the way the flag whose value is v would, without
// setting it: sizes, durations and integers become int64, time.Duration
// and int; anything else stays a string. Errors are one line naming the
// text.
func parseAs(v flag.Value, text string) (any, error) {
	if c, ok := v.(checked); ok {
		v = c.Value
	}
	g, ok := v.(flag.Getter)
	if !ok {
		return text, nil
	}
	switch g.Get().(type) {
	case time.Duration:
		d, err := time.ParseDuration(text)
		if err != nil {
			return nil, fmt.Errorf("bad duration %q (want e.g. 500ms, 10s, 1m30s)", text)
		}
		return d, nil
	case int:
		n, err := strconv.ParseInt(text, 0, strconv.IntSize)
		if err != nil {
			return nil, fmt.Errorf("bad integer %q", text)
		}
		return int(n), nil
	case int64: // size
		return parseSize(text)
	case bool:
		b, err := strconv.ParseBool(text)
		if err != nil {
			return nil, fmt.Errorf("bad boolean %q (want true or false)", text)
		}
		return b, nil
	}
	return text, nil
}

// current is the typed value a flag holds now (as parseAs returns it).
func current(v flag.Value) any {
	if c, ok := v.(checked); ok {
		v = c.Value
	}
	if g, ok := v.(flag.Getter); ok {
		return g.Get()
	}
	return v.String()
}

// loadSettings parses args into fs, then sets each flag the command line
// did not from its UPSINK_* variable in environ, else from the --config
// file's [server] table (the file itself may be named by --config or
// UPSINK_CONFIG). Errors are one line naming the source of the bad value:
// "--max-body: bad size …", "UPSINK_MAX_BODY: bad size …",
// "config: upsink.toml:3:1: server.max_body: bad size …".
func loadSettings(fs *flag.FlagSet, args, environ []string) (*settings, error) {
	var failed error
	fs.VisitAll(func(f *flag.Flag) { f.Value = checked{f.Value, &failed} })
	if err := fs.Parse(args); err != nil {
		if failed != nil {
			// "invalid value "12XB" for flag -max-body: …": say it our way.
			if _, rest, ok := strings.Cut(err.Error(), " for flag -"); ok {
				name, _, _ := strings.Cut(rest, ":")
				return nil, fmt.Errorf("--%s: %v", name, failed)
			}
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	s := &settings{fs: fs, src: map[string]source{}}
	fs.VisitAll(func(f *flag.Flag) { s.src[f.Name] = source{fromDefault, ""} })
	fs.Visit(func(f *flag.Flag) { s.src[f.Name] = source{fromFlag, "--" + f.Name} })

	env := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "UPSINK_") {
			env[k] = v
		}
	}
	byEnv := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { byEnv[envName(f.Name)] = f.Name })
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		name, ok := byEnv[k]
		if !ok {
			if !slices.Contains(ownEnv, k) {
				s.unknownEnv = append(s.unknownEnv, k)
			}
			continue
		}
		if s.src[name].kind == fromFlag {
			continue
		}
		if err := fs.Set(name, env[k]); err != nil {
			return nil, fmt.Errorf("%s: %v", k, err)
		}
		s.src[name] = source{fromEnv, k}
	}

	path := ""
	if f := fs.Lookup("config"); f != nil {
		path = f.Value.String()
	}
	if path == "" {
		return s, nil
	}
	f, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	s.file, s.tables = f, f.Tables
	for _, st := range f.Server {
		if k := s.src[st.Flag].kind; k == fromFlag || k == fromEnv {
			continue
		}
		if fs.Lookup(st.Flag) == nil {
			return nil, fmt.Errorf("config: %s: server.%s: upsink serve has no --%s", f.Where(st), st.Key, st.Flag)
		}
		if err := fs.Set(st.Flag, st.Value); err != nil {
			return nil, fmt.Errorf("config: %s: server.%s: %v", f.Where(st), st.Key, err)
		}
		s.src[st.Flag] = source{fromFile, f.Where(st)}
	}
	return s, nil
}

// reresolve works out, for a reload, the value each flag would take with
// the file f in place of the one loaded at start: flags and environment
// variables keep their values (the environment of a running process does
// not change), settings from the file or defaults take f's value or the
// default. It returns the typed values (as parseAs) and their sources, or
// the first bad value in f, named as loadSettings names it.
func (s *settings) reresolve(f *config.File) (map[string]any, map[string]source, error) {
	vals, srcs := map[string]any{}, map[string]source{}
	inFile := map[string]config.Setting{}
	for _, st := range f.Server {
		inFile[st.Flag] = st
	}
	var err error
	s.fs.VisitAll(func(fl *flag.Flag) {
		src := s.src[fl.Name]
		if err != nil || src.kind == fromFlag || src.kind == fromEnv {
			return
		}
		text, src := fl.DefValue, source{fromDefault, ""}
		if st, ok := inFile[fl.Name]; ok {
			text, src = st.Value, source{fromFile, f.Where(st)}
		}
		v, e := parseAs(fl.Value, text)
		if e != nil {
			if src.kind == fromFile {
				st := inFile[fl.Name]
				err = fmt.Errorf("config: %s: server.%s: %v", src.where, st.Key, e)
			} else {
				err = fmt.Errorf("--%s: default %q: %v", fl.Name, text, e)
			}
			return
		}
		vals[fl.Name], srcs[fl.Name] = v, src
	})
	for _, st := range f.Server {
		if s.fs.Lookup(st.Flag) == nil && err == nil {
			err = fmt.Errorf("config: %s: server.%s: upsink serve has no --%s", f.Where(st), st.Key, st.Flag)
		}
	}
	return vals, srcs, err
}

// Get makes a size a flag.Getter: its value in bytes.
func (s size) Get() any { return *s.n }

// badValue names the source of a bad value the way loadSettings does:
// "--log-level: …", "UPSINK_LOG_LEVEL: …", "config: FILE:3:1: server.log_level: …",
// or "--log-level: default: …".
func badValue(src source, flagName string, err error) error {
	switch src.kind {
	case fromFile:
		return fmt.Errorf("config: %s: server.%s: %v", src.where, strings.ReplaceAll(flagName, "-", "_"), err)
	case fromDefault:
		return fmt.Errorf("--%s: default: %v", flagName, err)
	}
	return fmt.Errorf("%s: %v", src.where, err)
}
