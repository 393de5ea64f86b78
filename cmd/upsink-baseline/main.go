// Command upsink-baseline is the plain net/http + database/sql upload server
// that upsink is measured against (see bench/baseline and BENCHMARKS.md).
//
//	upsink-baseline --listen 127.0.0.1:8081 --dsn 'root@unix(/path/sock)/db' [--max-body 1MiB] [--db-conns 16]
//	                [--tls-cert cert.pem --tls-key key.pem]   (HTTPS via ListenAndServeTLS)
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"upsink/bench"
	"upsink/bench/baseline"
)

func main() {
	var (
		cfg     baseline.Config
		maxBody = "1MiB"
	)
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:8081", "HTTP listen address")
	flag.StringVar(&cfg.DSN, "dsn", os.Getenv("UPSINK_DSN"), "go-sql-driver DSN (default $UPSINK_DSN)")
	flag.StringVar(&maxBody, "max-body", maxBody, "largest accepted body")
	flag.IntVar(&cfg.DBConns, "db-conns", 16, "database/sql SetMaxOpenConns")
	flag.DurationVar(&cfg.IdleTimeout, "idle-timeout", 30*time.Second, "http.Server IdleTimeout")
	flag.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate: serve HTTPS (with --tls-key)")
	flag.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	flag.Parse()
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		fmt.Fprintln(os.Stderr, "upsink-baseline: --tls-cert and --tls-key go together")
		os.Exit(2)
	}
	n, err := bench.ParseSize(maxBody)
	if err != nil || cfg.DSN == "" {
		fmt.Fprintln(os.Stderr, "upsink-baseline: need --dsn and a valid --max-body")
		os.Exit(2)
	}
	cfg.MaxBody = n
	s, err := baseline.New(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "upsink-baseline: %v\n", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	err = s.Setup(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "upsink-baseline: %v\n", err)
		os.Exit(1)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.ListenAndServe() }()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	log.Printf("upsink-baseline: serving %s://%s", scheme, cfg.Listen)
	select {
	case err := <-errc:
		if err != nil {
			fmt.Fprintf(os.Stderr, "upsink-baseline: %v\n", err)
			os.Exit(1)
		}
	case <-sigc:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}
}
