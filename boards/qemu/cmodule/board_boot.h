// Forced into every file of the qemu build (-include, scripts/firmware_qemu.sh) so that
// py/runtime.c's MICROPY_PORT_INIT_FUNC hook (-DMICROPY_PORT_INIT_FUNC=edgetune_qemu_boot())
// has a declaration. See board_boot.c.
void edgetune_qemu_boot(void);
