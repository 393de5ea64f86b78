#!/usr/bin/env bash
# deploy/run.sh [--dir DIR] [--db NAME] -- COMMAND [ARGS...]
#
# `make run`: start (or reuse) the private MariaDB in DIR (default var/mysql),
# create database NAME (default upsink), then run COMMAND in the foreground
# with every argument "{dsn}" replaced by root@unix(SOCKET)/NAME (also exported
# as UPSINK_DSN). On Ctrl-C / SIGTERM / SIGHUP, or when COMMAND exits, COMMAND
# is stopped first (one SIGTERM, waiting up to UPSINK_STOP_TIMEOUT=30 s), then
# mariadbd (by pid, waiting for it to exit). Data in DIR
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
: "${UPSINK_STOP_TIMEOUT:=30}"
cleanup() {
	if [ -n "$app_pid" ] && db_alive "$app_pid"; then
		db_log "stopping $1 (pid $app_pid): SIGTERM"
		kill -TERM "$app_pid" 2>/dev/null || true
		local i=0
		while db_alive "$app_pid" && [ "$i" -lt $((UPSINK_STOP_TIMEOUT * 10)) ]; do sleep 0.1; i=$((i + 1)); done
		if db_alive "$app_pid"; then
			db_log "$1 (pid $app_pid) still running after ${UPSINK_STOP_TIMEOUT}s: SIGKILL"
			kill -KILL "$app_pid" 2>/dev/null || true
		fi
	fi
	if [ -n "$app_pid" ]; then wait "$app_pid" 2>/dev/null || true; fi
	if [ -n "$DB_SERVER_PID" ]; then db_stop "$DB_SERVER_PID"; fi
}
db_on_exit cleanup "$(basename "$1")"

db_install
db_paths "$dir"
# One run per DIR: a second `make run` must not adopt (and later stop) the
# server of a run that is still alive. The lock dies with this shell (fd 9 is
# closed for mariadbd and the app), so a server left by a crashed run is
# adopted below and stopped at exit like our own.
exec 9>"$DB_DIR/run.lock"
if ! flock -n 9; then
	echo "another 'make run' is using $DB_DIR (stop it first)" >&2
	exit 1
fi
db_start "$dir"
db_client -e "CREATE DATABASE IF NOT EXISTS \`$dbname\`"

UPSINK_DSN="$(db_dsn "$dbname")"
export UPSINK_DSN
args=()
for a in "$@"; do
	if [ "$a" = "{dsn}" ]; then args+=("$UPSINK_DSN"); else args+=("$a"); fi
done
db_log "data in $DB_DIR; DSN $UPSINK_DSN"
db_log "running: ${args[*]}   (Ctrl-C stops it, then mariadbd)"

# The app gets its own session, so Ctrl-C (SIGINT to the terminal's foreground
# process group) reaches make and this script only; the trap then sends the
# app exactly one SIGTERM - a graceful stop - and waits for it before stopping
# mariadbd. (A second signal would make upsink skip draining its store.)
setsid "${args[@]}" 9>&- &
app_pid=$!
set +e
rc=1
while db_alive "$app_pid"; do
	wait "$app_pid"
	rc=$?
done
app_pid=""
exit "$rc"
