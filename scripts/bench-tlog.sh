#!/usr/bin/env bash
# bench-tlog.sh BASE_REV [ROUNDS]
#
# What the transparency log costs the write path: builds plc at BASE_REV
# (the last revision without tree hashes) and at the working tree, then, in
# ROUNDS alternating rounds (default 3), measures with each binary
#   - plc bench import of CORPUS (default /tmp/corpus-100000.jsonl) into a
#     fresh SQLite database, and into a fresh PostgreSQL database when
#     PLC_TEST_POSTGRES is set (run under scripts/with-postgres.sh);
#   - plc bench write of OPS new DIDs (default 50000, 16 in flight) through
#     plc serve on a fresh SQLite database (and PostgreSQL one).
# The head binary signs checkpoints with a key it creates beside its
# database. Each line printed is "<what> <base|head> <ops/s>"; compare the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: $0 BASE_REV [ROUNDS]}
rounds=${2:-3}
CORPUS=${CORPUS:-/tmp/corpus-100000.jsonl}
OPS=${OPS:-50000}
[ -f "$CORPUS" ] || { echo "no corpus $CORPUS: plc bench gen --ops 100000 --seed 1 --out $CORPUS" >&2; exit 2; }

work=$(mktemp -d /tmp/plctlog.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; git worktree remove --force "$work/src" 2>/dev/null || true; rm -rf "$work"' EXIT
git worktree add -q --detach "$work/src" "$base"
(cd "$work/src" && CGO_ENABLED=0 go build -trimpath -o "$work/base" ./cmd/plc)
CGO_ENABLED=0 go build -trimpath -o "$work/head" ./cmd/plc

fresh_pg() { # name -> a new database on the cluster, printed as a URL
	local name="tlogbench_$$_$1" path=${PLC_TEST_POSTGRES%%\?*} query=${PLC_TEST_POSTGRES#*\?}
	psql -X -q -d "$PLC_TEST_POSTGRES" -c "CREATE DATABASE $name" >/dev/null
	echo "${path%/*}/$name?$query"
}

import_rate() { # binary db -> ops/s
	"$1" bench import --db "$2" "$CORPUS" 2>&1 | awk '/^import /{print $2}'
}

write_rate() { # binary db -> ops/s
	local db=$2 port=$((20000 + RANDOM % 20000))
	"$1" serve --db "$db" --listen 127.0.0.1:$port --log-level warn --no-did-rate-limit >"$work/serve.log" 2>&1 &
	local pid=$!
	for _ in $(seq 100); do
		curl -fs "http://127.0.0.1:$port/_health" >/dev/null && break
		sleep 0.1
	done
	"$1" bench write --url "http://127.0.0.1:$port" --ops "$OPS" --concurrency 16 2>&1 |
		awk '/ops\/s/{for(i=1;i<=NF;i++) if($i=="ops/s"){print $(i-1); exit}}'
	kill $pid
	wait $pid 2>/dev/null || true
}

echo "== $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); base $(git rev-parse --short "$base"), head $(git rev-parse --short HEAD)$(git diff --quiet || echo +changes)"
for r in $(seq "$rounds"); do
	for b in base head; do
		rm -f "$work/i.sqlite" "$work/i.sqlite"-*
		echo "import-sqlite $b $(import_rate "$work/$b" "$work/i.sqlite")"
		if [ -n "${PLC_TEST_POSTGRES:-}" ]; then
			echo "import-postgres $b $(import_rate "$work/$b" "$(fresh_pg "i$b$r")")"
		fi
		rm -f "$work/w.sqlite" "$work/w.sqlite"-*
		echo "write-sqlite $b $(write_rate "$work/$b" "$work/w.sqlite")"
		if [ -n "${PLC_TEST_POSTGRES:-}" ]; then
			echo "write-postgres $b $(write_rate "$work/$b" "$(fresh_pg "w$b$r")")"
		fi
	done
done
