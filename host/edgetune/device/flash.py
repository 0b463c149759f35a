"""`edgetune flash --board esp32s3|rp2040 [--port PORT] [--firmware FILE]`: write firmware to a board.

ESP32-S3 (esptool v5 command names): ``esptool --chip esp32s3 --port P erase-flash``, then
``esptool --chip esp32s3 --port P --baud 460800 write-flash 0 firmware.bin`` -- MicroPython's
ESP32-S3 image (bootloader + partition table + app, ports/esp32 makeimg.py) is written at
offset 0 (ports/esp32/README.md and the download page: "esptool.py --chip esp32s3 ...
write_flash -z 0 board-xxx.bin"). The port is auto-detected among USB serial ports
(pyserial's list_ports): exactly one candidate is used; several are named and the user picks
one with --port; none gives a clear error.

RP2040: with the board in BOOTSEL mode, ``picotool load -x firmware.uf2`` (load and run) if
picotool sees it; otherwise the UF2 is copied to a mounted RPI-RP2 drive (a directory whose
INFO_UF2.TXT says Board-ID: RPI-RP2); otherwise a clear error says how to enter BOOTSEL.

`--dry-run` prints the commands (or the copy) without running them; it needs no connected board
(a placeholder stands for the port or drive, and a note says what detection found).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
ESP32S3_OFFSET = "0"
ESP32S3_BAUD = 460800
FIRMWARE = {
    "esp32s3": REPO_ROOT / "build" / "esp32s3" / "firmware.bin",
    "rp2040": REPO_ROOT / "build" / "rp2040" / "firmware.uf2",
}
# USB-serial bridges found on ESP32-S3 boards: Espressif's native USB (CDC / USB-Serial-JTAG),
# Silicon Labs CP210x, WCH CH34x, FTDI.
ESP_USB_VIDS = {0x303A: "Espressif USB", 0x10C4: "CP210x", 0x1A86: "CH34x", 0x0403: "FTDI"}
RPI_RP2_MOUNT_ROOTS = ("/media", "/run/media", "/mnt", "/Volumes")


class FlashError(RuntimeError):
    """Flashing cannot go ahead (no board, several boards, missing firmware or tool)."""


@dataclass
class Step:
    """One action: a command to run, or a file copy (copy_to set)."""

    argv: list[str]
    copy_to: Path | None = None

    def describe(self) -> str:
        if self.copy_to is not None:
            return f"cp {self.argv[0]} {self.copy_to}"
        return " ".join(self.argv)


# ---------------------------------------------------------------------------- ESP32-S3


def esptool_command() -> list[str]:
    """esptool next to this Python (the venv's), else on PATH, else `python -m esptool`."""
    exe = Path(sys.executable).with_name("esptool")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("esptool")
    return [found] if found else [sys.executable, "-m", "esptool"]


def esp_candidates(ports: Iterable) -> list:
    """USB serial ports that may be an ESP32-S3 (known VIDs first, then other USB ports)."""
    usb = [p for p in ports if getattr(p, "vid", None) is not None]
    return sorted(usb, key=lambda p: (p.vid not in ESP_USB_VIDS, p.device))


def pick_port(ports: Iterable) -> str:
    """The single ESP32-S3 candidate's device path, or FlashError naming the candidates."""
    cands = esp_candidates(ports)
    known = [p for p in cands if p.vid in ESP_USB_VIDS]
    use = known or cands
    if len(use) == 1:
        return use[0].device
    if not use:
        raise FlashError(
            "no USB serial port found for the ESP32-S3: connect the board by USB (use the port "
            "labelled USB or UART; hold BOOT while pressing RESET if it does not enumerate), "
            "or pass --port / PORT=/dev/ttyACM0")
    names = ", ".join(f"{p.device} ({ESP_USB_VIDS.get(p.vid, 'USB')} {p.vid:04x}:{p.pid or 0:04x}"
                      f"{', ' + p.description if getattr(p, 'description', None) else ''})" for p in use)
    raise FlashError(f"several serial ports could be the ESP32-S3: {names}; choose one with --port / PORT=")


def esp32s3_steps(firmware: str | os.PathLike, port: str, baud: int = ESP32S3_BAUD,
                  esptool: Sequence[str] | None = None) -> list[Step]:
    """erase-flash, then write-flash at offset 0 (esptool v5 command names)."""
    tool = list(esptool or esptool_command())
    head = [*tool, "--chip", "esp32s3", "--port", port]
    return [
        Step([*head, "erase-flash"]),
        Step([*head, "--baud", str(baud), "write-flash", ESP32S3_OFFSET, str(firmware)]),
    ]


# ---------------------------------------------------------------------------- RP2040


def picotool_path() -> str | None:
    """picotool on PATH, else the one `make setup` builds into build/rp2-deps."""
    found = shutil.which("picotool")
    if found:
        return found
    local = REPO_ROOT / "build" / "rp2-deps" / "picotool" / "bin" / "picotool"
    return str(local) if local.is_file() else None


def picotool_sees_bootsel(picotool: str, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> bool:
    """True if `picotool info` finds an RP2040 in BOOTSEL mode (exit status 0)."""
    try:
        return run([picotool, "info"], capture_output=True, text=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def is_rpi_rp2_drive(path: str | os.PathLike) -> bool:
    """A mounted RP2040 bootloader drive: INFO_UF2.TXT with Board-ID: RPI-RP2."""
    info = Path(path) / "INFO_UF2.TXT"
    try:
        return "RPI-RP2" in info.read_text(errors="replace")
    except OSError:
        return False


def find_rpi_rp2_drives(roots: Iterable[str | os.PathLike] = RPI_RP2_MOUNT_ROOTS,
                        mounts_file: str | os.PathLike = "/proc/mounts") -> list[Path]:
    """Mounted RPI-RP2 drives: mount points from /proc/mounts plus RPI-RP2 directories up to two
    levels below the usual automount roots (/media/$USER/RPI-RP2, /Volumes/RPI-RP2, ...)."""
    seen: list[Path] = []
    cands: list[Path] = []
    try:
        for line in Path(mounts_file).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                cands.append(Path(parts[1].replace("\\040", " ")))
    except OSError:
        pass
    for root in roots:
        r = Path(root)
        if not r.is_dir():
            continue
        try:
            cands += [p for p in r.iterdir() if p.is_dir()]
            cands += [q for p in r.iterdir() if p.is_dir() for q in p.iterdir() if q.is_dir()]
        except OSError:
            continue
    for c in cands:
        if c not in seen and is_rpi_rp2_drive(c):
            seen.append(c)
    return seen


def rp2040_steps(firmware: str | os.PathLike, picotool: str | None = None, bootsel: bool = False,
                 drives: Sequence[Path] = ()) -> list[Step]:
    """`picotool load -x` when picotool sees a board in BOOTSEL, else a copy to the one mounted
    RPI-RP2 drive; FlashError when there is neither (or several drives)."""
    if picotool and bootsel:
        return [Step([picotool, "load", "-x", str(firmware)])]
    if len(drives) == 1:
        return [Step([str(firmware)], copy_to=Path(drives[0]) / Path(firmware).name)]
    if len(drives) > 1:
        raise FlashError(f"several RPI-RP2 drives are mounted: {', '.join(map(str, drives))}; unplug all but one")
    why = "picotool is not installed (make setup builds it)" if not picotool else "picotool sees no board in BOOTSEL mode"
    raise FlashError(
        f"no RP2040 in BOOTSEL mode: {why} and no RPI-RP2 drive is mounted. Hold the BOOTSEL "
        "button while plugging the Pico in (or while pressing RESET), then run make flash BOARD=rp2040 "
        "again; or copy the UF2 onto the RPI-RP2 drive yourself")


# ---------------------------------------------------------------------------- running


def execute(steps: Sequence[Step], dry_run: bool = False, out=sys.stdout) -> int:
    for s in steps:
        print(("would run: " if dry_run else "$ ") + s.describe(), file=out, flush=True)
        if dry_run:
            continue
        if s.copy_to is not None:
            shutil.copyfile(s.argv[0], s.copy_to)
            continue
        rc = subprocess.run(s.argv).returncode
        if rc != 0:
            print(f"edgetune flash: {s.argv[0]} failed with exit status {rc}", file=sys.stderr)
            return rc
    return 0


# What a dry run shows where no board is connected (the commands are the same with a real one).
DRY_RUN_PORT = "PORT"
DRY_RUN_DRIVE = Path("RPI-RP2")


def plan(board: str, firmware: str | os.PathLike | None = None, port: str | None = None,
         comports: Callable[[], Iterable] | None = None, drives: Sequence[Path] | None = None,
         bootsel: bool | None = None, picotool: str | None = None, dry_run: bool = False,
         note: Callable[[str], None] | None = None) -> list[Step]:
    """The steps that flash `board`; FlashError when that cannot be done. The detection inputs
    (comports, drives, bootsel, picotool) default to the real machine's. With dry_run a missing
    board is no error: the steps name a placeholder (DRY_RUN_PORT / DRY_RUN_DRIVE) and `note`
    gets what detection found instead."""
    if board not in FIRMWARE:
        raise FlashError(f"unknown board {board!r}; flashable boards: {', '.join(sorted(FIRMWARE))}")
    fw = Path(firmware) if firmware else FIRMWARE[board]
    if not fw.is_file():
        raise FlashError(f"no firmware at {fw}; run: make firmware BOARD={board}")
    note = note or (lambda msg: print(f"edgetune flash: note: {msg}", file=sys.stderr))
    if board == "esp32s3":
        if port is None:
            if comports is None:
                from serial.tools import list_ports

                comports = list_ports.comports
            try:
                port = pick_port(comports())
            except FlashError as e:
                if not dry_run:
                    raise
                note(f"{e} -- showing the commands with {DRY_RUN_PORT} in place of the port")
                port = DRY_RUN_PORT
        return esp32s3_steps(fw, port)
    tool = picotool if picotool is not None else picotool_path()
    if bootsel is None:
        bootsel = bool(tool) and picotool_sees_bootsel(tool)
    if drives is None:
        drives = [] if bootsel else find_rpi_rp2_drives()
    try:
        return rp2040_steps(fw, tool, bootsel, drives)
    except FlashError as e:
        if not dry_run:
            raise
        if tool:
            note(f"{e} -- showing what runs once the board is in BOOTSEL mode")
            return rp2040_steps(fw, tool, True, ())
        note(f"{e} -- showing the copy to a mounted {DRY_RUN_DRIVE} drive")
        return rp2040_steps(fw, None, False, [DRY_RUN_DRIVE])


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgetune flash", description="write firmware to a connected board")
    parser.add_argument("--board", required=True, choices=sorted(FIRMWARE))
    parser.add_argument("--port", help="esp32s3: serial port (default: auto-detect)")
    parser.add_argument("--firmware", type=Path, help="image to write (default: build/<board>/firmware.*)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands only (works without a connected board)")
    args = parser.parse_args(argv)
    try:
        steps = plan(args.board, args.firmware, args.port or os.environ.get("PORT") or None, dry_run=args.dry_run)
    except FlashError as e:
        print(f"edgetune flash: {e}", file=sys.stderr)
        return 2
    return execute(steps, args.dry_run)


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
