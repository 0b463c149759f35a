"""`edgetune <verb> ...`: one verb per host module, imported only when used.

Each verb's module defines `cli(argv: list[str]) -> int` with its own argparse parser, so the
CLI stays fast (no TensorFlow import for `monitor`, `flash`, `deploy`).
"""

from __future__ import annotations

import importlib
import sys

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "fleet": ("edgetune.fleet.cli", "fleet learning on Flower: simulate, serve (SuperLink), join (SuperNode + board)"),
    "flash": ("edgetune.device.flash", "write firmware to a board (esptool for esp32s3, picotool/UF2 drive for rp2040)"),
    "emulate": ("edgetune.device.emulate", "run a MicroPython script on an emulated board (unix port or QEMU Cortex-M3)"),
    "deploy": ("edgetune.device.board:deploy_cli", "copy the device app, model and board config to a board (mpremote)"),
    "install": ("edgetune.device.natmod:install_cli", "put edgetune on a stock MicroPython board: native .mpy (mip), app, model"),
    "export": ("edgetune.commands.export", "convert an int8 .tflite model to a .etm model file"),
    "monitor": ("edgetune.device.monitor", "read a device's @et log lines from a serial port: progress, CSV, PNG"),
    "pretrain": ("edgetune.learn.pretrain", "train a model of the zoo on a data-set scenario (Keras)"),
    "quantize": ("edgetune.convert.quantize", "full-integer int8 TFLite conversion plus export metadata"),
    "scheme": ("edgetune.commands.scheme", "search a sparse-update scheme under an SRAM budget (contribution analysis, DP, Pareto)"),
    "freeze": ("edgetune.device.freeze", "write a .etm as a Python module to freeze into firmware (make firmware MODEL=)"),
    "repl": ("edgetune.device.board:repl_cli", "open the board's MicroPython REPL (mpremote)"),
    "train": ("edgetune.device.board:train_cli", "collect labelled windows and fine-tune on a board over its REPL"),
}


def usage() -> str:
    lines = ["usage: edgetune <verb> [options]   (edgetune <verb> -h for a verb's options)", "", "verbs:"]
    lines += [f"  {v:<10} {h}" for v, (_, h) in sorted(VERBS.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"edgetune: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    name, _, func = VERBS[verb][0].partition(":")  # "module" or "module:function" (default cli)
    return int(getattr(importlib.import_module(name), func or "cli")(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
