#!/usr/bin/env bash
# deploy/galera.sh - a 3-node MariaDB Galera cluster on 127.0.0.1 for trying and testing.
#
# Usage:
#   deploy/galera.sh install               install galera-4, rsync, socat (and MariaDB)
#                                          if missing (root only; otherwise one line, exit 2)
#   deploy/galera.sh start   DIR           start the nodes of DIR/node1..3 that are down
#                                          (node 1 bootstraps a new cluster; after a full
#                                          stop the node with safe_to_bootstrap does), wait
#                                          until all 3 are Synced; one line per node
#   deploy/galera.sh stop    DIR           stop the nodes (SIGTERM by pid), 3, 2 then 1
#   deploy/galera.sh status  DIR           one line per node; exit 0 if all 3 are Synced
#   deploy/galera.sh kill    DIR NODE      kill -9 that node's mariadbd (NODE: 1..3 or node1..3)
#   deploy/galera.sh restart DIR NODE      start that node again, joining the others; wait
#                                          until Synced and say whether it joined by IST or SST
#   deploy/galera.sh dsn     DIR NODE [DB] print root@tcp(127.0.0.1:PORT)/DB
#   deploy/galera.sh dsns    DIR [DB]      the three DSNs, comma-separated
#   deploy/galera.sh client  DIR NODE [ARGS...]  the mariadb client on that node (TCP)
#
# Layout of DIR/nodeN (the same as deploy/mariadb.sh's DIR, except the error log):
#   data/            --datadir (mariadb-install-db; grastate.dat, galera.cache)
#   tmp/             --tmpdir
#   mariadbd.pid     --pid-file
#   mariadbd.err     --log-error (outside data/: an rsync SST rewrites data/)
#   mysqld.sock      --socket (or /tmp/upsink-<hash>/mysqld.sock if the path is too long)
# DIR/galera.port holds the base port the cluster was created with; it wins over
# UPSINK_GALERA_PORT afterwards (the nodes know each other by these ports).
#
# Ports, all on 127.0.0.1; node i (1..3), B = base port:
#   SQL  B+10(i-1)    gcomm  B+10(i-1)+1    IST  B+10(i-1)+2    SST (rsync)  B+10(i-1)+3
#
# Environment:
#   UPSINK_GALERA_PORT     base port for a new DIR (default 24100)
#   UPSINK_GALERA_TIMEOUT  seconds start/restart may take in all (default 120)
#   UPSINK_DB_TIMEOUT      seconds to wait for one node's shutdown (default 60)
#   UPSINK_DB_PROFILE      option file (default deploy/mysql/low-memory.cnf)
#   UPSINK_GALERA_OPTIONS  more wsrep_provider_options, appended (a later one wins)
#   UPSINK_GALERA_AUTOINC  cluster (default): Galera sets auto_increment_increment to
#                          the cluster size and a per-node offset, whatever a session
#                          sets; single: increment 1 (wsrep_auto_increment_control=OFF),
#                          for a writer that needs contiguous ids writing to one node
#   UPSINK_GALERA_VERBOSE  1: progress on stderr (otherwise it goes to DIR/galera.log)
#
# Root is user "root" with an empty password, over TCP from 127.0.0.1 (root@127.0.0.1)
# and over the socket (root@localhost); DSN root@tcp(127.0.0.1:PORT)/.
# Only processes named by DIR's pid files (and checked to serve DIR's datadirs)
# are ever signalled.

# shellcheck source=deploy/mariadb.sh
. "$(dirname "${BASH_SOURCE[0]}")/mariadb.sh"

: "${UPSINK_GALERA_PORT_ASKED:=${UPSINK_GALERA_PORT:-}}" # set by the caller, or empty
: "${UPSINK_GALERA_PORT:=24100}"
: "${UPSINK_GALERA_TIMEOUT:=120}"
: "${UPSINK_GALERA_VERBOSE:=0}"
: "${UPSINK_GALERA_AUTOINC:=cluster}"
GL_PROVIDER=/usr/lib/galera/libgalera_smm.so
GL_DIR=""
GL_LAUNCHED=()

# mariadb.sh's helpers log progress through db_log: keep it off the terminal
# (start prints one line per node and nothing else when all goes well).
db_log() {
	if [ "$UPSINK_GALERA_VERBOSE" = 1 ]; then
		printf 'galera.sh: %s\n' "$*" >&2
	elif [ -n "$GL_DIR" ] && [ -d "$GL_DIR" ]; then
		printf '%s galera.sh: %s\n' "$(date '+%F %T')" "$*" >>"$GL_DIR/galera.log"
	fi
}
db_die() { gl_err "$*"; exit 1; }
gl_err() { printf 'galera.sh: %s\n' "$*" >&2; }

# gl_install: galera-4, rsync (SST) and socat, plus MariaDB itself.
gl_install() {
	db_install
	if [ -f "$GL_PROVIDER" ] && db_have rsync && db_have socat; then return 0; fi
	local pkgs="galera-4 rsync socat"
	if [ "$(id -u)" -ne 0 ]; then
		echo "Galera is not installed: as root run 'apt-get update && apt-get install -y --no-install-recommends $pkgs', then retry" >&2
		exit 2
	fi
	gl_err "installing $pkgs"
	# shellcheck disable=SC2086
	if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; }; then
		db_die "apt-get install $pkgs failed"
	fi
	[ -f "$GL_PROVIDER" ] || db_die "$GL_PROVIDER still missing after installing galera-4"
}

gl_need() {
	if [ ! -f "$GL_PROVIDER" ] || ! db_have rsync || ! db_have mariadbd; then
		gl_err "Galera, rsync or MariaDB missing: run deploy/galera.sh install (as root)"
		exit 2
	fi
}

# gl_dir DIR [create]: set GL_DIR and GL_BASE (from DIR/galera.port if the
# cluster exists, else UPSINK_GALERA_PORT, recorded there on creation).
gl_dir() {
	[ -n "${1:-}" ] || db_die "missing DIR argument"
	if [ "${2:-}" = create ]; then
		mkdir -p "$1" || db_die "cannot create $1"
	elif [ ! -d "$1" ]; then
		db_die "$1 does not exist (deploy/galera.sh start $1 creates it)"
	fi
	GL_DIR="$(cd "$1" && pwd -P)"
	case "$GL_DIR" in *"'"* | *[[:space:]]*) db_die "DIR must not contain quotes or spaces: $GL_DIR" ;; esac
	local want="$UPSINK_GALERA_PORT"
	case "$want" in '' | *[!0-9]*) db_die "UPSINK_GALERA_PORT=$want is not a number" ;; esac
	if [ -s "$GL_DIR/galera.port" ]; then
		GL_BASE="$(tr -dc 0-9 <"$GL_DIR/galera.port")"
		if [ -n "$UPSINK_GALERA_PORT_ASKED" ] && [ "$want" != "$GL_BASE" ]; then
			gl_err "note: $GL_DIR was created with base port $GL_BASE; UPSINK_GALERA_PORT=$want ignored"
		fi
	else
		GL_BASE="$want"
		if [ "${2:-}" = create ]; then
			if [ "$GL_BASE" -lt 1024 ] || [ "$GL_BASE" -gt 65500 ]; then
				db_die "base port $GL_BASE out of range (1024..65500)"
			fi
			echo "$GL_BASE" >"$GL_DIR/galera.port"
		fi
	fi
}

# gl_num NODE: set GL_NUM to 1, 2 or 3 from "1".."3" or "node1".."node3".
gl_num() {
	case "${1:-}" in
	1 | node1) GL_NUM=1 ;; 2 | node2) GL_NUM=2 ;; 3 | node3) GL_NUM=3 ;;
	*) db_die "NODE must be 1, 2 or 3 (or node1..node3), not '${1:-}'" ;;
	esac
}

gl_port() { echo $((GL_BASE + 10 * ($1 - 1) + $2)); } # gl_port NODE 0..3 (sql, gcomm, ist, sst)

# gl_node N: select node N: mariadb.sh's DB_* paths for DIR/nodeN plus its ports.
gl_node() {
	GL_N="$1"
	GL_NAME="node$1"
	db_paths "$GL_DIR/$GL_NAME"
	DB_LOG="$DB_DIR/mariadbd.err"
	GL_SQL="$(gl_port "$1" 0)"
	GL_GCOMM="$(gl_port "$1" 1)"
	GL_IST="$(gl_port "$1" 2)"
	GL_SST="$(gl_port "$1" 3)"
}

gl_cluster_address() {
	echo "gcomm://127.0.0.1:$(gl_port 1 1),127.0.0.1:$(gl_port 2 1),127.0.0.1:$(gl_port 3 1)"
}

# gl_cmd: the mariadbd command line of the selected node, into GL_CMD.
# The shared profile first (--defaults-file, so no my.cnf is read), then
# everything node-specific and what Galera requires on the command line.
gl_cmd() {
	GL_CMD=(mariadbd --defaults-file="$UPSINK_DB_PROFILE"
		--datadir="$DB_DATA" --socket="$DB_SOCK" --pid-file="$DB_PID"
		--log-error="$DB_LOG" --tmpdir="$DB_TMP"
		--port="$GL_SQL" --bind-address=127.0.0.1 --server-id="$GL_N"
		--binlog-format=ROW --innodb-autoinc-lock-mode=2 --default-storage-engine=InnoDB
		--wsrep-on=ON --wsrep-provider="$GL_PROVIDER"
		--wsrep-cluster-name=upsink --wsrep-cluster-address="$(gl_cluster_address)"
		--wsrep-node-name="$GL_NAME" --wsrep-node-address="127.0.0.1:$GL_GCOMM"
		--wsrep-node-incoming-address="127.0.0.1:$GL_SQL"
		--wsrep-sst-method="$(gl_sst_method)" --wsrep-sst-receive-address="127.0.0.1:$GL_SST"
		--wsrep-slave-threads=1
		--wsrep-provider-options="base_port=$GL_GCOMM;gmcast.listen_addr=tcp://127.0.0.1:$GL_GCOMM;ist.recv_addr=127.0.0.1:$GL_IST;gcache.size=32M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S${UPSINK_GALERA_OPTIONS:+;$UPSINK_GALERA_OPTIONS}")
	case "$UPSINK_GALERA_AUTOINC" in
	cluster) ;; # Galera's default: increment = cluster size, offset = node index
	single) GL_CMD+=(--wsrep-auto-increment-control=OFF --auto-increment-increment=1 --auto-increment-offset=1) ;;
	*) db_die "UPSINK_GALERA_AUTOINC must be cluster or single, not '$UPSINK_GALERA_AUTOINC'" ;;
	esac
	[ "$(id -u)" -eq 0 ] && GL_CMD+=(--user=root)
	return 0
}

# rsync; as root through a wrapper that keeps the rsync daemon root (see gl_rsync_wrapper)
gl_sst_method() { if [ "$(id -u)" -eq 0 ]; then echo upsink_rsync; else echo rsync; fi; }

# gl_grastate KEY: a field of the selected node's grastate.dat (empty if none).
gl_grastate() {
	local f="$DB_DATA/grastate.dat"
	[ -f "$f" ] || return 0
	sed -n "s/^$1:[[:space:]]*//p" "$f" | head -n 1
}

# gl_recover: print the selected node's last committed position (uuid:seqno)
# from InnoDB (mariadbd --wsrep-recover), for a node that did not stop cleanly.
gl_recover() {
	local rlog="$DB_DIR/wsrep-recover.log"
	gl_cmd
	rm -f "$rlog"
	# --wsrep-recover starts InnoDB, prints the position and exits; it does
	# not listen (skip-networking) and must not use the socket or pid file.
	if ! MALLOC_ARENA_MAX=1 timeout "$UPSINK_DB_TIMEOUT" "${GL_CMD[@]}" --wsrep-recover \
		--skip-networking --socket="$DB_TMP/recover.sock" --pid-file="$DB_TMP/recover.pid" \
		--log-error="$rlog" </dev/null >/dev/null 2>&1; then
		db_log "$GL_NAME: mariadbd --wsrep-recover failed (see $rlog)"
		return 1
	fi
	sed -n 's/.*WSREP: Recovered position: *//p' "$rlog" | tail -n 1
}

# gl_pick_bootstrap: with every node down, print the node to bootstrap from:
# the one whose grastate.dat says safe_to_bootstrap: 1, else the highest
# (recovered) seqno, which then gets safe_to_bootstrap: 1; node 1 if none has
# a state yet (a new cluster).
gl_pick_bootstrap() {
	local i uuid seqno safe pos best="" bestseq=-2
	for i in 1 2 3; do
		gl_node "$i"
		uuid="$(gl_grastate uuid)"
		case "$uuid" in '' | 00000000-0000-0000-0000-000000000000) continue ;; esac
		safe="$(gl_grastate safe_to_bootstrap)"
		if [ "$safe" = 1 ]; then echo "$i"; return 0; fi
		seqno="$(gl_grastate seqno)"
		if [ "$seqno" = -1 ] || [ -z "$seqno" ]; then
			pos="$(gl_recover)" || pos=""
			seqno="${pos##*:}"
			case "$seqno" in '' | *[!0-9-]*) seqno=-1 ;; esac
		fi
		db_log "$GL_NAME: grastate uuid $uuid, seqno $seqno, safe_to_bootstrap ${safe:-?}"
		if [ "$seqno" -gt "$bestseq" ]; then best="$i" bestseq="$seqno"; fi
	done
	if [ -z "$best" ]; then echo 1; return 0; fi
	gl_node "$best"
	sed -i 's/^safe_to_bootstrap:.*/safe_to_bootstrap: 1/' "$DB_DATA/grastate.dat"
	gl_err "note: no node stopped last cleanly; bootstrapping from $GL_NAME (seqno $bestseq), safe_to_bootstrap set"
	echo "$best"
}

# gl_query SQL: run SQL on the selected node's socket, tab-separated, no header.
gl_query() {
	mariadb --no-defaults --socket="$DB_SOCK" --user=root --connect-timeout=2 -N -B -e "$1" 2>/dev/null
}

# gl_wsrep: set W_READY W_STATE W_SIZE W_STATUS for the selected node.
gl_wsrep() {
	local out k v
	W_READY="" W_STATE="" W_SIZE="" W_STATUS=""
	out="$(gl_query "SHOW GLOBAL STATUS WHERE Variable_name IN
		('wsrep_ready','wsrep_local_state_comment','wsrep_cluster_size','wsrep_cluster_status')")" || return 1
	while IFS=$'\t' read -r k v; do
		case "$k" in
		wsrep_ready) W_READY="$v" ;;
		wsrep_local_state_comment) W_STATE="$v" ;;
		wsrep_cluster_size) W_SIZE="$v" ;;
		wsrep_cluster_status) W_STATUS="$v" ;;
		esac
	done <<<"$out"
	[ -n "$W_STATE" ]
}

# gl_wait_synced PID SIZE: wait until the selected node (PID) is ready,
# Synced, in a primary component of at least SIZE nodes; until GL_DEADLINE.
gl_wait_synced() {
	local pid="$1" size="$2"
	while [ "$SECONDS" -lt "$GL_DEADLINE" ]; do
		if ! db_alive "$pid"; then
			wait "$pid" 2>/dev/null || true
			gl_err "$GL_NAME: mariadbd (pid $pid) exited during start-up; last lines of $DB_LOG:"
			tail -n 25 "$DB_LOG" >&2
			return 1
		fi
		if gl_wsrep && [ "$W_READY" = ON ] && [ "$W_STATE" = Synced ] &&
			[ "$W_STATUS" = Primary ] && [ "${W_SIZE:-0}" -ge "$size" ]; then
			return 0
		fi
		sleep 0.2
	done
	gl_wsrep || true
	gl_err "$GL_NAME: not Synced in a cluster of $size within ${UPSINK_GALERA_TIMEOUT}s (ready=${W_READY:-?} state=${W_STATE:-?} size=${W_SIZE:-?} status=${W_STATUS:-?}); last lines of $DB_LOG:"
	tail -n 25 "$DB_LOG" >&2
	if [ -n "$W_STATUS" ] && [ "$W_STATUS" != Primary ]; then
		gl_err "no primary component: 'deploy/galera.sh stop $GL_DIR' then 'start $GL_DIR' bootstraps from the most advanced node"
	fi
	return 1
}

# gl_launch [new]: start the selected node detached (own session); "new"
# bootstraps a new primary component from it. Sets GL_PID.
gl_launch() {
	local new="${1:-}" seqno uuid pos
	db_clean_stale
	db_init || db_die "$GL_NAME: mariadb-install-db failed (see $DB_DIR/install-db.log)"
	if [ "$DB_SOCK_SHORT" = 1 ]; then
		local sdir="${DB_SOCK%/*}"
		[ -d "$sdir" ] || mkdir -m 700 "$sdir" || db_die "cannot create $sdir"
		[ -O "$sdir" ] || db_die "$sdir belongs to another user"
	fi
	gl_cmd
	# After a crash grastate.dat says seqno -1: recover the position InnoDB
	# committed and pass it on, so the node can rejoin by IST instead of a
	# full SST (what Debian's galera_recovery does for the systemd unit).
	uuid="$(gl_grastate uuid)"
	seqno="$(gl_grastate seqno)"
	if [ -n "$uuid" ] && [ "$uuid" != 00000000-0000-0000-0000-000000000000 ] && [ "$seqno" = -1 ]; then
		if pos="$(gl_recover)" && [ -n "$pos" ]; then
			db_log "$GL_NAME: recovered position $pos"
			gl_cmd
			GL_CMD+=(--wsrep-start-position="$pos")
		fi
	fi
	[ "$new" = new ] && GL_CMD+=(--wsrep-new-cluster)
	gl_rsync_wrapper
	db_log "$GL_NAME: starting${new:+ (bootstrap)}: ${GL_CMD[*]}"
	# setsid execs in place (we are not a group leader), so $! is mariadbd.
	PATH="$GL_DIR/bin:$PATH" MALLOC_ARENA_MAX=1 setsid "${GL_CMD[@]}" </dev/null >>"$DB_LOG" 2>&1 9>&- &
	GL_PID=$!
	GL_LAUNCHED+=("$GL_N:$GL_PID")
}

# gl_rsync_wrapper: as root, the rsync daemon the SST joiner script starts
# switches to user "nobody" (rsyncd.conf's default uid for a super-user; the
# script writes no uid line), which cannot write into the root-owned 0700
# datadir: the SST fails with "cannot stat destination: Permission denied".
# An rsync wrapper first on the server's PATH is not enough: mariadbd puts
# its own bin directory (as "/usr//bin") in front of PATH for SST scripts.
# So as root the SST method is "upsink_rsync": mariadbd runs
# wsrep_sst_upsink_rsync, found in DIR/bin (it is nowhere else), which runs
# Debian's wsrep_sst_rsync unchanged with DIR/bin first on PATH, where
# DIR/bin/rsync adds --dparam=uid=0 --dparam=gid=0 to daemon runs. As any
# other user the daemon keeps that user and the plain rsync method is used.
gl_rsync_wrapper() {
	[ "$(id -u)" -eq 0 ] || return 0
	local real sst
	real="$(command -v rsync)" || db_die "rsync not found"
	sst="$(command -v wsrep_sst_rsync)" || db_die "wsrep_sst_rsync not found"
	mkdir -p "$GL_DIR/bin"
	cat >"$GL_DIR/bin/rsync.new" <<-EOF
		#!/bin/sh
		# written by deploy/galera.sh (gl_rsync_wrapper): as root, the SST
		# joiner's rsync daemon stays root instead of switching to nobody.
		case " \$* " in *" --daemon "*) exec '$real' --dparam=uid=0 --dparam=gid=0 "\$@" ;; esac
		exec '$real' "\$@"
	EOF
	cat >"$GL_DIR/bin/wsrep_sst_upsink_rsync.new" <<-EOF
		#!/bin/sh
		# written by deploy/galera.sh (gl_rsync_wrapper): the rsync SST, run
		# as root with the rsync wrapper beside this file first on PATH.
		PATH='$GL_DIR/bin':"\$PATH"
		export PATH
		exec '$sst' "\$@"
	EOF
	chmod 755 "$GL_DIR/bin/rsync.new" "$GL_DIR/bin/wsrep_sst_upsink_rsync.new"
	mv -f "$GL_DIR/bin/rsync.new" "$GL_DIR/bin/rsync"
	mv -f "$GL_DIR/bin/wsrep_sst_upsink_rsync.new" "$GL_DIR/bin/wsrep_sst_upsink_rsync"
}

# gl_abort: after a failed start, stop the servers this call started.
gl_abort() {
	local e
	for e in "${GL_LAUNCHED[@]}"; do
		gl_node "${e%%:*}"
		db_kill_wait "${e#*:}" >/dev/null 2>&1 || true
	done
	gl_err "failed: stopped the node(s) this call had started"
	exit 1
}

gl_line() { # gl_line PID: the one line start/restart print per node
	printf '%s pid %s sql 127.0.0.1:%s socket %s\n' "$GL_NAME" "$1" "$GL_SQL" "$DB_SOCK"
}

# gl_check_tcp: root must log in over TCP (what the DSN uses).
gl_check_tcp() {
	if ! mariadb --no-defaults --protocol=TCP --host=127.0.0.1 --port="$GL_SQL" --user=root \
		--connect-timeout=2 -N -B -e 'SELECT 1' >/dev/null 2>&1; then
		gl_err "$GL_NAME: root cannot log in over TCP on 127.0.0.1:$GL_SQL"
		return 1
	fi
}

gl_start() {
	gl_dir "$1" create
	chmod 700 "$GL_DIR"
	GL_DEADLINE=$((SECONDS + UPSINK_GALERA_TIMEOUT))
	local i b="" pid any=0
	local -a pids=("" "" "" "")
	for i in 1 2 3; do
		gl_node "$i"
		if pid="$(db_running_pid)"; then pids[i]="$pid" any=1; fi
	done
	if [ "$any" = 0 ]; then
		b="$(gl_pick_bootstrap)"
		gl_node "$b"
		gl_launch new
		pids[b]="$GL_PID"
		gl_wait_synced "$GL_PID" 1 || gl_abort
	fi
	# Joiners one at a time: each takes its state (SST the first time, IST
	# later) from a Synced node, and a donor serves one joiner at a time.
	# If the nodes still running are a non-primary rest (the others were
	# killed), start all the missing ones at once: Galera re-forms the
	# primary component (pc.recovery) once the last one's members are back.
	local prim=0
	for i in 1 2 3; do
		[ -n "${pids[i]}" ] || continue
		gl_node "$i"
		if gl_wsrep && [ "$W_STATUS" = Primary ]; then prim=1; fi
	done
	for i in 1 2 3; do
		[ -z "${pids[i]}" ] || continue
		gl_node "$i"
		gl_launch
		pids[i]="$GL_PID"
		if [ "$prim" = 1 ]; then gl_wait_synced "$GL_PID" 2 || gl_abort; fi
	done
	for i in 1 2 3; do
		gl_node "$i"
		gl_wait_synced "${pids[i]}" 3 || gl_abort
		gl_check_tcp || gl_abort
	done
	for i in 1 2 3; do
		gl_node "$i"
		gl_line "${pids[i]}"
	done
}

# gl_stop_node: SIGTERM the selected node's mariadbd (by pid) and wait.
gl_stop_node() {
	local pid
	if ! pid="$(db_running_pid)"; then
		db_clean_stale
		return 0
	fi
	db_log "$GL_NAME: stopping mariadbd (pid $pid)"
	db_kill_wait "$pid"
	rm -f "$DB_SOCK.lock"
	if [ "$DB_SOCK_SHORT" = 1 ]; then rmdir "${DB_SOCK%/*}" 2>/dev/null || true; fi
}

gl_stop() {
	[ -n "${1:-}" ] || db_die "missing DIR argument"
	[ -d "$1" ] || return 0 # nothing was ever started there
	gl_dir "$1"
	local i
	# the last one to leave is the one safe to bootstrap from: node 1
	for i in 3 2 1; do
		gl_node "$i"
		gl_stop_node
	done
}

gl_rss() { # gl_rss PID: VmRSS in MiB, one decimal
	local kb
	kb="$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status" 2>/dev/null)"
	[ -n "$kb" ] || { echo "?"; return; }
	printf '%d.%dMiB' $((kb / 1024)) $((kb % 1024 * 10 / 1024))
}

gl_status() {
	gl_dir "$1"
	local i pid synced=0
	for i in 1 2 3; do
		gl_node "$i"
		if pid="$(db_running_pid)"; then
			if gl_wsrep; then
				[ "$W_STATE" = Synced ] && [ "$W_READY" = ON ] && synced=$((synced + 1))
			else
				W_STATE="(no answer)" W_SIZE="?"
			fi
			printf '%s pid %s %s size %s rss %s sql 127.0.0.1:%s\n' "$GL_NAME" "$pid" \
				"$W_STATE" "$W_SIZE" "$(gl_rss "$pid")" "$GL_SQL"
		else
			printf '%s down - size - rss - sql 127.0.0.1:%s\n' "$GL_NAME" "$GL_SQL"
		fi
	done
	[ "$synced" = 3 ]
}

gl_kill() {
	gl_dir "$1"
	gl_num "${2:-}"
		gl_node "$GL_NUM"
	local pid i=0
	pid="$(db_running_pid)" || db_die "$GL_NAME is not running"
	kill -KILL "$pid"
	while db_is_ours "$pid" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	db_log "$GL_NAME: killed mariadbd (pid $pid) with SIGKILL"
}

gl_restart() {
	gl_dir "$1"
	local n i pid others=0 off=0 how
	gl_num "${2:-}"
	n="$GL_NUM"
	GL_DEADLINE=$((SECONDS + UPSINK_GALERA_TIMEOUT))
	for i in 1 2 3; do
		[ "$i" = "$n" ] && continue
		gl_node "$i"
		if db_running_pid >/dev/null; then others=$((others + 1)); fi
	done
	gl_node "$n"
	if pid="$(db_running_pid)"; then
		gl_err "$GL_NAME is already running (pid $pid)"
		gl_wait_synced "$pid" 1 || exit 1
		gl_line "$pid"
		return 0
	fi
	[ "$others" -gt 0 ] || db_die "no other node of $GL_DIR is running: use deploy/galera.sh start $GL_DIR"
	[ -f "$DB_LOG" ] && off="$(stat -c %s "$DB_LOG")"
	gl_launch
	gl_wait_synced "$GL_PID" $((others + 1)) || gl_abort
	# How it got the state, from what it logged since this start: the rsync
	# joiner script says "rsync SST completed" after copying the datadir and
	# "rsync IST completed" when the donor bypassed the copy and galera sent
	# only the missed writesets ("Receiving IST: N writesets, seqnos A-B").
	local since ist
	since="$(tail -c +$((off + 1)) "$DB_LOG")"
	ist="$(sed -n 's/.*Receiving IST: \([0-9]* writesets, seqnos [0-9-]*\).*/\1/p' <<<"$since" | tail -n 1)"
	if grep -q 'rsync SST completed on joiner' <<<"$since"; then
		how="SST (rsync copy of the whole datadir)"
	elif [ -n "$ist" ] || grep -q 'rsync IST completed on joiner' <<<"$since"; then
		how="IST (${ist:-missed writesets from a donor gcache})"
	else
		how="no state transfer logged"
	fi
	gl_err "$GL_NAME rejoined by $how"
	gl_line "$GL_PID"
}

gl_dsn() { printf 'root@tcp(127.0.0.1:%s)/%s' "$GL_SQL" "${1:-}"; }

# ---------------------------------------------------------------------------
# command-line part

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	sub="${1:-}"
	shift || true
	case "$sub" in
	install) gl_install ;;
	start) gl_need && gl_start "${1:-}" ;;
	stop) gl_stop "${1:-}" ;;
	status) gl_status "${1:-}" ;;
	kill) gl_kill "${1:-}" "${2:-}" ;;
	restart) gl_need && gl_restart "${1:-}" "${2:-}" ;;
	dsn)
		gl_dir "${1:-}"
		gl_num "${2:-}"
		gl_node "$GL_NUM"
		gl_dsn "${3:-}"
		echo
		;;
	dsns)
		gl_dir "${1:-}"
		for i in 1 2 3; do
			gl_node "$i"
			[ "$i" = 1 ] || printf ,
			gl_dsn "${2:-}"
		done
		echo
		;;
	client)
		gl_dir "${1:-}"
		gl_num "${2:-}"
		gl_node "$GL_NUM"
		shift 2
		exec mariadb --no-defaults --protocol=TCP --host=127.0.0.1 --port="$GL_SQL" --user=root "$@"
		;;
	*)
		sed -n '2,19s/^# \{0,1\}//p' "$0" >&2
		exit 2
		;;
	esac
fi
