#!/usr/bin/env bash
# Coverage-guided fuzzing of FieldSync's peer-bytes decoders and the session (docs/fuzzing.md).
#
#   Sources/fieldsync-bench/fuzz.sh                 every target for 60 s each (FUZZ_SECONDS)
#   Sources/fieldsync-bench/fuzz.sh session beacon  only these targets
#   FUZZ_RUNS=10000000 Sources/fieldsync-bench/fuzz.sh change   a fixed number of executions instead
#
# Builds fieldsync-fuzz in release with libFuzzer and AddressSanitizer (LeakSanitizer included) under
# .build/fuzz, writes the seed corpora from Protocols/vectors, then runs each target in turn with:
#   -rss_limit_mb    FUZZ_RSS_MB    (2048): the process's memory bound
#   -malloc_limit_mb FUZZ_MALLOC_MB (64):   no single allocation above this (the allocation bound)
#   -timeout         FUZZ_TIMEOUT   (10 s): no input may run longer (the hang bound)
# Corpora grow in .build/fuzz-work/corpus/TARGET (kept between runs), logs go to
# .build/fuzz-work/logs/TARGET.log, crashing inputs to .build/fuzz-work/artifacts/. The script exits
# non-zero if any target found a crash, a leak, a timeout or an allocation over the bound.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${FUZZ_SECONDS:-60}
runs=${FUZZ_RUNS:-}
rss=${FUZZ_RSS_MB:-2048}
malloc=${FUZZ_MALLOC_MB:-64}
timeout=${FUZZ_TIMEOUT:-10}
build=.build/fuzz
work=.build/fuzz-work

swift build -c release --build-path "$build" --product fieldsync-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFIELDSYNC_LIBFUZZER >&2
bin="$build/release/fieldsync-fuzz"

mkdir -p "$work/logs" "$work/artifacts"
rm -rf "$work/seeds"
"$bin" seeds "$work/seeds" Protocols/vectors >&2

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then mapfile -t targets < <("$bin" list); fi

if [ -n "$runs" ]; then bound=(-runs="$runs"); else bound=(-max_total_time="$seconds"); fi
status=0
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t"
    echo "== $t" >&2
    if "$bin" run "$t" "${bound[@]}" -rss_limit_mb="$rss" -malloc_limit_mb="$malloc" -timeout="$timeout" \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/$t-" \
        "$work/corpus/$t" "$work/seeds/$t" >"$work/logs/$t.log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    # One summary line per target: executions, speed, coverage (the last status line libFuzzer printed).
    execs=$(awk '/stat::number_of_executed_units:/ {n = $2} END {print n}' "$work/logs/$t.log")
    speed=$(awk '/stat::average_exec_per_sec:/ {n = $2} END {print n}' "$work/logs/$t.log")
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$work/logs/$t.log" | tail -1)
    echo "$t: $result, ${execs:-?} executions, ${speed:-?} exec/s, ${cov:-no coverage line} (log: $work/logs/$t.log)"
done
exit $status
