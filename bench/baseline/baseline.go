// Package baseline is the server a Go developer would typically write instead
// of upsink: net/http, database/sql with go-sql-driver/mysql, one autocommit
// INSERT per upload. It exists only to be measured beside upsink.
package baseline

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Config of the baseline server.
type Config struct {
	Listen      string
	DSN         string
	MaxBody     int64
	DBConns     int
	IdleTimeout time.Duration
	TLSCert     string // with TLSKey: serve HTTPS (ListenAndServeTLS)
	TLSKey      string
}

const createUploads = `CREATE TABLE IF NOT EXISTS uploads (
  id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
  stream VARCHAR(64) CHARACTER SET ascii NOT NULL,
  received_at DATETIME(6) NOT NULL,
  remote_addr VARCHAR(64) CHARACTER SET ascii NOT NULL,
  content_type VARBINARY(255) NOT NULL,
  body LONGBLOB NOT NULL)`

const insertUpload = `INSERT INTO uploads (stream, received_at, remote_addr, content_type, body) VALUES (?,?,?,?,?)`

// Server is the baseline HTTP server.
type Server struct {
	cfg  Config
	db   *sql.DB
	http *http.Server
}

// New opens the database pool (lazily, as database/sql does).
func New(cfg Config) (*Server, error) {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.DBConns <= 0 {
		cfg.DBConns = 16
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	mc, err := mysql.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	mc.Loc = time.UTC
	db, err := sql.Open("mysql", mc.FormatDSN())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(cfg.DBConns)
	db.SetMaxIdleConns(cfg.DBConns)
	db.SetConnMaxLifetime(time.Hour)
	s := &Server{cfg: cfg, db: db}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upload/{stream}", s.upload)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	s.http = &http.Server{
		Addr:              cfg.Listen,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
	}
	return s, nil
}

// Setup waits (bounded by ctx) for the database and creates the table.
func (s *Server) Setup(ctx context.Context) error {
	for {
		err := s.db.PingContext(ctx)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("database: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	_, err := s.db.ExecContext(ctx, createUploads)
	return err
}

// Handler is the server's HTTP handler (for tests).
func (s *Server) Handler() http.Handler { return s.http.Handler }

// ListenAndServe serves until Shutdown.
func (s *Server) ListenAndServe() error {
	var err error
	if s.cfg.TLSCert != "" || s.cfg.TLSKey != "" {
		err = s.http.ListenAndServeTLS(s.cfg.TLSCert, s.cfg.TLSKey)
	} else {
		err = s.http.ListenAndServe()
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, waits for requests in progress, closes the pool.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	s.db.Close()
	return err
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.db.PingContext(ctx); err != nil {
		http.Error(w, "database unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ready\n")
}

func validStream(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	if !validStream(stream) {
		http.Error(w, "bad stream name", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	ctype := r.Header.Get("Content-Type")
	if len(ctype) > 255 {
		ctype = ctype[:255]
	}
	remote := r.RemoteAddr
	if len(remote) > 64 {
		remote = remote[:64]
	}
	res, err := s.db.ExecContext(r.Context(), insertUpload, stream, time.Now().UTC(), remote, []byte(ctype), body)
	if err != nil {
		log.Printf("insert: %v", err)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "database unavailable: upload not stored", http.StatusServiceUnavailable)
		return
	}
	id, err := res.LastInsertId()
	if err != nil {
		http.Error(w, "database error", http.StatusInternalServerError)
		return
	}
	out := make([]byte, 0, 64+len(stream))
	out = append(out, `{"id":`...)
	out = strconv.AppendUint(out, uint64(id), 10)
	out = append(out, `,"stream":"`...)
	out = append(out, stream...)
	out = append(out, `","bytes":`...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write(out)
}
