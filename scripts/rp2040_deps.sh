#!/usr/bin/env bash
# The RP2040 build's dependencies, from Debian's archive (trixie, pinned low by setup.sh), into
# build/rp2-deps/ (git-ignored):
#   pico-sdk/   binary package pico-sdk-source (arch all)
#   tinyusb/    binary package tinyusb-source (arch all)
#   mbedtls/    source package mbedtls 3.6.x (the rp2 port always compiles it)
#   picotool/   built from the picotool source package (pico-sdk 2.x needs it for UF2 output
#               and would otherwise try to git-clone it)
#   micropython-lib/README.md   an empty stand-in (our manifests require() nothing)
# Idempotent: each part is skipped when present. Called by `make setup` and by
# scripts/firmware_rp2040.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/build/rp2-deps"
DL="$ROOT/build/dl/rp2"
JOBS="${JOBS:-2}"

log() { printf 'rp2040-deps: %s\n' "$*"; }
die() { printf 'rp2040-deps: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$DEPS" "$DL"

# Download the binary package PKG (arch all) and unpack its /usr/src/SUBDIR into $DEPS/NAME.
from_deb() {
    local pkg="$1" subdir="$2" name="$3" deb
    [ -e "$DEPS/$name/.complete" ] && return 0
    deb="$(ls "$DL"/"${pkg}"_*_all.deb 2>/dev/null | head -n1 || true)"
    if [ -z "$deb" ]; then
        log "apt-get download $pkg"
        (cd "$DL" && apt-get download -q "$pkg")
        deb="$(ls "$DL"/"${pkg}"_*_all.deb | head -n1)"
    fi
    log "unpacking $(basename "$deb") into build/rp2-deps/$name"
    rm -rf "$DEPS/$name" "$DEPS/.x-$name"
    dpkg-deb -x "$deb" "$DEPS/.x-$name"
    [ -d "$DEPS/.x-$name/usr/src/$subdir" ] || die "$deb has no /usr/src/$subdir"
    mv "$DEPS/.x-$name/usr/src/$subdir" "$DEPS/$name"
    rm -rf "$DEPS/.x-$name"
    touch "$DEPS/$name/.complete"
}

# Fetch the orig tarball of source package PKG, check its SHA-256 against apt's Sources index,
# and extract it into $DEPS/NAME. (Only the orig tarball is used; apt-get source may fail on
# the .dsc on some mirrors, which is fine as long as the tarball checks out.)
from_orig() {
    local pkg="$1" name="$2" orig sum
    [ -e "$DEPS/$name/.complete" ] && return 0
    read -r sum orig < <(apt-cache showsrc "$pkg" | awk '
        /^Checksums-Sha256:/ { c = 1; next } /^[^ ]/ { c = 0 }
        c && $3 ~ /\.orig\.tar\./ { print $1, $3; exit }') || true
    [ -n "${orig:-}" ] || die "apt has no source package $pkg (is the trixie deb-src entry there? run: make setup)"
    if [ ! -e "$DL/$orig" ] || ! echo "$sum  $DL/$orig" | sha256sum -c --status; then
        log "apt-get source --download-only $pkg"
        (cd "$DL" && apt-get source -q --download-only "$pkg") || true
    fi
    [ -e "$DL/$orig" ] || die "could not download $orig"
    echo "$sum  $DL/$orig" | sha256sum -c --status || die "$orig: SHA-256 mismatch"
    log "extracting $orig into build/rp2-deps/$name"
    rm -rf "$DEPS/$name"
    mkdir -p "$DEPS/$name"
    tar -xf "$DL/$orig" -C "$DEPS/$name" --strip-components=1
    touch "$DEPS/$name/.complete"
}

from_deb pico-sdk-source pico-sdk pico-sdk
from_deb tinyusb-source tinyusb tinyusb
from_orig mbedtls mbedtls
from_orig picotool picotool-src

if [ ! -x "$DEPS/picotool/bin/picotool" ] || [ ! -e "$DEPS/picotool/lib/cmake/picotool/picotoolConfig.cmake" ]; then
    log "building picotool (cmake, -j$JOBS)"
    rm -rf "$DEPS/picotool-build" "$DEPS/picotool"
    cmake -S "$DEPS/picotool-src" -B "$DEPS/picotool-build" -DCMAKE_BUILD_TYPE=Release \
        -DPICO_SDK_PATH="$DEPS/pico-sdk" -DUSE_PRECOMPILED=false \
        -DCMAKE_INSTALL_PREFIX="$DEPS/picotool" >"$DEPS/picotool-build.log" 2>&1 \
        || { tail -30 "$DEPS/picotool-build.log"; die "picotool cmake failed"; }
    make -C "$DEPS/picotool-build" -j"$JOBS" >>"$DEPS/picotool-build.log" 2>&1 \
        || { tail -30 "$DEPS/picotool-build.log"; die "picotool build failed"; }
    cmake --install "$DEPS/picotool-build" >>"$DEPS/picotool-build.log" 2>&1 || die "picotool install failed"
fi

if [ ! -e "$DEPS/micropython-lib/README.md" ]; then
    mkdir -p "$DEPS/micropython-lib"
    echo "Empty stand-in for micropython-lib: edgetune's manifests do not require() packages." \
        >"$DEPS/micropython-lib/README.md"
fi
log "ready in build/rp2-deps (picotool $("$DEPS/picotool/bin/picotool" version 2>/dev/null | head -n1 || echo '?'))"
