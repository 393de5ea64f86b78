#!/usr/bin/env bash
# deploy/mariadb.sh - a private, low-memory MariaDB for upsink (dev, tests, small VPS).
#
# Usage:
#   deploy/mariadb.sh install          install MariaDB from Debian's packages if missing
#                                      (root only; otherwise one line on stderr, exit 2)
#   deploy/mariadb.sh install-cc       same for the C compiler that go test -race needs
#   deploy/mariadb.sh install-clients  same for curl, openssl, h2load, ms_print (tests), and h2spec (go install)
#   deploy/mariadb.sh start  DIR       initialise DIR if needed, start mariadbd detached
#                                      (own session), wait until it answers
#   deploy/mariadb.sh stop   DIR       stop the mariadbd serving DIR (SIGTERM, wait)
#   deploy/mariadb.sh status DIR       exit 0 and print the pid if it is running
#   deploy/mariadb.sh socket DIR       print the unix socket path used for DIR
#   deploy/mariadb.sh dsn    DIR [DB]  print the go-sql-driver DSN, root@unix(SOCKET)/DB
#   deploy/mariadb.sh client DIR [ARGS...]  run the mariadb client on DIR's socket
#
# It is also sourced as a library by deploy/run.sh and deploy/with-testdb.sh.
#
# Layout of DIR (everything on the command line, never in the shared .cnf):
#   DIR/data/               --datadir (initialised by mariadb-install-db)
#   DIR/data/mariadbd.err   --log-error
#   DIR/tmp/                --tmpdir
#   DIR/mariadbd.pid        --pid-file
#   DIR/mysqld.sock         --socket (unix socket only: --skip-networking), or
#                           /tmp/upsink-<hash>/mysqld.sock when DIR's absolute
#                           path would make it longer than a unix socket allows
#
# Environment:
#   UPSINK_DB_PROFILE   option file (default deploy/mysql/low-memory.cnf)
#   UPSINK_DB_TIMEOUT   seconds to wait for readiness / shutdown (default 60)
#
# Root is user "root" with an empty password (auth "normal"), reachable only
# through the unix socket, so DSN root@unix(SOCKET)/ works whichever OS user
# runs this (root gets --user=root). DIR is mode 0700: only that OS user (and
# root) can reach the socket.

# ---------------------------------------------------------------------------
# library part (safe to source)
# shellcheck disable=SC2034,SC2119,SC2120 # globals and optional args are used by the callers

# mariadbd lives in /usr/sbin, which is not on a non-root user's PATH on Debian.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;; esac
export PATH

UPSINK_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${UPSINK_DB_PROFILE:=$UPSINK_REPO/deploy/mysql/low-memory.cnf}"
: "${UPSINK_DB_TIMEOUT:=60}"
case "$UPSINK_DB_PROFILE" in /*) ;; *) UPSINK_DB_PROFILE="$PWD/$UPSINK_DB_PROFILE" ;; esac

db_log() { printf 'mariadb.sh: %s\n' "$*" >&2; }
db_die() { db_log "$*"; exit 1; }

db_have() { command -v "$1" >/dev/null 2>&1; }

# db_install: make sure the server and client programs exist.
db_install() {
	if db_have mariadbd && db_have mariadb-install-db && db_have mariadb-admin && db_have mariadb; then
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		echo "MariaDB is not installed: as root run 'apt-get update && apt-get install -y --no-install-recommends mariadb-server mariadb-client', then retry" >&2
		exit 2
	fi
	db_log "MariaDB not found: installing Debian's mariadb-server and mariadb-client"
	# Keep the package's postinst from starting the distribution's own (stock,
	# ~100 MB) server: we run a private one. policy-rc.d is Debian's standard
	# switch for that; only add ours if none exists, and remove it afterwards.
	local policy=/usr/sbin/policy-rc.d added=0 rc=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
	fi
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mariadb-server mariadb-client || rc=$?
	[ "$added" = 1 ] && rm -f "$policy"
	[ "$rc" = 0 ] || db_die "apt-get install failed (exit $rc)"
	db_have mariadbd || db_die "mariadbd still not found after installing mariadb-server"
	if db_have systemctl && [ -d /run/systemd/system ] && systemctl is-enabled --quiet mariadb 2>/dev/null; then
		db_log "note: Debian's own mariadb.service is enabled at boot (stock settings, ~100 MB);"
		db_log "      upsink runs its own server, so on a small box: systemctl disable --now mariadb"
	fi
}

# db_on_exit FN [ARGS...]: run FN ARGS once when the script ends, by exit,
# Ctrl-C, SIGTERM or SIGHUP, then exit with the script's status (130/143/129
# for the signals). FN stops what the script started, by PID.
db_on_exit() {
	DB_EXIT_CMD=("$@")
	trap db_run_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
}
# shellcheck disable=SC2317 # called from the EXIT trap
db_run_exit() {
	local rc=$?
	trap - EXIT INT TERM HUP
	"${DB_EXIT_CMD[@]}"
	exit "$rc"
}

# db_apt_need WHY PKG CMD...: install Debian package PKG (as root) unless every
# CMD is on PATH; otherwise say in one line what to install and exit 2.
db_apt_need() {
	local why="$1" pkg="$2" missing="" c
	shift 2
	for c in "$@"; do db_have "$c" || missing="$missing $c"; done
	[ -n "$missing" ] || return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "$why needs$missing: as root run 'apt-get update && apt-get install -y --no-install-recommends $pkg', then retry" >&2
		exit 2
	fi
	db_log "$why needs$missing: installing $pkg"
	if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkg; }; then
		db_die "apt-get install $pkg failed"
	fi
}

# db_install_cc: `go test -race` needs cgo, hence a C compiler (gcc).
db_install_cc() {
	local cc
	cc="$(${GO:-go} env CC 2>/dev/null)" || cc=gcc
	cc="${cc%% *}"
	db_apt_need "go test -race" "gcc libc6-dev" "${cc:-gcc}"
}

# db_install_clients: the real clients the tests drive (curl, openssl
# s_client, h2load) and ms_print for the massif heap profiles.
db_install_clients() {
	db_apt_need "the HTTPS client tests" "curl ca-certificates" curl
	db_apt_need "the HTTPS client tests" openssl openssl
	db_apt_need "the HTTPS client tests" nghttp2-client h2load
	db_apt_need "the massif profile test" valgrind ms_print
	db_apt_need "the Prometheus scrape test" prometheus prometheus promtool
	db_go_need "the HTTP/2 conformance test" h2spec "$H2SPEC_MODULE"
}

# The h2spec the HTTP/2 conformance test runs (server/h2spec_test.go).
H2SPEC_MODULE=github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible

# db_go_need WHY CMD MODULE@VERSION: go install MODULE unless CMD is on the
# PATH or in $(go env GOPATH)/bin already.
db_go_need() {
	local why="$1" cmd="$2" mod="$3" bin
	bin="$(${GO:-go} env GOPATH)/bin"
	db_have "$cmd" && return 0
	[ -x "$bin/$cmd" ] && return 0
	db_log "$why needs $cmd: go install $mod"
	${GO:-go} install "$mod" || db_die "go install $mod failed"
}

# db_paths DIR: set DB_DIR DB_DATA DB_TMP DB_PID DB_LOG DB_SOCK for DIR.
db_paths() {
	[ -n "${1:-}" ] || db_die "missing DIR argument"
	mkdir -p "$1" || db_die "cannot create $1"
	DB_DIR="$(cd "$1" && pwd -P)"
	DB_DATA="$DB_DIR/data"
	DB_TMP="$DB_DIR/tmp"
	DB_PID="$DB_DIR/mariadbd.pid"
	DB_LOG="$DB_DATA/mariadbd.err"
	DB_SOCK="$DB_DIR/mysqld.sock"
	DB_SOCK_SHORT=0
	# sun_path holds 108 bytes including the NUL: keep a margin.
	if [ "${#DB_SOCK}" -gt 100 ]; then
		local h
		h="$(printf '%s' "$DB_DIR" | sha256sum | cut -c1-12)"
		DB_SOCK="/tmp/upsink-$h/mysqld.sock"
		DB_SOCK_SHORT=1
	fi
}

# db_is_ours PID: PID is a live (non-zombie) mariadbd serving $DB_DATA.
db_is_ours() {
	local pid="$1" comm
	case "$pid" in '' | *[!0-9]*) return 1 ;; esac
	comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
	[ "$comm" = mariadbd ] || return 1
	# a zombie has an empty cmdline; no pipe here (pipefail + early exit of grep)
	local nl=$'\n' cl
	cl="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
	case "$nl$cl$nl" in *"$nl--datadir=$DB_DATA$nl"*) return 0 ;; esac
	return 1
}

# db_alive PID: PID exists and is not a zombie (whatever it runs: right after
# the fork it may still be bash or setsid rather than mariadbd).
db_alive() {
	local st
	st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	st="${st##*) }"
	[ "${st%% *}" != Z ]
}

# db_running_pid: print the pid of the mariadbd serving $DB_DATA, if any.
db_running_pid() {
	local pid d
	if [ -s "$DB_PID" ]; then
		pid="$(tr -dc 0-9 <"$DB_PID")"
		if db_is_ours "$pid"; then echo "$pid"; return 0; fi
	fi
	# no (valid) pid file: look for a server on this datadir anyway
	for d in /proc/[0-9]*; do
		pid="${d#/proc/}"
		if db_is_ours "$pid"; then echo "$pid"; return 0; fi
	done
	return 1
}

db_ping() {
	mariadb-admin --no-defaults --socket="$DB_SOCK" --user=root --connect-timeout=2 ping >/dev/null 2>&1
}

db_tail_log() {
	if [ -f "$DB_LOG" ]; then
		db_log "last lines of $DB_LOG:"
		tail -n 25 "$DB_LOG" >&2
	fi
}

# db_wait_ready PID: poll ping until it answers, PID dies, or the timeout.
db_wait_ready() {
	local pid="$1" i=0 limit=$((UPSINK_DB_TIMEOUT * 5))
	while [ "$i" -lt "$limit" ]; do
		if ! db_alive "$pid"; then
			wait "$pid" 2>/dev/null || true
			db_log "mariadbd (pid $pid) exited during start-up"
			db_tail_log
			return 1
		fi
		if db_ping; then return 0; fi
		sleep 0.2
		i=$((i + 1))
	done
	db_log "mariadbd (pid $pid) did not answer on $DB_SOCK within ${UPSINK_DB_TIMEOUT}s"
	db_tail_log
	return 1
}

db_root_flag() { [ "$(id -u)" -eq 0 ] && echo --user=root; }

# db_init: create and initialise $DB_DATA if it is not initialised yet.
db_init() {
	mkdir -p "$DB_TMP" || db_die "cannot create $DB_TMP"
	if [ -d "$DB_DATA/mysql" ]; then return 0; fi
	if [ -d "$DB_DATA" ] && [ -n "$(ls -A "$DB_DATA" 2>/dev/null)" ]; then
		db_die "$DB_DATA exists, is not empty and has no mysql/ system schema: remove it and retry"
	fi
	[ -f "$UPSINK_DB_PROFILE" ] || db_die "profile $UPSINK_DB_PROFILE not found"
	db_log "initialising $DB_DATA with $(basename "$UPSINK_DB_PROFILE")"
	mkdir -p "$DB_DATA" && chmod 700 "$DB_DIR" "$DB_DATA"
	local ilog="$DB_DIR/install-db.log" extra="$DB_TMP/init-extra.sql"
	# install-db also creates root@<hostname>, which skip-name-resolve then
	# warns about at every start: keep only the local root accounts.
	cat >"$extra" <<-'SQL'
		DELETE FROM mysql.global_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
		DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
	SQL
	# shellcheck disable=SC2046
	if ! mariadb-install-db --defaults-file="$UPSINK_DB_PROFILE" \
		--datadir="$DB_DATA" --tmpdir="$DB_TMP" \
		--auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
		--extra-file="$extra" $(db_root_flag) >"$ilog" 2>&1; then
		db_log "mariadb-install-db failed; from $ilog:"
		{ grep -E '\[ERROR\]' "$ilog" || tail -n 25 "$ilog"; } >&2
		rm -rf "$DB_DATA" "$extra"
		return 1
	fi
	rm -f "$extra"
}

# db_clean_stale: remove a pid file / socket / socket lock left by a dead server.
db_clean_stale() {
	if [ -e "$DB_PID" ] || [ -e "$DB_SOCK" ] || [ -e "$DB_SOCK.lock" ]; then
		db_log "removing stale pid file/socket of a server that is no longer running"
		rm -f "$DB_PID" "$DB_SOCK" "$DB_SOCK.lock"
	fi
}

# db_start DIR [detach]: make sure a server is serving DIR; sets DB_SERVER_PID
# and DB_STARTED (1 if this call started it, 0 if it reused a running one).
# With "detach" the server gets its own session (survives the caller);
# otherwise it stays in the caller's process group (mariadbd ignores SIGINT,
# so Ctrl-C still reaches only the app; the caller stops it with db_stop).
db_start() {
	db_paths "$1"
	local detach="${2:-}" pid
	DB_STARTED=0
	if pid="$(db_running_pid)"; then
		db_log "mariadbd (pid $pid) is already running on $DB_DATA: reusing it"
		db_wait_ready "$pid" || return 1
		DB_SERVER_PID="$pid"
		return 0
	fi
	db_clean_stale
	db_init || return 1
	if [ "$DB_SOCK_SHORT" = 1 ]; then
		local sdir="${DB_SOCK%/*}"
		[ -d "$sdir" ] || mkdir -m 700 "$sdir" || db_die "cannot create $sdir"
		[ -O "$sdir" ] || db_die "$sdir belongs to another user"
		db_log "note: $DB_DIR is too long for a unix socket path; socket is $DB_SOCK"
	fi
	local -a cmd=(mariadbd --defaults-file="$UPSINK_DB_PROFILE"
		--datadir="$DB_DATA" --socket="$DB_SOCK" --pid-file="$DB_PID"
		--log-error="$DB_LOG" --tmpdir="$DB_TMP" --skip-networking)
	[ "$(id -u)" -eq 0 ] && cmd+=(--user=root)
	if [ "$detach" = detach ]; then
		# setsid execs in place (we are not a group leader), so $! is mariadbd.
		MALLOC_ARENA_MAX=1 setsid "${cmd[@]}" </dev/null >>"$DB_LOG" 2>&1 9>&- &
	else
		MALLOC_ARENA_MAX=1 "${cmd[@]}" </dev/null >>"$DB_LOG" 2>&1 9>&- &
	fi
	pid=$!
	DB_STARTED=1
	if ! db_wait_ready "$pid"; then
		db_kill_wait "$pid" >/dev/null 2>&1
		return 1
	fi
	DB_SERVER_PID="$pid"
	db_log "mariadbd (pid $pid) ready on $DB_SOCK"
}

# db_kill_wait PID: SIGTERM, wait up to the timeout, then SIGKILL.
db_kill_wait() {
	local pid="$1" i=0 limit=$((UPSINK_DB_TIMEOUT * 10))
	db_is_ours "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	while db_is_ours "$pid"; do
		if [ "$i" -ge "$limit" ]; then
			db_log "mariadbd (pid $pid) still running after ${UPSINK_DB_TIMEOUT}s: SIGKILL (InnoDB recovers on next start)"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.5
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	wait "$pid" 2>/dev/null || true # reap it if it is our child
	return 0
}

# db_stop [PID]: stop the server serving $DB_DATA (db_paths must have run).
db_stop() {
	local pid="${1:-}"
	[ -n "$pid" ] && db_is_ours "$pid" || pid="$(db_running_pid)" || pid=""
	if [ -z "$pid" ]; then
		db_clean_stale
		return 0
	fi
	db_log "stopping mariadbd (pid $pid)"
	db_kill_wait "$pid"
	rm -f "$DB_SOCK.lock"
	if [ "$DB_SOCK_SHORT" = 1 ]; then rmdir "${DB_SOCK%/*}" 2>/dev/null || true; fi
	return 0
}

db_dsn() { printf 'root@unix(%s)/%s\n' "$DB_SOCK" "${1:-}"; }

db_client() { mariadb --no-defaults --socket="$DB_SOCK" --user=root "$@"; }

# ---------------------------------------------------------------------------
# command-line part

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	sub="${1:-}"
	shift || true
	case "$sub" in
	install) db_install ;;
	install-cc) db_install_cc ;;
	install-clients) db_install_clients ;;
	start)
		db_install
		db_start "${1:-}" detach
		echo "DSN: $(db_dsn)" >&2
		;;
	stop) db_paths "${1:-}" && db_stop ;;
	status)
		db_paths "${1:-}"
		if pid="$(db_running_pid)" && db_ping; then echo "$pid"; else exit 1; fi
		;;
	socket) db_paths "${1:-}" && echo "$DB_SOCK" ;;
	dsn) db_paths "${1:-}" && db_dsn "${2:-}" ;;
	client)
		db_paths "${1:-}"
		shift
		db_client "$@"
		;;
	*)
		sed -n '2,16s/^# \{0,1\}//p' "$0" >&2
		exit 2
		;;
	esac
fi
