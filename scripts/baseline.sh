#!/usr/bin/env bash
# Records what a build of the host writes, to prove a refactoring changed none of it:
#   scripts/baseline.sh BINARY OUT_DIR
# Runs `run --input --once` over data/stock_data_sample.json and a 10,000-tick simulated file,
# aggregation off and on, each against a fresh local lake and a recording stand-in Elasticsearch
# (scripts/es_recorder.py). OUT_DIR/<case>/ gets: summary.json (the CLI's line, its timing-free
# fields), lake.sha256 (every lake file but the aggregate's timed checkpoints), bulk.sorted (every
# bulk action and document, sorted: how the items are grouped into requests depends on timing;
# the metrics documents, which carry the wall clock, are left out).
# Compare two builds with `diff -r OUT_A OUT_B`.
set -euo pipefail
bin=$(realpath "$1")
out=$(realpath -m "$2")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$out"
# A fixed path: the input's checkpoint is named after it.
sim=${TMPDIR:-/tmp}/stockpipe-baseline-sim-10000.json
"$bin" simulate --ticks 10000 --instruments 50 --seed 7 --out "$sim" 2>/dev/null
for input in sample sim; do
    case $input in
        sample) file="$root/data/stock_data_sample.json" ;;
        sim) file="$sim" ;;
    esac
    for agg in false true; do
        case_dir="$out/$input-aggregate-$agg"
        run="$work/$input-$agg"
        mkdir -p "$case_dir" "$run"
        python3 "$root/scripts/es_recorder.py" "$run/port" "$run/bulk" &
        recorder=$!
        for _ in $(seq 50); do [ -s "$run/port" ] && break; sleep 0.1; done
        (cd "$run" && STOCKPIPE_LAKE_URL="$run/lake" \
            STOCKPIPE_ELASTICSEARCH_URL="http://127.0.0.1:$(cat "$run/port")" \
            STOCKPIPE_AGGREGATE_ENABLED=$agg STOCKPIPE_ELASTICSEARCH_METRICS_INTERVAL_MS=0 \
            "$bin" run --input "$file" --once >"$run/stdout" 2>"$run/stderr") || {
            echo "run failed: $input aggregate=$agg" >&2; tail -20 "$run/stderr" >&2; exit 1; }
        kill $recorder; wait $recorder 2>/dev/null || true
        python3 - "$run/stdout" >"$case_dir/summary.json" <<'PY'
import json, sys
line = [l for l in open(sys.argv[1]) if l.startswith("{")][-1]
summary = json.loads(line)
for timed in ("guest_calls", "elapsed_s", "ticks_per_s"):
    summary.pop(timed, None)
print(json.dumps(summary, indent=1, sort_keys=True))
PY
        (cd "$run/lake" && find . -type f ! -path './_state/*' -print0 | sort -z | xargs -0 sha256sum) >"$case_dir/lake.sha256"
        (cd "$run/lake" && find . -type f | sort) >"$case_dir/lake.files"
        python3 - "$run/bulk" >"$case_dir/bulk.sorted" <<'PY'
import sys
lines = [l for l in open(sys.argv[1], "rb").read().split(b"\n") if l.strip()]
pairs = [a + b"\n" + d for a, d in zip(lines[0::2], lines[1::2]) if b"stockpipe-metrics" not in a]
sys.stdout.buffer.write(b"\n".join(sorted(pairs)) + b"\n")
PY
        echo "$input aggregate=$agg: $(wc -l <"$case_dir/lake.sha256") lake files, $(grep -c '^{"index\|^{"create' "$case_dir/bulk.sorted" || true) bulk items"
    done
done
