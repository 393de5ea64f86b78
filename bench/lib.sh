# bench/lib.sh - the set-up the one-server bench scripts share (h2, ingest,
# sigterm, spool, status-shot), sourced after deploy/mariadb.sh from the
# repository's root, with GO set.
# shellcheck shell=bash
# shellcheck disable=SC2317 # bench_cleanup is called from the EXIT trap

# What the script started, stopped (by pid) on exit: the server (SRV_PID, set
# by the script), the private MariaDB (DB_SERVER_PID, set by db_start), and
# the temporary directory.
tmp="" DB_SERVER_PID="" SRV_PID=""
bench_cleanup() {
	if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then kill -KILL "$SRV_PID" 2>/dev/null || true; fi
	if [ -n "$DB_SERVER_PID" ]; then db_stop "$DB_SERVER_PID"; fi
	if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}

# bench_setup NAME: arm bench_cleanup, build bin/upsink (make build: static)
# and bin/upsink-bench, make tmp (/tmp/upsink-NAME.XXXXXX) and start a
# private MariaDB in it.
bench_setup() {
	db_on_exit bench_cleanup
	mkdir -p bin
	make -s build GO="$GO"
	"$GO" build -o bin/upsink-bench ./cmd/upsink-bench
	tmp="$(mktemp -d "/tmp/upsink-$1.XXXXXX")"
	db_start "$tmp"
}
