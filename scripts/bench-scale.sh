#!/usr/bin/env bash
# bench-scale.sh [SIZES...]
#
# How the directory scales with the size of the log, on both backends.
# For each size N (default: 10000 100000 1000000 ops):
#
#   - the corpus $CORPUS_DIR/corpus-N.jsonl (default /tmp), generated with
#     `plc bench gen --ops N --seed 1` when it does not exist;
#   - `plc bench verify` on it: validator ops/s beside the bare
#     signature-check bound of the same run;
#   - `plc import` into a fresh SQLite file and into a fresh PostgreSQL
#     database, under /usr/bin/time -v: import ops/s, peak RSS (of plc, not
#     of the PostgreSQL server), database bytes per op (SQLite: the file
#     with its -wal and -shm; PostgreSQL: every user table with its TOAST
#     and indexes, after VACUUM ANALYZE);
#   - PostgreSQL only: scripts/refsize, the same corpus in the reference
#     implementation's schema, for its bytes per op;
#   - `plc serve` on each database and `plc bench resolve` against it.
#
# Then one markdown table, a row per (size, backend), and the time an
# 80M-op import would take at the largest size's import rate.
#
# Run it under scripts/with-postgres.sh, which provides PLC_TEST_POSTGRES:
#
#   bash scripts/with-postgres.sh bash scripts/bench-scale.sh [SIZES...]
#
# The databases are created on PLC_TEST_POSTGRES's server (its URL with the
# database name replaced) and dropped after each size. Environment:
# REQUESTS (50000) and CONCURRENCY (32) for bench resolve, CORPUS_DIR
# (/tmp), KEEP_DBS=1 to keep the databases (SQLite files are in a
# temporary directory that is always removed).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-50000}
CONCURRENCY=${CONCURRENCY:-32}
CORPUS_DIR=${CORPUS_DIR:-/tmp}
KEEP_DBS=${KEEP_DBS:-0}
if [ $# -gt 0 ]; then
	sizes=("$@")
else
	sizes=(10000 100000 1000000)
fi

die() {
	echo "bench-scale: $*" >&2
	exit 1
}
# fail MSG LOG...: die, after the tail of each log that exists.
fail() {
	local msg=$1 f
	shift
	for f in "$@"; do
		if [ -s "$f" ]; then
			echo "--- tail of $(basename "$f"):" >&2
			tail -n 20 "$f" >&2
		fi
	done
	die "$msg"
}
log() { echo "bench-scale: $*" >&2; }

for n in "${sizes[@]}"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "size '$n' is not a positive integer (usage: $0 [SIZES...])"
done
: "${PLC_TEST_POSTGRES:?run under scripts/with-postgres.sh (PLC_TEST_POSTGRES is not set)}"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
for c in psql curl go awk; do
	command -v "$c" >/dev/null 2>&1 || die "$c not found on PATH"
done

# pg_url NAME: PLC_TEST_POSTGRES with its database name replaced by NAME.
pg_url() {
	local url=$PLC_TEST_POSTGRES base query=""
	base=${url%%\?*}
	if [[ $url == *\?* ]]; then
		query="?${url#*\?}"
	fi
	local rest=${base#*://}
	[[ $rest == */* ]] || die "PLC_TEST_POSTGRES ($url) names no database"
	echo "${base%/*}/$1$query"
}

pg_url postgres >/dev/null # dies here if the URL names no database

work=$(mktemp -d /tmp/plcscale.XXXXXX)
server_pid=""
child=""
created_dbs=()
partial_corpus=""
cleanup() {
	local rc=$?
	if [ -n "$child" ]; then
		pkill -TERM -P "$child" 2>/dev/null || true # plc under /usr/bin/time
		kill "$child" 2>/dev/null || true
		wait "$child" 2>/dev/null || true
	fi
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	if [ "$KEEP_DBS" != 1 ]; then
		for d in "${created_dbs[@]}"; do
			psql -X -q -d "$(pg_url postgres)" -c "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)" >/dev/null 2>&1 || true
		done
	fi
	[ -n "$partial_corpus" ] && rm -f "$partial_corpus"
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# run CMD...: runs CMD in the background and waits for it, so that a signal
# to this script is handled at once (and the trap stops CMD).
run() {
	local rc=0
	"$@" &
	child=$!
	wait "$child" || rc=$?
	child=""
	return "$rc"
}

psql_q() { # URL SQL...: each SQL sent on its own (VACUUM cannot share a transaction)
	local url=$1 args=()
	shift
	for s in "$@"; do
		args+=(-c "$s")
	done
	PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 -d "$url" "${args[@]}"
}

fresh_db() { # NAME: drop and create a database on the cluster
	created_dbs+=("$1")
	psql_q "$(pg_url postgres)" "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" "CREATE DATABASE \"$1\"" >/dev/null ||
		die "could not create database $1 on $(pg_url postgres)"
}

drop_db() {
	[ "$KEEP_DBS" = 1 ] && return 0
	psql_q "$(pg_url postgres)" "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null ||
		log "warning: could not drop database $1"
}

# Numbers and units.
num() { LC_ALL=C awk -v x="$1" 'BEGIN { if (x == "" || x == "-") { print "-"; exit } s = sprintf("%.0f", x); o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }'; }
div() { LC_ALL=C awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf f "\n", a / b }'; }
# A Go duration (812µs, 1.677ms, 1.2s) in milliseconds.
dur_ms() {
	LC_ALL=C awk -v d="$1" 'BEGIN {
		if (d ~ /(µs|us)$/) { sub(/(µs|us)$/, "", d); printf "%.2f\n", d / 1000 }
		else if (d ~ /ns$/) { sub(/ns$/, "", d); printf "%.4f\n", d / 1e6 }
		else if (d ~ /ms$/) { sub(/ms$/, "", d); printf "%.2f\n", d }
		else if (d ~ /^[0-9.]+s$/) { sub(/s$/, "", d); printf "%.1f\n", d * 1000 }
		else print "-"
	}'
}
# The wall clock of a /usr/bin/time -v report (h:mm:ss or m:ss.ss) in seconds.
wall_s() {
	LC_ALL=C awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$1"
}

# Build, then run a copy: bin/plc may be rebuilt while this runs.
log "building"
make -s build || die "make build failed"
plc=$work/plc
cp bin/plc "$plc"
go build -o "$work/refsize" ./scripts/refsize || die "go build ./scripts/refsize failed"
version=$("$plc" version 2>/dev/null || echo unknown)
psql_q "$(pg_url postgres)" "SELECT 1" >/dev/null || die "cannot reach PostgreSQL at $(pg_url postgres)"

# start_server DB NAME: runs plc serve on a free port; sets server_pid and server_url.
start_server() {
	local db=$1 name=$2 port i
	for i in $(seq 50); do
		port=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			break
		fi
	done
	"$plc" serve --db "$db" --listen "127.0.0.1:$port" --log-level warn >"$work/serve-$name.log" 2>&1 &
	server_pid=$!
	server_url=http://127.0.0.1:$port
	for i in $(seq 300); do
		if curl -fs "$server_url/_health" >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$server_pid" 2>/dev/null || {
			server_pid=""
			fail "plc serve on $name exited at start" "$work/serve-$name.log"
		}
		sleep 0.1
	done
	fail "plc serve on $name did not answer /_health within 30s" "$work/serve-$name.log"
}

stop_server() {
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=""
}

# resolve KEY DB NAME: serve DB, bench resolve, record req/s and latencies.
declare -A R
resolve() {
	local key=$1 db=$2 name=$3 out=$work/resolve-$3.out rc=0
	start_server "$db" "$name"
	log "$name: bench resolve ($REQUESTS requests, $CONCURRENCY connections)"
	run "$plc" bench resolve --url "$server_url" --requests "$REQUESTS" --concurrency "$CONCURRENCY" >"$out" 2>"$work/resolve-$name.err" || rc=$?
	stop_server
	cat "$out" >&2
	R[$key/rps]=$(awk '/^throughput/ { print $2 }' "$out")
	[ -n "${R[$key/rps]}" ] || fail "bench resolve on $name failed (exit $rc)" "$work/resolve-$name.err" "$work/serve-$name.log"
	# Tombstoned DIDs answer 404 and count as failed requests (bench resolve
	# then exits 1); more than a few percent means something else is wrong.
	R[$key/failed]=$(sed -nE 's/^requests .*\(([0-9]+) failed\).*/\1/p' "$out")
	if [ "${R[$key/failed]:-0}" -gt $((REQUESTS / 20)) ]; then
		fail "bench resolve on $name: ${R[$key/failed]} of $REQUESTS requests failed" "$work/resolve-$name.err" "$work/serve-$name.log"
	fi
	R[$key/p50]=$(dur_ms "$(awk '/^latency/ { print $3 }' "$out")")
	R[$key/p99]=$(dur_ms "$(awk '/^latency/ { print $5 }' "$out")")
}

# do_import KEY DB NAME CORPUS N: plc import under /usr/bin/time -v.
do_import() {
	local key=$1 db=$2 name=$3 corpus=$4 n=$5 rc=0
	local out=$work/import-$name.out err=$work/import-$name.err tv=$work/import-$name.time
	log "$name: plc import"
	run /usr/bin/time -v -o "$tv" "$plc" import --db "$db" "$corpus" >"$out" 2>"$err" || rc=$?
	[ "$rc" = 0 ] || fail "plc import into $name failed (exit $rc)" "$err" "$out"
	cat "$out" >&2
	local rate imported rejected
	rate=$(sed -nE 's/.* ([0-9.]+) ops\/s.*/\1/p' "$out" | tail -n 1)
	if [ -z "$rate" ]; then
		rate=$(div "$n" "$(wall_s "$tv")" %.0f)
		log "$name: no rate in the import summary; using $n / wall clock = $rate ops/s"
	fi
	imported=$(sed -nE 's/.* ([0-9]+) imported.*/\1/p' "$out" | tail -n 1)
	rejected=$(sed -nE 's/.* ([0-9]+) rejected.*/\1/p' "$out" | tail -n 1)
	if [ -n "$imported" ] && [ "$imported" != "$n" ]; then
		log "warning: $name: $imported of $n ops imported (${rejected:-?} rejected)"
	fi
	R[$key/import]=$rate
	R[$key/rss]=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f\n", $2 / 1024 }' "$tv")
	R[$key/wall]=$(wall_s "$tv")
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs || true)
log "plc $version; $(nproc) cores, ${cpu:-unknown CPU}; sizes: ${sizes[*]}"

for n in "${sizes[@]}"; do
	corpus=$CORPUS_DIR/corpus-$n.jsonl
	if [ ! -s "$corpus" ]; then
		log "generating $corpus"
		partial_corpus=$corpus.partial.$$
		run "$plc" bench gen --ops "$n" --seed 1 --out "$partial_corpus" 2>"$work/gen.err" ||
			fail "plc bench gen --ops $n failed" "$work/gen.err"
		mv "$partial_corpus" "$corpus"
		partial_corpus=""
	fi

	# The validator and its bound.
	log "$n: plc bench verify $corpus"
	out=$work/verify-$n.out
	run "$plc" bench verify "$corpus" >"$out" 2>"$work/verify-$n.err" || fail "plc bench verify $corpus failed" "$work/verify-$n.err" "$out"
	cat "$out" >&2
	R[$n/validator]=$(awk '/^validator/ { print $2 }' "$out")
	R[$n/bound]=$(awk '/^signature bound/ { print $3 }' "$out")
	R[$n/vratio]=$(awk '/^ratio/ { print $2 }' "$out")
	[ -n "${R[$n/validator]}" ] && [ -n "${R[$n/bound]}" ] || fail "could not read bench verify's output" "$out"

	# SQLite.
	name=sqlite-$n
	file=$work/$name.sqlite
	rm -f "$file" "$file-wal" "$file-shm"
	do_import "$n/sqlite" "$file" "$name" "$corpus" "$n"
	# Opening and closing the database again checkpoints what is left in the WAL.
	"$plc" migrate --db "$file" version >/dev/null 2>&1 || log "warning: plc migrate version on $file failed"
	bytes=0
	for f in "$file" "$file-wal" "$file-shm"; do
		if [ -e "$f" ]; then
			bytes=$((bytes + $(stat -c %s "$f")))
		fi
	done
	R[$n/sqlite/bytes]=$bytes
	resolve "$n/sqlite" "$file" "$name"
	rm -f "$file" "$file-wal" "$file-shm"

	# PostgreSQL.
	name=postgres-$n
	ours=plc_scale_$n
	ref=plc_scale_ref_$n
	fresh_db "$ours"
	fresh_db "$ref"
	do_import "$n/postgres" "$(pg_url "$ours")" "$name" "$corpus" "$n"
	R[$n/postgres/bytes]=$(psql_q "$(pg_url "$ours")" "VACUUM ANALYZE" \
		"SELECT COALESCE(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_catalog.pg_statio_user_tables") ||
		die "could not measure the size of database $ours"
	log "$name: scripts/refsize (the corpus in the reference's schema)"
	run "$work/refsize" -ref "$(pg_url "$ref")" -ours "$(pg_url "$ours")" "$corpus" >"$work/refsize-$n.out" 2>"$work/refsize-$n.err" ||
		fail "scripts/refsize failed" "$work/refsize-$n.err" "$work/refsize-$n.out"
	cat "$work/refsize-$n.out" >&2
	R[$n/refbytes]=$(awk '/^reference schema/ { print $3 }' "$work/refsize-$n.out")
	[ -n "${R[$n/refbytes]}" ] || fail "could not read scripts/refsize's output" "$work/refsize-$n.out"
	drop_db "$ref"
	resolve "$n/postgres" "$(pg_url "$ours")" "$name"
	drop_db "$ours"
done

# The table.
echo
echo "plc $version; $(nproc) cores, ${cpu:-unknown CPU}; $(date -u +%Y-%m-%d); corpora: plc bench gen --ops N --seed 1;"
echo "bench resolve: $REQUESTS requests, $CONCURRENCY connections. Bound: bench verify's signature bound (all cores); \"failed\": non-200 answers (tombstoned DIDs)."
echo
echo "| ops | backend | validator ops/s | ÷ bound | import ops/s | import ÷ bound | peak RSS | bytes/op | reference bytes/op | ÷ reference | resolve req/s | p50 | p99 | failed |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in "${sizes[@]}"; do
	for b in sqlite postgres; do
		k=$n/$b
		bpo=$(div "${R[$k/bytes]}" "$n" %.0f)
		if [ "$b" = postgres ]; then
			refbpo=$(div "${R[$n/refbytes]}" "$n" %.0f)
			refratio=$(div "${R[$k/bytes]}" "${R[$n/refbytes]}")
		else
			refbpo=-
			refratio=-
		fi
		printf '| %s | %s | %s | %s | %s | %s | %s MB | %s | %s | %s | %s | %s ms | %s ms | %s |\n' \
			"$(num "$n")" "$b" "$(num "${R[$n/validator]}")" "${R[$n/vratio]}" \
			"$(num "${R[$k/import]}")" "$(div "${R[$k/import]}" "${R[$n/bound]}")" \
			"$(num "${R[$k/rss]}")" "$(num "$bpo")" "$(num "$refbpo")" "$refratio" \
			"$(num "${R[$k/rps]}")" "${R[$k/p50]}" "${R[$k/p99]}" "${R[$k/failed]:-0}"
	done
done
last=${sizes[${#sizes[@]} - 1]}
echo
echo "Projected import of 80M ops at the $(num "$last")-op rate:"
for b in sqlite postgres; do
	echo "- $b: $(div 80000000 "$(LC_ALL=C awk -v r="${R[$last/$b/import]}" 'BEGIN { print r * 3600 }')" %.1f) h ($(num "${R[$last/$b/import]}") ops/s)"
done
