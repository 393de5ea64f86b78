#!/usr/bin/env bash
# bench/spool.sh - what the spool costs and when it is used (`make bench-spool`):
#   1. uploads/s and upsink's memory into MariaDB alone, and into the spool
#      alone (MariaDB unreachable: the DSN names a socket nobody listens on),
#      64 keep-alive clients, 1 KiB bodies, SPOOL_SECONDS (10) each;
#   2. the spool rule on a healthy MariaDB under a saturating load (512
#      clients, 64 KiB bodies): how many uploads are spooled (202) with
#      --spool-after 1s (the default) and with 50ms.
# Each run gets its own database and spool directory; --verify checks every
# acknowledged upload is stored once (after --verify-drain for the spool runs
# that MariaDB can drain). Results in bench/results/spool-*/, a summary on
# stdout. Only processes started here are stopped (by pid).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO="${GO:-go}"
# shellcheck source=deploy/mariadb.sh
. deploy/mariadb.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh
SECS="${SPOOL_SECONDS:-10}"

db_install
bench_setup spoolbench
RES="bench/results/spool-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$RES"
port=18760

# run NAME DSN_DB|down SPOOL_AFTER LOAD_ARGS...
run() {
	local name="$1" db="$2" after="$3"
	shift 3
	local dsn
	if [ "$db" = down ]; then
		dsn="root@unix($tmp/nobody.sock)/x"
	else
		db_client -e "DROP DATABASE IF EXISTS \`$db\`; CREATE DATABASE \`$db\`" >/dev/null
		dsn="root@unix($DB_SOCK)/$db"
	fi
	port=$((port + 1))
	bin/upsink serve --listen "127.0.0.1:$port" --dsn "$dsn" --spool-dir "$tmp/spool-$name" --spool-after "$after" \
		>"$RES/$name.server.log" 2>&1 &
	SRV_PID=$!
	bin/upsink-bench wait --url "http://127.0.0.1:$port/healthz" --timeout 30s
	if [ "$db" != down ]; then
		# ready with the database, not only the spool
		for _ in $(seq 300); do
			curl -sf "http://127.0.0.1:$port/readyz" | grep -q '"database":"up"' && break
			sleep 0.1
		done
	fi
	local -a verify=()
	if [ "$db" != down ]; then verify=(--verify "$dsn" --verify-drain "http://127.0.0.1:$port/readyz"); fi
	bin/upsink-bench load --url "http://127.0.0.1:$port/upload/spool" -d "${SECS}s" --watch "upsink=$SRV_PID" \
		"${verify[@]}" "$@" >"$RES/$name.txt" 2>&1 || echo "$name: load exit $?" >>"$RES/$name.txt"
	kill -TERM "$SRV_PID"
	wait "$SRV_PID" || true
	SRV_PID=""
	echo "== $name (spool-after $after, database $db): $*"
	grep -E "^  (uploads/s|status|latency|verify|watched)" "$RES/$name.txt" | sed 's/^/  /' || true
	echo "  spool dir after stop: $(du -sh "$tmp/spool-$name" | cut -f1)"
}

{
	run mariadb sb_mariadb 1s -c 64 --body 1KiB
	run spool-only down 1s -c 64 --body 1KiB
	run saturate-1s sb_sat1 1s -c 512 --body 64KiB
	run saturate-50ms sb_sat50 50ms -c 512 --body 64KiB
} | tee "$RES/summary.txt"
