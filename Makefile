# upsink - see deploy/mariadb.sh for the private MariaDB these targets use.
#
#   make run     install MariaDB if missing, start it on a unix socket with data
#                in ./var/mysql (kept between runs), create database upsink,
#                build and run bin/upsink in the foreground; Ctrl-C stops both
#   make test    go vet + go test -race against a throwaway MariaDB in /tmp, then
#                the short fault suite (FAULTS_SHORT=1 bench/faults.sh)
#   make bench   side-by-side measurements into BENCHMARKS.md (bench/run.sh)
#   make bench-go  go test -bench against a throwaway MariaDB in /tmp
#   make attack  the attack suite at full scale into BENCHMARKS.md's "## Attacks"
#                (bench/attack.sh; make bench runs it last; ~12 minutes)
#   make bench-h2  HTTP/2 beside HTTP/1.1 with h2load: uploads/s, peak RSS, idle
#                memory per connection (bench/h2.sh; ~2 minutes)
#   make bench-spool uploads/s and memory into the spool alone vs MariaDB, and when
#                a saturated MariaDB makes upsink spool (bench/spool.sh)
#   make faults  the fault suite of issue 8 (bench/faults.sh; ~5 minutes; root for
#                the full-spool tmpfs): kill -9 / SIGTERM / SIGSTOP of mariadbd
#                and upsink, KILL CONNECTION, a full spool, idempotent retries;
#                FAULTS_ONLY="1 4" runs some of them
#   make bench-ingest rows/s of NDJSON and CSV into a declared table beside raw
#                uploads, and the server's peak RSS (bench/ingest.sh)
#   make bench-vps upsink + MariaDB in one 256 MiB memory cgroup under 10,000
#                keep-alive uploaders (bench/vps.sh; root; VPS_MODE=https)
#   make systemd-check  systemd-analyze verify (and security --offline) on
#                deploy/systemd, and sd_notify against a real notify socket;
#                skipped with a message without systemd-analyze
#   make build   bin/upsink
#   make vet     go vet ./...
#   make db-start / db-stop / db-status   the ./var/mysql server alone
#   make galera-start / galera-stop / galera-status   a 3-node Galera cluster on
#                127.0.0.1 in ./var/galera (deploy/galera.sh, deploy/GALERA.md);
#                galera-start installs galera-4, rsync and socat first if missing
#
# Variables: LISTEN (127.0.0.1:8080), TLS_LISTEN (127.0.0.1:8443), TLSDIR (var/tls), DBDIR (var/mysql),
#   GALERADIR (var/galera; ports from UPSINK_GALERA_PORT, default 24100),
#   UPSINK_DB_PROFILE (deploy/mysql/low-memory.cnf; low-memory-aria.cnf for the
#   tightest boxes), GOTESTFLAGS (extra go test flags), BENCH (.)

SHELL := /bin/bash
GO ?= go
LISTEN ?= 127.0.0.1:8080
TLS_LISTEN ?= 127.0.0.1:8443
TLSDIR ?= var/tls
DBDIR ?= var/mysql
GALERADIR ?= var/galera
BENCH ?= .
GOTESTFLAGS ?=

.PHONY: all run build vet test test-cluster bench-cluster bench-h2 systemd-check bench bench-go bench-vps bench-spool bench-ingest status-shot attack sigterm faults tools-check db-start db-stop db-status galera-install galera-start galera-stop galera-status clean

all: build

# A static binary (no cgo): it maps no libc or loader, which is 1.6 MiB of
# RSS at idle (BENCHMARKS.md, "Idle RSS"); the Go resolver reads /etc/hosts
# and resolv.conf. CGO_ENABLED=1 make build links against glibc instead.
build:
	CGO_ENABLED=$${CGO_ENABLED:-0} $(GO) build -o bin/upsink ./cmd/upsink

vet:
	$(GO) vet ./...

# HTTPS on $(TLS_LISTEN) with a self-signed certificate made on first run in
# $(TLSDIR) (bin/upsink gencert); reload a replaced cert with kill -HUP <upsink pid>.
run: build
	@[ -s '$(TLSDIR)/cert.pem' ] && [ -s '$(TLSDIR)/key.pem' ] || bin/upsink gencert --dir '$(TLSDIR)' >/dev/null
	deploy/run.sh --dir '$(DBDIR)' --db upsink -- \
		bin/upsink serve --listen '$(LISTEN)' --dsn '{dsn}' \
		--tls-listen '$(TLS_LISTEN)' --tls-cert '$(TLSDIR)/cert.pem' --tls-key '$(TLSDIR)/key.pem'

# go test -race needs cgo, hence a C compiler.
tools-check:
	@deploy/mariadb.sh install
	@deploy/mariadb.sh install-cc
	@deploy/mariadb.sh install-clients

# The race detector allocates on its own, so the zero-allocation tests (and
# tlsbridge's bytes-per-idle-TLS-connection bound) are
# asserted in a second, non-race run (they skip their assertion under -race).
ALLOCTESTS = Allocs|NoAlloc|DoesNotAllocate|TestIdleMemory
ALLOCPKGS = ./conn ./parser ./server ./store ./bench ./tlsbridge ./spool ./ingest ./h2

# The short fault suite (FAULTS_SHORT=1 bench/faults.sh, ~1.5 minutes: every
# fault of make faults at 40 % of its times with 16 clients, real processes)
# runs after the go tests; its table ends the output.
test: tools-check
	deploy/with-testdb.sh bash -c '$(GO) vet ./... && $(GO) test -count=1 -run "$(ALLOCTESTS)" $(ALLOCPKGS) && $(GO) test -race -count=1 -timeout 9m $(GOTESTFLAGS) ./...'
	FAULTS_SHORT=1 bench/faults.sh

# Issue 11's scenario on a 3-node Galera cluster on loopback (bench/cluster.sh,
# ~4 minutes): two upsink instances, node kills and IST rejoins, every
# acknowledged upload once on every node. .ci/run runs it after make test.
test-cluster: tools-check
	bench/cluster.sh scenario

# HTTP/2 beside HTTP/1.1 with h2load (issue 12): uploads/s over h2 (100
# connections x 10 streams) and HTTP/1.1 keep-alive (1,000 connections),
# over TLS and plain; peak RSS; heap per idle connection (bench/h2.sh).
bench-h2: tools-check
	bench/h2.sh

# Uploads/s: 1 and 2 instances into the cluster, 1 into a single MariaDB.
bench-cluster: tools-check
	bench/cluster.sh rates

# The whole side-by-side run (upsink vs the net/http baseline, idle memory,
# the database's own LOAD DATA ceiling (upsink-bench ceiling) and uploads/s
# against it at c = 1, 8, 64, 512, 2000, handshakes, stalled handshakes,
# go test -bench; plain and HTTPS) that writes BENCHMARKS.md; ~10 minutes on
# 2 cores, then the attack suite (BENCH_ATTACKS=0 skips it; ~12 minutes).
bench: tools-check
	bench/run.sh

# Every upsink-bench attack kind and slowhttptest -H/-B/-X, each against a
# fresh upsink with a polite client uploading beside it (bench/attack.sh).
attack: tools-check
	bench/attack.sh

# The spool's cost and use: uploads/s and memory into MariaDB alone and into
# the spool alone, and how many uploads a saturated but healthy MariaDB sees
# spooled with --spool-after 1s and 50ms (bench/spool.sh). ~1 minute.
bench-spool: tools-check
	bench/spool.sh

# Structured ingest end to end: rows/s of NDJSON and CSV bodies (1,000 rows
# of ~100 B per request, h2load over keep-alive) into a declared table,
# beside raw 1 KiB uploads, with the server's peak RSS (bench/ingest.sh).
bench-ingest: tools-check
	bench/ingest.sh

# The admin listener's /status page in Debian's headless Chromium after 30 s
# of uploads: the rendered DOM is checked and docs/status.png taken.
status-shot: tools-check
	bench/status-shot.sh

# SIGTERM to upsink while 64 clients upload, three times; --verify counts
# uploads committed without an answer (must be 0). ~1 minute.
sigterm: tools-check
	bench/sigterm.sh

# The fault suite (issue 8): kill -9 mariadbd, kill -9 / SIGTERM upsink, a
# stalled MariaDB, KILL CONNECTION, a full spool filesystem, and clients that
# retry with Idempotency-Key through faults 1-5, each under 64 uploading
# clients; --verify checks 0 acknowledged lost, 0 stored twice, spool drained.
# Results in bench/results/faults-*.txt; exit 1 on a loss or a duplicate. ~5 min.
faults: tools-check
	bench/faults.sh

# Only the go test benchmarks, on a throwaway MariaDB.
bench-go: tools-check
	deploy/with-testdb.sh $(GO) test -run='^$$' -bench='$(BENCH)' -benchmem $(GOTESTFLAGS) ./...

# upsink and its MariaDB inside one 256 MiB memory cgroup (no swap), 10,000
# keep-alive clients uploading 1 KiB bodies for 60 s from outside it, every
# acknowledged upload verified in the database; ~2 minutes. Root only.
bench-vps: tools-check
	bench/vps.sh

# deploy/systemd/upsink.service and the MariaDB drop-in through
# systemd-analyze verify (ExecStart pointed at a freshly built binary) and
# security --offline=true, plus the sd_notify test (TestSdNotify); no database.
systemd-check:
	$(GO) test -count=1 -v -run 'TestSystemdUnits|TestSdNotify' ./cmd/upsink

db-start:
	deploy/mariadb.sh start '$(DBDIR)'

db-stop:
	deploy/mariadb.sh stop '$(DBDIR)'

db-status:
	@deploy/mariadb.sh status '$(DBDIR)' >/dev/null && echo "running: $$(deploy/mariadb.sh dsn '$(DBDIR)')" || { echo "not running"; exit 1; }

# Galera's packages only for the cluster targets: tools-check (make test) does
# not need them.
galera-install:
	@deploy/galera.sh install

galera-start: galera-install
	deploy/galera.sh start '$(GALERADIR)'

galera-stop:
	deploy/galera.sh stop '$(GALERADIR)'

galera-status:
	@deploy/galera.sh status '$(GALERADIR)' && echo "DSNs: $$(deploy/galera.sh dsns '$(GALERADIR)')"

clean:
	rm -rf bin
