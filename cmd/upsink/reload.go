package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"

	"upsink/config"
	"upsink/schema"
	"upsink/tlsbridge"
)

// SIGHUP reloads what can change while upsink runs:
//   - the TLS certificate and key (from the --tls-cert and --tls-key files,
//     or new paths the --config file gives them);
//   - the --config file, when there is one: its log_level and its tables'
//     tokens take effect; any other setting or table that changed is listed
//     in one line as needing a restart. The environment is not re-read: a
//     running process's environment cannot change. Flags and UPSINK_*
//     variables keep winning over the file. A file that does not load, or
//     a bad value in it, changes nothing (logged);
//   - the access log is reopened (logrotate).
//
// What changed is logged in one line (msg "upsink: SIGHUP: config
// reloaded", applied=…), after the new log level is in force.

// reloadTarget is the part of *server.Server a reload changes.
type reloadTarget interface {
	SetCertificate(*tls.Certificate)
	SetTokens(map[string]string) error
}

type reloader struct {
	log    *slog.Logger
	level  *slog.LevelVar
	srv    reloadTarget
	set    *settings
	vals   map[string]any // the settings in service, by flag (as parseAs)
	tables []schema.Table // the tables in service
	tls    bool           // HTTPS is on: certificates reload
	// cert and key are the files the certificate in service came from.
	cert, key string
	// reopen reopens the access log; nil without one.
	reopen func() error
}

func newReloader(log *slog.Logger, level *slog.LevelVar, srv reloadTarget, set *settings, tlsOn bool, cert, key string) *reloader {
	r := &reloader{log: log, level: level, srv: srv, set: set, vals: map[string]any{}, tables: set.tables, tls: tlsOn, cert: cert, key: key}
	set.fs.VisitAll(func(f *flag.Flag) { r.vals[f.Name] = current(f.Value) })
	return r
}

// listen calls reload on each SIGHUP until the process ends. It is set up
// before upsink says it serves, so a SIGHUP sent as soon as it does cannot
// kill it.
func (r *reloader) listen() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			r.reload()
		}
	}()
}

// liveFlags can change without a restart (the TLS files only with HTTPS on).
var liveFlags = map[string]bool{"log-level": true, "tls-cert": true, "tls-key": true}

func (r *reloader) reload() {
	var (
		applied, restart []string
		newLevel         *slog.Level
		tokens           map[string]string
		vals             map[string]any
		srcs             map[string]source
	)
	cert, key := r.cert, r.key
	configOK := false
	if r.set.file != nil {
		f, err := config.Load(r.set.file.Path)
		if err == nil {
			vals, srcs, err = r.set.reresolve(f)
		}
		var lvl slog.Level
		levelText, levelFromFile := vals["log-level"].(string)
		if err == nil && levelFromFile {
			if lvl.UnmarshalText([]byte(levelText)) != nil {
				err = badValue(srcs["log-level"], "log-level", fmt.Errorf("bad level %q (want debug, info, warn or error)", levelText))
			}
		}
		if err != nil {
			r.log.Error("upsink: SIGHUP: config not reloaded, keeping the current settings", "err", oneLine(err))
		} else {
			configOK = true
			for _, name := range slices.Sorted(maps.Keys(vals)) {
				old, nv := r.vals[name], vals[name]
				if name == "log-level" {
					ol := r.level.Level()
					if ol != lvl {
						newLevel = &lvl
						applied = append(applied, "log-level="+strings.ToLower(lvl.String()))
					}
					continue
				}
				if reflect.DeepEqual(old, nv) {
					continue
				}
				if liveFlags[name] && r.tls {
					switch name {
					case "tls-cert":
						cert = nv.(string)
					case "tls-key":
						key = nv.(string)
					}
					continue // applied with the certificate, below
				}
				restart = append(restart, name+" "+showValue(name, old)+" -> "+showValue(name, nv))
			}
			var tablesRestart []string
			tokens, tablesRestart = diffTables(r.tables, f.Tables)
			restart = append(restart, tablesRestart...)
			for _, t := range r.tables {
				if tok, ok := tokens[t.Name]; ok && tok != t.Token {
					applied = append(applied, "table "+t.Name+" token")
				}
			}
		}
	}
	if configOK {
		if err := r.srv.SetTokens(tokens); err != nil {
			r.log.Error("upsink: SIGHUP: tokens not changed", "err", err)
		} else {
			for i := range r.tables {
				if tok, ok := tokens[r.tables[i].Name]; ok {
					r.tables[i].Token = tok
				}
			}
		}
		if newLevel != nil {
			r.level.Set(*newLevel)
			r.vals["log-level"] = vals["log-level"]
		}
	}
	if r.tls {
		c, err := tlsbridge.LoadKeyPair(cert, key)
		if err != nil {
			r.log.Error("upsink: SIGHUP: keeping the current certificate", "err", oneLine(err))
		} else {
			r.srv.SetCertificate(c)
			if cert != r.cert || key != r.key {
				applied = append(applied, "tls-cert="+cert, "tls-key="+key)
				r.cert, r.key = cert, key
				r.vals["tls-cert"], r.vals["tls-key"] = cert, key
			}
			r.log.Info("upsink: SIGHUP: certificate reloaded", "cert", cert)
		}
	}
	if r.reopen != nil {
		if err := r.reopen(); err != nil {
			r.log.Error("upsink: SIGHUP: access log not reopened", "err", oneLine(err))
		}
	}
	if r.set.file == nil {
		return
	}
	if configOK {
		a := strings.Join(applied, ", ")
		if a == "" {
			a = "nothing"
		}
		r.log.Info("upsink: SIGHUP: config reloaded", "file", r.set.file.Path, "applied", a)
	}
	if len(restart) > 0 {
		r.log.Warn("upsink: SIGHUP: changed settings need a restart", "settings", strings.Join(restart, ", "))
	}
}

// diffTables compares the tables in service with a reloaded file's: it
// returns the tokens of the tables in both (to apply) and, for a restart,
// the tables added, removed or otherwise changed (columns, unknown_columns).
func diffTables(old, nw []schema.Table) (tokens map[string]string, restart []string) {
	tokens = map[string]string{}
	byName := map[string]*schema.Table{}
	for i := range nw {
		byName[nw[i].Name] = &nw[i]
	}
	for _, o := range old {
		n := byName[o.Name]
		if n == nil {
			restart = append(restart, "table "+o.Name+" removed")
			tokens[o.Name] = o.Token // stays in service, unchanged
			continue
		}
		tokens[o.Name] = n.Token
		a, b := o, *n
		a.Token, b.Token = "", ""
		if !reflect.DeepEqual(a, b) {
			restart = append(restart, "table "+o.Name+" columns or unknown_columns")
		}
		delete(byName, o.Name)
	}
	for _, n := range nw {
		if byName[n.Name] != nil {
			restart = append(restart, "table "+n.Name+" added")
		}
	}
	return tokens, restart
}
