// Command upsink serves HTTP uploads into MariaDB/MySQL in bounded memory.
//
//	upsink serve [--config FILE] [--listen ADDR] [--dsn DSN[,DSN...]] [limits...]
//	upsink check-config [--config FILE] [flags...]
//	upsink version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"upsink/accesslog"
	"upsink/admin"
	"upsink/massif"
	"upsink/metrics"
	"upsink/schema"
	"upsink/server"
	"upsink/store"
	"upsink/tlsbridge"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: upsink serve [flags] | upsink check-config [flags] | upsink gencert --dir DIR | upsink version")
		return 2
	}
	switch args[0] {
	case "version", "--version", "-version":
		fmt.Println("upsink", version)
		return 0
	case "serve":
		return serve(args[1:], stderr, nil)
	case "check-config":
		return serve(args[1:], stderr, os.Stdout)
	case "gencert":
		return gencert(args[1:], stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stderr, "usage: upsink serve [flags] | upsink version (upsink serve -h lists the flags)")
		return 0
	default:
		fmt.Fprintf(stderr, "upsink: unknown command %q (want serve, check-config, gencert or version)\n", args[0])
		return 2
	}
}

// size is a byte count flag that takes 1048576, 1MiB, 512KiB, 1GiB.
type size struct{ n *int64 }

func (s size) String() string {
	if s.n == nil {
		return ""
	}
	return strconv.FormatInt(*s.n, 10)
}

func (s size) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s.n = n
	return nil
}

func parseSize(v string) (int64, error) {
	mult := int64(1)
	num := v
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(v, u.suf) {
			num, mult = strings.TrimSuffix(v, u.suf), u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (want bytes, or a number with KiB, MiB or GiB)", v)
	}
	return n * mult, nil
}

// serve runs upsink serve; with check non-nil it is upsink check-config:
// everything is checked as serve would (no port bound, no database
// touched) and the effective settings are written to check.
func serve(args []string, stderr io.Writer, check io.Writer) int {
	cmd := "upsink serve"
	if check != nil {
		cmd = "upsink check-config"
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		cfg      server.Config
		memLimit int64 = 48 << 20
		logLevel       = "info"
	)
	cfg.MaxBody, cfg.MaxInflight = 1<<20, 32<<20
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "HTTP listen address host:port")
	fs.Var(dsnList{&cfg.Store.DSNs}, "dsn", "MariaDB/MySQL DSN in go-sql-driver form (or $UPSINK_DSN); several (repeated, or comma-separated) are nodes of one Galera cluster in order of preference")
	fs.IntVar(&cfg.Store.Writers, "writers", 1, "database connections writing batches at once (more can help on a slow-committing database, e.g. Galera; see BENCHMARKS.md)")
	fs.Var(size{&cfg.MaxBody}, "max-body", "largest accepted upload body (default 1MiB)")
	http2 := fs.Bool("http2", true, "speak HTTP/2 too: h2 by ALPN on --tls-listen, h2c with prior knowledge on --listen")
	fs.Var(size{&cfg.MaxInflight}, "max-inflight", "global budget for bodies being received or committed (default 32MiB)")
	fs.Var(size{&memLimit}, "memory-limit", "Go soft memory limit (default 48MiB; 0 = none)")
	fs.DurationVar(&cfg.HeaderTimeout, "header-timeout", 10*time.Second, "a request head must be complete within this")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 30*time.Second, "idle keep-alive connections and stalled bodies are closed after this")
	fs.DurationVar(&cfg.RetryAfter, "retry-after", time.Second, "Retry-After sent with 503")
	fs.IntVar(&cfg.Store.QueueLen, "queue", 0, "commit queue length in uploads (default: one per possible connection, so it never fills before the byte budget does)")
	fs.IntVar(&cfg.Store.MaxBatchRows, "batch-rows", 1000, "most rows per committed batch")
	fs.IntVar(&cfg.Loops, "loops", 0, "event loops (default: half the CPUs, at least 1)")
	fs.IntVar(&cfg.MaxConns, "max-conns", 0, "most open connections; at the cap the longest-idle keep-alive one is closed for a new one (default: --conn-memory / a connection's fixed cost, at most the fd limit minus a reserve)")
	fs.Var(size{&cfg.ConnMemory}, "conn-memory", "memory the connections' fixed costs (user + kernel) may take; sets the default --max-conns (default 128MiB)")
	minRate := int64(1 << 10)
	fs.Var(size{&minRate}, "min-body-rate", "least average body rate in bytes/s after --body-rate-grace, else 408 (default 1KiB; 0 = none)")
	fs.DurationVar(&cfg.BodyRateGrace, "body-rate-grace", 5*time.Second, "time a body has before --min-body-rate applies")
	// Measured (BENCHMARKS.md, kernel memory): with the kernel's autotuning
	// a client that pipelines requests and never reads the answers makes
	// the kernel queue up to 4 MiB of answers per socket (tcp_wmem) before
	// upsink ever sees backpressure; answers are a few hundred bytes, so a
	// 16 KiB send buffer costs nothing and lets the 64 KiB unsent-answer
	// bound close such clients within a second.
	var rcvbuf, sndbuf int64 = 0, 16 << 10
	fs.Var(size{&rcvbuf}, "socket-rcvbuf", "SO_RCVBUF of client sockets (kernel memory per connection; 0 = the kernel's autotuning)")
	fs.Var(size{&sndbuf}, "socket-sndbuf", "SO_SNDBUF of client sockets (default 16KiB; 0 = the kernel's autotuning)")
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "on SIGTERM/SIGINT, how long uploads in progress have to be answered before upsink exits")
	fs.StringVar(&logLevel, "log-level", logLevel, "debug, info, warn or error; SIGHUP re-reads it from the --config file")
	logFormat := fs.String("log-format", "text", "text or json (slog's TextHandler or JSONHandler)")
	massifFile := fs.String("massif", "", "write valgrind massif-format heap snapshots to this file (ms_print FILE)")
	massifEvery := fs.Duration("massif-interval", 100*time.Millisecond, "time between --massif snapshots")
	var certFile, keyFile string
	fs.StringVar(&cfg.TLSListen, "tls-listen", "", "HTTPS listen address host:port (needs --tls-cert and --tls-key)")
	fs.StringVar(&certFile, "tls-cert", "", "PEM certificate (chain) for HTTPS; reloaded on SIGHUP")
	fs.StringVar(&keyFile, "tls-key", "", "PEM private key for HTTPS; reloaded on SIGHUP")
	fs.DurationVar(&cfg.TLS.HandshakeTimeout, "tls-handshake-timeout", 10*time.Second, "a TLS handshake must finish within this")
	adminListen := fs.String("admin-listen", "127.0.0.1:9180", "admin listener (GET /metrics, Prometheus text format); \"\" = none")
	accessLog := fs.String("access-log", "", "one line per answered request to this file, through a bounded buffer (lines are dropped, and counted, rather than block when the disk is slow); reopened on SIGHUP; \"\" = none")
	fs.StringVar(&cfg.Spool.Dir, "spool-dir", "var/spool", "directory of the local spool that takes uploads (202) while MariaDB cannot; \"\" = no spool (503 instead)")
	fs.Var(size{&cfg.Spool.MaxBytes}, "spool-max", "most bytes the spool may hold (default: the smaller of 1GiB and half the free space of its filesystem)")
	fs.DurationVar(&cfg.Spool.After, "spool-after", time.Second, "spool uploads waiting behind a database call outstanding this long")
	fs.DurationVar(&cfg.Store.IdempotencyTTL, "idempotency-ttl", 24*time.Hour, "how long an Idempotency-Key and its answer are kept (at least 1m)")
	fs.String("config", "", "TOML file: tables for structured ingest ([[table]]) and settings ([server], keys named as these flags with _ for -); flags and UPSINK_* variables win")
	set, err := loadSettings(fs, args, os.Environ())
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "%s: %s\n", cmd, oneLine(err))
		return 2
	}
	cfg.Tables = set.tables
	cfg.DisableHTTP2 = !*http2
	cfg.MinBodyRate = minRate
	if minRate == 0 {
		cfg.MinBodyRate = -1
	}
	if rcvbuf > 1<<30 || sndbuf > 1<<30 {
		fmt.Fprintf(stderr, "%s: --socket-rcvbuf and --socket-sndbuf take at most 1GiB\n", cmd)
		return 2
	}
	cfg.SocketRecvBuffer, cfg.SocketSendBuffer = int(rcvbuf), int(sndbuf)
	if len(cfg.Store.DSNs) == 0 {
		fmt.Fprintf(stderr, "%s: no database: pass --dsn or set UPSINK_DSN\n", cmd)
		return 2
	}
	if cfg.TLSListen != "" || certFile != "" || keyFile != "" {
		if cfg.TLSListen == "" || certFile == "" || keyFile == "" {
			fmt.Fprintf(stderr, "%s: HTTPS needs all of --tls-listen, --tls-cert and --tls-key\n", cmd)
			return 2
		}
		cert, err := tlsbridge.LoadKeyPair(certFile, keyFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", cmd, oneLine(err))
			return 2
		}
		cfg.TLS.Certificate = cert
	}
	level := new(slog.LevelVar)
	log, err := set.logger(stderr, logLevel, *logFormat, level)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", cmd, oneLine(err))
		return 2
	}
	if check != nil {
		return checkConfig(check, stderr, set, cfg)
	}
	if len(set.unknownEnv) > 0 {
		log.Warn("upsink: ignoring environment variables that name no setting", "vars", strings.Join(set.unknownEnv, ","))
	}
	slog.SetDefault(log)
	cfg.Logger = log
	if memLimit > 0 {
		debug.SetMemoryLimit(memLimit)
	}

	// Fail on a busy or bad address before anything else starts (and logs).
	for _, addr := range []string{cfg.Listen, cfg.TLSListen} {
		if addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			msg := err.Error()
			if errors.Is(err, syscall.EADDRINUSE) {
				msg = "listen " + addr + ": address already in use"
			}
			fmt.Fprintf(stderr, "upsink serve: %s\n", msg)
			return 2
		}
		ln.Close()
	}
	if len(cfg.Tables) > 0 {
		// A declared table that disagrees with the database is refused at
		// start when the database answers (else at the writer's connect).
		tables := make([]*schema.Table, len(cfg.Tables))
		for i := range cfg.Tables {
			tables[i] = &cfg.Tables[i]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		reachable, err := store.PrepareTables(ctx, cfg.Store.DSNs, tables)
		cancel()
		switch {
		case err != nil && reachable:
			fmt.Fprintf(stderr, "upsink serve: %s\n", oneLine(err))
			return 2
		case err != nil:
			log.Warn("upsink: database unreachable at start: declared tables are created and checked when it answers", "err", err)
		}
	}
	if *massifFile != "" {
		mw, err := massif.Start(*massifFile, massif.Options{Interval: *massifEvery})
		if err != nil {
			fmt.Fprintf(stderr, "upsink serve: --massif: %v\n", err)
			return 2
		}
		defer func() {
			if err := mw.Stop(); err != nil {
				log.Error("upsink: --massif", "err", err)
			}
		}()
	}
	if *adminListen != "" {
		cfg.Metrics = metrics.New()
	}
	if *accessLog != "" {
		alog, err := accesslog.Open(*accessLog, accesslog.Options{})
		if err != nil {
			fmt.Fprintf(stderr, "upsink serve: %s\n", oneLine(err))
			return 2
		}
		defer func() {
			if err := alog.Close(); err != nil {
				log.Error("upsink: access log", "err", err)
			}
			if _, dropped := alog.Stats(); dropped > 0 {
				log.Warn("upsink: access log lines dropped (the disk was slower than the requests)", "lines", dropped)
			}
		}()
		cfg.AccessLog = alog
	}
	sd := envNotifier(log) // systemd's Type=notify; nil (no-op) without NOTIFY_SOCKET
	srv, err := server.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "upsink serve: %v\n", err)
		return 2
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	// ended handles Serve returning on its own (a listen error, or the engine stopping).
	ended := func(err error) int {
		_ = srv.Shutdown(context.Background())
		if err != nil {
			fmt.Fprintf(stderr, "upsink serve: %v\n", err)
			return 2
		}
		return 0
	}
	// SIGHUP is caught before "serving" is logged: a reload sent as soon as
	// upsink says it serves must not kill it (reload.go).
	rl := newReloader(log, level, srv, set, cfg.TLSListen != "", certFile, keyFile)
	if alog := cfg.AccessLog; alog != nil {
		rl.reopen = func() error { alog.Reopen(); return nil }
	}
	rl.listen()
	select {
	case err := <-errc:
		return ended(err)
	case <-srv.Booted():
		log.Info("upsink: serving", "listen", "http://"+cfg.Listen, "max_body", cfg.MaxBody, "max_inflight", cfg.MaxInflight, "memory_limit", memLimit, "max_conns", srv.Stats().MaxConns)
		if cfg.TLSListen != "" {
			log.Info("upsink: serving HTTPS", "listen", "https://"+cfg.TLSListen, "cert", certFile)
		}
		if *adminListen != "" {
			// Not fatal: the uploads matter more than their metrics.
			sampler := newSampler(srv, cfg.MaxInflight)
			stopSampling := make(chan struct{})
			defer close(stopSampling)
			go sampler.Run(stopSampling)
			if a, err := admin.Start(*adminListen, cfg.Metrics, sampler, log); err != nil {
				log.Error("upsink: no admin listener: serving without /metrics", "err", err)
			} else {
				defer a.Close()
				log.Info("upsink: admin listener", "metrics", "http://"+a.Addr()+"/metrics", "status", "http://"+a.Addr()+"/status")
			}
		}
		if sp := srv.Sink().Spool(); sp != nil {
			st := sp.Stats()
			log.Info("upsink: spool", "dir", cfg.Spool.Dir, "max_bytes", sp.MaxBytes(), "spool_after", cfg.Spool.After,
				"backlog_records", st.Records, "backlog_bytes", st.Bytes)
		} else {
			log.Warn("upsink: no spool (--spool-dir \"\"): uploads MariaDB cannot take get 503")
		}
		sd.ready(servingStatus(cfg.Listen, cfg.TLSListen))
		defer sd.startWatchdog(healthzCheck(cfg.Listen))()
	}
	select {
	case err := <-errc:
		return ended(err)
	case sig := <-sigc:
		log.Info("upsink: shutting down", "signal", sig.String())
		sd.stopped("stopping: answering uploads in progress (" + sig.String() + ")")
	}
	// The store does not give up on a batch whose outcome it cannot learn
	// (guessing either way could lose or duplicate an upload), so a shutdown
	// can wait on a database that is down; a second signal exits at once.
	go func() {
		sig := <-sigc
		log.Warn("upsink: second signal, exiting without waiting for the store", "signal", sig.String())
		os.Exit(1)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(ctx)
	<-errc
	st := srv.Store().Stats()
	if err != nil && !errors.Is(err, server.ErrRequestsLeft) {
		log.Error("upsink: shutdown", "err", err)
		return 1
	}
	log.Info("upsink: stopped", "batches", st.Batches, "rows", st.Rows, "unanswered", err != nil)
	return 0
}

func gencert(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("upsink gencert", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "", "directory for cert.pem and key.pem")
	if err := fs.Parse(args); err != nil || *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: upsink gencert --dir DIR (writes a self-signed ECDSA P-256 cert.pem and key.pem for localhost, 127.0.0.1, ::1)")
		return 2
	}
	cert, key, err := tlsbridge.GenerateSelfSigned(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "upsink gencert: %v\n", oneLine(err))
		return 1
	}
	fmt.Println(cert)
	fmt.Println(key)
	return 0
}

// oneLine keeps an error message to one line.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
