//go:build pprof

package admin

import (
	"net/http"
	"net/http/pprof"
)

// registerPprof serves Go's profiles, for finding where CPU and memory go:
// go build -tags pprof -o bin/upsink ./cmd/upsink, then e.g.
// go tool pprof http://127.0.0.1:9180/debug/pprof/profile?seconds=5 (a
// profile must end within the admin listener's 10 s write timeout). Not in
// the default build: importing net/http/pprof costs about 0.4 MiB of RSS at
// rest (measured), on a server whose idle target is 10 MiB.
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

const pprofBuilt = true
