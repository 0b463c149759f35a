/*
 * The trained-weights file (docs/training.md §7): the scheme CRC, the 32-byte header, and the
 * full check of a file before it is loaded (every failure a message, never NULL: et_err.h).
 */
#include <string.h>

#include "train.h"
#include "train_util.h"
#include "et_err.h"
#include "kernels/et_mathf.h"

/* ---------------------------------------------------------------------------------------- */
/* Scheme CRC and the trained-weights file (docs/training.md §7)                             */
/* ---------------------------------------------------------------------------------------- */

uint32_t et_train_scheme_crc(const et_train_t *t) {
    const et_model_t *m = t->m;
    uint8_t b[8];
    unsigned n = 0;
    for (unsigned i = 0; i < m->n_layers; ++i) {
        n += t->layers[i].s.flags ? 1u : 0u;
    }
    et_wr16(b, ET_SCHEME_VERSION);
    et_wr16(b + 2, n);
    uint32_t crc = et_crc32(0, b, 4);
    for (unsigned i = 0; i < m->n_layers; ++i) {
        const et_train_layer_t *tl = &t->layers[i];
        if (!tl->s.flags) {
            continue;
        }
        et_wr16(b, i);
        b[2] = tl->s.flags;
        b[3] = 0;
        et_wr16(b + 4, tl->s.n_sel);
        et_wr16(b + 6, 0);
        crc = et_crc32(crc, b, 8);
        if (tl->s.flags & ET_SCHEME_WEIGHTS) {
            const int16_t *map = (const int16_t *)(const void *)(t->arena + tl->map);
            for (unsigned c = 0; c < tl->c_out; ++c) {
                if (map[c] >= 0) {
                    et_wr16(b, c);
                    crc = et_crc32(crc, b, 2);
                }
            }
            if (tl->s.n_sel & 1u) {
                et_wr16(b, 0);
                crc = et_crc32(crc, b, 2);
            }
        }
    }
    return crc;
}

size_t et_train_state_size(const et_train_t *t) {
    return ET_STATE_HEADER + t->params_size;
}

void et_train_state_header(const et_train_t *t, uint8_t *hdr) {
    et_train_state_header_tail(t, hdr, NULL, 0);
}

void et_train_state_header_tail(const et_train_t *t, uint8_t *hdr, const uint8_t *tail, size_t tail_len) {
    memcpy(hdr, ET_STATE_MAGIC, 4);
    et_wr16(hdr + 4, ET_STATE_VERSION);
    et_wr16(hdr + 6, ET_STATE_HEADER);
    et_wr32(hdr + 8, (uint32_t)(et_train_state_size(t) + tail_len));
    et_wr32(hdr + 16, et_ld_u32(t->m->buf + 12));
    et_wr32(hdr + 20, et_train_scheme_crc(t));
    et_wr32(hdr + 24, (uint32_t)t->params_size);
    et_wr32(hdr + 28, (t->momentum != 0.0f ? 1u : 0u) | (tail_len ? ET_STATE_FLAG_FRAME : 0u));
    uint32_t crc = et_crc32(0, hdr + 16, 16);
    crc = et_crc32(crc, t->arena + t->params_off, t->params_size);
    if (tail_len) {
        crc = et_crc32(crc, tail, tail_len);
    }
    et_wr32(hdr + 12, crc);
}

/* Weight k of layer i's RAM copy (slot k / per_channel) comes from a flashed weight of -128?
 * Training keeps weights in [-127, 127], but a flashed -128 it never touched stays (and is
 * saved as it is), so a file holding exactly that must load. */
static int flashed_minus_128(const et_train_t *t, unsigned i, size_t k) {
    const et_train_layer_t *tl = &t->layers[i];
    const int16_t *map = (const int16_t *)(const void *)(t->arena + tl->map);
    const size_t slot = k / tl->per_channel, kk = k % tl->per_channel;
    et_layer_t l;
    et_tensor_t tw;
    et_model_layer(t->m, i, &l);
    et_model_tensor(t->m, l.weight, &tw);
    const int8_t *w = (const int8_t *)tw.data;
    for (unsigned c = 0; c < tl->c_out; ++c) {
        if (map[c] == (int16_t)slot) {
            return (l.op == ET_OP_DEPTHWISE_CONV_2D ? w[kk * tl->c_out + c] : w[(size_t)c * tl->per_channel + kk]) == -128;
        }
    }
    return 0;
}

const char *et_train_state_check(const et_train_t *t, const uint8_t *buf, size_t len, char *err, size_t err_len) {
    if (len < ET_STATE_HEADER || memcmp(buf, ET_STATE_MAGIC, 4) != 0) {
        return "not a trained-weights file (magic)";
    }
    if ((buf[4] | (buf[5] << 8)) != ET_STATE_VERSION || (buf[6] | (buf[7] << 8)) != ET_STATE_HEADER) {
        return "trained-weights file version or header size not supported";
    }
    if (et_ld_u32(buf + 8) != len) {
        return et_fail(err, err_len, "trained-weights file says %lu bytes but has %lu (truncated?)",
            (unsigned long)et_ld_u32(buf + 8), (unsigned long)len);
    }
    if (et_crc32(0, buf + 16, len - 16) != et_ld_u32(buf + 12)) {
        return "trained-weights file CRC mismatch (corrupted)";
    }
    if (et_ld_u32(buf + 16) != et_ld_u32(t->m->buf + 12)) {
        return "trained-weights file belongs to another model (model CRC differs)";
    }
    if (et_ld_u32(buf + 20) != et_train_scheme_crc(t)) {
        return "trained-weights file was saved with another training scheme";
    }
    if ((et_ld_u32(buf + 28) & ~ET_STATE_FLAG_FRAME) != (t->momentum != 0.0f ? 1u : 0u)) {
        return "trained-weights file momentum flag (bit0; bit1 = frame, no other bits) differs from this model's momentum setting";
    }
    const size_t tail = (et_ld_u32(buf + 28) & ET_STATE_FLAG_FRAME) ? ET_STATE_FRAME_BYTES : 0u;
    if (et_ld_u32(buf + 24) != t->params_size || len != et_train_state_size(t) + tail) {
        return "trained-weights file has a different parameter size";
    }
    const uint8_t *params = buf + ET_STATE_HEADER - t->params_off; /* params + arena offset */
    for (unsigned i = t->first < 0 ? t->m->n_layers : (unsigned)t->first; i < t->m->n_layers; ++i) {
        const et_train_layer_t *tl = &t->layers[i];
        if (!tl->s.flags) {
            continue;
        }
        size_t count = (tl->s.flags & ET_SCHEME_BIAS) ? tl->c_out : 0;
        if (tl->s.flags & ET_SCHEME_WEIGHTS) {
            if (memcmp(params + tl->map, t->arena + tl->map, 2u * tl->c_out) != 0) {
                return et_fail(err, err_len, "trained-weights file: channel map of layer %u differs from the scheme", i);
            }
            const size_t n_w = (size_t)tl->s.n_sel * tl->per_channel;
            for (size_t k = 0; k < n_w; ++k) {
                if ((int8_t)params[tl->wcopy + k] == -128 && !flashed_minus_128(t, i, k)) {
                    return et_fail(err, err_len, "trained-weights file: layer %u weight -128 outside [-127, 127]", i);
                }
            }
            count += n_w;
        }
        for (size_t k = 0; k < count; ++k) {
            const int16_t r = (int16_t)(params[tl->resid + 2 * k] | (params[tl->resid + 2 * k + 1] << 8));
            if (r < -16384 || r > 16383) {
                return et_fail(err, err_len, "trained-weights file: layer %u residual outside [-16384, 16383]", i);
            }
        }
        for (size_t k = 0; tl->mom && k < count; ++k) {
            const float v = et_f32_from_bits(et_ld_u32(params + tl->mom + 4 * k));
            if (!(v - v == 0.0f)) { /* NaN would freeze the parameter, +-inf pin it at +-127 */
                return et_fail(err, err_len, "trained-weights file: layer %u momentum is not a finite number", i);
            }
        }
    }
    if (t->refit_layer >= 0) {
        const unsigned c_out = t->layers[t->refit_layer].c_out;
        const uint8_t *q = params + t->qscale_off;
        for (unsigned k = 0; k < 2 * c_out; ++k) {
            const float v = et_f32_from_bits(et_ld_u32(q + 4 * k));
            if (!et_finite_pos(v)) {
                return "trained-weights file: classifier scales must be positive numbers";
            }
        }
        for (unsigned c = 0; c < c_out; ++c) {
            const int32_t mu = (int32_t)et_ld_u32(q + 8 * c_out + 4 * c), sh = (int32_t)et_ld_u32(q + 12 * c_out + 4 * c);
            if (mu < 0 || sh < -31 || sh > 30) {
                return "trained-weights file: classifier multiplier/shift out of range";
            }
        }
    }
    return NULL;
}

void et_train_state_load(et_train_t *t, const uint8_t *buf) {
    memcpy(t->arena + t->params_off, buf + ET_STATE_HEADER, t->params_size);
    et_train_touch(t, t->params_off + t->params_size);
    if (t->refit_layer >= 0) {
        et_train_qscale_changed(t);
    }
}
