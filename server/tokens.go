package server

import (
	"errors"
	"maps"
	"strconv"

	"upsink/schema"
)

// Bearer tokens of the ingest tables can change at run time (SIGHUP):
// the handler reads them through an atomic pointer to an immutable map,
// set by SetTokens; until the first SetTokens each table's token is the
// one it was declared with (schema.Table.Token). A lookup is one atomic
// load and one map index by the table's name: no allocation.

// token is the bearer token that table t requires now ("" = none).
func (h *handler) token(t *schema.Table) string {
	if m := h.tokens.Load(); m != nil {
		return (*m)[t.Name]
	}
	return t.Token
}

// SetTokens replaces the bearer tokens of the declared ingest tables for
// requests whose head is read from now on: tokens[name] for each table
// named, none for a declared table it does not name. A name that is not a
// declared table, or a token that is not visible ASCII without spaces, is
// an error and nothing changes.
func (s *Server) SetTokens(tokens map[string]string) error {
	for name, tok := range tokens {
		if s.h.tables[name] == nil {
			return errors.New("server: set tokens: no table " + strconv.Quote(name))
		}
		for _, c := range tok {
			if c <= ' ' || c > '~' {
				return errors.New("server: set tokens: table " + strconv.Quote(name) + ": token must be visible ASCII without spaces")
			}
		}
	}
	m := maps.Clone(tokens)
	if m == nil {
		m = map[string]string{}
	}
	s.h.tokens.Store(&m)
	return nil
}

// Tokens returns the bearer token each declared table requires now, by
// name ("" = none).
func (s *Server) Tokens() map[string]string {
	out := make(map[string]string, len(s.h.tables))
	for name, t := range s.h.tables {
		out[name] = s.h.token(t)
	}
	return out
}
