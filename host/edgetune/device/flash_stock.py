"""`make flash BOARD=esp32s3 FIRMWARE=stock.bin [PORT=...] [MODEL=m.etm]`: an ESP32-S3 without
ESP-IDF. esptool writes the stock MicroPython firmware the user downloaded (the same erase-flash /
write-flash 0 steps as `edgetune flash`, host/edgetune/device/flash.py), then `edgetune install` puts
the xtensawin native module (build/natmod/xtensawin/edgetune.mpy, `make natmod ARCH=xtensawin`,
upstream LLVM), the device app and the model on it.

    python -m edgetune.device.flash_stock --firmware stock.bin [--port P] [--model m.etm] [--dry-run]

Without --model only the firmware is written and the install command to run next is printed.
The install step talks to the board right after esptool reset it: it waits up to --wait seconds
for the port to come back.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from edgetune.device import flash

NO_FIRMWARE = ("make flash BOARD=esp32s3: no firmware to write: pass FIRMWARE=path/to/ESP32_GENERIC_S3.bin "
               "(the stock MicroPython firmware, downloaded; edgetune is then installed as a native module), "
               "or set IDF_PATH (ESP-IDF 5.2-5.4) and run make firmware BOARD=esp32s3 first")


def install_argv(port: str, model: str | os.PathLike) -> list[str]:
    """The `edgetune install` command for the xtensawin native module."""
    return [sys.executable, "-m", "edgetune.cli", "install", "--port", port, "--model", str(model),
            "--arch", "xtensawin"]


def plan(firmware: str | os.PathLike, model: str | os.PathLike | None = None, port: str | None = None,
         comports: Callable[[], Iterable] | None = None, dry_run: bool = False,
         note: Callable[[str], None] | None = None) -> list[flash.Step]:
    """esptool's steps (flash.plan) and, with a model, the install step on the same port."""
    steps = flash.plan("esp32s3", firmware, port=port, comports=comports, dry_run=dry_run, note=note)
    if model is not None:
        if not Path(model).is_file():
            raise flash.FlashError(f"no model file {model}")
        used = steps[0].argv[steps[0].argv.index("--port") + 1]
        steps.append(flash.Step(install_argv(used, model)))
    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgetune flash-stock", description=__doc__.splitlines()[0])
    p.add_argument("--firmware", help="stock MicroPython firmware .bin for ESP32_GENERIC_S3")
    p.add_argument("--port", help="serial port (default: detected)")
    p.add_argument("--model", help=".etm model to install with the native module")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--wait", type=float, default=10, help="seconds to wait for the port after flashing")
    a = p.parse_args(argv)
    if not a.firmware:
        print(NO_FIRMWARE, file=sys.stderr)
        return 2
    try:
        steps = plan(a.firmware, a.model, a.port, dry_run=a.dry_run)
    except flash.FlashError as e:
        print(f"make flash: {e}", file=sys.stderr)
        return 2
    rc = flash.execute(steps[:2], dry_run=a.dry_run)
    if rc != 0 or len(steps) == 2:
        if rc == 0 and not a.model:
            port = steps[0].argv[steps[0].argv.index("--port") + 1]
            print("next: " + " ".join(install_argv(port, "MODEL.etm")[2:]).replace("edgetune.cli", "edgetune"))
        return rc
    if not a.dry_run:
        port = steps[2].argv[steps[2].argv.index("--port") + 1]
        deadline = time.monotonic() + a.wait
        while not os.path.exists(port) and time.monotonic() < deadline:
            time.sleep(0.2)
    return flash.execute(steps[2:], dry_run=a.dry_run)


if __name__ == "__main__":
    sys.exit(main())
