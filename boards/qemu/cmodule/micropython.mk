# The qemu board's boot sequence (board_boot.c). Not part of native_modules/: only
# scripts/firmware_qemu.sh puts this directory (as qemu_board/) next to edgetune/ in the
# USER_C_MODULES directory it builds with.
SRC_USERMOD_C += $(USERMOD_DIR)/board_boot.c
