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
#
# SERVE_FLAGS adds flags to plc serve (e.g. --read-cache-notify), RESOLVE_FLAGS
# to plc bench resolve (e.g. --hot 1000); with STATIC=1 the same resolution is
# also run against plc bench static (a bare Go server), for the ratio.
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
	# shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
	bin/plc serve --db "$db" --listen 127.0.0.1:$port --log-level warn --no-did-rate-limit "${extra[@]}" ${SERVE_FLAGS:-} >"$work/serve-$backend.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		curl -fs "http://127.0.0.1:$port/_health" >/dev/null && break
		sleep 0.1
	done
	echo "== $backend: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
	bin/plc bench write --url "http://127.0.0.1:$port" --ops "$OPS" --concurrency 16
	# shellcheck disable=SC2086 # RESOLVE_FLAGS is a list of flags
	bin/plc bench resolve --url "http://127.0.0.1:$port" --requests "$REQUESTS" --concurrency 32 --save-dids "$work/dids" ${RESOLVE_FLAGS:-}
	kill $pid
	wait $pid 2>/dev/null || true
	if [ "${STATIC:-0}" = 1 ]; then
		sport=$((20000 + RANDOM % 20000))
		bin/plc bench static --listen 127.0.0.1:$sport >"$work/static.log" 2>&1 &
		spid=$!
		for _ in $(seq 100); do
			curl -fs "http://127.0.0.1:$sport/" >/dev/null && break
			sleep 0.1
		done
		echo "== static (the same client and DIDs)"
		# shellcheck disable=SC2086
		bin/plc bench resolve --url "http://127.0.0.1:$sport" --requests "$REQUESTS" --concurrency 32 --dids "$work/dids" ${RESOLVE_FLAGS:-}
		kill $spid
		wait $spid 2>/dev/null || true
	fi
done
