# Frozen modules of the edgetune RP2040 firmware (make firmware BOARD=rp2040).
# Like ports/rp2/boards/manifest.py but without require(): micropython-lib is not available
# offline. The device app and the exported model will be added here once firmware/ has them.
freeze("$(PORT_DIR)/modules")
include("$(MPY_DIR)/extmod/asyncio")
