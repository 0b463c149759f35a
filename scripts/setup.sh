#!/usr/bin/env bash
# `make setup`: everything a fresh Debian bookworm machine needs to build and test edgetune.
#
#   1. apt: Debian trixie as a pinned low-priority source (deb + deb-src, priority 100, so
#      nothing installed gets upgraded), then the compilers/emulators we use.
#   2. MicroPython 1.25 source from Debian's source package into build/micropython
#      (skipped when MICROPY_DIR points at the user's own checkout).
#   3. The Python venv at .venv with the host package installed editable.
#   4. The RP2040 build's dependencies (pico-sdk, tinyusb, mbedtls, picotool) from Debian's
#      archive into build/rp2-deps (scripts/rp2040_deps.sh).
#   5. The unix-port firmware with our C module (make firmware BOARD=unix).
#
# Idempotent: every step checks first and does nothing when already done. Runs as root or
# with sudo; needs no stdin (CI=true). Environment knobs:
#   MICROPY_DIR   use this MicroPython checkout instead of downloading one
#   APT_ETC       apt configuration directory (default /etc/apt; for testing this script)
#   SKIP_APT=1    skip the apt step (machine already provisioned by other means)
#   SKIP_RP2040=1    skip the RP2040 dependencies
#   SKIP_FIRMWARE=1  skip building the unix firmware
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APT_ETC="${APT_ETC:-/etc/apt}"
DEFAULT_MICROPY_DIR="$ROOT/build/micropython"
PYTHON="${PYTHON:-python3}"

APT_PACKAGES=(
    build-essential pkg-config libffi-dev python3-venv python3-dev cmake
    # Cortex-M: qemu port (picolibc) and rp2 port / pico-sdk (newlib)
    gcc-arm-none-eabi picolibc-arm-none-eabi libnewlib-arm-none-eabi
    libstdc++-arm-none-eabi-newlib qemu-system-arm
    # picotool (UF2 output for rp2, flashing) links libusb
    libusb-1.0-0-dev
    valgrind clang xz-utils
    # libFuzzer and the sanitizer runtimes (make fuzz, make test-sanitize); only recommended by clang
    libclang-rt-dev
    # ESP32-S3 (xtensawin) without ESP-IDF: upstream LLVM 22 (bookworm-security) compiles C for the
    # Xtensa windowed ABI; picolibc's xtensa headers; the lx106 binutils link bare-metal test images;
    # qemu-system-xtensa (in qemu-system-misc) runs them on an LX7 model
    clang-22 llvm-22 lld-22 picolibc-xtensa-lx106-elf binutils-xtensa-lx106 qemu-system-misc
)

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    SUDO=()
fi
as_root() { "${SUDO[@]}" "$@"; }

# --- 1. apt -------------------------------------------------------------------------------

# Print the archive URI of the machine's Debian bookworm entry (deb822 .sources first, then
# one-line .list format). We never hard-code a mirror: trixie comes from the same archive.
bookworm_uri() {
    local f
    for f in "$APT_ETC"/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk '
            function flush() {
                if (uris != "" && suites ~ /(^|[ \t])bookworm([ \t]|$)/ && !found) {
                    split(uris, u, /[ \t]+/); print u[1]; found = 1
                }
                uris = ""; suites = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            tolower($1) == "uris:"   { sub(/^[^:]*:[ \t]*/, ""); uris = $0 }
            tolower($1) == "suites:" { sub(/^[^:]*:[ \t]*/, ""); suites = $0 }
            END { flush() }
        ' "$f"
    done | head -n1 | grep . && return 0
    for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
        [ -e "$f" ] || continue
        # deb [options] URI suite components...
        sed -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }'
    done | head -n1 | grep . && return 0
    return 1
}

# True when some apt source file already has an entry of TYPE (deb or deb-src) for trixie.
has_trixie_source() {
    local type="$1" f
    for f in "$APT_ETC"/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk -v want="$type" '
            function flush() {
                if (suites ~ /(^|[ \t])trixie([ \t]|$)/ && (" " types " ") ~ (" " want " ")) found = 1
                types = ""; suites = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            tolower($1) == "types:"  { sub(/^[^:]*:[ \t]*/, ""); types = $0 }
            tolower($1) == "suites:" { sub(/^[^:]*:[ \t]*/, ""); suites = $0 }
            END { flush(); exit !found }
        ' "$f" && return 0
    done
    for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
        [ -e "$f" ] || continue
        sed -e 's/\[[^]]*\]//' "$f" | awk -v want="$type" '$1 == want && $3 == "trixie" { f = 1 } END { exit !f }' && return 0
    done
    return 1
}

has_trixie_pin() {
    grep -qs -E '^Pin:[[:space:]]*release[[:space:]].*n=trixie' "$APT_ETC"/preferences "$APT_ETC"/preferences.d/* 2>/dev/null
}

# Adds the trixie source and pin if missing; sets TRIXIE_CHANGED=1 when it wrote anything.
TRIXIE_CHANGED=0
configure_trixie() {
    local uri keyring types=()
    has_trixie_source deb || types+=(deb)
    has_trixie_source deb-src || types+=(deb-src)
    if [ "${#types[@]}" -gt 0 ]; then
        uri="$(bookworm_uri)" || die "no Debian bookworm entry found in $APT_ETC/sources.list{,.d} to derive the trixie source from"
        keyring=/usr/share/keyrings/debian-archive-keyring.gpg
        local name=trixie.sources
        [ -e "$APT_ETC/sources.list.d/$name" ] && name=edgetune-trixie.sources
        log "adding Debian trixie (${types[*]}) from $uri as $APT_ETC/sources.list.d/$name"
        printf 'Types: %s\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
            "${types[*]}" "$uri" "$keyring" | as_root tee "$APT_ETC/sources.list.d/$name" >/dev/null
        TRIXIE_CHANGED=1
    fi
    if ! has_trixie_pin; then
        log "pinning trixie to priority 100 in $APT_ETC/preferences.d/trixie.pref"
        printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' \
            | as_root tee "$APT_ETC/preferences.d/trixie.pref" >/dev/null
        TRIXIE_CHANGED=1
    fi
}

apt_step() {
    export DEBIAN_FRONTEND=noninteractive
    local missing=() need_update=0 p
    configure_trixie
    need_update=$TRIXIE_CHANGED
    for p in "${APT_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "$need_update" -eq 0 ]; then
        for p in "${missing[@]}"; do
            apt-cache show "$p" >/dev/null 2>&1 || { need_update=1; break; }
        done
    fi
    if [ "$need_update" -eq 0 ] && [ -z "${MICROPY_DIR_USER:-}" ] && [ ! -e "$DEFAULT_MICROPY_DIR/py/mpconfig.h" ]; then
        apt-cache showsrc micropython 2>/dev/null | grep -q '^Version: 1\.25' || need_update=1
    fi
    if [ "$need_update" -eq 0 ] && [ "${SKIP_RP2040:-0}" != 1 ] && [ ! -x "$ROOT/build/rp2-deps/picotool/bin/picotool" ]; then
        { apt-cache show pico-sdk-source && apt-cache showsrc picotool; } >/dev/null 2>&1 || need_update=1
    fi
    if [ "$need_update" -eq 1 ]; then
        log "apt-get update"
        as_root apt-get update -q
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        log "apt packages: all present"
    fi
}

# --- 2. MicroPython source ----------------------------------------------------------------

micropython_step() {
    if [ -n "${MICROPY_DIR_USER:-}" ]; then
        [ -e "$MICROPY_DIR_USER/py/mpconfig.h" ] || die "MICROPY_DIR=$MICROPY_DIR_USER has no py/mpconfig.h"
        log "MicroPython: using MICROPY_DIR=$MICROPY_DIR_USER"
        return
    fi
    if [ -e "$DEFAULT_MICROPY_DIR/py/mpconfig.h" ]; then
        log "MicroPython: $DEFAULT_MICROPY_DIR present"
        return
    fi
    local dl="$ROOT/build/dl" orig
    mkdir -p "$dl"
    orig="$(apt-cache showsrc micropython | awk '/^Version: 1\.25/ { ok = 1 } ok && / micropython_[^ ]*\.orig\.tar\.[a-z0-9]+$/ { print $3; exit }')"
    [ -n "$orig" ] || die "apt has no micropython 1.25 source package (is the trixie deb-src entry there? try: apt-get update)"
    if [ ! -e "$dl/$orig" ]; then
        log "MicroPython: apt-get source --download-only micropython (into build/dl)"
        # apt warns that the _apt sandbox user cannot write to build/dl: harmless.
        (cd "$dl" && apt-get source -q --download-only micropython)
    fi
    [ -e "$dl/$orig" ] || die "apt-get source did not produce $dl/$orig"
    log "MicroPython: extracting $orig into $DEFAULT_MICROPY_DIR"
    rm -rf "$DEFAULT_MICROPY_DIR.tmp"
    mkdir -p "$DEFAULT_MICROPY_DIR.tmp"
    tar -xf "$dl/$orig" -C "$DEFAULT_MICROPY_DIR.tmp" --strip-components=1
    [ -e "$DEFAULT_MICROPY_DIR.tmp/py/mpconfig.h" ] || die "$orig has no py/mpconfig.h"
    rm -rf "$DEFAULT_MICROPY_DIR"
    mv "$DEFAULT_MICROPY_DIR.tmp" "$DEFAULT_MICROPY_DIR"
}

# --- 3. venv --------------------------------------------------------------------------------

venv_step() {
    local venv="$ROOT/.venv" stamp="$ROOT/.venv/.edgetune-setup-stamp"
    if [ -e "$stamp" ] && [ "$stamp" -nt "$ROOT/pyproject.toml" ] && [ -x "$venv/bin/python" ]; then
        log "venv: up to date ($venv)"
        return
    fi
    if [ ! -x "$venv/bin/python" ]; then
        log "venv: creating $venv with $($PYTHON --version 2>&1)"
        "$PYTHON" -m venv "$venv"
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    log "venv: pip install -e . (host package and its dependencies)"
    "$venv/bin/python" -m pip install -q -e "$ROOT"
    # seglearn is used only for its bundled human-activity data set file (no code import).
    log "venv: pip install --no-deps seglearn==1.2.5 (data set file)"
    "$venv/bin/python" -m pip install -q --no-deps seglearn==1.2.5
    touch "$stamp"
}

# --- 5. unix firmware -----------------------------------------------------------------------

firmware_step() {
    log "firmware: make firmware BOARD=unix"
    if [ -n "${MICROPY_DIR_USER:-}" ]; then
        MICROPY_DIR="$MICROPY_DIR_USER" make -C "$ROOT" --no-print-directory firmware BOARD=unix
    else
        env -u MICROPY_DIR make -C "$ROOT" --no-print-directory firmware BOARD=unix
    fi
}

main() {
    local t0=$SECONDS
    # MICROPY_DIR as given by the user (the Makefile passes it only when set on its command line
    # or in the environment).
    MICROPY_DIR_USER="${MICROPY_DIR:-}"
    if [ -n "$MICROPY_DIR_USER" ]; then
        MICROPY_DIR_USER="$(cd "$MICROPY_DIR_USER" 2>/dev/null && pwd)" || die "MICROPY_DIR=$MICROPY_DIR does not exist"
        [ "$MICROPY_DIR_USER" = "$DEFAULT_MICROPY_DIR" ] && MICROPY_DIR_USER=""
    fi
    if [ "${SKIP_APT:-0}" != 1 ]; then apt_step; fi
    micropython_step
    venv_step
    if [ "${SKIP_RP2040:-0}" != 1 ]; then bash "$ROOT/scripts/rp2040_deps.sh"; fi
    if [ "${SKIP_FIRMWARE:-0}" != 1 ]; then firmware_step; fi
    log "done in $((SECONDS - t0)) s"
}

# Sourcing the file (tests/host/test_setup.py) defines the functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
