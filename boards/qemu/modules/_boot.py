# Frozen; run by boards/qemu/cmodule/board_boot.c at every boot (cold and soft reset), like
# ports/rp2/modules/_boot.py: mount the filesystem at / (qemufs.py), and put /lib on sys.path
# as the rp2 port's main.c does (where `mpremote mip install` puts packages, e.g. the native
# edgetune.mpy). Then boot.py and main.py from the filesystem run.
import sys

import qemufs

qemufs.mount()
if "/lib" not in sys.path:
    sys.path.append("/lib")
del qemufs, sys
