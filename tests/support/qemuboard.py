"""The emulated Cortex-M3 board of the tests (make firmware BOARD=qemu): the shared test build
with the app test model frozen, and mpremote on its pty."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgetune.device import emulate
from edgetune.format.modelfile import write_etm

from tests.support import tinymodels

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "qemu-test"
CLASSES = ("rest", "walk", "wave")


def app_model_etm() -> bytes:
    """The app test model (tinymodels.app_model, 16-sample windows, CLASSES) as .etm bytes."""
    return write_etm(tinymodels.app_model(window=16, classes=CLASSES))


def build_firmware(model_etm: bytes) -> Path:
    """build/qemu-test/firmware.elf with model_etm frozen (scripts/firmware_qemu.sh; a no-op
    when nothing changed, so every test module using the app model shares one build)."""
    if shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None:
        pytest.fail("qemu-system-arm / arm-none-eabi-gcc missing; run: make setup", pytrace=False)
    OUT.mkdir(parents=True, exist_ok=True)
    etm = OUT / "app.etm"
    if not etm.is_file() or etm.read_bytes() != model_etm:
        etm.write_bytes(model_etm)
    env = dict(os.environ, OUT=str(OUT), MODEL=str(etm))
    proc = subprocess.run(["bash", str(REPO / "scripts" / "firmware_qemu.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"firmware build failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    assert "4-byte aligned" in proc.stdout
    return OUT / "firmware.elf"


def mpremote(pty: str, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(emulate.mpremote_command(pty, *args), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"mpremote {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
