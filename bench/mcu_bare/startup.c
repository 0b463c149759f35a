/*
 * Bare-metal start-up of bench/mcu_bare for qemu's mps2-an385 (a Cortex-M3; the ARMv6-M build
 * runs on it too, its instructions being a subset): the vector table, .data/.bss set-up, and
 * ARM semihosting for output and exit (qemu -semihosting).
 */
#include <stddef.h>
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

static int semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void bench_puts(const char *s) {
    semihost(0x04, s); /* SYS_WRITE0 */
}

void bench_exit(int code) {
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (0x20026) or ADP_Stopped_InternalError (0x20024) */
    semihost(0x18, (const void *)(uintptr_t)(code == 0 ? 0x20026 : 0x20024));
    for (;;) {
    }
}

void reset_handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    bench_exit(main());
}

static void fault_handler(void) {
    bench_puts("BENCH {\"kind\": \"fault\"}\n");
    bench_exit(1);
}

__attribute__((section(".isr_vector"), used)) static const void *const vectors[16] = {
    &_estack, (const void *)reset_handler, (const void *)fault_handler, (const void *)fault_handler,
    (const void *)fault_handler, (const void *)fault_handler, (const void *)fault_handler,
};
