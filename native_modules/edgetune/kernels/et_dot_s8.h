/*
 * Int8 dot-product inner loops shared by the CONV_2D and FULLY_CONNECTED
 * kernels. The C loops here are the reference and what every target but
 * Cortex-M runs; on ARMv7-M (Cortex-M3/M4/M7) and ARMv6-M (Cortex-M0/M0+)
 * the 4- and 3-row loops are assembly (et_dot4_armv7m.c, et_dot4_armv6m.c:
 * 2.56 and 4.0 instructions per multiply-accumulate, bench/mcu.py), with the
 * same sums.
 *
 * Four output channels are computed per pass: each input value is loaded and
 * offset once for the four weight rows. The rows are four independent pointers,
 * so a weight-trained layer mixes flash rows and RAM-copy rows in one pass
 * (et_rows4_s8) instead of recomputing its trained channels.
 * The sums are accumulated in uint32_t, wrapping modulo 2^32 like TFLM's int32 on real targets; addition modulo 2^32
 * is associative and commutative, so the result has the same bits as the
 * one-term-at-a-time reference loop.
 */
#ifndef EDGETUNE_ET_DOT_S8_H
#define EDGETUNE_ET_DOT_S8_H

#include <stddef.h>
#include <stdint.h>

/*
 * ET_SPECIALIZE - on a static function holding a kernel's body that two entry points
 * call, one with map == NULL: gcc/clang inline it into both, so the plain
 * inference entry point has no row lookup left. Plain inline elsewhere.
 */
#if defined(__GNUC__)
#define ET_SPECIALIZE inline __attribute__((always_inline))
#else
#define ET_SPECIALIZE inline
#endif

/*
 * et_dot4_rows_s8 - for j < 4 and i < n: acc[j] += wj[i] * (x[i] + offset), modulo 2^32,
 * with four independent weight rows w0..w3 (e.g. some in flash, some in a RAM copy).
 * Nothing is added if n <= 0.
 */
/* et_dot4_armv6m.c / et_dot4_armv7m.c: the same loop in assembly (n >= 1) */
#if defined(__ARM_ARCH_6M__)
#define ET_DOT4_ASM et_dot4_rows_s8_armv6m
#define ET_DOT3_ASM et_dot3_rows_s8_armv6m
#elif defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
#define ET_DOT4_ASM et_dot4_rows_s8_armv7m
#define ET_DOT3_ASM et_dot3_rows_s8_armv7m
#endif
#if defined(ET_DOT4_ASM)
void ET_DOT4_ASM(const int8_t *x, const int8_t *const rows[4], int32_t n, int32_t offset, uint32_t acc[4]);
void ET_DOT3_ASM(const int8_t *x, const int8_t *const rows[3], int32_t n, int32_t offset, uint32_t acc[3]);
#endif

static inline void et_dot4_rows_s8(const int8_t *x, const int8_t *w0, const int8_t *w1, const int8_t *w2,
    const int8_t *w3, int32_t n, int32_t offset, uint32_t acc[4]) {
#if defined(ET_DOT4_ASM)
    if (n > 0) {
        const int8_t *const rows[4] = {w0, w1, w2, w3};
        ET_DOT4_ASM(x, rows, n, offset, acc);
    }
    return;
#endif
    uint32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int32_t i = n; i > 0; --i) {
        const int32_t xo = *x++ + offset;
        a0 += (uint32_t)(*w0++ * xo);
        a1 += (uint32_t)(*w1++ * xo);
        a2 += (uint32_t)(*w2++ * xo);
        a3 += (uint32_t)(*w3++ * xo);
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/*
 * et_dot_rows_s8 - et_dot4_rows_s8 for a group of n_rows (1 to 4) channels with rows w[0..3]
 * (rows past n_rows repeat the last one, their sums are dropped): on the Cortex-M assembly
 * targets a group of fewer than 4 channels runs the three-row loop.
 */
static inline void et_dot_rows_s8(const int8_t *x, const int8_t *const w[4], int32_t n_rows, int32_t n,
    int32_t offset, uint32_t acc[4]) {
#if defined(ET_DOT3_ASM)
    if (n > 0) {
        if (n_rows < 4) {
            ET_DOT3_ASM(x, w, n, offset, acc);
        } else {
            ET_DOT4_ASM(x, w, n, offset, acc);
        }
    }
    return;
#else
    (void)n_rows;
#endif
    et_dot4_rows_s8(x, w[0], w[1], w[2], w[3], n, offset, acc);
}

/*
 * et_weight_row_s8 - the weights of output channel c: row map[c] of `ram` if map != NULL
 * and map[c] >= 0 (a trained channel's RAM copy, docs/training.md §2), else row c of
 * `filter`; rows are per_channel weights long.
 */
static inline const int8_t *et_weight_row_s8(const int8_t *filter, const int16_t *map, const int8_t *ram,
    int32_t per_channel, int32_t c) {
    if (map && map[c] >= 0) {
        return ram + (size_t)map[c] * per_channel;
    }
    return filter + (size_t)c * per_channel;
}

/*
 * et_dot_s8 - returns acc + sum_{i < n} w[i] * (x[i] + offset), modulo 2^32 (acc if n <= 0).
 */
static inline uint32_t et_dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t offset, uint32_t acc) {
    for (; n >= 4; n -= 4) {
        acc += (uint32_t)(w[0] * (x[0] + offset));
        acc += (uint32_t)(w[1] * (x[1] + offset));
        acc += (uint32_t)(w[2] * (x[2] + offset));
        acc += (uint32_t)(w[3] * (x[3] + offset));
        x += 4;
        w += 4;
    }
    for (; n > 0; --n) {
        acc += (uint32_t)(*w++ * (*x++ + offset));
    }
    return acc;
}

/*
 * et_rows4_s8 - row[j] = et_weight_row_s8(filter, map, ram, per_channel, min(c + j, c + n - 1)) + off
 * for j < 4 (channels c..c+n-1 must exist, 1 <= n <= 4): a group of fewer than four channels
 * repeats its last row, so the four-row loop serves it too (the extra sums are dropped).
 * Without a map the rows are one base pointer and its strides.
 */
static inline void et_rows4_s8(const int8_t *filter, const int16_t *map, const int8_t *ram, int32_t per_channel,
    int32_t c, int32_t n, size_t off, const int8_t *row[4]) {
    if (map == NULL) {
        const int8_t *w = filter + (size_t)c * per_channel + off;
        row[0] = w;
        row[1] = n > 1 ? w + per_channel : w;
        row[2] = n > 2 ? w + 2 * per_channel : row[1];
        row[3] = n > 3 ? w + 3 * per_channel : row[2];
        return;
    }
    for (int32_t j = 0; j < 4; ++j) {
        row[j] = et_weight_row_s8(filter, map, ram, per_channel, c + (j < n ? j : n - 1)) + off;
    }
}

#endif /* EDGETUNE_ET_DOT_S8_H */
