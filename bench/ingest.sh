#!/usr/bin/env bash
# bench/ingest.sh - structured ingest end to end (`make bench-ingest`): rows/s
# into a declared table for NDJSON and CSV bodies of 1,000 rows of ~100 bytes
# each, over keep-alive (h2load --h1, the same body every request), beside raw
# 1 KiB uploads (upsink-bench load), each INGEST_SECONDS (10) with
# INGEST_CLIENTS (64) connections, on a throwaway MariaDB. Prints requests/s,
# rows/s, the server's peak RSS (VmHWM) and checks that the table holds
# exactly 1,000 rows per 201. Results in bench/results/ingest-DATE/. Only
# processes started here are stopped (by pid).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO="${GO:-go}"
# shellcheck source=deploy/mariadb.sh
. deploy/mariadb.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh
SECS="${INGEST_SECONDS:-10}" CLIENTS="${INGEST_CLIENTS:-64}"

db_install
db_apt_need "the ingest benchmark" nghttp2-client h2load
bench_setup ingestbench
RES="bench/results/ingest-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$RES"

cat >"$tmp/upsink.toml" <<'EOF'
[[table]]
name = "readings"
  [[table.column]]
  name = "device"
  type = "varchar(32)"
  not_null = true
  [[table.column]]
  name = "temp"
  type = "double"
  [[table.column]]
  name = "ts"
  type = "datetime(6)"
  [[table.column]]
  name = "seq"
  type = "int unsigned"
  [[table.column]]
  name = "ok"
  type = "bool"
EOF
# 1,000 rows of ~100 bytes each, as NDJSON and as CSV.
awk 'BEGIN { for (i = 0; i < 1000; i++) printf "{\"device\":\"sensor-%04d\",\"temp\":%.1f,\"ts\":\"2026-12-02 03:04:%02d.%06d\",\"seq\":%d,\"ok\":true}\n", i, 20 + (i % 70) / 10, i % 60, i, i }' >"$tmp/rows.ndjson"
awk 'BEGIN { print "device,temp,ts,seq,ok"; for (i = 0; i < 1000; i++) printf "sensor-%04d,%.1f,2026-12-02 03:04:%02d.%06d,%d,true\n", i, 20 + (i % 70) / 10, i % 60, i, i }' >"$tmp/rows.csv"
printf 'body sizes: ndjson %s B, csv %s B (1,000 rows each)\n' "$(wc -c <"$tmp/rows.ndjson")" "$(wc -c <"$tmp/rows.csv")" | tee "$RES/summary.txt"

port=18740
# start DB: a fresh database and upsink on it
start() {
	local db="$1"
	db_client -e "DROP DATABASE IF EXISTS \`$db\`; CREATE DATABASE \`$db\`" >/dev/null
	DSN="root@unix($DB_SOCK)/$db"
	port=$((port + 1))
	bin/upsink serve --listen "127.0.0.1:$port" --dsn "$DSN" --config "$tmp/upsink.toml" --spool-dir "$tmp/spool-$db" \
		--max-body 4MiB --max-inflight 64MiB >"$RES/$db.server.log" 2>&1 &
	SRV_PID=$!
	bin/upsink-bench wait --url "http://127.0.0.1:$port/healthz" --timeout 30s
	for _ in $(seq 300); do
		curl -sf "http://127.0.0.1:$port/readyz" | grep -q '"database":"up"' && break
		sleep 0.1
	done
}
stop() {
	local hwm
	hwm="$(awk '/^VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$SRV_PID/status")"
	kill -TERM "$SRV_PID"
	wait "$SRV_PID" || true
	SRV_PID=""
	echo "  upsink peak RSS (VmHWM) $hwm"
}

for fmt in ndjson csv; do
	ctype=application/x-ndjson
	[ "$fmt" = csv ] && ctype=text/csv
	start "ib_$fmt"
	h2load --h1 -c "$CLIENTS" -D "$SECS" -d "$tmp/rows.$fmt" -H "content-type: $ctype" \
		"http://127.0.0.1:$port/ingest/readings" >"$RES/$fmt.h2load.txt" 2>&1 || true
	reqs="$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($i ~ /req\/s/) { v = $(i-1); gsub(",", "", v); print v } }' "$RES/$fmt.h2load.txt")"
	ok="$(awk '/^status codes:/ { v = $3; gsub(",", "", v); print v }' "$RES/$fmt.h2load.txt")"
	started="$(awk '/^requests:/ { v = $4; gsub(",", "", v); print v }' "$RES/$fmt.h2load.txt")"
	rows="$(db_client -N -e "SELECT COUNT(*) FROM \`ib_$fmt\`.readings")"
	{
		echo "== $fmt: $CLIENTS keep-alive clients, ${SECS} s, 1,000 rows per request"
		grep -E '^(finished in|status codes|requests:)' "$RES/$fmt.h2load.txt" | sed 's/^/  /'
		awk -v r="$reqs" -v secs="$SECS" 'BEGIN { printf "  requests/s %.1f  rows/s %.0f\n", r, r * 1000 }'
		# h2load stops reading at the end: requests in flight then may be
		# committed unanswered, never partly (all or nothing).
		if [ $((rows % 1000)) -eq 0 ] && [ "$rows" -ge $((ok * 1000)) ] && [ "$rows" -le $((started * 1000)) ]; then
			echo "  table rows $rows: 1,000 x $((rows / 1000)) requests ($ok answered 2xx, $started started)"
		else
			echo "  FAIL: table rows $rows, 2xx answers $ok, requests started $started"
		fi
		stop
	} >"$RES/$fmt.summary"
	tee -a "$RES/summary.txt" <"$RES/$fmt.summary"
done

start ib_raw
bin/upsink-bench load --url "http://127.0.0.1:$port/upload/raw" -c "$CLIENTS" -d "${SECS}s" --body 1KiB \
	--verify "$DSN" >"$RES/raw.txt" 2>&1 || true
{
	echo "== raw 1 KiB uploads: $CLIENTS keep-alive clients, ${SECS} s"
	grep -E '^  (uploads/s|status|verify)' "$RES/raw.txt"
	stop
} >"$RES/raw.summary"
tee -a "$RES/summary.txt" <"$RES/raw.summary"
