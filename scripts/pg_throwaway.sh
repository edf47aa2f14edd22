#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store's tests (issue 30): a fresh cluster in a
# temporary folder, owned by an unprivileged user, listening on localhost only, trust
# authentication (nobody but this machine's users can reach it), deleted when stopped. One
# more user, pollen_pw (password pollen-pw-test), logs in by password only: the tests of a
# wrong password use it.
#
#   eval "$(scripts/pg_throwaway.sh start)"   # prints: export POLLENSTUDIO_TEST_PG=... PG_THROWAWAY_DIR=...
#   python -m pytest --store=postgresql tests/unit/test_store_basic.py
#   scripts/pg_throwaway.sh stop              # stops it and deletes its folder
#
# PG_PORT (default 55432) picks the port. Run as root (CI), the cluster belongs to the
# 'postgres' user when there is one, else to a 'pollenci' user made for it: PostgreSQL
# refuses to run as root. Needs initdb and pg_ctl: `apt-get install -y postgresql` on Debian
# (their folder, /usr/lib/postgresql/NN/bin, is searched when they are not on PATH).
set -euo pipefail

port="${PG_PORT:-55432}"

find_bin() {
    if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return; fi
    local hit
    hit=$(ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$hit" ] || { echo "pg_throwaway: $1 not found; install PostgreSQL (apt-get install -y postgresql)" >&2; exit 1; }
    echo "$hit"
}

as_owner() {  # run a command as the cluster's owner
    if [ "$(id -u)" = 0 ]; then runuser -u "$owner" -- "$@"; else "$@"; fi
}

owner="$(id -un)"
if [ "$(id -u)" = 0 ]; then
    if id postgres >/dev/null 2>&1; then owner=postgres
    else
        id pollenci >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin pollenci
        owner=pollenci
    fi
fi

case "${1:-}" in
start)
    initdb=$(find_bin initdb); pg_ctl=$(find_bin pg_ctl)
    dir=$(mktemp -d /tmp/pg_throwaway.XXXXXX)
    chmod 700 "$dir"
    [ "$(id -u)" = 0 ] && chown "$owner" "$dir"
    as_owner "$initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    # one user whose password is checked, for the "wrong password" test (pg_hba: first match wins)
    { echo "host all pollen_pw 127.0.0.1/32 scram-sha-256"; cat "$dir/data/pg_hba.conf"; } >"$dir/pg_hba.new"
    chown --reference="$dir/data/pg_hba.conf" "$dir/pg_hba.new"
    mv "$dir/pg_hba.new" "$dir/data/pg_hba.conf"
    # localhost only; the socket stays in the cluster's own folder (no /var/run needed)
    as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$(find_bin psql)" -q -h "$dir" -p "$port" -U postgres -d postgres \
        -c "CREATE ROLE pollen_pw LOGIN PASSWORD 'pollen-pw-test'" >/dev/null
    echo "export PG_THROWAWAY_DIR=$dir"
    echo "export POLLENSTUDIO_TEST_PG=postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    dir="${2:-${PG_THROWAWAY_DIR:-}}"
    [ -n "$dir" ] && [ -d "$dir/data" ] || { echo "pg_throwaway: give the folder that 'start' printed" >&2; exit 1; }
    pg_ctl=$(find_bin pg_ctl)
    as_owner "$pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start | stop [FOLDER]" >&2; exit 2 ;;
esac
