#!/usr/bin/env bash
# deploy/run.sh [--dir DIR] [--db NAME] -- COMMAND [ARGS...]
#
# `make run`: start (or reuse) the private MariaDB in DIR (default var/mysql),
# create database NAME (default upsink), then run COMMAND in the foreground
# with every argument "{dsn}" replaced by root@unix(SOCKET)/NAME (also exported
# as UPSINK_DSN). On Ctrl-C / SIGTERM / SIGHUP, or when COMMAND exits, COMMAND
# is stopped first, then mariadbd (by pid, waiting for it to exit). Data in DIR
# is kept, so the next run reuses it.
# shellcheck disable=SC2317 # cleanup is called from traps
set -euo pipefail
# shellcheck source=deploy/mariadb.sh
. "$(dirname "${BASH_SOURCE[0]}")/mariadb.sh"

dir="$UPSINK_REPO/var/mysql"
dbname=upsink
while [ $# -gt 0 ]; do
	case "$1" in
	--dir) dir="$2"; shift 2 ;;
	--db) dbname="$2"; shift 2 ;;
	--) shift; break ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--dir DIR] [--db NAME] -- COMMAND [ARGS...]" >&2; exit 2; }
case "$dbname" in *[!A-Za-z0-9_]* | '') db_die "bad database name: $dbname" ;; esac

app_pid=""
DB_SERVER_PID=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$app_pid" ] && kill -0 "$app_pid" 2>/dev/null; then
		db_log "stopping $1 (pid $app_pid)"
		kill -TERM "$app_pid" 2>/dev/null || true
		local i=0
		while kill -0 "$app_pid" 2>/dev/null && [ "$i" -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
		if kill -0 "$app_pid" 2>/dev/null; then
			db_log "$1 (pid $app_pid) ignored SIGTERM for 15s: SIGKILL"
			kill -KILL "$app_pid" 2>/dev/null || true
		fi
		wait "$app_pid" 2>/dev/null || true
	fi
	if [ -n "$DB_SERVER_PID" ]; then db_stop "$DB_SERVER_PID"; fi
	exit "$rc"
}
app_name="$(basename "$1")"
trap 'cleanup "$app_name"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

db_install
db_start "$dir"
# A server found running (a crashed earlier run) is adopted: stopped at exit too.
db_client -e "CREATE DATABASE IF NOT EXISTS \`$dbname\`"

UPSINK_DSN="$(db_dsn "$dbname")"
export UPSINK_DSN
args=()
for a in "$@"; do
	if [ "$a" = "{dsn}" ]; then args+=("$UPSINK_DSN"); else args+=("$a"); fi
done
db_log "data in $DB_DIR; DSN $UPSINK_DSN"
db_log "running: ${args[*]}   (Ctrl-C stops it, then mariadbd)"

# Background + wait, so that a signal runs the trap at once. A background job
# of a non-interactive shell starts with SIGINT ignored: the trap forwards
# SIGTERM instead, and Ctrl-C reaches COMMAND directly when it re-enables
# SIGINT (Go's signal.Notify does).
"${args[@]}" &
app_pid=$!
set +e
rc=1
while kill -0 "$app_pid" 2>/dev/null; do
	wait "$app_pid"
	rc=$?
done
app_pid=""
exit "$rc"
