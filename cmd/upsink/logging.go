package main

import (
	"fmt"
	"io"
	"log/slog"
)

// newLogger is upsink's logger: slog's TextHandler (--log-format text, the
// default) or JSONHandler (json) on w, at level, which SIGHUP may change.
func newLogger(w io.Writer, format string, level *slog.LevelVar) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("bad --log-format %q (want text or json)", format)
}

// logger checks --log-level and --log-format, naming where a bad one came
// from, and returns the logger they make.
func (s *settings) logger(w io.Writer, levelText, format string, level *slog.LevelVar) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(levelText)); err != nil {
		return nil, badValue(s.src["log-level"], "log-level", fmt.Errorf("bad level %q (want debug, info, warn or error)", levelText))
	}
	level.Set(lvl)
	if format != "text" && format != "json" {
		return nil, badValue(s.src["log-format"], "log-format", fmt.Errorf("bad format %q (want text or json)", format))
	}
	return newLogger(w, format, level)
}
