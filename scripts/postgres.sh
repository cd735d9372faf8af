#!/usr/bin/env bash
# Install (Debian's postgresql-15) and start PostgreSQL on loopback for the test suite.
# Idempotent. Prints the URL the tests use (EVOTA_TEST_POSTGRES_URL).
set -euo pipefail
PGVER=15
PGPORT=${EVOTA_PG_PORT:-55432}
PGDATA=${EVOTA_PG_DATA:-/tmp/evota-pg}
BIN=/usr/lib/postgresql/$PGVER/bin
if [ ! -x "$BIN/postgres" ]; then
  if [ "$(id -u)" != 0 ]; then echo "postgresql-$PGVER missing and not root: install it" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "postgresql-$PGVER" >/dev/null
fi
RUN_AS=()
if [ "$(id -u)" = 0 ]; then RUN_AS=(runuser -u postgres --); fi
if ! "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDATA"
    "${RUN_AS[@]}" "$BIN/initdb" -D "$PGDATA" -U evota --auth=trust -E UTF8 >/dev/null
  fi
  "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k /tmp -c fsync=off -c max_connections=300" start >/dev/null
fi
echo "postgresql+asyncpg://evota@127.0.0.1:$PGPORT/postgres"
