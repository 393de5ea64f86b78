#!/usr/bin/env bash
# bench/faults.sh - the fault suite of issue 8 (`make faults`): real processes
# (a throwaway MariaDB in /tmp, bin/upsink, bin/upsink-bench), each scenario on
# its own database and its own spool directory, every step bounded in time.
# 64 keep-alive clients upload 1 KiB bodies through each fault; afterwards
# `upsink-bench load --verify` checks every answer against the table (0
# acknowledged uploads lost, 0 stored twice) once the spool has drained.
#
#   (--spool-max 1GiB, the default's cap, except in 6; --spool-after 1s)
#   1 mariadb-kill9   kill -9 mariadbd at 3 s, restart it 5 s later
#   2 upsink-kill9    MariaDB stopped at 3 s (a spool backlog forms), kill -9
#                     upsink at 6 s and restart it (the spool is recovered),
#                     MariaDB back at 9 s, kill -9 upsink again 0.5 s into the
#                     replay and restart it (the replay resumes)
#   3 upsink-sigterm  SIGTERM upsink at 3 s (healthy), restart it; MariaDB
#                     stopped at 7 s, SIGTERM upsink at 10 s with a backlog,
#                     restart it, MariaDB back at 12 s (the spool drains)
#   4 mariadb-stall   SIGSTOP mariadbd at 3 s, SIGCONT 10 s later
#   5 kill-conn       KILL CONNECTION of every session of upsink's database,
#                     every 200 ms for 10 s (never this script's own session)
#   6 spool-full      --spool-dir on an 8 MiB tmpfs (--spool-max above it, so
#                     the filesystem fills: ENOSPC), MariaDB stopped at 2 s
#                     until 14 s: uploads spool until the disk is full, then
#                     503 + Retry-After (probed with curl); MariaDB restarted,
#                     the spool drains. Needs root (mount); else "skipped".
#   7 idempotent      faults 1-5 one after the other (shorter) in one run of
#                     clients that retry every failed or timed-out upload with
#                     the same Idempotency-Key until it succeeds
#                     (upsink-bench load --idempotency): every upload exactly once
#
# Per scenario one summary line: uploads sent, share of answers that were 2xx
# during the fault (from the load's once-a-second progress counts, fault start
# to fault end in whole seconds; connection errors while upsink is down are not
# answers), the 201 and 202 shares (of the fault's answers when the progress
# line has them, else of the whole run), lost, duplicated, spool drained and
# the time from the end of the fault until /readyz first shows it empty. All
# into bench/results/faults-DATE.txt (raw logs in bench/results/faults-DATE/),
# a markdown table for BENCHMARKS.md at the end. Exit 1 if any scenario lost,
# doubled or changed an acknowledged upload, or left the spool undrained.
#
# Environment: FAULTS_ONLY (scenario numbers, e.g. "1 4" or 2,5; default all),
# FAULTS_SHORT (1: the short version for make test, every time at 40 % and 16
# clients), FAULTS_TIME_PCT (100), FAULTS_CLIENTS (64), FAULTS_BODY (1KiB),
# FAULTS_IDEM_ALL (1: idempotent clients in every scenario, not only in 7),
# FAULTS_PORT (first port tried, 18700; 18700-18799), FAULTS_SPOOL_AFTER (1s),
# FAULTS_DRAIN_TIMEOUT (60 s), FAULTS_BENCH (an upsink-bench binary to use
# instead of building bin/upsink-bench),
# GO. Server features are detected: without --spool-dir (before issue 8's
# server) upsink runs without a spool and refuses (503) while MariaDB is away;
# without load --idempotency scenario 7 runs plain clients and says so.
# Only processes started here are stopped (by pid), also on failure or Ctrl-C;
# a SIGSTOPped mariadbd is continued before it is stopped.
# shellcheck disable=SC2317 # cleanup is called from traps
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO="${GO:-go}"
# shellcheck source=deploy/mariadb.sh
. deploy/mariadb.sh
ONLY="${FAULTS_ONLY:-1 2 3 4 5 6 7}"
ONLY="${ONLY//,/ }"
# FAULTS_SHORT=1: every time in a scenario at 40 % (the stall 4 s, the restart
# 2 s after a kill), 16 clients; the short version for make test.
if [ "${FAULTS_SHORT:-0}" = 1 ]; then PCT="${FAULTS_TIME_PCT:-40}" CLIENTS="${FAULTS_CLIENTS:-16}"; else
	PCT="${FAULTS_TIME_PCT:-100}" CLIENTS="${FAULTS_CLIENTS:-64}"
fi
BODY="${FAULTS_BODY:-1KiB}"
PORT0="${FAULTS_PORT:-18700}"
SPOOL_AFTER="${FAULTS_SPOOL_AFTER:-1s}"
DRAIN_TIMEOUT="${FAULTS_DRAIN_TIMEOUT:-60}"

log() { printf 'faults: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

db_install
db_apt_need "the fault suite" curl curl
db_apt_need "the fault suite" jq jq

GONE_RC=0 SLEEP_PID="" tmp="" DB_SERVER_PID="" DB_PAUSED=0 DB_UP=0 SRV_PID="" LOAD_PID="" POLL_PID="" MNT=""
cleanup() {
	local p
	for p in "$SLEEP_PID" "$POLL_PID" "$LOAD_PID"; do
		if [ -n "$p" ]; then
			kill -TERM "$p" 2>/dev/null || true
			wait "$p" 2>/dev/null || true
		fi
	done
	if [ -n "$SRV_PID" ]; then
		kill -KILL "$SRV_PID" 2>/dev/null || true
		wait "$SRV_PID" 2>/dev/null || true
	fi
	if [ "$DB_PAUSED" = 1 ] && [ -n "$DB_SERVER_PID" ]; then kill -CONT "$DB_SERVER_PID" 2>/dev/null || true; fi
	if [ "$DB_UP" = 1 ] || [ -n "$DB_SERVER_PID" ]; then db_stop "$DB_SERVER_PID" 2>/dev/null || true; fi
	if [ -n "$MNT" ]; then umount "$MNT" 2>/dev/null || log "could not unmount $MNT"; fi
	if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}
db_on_exit cleanup

log "building"
mkdir -p bin
make -s build GO="$GO" # static, as the Makefile builds it
B="${FAULTS_BENCH:-bin/upsink-bench}"
if [ -z "${FAULTS_BENCH:-}" ]; then "$GO" build -o bin/upsink-bench ./cmd/upsink-bench; fi

# What the binaries can do (issue 8 lands in parts).
HAVE_SPOOL=0 HAVE_IDEM=0 HAVE_DRAIN=0 HAVE_RTO=0
srv_help="$(bin/upsink serve -h 2>&1 || true)" load_help="$($B load -h 2>&1 || true)"
case "$srv_help" in *-spool-dir*) HAVE_SPOOL=1 ;; esac
case "$load_help" in *-idempotency*) HAVE_IDEM=1 ;; esac
case "$load_help" in *-verify-drain*) HAVE_DRAIN=1 ;; esac
case "$load_help" in *-request-timeout*) HAVE_RTO=1 ;; esac
log "features: server spool $HAVE_SPOOL; load --idempotency $HAVE_IDEM, --verify-drain $HAVE_DRAIN, --request-timeout $HAVE_RTO"

STAMP="$(date -u +%Y%m%d-%H%M%S)"
RES="bench/results/faults-$STAMP"
SUMMARY="bench/results/faults-$STAMP.txt"
mkdir -p "$RES"
{
	printf 'date (UTC)\t%s\n' "$(date -u '+%Y-%m-%d %H:%M')"
	printf 'commit\t%s\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- cmd server store spool parser conn tlsbridge budget bench 2>/dev/null || echo ' (+ uncommitted changes)')"
	printf 'nproc\t%s\n' "$(nproc)"
	printf 'kernel\t%s\n' "$(uname -sr)"
	printf 'features\tserver spool %s; load --idempotency %s, --verify-drain %s, --request-timeout %s\n' "$HAVE_SPOOL" "$HAVE_IDEM" "$HAVE_DRAIN" "$HAVE_RTO"
	printf 'clients\t%s keep-alive, body %s\n' "$CLIENTS" "$BODY"
} >"$RES/info.tsv"

tmp="$(mktemp -d /tmp/upsink-faults.XXXXXX)"
DBDIR="$tmp/db"
db_start "$DBDIR" 2>>"$RES/mariadb.log"
DB_UP=1

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
	local p
	for p in $(seq "$1" 18799); do
		if port_free "$p"; then echo "$p"; return 0; fi
	done
	die "no free port in $1-18799"
}

# ---------------------------------------------------------------------------
# per-scenario state: N NAME DB DSN SPOOL SPOOL_MAX PORT URL T0 FS FE; events
# with their time since the load started go to $RES/N-NAME.events.

ev() {
	local t
	t="$(now_ms)"
	printf '%7.3f s  %s\n' "$((t - T0))e-3" "$*" >>"$EV"
	log "[$N $NAME] $(printf '%6.2f' "$((t - T0))e-3") s  $*"
}

# sleep_until SECONDS: sleep until SECONDS (whole; times PCT %) after the load started.
sleep_until() {
	local ms=$((T0 + $1 * 10 * PCT - $(now_ms)))
	# in the background: a signal to this script is handled at once, not after the sleep
	if [ "$ms" -gt 0 ]; then
		sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))" &
		SLEEP_PID=$!
		wait "$SLEEP_PID" || true
		SLEEP_PID=""
	fi
}

# wait_gone PID SECONDS: wait until PID (a child of this shell) has exited, at
# most SECONDS; then reap it into GONE_RC. Returns 1 on timeout.
wait_gone() {
	local pid="$1" lim=$(($2 * 10)) i=0
	while db_alive "$pid"; do
		i=$((i + 1))
		if [ "$i" -gt "$lim" ]; then return 1; fi
		sleep 0.1
	done
	GONE_RC=0
	wait "$pid" 2>/dev/null || GONE_RC=$?
}

SRV_CMD=()
start_upsink() {
	SRV_CMD=(bin/upsink serve --listen "127.0.0.1:$PORT" --dsn "$DSN" --shutdown-timeout 10s)
	if [ "$HAVE_SPOOL" = 1 ]; then
		SRV_CMD+=(--spool-dir "$SPOOL" --spool-after "$SPOOL_AFTER" --spool-max "$SPOOL_MAX")
	fi
	echo "+ ${SRV_CMD[*]}" >>"$SRVLOG"
	"${SRV_CMD[@]}" >>"$SRVLOG" 2>&1 &
	SRV_PID=$!
	$B wait --url "$URL/healthz" --timeout 20s 2>>"$SRVLOG" || die "upsink did not start; see $SRVLOG"
	ev "upsink started (pid $SRV_PID)"
}

kill9_upsink() {
	local pid="$SRV_PID"
	kill -KILL "$pid"
	wait_gone "$pid" 10 || die "upsink (pid $pid) survived SIGKILL"
	SRV_PID=""
	ev "kill -9 upsink (pid $pid)"
}

term_upsink() {
	local pid="$SRV_PID" t
	t="$(now_ms)"
	kill -TERM "$pid"
	if ! wait_gone "$pid" 20; then
		ev "upsink (pid $pid) still running 20 s after SIGTERM: kill -9"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 10 || die "upsink (pid $pid) survived SIGKILL"
	fi
	SRV_PID=""
	ev "SIGTERM upsink (pid $pid): exit $GONE_RC after $(($(now_ms) - t)) ms"
}

kill9_db() {
	local pid="$DB_SERVER_PID"
	kill -KILL "$pid"
	wait_gone "$pid" 10 || die "mariadbd (pid $pid) survived SIGKILL"
	DB_SERVER_PID="" DB_UP=0
	ev "kill -9 mariadbd (pid $pid)"
}

stop_db() {
	local pid="$DB_SERVER_PID"
	db_stop "$pid" 2>>"$RES/mariadb.log"
	DB_SERVER_PID="" DB_UP=0
	ev "mariadbd (pid $pid) stopped (SIGTERM, clean shutdown)"
}

start_db() {
	local t
	t="$(now_ms)"
	db_start "$DBDIR" 2>>"$RES/mariadb.log" || die "mariadbd did not come back; see $RES/mariadb.log and $DBDIR/data/mariadbd.err"
	DB_UP=1
	ev "mariadbd restarted (pid $DB_SERVER_PID), answering after $(($(now_ms) - t)) ms"
}

pause_db() {
	kill -STOP "$DB_SERVER_PID"
	DB_PAUSED=1
	ev "SIGSTOP mariadbd (pid $DB_SERVER_PID)"
}

resume_db() {
	kill -CONT "$DB_SERVER_PID"
	DB_PAUSED=0
	ev "SIGCONT mariadbd (pid $DB_SERVER_PID)"
}

# kill_conns SECONDS: every 200 ms, KILL CONNECTION each session on upsink's
# database (this client's own session has no default database, and is excluded
# by id as well).
kill_conns() {
	local end=$(($(now_ms) + $1 * 10 * PCT)) n=0 rounds=0 ids id sql
	ev "KILL CONNECTION loop for $(sec "$1") s"
	while [ "$(now_ms)" -lt "$end" ]; do
		ids="$(db_client -N -B -e "SELECT ID FROM information_schema.PROCESSLIST WHERE USER='root' AND DB='$DB' AND ID <> CONNECTION_ID()" 2>>"$RES/mariadb.log" || true)"
		sql=""
		for id in $ids; do
			sql="$sql KILL CONNECTION $id;"
			n=$((n + 1))
		done
		# --force: a session may have ended between the SELECT and its KILL
		if [ -n "$sql" ]; then db_client --force -e "$sql" >/dev/null 2>&1 || true; fi
		rounds=$((rounds + 1))
		sleep 0.2
	done
	ev "KILL CONNECTION loop done: $n sessions killed in $rounds rounds"
}

# poll_readyz: /readyz every 200 ms into $POLL ("MS CODE BODY"; CODE 000 while
# nothing listens).
poll_readyz() {
	local t b body
	while :; do
		t="$(now_ms)"
		b="$(curl -s -m 1 -o - -w '\n%{http_code}' "$URL/readyz" 2>/dev/null || true)"
		body="${b%$'\n'*}"
		printf '%s %s %s\n' "$((t - T0))" "${b##*$'\n'}" "${body//$'\n'/ }"
		sleep 0.2
	done
}

spool_records() { # BODY -> records, or "none" without a spool object
	jq -r 'if .spool then .spool.records else "none" end' 2>/dev/null <<<"$1" || echo none
}

# probe_full: one upload with curl while the spool is full: want 503 and Retry-After.
probe_full() {
	local h
	h="$(head -c 1024 /dev/zero | curl -s -m 5 -D - -o /dev/null --data-binary @- "$URL/upload/probe" 2>/dev/null | tr -d '\r' || true)"
	ev "probe upload with the spool full: $(head -n1 <<<"$h") / $(grep -i '^retry-after:' <<<"$h" || echo 'no Retry-After')"
	FULL_PROBE="$(head -n1 <<<"$h" | cut -d' ' -f2)/$(grep -ic '^retry-after:' <<<"$h" || true)"
}

# wait_spool_full SECONDS: until the spool's filesystem has less than 64 KiB
# left, or /readyz says 503 with records in the spool (it cannot take more),
# or SECONDS (times PCT %) after the load started.
wait_spool_full() {
	local end=$((T0 + $1 * 10 * PCT)) last rec
	while [ "$(now_ms)" -lt "$end" ]; do
		last="$(tail -n1 "$POLL" 2>/dev/null || true)"
		rec="$(spool_records "${last#* * }")"
		if [ "$(df --output=avail -B1 "$MNT" | tail -n1)" -lt 65536 ] || { [ "$(cut -d' ' -f2 <<<"$last")" = 503 ] && [ "$rec" != none ] && [ "$rec" -gt 0 ]; }; then
			ev "spool full: $(df -h --output=used,avail "$MNT" | tail -n1 | tr -s ' ') used/avail; /readyz ${last#* }"
			return 0
		fi
		sleep 0.2
	done
	last="$(tail -n1 "$POLL" 2>/dev/null || true)"
	ev "spool filesystem not full by $(sec "$1") s: $(df -h --output=used,avail "$MNT" | tail -n1); last /readyz: ${last#* }"
}

# ---------------------------------------------------------------------------

# sec S: S seconds of a scenario's timeline at PCT %
sec() { printf '%g' "$(($1 * PCT))e-2"; }
declare -A TITLE=(
	[1]="kill -9 mariadbd, restart after $(sec 5) s"
	[2]="kill -9 upsink with a spool backlog and during replay"
	[3]="SIGTERM upsink (healthy, then with a backlog)"
	[4]="MariaDB stalled $(sec 10) s (SIGSTOP)"
	[5]="KILL CONNECTION every 200 ms for $(sec 10) s"
	[6]="spool filesystem full (8 MiB tmpfs)"
	[7]="faults 1-5 in a row (kill -9 mariadbd, kill -9 and SIGTERM upsink, $(sec 6) s stall, KILL loop $(sec 5) s)"
)
declare -A SLUG=([1]=mariadb-kill9 [2]=upsink-kill9 [3]=upsink-sigterm [4]=mariadb-stall [5]=kill-conn [6]=spool-full [7]=idempotent)
declare -A DURS=([1]=20 [2]=24 [3]=24 [4]=20 [5]=18 [6]=24 [7]=42)
LINES=() ROWS=() FAILED=0

# window_share: answers from FS to FE (whole seconds: FS rounded down, FE to the nearest), from the load's progress lines
# "  Ns/D  2xx OK (...)  other M" (cumulative counts; if the line also carries
# "201 A" and "202 B", their shares too). Prints "SHARE% ANSWERS S201% S202%"
# (n/a where unknown).
window_share() {
	awk -v fs="$((FS / 1000))" -v fe="$(((FE + 500) / 1000))" '
		function pct(a, d) { return d > 0 ? sprintf("%.1f", 100 * a / d) : "n/a" }
		/ 2xx [0-9]+ / {
			s = $1; sub(/s\/.*/, "", s); s += 0
			ok = ""; other = ""; c1 = ""; c2 = ""
			for (i = 1; i <= NF; i++) gsub(/[(),;:=]/, "", $i)
			for (i = 1; i < NF; i++) {
				if ($i == "2xx") ok = $(i + 1)
				if ($i == "other") other = $(i + 1)
				if ($i == "201") c1 = $(i + 1)
				if ($i == "202") c2 = $(i + 1)
			}
			if (ok == "" || other == "") next
			sp = (c1 != "" && c2 != "")
			if (s <= fs) { b[1] = ok; b[2] = other; b[3] = c1; b[4] = c2 }
			if (s >= fe && !done) { t[1] = ok; t[2] = other; t[3] = c1; t[4] = c2; done = 1 }
			l[1] = ok; l[2] = other; l[3] = c1; l[4] = c2
		}
		END {
			if (!done) for (k in l) t[k] = l[k]
			d = (t[1] - b[1]) + (t[2] - b[2])
			if (d <= 0) { print "n/a 0 n/a n/a"; exit }
			printf "%s %d %s %s\n", pct(t[1] - b[1], d), d, sp ? pct(t[3] - b[3], d) : "n/a", sp ? pct(t[4] - b[4], d) : "n/a"
		}' "$PROG"
}

run_scenario() {
	N="$1" NAME="${SLUG[$1]}" DUR="$(((DURS[$1] * PCT + 99) / 100))"
	local base="$RES/$N-$NAME" idem=0
	EV="$base.events" SRVLOG="$base.upsink.log" PROG="$base.progress" POLL="$base.readyz"
	DB="f${N}_${NAME//-/_}"
	DSN="root@unix($DB_SOCK)/$DB"
	SPOOL="$tmp/spool-$N" SPOOL_MAX=1GiB FULL_PROBE=""
	mkdir -p "$SPOOL"
	: >"$EV"
	if [ "$N" = 6 ]; then
		if [ "$(id -u)" -ne 0 ]; then
			LINES+=("$N ${TITLE[$N]}: skipped: needs root (mount -t tmpfs)")
			ROWS+=("| $N | ${TITLE[$N]} | skipped: needs root | | | | | | | |")
			log "${LINES[-1]}"
			return 0
		fi
		mount -t tmpfs -o size=8m,mode=0700 upsink-faults "$SPOOL" || {
			LINES+=("$N ${TITLE[$N]}: skipped: mount -t tmpfs failed")
			ROWS+=("| $N | ${TITLE[$N]} | skipped: mount failed | | | | | | | |")
			log "${LINES[-1]}"
			return 0
		}
		MNT="$SPOOL" SPOOL_MAX=64MiB
	fi
	[ "$DB_UP" = 1 ] || start_db
	db_client -e "DROP DATABASE IF EXISTS \`$DB\`; CREATE DATABASE \`$DB\`" >/dev/null
	PORT="$(pick_port "$PORT0")"
	URL="http://127.0.0.1:$PORT"
	T0="$(now_ms)"
	start_upsink
	$B wait --url "$URL/readyz" --timeout 60s 2>>"$SRVLOG" || die "upsink not ready; see $SRVLOG"

	local -a load=("$B" load --url "$URL/upload/$NAME" -c "$CLIENTS" -d "${DUR}s" --body "$BODY" --retry-wait 100ms
		--progress --verify "$DSN" --json-out "$base.json")
	# /readyz is JSON (with the spool's backlog) only on a server with a spool
	if [ "$HAVE_DRAIN" = 1 ] && [ "$HAVE_SPOOL" = 1 ]; then
		load+=(--verify-drain "$URL/readyz" --verify-drain-timeout "${DRAIN_TIMEOUT}s")
	fi
	[ "$HAVE_RTO" = 1 ] && load+=(--request-timeout 5s)
	if [ "$N" = 7 ] || [ "${FAULTS_IDEM_ALL:-0}" = 1 ]; then
		if [ "$HAVE_IDEM" = 1 ]; then
			load+=(--idempotency) idem=1
		else
			log "[$N $NAME] upsink-bench load has no --idempotency yet: plain clients"
		fi
	fi
	{
		echo "server: ${SRV_CMD[*]}"
		echo "load:   ${load[*]}"
	} >"$base.commands"
	T0="$(now_ms)"
	"${load[@]}" >"$base.load.txt" 2>"$PROG" &
	LOAD_PID=$!
	poll_readyz >"$POLL" 2>/dev/null &
	POLL_PID=$!
	ev "load started (pid $LOAD_PID): ${load[*]}"

	case "$N" in
	1)
		sleep_until 3; FS="$(($(now_ms) - T0))"; kill9_db
		sleep_until 8; start_db; FE="$(($(now_ms) - T0))"
		;;
	2)
		sleep_until 3; FS="$(($(now_ms) - T0))"; stop_db
		sleep_until 6; kill9_upsink; start_upsink
		sleep_until 9; start_db
		sleep 0.5; kill9_upsink; start_upsink; FE="$(($(now_ms) - T0))"
		;;
	3)
		sleep_until 3; FS="$(($(now_ms) - T0))"; term_upsink; start_upsink
		sleep_until 7; stop_db
		sleep_until 10; term_upsink; start_upsink
		sleep_until 12; start_db; FE="$(($(now_ms) - T0))"
		;;
	4)
		sleep_until 3; FS="$(($(now_ms) - T0))"; pause_db
		sleep_until 13; resume_db; FE="$(($(now_ms) - T0))"
		;;
	5)
		sleep_until 3; FS="$(($(now_ms) - T0))"; kill_conns 10; FE="$(($(now_ms) - T0))"
		;;
	6)
		sleep_until 2; FS="$(($(now_ms) - T0))"; stop_db
		if [ "$HAVE_SPOOL" = 1 ]; then wait_spool_full 12; fi
		sleep_until 14; probe_full; start_db; FE="$(($(now_ms) - T0))"
		;;
	7)
		sleep_until 3; FS="$(($(now_ms) - T0))"; kill9_db
		sleep_until 7; start_db
		sleep_until 11; kill9_upsink; start_upsink
		sleep_until 15; term_upsink; start_upsink
		sleep_until 19; pause_db
		sleep_until 25; resume_db
		sleep_until 27; kill_conns 5; FE="$(($(now_ms) - T0))"
		;;
	esac
	ev "fault over"

	# The load ends at DUR, then (with --verify-drain) waits for the spool to
	# drain and verifies; bound it.
	local lrc
	if wait_gone "$LOAD_PID" $((DUR + DRAIN_TIMEOUT + 60)); then
		lrc="exit $GONE_RC"
	else
		ev "load still running $((DUR + DRAIN_TIMEOUT + 60)) s after its start: stopped"
		kill -TERM "$LOAD_PID" 2>/dev/null || true
		if wait_gone "$LOAD_PID" 10; then lrc="stopped, exit $GONE_RC"; else
			kill -KILL "$LOAD_PID" 2>/dev/null || true
			wait "$LOAD_PID" 2>/dev/null || true
			lrc=killed
		fi
	fi
	LOAD_PID=""
	ev "load exited ($lrc)"

	# Drained: /readyz shows the spool empty (waited for up to DRAIN_TIMEOUT
	# more, in case the load could not wait for it itself).
	local drained="n/a" drain_t="n/a" body rec end line
	if [ "$HAVE_SPOOL" = 1 ]; then
		drained=no
		end=$(($(now_ms) + DRAIN_TIMEOUT * 1000))
		while [ "$(now_ms)" -lt "$end" ]; do
			body="$(curl -s -m 2 "$URL/readyz" 2>/dev/null || true)"
			rec="$(spool_records "$body")"
			if [ "$rec" = 0 ]; then drained=yes; break; fi
			sleep 0.5
		done
		ev "spool drained: $drained (last /readyz: $body)"
		# time to drain: the first poll after the fault's end with the database up and no records
		while read -r line; do
			local ms="${line%% *}" rest="${line#* }" code
			code="${rest%% *}"
			[ "$ms" -ge "$FE" ] || continue
			[ "$code" = 200 ] || continue
			if [ "$(spool_records "${rest#* }")" = 0 ] && jq -e '.database == "up"' >/dev/null 2>&1 <<<"${rest#* }"; then
				drain_t="$(printf '%.1f s' "$((ms - FE))e-3")"
				break
			fi
		done <"$POLL"
	fi
	kill -TERM "$POLL_PID" 2>/dev/null || true
	wait "$POLL_PID" 2>/dev/null || true
	POLL_PID=""
	local peak
	peak="$(awk '{ if (match($0, /"records":[0-9]+/)) { v = substr($0, RSTART + 10, RLENGTH - 10) + 0; if (v > m) m = v } } END { print m + 0 }' "$POLL")"

	term_upsink
	if [ -n "$MNT" ]; then
		umount "$MNT" || log "could not unmount $MNT"
		MNT=""
	fi
	[ "$DB_UP" = 1 ] || start_db

	# Figures, from the load's JSON.
	local j="$base.json" sent s201 s202 resp lost dup dupr chg idm ok share r201 r202 verdict unack
	if [ ! -s "$j" ]; then
		LINES+=("$N ${TITLE[$N]}: FAIL: no load result (exit $lrc; see $base.load.txt)")
		ROWS+=("| $N | ${TITLE[$N]} | no result | | | | | | | FAIL |")
		FAILED=1
		log "${LINES[-1]}"
		return 0
	fi
	resp="$(jq '.responses' "$j")"
	s201="$(jq '.status["201"] // 0' "$j")"
	s202="$(jq '.status["202"] // 0' "$j")"
	if jq -e '.verify' "$j" >/dev/null; then
		sent="$(jq '.verify.acked + .verify.not_acked' "$j")"
		lost="$(jq '.verify.lost' "$j")" dup="$(jq '.verify.duplicated' "$j")" dupr="$(jq '.verify.duplicate_rows' "$j")"
		chg="$(jq '.verify.mismatched' "$j")" idm="$(jq '.verify.id_mismatch' "$j")" ok="$(jq '.verify.ok' "$j")"
		unack="$(jq '"\(.verify.unacked_present) of \(.verify.not_acked)"' -r "$j")"
	else
		sent="$resp" lost="?" dup="?" dupr="?" chg="?" idm="?" ok=false unack="?"
	fi
	local wshare wn w201 w202 span="run"
	read -r wshare wn w201 w202 < <(window_share)
	share="$wshare %"
	[ "$wshare" = n/a ] && share=n/a
	r201="$(awk -v a="$s201" -v b="$resp" 'BEGIN { if (b > 0) printf "%.1f %%", 100 * a / b; else print "n/a" }')"
	r202="$(awk -v a="$s202" -v b="$resp" 'BEGIN { if (b > 0) printf "%.1f %%", 100 * a / b; else print "n/a" }')"
	if [ "$w201" != n/a ]; then r201="$w201 %" r202="$w202 %" span="fault"; fi
	local why=()
	[ "$ok" = true ] || why+=("verify not OK")
	[ "$lost" = 0 ] || why+=("lost $lost")
	[ "$dup" = 0 ] || why+=("duplicated $dup")
	[ "$drained" != no ] || why+=("spool not drained")
	# the load's own drain wait (--verify-drain), if it made one
	if jq -e '.drain' "$j" >/dev/null && [ "$(jq '.drain.ok' "$j")" != true ]; then
		why+=("load's drain wait: $(jq -r '.drain.last // ""' "$j")")
	fi
	# idempotent clients: every upload stored exactly once, none given up, no 422
	local idemtxt=""
	if jq -e '.idempotency' "$j" >/dev/null; then
		idemtxt="$(jq -r '.idempotency | ", idempotent uploads \(.uploads): \(.acked) acknowledged after \(.retries) retries (\(.retried) retried), given up \(.given_up), refused \(.refused), 422 \(.status_422)"' "$j")"
		[ "$(jq '.idempotency.given_up' "$j")" = 0 ] || why+=("given up $(jq '.idempotency.given_up' "$j")")
		[ "$(jq '.idempotency.refused' "$j")" = 0 ] || why+=("refused $(jq '.idempotency.refused' "$j")")
		[ "$(jq '.idempotency.status_422' "$j")" = 0 ] || why+=("422 $(jq '.idempotency.status_422' "$j")")
	fi
	verdict=ok
	if [ "${#why[@]}" -gt 0 ]; then
		verdict=FAIL
		idemtxt="$idemtxt; FAIL: $(IFS=,; echo "${why[*]}")"
	fi
	[ "$verdict" = ok ] || FAILED=1
	local clients="plain clients" mark="" full=""
	if [ "$idem" = 1 ]; then clients="idempotent clients" mark=" †"; fi
	if [ -n "$FULL_PROBE" ]; then
		full=", full-spool probe ${FULL_PROBE%/*} without Retry-After"
		if [ "${FULL_PROBE#*/}" -gt 0 ]; then full=", full-spool probe ${FULL_PROBE%/*} + Retry-After"; fi
	fi
	LINES+=("$N ${TITLE[$N]} ($clients): sent $sent, 2xx during fault $share of $wn answers (201 $r201, 202 $r202 of the $span's answers; $resp answers in the run), lost $lost, duplicated $dup ($dupr extra rows), changed $chg, id mismatch $idm, not acknowledged but stored $unack, spool drained $drained (peak $peak records) in $drain_t$full$idemtxt [$verdict]")
	ROWS+=("| $N | ${TITLE[$N]}$mark | $sent | $share | $r201 ($span) | $r202 ($span) | $lost | $dup | $drained | $drain_t | $verdict |")
	log "${LINES[-1]}"
	{
		echo "${LINES[-1]}"
		echo
		cat "$base.commands"
		echo
		cat "$EV"
		echo
		cat "$base.load.txt"
	} >"$base.txt"
}

for n in $ONLY; do
	case "$n" in [1-7]) run_scenario "$n" ;; *) die "FAULTS_ONLY: no scenario $n (1-7)" ;; esac
done

{
	echo "# upsink fault suite, $(date -u '+%Y-%m-%d %H:%M') UTC"
	sed 's/\t/: /' "$RES/info.tsv"
	echo
	printf '%s\n' "${LINES[@]}"
	echo
	echo "| # | fault | uploads sent | 2xx during the fault | 201 | 202 | lost | duplicated | spool drained | time to drain | |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|"
	printf '%s\n' "${ROWS[@]}"
	echo
	echo "2xx during the fault: answers given from the fault's start to its end (whole seconds; connection"
	echo "errors while upsink is down are not answers). 201/202: shares of the answers during the fault (fault)"
	echo "or, when the load does not report them per second, of the whole run (run)."
	echo "Time to drain: from the fault's end until /readyz first shows the database up and the spool empty."
	if [ "$HAVE_IDEM" = 1 ]; then echo "†: clients retry every failed or timed-out upload with the same Idempotency-Key until it succeeds."; fi
	echo
	echo "Commands (per scenario in $RES/N-NAME.commands):"
	for n in $ONLY; do
		if [ -f "$RES/$n-${SLUG[$n]}.commands" ]; then sed "s/^/  $n /" "$RES/$n-${SLUG[$n]}.commands"; fi
	done
} >"$SUMMARY"
cat "$SUMMARY"
log "results in $SUMMARY and $RES/"
exit "$FAILED"
