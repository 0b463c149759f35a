# Frozen; run by boards/qemu/cmodule/board_boot.c at every boot (cold and soft reset), like
# ports/rp2/modules/_boot.py: mount the filesystem at / (qemufs.py). Then boot.py and main.py
# from the filesystem run.
import qemufs

qemufs.mount()
del qemufs
