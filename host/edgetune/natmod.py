"""The native .mpy module (`make natmod`): architectures, package.json for mip, choosing the
build that a board can load.

    python -m edgetune.natmod package build/natmod/armv6m   # writes its package.json

A board tells its native architecture in `sys.implementation._mpy` (py/persistentcode.h:
bits 0-7 the .mpy version, 8-9 the sub-version, 10-15 the architecture). An ARM firmware
loads any ARM architecture from ARMv6-M up to its own (MPY_FEATURE_ARCH_TEST), so a
Cortex-M3 board can run the armv6m build too; `pick_arch` takes the highest one built.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NATMOD_DIR = ROOT / "build" / "natmod"

# MP_NATIVE_ARCH_* of py/persistentcode.h -> our build's name (None: no build for it).
ARCH_CODES = {
    0: None, 1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
    7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc",
}
BUILT_ARCHS = ("x64", "armv6m", "armv7m", "armv7emsp", "xtensawin")
# What each firmware architecture can load, best first.
LOADABLE = {
    "x64": ("x64",),
    "armv6m": ("armv6m",),
    "armv7m": ("armv7m", "armv6m"),
    "armv7em": ("armv7m", "armv6m"),
    "armv7emsp": ("armv7emsp", "armv7m", "armv6m"),
    "armv7emdp": ("armv7emsp", "armv7m", "armv6m"),
    "xtensawin": ("xtensawin",),
}
MPY_VERSION = 6


def decode_mpy(mpy: int) -> tuple[int, str | None]:
    """(.mpy version, architecture name or None) of a `sys.implementation._mpy` value."""
    return mpy & 0xFF, ARCH_CODES.get((mpy >> 10) & 0x3F)


def pick_arch(mpy: int, available: list[str] | tuple[str, ...]) -> str:
    """The best of the `available` builds for a board whose `sys.implementation._mpy` is `mpy`;
    ValueError saying why when none fits."""
    version, arch = decode_mpy(mpy)
    if version != MPY_VERSION:
        raise ValueError(f"the board's MicroPython reads .mpy version {version}; edgetune.mpy is version "
                         f"{MPY_VERSION} (MicroPython 1.23-1.25): update the board's firmware")
    if arch is None:
        raise ValueError("the board's firmware cannot load native code (sys.implementation._mpy has no "
                         "architecture); use the pure-Python fallback or build a firmware with the module")
    for a in LOADABLE.get(arch, ()):
        if a in available:
            return a
    wanted = ", ".join(LOADABLE.get(arch, ())) or "none of ours"
    raise ValueError(f"the board's architecture is {arch} (loads: {wanted}) but build/natmod has only "
                     f"{', '.join(available) or 'nothing'}: run make natmod ARCH={LOADABLE.get(arch, (arch,))[0]}")


def built_archs(natmod_dir: Path = NATMOD_DIR) -> list[str]:
    return [a for a in BUILT_ARCHS if (natmod_dir / a / "edgetune.mpy").is_file()]


def write_package(arch_dir: Path) -> Path:
    """package.json next to edgetune.mpy, for `mpremote mip install <dir>/package.json`
    (installs /lib/edgetune.mpy); the URL is relative, so the directory can be hosted as is."""
    arch_dir = Path(arch_dir)
    if not (arch_dir / "edgetune.mpy").is_file():
        raise FileNotFoundError(f"no {arch_dir / 'edgetune.mpy'}: run make natmod ARCH={arch_dir.name}")
    from edgetune import __version__ as version

    pkg = {"urls": [["edgetune.mpy", "edgetune.mpy"]], "version": version}
    out = arch_dir / "package.json"
    out.write_text(json.dumps(pkg, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "package":
        print("usage: python -m edgetune.natmod package build/natmod/<arch>", file=sys.stderr)
        return 2
    try:
        print(f"natmod: {write_package(Path(argv[1]))}")
    except FileNotFoundError as e:
        print(f"natmod: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
