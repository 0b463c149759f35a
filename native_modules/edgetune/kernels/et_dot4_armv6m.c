/*
 * The four-row int8 dot product of et_dot_s8.h (et_dot4_rows_s8) for ARMv6-M (Cortex-M0/M0+,
 * the RP2040), in assembly. Compiled only for ARMv6-M; every other target (and the reference)
 * is the C loop in et_dot_s8.h, which gives the same sums (addition modulo 2^32).
 *
 * Why assembly: ARMv6-M's LDRSB only takes a register offset and MULS/ADD-with-flags only low
 * registers, so gcc's allocation of the C loop (4 row pointers, 4 accumulators, input pointer,
 * offset, counter: 11 live values for 8 low registers) spills and reaches 5.5 instructions per
 * multiply-accumulate. Here the eight low registers hold the input base, a negative index
 * counting up to 0 (LDRSB [base, index] for every row: no pointer increments), the input
 * value, the weight value and the four row bases; the four accumulators and the input offset
 * live in r8-r12, which ADD (register, no flags) reaches. Per input element:
 * LDRSB + ADD offset, 4 x (LDRSB, MULS, ADD), ADDS + BNE = 16 instructions for 4 MACs.
 *
 * et_dot4_rows_s8_armv6m(x, rows, n, offset, acc): for j < 4 and i < n (n >= 1):
 * acc[j] += rows[j][i] * (x[i] + offset), modulo 2^32.
 */
#include <stdint.h>

#include "et_dot_s8.h"

#if defined(__ARM_ARCH_6M__)

__attribute__((naked, noinline)) void et_dot4_rows_s8_armv6m(const int8_t *x, const int8_t *const rows[4],
    int32_t n, int32_t offset, uint32_t acc[4]) {
    (void)x;
    (void)rows;
    (void)n;
    (void)offset;
    (void)acc;
    __asm__ volatile(
        ".syntax unified\n"
        "    push  {r4, r5, r6, r7, lr}\n"
        "    mov   r4, r8\n"
        "    mov   r5, r9\n"
        "    mov   r6, r10\n"
        "    mov   r7, r11\n"
        "    push  {r4, r5, r6, r7}\n"
        "    ldr   r4, [sp, #36]\n"      /* acc (5th argument, above the 9 saved words) */
        "    ldr   r5, [r4, #0]\n"
        "    mov   r8, r5\n"
        "    ldr   r5, [r4, #4]\n"
        "    mov   r9, r5\n"
        "    ldr   r5, [r4, #8]\n"
        "    mov   r10, r5\n"
        "    ldr   r5, [r4, #12]\n"
        "    mov   r11, r5\n"
        "    mov   r12, r3\n"            /* offset */
        "    ldr   r4, [r1, #0]\n"
        "    ldr   r5, [r1, #4]\n"
        "    ldr   r6, [r1, #8]\n"
        "    ldr   r7, [r1, #12]\n"
        "    adds  r0, r0, r2\n"         /* every base at its end, the index from -n up to 0 */
        "    adds  r4, r4, r2\n"
        "    adds  r5, r5, r2\n"
        "    adds  r6, r6, r2\n"
        "    adds  r7, r7, r2\n"
        "    rsbs  r1, r2, #0\n"
        "1:\n"
        "    ldrsb r2, [r0, r1]\n"
        "    add   r2, r12\n"
        "    ldrsb r3, [r4, r1]\n"
        "    muls  r3, r2, r3\n"
        "    add   r8, r3\n"
        "    ldrsb r3, [r5, r1]\n"
        "    muls  r3, r2, r3\n"
        "    add   r9, r3\n"
        "    ldrsb r3, [r6, r1]\n"
        "    muls  r3, r2, r3\n"
        "    add   r10, r3\n"
        "    ldrsb r3, [r7, r1]\n"
        "    muls  r3, r2, r3\n"
        "    add   r11, r3\n"
        "    adds  r1, r1, #1\n"
        "    bne   1b\n"
        "    ldr   r4, [sp, #36]\n"
        "    mov   r5, r8\n"
        "    str   r5, [r4, #0]\n"
        "    mov   r5, r9\n"
        "    str   r5, [r4, #4]\n"
        "    mov   r5, r10\n"
        "    str   r5, [r4, #8]\n"
        "    mov   r5, r11\n"
        "    str   r5, [r4, #12]\n"
        "    pop   {r4, r5, r6, r7}\n"
        "    mov   r8, r4\n"
        "    mov   r9, r5\n"
        "    mov   r10, r6\n"
        "    mov   r11, r7\n"
        "    pop   {r4, r5, r6, r7, pc}\n");
}

/* et_dot3_rows_s8_armv6m - the same for three rows (a group of 3 channels): 13 per 3 MACs */
__attribute__((naked, noinline)) void et_dot3_rows_s8_armv6m(const int8_t *x, const int8_t *const rows[3],
    int32_t n, int32_t offset, uint32_t acc[3]) {
    (void)x;
    (void)rows;
    (void)n;
    (void)offset;
    (void)acc;
    __asm__ volatile(
        ".syntax unified\n"
        "    push  {r4, r5, r6, r7, lr}\n"
        "    mov   r4, r8\n"
        "    mov   r5, r9\n"
        "    mov   r6, r10\n"
        "    push  {r4, r5, r6}\n"
        "    ldr   r4, [sp, #32]\n"      /* acc (5th argument, above the 8 saved words) */
        "    ldr   r5, [r4, #0]\n"
        "    mov   r8, r5\n"
        "    ldr   r5, [r4, #4]\n"
        "    mov   r9, r5\n"
        "    ldr   r5, [r4, #8]\n"
        "    mov   r10, r5\n"
        "    mov   r12, r3\n"
        "    ldr   r4, [r1, #0]\n"
        "    ldr   r5, [r1, #4]\n"
        "    ldr   r6, [r1, #8]\n"
        "    adds  r0, r0, r2\n"
        "    adds  r4, r4, r2\n"
        "    adds  r5, r5, r2\n"
        "    adds  r6, r6, r2\n"
        "    rsbs  r1, r2, #0\n"
        "1:\n"
        "    ldrsb r2, [r0, r1]\n"
        "    add   r2, r12\n"
        "    ldrsb r3, [r4, r1]\n"
        "    muls  r3, r2, r3\n"
        "    add   r8, r3\n"
        "    ldrsb r3, [r5, r1]\n"
        "    muls  r3, r2, r3\n"
        "    add   r9, r3\n"
        "    ldrsb r3, [r6, r1]\n"
        "    muls  r3, r2, r3\n"
        "    add   r10, r3\n"
        "    adds  r1, r1, #1\n"
        "    bne   1b\n"
        "    ldr   r4, [sp, #32]\n"
        "    mov   r5, r8\n"
        "    str   r5, [r4, #0]\n"
        "    mov   r5, r9\n"
        "    str   r5, [r4, #4]\n"
        "    mov   r5, r10\n"
        "    str   r5, [r4, #8]\n"
        "    pop   {r4, r5, r6}\n"
        "    mov   r8, r4\n"
        "    mov   r9, r5\n"
        "    mov   r10, r6\n"
        "    pop   {r4, r5, r6, r7, pc}\n");
}

#else

/* ISO C forbids an empty translation unit */
typedef int et_dot4_armv6m_unused;

#endif
