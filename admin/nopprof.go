//go:build !pprof

package admin

import "net/http"

// registerPprof does nothing in the default build (see pprof.go).
func registerPprof(*http.ServeMux) {}

const pprofBuilt = false
