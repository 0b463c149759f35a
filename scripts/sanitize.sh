#!/usr/bin/env bash
# `make test-sanitize`: the unix port with our module built with AddressSanitizer +
# UndefinedBehaviorSanitizer (build/unix-asan/micropython), then the unix-port tests that
# exercise the module run on it (EDGETUNE_MICROPYTHON points the tests at it). Every sanitizer
# report is fatal (the process exits non-zero, the test fails); reports also go to
# build/unix-asan/reports/ and their count into build/bench/sanitize.json.
#
#   scripts/sanitize.sh build     build/unix-asan/micropython only
#   scripts/sanitize.sh test      build, then run the test subset (SANITIZE_TESTS overrides it)
#
# MicroPython's conservative GC scans whole stack frames (including ASan's redzones), so the
# stack instrumentation is off (-fsanitize-address-use-after-scope off, no stack redzones via
# asan-stack=0); heap, global and UB checks stay on.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MICROPY_DIR="${MICROPY_DIR:-$ROOT/build/micropython}"
OUT="$ROOT/build/unix-asan"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
JOBS="${JOBS:-2}"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-sanitize=nonnull-attribute -fno-omit-frame-pointer"
TESTS_DEFAULT="tests/unix/test_unix_module.py tests/unix/test_unix_malformed.py tests/unix/test_unix_limits.py tests/unix/test_unix_train.py tests/unix/test_bad_inputs.py tests/unix/test_hostile.py tests/unix/test_refit_stats.py tests/unix/test_validation_holes.py tests/unix/test_power_cut.py tests/unix/test_memory_pressure.py tests/unix/test_device_app.py"
export ASAN_OPTIONS="detect_leaks=0:detect_stack_use_after_return=0:abort_on_error=0:exitcode=86:log_path=$OUT/reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$OUT/reports/ubsan"

if [ -z "${MICROPY_GIT_TAG:-}" ] && [ ! -e "$MICROPY_DIR/.git" ]; then
    MICROPY_GIT_TAG="v$(awk '/^#define MICROPY_VERSION_(MAJOR|MINOR|MICRO) / { v = v (v == "" ? "" : ".") $3 } END { print v }' "$MICROPY_DIR/py/mpconfig.h")"
    export MICROPY_GIT_TAG MICROPY_GIT_HASH=debian-source
fi

build() {
    test -e "$MICROPY_DIR/py/mpconfig.h" || { echo "sanitize: no MicroPython source at $MICROPY_DIR; run: make setup" >&2; exit 1; }
    mkdir -p "$OUT/reports"
    make -C "$MICROPY_DIR/ports/unix" -j"$JOBS" VARIANT=standard MICROPY_PY_BTREE=0 MICROPY_PY_SSL=0 \
        MICROPY_PY_FFI=0 FROZEN_MANIFEST= USER_C_MODULES="$ROOT/native_modules" BUILD="$OUT/obj" STRIP= \
        COPT="-O1 -g" CFLAGS_EXTRA="$SAN --param asan-stack=0 -DMICROPY_NLR_SETJMP=1 -DEDGETUNE_SANITIZE_HEAP=1 -Wno-clobbered" LDFLAGS_EXTRA="$SAN" >"$OUT/build.log" 2>&1 \
        || { tail -30 "$OUT/build.log" >&2; echo "sanitize: build failed (log: $OUT/build.log)" >&2; exit 1; }
    cp "$OUT/obj/micropython" "$OUT/micropython.tmp" && mv "$OUT/micropython.tmp" "$OUT/micropython"
    echo "sanitize: $OUT/micropython"
}

run_tests() {
    build
    rm -f "$OUT"/reports/*
    local rc=0
    # shellcheck disable=SC2086
    (cd "$ROOT" && EDGETUNE_MICROPYTHON="$OUT/micropython" "$PYTHON" -m pytest -q -ra \
        ${SANITIZE_TESTS:-$TESTS_DEFAULT} -p no:cacheprovider) || rc=$?
    local reports
    reports=$(find "$OUT/reports" -type f | wc -l)
    mkdir -p "$ROOT/build/bench"
    printf '{"binary": "build/unix-asan/micropython", "sanitizers": "address,undefined", "tests": "%s", "pytest_exit": %d, "sanitizer_reports": %d}\n' \
        "${SANITIZE_TESTS:-$TESTS_DEFAULT}" "$rc" "$reports" >"$ROOT/build/bench/sanitize.json"
    if [ "$reports" -ne 0 ]; then
        echo "sanitize: $reports sanitizer report(s) in $OUT/reports:" >&2
        head -40 "$OUT"/reports/* >&2
        rc=1
    fi
    echo "sanitize: pytest exit $rc, $reports sanitizer reports (build/bench/sanitize.json)"
    return "$rc"
}

case "${1:-}" in
    build) build ;;
    test) run_tests ;;
    *) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
