#!/usr/bin/env bash
# bench-resolve.sh [SIZES...]
#
# GET /:did throughput of `plc serve` beside a bare Go HTTP server answering
# one fixed 536-byte body (`plc bench static`) on the same machine, driven by
# the same client with the same settings: the ratio issue 17 asks for.
# For each size N (default: 100000 1000000 DIDs) and each backend (sqlite,
# and postgres when PLC_TEST_POSTGRES is set, i.e. under
# scripts/with-postgres.sh):
#
#   - the corpus $CORPUS_DIR/dids-N.jsonl, made with
#     `plc bench gen --dids N --seed 1` when it does not exist, imported
#     into a fresh database with `plc import`;
#   - `plc serve` on it (its default cache of rendered answers), then
#     `plc bench resolve` with CONCURRENCY connections and REQUESTS
#     requests: a uniform spread over every DID, a hot set of the first HOT
#     DIDs, and both again with --etag (the client sends the ETag it got:
#     the answers are 304);
#   - on PostgreSQL, the same again with --read-cache-notify (backend
#     "postgres+notify"), unless PG_NOTIFY=0 (PG_STRICT=0 runs only that);
#   - with TWO=1, two plc serve processes on the database, the client's
#     connections taken in turn by each (server "plc×2"), uniform and hot;
#   - `plc bench static`, resolved with the same DIDs, uniform and hot;
#   - with wrk installed, also `wrk -t2 -c$CONCURRENCY -d${WRK_SECONDS}s`
#     on one DID of plc serve and on plc bench static.
#
# Then one markdown table: a row per (size, backend, spread) with req/s,
# p99 and the ratio to the static server. Only run it for figures on an
# idle machine.
#
#   bash scripts/bench-resolve.sh                        # SQLite, 100k and 1M DIDs
#   bash scripts/with-postgres.sh bash scripts/bench-resolve.sh 100000
#   REQUESTS=2000 bash scripts/bench-resolve.sh 200      # a quick check
#
# Environment: REQUESTS (200000), CONCURRENCY (32), HOT (1000), CORPUS_DIR
# (/tmp), BACKENDS (sqlite, plus postgres under with-postgres.sh),
# WRK_SECONDS (10), SERVE_FLAGS (more plc serve flags, e.g.
# "--read-cache-bytes 1073741824" for a cache that holds a million DIDs),
# PG_NOTIFY (1), PG_STRICT (1), TWO (0), WARM (0; 1: also a uniform spread after a pass
# over every DID, untimed: "warm-uniform", a cache in its steady state), FLOOR (0; 1: also
# `plc bench static --db` on the same database, uniform: server "floor", a bare server that
# makes one indexed read of each DID's latest op before its fixed body, the least a
# resolution that misses every cache costs on that backend).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-200000}
CONCURRENCY=${CONCURRENCY:-32}
HOT=${HOT:-1000}
CORPUS_DIR=${CORPUS_DIR:-/tmp}
WRK_SECONDS=${WRK_SECONDS:-10}
SERVE_FLAGS=${SERVE_FLAGS:-}
PG_NOTIFY=${PG_NOTIFY:-1}
PG_STRICT=${PG_STRICT:-1}
TWO=${TWO:-0}
WARM=${WARM:-0}
FLOOR=${FLOOR:-0}
if [ -n "${PLC_TEST_POSTGRES:-}" ]; then
	BACKENDS=${BACKENDS:-sqlite postgres}
else
	BACKENDS=${BACKENDS:-sqlite}
fi
if [ $# -gt 0 ]; then
	sizes=("$@")
else
	sizes=(100000 1000000)
fi

die() {
	echo "bench-resolve: $*" >&2
	exit 1
}
log() { echo "bench-resolve: $*" >&2; }
for n in "${sizes[@]}"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "size '$n' is not a positive integer (usage: $0 [SIZES...])"
done
for c in curl awk; do
	command -v "$c" >/dev/null 2>&1 || die "$c not found on PATH"
done

work=$(mktemp -d /tmp/plcresolve.XXXXXX)
pids=()
created_dbs=()
cleanup() {
	local rc=$? p d
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	for d in "${created_dbs[@]}"; do
		psql -X -q -d "$(pg_url postgres)" -c "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)" >/dev/null 2>&1 || true
	done
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pg_url NAME: PLC_TEST_POSTGRES with its database name replaced by NAME.
pg_url() {
	local url=$PLC_TEST_POSTGRES base query=""
	base=${url%%\?*}
	[[ $url == *\?* ]] && query="?${url#*\?}"
	echo "${base%/*}/$1$query"
}

free_port() {
	local port i
	for i in $(seq 50); do
		port=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	die "no free port"
}

# wait_up URL PID LOG: polls URL until it answers, for at most 30 s.
wait_up() {
	local i
	for i in $(seq 300); do
		curl -fs "$1" >/dev/null 2>&1 && return 0
		kill -0 "$2" 2>/dev/null || { tail -n 20 "$3" >&2; die "$1: the server exited"; }
		sleep 0.1
	done
	tail -n 20 "$3" >&2
	die "$1 did not answer within 30s"
}

# settle URL: waits (at most 30 min) until the handle index has caught up
# with the log (GET /_lookup/handle/… answers no indexBehind): the server
# fills it in after an import, and its commits would otherwise be measured.
settle() {
	local i out
	for i in $(seq 18000); do
		if out=$(curl -fs "$1/_lookup/handle/settle.example.com" 2>/dev/null) && [[ $out != *'"indexBehind"'* ]]; then
			return 0
		fi
		sleep 0.1
	done
	die "$1: the handle index did not catch up within 30 min"
}

stop() { # PID
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

log "building"
make -s build || die "make build failed"
plc=$work/plc
cp bin/plc "$plc" # bin/plc may be rebuilt while this runs

# The bare server, for the whole run.
static_port=$(free_port)
"$plc" bench static --listen "127.0.0.1:$static_port" >"$work/static.log" 2>&1 &
static_pid=$!
pids+=("$static_pid")
static_url=http://127.0.0.1:$static_port
wait_up "$static_url/" "$static_pid" "$work/static.log"

rows=()
# resolve NAME URL ARGS...: one plc bench resolve; appends "NAME req/s p99" to rows.
resolve() {
	local name=$1 url=$2 out
	shift 2
	out=$("$plc" bench resolve --url "$url" --requests "$REQUESTS" --concurrency "$CONCURRENCY" "$@") ||
		{ echo "$out" >&2; die "plc bench resolve ($name) failed"; }
	echo "$out" | sed "s/^/  [$name] /" >&2
	local rps p99
	rps=$(echo "$out" | awk '/^throughput/ { print $2 }')
	p99=$(echo "$out" | awk '/^latency/ { print $5 }')
	rows+=("$name $rps $p99")
}

wrk_run() { # NAME URL
	command -v wrk >/dev/null 2>&1 || return 0
	local out
	out=$(wrk -t2 -c"$CONCURRENCY" -d"${WRK_SECONDS}s" --latency "$2")
	echo "$out" | sed "s/^/  [wrk $1] /" >&2
	rows+=("wrk:$1 $(echo "$out" | awk '/^Requests\/sec/ { print $2 }') $(echo "$out" | awk '$1 == "99%" { print $2 }')")
}

for n in "${sizes[@]}"; do
	corpus=$CORPUS_DIR/dids-$n.jsonl
	if [ ! -s "$corpus" ]; then
		log "generating $corpus"
		"$plc" bench gen --dids "$n" --seed 1 --out "$corpus.part" 2>"$work/gen.err" || { cat "$work/gen.err" >&2; die "plc bench gen failed"; }
		mv "$corpus.part" "$corpus"
	fi
	for backend in $BACKENDS; do
		case $backend in
		sqlite) db=$work/resolve-$n.sqlite ;;
		postgres)
			: "${PLC_TEST_POSTGRES:?run under scripts/with-postgres.sh for postgres}"
			name=plcresolve_$n
			created_dbs+=("$name")
			psql -X -q -d "$(pg_url postgres)" -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" -c "CREATE DATABASE \"$name\"" >/dev/null
			db=$(pg_url "$name")
			;;
		*) die "unknown backend $backend" ;;
		esac
		log "$n DIDs, $backend: importing"
		"$plc" import --db "$db" "$corpus" >"$work/import.log" 2>&1 || { tail -n 20 "$work/import.log" >&2; die "plc import failed"; }
		if [ "$backend" = postgres ]; then
			# What autovacuum would do to the freshly imported tables while
			# the reads are measured, done first.
			log "$n DIDs, $backend: vacuum analyze"
			psql -X -q -d "$db" -c "VACUUM ANALYZE" >/dev/null
		fi
		modes=("")
		if [ "$backend" = postgres ]; then
			modes=()
			[ "$PG_STRICT" = 1 ] && modes+=("")
			[ "$PG_NOTIFY" = 1 ] && modes+=("--read-cache-notify")
		fi
		for mode in "${modes[@]}"; do
			# shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
			start_serve() { # LOG: starts plc serve; sets url and serve_pid
				local port
				port=$(free_port)
				"$plc" serve --db "$db" --listen "127.0.0.1:$port" --log-level warn --no-ui $mode $SERVE_FLAGS >"$1" 2>&1 &
				serve_pid=$!
				pids+=("$serve_pid")
				url=http://127.0.0.1:$port
				wait_up "$url/_health" "$serve_pid" "$1"
				settle "$url"
			}
			start_serve "$work/serve.log"
			first_pid=$serve_pid first_url=$url
			dids=$work/dids-$n
			tag="$n $backend${mode:+ +notify}"
			tag=${tag// +notify/+notify}
			resolve "$tag plc uniform" "$url" --save-dids "$dids"
			if [ "$WARM" = 1 ]; then
				resolve "$tag plc warm-uniform" "$url" --dids "$dids" --warm
			fi
			resolve "$tag plc hot" "$url" --dids "$dids" --hot "$HOT"
			resolve "$tag plc-304 uniform" "$url" --dids "$dids" --etag
			resolve "$tag plc-304 hot" "$url" --dids "$dids" --hot "$HOT" --etag
			if [ "$TWO" = 1 ]; then
				start_serve "$work/serve2.log"
				resolve "$tag plc×2 uniform" "$first_url,$url" --dids "$dids"
				resolve "$tag plc×2 hot" "$first_url,$url" --dids "$dids" --hot "$HOT"
				stop "$serve_pid"
			fi
			resolve "$tag static uniform" "$static_url" --dids "$dids"
			if [ "$FLOOR" = 1 ] && [ "$mode" = "${modes[0]}" ]; then
				port=$(free_port)
				"$plc" bench static --db "$db" --listen "127.0.0.1:$port" >"$work/floor.log" 2>&1 &
				floor_pid=$!
				pids+=("$floor_pid")
				wait_up "http://127.0.0.1:$port/$(head -n1 "$dids")" "$floor_pid" "$work/floor.log"
				resolve "$tag floor uniform" "http://127.0.0.1:$port" --dids "$dids"
				stop "$floor_pid"
			fi
			if [ "$WARM" = 1 ]; then
				resolve "$tag static warm-uniform" "$static_url" --dids "$dids"
			fi
			resolve "$tag static hot" "$static_url" --dids "$dids" --hot "$HOT"
			wrk_run "$tag plc" "$first_url/$(head -n1 "$dids")"
			wrk_run "$tag static" "$static_url/$(head -n1 "$dids")"
			stop "$first_pid"
		done
		[ "$backend" = sqlite ] && rm -f "$db" "$db-wal" "$db-shm"
	done
done

# The table: each plc row beside the static row of the same size, backend and spread.
echo
echo "plc $("$plc" version 2>/dev/null || echo unknown); $(nproc) cores; $(date -u +%Y-%m-%d); REQUESTS=$REQUESTS CONCURRENCY=$CONCURRENCY HOT=$HOT"
echo
echo "| DIDs | backend | server | spread | req/s | p99 | ÷ static |"
echo "|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do
	read -r size backend server spread rps p99 <<<"$r"
	base=""
	for s in "${rows[@]}"; do
		read -r s_size s_backend s_server s_spread s_rps _ <<<"$s"
		if [ "$s_size $s_backend $s_spread" = "$size $backend $spread" ] && [ "$s_server" = static ]; then
			base=$s_rps
		fi
	done
	ratio=$(LC_ALL=C awk -v a="$rps" -v b="$base" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f\n", a / b }')
	echo "| $size | $backend | $server | $spread | $rps | $p99 | $ratio |"
done
