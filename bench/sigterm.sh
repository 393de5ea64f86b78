#!/usr/bin/env bash
# bench/sigterm.sh - a restart under load (`make sigterm`): upsink on a
# throwaway MariaDB, 64 keep-alive clients uploading 1 KiB bodies, SIGTERM to
# upsink after SIGTERM_AFTER (3 s); the clients go on until the run's end
# (their requests then fail: nothing listens). upsink-bench --verify then
# counts every row against what its client was answered: "present anyway
# [no answer: N]" are uploads committed without an answer (a client that
# retries stores each twice), which must be 0. Repeated SIGTERM_RUNS (3)
# times. Environment: SIGTERM_CLIENTS (64), SIGTERM_AFTER (3s), GO.
# Only processes started here are stopped (by pid).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO="${GO:-go}"
# shellcheck source=deploy/mariadb.sh
. deploy/mariadb.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh
CLIENTS="${SIGTERM_CLIENTS:-64}" AFTER="${SIGTERM_AFTER:-3}" RUNS="${SIGTERM_RUNS:-3}"

db_install
bench_setup sigterm
port=18680
for run in $(seq "$RUNS"); do
	db="sigterm_$run"
	db_client -e "DROP DATABASE IF EXISTS \`$db\`; CREATE DATABASE \`$db\`" >/dev/null
	dsn="root@unix($DB_SOCK)/$db"
	bin/upsink serve --listen "127.0.0.1:$port" --dsn "$dsn" --spool-dir "$tmp/spool-$run" >"$tmp/upsink-$run.log" 2>&1 &
	SRV_PID=$!
	bin/upsink-bench wait --url "http://127.0.0.1:$port/readyz" --timeout 60s
	bin/upsink-bench load --url "http://127.0.0.1:$port/upload/sigterm" -c "$CLIENTS" -d "$((AFTER + 3))s" --body 1KiB \
		--retry-wait 100ms --verify "$dsn" >"$tmp/load-$run.txt" 2>&1 &
	load=$!
	sleep "$AFTER"
	t0=$(date +%s%N)
	kill -TERM "$SRV_PID"
	rc=0
	wait "$SRV_PID" || rc=$?
	t1=$(date +%s%N)
	SRV_PID=""
	wait "$load" || true
	echo "run $run: upsink exit $rc after $(((t1 - t0) / 1000000)) ms; $(grep -E 'stopped' "$tmp/upsink-$run.log" | sed 's/.*msg=//')"
	grep -E '^  (uploads/s|status|verify|  +not acknowledged)' "$tmp/load-$run.txt" | sed 's/^/  /'
done
