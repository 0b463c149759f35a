/*
 * CONV_2D's inner loop for two output pixels and three output channels at once, ARMv7-M
 * (Cortex-M3/M4/M7) assembly; used by et_conv_s8.c (ET_CONV_PAIR) for the interior pixels of an
 * inference conv, where the input offset is folded into the accumulators' start values
 * (sum w * (x + off) = sum w * x + off * sum w, exact modulo 2^32). Every other target, and every
 * other pixel, takes the 4-row loop of et_dot_s8.h; the sums are the same (addition modulo 2^32).
 *
 * Why: each weight byte loaded serves both pixels, each input byte all three channels:
 * per input element LDRSB x1, LDRSB x0, 3 x (LDRSB w, MLA, MLA) = 11 instructions per 6 MACs,
 * eight elements per loop branch (90 per 48 MACs, 1.875 per MAC, against 2.5625 for one pixel
 * and four channels). The three weight rows are w, w + wstride and w + 2 * wstride (one post-
 * incremented pointer and register offsets), the second pixel's input is x + xstride.
 *
 * et_conv_pair3_s8_armv7m(x, xstride, w, wstride, n, acc): for i < n (n >= 1), p < 2, j < 3:
 * acc[2 * j + p] += w[j * wstride + i] * x[p * xstride + i], modulo 2^32.
 */
#include <stdint.h>

#include "et_dot_s8.h"

#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)

#define ET_PAIR3_STEP                    \
    "    ldrsb r11, [r0, r1]\n"          \
    "    ldrsb r10, [r0], #1\n"          \
    "    ldrsb r12, [r2, r3]\n"          \
    "    mla   r6, r12, r10, r6\n"       \
    "    mla   r7, r12, r11, r7\n"       \
    "    ldrsb r12, [r2, r3, lsl #1]\n"  \
    "    mla   r8, r12, r10, r8\n"       \
    "    mla   r9, r12, r11, r9\n"       \
    "    ldrsb r12, [r2], #1\n"          \
    "    mla   r4, r12, r10, r4\n"       \
    "    mla   r5, r12, r11, r5\n"

__attribute__((naked, noinline)) void et_conv_pair3_s8_armv7m(const int8_t *x, int32_t xstride, const int8_t *w,
    int32_t wstride, int32_t n, uint32_t acc[6]) {
    (void)x;
    (void)xstride;
    (void)w;
    (void)wstride;
    (void)n;
    (void)acc;
    __asm__ volatile(
        ".syntax unified\n"
        "    push  {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n"
        "    ldr   lr, [sp, #40]\n"      /* acc (6th argument) */
        "    ldm   lr, {r4, r5, r6, r7, r8, r9}\n"
        "    ldr   lr, [sp, #36]\n"      /* n (5th argument) */
        "    str   lr, [sp, #-4]!\n"     /* the rest count, n % 8, is taken from it below */
        "    lsrs  lr, lr, #3\n"
        "    beq   2f\n"
        "1:\n"
        ET_PAIR3_STEP ET_PAIR3_STEP ET_PAIR3_STEP ET_PAIR3_STEP ET_PAIR3_STEP ET_PAIR3_STEP ET_PAIR3_STEP
        ET_PAIR3_STEP
        "    subs  lr, lr, #1\n"
        "    bne   1b\n"
        "2:\n"
        "    ldr   lr, [sp], #4\n"
        "    ands  lr, lr, #7\n"
        "    beq   4f\n"
        "3:\n"
        ET_PAIR3_STEP
        "    subs  lr, lr, #1\n"
        "    bne   3b\n"
        "4:\n"
        "    ldr   lr, [sp, #40]\n"
        "    stm   lr, {r4, r5, r6, r7, r8, r9}\n"
        "    pop   {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n");
}

#else

/* ISO C forbids an empty translation unit */
typedef int et_conv_pair_armv7m_unused;

#endif
