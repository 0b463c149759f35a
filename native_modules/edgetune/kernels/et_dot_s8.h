/*
 * Int8 dot-product inner loops shared by the CONV_2D and FULLY_CONNECTED
 * kernels, written so that gcc -O2 for a Cortex-M3 emits LDRSB/ADD then
 * LDRSB/MLA per channel: 12 instructions per 4 multiply-accumulates in the
 * 4-channel loop (bench/mcu.py measures it on the emulated Cortex-M3).
 *
 * Four output channels are computed per pass: each input value is loaded and
 * offset once for the four weight rows. The sums are accumulated in uint32_t,
 * wrapping modulo 2^32 like TFLM's int32 on real targets; addition modulo 2^32
 * is associative and commutative, so the result has the same bits as the
 * one-term-at-a-time reference loop.
 */
#ifndef EDGETUNE_ET_DOT_S8_H
#define EDGETUNE_ET_DOT_S8_H

#include <stdint.h>

/*
 * et_dot4_s8 - for j < 4 and i < n: acc[j] += w[j*w_stride + i] * (x[i] + offset), modulo 2^32.
 * Nothing is added if n <= 0.
 */
static inline void et_dot4_s8(const int8_t *x, const int8_t *w, int32_t w_stride, int32_t n, int32_t offset,
    uint32_t acc[4]) {
    const int8_t *w0 = w, *w1 = w0 + w_stride, *w2 = w1 + w_stride, *w3 = w2 + w_stride;
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

#endif /* EDGETUNE_ET_DOT_S8_H */
