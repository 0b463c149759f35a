#!/usr/bin/env bash
# `make firmware BOARD=qemu-xtensa`: MicroPython 1.25's core for qemu-system-xtensa -M sim
# -cpu de233_fpu (an Xtensa LX7 like the ESP32-S3's, without MUL32_HIGH), built with upstream
# LLVM through scripts/xtensa/xtensawin-gcc -> build/qemu-xtensa/firmware.elf. It has no edgetune
# module built in: it loads build/natmod/xtensawin-qemu/edgetune.mpy (make natmod
# ARCH=xtensawin) from its filesystem. Run it with `edgetune emulate --board qemu-xtensa`.
# Environment: MICROPY_DIR (default build/micropython), JOBS (default 2), OUT (default
# build/qemu-xtensa).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MICROPY_DIR="${MICROPY_DIR:-$ROOT/build/micropython}"
MICROPY_DIR="$(cd "$MICROPY_DIR" && pwd)"
OUT="${OUT:-$ROOT/build/qemu-xtensa}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
JOBS="${JOBS:-2}"

log() { printf 'firmware qemu-xtensa: %s\n' "$*"; }
die() { printf 'firmware qemu-xtensa: error: %s\n' "$*" >&2; exit 1; }

[ -e "$MICROPY_DIR/py/py.mk" ] || die "no MicroPython source in $MICROPY_DIR; run: make setup"
for tool in clang-22 llvm-mc-22 xtensa-lx106-elf-ld; do
    command -v "$tool" >/dev/null || die "$tool missing; run: make setup (apt: clang-22 llvm-22 binutils-xtensa-lx106 picolibc-xtensa-lx106-elf)"
done

log "make -j$JOBS"
make -C "$ROOT/boards/qemu-xtensa" TOP="$MICROPY_DIR" BUILD="$OUT/obj" BOARD=qemu-xtensa -j"$JOBS" >"$OUT/make.log" 2>&1 \
    || { grep -B2 -A8 -m5 'rror' "$OUT/make.log" || tail -40 "$OUT/make.log"; die "build failed (log: $OUT/make.log)"; }
cmp -s "$OUT/obj/firmware.elf" "$OUT/firmware.elf" || { cp "$OUT/obj/firmware.elf" "$OUT/firmware.elf.tmp" && mv "$OUT/firmware.elf.tmp" "$OUT/firmware.elf"; }
read -r text data bss < <(xtensa-lx106-elf-size "$OUT/firmware.elf" | awk 'NR == 2 { print $1, $2, $3 }')
log "$OUT/firmware.elf: text $text, data $data, bss $bss bytes"
