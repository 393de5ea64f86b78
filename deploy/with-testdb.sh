#!/usr/bin/env bash
# deploy/with-testdb.sh COMMAND [ARGS...]
#
# `make test` / `make bench`: start a throwaway MariaDB (low-memory profile, or
# UPSINK_DB_PROFILE) in a fresh mktemp -d directory under /tmp, run COMMAND in
# the foreground with
#   UPSINK_TEST_DSN=root@unix(SOCKET)/   and   UPSINK_REQUIRE_DB=1
# exported, then stop that mariadbd (by the pid started here) and remove the
# directory - also on failure, Ctrl-C, SIGTERM or SIGHUP. Exits with COMMAND's
# status.
# shellcheck disable=SC2317 # cleanup is called from traps
set -euo pipefail
# shellcheck source=deploy/mariadb.sh
. "$(dirname "${BASH_SOURCE[0]}")/mariadb.sh"
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

db_install

tmp=""
DB_SERVER_PID=""
cleanup() {
	if [ -n "$DB_SERVER_PID" ]; then db_stop "$DB_SERVER_PID"; fi
	if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}
db_on_exit cleanup

tmp="$(mktemp -d /tmp/upsink-test.XXXXXX)"
db_start "$tmp"
[ "$DB_STARTED" = 1 ] || db_die "internal error: reused a server in a fresh directory"

UPSINK_TEST_DSN="$(db_dsn)"
UPSINK_REQUIRE_DB=1
export UPSINK_TEST_DSN UPSINK_REQUIRE_DB
db_log "UPSINK_TEST_DSN=$UPSINK_TEST_DSN"

set +e
"$@"
rc=$?
set -e
exit "$rc"
