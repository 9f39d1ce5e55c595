#!/usr/bin/env bash
# bench-mirror.sh [OPS]
#
# The mirror's backfill rate beside plc import's, for the same corpus on
# the same machine in one run (default 1000000 ops):
#
#   1. `plc bench import` of the corpus into a fresh SQLite file (the
#      upstream): import ops/s, the signature bound measured in the same
#      run, peak RSS;
#   2. `plc serve` on that file (the upstream, on 127.0.0.1), once its
#      handle index has caught up with the import;
#   3. `plc mirror --once` from it into a fresh database, under
#      /usr/bin/time -v: backfill ops/s (ops ÷ the time until it says it
#      caught up; to its exit beside it), peak RSS. The
#      mirror's database is SQLite, or PostgreSQL when PLC_TEST_POSTGRES is
#      set (run under scripts/with-postgres.sh) and BACKEND=postgres.
#
# The corpus is $CORPUS_DIR/corpus-N.jsonl (default /tmp), generated with
# `plc bench gen --ops N --seed 1` when it does not exist; with
# SHAPE=longchain it is $CORPUS_DIR/corpus-longchain-N.jsonl, one DID of N
# ops (`--shape longchain`). The upstream and
# the mirror share the machine's cores: the figure includes serving the
# pages. With UPSTREAM=file the upstream is instead `plc bench upstream`,
# the upstream's export (`plc export`) served from the file (only an index
# of its lines in memory), which costs next to no CPU or memory: the
# mirror's backfill measured on its own, as a mirror whose upstream runs
# on another machine.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-1000000}
CORPUS_DIR=${CORPUS_DIR:-/tmp}
BACKEND=${BACKEND:-sqlite}
PORT=${PORT:-25821}
SHAPE=${SHAPE:-directory}
UPSTREAM=${UPSTREAM:-serve}
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bench-mirror: OPS must be a positive integer" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "bench-mirror: /usr/bin/time not found (apt-get install time)" >&2; exit 1; }

work=$(mktemp -d /tmp/plcmirror.XXXXXX)
server_pid=""
cleanup() {
	local rc=$?
	[ -n "$server_pid" ] && { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
	if [ "$BACKEND" = postgres ] && [ -n "${mirror_db:-}" ]; then
		psql -X -q -d "${PLC_TEST_POSTGRES%/*}/postgres?${PLC_TEST_POSTGRES#*\?}" -c "DROP DATABASE IF EXISTS benchmirror WITH (FORCE)" >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT

go build -o "$work/plc" ./cmd/plc
plc=$work/plc
corpus=$CORPUS_DIR/corpus-$n.jsonl
[ "$SHAPE" = directory ] || corpus=$CORPUS_DIR/corpus-$SHAPE-$n.jsonl
if [ ! -s "$corpus" ]; then
	echo "bench-mirror: generating $corpus" >&2
	"$plc" bench gen --ops "$n" --seed 1 --shape "$SHAPE" --out "$corpus.partial"
	mv "$corpus.partial" "$corpus"
fi

echo "bench-mirror: plc import of $n ops into the upstream" >&2
"$plc" bench import --db "$work/up.sqlite" "$corpus" | tee "$work/import.txt" >&2
import_rate=$(awk '$1 == "import" {print $2}' "$work/import.txt")
bound=$(awk '$1 == "signature" {print $3}' "$work/import.txt")
import_rss=$(awk '$1 == "peak" {print $3}' "$work/import.txt")

case $UPSTREAM in
serve)
	"$plc" serve --db "$work/up.sqlite" --listen "127.0.0.1:$PORT" --log-level warn 2>"$work/serve.log" &
	server_pid=$!
	;;
file)
	"$plc" export --db "$work/up.sqlite" --out "$work/up.jsonl"
	"$plc" bench upstream --listen "127.0.0.1:$PORT" "$work/up.jsonl" >/dev/null 2>"$work/serve.log" &
	server_pid=$!
	;;
*) echo "bench-mirror: UPSTREAM must be serve or file" >&2; exit 2 ;;
esac
# bench upstream reads its whole file before it listens.
for i in $(seq 3000); do
	curl -sf "http://127.0.0.1:$PORT/_health" >/dev/null && break
	[ "$i" = 3000 ] && { cat "$work/serve.log" >&2; echo "bench-mirror: the upstream did not start within 5 min" >&2; exit 1; }
	sleep 0.1
done
# plc serve fills in its handle index after the import (a production
# upstream has it): wait for that, or its work would be measured as the
# mirror's.
if [ "$UPSTREAM" = serve ]; then
	for i in $(seq 18000); do
		out=$(curl -fs "http://127.0.0.1:$PORT/_lookup/handle/settle.example.com" 2>/dev/null) &&
			[[ $out != *'"indexBehind"'* ]] && break
		[ "$i" = 18000 ] && { echo "bench-mirror: the upstream's handle index did not catch up within 30 min" >&2; exit 1; }
		sleep 0.1
	done
fi

case $BACKEND in
sqlite) mirror_db=$work/mirror.sqlite ;;
postgres)
	: "${PLC_TEST_POSTGRES:?BACKEND=postgres: run under scripts/with-postgres.sh}"
	admin="${PLC_TEST_POSTGRES%%\?*}"
	query="${PLC_TEST_POSTGRES#*\?}"
	psql -X -q -d "${admin%/*}/postgres?$query" -c "DROP DATABASE IF EXISTS benchmirror WITH (FORCE)" -c "CREATE DATABASE benchmirror" >/dev/null
	mirror_db="${admin%/*}/benchmirror?$query"
	;;
*) echo "bench-mirror: BACKEND must be sqlite or postgres" >&2; exit 2 ;;
esac

echo "bench-mirror: plc mirror --once from the upstream ($BACKEND)" >&2
# The backfill ends when the mirror says it caught up (the moment its
# stdout shows the line), as plc bench import's rate ends with the import:
# closing the database after it (SQLite's last checkpoint of its WAL into
# the file) is not the backfill's work. The whole run, to the exit, is
# shown beside it.
start=$(date +%s.%N)
/usr/bin/time -v "$plc" mirror --once --upstream "http://127.0.0.1:$PORT" --db "$mirror_db" \
	--listen 127.0.0.1:0 --audit-interval 0 --log-level warn 2>"$work/mirror.err" |
	while IFS= read -r line; do
		[[ $line == "caught up with "* ]] && date +%s.%N >"$work/caught"
		printf '%s\n' "$line"
	done >"$work/mirror.out" ||
	{ tail -20 "$work/mirror.err" >&2; exit 1; }
end=$(date +%s.%N)
cat "$work/mirror.out" >&2
[ -s "$work/caught" ] || { echo "bench-mirror: the mirror exited without saying it caught up" >&2; exit 1; }
caught=$(cat "$work/caught")
mirror_rss=$(awk -F': ' '/Maximum resident set size/ {printf "%d", $2/1024}' "$work/mirror.err")
awk -v n="$n" -v s="$start" -v c="$caught" -v e="$end" -v ir="$import_rate" -v b="$bound" -v irss="$import_rss" -v mrss="$mirror_rss" -v be="$BACKEND" -v up="$UPSTREAM" 'BEGIN {
	mr = n / (c - s)
	printf "| backend | upstream | ops | plc import | plc mirror --once, to caught up | to its exit | mirror ÷ import | mirror ÷ bound | import RSS | mirror RSS |\n"
	printf "|---|---|---|---|---|---|---|---|---|---|\n"
	printf "| %s | %s | %d | %.0f ops/s | %.0f ops/s | %.0f ops/s | %.2f | %.2f | %s MB | %s MB |\n", be, up, n, ir, mr, n / (e - s), mr / ir, mr / b, irss, mrss
}'
