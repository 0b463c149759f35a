#!/usr/bin/env bash
# `make firmware BOARD=rp2040`: MicroPython RPI_PICO firmware with the edgetune C module and
# boards/rp2040/manifest.py frozen in → build/rp2040/firmware.uf2 (and firmware.elf).
# Calls the rp2 port's CMake directly (its Makefile wrapper insists on a git submodule
# checkout of pico-sdk); the dependencies come from scripts/rp2040_deps.sh.
# Environment: MICROPY_DIR (default build/micropython), JOBS (default 2).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MICROPY_DIR="${MICROPY_DIR:-$ROOT/build/micropython}"
MICROPY_DIR="$(cd "$MICROPY_DIR" && pwd)"
DEPS="$ROOT/build/rp2-deps"
OUT="$ROOT/build/rp2040"
OBJ="$OUT/obj"
JOBS="${JOBS:-2}"
MANIFEST="$ROOT/boards/rp2040/manifest.py"
MODULE="$ROOT/native_modules/edgetune/micropython.cmake"

log() { printf 'firmware rp2040: %s\n' "$*"; }
die() { printf 'firmware rp2040: error: %s\n' "$*" >&2; exit 1; }

[ -e "$MICROPY_DIR/ports/rp2/CMakeLists.txt" ] || die "no MicroPython rp2 port in $MICROPY_DIR; run: make setup"
command -v arm-none-eabi-gcc >/dev/null || die "arm-none-eabi-gcc missing; run: make setup"

JOBS="$JOBS" bash "$ROOT/scripts/rp2040_deps.sh"

# The rp2 port takes tinyusb and mbedtls from $MICROPY_DIR/lib/ (fixed paths). Debian's
# MicroPython source leaves those submodule directories empty: link ours in there, but only
# in our own extraction, never in a user's checkout.
for sub in tinyusb:src/tusb.h mbedtls:include/mbedtls/version.h; do
    name="${sub%%:*}" probe="${sub#*:}"
    [ -e "$MICROPY_DIR/lib/$name/$probe" ] && continue
    if [ "$MICROPY_DIR" = "$ROOT/build/micropython" ]; then
        rmdir "$MICROPY_DIR/lib/$name" 2>/dev/null || rm -f "$MICROPY_DIR/lib/$name"
        ln -s "$DEPS/$name" "$MICROPY_DIR/lib/$name"
    else
        die "$MICROPY_DIR/lib/$name is empty; run: make -C $MICROPY_DIR/ports/rp2 BOARD=RPI_PICO submodules"
    fi
done
if [ -e "$MICROPY_DIR/lib/pico-sdk/pico_sdk_init.cmake" ]; then
    PICO_SDK="$MICROPY_DIR/lib/pico-sdk"
else
    PICO_SDK="$DEPS/pico-sdk"
fi

CMAKE_ARGS=(
    -DMICROPY_BOARD=RPI_PICO
    -DMICROPY_BOARD_DIR="$MICROPY_DIR/ports/rp2/boards/RPI_PICO"
    -DPICO_SDK_PATH_OVERRIDE="$PICO_SDK"
    -Dpicotool_DIR="$DEPS/picotool/lib/cmake/picotool"
    -DMICROPY_LIB_DIR="$DEPS/micropython-lib"
    -DMICROPY_FROZEN_MANIFEST="$MANIFEST"
    -DUSER_C_MODULES="$MODULE"
)
# Configure once; again only when the arguments change. (The module's source glob has
# CONFIGURE_DEPENDS, so new C files are picked up by the build step itself.)
if [ ! -e "$OBJ/Makefile" ] || [ "$(cat "$OBJ/.edgetune-cmake-args" 2>/dev/null)" != "${CMAKE_ARGS[*]}" ]; then
    log "cmake configure"
    rm -rf "$OBJ"
    cmake -S "$MICROPY_DIR/ports/rp2" -B "$OBJ" "${CMAKE_ARGS[@]}" >"$OUT.cmake.log" 2>&1 \
        || { tail -40 "$OUT.cmake.log"; die "cmake configure failed (log: $OUT.cmake.log)"; }
    printf '%s' "${CMAKE_ARGS[*]}" >"$OBJ/.edgetune-cmake-args"
fi
# makemanifest.py does not regenerate frozen_content.c when only the qstr pool changed (a new
# qstr in our module then collides with the frozen enum): regenerate it every build (~1 s).
rm -f "$OBJ/frozen_content.c"
log "make -j$JOBS"
make -C "$OBJ" -j"$JOBS" --no-print-directory >"$OUT.make.log" 2>&1 \
    || { grep -B2 -A8 -m5 'error' "$OUT.make.log" || tail -40 "$OUT.make.log"; die "build failed (log: $OUT.make.log)"; }

cp "$OBJ/firmware.elf" "$OUT/firmware.elf.tmp" && mv "$OUT/firmware.elf.tmp" "$OUT/firmware.elf"
cp "$OBJ/firmware.uf2" "$OUT/firmware.uf2.tmp" && mv "$OUT/firmware.uf2.tmp" "$OUT/firmware.uf2"

# Sizes from the linker's symbols (ports/rp2/memmap_mp_rp2040.ld): flash image = up to
# __flash_binary_end; static RAM = .data + .bss (+ C heap, 0 here) = RAM start .. __GcHeapStart;
# the GC heap is the rest of the 256 KB RAM region.
sym() { printf '%d' "0x$(arm-none-eabi-nm "$OUT/firmware.elf" | awk -v s="$1" '$3 == s { print $1; exit }')"; }
flash=$(( $(sym __flash_binary_end) - 0x10000000 ))
static_ram=$(( $(sym __GcHeapStart) - 0x20000000 ))
heap=$(( $(sym __GcHeapEnd) - $(sym __GcHeapStart) ))
printf '%s\n' "{\"flash_bytes\": $flash, \"static_ram_bytes\": $static_ram, \"gc_heap_bytes\": $heap}" >"$OUT/sizes.json"
log "build/rp2040/firmware.uf2: flash $flash bytes, static RAM $static_ram bytes, GC heap $heap bytes"
