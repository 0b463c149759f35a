/*
 * Structure-aware libFuzzer mutators (LLVMFuzzerCustomMutator) for .etm model files and
 * trained-weights files (docs/reliability.md §1). Random byte flips almost never get past the
 * CRC and rarely hit a field that matters; these rewrite whole fields of the header, of a tensor
 * or layer record, of a per-channel scale, a weight, a multiplier or a weights-file value with
 * "interesting" values (0, +-1, the int8/int16/uint16 limits, -128, NaN, +-inf, 3.4e38, ...),
 * move a blob (scales, data, multipliers) to the very end of the file so that a read past it
 * leaves the harness's exact-size heap copy, and then fix the file size and CRC. One input in
 * four still goes to libFuzzer's own byte-level mutator.
 *
 * Offsets follow docs/etm-format.md: header 64 bytes (counts at 16/18, tensor table offset 24,
 * layer table offset 28), tensor records of 32 bytes, layer records of 48 bytes; weights files:
 * 32-byte header, size at 8, CRC of bytes 16.. at 12.
 */
#ifndef EDGETUNE_FUZZ_MUTATE_H
#define EDGETUNE_FUZZ_MUTATE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model.h"
#include "et_util.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

typedef struct {
    uint64_t s;
} fzm_rng_t;

static uint32_t fzm_next(fzm_rng_t *r) {
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(r->s >> 33);
}

static uint32_t fzm_below(fzm_rng_t *r, uint32_t n) {
    return n ? fzm_next(r) % n : 0;
}

/* An interesting integer for a field of `bytes` bytes (1, 2 or 4). */
static uint32_t fzm_int(fzm_rng_t *r, int bytes) {
    static const uint32_t v8[] = { 0, 1, 2, 3, 0x7f, 0x80, 0x81, 0xfe, 0xff };
    static const uint32_t v16[] = { 0, 1, 2, 4, 0x7fff, 0x8000, 0x8001, 0xffff, 0xfffe, 255, 256, 1024 };
    static const uint32_t v32[] = {
        0, 1, 2, 0x7fffffffu, 0x80000000u, 0xffffffffu, 0xfffffff0u, 0x10000u, 0xffffu, 0x7fffu, 0x8000u,
        0x3f800000u, 0x40000000u, 31, 30, 0xffffffe1u /* -31 */, 0xffffffe0u /* -32 */, 64, 128, 0xffffff80u,
    };
    switch (fzm_below(r, 4)) {
        case 0:
            return fzm_next(r) & (bytes == 1 ? 0xffu : bytes == 2 ? 0xffffu : 0xffffffffu);
        case 1: /* a small delta, applied by the caller as a replacement */
            return fzm_below(r, 17);
        default:
            if (bytes == 1) {
                return v8[fzm_below(r, sizeof v8 / sizeof v8[0])];
            }
            if (bytes == 2) {
                return v16[fzm_below(r, sizeof v16 / sizeof v16[0])];
            }
            return v32[fzm_below(r, sizeof v32 / sizeof v32[0])];
    }
}

/* An interesting float32 bit pattern. */
static uint32_t fzm_float(fzm_rng_t *r) {
    static const uint32_t v[] = {
        0x00000000u, 0x80000000u, 0x7fc00000u /* NaN */, 0x7f800000u /* inf */, 0xff800000u /* -inf */,
        0x7f7fffffu /* 3.4e38 */, 0x00000001u /* denormal */, 0x00800000u /* FLT_MIN */, 0x3f800000u /* 1 */,
        0xbf800000u /* -1 */, 0x4f800000u /* 2^32 */, 0x4f800001u /* just above 2^32 */, 0x5f800000u /* 2^64 */,
        0x2f800000u /* 2^-32 */, 0x3c23d70au /* 0.01 */, 0x1e3ce508u /* 1e-20 */,
    };
    return fzm_below(r, 4) ? v[fzm_below(r, sizeof v / sizeof v[0])] : fzm_next(r);
}

/* Rewrite one field at p (size bytes 1/2/4, or 0 for a float32) with an interesting value. */
static void fzm_field(fzm_rng_t *r, uint8_t *p, int bytes) {
    if (bytes == 0) {
        et_wr32(p, fzm_float(r));
    } else if (bytes == 1) {
        p[0] = (uint8_t)fzm_int(r, 1);
    } else if (bytes == 2) {
        et_wr16(p, fzm_int(r, 2));
    } else {
        et_wr32(p, fzm_int(r, 4));
    }
}

/* Copy [off, off + n) of the file to its (4-aligned) end and return the new offset, or 0 when
 * it does not fit max_size. A read past the blob then leaves the buffer. */
static uint32_t fzm_move_to_end(uint8_t *data, size_t *size, size_t max_size, uint32_t off, uint32_t n) {
    const size_t at = (*size + 3u) & ~(size_t)3u;
    if (off > *size || n > *size - off || at + n > max_size || n == 0) {
        return 0;
    }
    memset(data + *size, 0, at - *size);
    memmove(data + at, data + off, n);
    *size = at + n;
    return (uint32_t)at;
}

static void fzm_fix_etm(uint8_t *data, size_t size) {
    if (size >= ET_HEADER_SIZE) {
        et_wr32(data + 8, (uint32_t)size);
        et_wr32(data + 12, et_crc32(0, data + 16, size - 16));
    }
}

/* Field layout of a tensor record (offset, bytes; 0 bytes = float32). */
static const uint8_t fzm_tensor_fields[][2] = {
    { 0, 1 }, { 1, 1 }, { 2, 1 }, { 3, 1 }, { 4, 2 }, { 6, 2 }, { 8, 2 }, { 10, 2 }, { 12, 4 }, { 16, 0 },
    { 20, 4 }, { 24, 4 }, { 28, 4 },
};
/* ... and of a layer record. */
static const uint8_t fzm_layer_fields[][2] = {
    { 0, 1 }, { 1, 1 }, { 4, 2 }, { 6, 2 }, { 8, 2 }, { 10, 2 }, { 12, 1 }, { 13, 1 }, { 14, 1 }, { 15, 1 },
    { 16, 2 }, { 18, 2 }, { 20, 2 }, { 22, 2 }, { 24, 4 }, { 28, 4 }, { 32, 4 }, { 36, 4 }, { 40, 4 },
    { 44, 4 },
};

/* One structural mutation of an .etm file in place (size may grow up to max_size). */
static void fzm_etm_once(fzm_rng_t *r, uint8_t *data, size_t *size, size_t max_size) {
    const size_t len = *size;
    const unsigned nt = et_ld_u16(data + 16), nl = et_ld_u16(data + 18);
    const uint32_t toff = et_ld_u32(data + 24), loff = et_ld_u32(data + 28);
    const int tensors_ok = nt && toff >= ET_HEADER_SIZE && toff <= len && (uint64_t)nt * ET_TENSOR_REC <= len - toff;
    const int layers_ok = nl && loff >= ET_HEADER_SIZE && loff <= len && (uint64_t)nl * ET_LAYER_REC <= len - loff;
    switch (fzm_below(r, 8)) {
        case 0: { /* a header field */
            static const uint8_t hf[][2] = { { 16, 2 }, { 18, 2 }, { 20, 2 }, { 22, 2 }, { 24, 4 }, { 28, 4 },
                { 32, 4 }, { 36, 4 }, { 40, 4 }, { 44, 4 } };
            const unsigned k = fzm_below(r, sizeof hf / sizeof hf[0]);
            fzm_field(r, data + hf[k][0], hf[k][1]);
            break;
        }
        case 1:
        case 2: /* a tensor record field */
            if (tensors_ok) {
                uint8_t *rec = data + toff + (size_t)fzm_below(r, nt) * ET_TENSOR_REC;
                const unsigned k = fzm_below(r, sizeof fzm_tensor_fields / sizeof fzm_tensor_fields[0]);
                fzm_field(r, rec + fzm_tensor_fields[k][0], fzm_tensor_fields[k][1]);
                if (k == 3 && fzm_below(r, 2)) {
                    rec[3] &= 3; /* a legal axis: its scale count now differs */
                }
                if ((k == 3 || (k >= 4 && k <= 7)) && rec[2] && fzm_below(r, 2)) {
                    /* the scales' count changed with the axis or shape: put them last in the
                     * file, where reading as many as before leaves the buffer */
                    const uint32_t at = fzm_move_to_end(data, size, max_size, et_ld_u32(rec + 20),
                        4u * et_ld_u16(rec + 4 + 2 * (rec[3] & 3)));
                    if (at) {
                        et_wr32(rec + 20, at);
                    }
                }
            }
            break;
        case 3:
        case 4: /* a layer record field */
            if (layers_ok) {
                uint8_t *rec = data + loff + (size_t)fzm_below(r, nl) * ET_LAYER_REC;
                const unsigned k = fzm_below(r, sizeof fzm_layer_fields / sizeof fzm_layer_fields[0]);
                fzm_field(r, rec + fzm_layer_fields[k][0], fzm_layer_fields[k][1]);
            }
            break;
        case 5: /* a value inside a blob: a per-channel scale, a weight byte (-128), a multiplier */
            if (tensors_ok) {
                const uint8_t *rec = data + toff + (size_t)fzm_below(r, nt) * ET_TENSOR_REC;
                const uint32_t sc = et_ld_u32(rec + 20), d = et_ld_u32(rec + 24), dl = et_ld_u32(rec + 28);
                if (rec[2] && (uint64_t)sc + 4u <= len && sc >= ET_HEADER_SIZE) {
                    et_wr32(data + sc + 4u * fzm_below(r, (uint32_t)((len - sc) / 4 < 8 ? (len - sc) / 4 : 8)),
                        fzm_float(r));
                } else if (rec[1] == ET_KIND_CONST && dl && d < len && dl <= len - d) {
                    data[d + fzm_below(r, dl)] = fzm_below(r, 2) ? 0x80 : (uint8_t)fzm_int(r, 1);
                }
            }
            break;
        case 6: /* move scales, data or multipliers to the end of the file */
            if (tensors_ok && fzm_below(r, 2)) {
                uint8_t *rec = data + toff + (size_t)fzm_below(r, nt) * ET_TENSOR_REC;
                const int which = rec[2] && fzm_below(r, 2) ? 20 : 24;
                const uint32_t n = which == 20 ? 4u * et_ld_u16(rec + 4 + 2 * (rec[3] & 3)) : et_ld_u32(rec + 28);
                const uint32_t at = fzm_move_to_end(data, size, max_size, et_ld_u32(rec + which), n);
                if (at) {
                    et_wr32(rec + which, at);
                }
            } else if (layers_ok) {
                uint8_t *rec = data + loff + (size_t)fzm_below(r, nl) * ET_LAYER_REC;
                const uint32_t at = fzm_move_to_end(data, size, max_size, et_ld_u32(rec + 40), 8u * et_ld_u16(rec + 22));
                if (at) {
                    et_wr32(rec + 40, at);
                }
            }
            break;
        default: { /* copy one record over another (valid pieces in the wrong place) */
            if (tensors_ok && fzm_below(r, 2)) {
                const size_t a = fzm_below(r, nt), b = fzm_below(r, nt);
                memmove(data + toff + a * ET_TENSOR_REC, data + toff + b * ET_TENSOR_REC, ET_TENSOR_REC);
            } else if (layers_ok) {
                const size_t a = fzm_below(r, nl), b = fzm_below(r, nl);
                memmove(data + loff + a * ET_LAYER_REC, data + loff + b * ET_LAYER_REC, ET_LAYER_REC);
            }
            break;
        }
    }
}

/* Mutate an .etm file: 1-3 structural mutations, then size and CRC fixed (or, one time in
 * four, libFuzzer's byte mutator alone). */
static size_t fzm_mutate_etm(uint8_t *data, size_t size, size_t max_size, unsigned seed) {
    fzm_rng_t r = { seed * 2654435761u + 1u };
    if (size < ET_HEADER_SIZE || fzm_below(&r, 4) == 0) {
        return LLVMFuzzerMutate(data, size, max_size);
    }
    const unsigned n = 1 + fzm_below(&r, 3);
    for (unsigned k = 0; k < n; ++k) {
        fzm_etm_once(&r, data, &size, max_size);
    }
    fzm_fix_etm(data, size);
    return size;
}

/* Mutate a trained-weights file (at data[0..size)): a header field, or an int8 / int16 /
 * float32 value of the parameters (weights -128, residual limits, NaN/inf momentum and
 * classifier scales), then size and CRC fixed. */
static size_t fzm_mutate_state(uint8_t *data, size_t size, size_t max_size, fzm_rng_t *r) {
    if (size < 32 || fzm_below(r, 4) == 0) {
        return LLVMFuzzerMutate(data, size, max_size);
    }
    const unsigned n = 1 + fzm_below(r, 3);
    for (unsigned k = 0; k < n; ++k) {
        const size_t body = size - 32;
        switch (fzm_below(r, 5)) {
            case 0:
                fzm_field(r, data + 24 + 4 * fzm_below(r, 2), 4); /* params size, flags */
                break;
            case 1:
                if (body) {
                    data[32 + fzm_below(r, (uint32_t)body)] = fzm_below(r, 2) ? 0x80 : (uint8_t)fzm_int(r, 1);
                }
                break;
            case 2:
                if (body >= 2) {
                    fzm_field(r, data + 32 + 2 * fzm_below(r, (uint32_t)(body / 2)), 2);
                }
                break;
            default:
                if (body >= 4) {
                    fzm_field(r, data + 32 + 4 * fzm_below(r, (uint32_t)(body / 4)), 0);
                }
                break;
        }
    }
    et_wr32(data + 8, (uint32_t)size);
    et_wr32(data + 12, et_crc32(0, data + 16, size - 16));
    return size;
}

#endif /* EDGETUNE_FUZZ_MUTATE_H */
