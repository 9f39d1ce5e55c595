#!/usr/bin/env bash
# bench-serve.sh [sqlite|postgres|replica]...
#
# The directory's HTTP benchmarks: starts `plc serve` on a fresh database,
# loads 100,000 DIDs with `plc bench write` (16 requests in flight; the
# POST throughput figure), then measures `plc bench resolve` (32
# connections over those DIDs). For postgres, run it under
# scripts/with-postgres.sh, which provides PLC_TEST_POSTGRES. replica is
# postgres with the reads sent to the streaming replica the script makes
# (--read-db $PLC_TEST_POSTGRES_REPLICA); run it alone, as it uses the same
# database: bash scripts/with-postgres.sh bash scripts/bench-serve.sh replica
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${OPS:-100000}
REQUESTS=${REQUESTS:-200000}
make -s build
work=$(mktemp -d /tmp/plcbench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

for backend in "${@:-sqlite}"; do
	extra=()
	case $backend in
	sqlite) db=$work/plc.sqlite ;;
	postgres)
		: "${PLC_TEST_POSTGRES:?run under scripts/with-postgres.sh}"
		db=$PLC_TEST_POSTGRES
		;;
	replica)
		: "${PLC_TEST_POSTGRES_REPLICA:?run under scripts/with-postgres.sh (with its replica)}"
		db=$PLC_TEST_POSTGRES
		extra=(--read-db "$PLC_TEST_POSTGRES_REPLICA")
		;;
	*) echo "unknown backend $backend" >&2; exit 2 ;;
	esac
	port=$((20000 + RANDOM % 20000))
	bin/plc serve --db "$db" --listen 127.0.0.1:$port --log-level warn --no-did-rate-limit "${extra[@]}" >"$work/serve-$backend.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		curl -fs "http://127.0.0.1:$port/_health" >/dev/null && break
		sleep 0.1
	done
	echo "== $backend: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
	bin/plc bench write --url "http://127.0.0.1:$port" --ops "$OPS" --concurrency 16
	bin/plc bench resolve --url "http://127.0.0.1:$port" --requests "$REQUESTS" --concurrency 32
	kill $pid
	wait $pid 2>/dev/null || true
done
