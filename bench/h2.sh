#!/usr/bin/env bash
# bench/h2.sh - HTTP/2 beside HTTP/1.1 (`make bench-h2`, issue 12): 1 KiB
# uploads with h2load, each run against a fresh upsink with its own database
# on one private MariaDB:
#   h2-tls   h2 by ALPN, 100 connections x 10 streams (h2load -c 100 -m 10)
#   h1-tls   HTTP/1.1 keep-alive over TLS, 1,000 connections (h2load --h1)
#   h2c      h2c with prior knowledge, 100 x 10
#   h1       HTTP/1.1 keep-alive, 1,000 connections
# so each run has 1,000 requests in flight. Per run: uploads/s, h2load's
# request times, upsink's peak RSS (VmHWM), and the rows stored against the
# 2xx answers. Then the heap per idle connection of each kind
# (server.TestIdleMemoryH2, 1,000 connections each).
# Environment: H2_REQUESTS (200000 per run), GO (go). Results in
# bench/results/h2-DATE/, a summary on stdout. Only processes started here
# are stopped (by pid).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO="${GO:-go}"
# shellcheck source=deploy/mariadb.sh
. deploy/mariadb.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh
N="${H2_REQUESTS:-200000}"

db_install
db_install_clients
bench_setup h2bench
RES="bench/results/h2-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$RES"
bin/upsink gencert --dir "$tmp" >/dev/null
head -c 1024 /dev/zero | tr '\0' 'u' >"$tmp/body"
port=18870

# run NAME SCHEME H2LOAD_ARGS...
run() {
	local name="$1" scheme="$2"
	shift 2
	local db="h2b_${name//-/_}"
	db_client -e "DROP DATABASE IF EXISTS \`$db\`; CREATE DATABASE \`$db\`" >/dev/null
	local dsn="root@unix($DB_SOCK)/$db"
	port=$((port + 2))
	local url="http://127.0.0.1:$port/upload/b"
	if [ "$scheme" = https ]; then url="https://127.0.0.1:$((port + 1))/upload/b"; fi
	bin/upsink serve --listen "127.0.0.1:$port" --tls-listen "127.0.0.1:$((port + 1))" \
		--tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" --admin-listen "" \
		--dsn "$dsn" --spool-dir "$tmp/spool-$name" --log-level warn >"$RES/$name.server.log" 2>&1 &
	SRV_PID=$!
	bin/upsink-bench wait --url "http://127.0.0.1:$port/readyz" --timeout 30s
	h2load -n "$N" -d "$tmp/body" -T 60 "$@" "$url" >"$RES/$name.txt" 2>&1 || echo "$name: h2load exit $?" >>"$RES/$name.txt"
	local hwm rows
	hwm="$(awk '/^VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$SRV_PID/status")"
	kill -TERM "$SRV_PID"
	wait "$SRV_PID" || true
	SRV_PID=""
	rows="$(db_client -N -e "SELECT COUNT(*) FROM \`$db\`.uploads")"
	echo "== $name: h2load -n $N $* $url"
	grep -E '^(finished in|requests:|status codes:|Application protocol:)' "$RES/$name.txt" | sed 's/^/  /'
	grep -E '^time for request:' "$RES/$name.txt" | sed 's/^/  /' || true
	echo "  upsink peak RSS (VmHWM): $hwm"
	echo "  rows stored: $rows"
}

{
	echo "machine: $(nproc) cores; $(date -u +%FT%TZ); commit $(git rev-parse --short HEAD)"
	run h2-tls https -c 100 -m 10
	run h1-tls https --h1 -c 1000
	run h2c http -c 100 -m 10
	run h1 http --h1 -c 1000
	echo "== heap per idle connection (go test -run TestIdleMemoryH2 -v ./server)"
	UPSINK_TEST_DSN="root@unix($DB_SOCK)/" "$GO" test -count=1 -run 'TestIdleMemoryH2' -v ./server 2>&1 |
		grep -E 'B per idle connection|^(ok|FAIL|--- )' | sed 's/^ */  /'
} | tee "$RES/summary.txt"
