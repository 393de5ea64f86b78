#!/usr/bin/env bash
# bench/attack.sh - the attack suite at full scale (`make attack`, also run by
# bench/run.sh): every `upsink-bench attack` kind, and Debian's slowhttptest in
# its -H, -B and -X modes, each against a fresh upsink (its own database on one
# private MariaDB) while a polite client uploads 1 KiB bodies at 20/s; then the
# "## Attacks" section of BENCHMARKS.md (ATTACK_OUT) from the results in
# bench/results/attack-DATE/.
#
# Environment: ATTACK_KINDS (all), ATTACK_DURATION (45s: the bound of each
# attack), ATTACK_NOFILE (upsink's fd limit in the fd flood, soft = hard; 8192,
# so the flood can pass it from one client process), ATTACK_SERVER_NOFILE
# (upsink's fd limit in every other attack: this shell's hard limit), ATTACK_OUT (BENCHMARKS.md), GO (go),
# and the scales: ATTACK_SLOWLORIS (4000), ATTACK_SLOWBODY (4000),
# ATTACK_SLOWREAD (2000; slowread sends 2,000 uploads per connection,
# slowread-deep 200,000 GET /healthz, the hardening issue's slow readers), ATTACK_FDFLOOD (ATTACK_NOFILE + 1000),
# ATTACK_STALLED (300), ATTACK_EARLY (1000), ATTACK_STORM (10000),
# ATTACK_FLOOD (200), ATTACK_FUZZ (1000000 requests, bounded by the duration),
# ATTACK_PUSH (10000), ATTACK_SLOWHTTP (4000 connections per slowhttptest run),
# ATTACK_H2 (200 connections at once for each HTTP/2 kind, each reopened as
# soon as upsink ends it: h2rapidreset, h2madeyoureset, h2continuation,
# h2ping, h2settings, h2emptydata, h2hpackbomb over h2c on the plain port;
# h2rapidreset-tls and h2continuation-tls over h2 by ALPN on the TLS port).
# Only processes started here are stopped (by pid), also on failure or Ctrl-C.
# shellcheck disable=SC2317 # cleanup is called from traps
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
GO="${GO:-go}"
# shellcheck source=deploy/mariadb.sh
. deploy/mariadb.sh
KINDS="${ATTACK_KINDS:-slowloris slowbody slowread slowread-deep fdflood tlsearly storm headerflood trailerflood fuzz push h2rapidreset h2rapidreset-tls h2madeyoureset h2continuation h2continuation-tls h2ping h2settings h2emptydata h2hpackbomb slowhttptest-H slowhttptest-B slowhttptest-X}"
DUR="${ATTACK_DURATION:-45s}"
NOFILE="${ATTACK_NOFILE:-8192}"
SERVER_NOFILE="${ATTACK_SERVER_NOFILE:-$(ulimit -Hn)}"
OUT="${ATTACK_OUT:-BENCHMARKS.md}"

log() { printf 'attack: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

db_install
case " $KINDS " in *" slowhttptest-"*) db_apt_need "the slowhttptest attacks" slowhttptest slowhttptest ;; esac

tmp="" DB_SERVER_PID="" SRV_PID="" BG_PID=""
cleanup() {
	for p in "$BG_PID" "$SRV_PID"; do
		if [ -n "$p" ]; then
			kill -TERM "$p" 2>/dev/null || true
			wait "$p" 2>/dev/null || true
		fi
	done
	if [ -n "$DB_SERVER_PID" ]; then db_stop "$DB_SERVER_PID"; fi
	if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}
db_on_exit cleanup

log "building"
mkdir -p bin
make -s build GO="$GO" # static, as the Makefile builds it
"$GO" build -o bin/upsink-bench ./cmd/upsink-bench
B=bin/upsink-bench

RES="bench/results/attack-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$RES"
CERT="$RES/tls/cert.pem" KEY="$RES/tls/key.pem"
bin/upsink gencert --dir "$RES/tls" >/dev/null

# The attacking tool holds as many sockets as upsink may: its own limit must
# exceed upsink's by the flood's margin.
need=$((NOFILE + 3000))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -Sn "$need" 2>/dev/null || die "ulimit -n $(ulimit -n) < $need and cannot be raised (hard limit $(ulimit -Hn)); lower ATTACK_NOFILE"
fi

tmp="$(mktemp -d /tmp/upsink-attack.XXXXXX)"
db_start "$tmp"
SOCK="$DB_SOCK"

{
	printf 'date (UTC)\t%s\n' "$(date -u '+%Y-%m-%d %H:%M')"
	printf 'commit\t%s\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- cmd server store parser conn tlsbridge budget 2>/dev/null || echo ' (+ uncommitted changes)')"
	printf 'nproc\t%s\n' "$(nproc)"
	printf 'kernel\t%s\n' "$(uname -sr)"
	printf 'page size\t%s\n' "$(getconf PAGESIZE)"
	printf 'upsink nofile\t%s in the fd flood, %s otherwise\n' "$NOFILE" "$SERVER_NOFILE"
	if command -v slowhttptest >/dev/null; then printf 'slowhttptest\t%s\n' "$(dpkg-query -W -f '${Version}' slowhttptest 2>/dev/null || echo installed)"; fi
} >"$RES/info.tsv"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
	local p from="$1"
	for p in $(seq "$from" 1 $((from + 200))); do
		if port_free "$p"; then echo "$p"; return 0; fi
	done
	die "no free port"
}

# start_upsink NAME NOFILE: a fresh database a_NAME and upsink on a plain and
# a TLS port, with NOFILE descriptors at most. Sets SRV_PID, PLAIN, HTTPS.
start_upsink() {
	local name="$1" nofile="$2" db="a_${1//[^A-Za-z0-9]/_}" port tport
	db_client -e "DROP DATABASE IF EXISTS \`$db\`; CREATE DATABASE \`$db\`" >/dev/null
	port="$(pick_port 18580)"
	tport="$(pick_port $((port + 1)))"
	PLAIN="http://127.0.0.1:$port" HTTPS="https://127.0.0.1:$tport"
	local -a cmd=(bin/upsink serve --listen "127.0.0.1:$port" --tls-listen "127.0.0.1:$tport" --tls-cert "$CERT" --tls-key "$KEY"
		--dsn "root@unix($SOCK)/$db" --spool-dir "$tmp/spool-$db")
	printf "(ulimit -n %s; bin/upsink serve --listen 127.0.0.1:%s --tls-listen 127.0.0.1:%s --tls-cert %s --tls-key %s --dsn 'root@unix(\$SOCK)/%s' --spool-dir \$TMP/spool-%s) &\n" \
		"$nofile" "$port" "$tport" "$CERT" "$KEY" "$db" "$db" >"$RES/$name.server"
	( ulimit -n "$nofile" && exec "${cmd[@]}" ) >"$RES/$name.server.log" 2>&1 &
	SRV_PID=$!
	$B wait --url "$PLAIN/readyz" --timeout 60s || die "upsink did not become ready; see $RES/$name.server.log"
	$B wait --url "$HTTPS/healthz" --cacert "$CERT" --timeout 20s || die "upsink: no HTTPS; see $RES/$name.server.log"
}
stop_upsink() {
	if kill -0 "$SRV_PID" 2>/dev/null; then
		kill -TERM "$SRV_PID" 2>/dev/null || true
	fi
	wait "$SRV_PID" 2>/dev/null || true
	SRV_PID=""
}

n=0
for kind in $KINDS; do
	n=$((n + 1))
	name="$(printf '%02d' "$n")-$kind"
	nofile="$SERVER_NOFILE"
	[ "$kind" = fdflood ] && nofile="$NOFILE"
	start_upsink "$name" "$nofile"
	common=(-d "$DUR" --pid "$SRV_PID" --json-out "$RES/$name.json")
	log "$name (upsink pid $SRV_PID)"
	case "$kind" in
	slowloris) $B attack slowloris --url "$PLAIN/upload/attack" -c "${ATTACK_SLOWLORIS:-4000}" --parallel 128 "${common[@]}" ;;
	slowbody) $B attack slowbody --url "$PLAIN/upload/attack" -c "${ATTACK_SLOWBODY:-4000}" --parallel 128 "${common[@]}" ;;
	slowread) $B attack slowread --url "$PLAIN/upload/attack" -c "${ATTACK_SLOWREAD:-2000}" --parallel 128 "${common[@]}" ;;
	# The hardening issue's scenario: pipeline GET /healthz without end and never read.
	slowread-deep) $B attack slowread --req healthz -n 200000 --url "$PLAIN/upload/attack" -c "${ATTACK_SLOWREAD:-2000}" --parallel 128 "${common[@]}" ;;
	fdflood) $B attack fdflood --url "$PLAIN/upload/attack" -c "${ATTACK_FDFLOOD:-$((NOFILE + 1000))}" --parallel 256 "${common[@]}" ;;
	tlsearly) $B attack tlsearly --url "$HTTPS/upload/attack" --cacert "$CERT" --stalled "${ATTACK_STALLED:-300}" -c "${ATTACK_EARLY:-1000}" --junk 900KiB --parallel 128 "${common[@]}" ;;
	storm) $B attack storm --url "$HTTPS/upload/attack" --cacert "$CERT" -c "${ATTACK_STORM:-10000}" "${common[@]}" ;;
	headerflood) $B attack headerflood --url "$PLAIN/upload/attack" -c "${ATTACK_FLOOD:-200}" --head-bytes 1MiB "${common[@]}" ;;
	trailerflood) $B attack trailerflood --url "$PLAIN/upload/attack" -c "${ATTACK_FLOOD:-200}" --head-bytes 1MiB "${common[@]}" ;;
	fuzz) $B attack fuzz --url "$PLAIN/upload/attack" -c 64 -n "${ATTACK_FUZZ:-1000000}" "${common[@]}" ;;
	push) $B attack push --url "$PLAIN/upload/attack" -c "${ATTACK_PUSH:-10000}" --body 64KiB "${common[@]}" ;;
	# HTTP/2 (bench/attack_h2.go): h2c with prior knowledge, or h2 by ALPN (-tls).
	h2rapidreset | h2madeyoureset | h2continuation | h2ping | h2settings | h2emptydata | h2hpackbomb)
		$B attack "$kind" --url "$PLAIN/upload/attack" -c "${ATTACK_H2:-200}" --parallel 128 "${common[@]}" ;;
	h2*-tls) $B attack "${kind%-tls}" --url "$HTTPS/upload/attack" --polite-url "$PLAIN/upload/attack" --cacert "$CERT" -c "${ATTACK_H2:-200}" --parallel 128 "${common[@]}" ;;
	slowhttptest-*)
		mode="${kind#slowhttptest-}"
		secs="${DUR%s}"
		# -H slow headers, -B slow body (declared length: -s), -X slow read (small window, -k pipelined requests).
		extra=()
		case "$mode" in
		B) extra=(-s 1048193) ;;
		X) extra=(-k 3 -z 32 -w 512 -y 1024 -n 5) ;;
		esac
		shcmd=(slowhttptest "-$mode" -c "${ATTACK_SLOWHTTP:-4000}" -r 1000 -i 5 -l "$((secs - 5))" -t POST -u "$PLAIN/upload/attack" -p 3 -g -o "$RES/$name" "${extra[@]}")
		"${shcmd[@]}" >"$RES/$name.slowhttptest.log" 2>&1 &
		BG_PID=$!
		$B attack external --url "$PLAIN/upload/attack" --note "${shcmd[*]}" "${common[@]}"
		wait "$BG_PID" || log "slowhttptest exited $? (see $RES/$name.slowhttptest.log)"
		BG_PID=""
		;;
	*) die "unknown kind $kind" ;;
	esac
	if ! kill -0 "$SRV_PID" 2>/dev/null; then log "upsink exited during $name (see $RES/$name.server.log)"; fi
	stop_upsink
done

$B attack-report --dir "$RES" --into "$OUT" >/dev/null
log "wrote the Attacks section of $OUT (results in $RES)"
