// Package admin is upsink's admin listener (--admin-listen, loopback by
// default, never an upload port): GET /metrics in the Prometheus text
// format, GET /status, a small self-refreshing HTML page (status.go), and,
// in a binary built with -tags pprof, Go's profiles under /debug/pprof/. It is a small net/http server: a scraper or an operator, not
// clients, connect to it, so a goroutine per connection is fine here.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"upsink/metrics"
)

// Server is a running admin listener.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Start listens on addr and serves m's metrics at /metrics and, with a
// sampler, the status page at /status.
func Start(addr string, m *metrics.Set, status *Sampler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := m.WritePrometheus(w); err != nil {
			log.Warn("admin: write metrics", "err", err)
		}
	})
	if status != nil {
		mux.Handle("GET /status", status)
	}
	registerPprof(mux) // with -tags pprof only (pprof.go)
	s := &Server{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin: serve", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the listener, letting scrapes in progress finish (at most 2 s).
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
