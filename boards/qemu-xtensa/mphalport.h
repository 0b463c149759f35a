// The qemu-xtensa board's HAL: console on QEMU's semihosting (main.c), no clock.
#include <stddef.h>
#include <stdint.h>
static inline mp_uint_t mp_hal_ticks_ms(void) {
    return 0;
}
static inline void mp_hal_set_interrupt_char(char c) {
    (void)c;
}
