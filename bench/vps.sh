#!/usr/bin/env bash
# bench/vps.sh - the 256 MB VPS test (the body of `make bench-vps`).
#
# upsink and its MariaDB (the project's low-memory profile) run inside ONE
# memory cgroup with memory.max 256 MiB and no swap (v2; v1: limit_in_bytes
# and memsw), as on a small VPS. From outside that cgroup, two upsink-bench
# load processes (the per-process fd limit here is 20,000) hold VPS_CLIENTS
# keep-alive connections between them and upload VPS_BODY bodies for
# VPS_DURATION. Reported: peak memory of upsink, mariadbd and the cgroup, OOM
# kills and failcnt, uploads/s, p99, the verifier's lost/duplicated counts,
# and a plot of memory over time (PNG/SVG) and upsink's heap as massif.out.
#
# Needs root (cgroups). Environment:
#   VPS_MODE      https (default: the user's story) or http
#   VPS_MEM       cgroup limit (256M)        VPS_CLIENTS  connections (10000)
#   VPS_DURATION  load time (60s)            VPS_BODY     body size (1KiB)
#   VPS_LOADERS   load processes (2)         BENCH_OUT    results directory
#                 (default bench/results/vps-DATE)
#   VPS_RETRY_WAIT  a client pauses this long after a 503 (1s, upsink's
#                 Retry-After; 0 = retry at once, a client ignoring it)
#   VPS_PUBLISH   1 (default): put the summary into BENCHMARKS.md (bench-vps
#                 section) and the plot into docs/bench-vps-memory.png
#   UPSINK_DB_PROFILE  MariaDB option file (deploy/mysql/low-memory.cnf)
# Only processes started here are stopped (by pid), also on failure or Ctrl-C;
# the cgroup is removed at the end.
# shellcheck disable=SC2317 # cleanup is called from traps
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/mariadb.sh
. deploy/mariadb.sh
GO="${GO:-go}"
MODE="${VPS_MODE:-https}" # VPS_UPSINK_FLAGS: extra flags for upsink serve
MEM="${VPS_MEM:-256M}"
CLIENTS="${VPS_CLIENTS:-10000}"
DURATION="${VPS_DURATION:-60s}"
BODY="${VPS_BODY:-1KiB}"
LOADERS="${VPS_LOADERS:-2}"
RETRY_WAIT="${VPS_RETRY_WAIT:-1s}"
PUBLISH="${VPS_PUBLISH:-1}"
OUT="${BENCH_OUT:-bench/results/vps-$(date -u +%Y%m%d-%H%M%S)}"

log() { printf 'bench-vps: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root: it creates a memory cgroup"
case "$MODE" in http | https) ;; *) die "VPS_MODE must be http or https" ;; esac
db_install

log "building"
mkdir -p bin "$OUT"
make -s build GO="$GO" # static, as the Makefile builds it
"$GO" build -o bin/upsink-bench ./cmd/upsink-bench
B=bin/upsink-bench

if [ "$MODE" = https ] && ! bin/upsink serve -h 2>&1 | grep -q -- '-tls-listen'; then
	echo "bench-vps: pending HTTPS: bin/upsink serve has no --tls-listen yet; run with VPS_MODE=http" | tee "$OUT/summary.md" >&2
	exit 1
fi
per=$(((CLIENTS + LOADERS - 1) / LOADERS))
need=$((per + 256))
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$need" ] || ulimit -n "$need" 2>/dev/null ||
	die "ulimit -n $(ulimit -n) < $need per load process; raise it or add VPS_LOADERS"
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((CLIENTS + 256)) ] || ulimit -n $((CLIENTS + 256)) 2>/dev/null ||
	die "upsink needs $((CLIENTS + 256)) descriptors; ulimit -n is $(ulimit -n) (hard $(ulimit -Hn))"

tmp="" CG="" UP_PID="" DB_SERVER_PID=""
LOAD_PIDS=()
cleanup() {
	local p
	for p in "${LOAD_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	if [ -n "$UP_PID" ]; then kill -TERM "$UP_PID" 2>/dev/null || true; wait "$UP_PID" 2>/dev/null || true; fi
	if [ -n "$DB_SERVER_PID" ]; then db_stop "$DB_SERVER_PID" >/dev/null 2>&1 || true; fi
	if [ -n "$CG" ]; then $B cgroup remove --path "$CG" || log "could not remove $CG"; fi
	if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}
db_on_exit cleanup

tmp="$(mktemp -d /tmp/upsink-vps.XXXXXX)"
# Initialise the database outside the cgroup (mariadb-install-db is not part
# of the server's footprint).
db_paths "$tmp/db"
db_init

CG="$($B cgroup create --limit "$MEM" --name "upsink-vps-$$")" || { CG=""; die "cannot create the memory cgroup (see above)"; }
log "cgroup $CG (limit $MEM, no swap)"

# in_cgroup CMD...: exec CMD inside the cgroup (the subshell moves itself in
# first, so $! is the command's pid).
in_cgroup() { echo "$BASHPID" >"$CG/cgroup.procs" && exec "$@"; }

# mariadbd as deploy/mariadb.sh starts it, but inside the cgroup.
db_cmd=(mariadbd --defaults-file="$UPSINK_DB_PROFILE" --datadir="$DB_DATA" --socket="$DB_SOCK" --pid-file="$DB_PID"
	--log-error="$DB_LOG" --tmpdir="$DB_TMP" --skip-networking --user=root)
(MALLOC_ARENA_MAX=1 in_cgroup "${db_cmd[@]}" </dev/null >>"$DB_LOG" 2>&1) &
DB_SERVER_PID=$!
db_wait_ready "$DB_SERVER_PID" || die "mariadbd did not start; see $DB_LOG"
db_client -e "CREATE DATABASE vps"
DSN="$(db_dsn vps)"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=18680
while ! port_free "$PORT"; do PORT=$((PORT + 1)); done
up=(bin/upsink serve --listen "127.0.0.1:$PORT" --dsn "$DSN" --spool-dir "$tmp/spool" --idle-timeout 300s --massif "$OUT/upsink.massif" --massif-interval 500ms)
# shellcheck disable=SC2206 # VPS_UPSINK_FLAGS is a list of flags, split on spaces
up+=(${VPS_UPSINK_FLAGS:-})
URL="http://127.0.0.1:$PORT"
tlsflags=()
if [ "$MODE" = https ]; then
	TPORT=$((PORT + 1))
	while ! port_free "$TPORT"; do TPORT=$((TPORT + 1)); done
	bin/upsink gencert --dir "$tmp/tls" >/dev/null
	up+=(--tls-listen "127.0.0.1:$TPORT" --tls-cert "$tmp/tls/cert.pem" --tls-key "$tmp/tls/key.pem")
	URL="https://127.0.0.1:$TPORT"
	tlsflags=(--cacert "$tmp/tls/cert.pem")
fi
printf '%s\n' "${up[*]}" | sed "s#$tmp#\$TMP#g" >"$OUT/upsink.cmd"
(in_cgroup "${up[@]}" </dev/null >"$OUT/upsink.log" 2>&1) &
UP_PID=$!
$B wait --url "$URL/readyz" --timeout 60s "${tlsflags[@]}" || die "upsink did not become ready; see $OUT/upsink.log"
sleep 1

{
	printf 'date (UTC)\t%s\n' "$(date -u '+%Y-%m-%d %H:%M')"
	printf 'mode\t%s\n' "$MODE"
	printf 'cgroup\t%s (v%s), limit %s, swap 0\n' "$CG" "$([ -f "$CG/memory.current" ] && echo 2 || echo 1)" "$MEM"
	printf 'clients\t%s over %s load processes, keep-alive, %s bodies, %s, pause after a 503: %s\n' "$CLIENTS" "$LOADERS" "$BODY" "$DURATION" "$RETRY_WAIT"
	printf 'MariaDB profile\t%s\n' "${UPSINK_DB_PROFILE#"$PWD"/}"
	printf 'kernel\t%s\n' "$(uname -sr)"
	printf 'nproc\t%s\n' "$(nproc)"
	printf 'commit\t%s\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >"$OUT/info.tsv"

log "load: $CLIENTS clients ($LOADERS x $per) for $DURATION against $URL"
for ((i = 1; i <= LOADERS; i++)); do
	extra=()
	if [ "$i" = 1 ]; then
		extra=(--watch "upsink=$UP_PID,mariadbd=$DB_SERVER_PID" --cgroup-path "$CG" --watch-tsv "$OUT/memory.tsv" --plot "$OUT/memory")
	fi
	$B load --url "$URL/upload/vps$i" -c "$per" -d "$DURATION" --body "$BODY" --retry-wait "$RETRY_WAIT" --verify "$DSN" \
		"${tlsflags[@]}" "${extra[@]}" --json-out "$OUT/load-$i.json" >"$OUT/load-$i.txt" 2>&1 &
	LOAD_PIDS+=($!)
done
rc=0
for p in "${LOAD_PIDS[@]}"; do wait "$p" || rc=1; done
LOAD_PIDS=()
cat "$OUT"/load-*.txt >&2
$B cgroup stats --path "$CG" --json >"$OUT/cgroup.json"
$B rss --pid "$UP_PID" --json >"$OUT/upsink-end.json" || true
$B rss --pid "$DB_SERVER_PID" --json >"$OUT/mariadbd-end.json" || true
kill -TERM "$UP_PID" && wait "$UP_PID" || true
UP_PID=""
db_stop "$DB_SERVER_PID" >/dev/null 2>&1
DB_SERVER_PID=""
$B cgroup stats --path "$CG" --json >"$OUT/cgroup-after.json"
$B report-vps --dir "$OUT" >"$OUT/summary.md"
cat "$OUT/summary.md"
if [ "$PUBLISH" = 1 ]; then
	# the section of BENCHMARKS.md and the plot it shows
	mkdir -p docs
	cp "$OUT/memory.png" docs/bench-vps-memory.png
	$B report-vps --dir "$OUT" --into BENCHMARKS.md >/dev/null
	log "updated the bench-vps section of BENCHMARKS.md and docs/bench-vps-memory.png"
fi
log "results in $OUT"
exit "$rc"
