"""A RAM filesystem for the qemu firmware: `import qemufs` mounts LittleFS on a RAM block
device at "/" and changes into it, so the device app's files (model, config, trained weights,
replayed sessions) and `mpremote cp` work as on a board. The contents live in the MicroPython
heap and vanish at a soft reset (mpremote soft-resets before its first command: keep one
mpremote session, or use `mpremote resume`). mount(kib) chooses the size (default 24 KiB).
"""

import os

try:
    import vfs
except ImportError:  # MicroPython < 1.23
    vfs = os

BLOCK = 256


class RAMBlockDev:
    def __init__(self, blocks):
        self.data = bytearray(blocks * BLOCK)
        self.blocks = blocks

    def readblocks(self, n, buf, off=0):
        a = n * BLOCK + off
        buf[:] = memoryview(self.data)[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if off is None:  # whole blocks (simple interface); LittleFS erases first
            off = 0
        a = n * BLOCK + off
        self.data[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return BLOCK
        if op == 6:  # erase
            return 0
        return None


dev = None


def mount(kib=24):
    """Format and mount a fresh RAM filesystem of `kib` KiB at "/". Idempotent for the same
    size; another size unmounts the current one (its files are lost) and mounts a fresh one."""
    global dev
    if dev is not None:
        if dev.blocks == kib * 1024 // BLOCK:
            return dev
        os.chdir("/")
        vfs.umount("/")
        dev = None
    dev = RAMBlockDev(kib * 1024 // BLOCK)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/")
    os.chdir("/")
    return dev


mount()
