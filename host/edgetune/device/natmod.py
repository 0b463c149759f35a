"""The native .mpy module (`make natmod`): architectures, package.json for mip, choosing the
build that a board can load, and `edgetune install`.

    python -m edgetune.device.natmod package build/natmod/armv6m   # writes its package.json
    edgetune install --port P --model m.etm [--arch auto] [--session s.csv]

`edgetune install` puts edgetune on a stock MicroPython board (no reflashing): the native
module for the board's architecture with `mpremote mip install --target /lib`, the device app
compiled to .mpy by mpy-cross into /lib (compiling its sources on the board would need more
heap than a small board has next to the module), then what `edgetune deploy` copies (main.py,
the model, config.json, a session) and its boot check; last it imports the core and checks
that it is the native module (core.IMPL "mpy"). A firmware with the module built in gets the
app and the model only.

A board tells its native architecture in `sys.implementation._mpy` (py/persistentcode.h:
bits 0-7 the .mpy version, 8-9 the sub-version, 10-15 the architecture). An ARM firmware
loads any ARM architecture from ARMv6-M up to its own (MPY_FEATURE_ARCH_TEST), so a
Cortex-M3 board can run the armv6m build too; `pick_arch` takes the highest one built.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
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


# What install asks the board: platform, .mpy architecture word, whether edgetune is built in
# (importable with an empty sys.path and without __file__), whether the app is frozen in.
INSTALL_PROBE = (
    "import sys\np = sys.path[:]\nsys.path[:] = []\ntry:\n    import edgetune\n"
    "    b = 0 if hasattr(edgetune, '__file__') else 1\nexcept ImportError:\n    b = 0\n"
    "sys.path[:] = ['.frozen']\ntry:\n    import app\n    f = 1\nexcept ImportError:\n    f = 0\n"
    "sys.path[:] = p\nprint('ETINSTALL', sys.platform, getattr(sys.implementation, '_mpy', 0), b, f)")
MKLIB = "import os\ntry:\n    os.mkdir('/lib')\nexcept OSError:\n    pass"
VERIFY = ("import gc, core\ngc.collect()\nprint('ETVERIFY', core.IMPL, getattr(__import__('edgetune'), "
          "'__file__', 'built-in') if core.IMPL != 'py' else '-', gc.mem_free())")


def mpy_cross() -> Path:
    """mpy-cross of the MicroPython source (built by make natmod / make firmware BOARD=qemu);
    $MPY_CROSS overrides."""
    env = os.environ.get("MPY_CROSS")
    p = Path(env) if env else Path(os.environ.get("MICROPY_DIR") or ROOT / "build" / "micropython") / "mpy-cross" / "build" / "mpy-cross"
    if not p.is_file():
        raise FileNotFoundError(f"no mpy-cross at {p}: run make natmod (it builds mpy-cross), or set MPY_CROSS")
    return p


def compile_app(out: Path, firmware_dir: Path = ROOT / "firmware") -> list[Path]:
    """The device app's modules (all firmware/*.py but main.py and manifest.py) as .mpy in `out`."""
    cross = mpy_cross()
    outs = []
    for src in sorted(firmware_dir.glob("*.py")):
        if src.name in ("main.py", "manifest.py"):
            continue
        dst = out / (src.stem + ".mpy")
        r = subprocess.run([str(cross), "-o", str(dst), "-s", src.name, str(src)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"mpy-cross {src.name}: {(r.stderr or r.stdout).strip()}")
        outs.append(dst)
    return outs


def _mpremote(port: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    from edgetune.device.board import mpremote

    return subprocess.run([*mpremote(), "connect", port, *args], capture_output=True, text=True, timeout=timeout)


def _tagged(out: str, tag: str) -> list[str] | None:
    for line in out.splitlines():
        if line.startswith(tag + " "):
            return line.split()[1:]
    return None


def install_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgetune install", description="install edgetune on a stock MicroPython "
                                "board: the native module for its architecture (mip), the device app "
                                "(precompiled) and a model, then check the import")
    p.add_argument("--port", required=True, help="serial port of the board (or the pty of edgetune emulate)")
    p.add_argument("--model", required=True, help=".etm model file")
    p.add_argument("--arch", default="auto", choices=("auto", *BUILT_ARCHS),
                   help="native architecture (default auto: from the board's sys.implementation._mpy)")
    p.add_argument("--session", help="recorded session CSV to copy as session.csv (replay sensor; see deploy)")
    p.add_argument("--board", default="auto", help="board whose imu config to install (see edgetune deploy)")
    p.add_argument("--natmod-dir", type=Path, default=NATMOD_DIR, help="where make natmod wrote <arch>/ "
                   "(default build/natmod)")
    a = p.parse_args(argv)
    err = lambda msg: print(f"edgetune install: {msg}", file=sys.stderr)  # noqa: E731
    from edgetune.device.board import _port_problem, deploy_cli

    if not Path(a.model).is_file():
        err(f"no model file {a.model}")
        return 2
    problem = _port_problem(a.port)
    if problem:
        err(problem)
        return 2
    try:
        r = _mpremote(a.port, "exec", INSTALL_PROBE, timeout=60)
    except subprocess.TimeoutExpired:
        err(f"no answer from {a.port} within 60 s")
        return 1
    probe = _tagged(r.stdout, "ETINSTALL")
    if probe is None:
        err(f"the board on {a.port} did not answer: {(r.stderr or r.stdout).strip()[-500:]}")
        return 1
    plat, mpy, builtin, frozen_app = probe[0], int(probe[1]), probe[2] == "1", probe[3] == "1"
    with tempfile.TemporaryDirectory(prefix="edgetune-install-") as tmp:
        steps = ["exec", MKLIB]
        if builtin:
            print(f"edgetune install: the {plat} firmware has edgetune built in; installing the app and the model only")
        else:
            try:
                if a.arch == "auto":
                    arch = pick_arch(mpy, built_archs(a.natmod_dir))
                else:
                    arch = a.arch
                    _, board_arch = decode_mpy(mpy)
                    if arch not in LOADABLE.get(board_arch or "", ()):
                        raise ValueError(f"the board ({board_arch or 'no native code'}) cannot load {arch} code; "
                                         f"it loads {', '.join(LOADABLE.get(board_arch or '', ())) or 'none of ours'}")
            except ValueError as e:
                err(str(e))
                return 2
            pkg = a.natmod_dir / arch / "package.json"
            if not (a.natmod_dir / arch / "edgetune.mpy").is_file() or not pkg.is_file():
                err(f"no {a.natmod_dir / arch}/edgetune.mpy + package.json: run make natmod ARCH={arch}")
                return 2
            print(f"edgetune install: {plat} board, native architecture {decode_mpy(mpy)[1]}: installing the "
                  f"{arch} module ({(a.natmod_dir / arch / 'edgetune.mpy').stat().st_size} bytes)", flush=True)
            steps += ["+", "mip", "install", "--target", "/lib", str(pkg)]
        app = []
        if not frozen_app:
            try:
                app = compile_app(Path(tmp))
            except (FileNotFoundError, RuntimeError) as e:
                err(str(e))
                return 2
            steps += ["+", "fs", "cp", *(str(f) for f in app), ":/lib/"]
        r = _mpremote(a.port, *steps, timeout=900)
        if r.returncode != 0:
            err(f"copying to {a.port} failed (mpremote exit {r.returncode}):\n{(r.stderr or r.stdout).strip()[-1500:]}")
            return 1
    print(f"edgetune install: the app ({len(app)} modules, .mpy) is in /lib" if app else
          "edgetune install: the app is frozen in the firmware", flush=True)
    dargs = ["--port", a.port, "--model", str(a.model), "--board", a.board]
    if a.session:
        dargs += ["--session", a.session]
    rc = deploy_cli(dargs)
    if rc:
        return rc
    r = _mpremote(a.port, "exec", VERIFY, timeout=120)
    v = _tagged(r.stdout, "ETVERIFY")
    want = "c" if builtin else "mpy"
    if v is None or v[0] != want:
        err(f"the board does not use the {'built-in' if builtin else 'native'} module after installing: "
            f"{(r.stderr or r.stdout).strip()[-800:]}")
        return 1
    print(f"edgetune install: done; the app's core is {'the built-in module' if builtin else v[1]} "
          f"(core.IMPL {v[0]}), {v[2]} bytes of heap free")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "package":
        print("usage: python -m edgetune.device.natmod package build/natmod/<arch>", file=sys.stderr)
        return 2
    try:
        print(f"natmod: {write_package(Path(argv[1]))}")
    except FileNotFoundError as e:
        print(f"natmod: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
