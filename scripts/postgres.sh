# Sourced by scripts/test.sh: a throwaway PostgreSQL server on loopback for the
# tests of the postgresql:// store, unless COSTROUTE_TEST_POSTGRES already names
# one that answers. It installs Debian's postgresql when no server binaries are
# found, runs the server as a user other than root (PostgreSQL refuses root),
# exports COSTROUTE_TEST_POSTGRES and stops the server when the script exits.

_pg_bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$found" ]; then
        echo "$found"
    elif command -v initdb >/dev/null; then
        dirname "$(command -v initdb)"
    fi
}

_pg_as_owner() {
    # From the server's folder: the owner may not be able to read ours.
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$_pg_dir" && runuser -u "$_pg_owner" -- "$@")
    else
        (cd "$_pg_dir" && "$@")
    fi
}

start_test_postgres() {
    if [ -n "${COSTROUTE_TEST_POSTGRES:-}" ] &&
        python -c "import psycopg, sys; psycopg.connect(sys.argv[1]).close()" \
            "$COSTROUTE_TEST_POSTGRES" 2>/dev/null; then
        return 0
    fi
    if [ -z "$(_pg_bindir)" ]; then
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
    fi
    local bindir port
    bindir=$(_pg_bindir)
    _pg_owner=$(id -un)
    if [ "$(id -u)" -eq 0 ]; then
        _pg_owner=postgres
        id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    fi
    _pg_dir=$(mktemp -d /tmp/costroute-pg.XXXXXX)
    chown "$_pg_owner" "$_pg_dir"
    port=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0));
print(s.getsockname()[1])")
    _pg_as_owner "$bindir/initdb" --pgdata "$_pg_dir/data" --username postgres \
        --auth trust --encoding UTF8 --no-locale >"$_pg_dir/initdb.log"
    # Tests need no durability: skip fsync for speed.
    _pg_as_owner "$bindir/pg_ctl" --pgdata "$_pg_dir/data" --log "$_pg_dir/server.log" \
        --wait --options "-h 127.0.0.1 -p $port -k $_pg_dir -c fsync=off \
-c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null
    _pg_stop="$bindir/pg_ctl"
    trap 'stop_test_postgres' EXIT
    export COSTROUTE_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$port/postgres"
    echo "PostgreSQL for the tests: $COSTROUTE_TEST_POSTGRES"
}

stop_test_postgres() {
    _pg_as_owner "$_pg_stop" --pgdata "$_pg_dir/data" --mode fast stop >/dev/null ||
        true
    rm -rf "$_pg_dir"
}
