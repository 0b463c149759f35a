# Frozen modules of the edgetune qemu firmware (make firmware BOARD=qemu; scripts/firmware_qemu.sh).
# - modules/: time (SysTick-based; the qemu port has none), _boot.py and qemufs (LittleFS at "/"
#   in the second SSRAM; cmodule/board_boot.c runs _boot.py, then boot.py/main.py, at every boot).
# - the device app from firmware/ (every module except main.py, which `edgetune deploy` copies
#   to the filesystem, as on a real board).
# - the exported model (et_model.py, written by host/edgetune/device/freeze.py) is added by the
#   script's generated manifest in the build directory when MODEL= is given.
# No require(): micropython-lib is not available offline.
import os

freeze("modules")
_app = sorted(f for f in os.listdir("../../firmware") if f.endswith(".py") and f != "main.py")
if _app:
    freeze("../../firmware", tuple(_app))
