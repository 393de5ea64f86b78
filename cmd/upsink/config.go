package main

import (
	"flag"
	"fmt"

	"upsink/config"
	"upsink/schema"
)

// applyConfig loads the --config file at path, sets each flag its [server]
// table names unless the command line set that flag (flags win over the
// file; the file wins over a flag's default, $UPSINK_DSN included), and
// returns its tables, valid.
func applyConfig(fs *flag.FlagSet, path string) ([]schema.Table, error) {
	f, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	for _, s := range f.Server {
		if given[s.Flag] {
			continue
		}
		if fs.Lookup(s.Flag) == nil {
			return nil, fmt.Errorf("config: %s: server.%s: upsink serve has no --%s", path, s.Key, s.Flag)
		}
		if err := fs.Set(s.Flag, s.Value); err != nil {
			return nil, fmt.Errorf("config: %s: server.%s = %q: %v", path, s.Key, s.Value, err)
		}
	}
	return f.Tables, nil
}
