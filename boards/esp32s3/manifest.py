# Frozen modules of the edgetune ESP32-S3 firmware (make firmware BOARD=esp32s3).
# The esp32 port's own modules (without its require()s: micropython-lib may be absent), the
# device app from firmware/ (main.py included: it boots the app on a real board), and, with
# MODEL=, the exported model (et_model.py, added by scripts/firmware_esp32s3.sh).
import os

freeze("$(PORT_DIR)/modules")
include("$(MPY_DIR)/extmod/asyncio")
_app = sorted(f for f in os.listdir("../../firmware") if f.endswith(".py"))
if _app:
    freeze("../../firmware", tuple(_app))
