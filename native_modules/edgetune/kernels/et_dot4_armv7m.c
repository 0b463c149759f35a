/*
 * The four-row int8 dot product of et_dot_s8.h (et_dot4_rows_s8) for ARMv7-M (Cortex-M3/M4/M7
 * built without the DSP path), in assembly. Compiled only for ARMv7-M; every other target (and
 * the reference) is the C loop in et_dot_s8.h, which gives the same sums (addition modulo 2^32).
 *
 * Why assembly: gcc's -O2 code for the C loop is LDRSB + ADD offset, 4 x (LDRSB, MLA), SUBS + BNE:
 * 12 instructions per 4 MACs (3.0 per MAC), and unrolling it in C makes gcc spill. Here eight input
 * elements per iteration share one loop branch: 8 x (LDRSB + ADD offset + 4 x (LDRSB, MLA)) +
 * SUBS + BNE = 82 instructions per 32 MACs (2.5625 per MAC), with the row pointers in r4-r7, the
 * accumulators in r8-r11 and the input offset in r12; the n % 8 rest runs one element at a time.
 *
 * et_dot4_rows_s8_armv7m(x, rows, n, offset, acc): for j < 4 and i < n (n >= 1):
 * acc[j] += rows[j][i] * (x[i] + offset), modulo 2^32.
 */
#include <stdint.h>

#include "et_dot_s8.h"

#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)

#define ET_DOT4_STEP                     \
    "    ldrsb r2, [r0], #1\n"           \
    "    add   r2, r2, r12\n"            \
    "    ldrsb r3, [r4], #1\n"           \
    "    mla   r8, r3, r2, r8\n"         \
    "    ldrsb r3, [r5], #1\n"           \
    "    mla   r9, r3, r2, r9\n"         \
    "    ldrsb r3, [r6], #1\n"           \
    "    mla   r10, r3, r2, r10\n"       \
    "    ldrsb r3, [r7], #1\n"           \
    "    mla   r11, r3, r2, r11\n"

__attribute__((naked, noinline)) void et_dot4_rows_s8_armv7m(const int8_t *x, const int8_t *const rows[4],
    int32_t n, int32_t offset, uint32_t acc[4]) {
    (void)x;
    (void)rows;
    (void)n;
    (void)offset;
    (void)acc;
    __asm__ volatile(
        ".syntax unified\n"
        "    push  {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n"
        "    ldr   lr, [sp, #36]\n"      /* acc (5th argument, above the 9 saved words) */
        "    ldm   lr, {r8, r9, r10, r11}\n"
        "    ldm   r1, {r4, r5, r6, r7}\n"
        "    mov   r12, r3\n"
        "    and   lr, r2, #7\n"         /* the rest, one element at a time */
        "    lsrs  r1, r2, #3\n"         /* blocks of eight elements */
        "    beq   2f\n"
        "1:\n"
        ET_DOT4_STEP ET_DOT4_STEP ET_DOT4_STEP ET_DOT4_STEP ET_DOT4_STEP ET_DOT4_STEP ET_DOT4_STEP ET_DOT4_STEP
        "    subs  r1, r1, #1\n"
        "    bne   1b\n"
        "2:\n"
        "    cmp   lr, #0\n"
        "    beq   4f\n"
        "3:\n"
        ET_DOT4_STEP
        "    subs  lr, lr, #1\n"
        "    bne   3b\n"
        "4:\n"
        "    ldr   r1, [sp, #36]\n"
        "    stm   r1, {r8, r9, r10, r11}\n"
        "    pop   {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n");
}

#define ET_DOT3_STEP                     \
    "    ldrsb r2, [r0], #1\n"           \
    "    add   r2, r2, r12\n"            \
    "    ldrsb r3, [r4], #1\n"           \
    "    mla   r8, r3, r2, r8\n"         \
    "    ldrsb r3, [r5], #1\n"           \
    "    mla   r9, r3, r2, r9\n"         \
    "    ldrsb r3, [r6], #1\n"           \
    "    mla   r10, r3, r2, r10\n"

/* et_dot3_rows_s8_armv7m - the same for three rows (a group of 3 channels): 66 per 24 MACs */
__attribute__((naked, noinline)) void et_dot3_rows_s8_armv7m(const int8_t *x, const int8_t *const rows[3],
    int32_t n, int32_t offset, uint32_t acc[3]) {
    (void)x;
    (void)rows;
    (void)n;
    (void)offset;
    (void)acc;
    __asm__ volatile(
        ".syntax unified\n"
        "    push  {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n"
        "    ldr   lr, [sp, #36]\n"
        "    ldm   lr, {r8, r9, r10}\n"
        "    ldm   r1, {r4, r5, r6}\n"
        "    mov   r12, r3\n"
        "    and   lr, r2, #7\n"
        "    lsrs  r1, r2, #3\n"
        "    beq   2f\n"
        "1:\n"
        ET_DOT3_STEP ET_DOT3_STEP ET_DOT3_STEP ET_DOT3_STEP ET_DOT3_STEP ET_DOT3_STEP ET_DOT3_STEP ET_DOT3_STEP
        "    subs  r1, r1, #1\n"
        "    bne   1b\n"
        "2:\n"
        "    cmp   lr, #0\n"
        "    beq   4f\n"
        "3:\n"
        ET_DOT3_STEP
        "    subs  lr, lr, #1\n"
        "    bne   3b\n"
        "4:\n"
        "    ldr   r1, [sp, #36]\n"
        "    stm   r1, {r8, r9, r10}\n"
        "    pop   {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n");
}

#else

/* ISO C forbids an empty translation unit */
typedef int et_dot4_armv7m_unused;

#endif
