"""`make firmware BOARD=rp2040`: the real RPI_PICO build with our module, offline from Debian sources."""

from __future__ import annotations

import json
import struct
import subprocess

import pytest

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


@pytest.mark.slow
def test_rp2040_firmware_builds_with_module(repo_root):
    proc = subprocess.run(
        ["make", "--no-print-directory", "firmware", "BOARD=rp2040"],
        cwd=repo_root, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "flash" in proc.stdout and "static RAM" in proc.stdout  # the build reports sizes

    out = repo_root / "build" / "rp2040"
    image = uf2_image((out / "firmware.uf2").read_bytes())
    sizes = json.loads((out / "sizes.json").read_text())
    assert len(image) >= sizes["flash_bytes"] > 100_000

    symbols = subprocess.run(
        ["arm-none-eabi-nm", str(out / "firmware.elf")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "edgetune_user_cmodule" in symbols  # MP_REGISTER_MODULE(MP_QSTR_edgetune, ...)
    assert b"edgetune\x00" in image  # the module's name in the qstr pool in flash
    assert b"asyncio" in image  # boards/rp2040/manifest.py was frozen in

    board = json.loads((repo_root / "boards" / "rp2040" / "board.json").read_text())
    assert board["micropython_board"] == "RPI_PICO"
    assert sizes["gc_heap_bytes"] >= board["heap_bytes"]
