#!/usr/bin/env bash
# bench/status-shot.sh - the admin listener's /status page in a real browser
# (`make status-shot`): upsink on a throwaway MariaDB, 30 s of uploads so the
# page has a history, then Debian's headless Chromium loads /status, which
# must render (its DOM dumped and checked for the page's table and chart),
# and takes a screenshot into docs/status.png (STATUS_SHOT to change).
# Only processes started here are stopped (by pid).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO="${GO:-go}"
# shellcheck source=deploy/mariadb.sh
. deploy/mariadb.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh
OUT="${STATUS_SHOT:-docs/status.png}"

db_install
db_apt_need "the status page screenshot" chromium chromium
bench_setup statusshot
mkdir -p "$(dirname "$OUT")"
db_client -e "CREATE DATABASE IF NOT EXISTS shot" >/dev/null
bin/upsink serve --listen 127.0.0.1:18790 --admin-listen 127.0.0.1:18791 --dsn "root@unix($DB_SOCK)/shot" \
	--spool-dir "$tmp/spool" >"$tmp/upsink.log" 2>&1 &
SRV_PID=$!
bin/upsink-bench wait --url http://127.0.0.1:18790/healthz --timeout 30s
bin/upsink-bench load --url http://127.0.0.1:18790/upload/shot -c 64 -d 30s --body 1KiB >"$tmp/load.txt" 2>&1
grep -E '^  uploads/s' "$tmp/load.txt"
url=http://127.0.0.1:18791/status
chromium --headless --no-sandbox --disable-gpu --dump-dom "$url" >"$tmp/dom.html" 2>/dev/null
for want in '<svg' '<polyline' 'connections' 'upsink RSS'; do
	grep -q -- "$want" "$tmp/dom.html" || { echo "status-shot: the page Chromium rendered lacks $want" >&2; exit 1; }
done
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=820,760 --screenshot="$PWD/$OUT" "$url" 2>/dev/null
[ "$(head -c 8 "$OUT" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || { echo "status-shot: $OUT is not a PNG" >&2; exit 1; }
echo "status-shot: Chromium rendered $url; screenshot in $OUT ($(wc -c <"$OUT") bytes)"
kill -TERM "$SRV_PID"
wait "$SRV_PID" || true
SRV_PID=""
