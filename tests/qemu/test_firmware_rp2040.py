"""The RP2040 firmware: the real RPI_PICO build (scripts/firmware_rp2040.sh, i.e. `make firmware
BOARD=rp2040 MODEL=...`), offline from Debian sources, with our module, the device app and a
frozen model. Built into build/rp2040-test so it does not replace the user's build/rp2040."""

from __future__ import annotations

import json
import os
import struct
import subprocess

import pytest

from edgetune.device import freeze
from edgetune.format.modelfile import write_etm

from tests.support import tinymodels

UF2_MAGIC = (0x0A324655, 0x9E5D5157, 0x0AB16F30)
RP2040_FAMILY = 0xE48BFF56
FLASH_BASE = 0x10000000


def uf2_image(data: bytes) -> bytes:
    """Flash image from a UF2 file; checks every block's magic, family and numbering."""
    assert len(data) % 512 == 0 and data
    blocks = [data[i : i + 512] for i in range(0, len(data), 512)]
    image = bytearray()
    for n, block in enumerate(blocks):
        magic0, magic1, flags, addr, size, blockno, nblocks, family = struct.unpack_from("<8I", block)
        assert (magic0, magic1, struct.unpack_from("<I", block, 508)[0]) == UF2_MAGIC
        assert flags & 0x2000 and family == RP2040_FAMILY
        assert (blockno, nblocks) == (n, len(blocks))
        assert addr == FLASH_BASE + len(image) and size == 256
        image += block[32 : 32 + size]
    return bytes(image)


@pytest.fixture(scope="module")
def build(repo_root, tmp_path_factory):
    out = repo_root / "build" / "rp2040-test"
    out.mkdir(parents=True, exist_ok=True)
    etm = write_etm(tinymodels.app_model(window=16, classes=["rest", "walk", "run"]))
    model = out / "app.etm"
    if not model.is_file() or model.read_bytes() != etm:
        model.write_bytes(etm)
    env = dict(os.environ, OUT=str(out), MODEL=str(model))
    proc = subprocess.run(["bash", str(repo_root / "scripts" / "firmware_rp2040.sh")], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, etm, proc.stdout


@pytest.mark.slow
def test_uf2_holds_module_app_and_aligned_model(build, repo_root):
    out, etm, stdout = build
    assert "static RAM" in stdout and "4-byte aligned" in stdout  # the build reports sizes
    image = uf2_image((out / "firmware.uf2").read_bytes())
    sizes = json.loads((out / "sizes.json").read_text())
    assert len(image) >= sizes["flash_bytes"] > 100_000

    symbols = subprocess.run(["arm-none-eabi-nm", str(out / "firmware.elf")], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "edgetune_user_cmodule" in symbols  # MP_REGISTER_MODULE(MP_QSTR_edgetune, ...)
    assert b"edgetune\x00" in image  # the module's name in the qstr pool in flash
    for name in ("app.py", "collect.py", "store.py", "et_model.py"):  # frozen app + model
        assert name.encode() in image, name

    # The model's bytes are in flash, word-aligned, exactly once: read in place, never copied.
    offset = image.find(etm)
    assert offset >= 0 and image.find(etm, offset + 1) == -1
    assert (FLASH_BASE + offset) % 4 == 0
    assert freeze.elf_offset_of(out / "firmware.elf", etm) == FLASH_BASE + offset


@pytest.mark.slow
def test_heap_budget_matches_build(build, repo_root):
    out, _, _ = build
    sizes = json.loads((out / "sizes.json").read_text())
    board = json.loads((repo_root / "boards" / "rp2040" / "board.json").read_text())
    assert board["micropython_board"] == "RPI_PICO"
    assert sizes["gc_heap_bytes"] >= board["heap_bytes"]
