"""`edgetune flash`: the exact esptool / picotool command lines and clear errors without a board.

No hardware exists on the test machines, so: serial ports are FAKE pyserial ListPortInfo
records (what list_ports.comports() returns for real USB devices), an RPI-RP2 drive is a FAKE
temporary directory with the INFO_UF2.TXT a real RP2040 bootloader drive carries, and "a board
in BOOTSEL" is passed in as a flag. The no-board errors are also checked against the REAL
machine (real list_ports, real picotool if built, real /proc/mounts) through the CLI, where
no board is attached.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from serial.tools.list_ports_common import ListPortInfo

from edgetune.device import flash

REPO = Path(__file__).resolve().parents[2]


def _port(device: str, vid: int | None, pid: int | None = 0x1001, desc: str = "USB JTAG/serial debug unit"):
    p = ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid, p.description = vid, pid, desc
    return p


@pytest.fixture
def fw(tmp_path: Path) -> Path:
    f = tmp_path / "firmware.bin"
    f.write_bytes(b"\xe9" + bytes(255))
    return f


def test_esp32s3_commands_use_esptool_v5_names_and_offset_0(fw: Path):
    steps = flash.plan("esp32s3", fw, comports=lambda: [_port("/dev/ttyACM0", 0x303A)])
    tool = flash.esptool_command()
    assert [s.argv for s in steps] == [
        [*tool, "--chip", "esp32s3", "--port", "/dev/ttyACM0", "erase-flash"],
        [*tool, "--chip", "esp32s3", "--port", "/dev/ttyACM0", "--baud", "460800", "write-flash", "0", str(fw)],
    ]
    # the esptool we call knows these command names (v5), and they take these arguments
    for cmd in ("erase-flash", "write-flash"):
        out = subprocess.run([*tool, cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr


def test_esp32s3_explicit_port_skips_detection(fw: Path):
    def boom():
        raise AssertionError("must not scan ports")

    steps = flash.plan("esp32s3", fw, port="/dev/ttyUSB3", comports=boom)
    assert all(s.argv[s.argv.index("--port") + 1] == "/dev/ttyUSB3" for s in steps)


def test_esp32s3_port_detection():
    # a known USB-serial bridge wins over an unknown USB device and a legacy UART (no VID)
    ports = [_port("/dev/ttyS0", None), _port("/dev/ttyACM1", 0x2E8A, desc="Pico"), _port("/dev/ttyUSB0", 0x10C4)]
    assert flash.pick_port(ports) == "/dev/ttyUSB0"
    # only an unknown USB device: use it
    assert flash.pick_port([_port("/dev/ttyS0", None), _port("/dev/ttyACM1", 0x2E8A)]) == "/dev/ttyACM1"
    # several candidates: named, not guessed
    with pytest.raises(flash.FlashError, match=r"several .*ttyACM0.*ttyUSB0.*--port"):
        flash.pick_port([_port("/dev/ttyUSB0", 0x1A86), _port("/dev/ttyACM0", 0x303A)])
    # none
    with pytest.raises(flash.FlashError, match="no USB serial port"):
        flash.pick_port([_port("/dev/ttyS0", None)])


def test_missing_firmware_says_how_to_build(tmp_path: Path):
    with pytest.raises(flash.FlashError, match="make firmware BOARD=esp32s3"):
        flash.plan("esp32s3", tmp_path / "nope.bin", port="/dev/ttyACM0")
    with pytest.raises(flash.FlashError, match="make firmware BOARD=rp2040"):
        flash.plan("rp2040", tmp_path / "nope.uf2", bootsel=True, picotool="picotool")
    with pytest.raises(flash.FlashError, match="unknown board"):
        flash.plan("esp8266", tmp_path / "x")


def test_rp2040_picotool_load_when_in_bootsel(tmp_path: Path):
    uf2 = tmp_path / "firmware.uf2"
    uf2.write_bytes(b"UF2\n" + bytes(508))
    steps = flash.plan("rp2040", uf2, picotool="/opt/picotool", bootsel=True, drives=[])
    assert [s.argv for s in steps] == [["/opt/picotool", "load", "-x", str(uf2)]]


def test_rp2040_copies_to_a_mounted_rpi_rp2_drive(tmp_path: Path):
    """FAKE drive: a temp directory with the INFO_UF2.TXT of an RP2040 bootloader."""
    uf2 = tmp_path / "firmware.uf2"
    uf2.write_bytes(b"UF2\n" + bytes(508))
    media = tmp_path / "media" / "user"
    drive = media / "RPI-RP2"
    drive.mkdir(parents=True)
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n")
    (media / "USBSTICK").mkdir()  # another drive, not an RP2040
    (media / "USBSTICK" / "INFO_UF2.TXT").write_text("Board-ID: SAMD21\n")
    drives = flash.find_rpi_rp2_drives(roots=[tmp_path / "media"], mounts_file=tmp_path / "no-mounts")
    assert drives == [drive]
    steps = flash.plan("rp2040", uf2, picotool="/opt/picotool", bootsel=False, drives=drives)
    assert len(steps) == 1 and steps[0].copy_to == drive / "firmware.uf2"
    assert flash.execute(steps) == 0
    assert (drive / "firmware.uf2").read_bytes() == uf2.read_bytes()
    # the same drive found through a mount table line
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sdb1 {drive} vfat rw 0 0\n")
    assert flash.find_rpi_rp2_drives(roots=[], mounts_file=mounts) == [drive]


def test_rp2040_no_board_error(tmp_path: Path):
    uf2 = tmp_path / "firmware.uf2"
    uf2.write_bytes(b"UF2\n")
    with pytest.raises(flash.FlashError, match="BOOTSEL"):
        flash.plan("rp2040", uf2, picotool="/opt/picotool", bootsel=False, drives=[])
    with pytest.raises(flash.FlashError, match="picotool is not installed"):
        flash.plan("rp2040", uf2, picotool="", bootsel=False, drives=[])
    with pytest.raises(flash.FlashError, match="several RPI-RP2"):
        flash.plan("rp2040", uf2, picotool="", bootsel=False, drives=[tmp_path / "a", tmp_path / "b"])


def test_cli_without_a_board_fails_clearly(tmp_path: Path):
    """REAL detection on this machine (no board attached): exit status 2 and a message that says
    what to do, for both boards; nothing is written."""
    fw = tmp_path / "firmware.bin"
    fw.write_bytes(bytes(16))
    env_cmd = [sys.executable, "-m", "edgetune.cli", "flash"]
    esp = subprocess.run([*env_cmd, "--board", "esp32s3", "--firmware", str(fw)], capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert esp.returncode == 2 and "no USB serial port" in esp.stderr and "--port" in esp.stderr
    rp = subprocess.run([*env_cmd, "--board", "rp2040", "--firmware", str(fw)], capture_output=True, text=True,
                        timeout=60)
    assert rp.returncode == 2 and "BOOTSEL" in rp.stderr
    dry = subprocess.run([*env_cmd, "--board", "esp32s3", "--firmware", str(fw), "--port", "/dev/ttyACM9",
                          "--dry-run"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and "erase-flash" in dry.stdout and "write-flash 0 " in dry.stdout


def test_dry_run_needs_no_board(tmp_path: Path):
    """`flash --dry-run` prints the commands with a placeholder for the missing port / drive and
    says on stderr what detection found (REAL detection: no board is attached here)."""
    fw = tmp_path / "firmware.bin"
    fw.write_bytes(bytes(16))
    cmd = [sys.executable, "-m", "edgetune.cli", "flash", "--firmware", str(fw), "--dry-run"]
    host = str(Path(flash.__file__).resolve().parents[2])  # this checkout's edgetune, not an installed one
    esp = subprocess.run([*cmd, "--board", "esp32s3"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": host})
    assert esp.returncode == 0, esp.stderr
    assert f"--port {flash.DRY_RUN_PORT} erase-flash" in esp.stdout and "write-flash 0 " in esp.stdout
    assert "no USB serial port" in esp.stderr and "--port" in esp.stderr
    rp = subprocess.run([*cmd, "--board", "rp2040"], capture_output=True, text=True, timeout=60)
    assert rp.returncode == 0, rp.stderr
    assert ("load -x" in rp.stdout or f"{flash.DRY_RUN_DRIVE}" in rp.stdout) and str(fw) in rp.stdout
    assert "BOOTSEL" in rp.stderr


def test_dry_run_plan_placeholders(tmp_path: Path):
    uf2 = tmp_path / "firmware.uf2"
    uf2.write_bytes(b"UF2\n")
    notes: list[str] = []
    steps = flash.plan("rp2040", uf2, picotool="", bootsel=False, drives=[], dry_run=True, note=notes.append)
    assert steps[0].copy_to == flash.DRY_RUN_DRIVE / uf2.name and "picotool is not installed" in notes[0]
    steps = flash.plan("rp2040", uf2, picotool="/opt/picotool", bootsel=False, drives=[], dry_run=True,
                       note=notes.append)
    assert steps[0].argv == ["/opt/picotool", "load", "-x", str(uf2)]
    bin_ = tmp_path / "firmware.bin"
    bin_.write_bytes(bytes(4))
    steps = flash.plan("esp32s3", bin_, comports=lambda: [], dry_run=True, note=notes.append)
    assert flash.DRY_RUN_PORT in steps[0].argv
    with pytest.raises(flash.FlashError, match="no USB serial port"):  # a real run still refuses
        flash.plan("esp32s3", bin_, comports=lambda: [])


# ---- ESP32-S3 without ESP-IDF: a stock firmware, then the xtensawin native module ------------

def test_esp32s3_stock_firmware_then_install(tmp_path: Path):
    """make flash BOARD=esp32s3 FIRMWARE=stock.bin MODEL=m.etm: esptool erase + write at 0 on the
    detected port (a fake Espressif USB port), then edgetune install of the xtensawin .mpy there."""
    from edgetune.device import flash_stock

    fw = tmp_path / "ESP32_GENERIC_S3.bin"
    fw.write_bytes(bytes(16))
    etm = tmp_path / "m.etm"
    etm.write_bytes(b"ETM")
    steps = flash_stock.plan(fw, etm, comports=lambda: [_port("/dev/ttyACM3", 0x303A), _port("/dev/ttyS0", None)])
    tool = flash.esptool_command()
    assert [s.argv for s in steps] == [
        [*tool, "--chip", "esp32s3", "--port", "/dev/ttyACM3", "erase-flash"],
        [*tool, "--chip", "esp32s3", "--port", "/dev/ttyACM3", "--baud", "460800", "write-flash", "0", str(fw)],
        [sys.executable, "-m", "edgetune.cli", "install", "--port", "/dev/ttyACM3", "--model", str(etm),
         "--arch", "xtensawin"],
    ]
    with pytest.raises(flash.FlashError, match="no model file"):
        flash_stock.plan(fw, tmp_path / "none.etm", port="/dev/ttyACM3")
    with pytest.raises(flash.FlashError, match="no USB serial port"):
        flash_stock.plan(fw, etm, comports=lambda: [])


def test_make_flash_esp32s3_without_idf_or_firmware_says_what_to_do(tmp_path: Path):
    """Without IDF_PATH, FIRMWARE= and a built firmware: one line on stderr, exit status 2; with
    FIRMWARE= and DRY_RUN=1 the esptool and install command lines."""
    repo = Path(flash.__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if k != "IDF_PATH"}
    if (repo / "build" / "esp32s3" / "firmware.bin").exists():
        pytest.skip("build/esp32s3/firmware.bin exists (an ESP-IDF build): make flash would use it")
    r = subprocess.run(["make", "--no-print-directory", "-s", "flash", "BOARD=esp32s3"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    # make's own "make: *** ..." line (make[N]: when make test runs pytest) is not ours
    lines = [ln for ln in r.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", ln)]
    assert len(lines) == 1 and "FIRMWARE=" in lines[0] and "IDF_PATH" in lines[0], r.stderr
    fw = tmp_path / "stock.bin"
    fw.write_bytes(bytes(16))
    etm = tmp_path / "m.etm"
    etm.write_bytes(b"ETM")
    r = subprocess.run(["make", "--no-print-directory", "-s", "flash", "BOARD=esp32s3", f"FIRMWARE={fw}",
                        "PORT=/dev/ttyACM9", f"MODEL={etm}", "DRY_RUN=1"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--port /dev/ttyACM9 erase-flash" in r.stdout and f"write-flash 0 {fw}" in r.stdout
    assert f"install --port /dev/ttyACM9 --model {etm} --arch xtensawin" in r.stdout
