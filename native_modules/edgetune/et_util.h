/*
 * Small helpers every engine file shares (model.c, scheme.c, the training files, refit.c and
 * the fuzz/test harnesses): little-endian loads and stores of the .etm and weights-file fields,
 * 4-byte alignment of arena slots, and a tensor's shape as kernel dimensions.
 *
 * Plain C99, header-only (static inline), no MicroPython types.
 */
#ifndef EDGETUNE_ET_UTIL_H
#define EDGETUNE_ET_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model.h"

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "edgetune reads int32 data of the .etm in place and needs a little-endian target"
#endif

/* Little-endian loads (any alignment). */
static inline uint16_t et_ld_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t et_ld_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline int16_t et_ld_i16(const uint8_t *p) {
    return (int16_t)et_ld_u16(p);
}

static inline int32_t et_ld_i32(const uint8_t *p) {
    return (int32_t)et_ld_u32(p);
}

static inline float et_ld_f32(const uint8_t *p) {
    const uint32_t u = et_ld_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Little-endian stores. */
static inline void et_wr16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void et_wr32(uint8_t *p, uint32_t v) {
    et_wr16(p, v & 0xffffu);
    et_wr16(p + 2, v >> 16);
}

/* n rounded up to a multiple of 4 (arena slots, docs/training.md §6). */
static inline size_t et_align4(size_t n) {
    return (n + 3u) & ~(size_t)3u;
}

/* A tensor's NHWC (weights: OHWI) shape as the kernels' dimensions. */
static inline void et_dims_of(const et_tensor_t *t, et_dims_t *d) {
    d->n = t->shape[0];
    d->h = t->shape[1];
    d->w = t->shape[2];
    d->c = t->shape[3];
}

#endif /* EDGETUNE_ET_UTIL_H */
