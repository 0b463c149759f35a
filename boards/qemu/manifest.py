# Frozen modules of the edgetune qemu firmware (make firmware BOARD=qemu; scripts/firmware_qemu.sh).
# - modules/: time (SysTick-based; the qemu port has none) and qemufs (RAM LittleFS at "/").
# - the device app from firmware/ (every module except main.py: the qemu port runs no boot
#   script, the user or test imports app).
# - the exported model (et_model.py, written by host/edgetune/freeze.py) is added by the
#   script's generated manifest in the build directory when MODEL= is given.
# No require(): micropython-lib is not available offline.
import os

freeze("modules")
_app = sorted(f for f in os.listdir("../../firmware") if f.endswith(".py") and f != "main.py")
if _app:
    freeze("../../firmware", tuple(_app))
