#!/usr/bin/env bash
# bench/run.sh - upsink's end-to-end measurements (the body of `make bench`).
#
# Builds bin/upsink, bin/upsink-baseline and bin/upsink-bench, starts a private
# MariaDB under a mktemp dir (with the project's profile
# deploy/mysql/low-memory.cnf, or UPSINK_DB_PROFILE), and measures, each server
# started fresh on its own fresh database and mariadbd restarted for each run:
#   a. idle: server RSS/PSS with 0 and with BENCH_IDLE_CONNS idle keep-alive
#      connections, for upsink and the net/http baseline
#   b0. the database's own ceiling for upsink's row shape (issue 13), once,
#      before the load runs: upsink-bench ceiling, one connection streaming
#      LOAD DATA LOCAL of 1 KiB rows in BENCH_CEILING_ROWS-row transactions
#      for BENCH_CEILING_DURATION into a fresh database, mariadbd's CPU watched;
#      again after the load runs, as a check that the machine stayed the same
#   b. uploads/s, latency, peak RSS and CPU (server and mariadbd) of 1 KiB
#      uploads over keep-alive at each of BENCH_CONNS, BENCH_DURATION each
#      (the report divides upsink's uploads/s by the ceiling of b0)
#   c. COUNT(*) of rows == number of 201s after each run
#   a, b and c twice: plain HTTP, then HTTPS (upsink --tls-listen, the baseline
#      --tls-cert; a self-signed cert from bin/upsink gencert in RESULTS/tls)
#   d. go test -bench of ./parser ./conn ./server ./store
#   e. go test -bench=Handshake ./tlsbridge: full and resumed handshakes/s of
#      the bridge and of net/http + crypto/tls, in one process (a microbenchmark)
#   e2. upsink-bench handshakes: full and resumed handshakes/s of upsink and the
#      baseline with the client in its own process (the target's figure)
#   f. stall: BENCH_STALL_CONNS connections to each server's TLS port that send
#      a ClientHello and then stall, held BENCH_STALL_HOLD, RSS sampled, /healthz
#      probed over plain HTTP (upsink) and HTTPS meanwhile
# then writes BENCHMARKS.md (BENCH_OUT) from the results in bench/results/DATE/,
# and last runs bench/attack.sh (BENCH_ATTACKS=0 skips it), which writes the
# "## Attacks" section into the same file.
#
# Environment: BENCH_DURATION (15s), BENCH_CONNS ("1 8 64 512 2000"),
# BENCH_BASELINE_MAX_CONNS (2000: the net/http baseline is not run at higher
# c), BENCH_CEILING_DURATION (BENCH_DURATION), BENCH_CEILING_ROWS (1000),
# BENCH_IDLE_CONNS (10000), BENCH_HOLD (5s), BENCH_BODY (1KiB), BENCH_OUT
# (BENCHMARKS.md), BENCH_GOBENCH_PKGS ("./parser ./conn ./server ./store"),
# BENCH_MODES ("plain tls"), BENCH_HS_BENCHTIME (2s), BENCH_HS_COUNT (3),
# BENCH_HS_N (4000), BENCH_HS_RUNS (3), BENCH_STALL_CONNS (5000),
# BENCH_STALL_HOLD (13s), GO (go), BENCH_PARTS ("idle ceiling load gobench
# handshakes stall": a subset runs only those, and the report then has only
# their sections - point BENCH_OUT elsewhere to keep BENCHMARKS.md whole).
# Only processes started here are stopped (by pid), also on failure or Ctrl-C.
# shellcheck disable=SC2317 # cleanup is called from traps
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
GO="${GO:-go}"
DURATION="${BENCH_DURATION:-15s}"
CONNS="${BENCH_CONNS:-1 8 64 512 2000}"
BASELINE_MAX_CONNS="${BENCH_BASELINE_MAX_CONNS:-2000}"
CEIL_DURATION="${BENCH_CEILING_DURATION:-$DURATION}"
CEIL_ROWS="${BENCH_CEILING_ROWS:-1000}"
PARTS=" ${BENCH_PARTS:-idle ceiling load gobench handshakes stall} "
IDLE_CONNS="${BENCH_IDLE_CONNS:-10000}"
HOLD="${BENCH_HOLD:-5s}"
BODY="${BENCH_BODY:-1KiB}"
OUT="${BENCH_OUT:-BENCHMARKS.md}"
GOBENCH_PKGS="${BENCH_GOBENCH_PKGS:-./parser ./conn ./server ./store}"
MODES="${BENCH_MODES:-plain tls}"
HS_BENCHTIME="${BENCH_HS_BENCHTIME:-2s}"
HS_COUNT="${BENCH_HS_COUNT:-3}"
HS_N="${BENCH_HS_N:-4000}"
HS_RUNS="${BENCH_HS_RUNS:-3}"
STALL_CONNS="${BENCH_STALL_CONNS:-5000}"
STALL_HOLD="${BENCH_STALL_HOLD:-13s}" # longer than both servers' 10 s handshake timeout
IDLE_TIMEOUT=120s # servers' idle timeout: must exceed the hold and the time to open the connections

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
# part NAME: NAME is in BENCH_PARTS.
part() { [[ "$PARTS" == *" $1 "* ]]; }

# --- MariaDB: a private mariadbd, restarted for every measurement ---------
# With the project's option file when it exists (the same flags as
# deploy/mariadb.sh passes), else the low-memory flags on the command line.
# Own start/stop rather than deploy/mariadb.sh's db_start: its readiness loop
# can take a just-forked mariadbd (comm still "bash") for one that died and
# then wait for it forever (seen here; see BENCHMARKS.md notes).
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;; esac
PROFILE="${UPSINK_DB_PROFILE:-$ROOT/deploy/mysql/low-memory.cnf}"
if [ -f "$PROFILE" ]; then
	DBOPTS=(--defaults-file="$PROFILE")
	DB_HOW="--defaults-file=${PROFILE#"$ROOT"/} (the project's profile)"
else
	DBOPTS=(--no-defaults --innodb-buffer-pool-size=6M --performance-schema=OFF --innodb-autoinc-lock-mode=1
		--max-allowed-packet=16M --max-connections=300 --innodb-flush-log-at-trx-commit=1 --local-infile=1)
	DB_HOW="--no-defaults with bench/run.sh's low-memory flags ($PROFILE not found)"
fi
ROOTFLAG=()
[ "$(id -u)" -eq 0 ] && ROOTFLAG=(--user=root)
for p in mariadbd mariadb-install-db mariadb-admin mariadb; do
	command -v "$p" >/dev/null || die "$p not found: install MariaDB (deploy/mariadb.sh install)"
done
db_init() {
	[ -d "$DB_DIR/data/mysql" ] && return 0
	mkdir -p "$DB_DIR/tmp"
	mariadb-install-db "${DBOPTS[@]}" --datadir="$DB_DIR/data" --tmpdir="$DB_DIR/tmp" \
		--auth-root-authentication-method=normal --skip-test-db "${ROOTFLAG[@]}" >"$DB_DIR/install-db.log" 2>&1 ||
		die "mariadb-install-db failed; see $DB_DIR/install-db.log"
}
db_ping() { mariadb-admin --no-defaults --socket="$DB_SOCK" --user=root --connect-timeout=2 ping >/dev/null 2>&1; }
db_start() {
	DB_DIR="$1" DB_SOCK="$1/mysqld.sock"
	db_init
	MALLOC_ARENA_MAX=1 mariadbd "${DBOPTS[@]}" --datadir="$DB_DIR/data" --socket="$DB_SOCK" \
		--pid-file="$DB_DIR/mariadbd.pid" --log-error="$DB_DIR/mariadbd.err" --tmpdir="$DB_DIR/tmp" \
		--skip-networking "${ROOTFLAG[@]}" </dev/null >>"$DB_DIR/mariadbd.err" 2>&1 &
	DB_SERVER_PID=$!
	local i
	for ((i = 0; i < 300; i++)); do
		db_ping && return 0
		kill -0 "$DB_SERVER_PID" 2>/dev/null || { tail -20 "$DB_DIR/mariadbd.err" >&2; die "mariadbd exited during start-up"; }
		sleep 0.2
	done
	die "mariadbd did not answer within 60 s; see $DB_DIR/mariadbd.err"
}
db_stop() {
	local pid="$1" i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 600; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
db_dsn() { printf 'root@unix(%s)/%s\n' "$DB_SOCK" "${1:-}"; }
db_client() { mariadb --no-defaults --socket="$DB_SOCK" --user=root "$@"; }

tmp=""
DB_SERVER_PID=""
SRV_PID=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$SRV_PID" ]; then
		kill -TERM "$SRV_PID" 2>/dev/null || true
		wait "$SRV_PID" 2>/dev/null || true
	fi
	if [ -n "$DB_SERVER_PID" ]; then db_stop "$DB_SERVER_PID"; fi
	if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

log "building"
mkdir -p bin
make -s build GO="$GO" # static, as the Makefile builds it
"$GO" build -o bin/upsink-baseline ./cmd/upsink-baseline
"$GO" build -o bin/upsink-bench ./cmd/upsink-bench
B=bin/upsink-bench

RES="bench/results/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$RES"
echo "${BENCH_RUN_CMD:-bench/run.sh}" >"$RES/run.cmd"
# HTTPS: one self-signed ECDSA P-256 certificate for both servers, kept with the results.
CERT="$RES/tls/cert.pem" KEY="$RES/tls/key.pem"
bin/upsink gencert --dir "$RES/tls" >/dev/null

# Both the server and the idle (load) tool hold IDLE_CONNS (the largest of
# CONNS) descriptors (+ slack).
need="$IDLE_CONNS"
for c in $CONNS; do
	if [ "$c" -gt "$need" ]; then need="$c"; fi
done
need=$((need + 512))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$need" 2>/dev/null || die "ulimit -n $(ulimit -n) < $need and cannot be raised (hard limit $(ulimit -Hn)); lower BENCH_IDLE_CONNS or BENCH_CONNS"
fi

tmp="$(mktemp -d /tmp/upsink-bench.XXXXXX)"
dbdir="$tmp/db"

db_up() {
	db_start "$dbdir"
}
db_down() {
	db_stop "$DB_SERVER_PID"
	DB_SERVER_PID=""
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
	local p from="${1:-${BENCH_PORT:-18480}}"
	for p in $(seq "$from" 1 $((from + 200))); do
		if port_free "$p"; then echo "$p"; return 0; fi
	done
	die "no free port"
}

# start_server KIND NAME [MODE]: fresh database b_NAME, server KIND on a free
# port; MODE tls: upsink also serves HTTPS on a second port, the baseline
# serves HTTPS only. Sets SRV_PID, SRV_BASE (plain URL; the baseline's is its
# HTTPS one in tls mode), SRV_TLS (HTTPS URL, tls mode), DBNAME; writes
# $RES/NAME.server (command, DSN socket as $SOCK).
start_server() {
	local kind="$1" name="$2" mode="${3:-plain}" port tport dsn
	DBNAME="b_${name//-/_}"
	db_client -e "DROP DATABASE IF EXISTS \`$DBNAME\`; CREATE DATABASE \`$DBNAME\`"
	dsn="$(db_dsn "$DBNAME")"
	port="$(pick_port)"
	SRV_BASE="http://127.0.0.1:$port" SRV_TLS=""
	local -a cmd wait_tls=()
	case "$kind" in
	upsink) cmd=(bin/upsink serve --listen "127.0.0.1:$port" --dsn "$dsn" --idle-timeout "$IDLE_TIMEOUT" --spool-dir "$(mktemp -d "$tmp/spool.XXXXXX")") ;;
	baseline) cmd=(bin/upsink-baseline --listen "127.0.0.1:$port" --dsn "$dsn" --idle-timeout "$IDLE_TIMEOUT") ;;
	esac
	if [ "$mode" = tls ]; then
		case "$kind" in
		upsink)
			tport="$(pick_port $((port + 1)))"
			cmd+=(--tls-listen "127.0.0.1:$tport" --tls-cert "$CERT" --tls-key "$KEY")
			SRV_TLS="https://127.0.0.1:$tport"
			;;
		baseline)
			cmd+=(--tls-cert "$CERT" --tls-key "$KEY")
			SRV_BASE="https://127.0.0.1:$port" SRV_TLS="https://127.0.0.1:$port"
			wait_tls=(--cacert "$CERT")
			;;
		esac
	fi
	printf '%s\n' "${cmd[*]}" | sed "s#$DB_SOCK#\$SOCK#; s#--dsn \([^ ]*\)#--dsn '\1'#" >"$RES/$name.server"
	"${cmd[@]}" >"$RES/$name.server.log" 2>&1 &
	SRV_PID=$!
	$B wait --url "$SRV_BASE/readyz" "${wait_tls[@]}" --timeout 60s || die "$kind did not become ready; see $RES/$name.server.log"
	if [ -n "$SRV_TLS" ]; then
		$B wait --url "$SRV_TLS/healthz" --cacert "$CERT" --timeout 20s || die "$kind: no HTTPS; see $RES/$name.server.log"
	fi
	sleep 1 # let start-up garbage settle before the first memory sample
}
stop_server() {
	kill -TERM "$SRV_PID" 2>/dev/null || true
	wait "$SRV_PID" 2>/dev/null || true
	SRV_PID=""
}

# --- machine ---------------------------------------------------------------
db_up
{
	printf 'date (UTC)\t%s\n' "$(date -u '+%Y-%m-%d %H:%M')"
	printf 'nproc\t%s\n' "$(nproc)"
	printf 'CPU\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
	printf 'memory\t%s\n' "$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
	printf 'kernel\t%s\n' "$(uname -sr)"
	printf 'go\t%s\n' "$("$GO" version)"
	printf 'MariaDB\t%s\n' "$(db_client -N -e 'SELECT VERSION()')"
	printf 'MariaDB config\t%s\n' "$DB_HOW"
	printf 'MariaDB key settings\t%s\n' "$(db_client -N -e "SELECT GROUP_CONCAT(CONCAT(VARIABLE_NAME,'=',VARIABLE_VALUE) ORDER BY VARIABLE_NAME SEPARATOR ', ') FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME IN ('INNODB_BUFFER_POOL_SIZE','INNODB_FLUSH_LOG_AT_TRX_COMMIT','MAX_CONNECTIONS','INNODB_LOG_FILE_SIZE')")"
	printf 'ulimit -n\t%s\n' "$(ulimit -n)"
	printf 'commit\t%s\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- cmd server store parser conn tlsbridge 2>/dev/null || echo ' (+ uncommitted changes in cmd/server/store/parser/conn/tlsbridge)')"
} >"$RES/machine.tsv"
tr '\0' ' ' </proc/"$DB_SERVER_PID"/cmdline | sed "s#$tmp#\$TMP#g" >"$RES/mariadbd.cmd"
db_down

# Result names: plain runs idle-KIND, load-KIND-cN; HTTPS runs idle-tls-KIND,
# load-tls-KIND-cN (report reads both).
prefix() { if [ "$1" = tls ]; then echo "tls-"; fi; }

# --- a. idle ---------------------------------------------------------------
if part idle; then
for mode in $MODES; do
	for kind in upsink baseline; do
		name="idle-$(prefix "$mode")$kind"
		db_up
		start_server "$kind" "$name" "$mode"
		url="$SRV_BASE/healthz" tlsargs=()
		if [ "$mode" = tls ]; then url="$SRV_TLS/healthz" tlsargs=(--cacert "$CERT"); fi
		log "idle ($mode): $kind, $IDLE_CONNS connections"
		$B idle --url "$url" "${tlsargs[@]}" -c "$IDLE_CONNS" --hold "$HOLD" --pid "$SRV_PID" --json-out "$RES/$name.json"
		stop_server
		db_down
	done
done
fi

# --- b0. the database's ceiling for upsink's row shape (issue 13) -----------
# Before the load runs, on a fresh mariadbd with the same profile: one
# connection, START TRANSACTION; LOAD DATA LOCAL of CEIL_ROWS 1 KiB rows;
# COMMIT, back to back. The report divides upsink's uploads/s by its rows/s.
# The same again after the load runs (ceiling-after), as a check that the
# machine stayed the same.
ceiling() {
	local name="$1"
	db_up
	db_client -e 'DROP DATABASE IF EXISTS b_ceiling; CREATE DATABASE b_ceiling'
	echo "upsink-bench ceiling --dsn 'root@unix(\$SOCK)/b_ceiling' -d $CEIL_DURATION --rows $CEIL_ROWS --body $BODY --watch mariadbd=\$MARIADBD_PID" >"$RES/$name.cmd"
	log "$name: LOAD DATA LOCAL, $CEIL_ROWS rows per transaction, $CEIL_DURATION"
	$B ceiling --dsn "$(db_dsn b_ceiling)" -d "$CEIL_DURATION" --rows "$CEIL_ROWS" --body "$BODY" \
		--watch mariadbd="$DB_SERVER_PID" --json-out "$RES/$name.json"
	db_down
}
if part ceiling; then ceiling ceiling; fi

# --- b, c. load ------------------------------------------------------------
if part load; then
for mode in $MODES; do
for c in $CONNS; do
	for kind in upsink baseline; do
		name="load-$(prefix "$mode")$kind-c$c"
		if [ "$kind" = baseline ] && [ "$c" -gt "$BASELINE_MAX_CONNS" ]; then
			log "load ($mode): baseline not run at c=$c (BENCH_BASELINE_MAX_CONNS=$BASELINE_MAX_CONNS)"
			echo "- The net/http baseline was not run at c=$c ($mode): above BENCH_BASELINE_MAX_CONNS=$BASELINE_MAX_CONNS." >>"$RES/notes.txt"
			continue
		fi
		db_up
		start_server "$kind" "$name" "$mode"
		url="$SRV_BASE/upload/bench" tlsargs=()
		if [ "$mode" = tls ]; then url="$SRV_TLS/upload/bench" tlsargs=(--cacert "$CERT"); fi
		log "load ($mode): $kind c=$c $DURATION"
		$B load --url "$url" "${tlsargs[@]}" -c "$c" -d "$DURATION" --body "$BODY" \
			--watch server="$SRV_PID" --watch mariadbd="$DB_SERVER_PID" --json-out "$RES/$name.json"
		stop_server
		rows="$(db_client -N -e "SELECT COUNT(*) FROM \`$DBNAME\`.uploads")"
		echo "$rows" >"$RES/$name.rows"
		if [ "$kind" = upsink ]; then
			# upsink's ledger: one row per committed batch, with its row count.
			db_client -N -e "SELECT COUNT(*), COALESCE(SUM(row_count), 0) FROM \`$DBNAME\`.upsink_batches" >"$RES/$name.batches"
		fi
		log "rows in $DBNAME.uploads: $rows (201s: $(sed -n 's/.*"created": \([0-9]*\).*/\1/p' "$RES/$name.json"))"
		db_down
	done
done
done
if part ceiling; then ceiling ceiling-after; fi
fi

# --- d. go benchmarks ------------------------------------------------------
if part gobench; then
db_up
gcmd="$GO test -run='^\$' -bench=. -benchmem -timeout 8m $GOBENCH_PKGS"
echo "UPSINK_TEST_DSN='root@unix(\$SOCK)/' $gcmd" >"$RES/gobench.cmd"
log "$gcmd"
# shellcheck disable=SC2086
UPSINK_TEST_DSN="$(db_dsn)" UPSINK_REQUIRE_DB=1 "$GO" test -run='^$' -bench=. -benchmem -timeout 8m $GOBENCH_PKGS 2>&1 | tee "$RES/gobench.txt" || log "go test -bench failed (output kept in the report)"
db_down
fi

# --- e. TLS handshakes/s: the bridge beside net/http + crypto/tls ------------
if part handshakes; then
hcmd="$GO test -run='^\$' -bench=Handshake -benchtime=$HS_BENCHTIME -count=$HS_COUNT ./tlsbridge"
echo "$hcmd" >"$RES/hsbench.cmd"
log "$hcmd"
"$GO" test -run='^$' -bench=Handshake -benchtime="$HS_BENCHTIME" -count="$HS_COUNT" ./tlsbridge 2>&1 | tee "$RES/hsbench.txt" || log "handshake benchmark failed (output kept in the report)"

# --- e2. handshakes/s over the wire: the client in its own process ----------
# As a server meets its clients (the in-process benchmark above shares one Go
# scheduler between clients and servers): each server fresh, HS_RUNS runs of
# HS_N full and of HS_N resumed handshakes, 64 at a time.
for kind in upsink baseline; do
	db_up
	start_server "$kind" "hs-$kind" tls
	addr="${SRV_TLS#https://}"
	addr="${addr%%/*}"
	for ((r = 1; r <= HS_RUNS; r++)); do
		for mode in full resumed; do
			flag=()
			[ "$mode" = resumed ] && flag=(--resume)
			log "handshakes: $kind $mode, run $r"
			$B handshakes --addr "$addr" -n "$HS_N" --parallel 64 --cacert "$CERT" "${flag[@]}" --json-out "$RES/hs-$kind-$mode-$r.json"
		done
	done
	stop_server
	db_down
done
fi

# --- f. handshakes in flight: ClientHello, then silence ----------------------
if part stall; then
for kind in upsink baseline; do
	name="stall-$kind"
	db_up
	start_server "$kind" "$name" tls
	probes=(--probe "$SRV_TLS/healthz")
	if [ "$kind" = upsink ]; then probes=(--probe "$SRV_BASE/healthz" "${probes[@]}"); fi
	log "stall: $kind, $STALL_CONNS stalled handshakes for $STALL_HOLD"
	$B stall --url "$SRV_TLS/" -c "$STALL_CONNS" --hold "$STALL_HOLD" --pid "$SRV_PID" "${probes[@]}" --cacert "$CERT" --json-out "$RES/$name.json"
	sleep 1
	if ! kill -0 "$SRV_PID" 2>/dev/null; then log "$kind exited during the stall run"; fi
	stop_server
	db_down
done
fi

$B report --dir "$RES" --out "$OUT"
log "wrote $OUT (results in $RES)"

# --- g. the attack suite (its own MariaDB and upsinks; the "## Attacks" section) --
if [ "${BENCH_ATTACKS:-1}" != 0 ]; then
	log "attacks: bench/attack.sh (BENCH_ATTACKS=0 skips them)"
	ATTACK_OUT="$OUT" bench/attack.sh
fi
