# Frozen modules of the edgetune RP2040 firmware (make firmware BOARD=rp2040 [MODEL=...]).
# - the rp2 port's own modules (rp2, _boot) and asyncio, like ports/rp2/boards/manifest.py but
#   without its require()s: micropython-lib is not available offline;
# - the device app (firmware/manifest.py: every app module except main.py, which stays a file on
#   the board's filesystem);
# - with MODEL=, the exported model as module et_model (added by scripts/firmware_rp2040.sh).
freeze("$(PORT_DIR)/modules")
include("$(MPY_DIR)/extmod/asyncio")
include("../../firmware/manifest.py")
