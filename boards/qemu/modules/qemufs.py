"""The qemu board's filesystem: LittleFS at "/" in the MPS2-AN385's second SSRAM.

The firmware (boards/qemu/mps2.ld) lives in the first 4 MB SSRAM at 0x00000000; QEMU's
mps2-an385 has another 4 MB ("ZBT SSRAM 2&3") at 0x20000000 that nothing else uses. The block
device is a window on it (uctypes.bytearray_at), so the filesystem costs no MicroPython heap,
is zero (unformatted) when qemu starts and survives soft resets (mpremote's, Ctrl-D, machine
.soft_reset) -- it is lost when the qemu process ends, like a RAM disk, and not otherwise.

The frozen _boot.py calls mount() at every boot: it mounts the LittleFS found there, or
formats one first. SIZE is the RP2040 port's (ports/rp2 RPI_PICO: 1408 KiB of LittleFS in
4 KiB blocks). mount(kib) with another size formats a fresh filesystem of that size (256-byte
blocks below 256 KiB, so that a small one still holds files); its geometry is noted at the end
of the SSRAM (GEOMETRY), so the next boot mounts it again.
"""

import os
import uctypes

try:
    import vfs
except ImportError:  # MicroPython < 1.23
    vfs = os

BASE = 0x20000000  # SSRAM 2&3 (4 MB)
LIMIT = 4 * 1024 * 1024 - 4096  # the last 4 KiB: GEOMETRY
GEOMETRY = BASE + LIMIT  # b"ETFS", block size, block count (little-endian u32s)
BLOCK = 4096
SIZE = 1408 * 1024


class SSRAMBlockDev:
    """LittleFS block device (extended interface) over `blocks` blocks of `block` bytes of SSRAM
    at BASE."""

    def __init__(self, blocks, block=BLOCK):
        self.blocks, self.block = blocks, block
        self.mem = memoryview(uctypes.bytearray_at(BASE, blocks * block))

    def readblocks(self, n, buf, off=0):
        a = n * self.block + off
        buf[:] = self.mem[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        a = n * self.block + (off or 0)
        self.mem[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return self.block
        if op == 6:  # erase (RAM: nothing to do)
            return 0
        return None


dev = None


def _geometry():
    """(block size, block count) noted by the last format, else the default SIZE in BLOCKs."""
    g = uctypes.bytearray_at(GEOMETRY, 12)
    if bytes(g[:4]) == b"ETFS":
        block = int.from_bytes(g[4:8], "little")
        blocks = int.from_bytes(g[8:12], "little")
        if block in (256, BLOCK) and 2 <= blocks and block * blocks <= LIMIT:
            return block, blocks
    return BLOCK, SIZE // BLOCK


def mount(kib=None):
    """Mount the SSRAM LittleFS at "/" (format it first if there is none) and chdir there.
    Idempotent. kib: a size other than the current one unmounts and formats a fresh
    filesystem of that size (its files are lost); None keeps what is there (SIZE at first)."""
    global dev
    if kib is None:
        block, blocks = _geometry()
    else:
        block = BLOCK if kib >= 256 else 256
        blocks = kib * 1024 // block
        if not 2 <= blocks or blocks * block > LIMIT:
            raise ValueError("qemufs: %d KiB does not fit the SSRAM (at most %d KiB)" % (kib, LIMIT // 1024))
    if dev is None:
        try:
            vfs.umount("/")
        except OSError:
            pass
    elif kib is None or (dev.blocks, dev.block) == (blocks, block):
        return dev
    else:
        os.chdir("/")
        vfs.umount("/")
        dev = None
    d = SSRAMBlockDev(blocks, block)
    fresh = kib is not None
    if not fresh:
        try:
            vfs.mount(vfs.VfsLfs2(d), "/")
        except OSError:  # cold boot (zeroed SSRAM): no filesystem yet
            fresh = True
    if fresh:
        vfs.VfsLfs2.mkfs(d)
        vfs.mount(vfs.VfsLfs2(d), "/")
        g = uctypes.bytearray_at(GEOMETRY, 12)
        g[:] = b"ETFS" + block.to_bytes(4, "little") + blocks.to_bytes(4, "little")
    os.chdir("/")
    dev = d
    return d
