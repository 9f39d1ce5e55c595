#!/usr/bin/env bash
# with-postgres.sh CMD [ARGS...]
#
# Runs CMD with PLC_TEST_POSTGRES set to the URL of a database on a
# throwaway PostgreSQL cluster: initdb in a temporary directory, a server
# that listens only on a unix socket in that directory (fsync on, as in
# production), one database. The server is stopped and the directory
# removed on exit, whatever happens; the script exits with CMD's status.
# Tests create their own databases on the cluster (internal/pgtest).
# PLC_PG_SHARED_BUFFERS sets the server's shared_buffers (default 32MB,
# plenty for tests; benchmarks at scale give it what a production server
# would have). PLC_PG_CONF, if set, is appended to postgresql.conf: for
# diagnostics, e.g. shared_preload_libraries = 'pg_stat_statements'.
#
# A streaming replica of the cluster is made too (PLC_PG_REPLICA=0 turns it
# off): pg_basebackup -R from the primary (wal_level=replica, a
# replication user allowed by a pg_hba line on the socket), started on a
# second port and socket directory, hot standby. PLC_TEST_POSTGRES_REPLICA
# is then the URL of the same database on the replica (tests take the
# replica URL of their own database with internal/pgtest.ReplicaURL), and
# PLC_TEST_PGREPLICA_DATA its data directory. It is stopped and removed
# with the primary.
#
# If PLC_TEST_POSTGRES is already set (a CI service, say), CMD runs with it
# as is. If no PostgreSQL binaries are found, CMD runs without it: tests
# that need PostgreSQL skip, or fail under PLC_REQUIRE_POSTGRES=1.
set -euo pipefail

if [ $# -eq 0 ]; then
	echo "usage: $0 CMD [ARGS...]" >&2
	exit 2
fi

if [ -n "${PLC_TEST_POSTGRES:-}" ]; then
	exec "$@"
fi

# Find initdb: on PATH, else the newest Debian-style install.
bindir=""
if command -v initdb >/dev/null 2>&1; then
	bindir=$(dirname "$(readlink -f "$(command -v initdb)")")
else
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [ -x "$d/initdb" ]; then
			bindir=$d
			break
		fi
	done
fi
if [ -z "$bindir" ]; then
	echo "with-postgres: initdb not found; running without PostgreSQL (PostgreSQL tests skip unless PLC_REQUIRE_POSTGRES=1)" >&2
	exec "$@"
fi

# The server refuses to run as root: run it as postgres then.
as_pg() { "$@"; }
if [ "$(id -u)" = 0 ]; then
	if ! id postgres >/dev/null 2>&1; then
		echo "with-postgres: running as root and there is no postgres user to run the server as" >&2
		exit 1
	fi
	as_pg() { runuser -u postgres -- "$@"; }
fi

# A short path: the socket path must fit in 107 bytes.
dir=$(mktemp -d /tmp/plcpg.XXXXXX)
started=0
replica_started=0
cleanup() {
	if [ "$replica_started" = 1 ]; then
		as_pg "$bindir/pg_ctl" -D "$dir/replica" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	if [ "$started" = 1 ]; then
		as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$(id -u)" = 0 ]; then
	chown postgres: "$dir"
fi
chmod 700 "$dir"

if ! as_pg "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
	cat "$dir/initdb.log" >&2
	echo "with-postgres: initdb failed" >&2
	exit 1
fi

# Only the socket file's name depends on the port (no TCP listener), but
# a private number keeps it distinct from any real server's.
# Ports below 32768 (out of the usual ephemeral range); the replica takes
# the next one.
port=$((20000 + RANDOM % 12000))
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
fsync = on
synchronous_commit = on
max_connections = 400
shared_buffers = ${PLC_PG_SHARED_BUFFERS:-32MB}
wal_level = replica
max_wal_senders = 4
hot_standby = on
hot_standby_feedback = on
${PLC_PG_CONF:-}
CONF
# The replica connects as a replication user over the socket.
echo "local replication replicator trust" >>"$dir/data/pg_hba.conf"

started=1
if ! as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
	cat "$dir/server.log" >&2
	echo "with-postgres: the server did not start" >&2
	exit 1
fi

psql=$bindir/psql
if [ ! -x "$psql" ]; then
	psql=$(command -v psql || true)
fi
if [ -z "$psql" ]; then
	echo "with-postgres: psql not found" >&2
	exit 1
fi
db=plc
if ! as_pg "$psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
	-c "CREATE DATABASE $db" >/dev/null; then
	echo "with-postgres: could not create database $db" >&2
	exit 1
fi

export PLC_TEST_POSTGRES="postgres://postgres@/$db?host=$dir&port=$port"

if [ "${PLC_PG_REPLICA:-1}" != 0 ]; then
	rport=$((port + 1))
	mkdir "$dir/r"
	if [ "$(id -u)" = 0 ]; then
		chown postgres: "$dir/r"
	fi
	chmod 700 "$dir/r"
	if ! as_pg "$psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
		-c "CREATE ROLE replicator WITH REPLICATION LOGIN" >/dev/null; then
		echo "with-postgres: could not create the replication user" >&2
		exit 1
	fi
	if ! as_pg "$bindir/pg_basebackup" -h "$dir" -p "$port" -U replicator -D "$dir/replica" -R -X stream -c fast --no-sync >"$dir/basebackup.log" 2>&1; then
		cat "$dir/basebackup.log" >&2
		echo "with-postgres: pg_basebackup failed" >&2
		exit 1
	fi
	cat >>"$dir/replica/postgresql.conf" <<CONF
unix_socket_directories = '$dir/r'
port = $rport
CONF
	replica_started=1
	if ! as_pg "$bindir/pg_ctl" -D "$dir/replica" -l "$dir/replica.log" -w -t 60 start >/dev/null; then
		cat "$dir/replica.log" >&2
		echo "with-postgres: the replica did not start" >&2
		exit 1
	fi
	export PLC_TEST_POSTGRES_REPLICA="postgres://postgres@/$db?host=$dir/r&port=$rport"
	export PLC_TEST_PGREPLICA_DATA="$dir/replica"
fi
# For tests that stop and start the server (scripts/attack dbkill).
export PLC_TEST_PGDATA="$dir/data" PLC_TEST_PGBIN="$bindir"
rc=0
"$@" || rc=$?
exit "$rc"
