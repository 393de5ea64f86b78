package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"upsink/config"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "upsink.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigCoversServeFlags: every upsink serve flag but --config can be
// set in [server], and every [server] key is a flag.
func TestConfigCoversServeFlags(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"serve", "-h"}, &out); code != 0 {
		t.Fatalf("serve -h: %d", code)
	}
	if strings.Contains(out.String(), "panic") {
		t.Fatalf("serve -h printed a panic:\n%s", out.String())
	}
	var flags []string
	for _, line := range strings.Split(out.String(), "\n") {
		if name, ok := strings.CutPrefix(line, "  -"); ok {
			name, _, _ = strings.Cut(name, " ")
			if name != "config" {
				flags = append(flags, name)
			}
		}
	}
	keys := config.ServerFlags()
	slices.Sort(flags)
	slices.Sort(keys)
	if !slices.Equal(flags, keys) {
		t.Fatalf("serve flags %v\n[server] keys %v", flags, keys)
	}
}
