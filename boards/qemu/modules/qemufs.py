"""The qemu board's filesystem: LittleFS at "/" in the MPS2-AN385's second SSRAM.

The firmware (boards/qemu/mps2.ld) lives in the first 4 MB SSRAM at 0x00000000; QEMU's
mps2-an385 has another 4 MB ("ZBT SSRAM 2&3") at 0x20000000 that nothing else uses. The block
device is a window on it (uctypes.bytearray_at), so the filesystem costs no MicroPython heap,
is zero (unformatted) when qemu starts and survives soft resets (mpremote's, Ctrl-D, machine
.soft_reset) -- it is lost when the qemu process ends, like a RAM disk, and not otherwise.

The frozen _boot.py calls mount() at every boot: it mounts the LittleFS found there, or
formats one first. SIZE is the RP2040 port's (ports/rp2 RPI_PICO: 1408 KiB of LittleFS in
4 KiB blocks). mount(kib) with another size formats a fresh filesystem of that size.
"""

import os
import uctypes

try:
    import vfs
except ImportError:  # MicroPython < 1.23
    vfs = os

BASE = 0x20000000  # SSRAM 2&3 (4 MB)
LIMIT = 4 * 1024 * 1024
BLOCK = 4096
SIZE = 1408 * 1024


class SSRAMBlockDev:
    """LittleFS block device (extended interface) over `blocks` blocks of SSRAM at BASE."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.mem = memoryview(uctypes.bytearray_at(BASE, blocks * BLOCK))

    def readblocks(self, n, buf, off=0):
        a = n * BLOCK + off
        buf[:] = self.mem[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        a = n * BLOCK + (off or 0)
        self.mem[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return BLOCK
        if op == 6:  # erase (RAM: nothing to do)
            return 0
        return None


dev = None


def mount(kib=None):
    """Mount the SSRAM LittleFS at "/" (format it first if there is none) and chdir there.
    Idempotent. kib: a size other than the current one unmounts and formats a fresh
    filesystem of that size (its files are lost); None keeps what is there (SIZE at first)."""
    global dev
    blocks = (kib * 1024 if kib else SIZE) // BLOCK
    if not 2 <= blocks <= LIMIT // BLOCK:
        raise ValueError("qemufs: %d KiB does not fit the 4096 KiB SSRAM" % (blocks * BLOCK // 1024))
    if dev is None:
        try:
            vfs.umount("/")
        except OSError:
            pass
    elif kib is None or dev.blocks == blocks:
        return dev
    else:
        os.chdir("/")
        vfs.umount("/")
        dev = None
    d = SSRAMBlockDev(blocks)
    fresh = kib is not None
    if not fresh:
        try:
            vfs.mount(vfs.VfsLfs2(d), "/")
        except OSError:  # cold boot (zeroed SSRAM): no filesystem yet
            fresh = True
    if fresh:
        vfs.VfsLfs2.mkfs(d)
        vfs.mount(vfs.VfsLfs2(d), "/")
    os.chdir("/")
    dev = d
    return d
