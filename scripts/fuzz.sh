#!/usr/bin/env bash
# libFuzzer harnesses of the C parser/loader (fuzz/README.md), built with Debian's clang and
# -fsanitize=fuzzer,address,undefined (every UBSan report is fatal).
#
#   scripts/fuzz.sh build             build/fuzz/bin/fuzz_{etm,scheme,state}
#   scripts/fuzz.sh replay            run the committed regression corpus fuzz/corpus/<target>/
#                                     once through each harness (make test does this)
#   scripts/fuzz.sh run [RUNS]        seed corpora from real exported files (fuzz/make_seeds.py),
#                                     then RUNS (default 1000000) executions per target; new
#                                     coverage goes to build/fuzz/corpus/<target>/, crashes to
#                                     build/fuzz/crashes/<target>/; figures in build/bench/fuzz.json
#
# Environment: CLANG (default clang), PYTHON (default .venv/bin/python), FUZZ_JOBS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLANG="${CLANG:-clang}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
MOD="$ROOT/native_modules/edgetune"
OUT="$ROOT/build/fuzz"
BIN="$OUT/bin"
TARGETS=(etm scheme state)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

die() { printf 'fuzz: error: %s\n' "$*" >&2; exit 1; }

build() {
    command -v "$CLANG" >/dev/null || die "$CLANG not found (make setup installs clang)"
    mkdir -p "$BIN"
    local srcs=("$MOD"/*.c "$MOD"/kernels/*.c)  # the engine (no bindings/) and the kernels
    local t
    for t in "${TARGETS[@]}"; do
        local exe="$BIN/fuzz_$t" newest
        newest=$(ls -t "$ROOT/fuzz/fuzz_$t.c" "$ROOT/fuzz/fuzz_common.h" "$ROOT/fuzz/fuzz_mutate.h" "$MOD"/*.[ch] "$MOD"/kernels/*.[ch] \
            "${BASH_SOURCE[0]}" | head -1)
        if [ -x "$exe" ] && [ "$exe" -nt "$newest" ]; then
            continue
        fi
        "$CLANG" -std=c99 -O1 -g -Wall -Wextra -Werror -Wno-unused-function -ffp-contract=off \
            -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
            -DFUZZ_BASE_ETM="\"$ROOT/fuzz/base.etm\"" -I"$MOD" -I"$MOD/kernels" \
            "$ROOT/fuzz/fuzz_$t.c" "${srcs[@]}" -lm -o "$exe.tmp" 2> >(grep -v "^$" >&2 || true) \
            || { echo "fuzz: libFuzzer needs clang's runtime (Debian: clang + libclang-rt-dev or libclang-common-*-dev)" >&2; exit 1; }
        mv "$exe.tmp" "$exe"
        echo "fuzz: built $exe"
    done
}

replay() {
    build
    local t files
    for t in "${TARGETS[@]}"; do
        files=("$ROOT/fuzz/corpus/$t"/*)
        [ -e "${files[0]}" ] || die "empty regression corpus fuzz/corpus/$t"
        "$BIN/fuzz_$t" -runs=1 "${files[@]}" >"$OUT/replay_$t.log" 2>&1 \
            || { tail -50 "$OUT/replay_$t.log" >&2; die "fuzz_$t failed on the regression corpus (log: $OUT/replay_$t.log)"; }
        echo "fuzz: $t: ${#files[@]} regression inputs OK"
    done
}

run() {
    local runs="${1:-1000000}"
    build
    rm -rf "$OUT/seeds"
    (cd "$ROOT" && "$PYTHON" -m fuzz.make_seeds "$OUT/seeds")
    local t json="" status=0
    for t in "${TARGETS[@]}"; do
        local corpus="$OUT/corpus/$t" crashes="$OUT/crashes/$t" log="$OUT/run_$t.log"
        mkdir -p "$corpus" "$crashes"
        cp -n "$OUT/seeds/$t"/* "$ROOT/fuzz/corpus/$t"/* "$corpus"/ 2>/dev/null || true
        local rc=0
        "$BIN/fuzz_$t" -runs="$runs" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 -max_len=16384 \
            -artifact_prefix="$crashes/" "$corpus" >"$log" 2>&1 || rc=$?
        local execs ncrash ncorpus
        execs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log" | tail -1)
        ncrash=$(find "$crashes" -type f | wc -l)
        ncorpus=$(find "$corpus" -type f | wc -l)
        echo "fuzz: $t: ${execs:-0} executions, exit $rc, $ncrash crash files, corpus $ncorpus (log: $log)"
        if [ "$rc" -ne 0 ] || [ "$ncrash" -ne 0 ]; then
            status=1
            tail -40 "$log" >&2
        fi
        json+="${json:+, }\"$t\": {\"executions\": ${execs:-0}, \"exit_code\": $rc, \"crashes\": $ncrash, \"corpus\": $ncorpus, \"seeds\": $(find "$OUT/seeds/$t" -type f | wc -l)}"
    done
    mkdir -p "$ROOT/build/bench"
    printf '{"runs_per_target": %s, "clang": "%s", "targets": {%s}}\n' "$runs" \
        "$("$CLANG" --version | head -1)" "$json" >"$ROOT/build/bench/fuzz.json"
    echo "fuzz: wrote build/bench/fuzz.json"
    return "$status"
}

case "${1:-}" in
    build) build ;;
    replay) replay ;;
    run) shift; run "$@" ;;
    *) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
