/*
 * The training scheme (docs/training.md §1): .etm section parser, builder
 * from (n_bias, ratios) and the l1 channel criterion.
 */
#include <string.h>

#include "scheme.h"
#include "et_err.h"
#include "et_ops.h"
#include "et_util.h"

int et_scheme_is_weight_op(uint8_t op) {
    return et_op_has_weights(op);
}

/* Output channels of weight layer l (its weight tensor's output axis). */
static uint16_t out_channels(const et_model_t *m, const et_layer_t *l) {
    et_tensor_t tw;
    et_model_tensor(m, l->weight, &tw);
    return l->op == ET_OP_DEPTHWISE_CONV_2D ? tw.shape[3] : tw.shape[0];
}

const char *et_scheme_parse(const et_model_t *m, et_scheme_layer_t *s, char *err, size_t err_len) {
    memset(s, 0, sizeof(*s) * m->n_layers);
    const uint8_t *p = m->buf + m->scheme_off;
    const uint32_t len = m->scheme_len;
    if (len < 4) {
        return "scheme section shorter than its 4-byte header";
    }
    if (et_ld_u16(p) != ET_SCHEME_VERSION) {
        return et_fail(err, err_len, "scheme section version %u is not supported (expected %u)", et_ld_u16(p),
            ET_SCHEME_VERSION);
    }
    const unsigned n = et_ld_u16(p + 2);
    uint32_t pos = 4;
    int prev = -1;
    for (unsigned e = 0; e < n; ++e) {
        if (len - pos < 8) {
            return et_fail(err, err_len, "scheme entry %u lies outside the scheme section", e);
        }
        const unsigned layer = et_ld_u16(p + pos), flags = p[pos + 2], n_sel = et_ld_u16(p + pos + 4);
        if (p[pos + 3] != 0 || et_ld_u16(p + pos + 6) != 0) {
            return et_fail(err, err_len, "scheme entry %u: reserved bytes are not zero", e);
        }
        if (layer >= m->n_layers || (int)layer <= prev) {
            return et_fail(err, err_len, "scheme entry %u: layer %u out of range or not increasing", e, layer);
        }
        prev = (int)layer;
        et_layer_t l;
        et_model_layer(m, layer, &l);
        if (!et_scheme_is_weight_op(l.op)) {
            return et_fail(err, err_len, "scheme entry %u: layer %u has no weights", e, layer);
        }
        if (flags == 0 || flags > 3 || ((flags & ET_SCHEME_BIAS) && l.bias == ET_NONE)) {
            return et_fail(err, err_len, "scheme entry %u: bad flags %u for layer %u", e, flags, layer);
        }
        const unsigned c_out = out_channels(m, &l);
        if (((flags & ET_SCHEME_WEIGHTS) != 0) != (n_sel != 0) || n_sel > c_out) {
            return et_fail(err, err_len, "scheme entry %u: %u channels selected of %u (weights bit %u)", e, n_sel,
                c_out, (flags >> 1) & 1u);
        }
        pos += 8;
        const uint32_t list = 2u * (n_sel + (n_sel & 1u));
        if (len - pos < list) {
            return et_fail(err, err_len, "scheme entry %u: channel list lies outside the scheme section", e);
        }
        for (unsigned k = 0; k < n_sel; ++k) {
            const unsigned c = et_ld_u16(p + pos + 2 * k);
            if (c >= c_out || (k > 0 && c <= et_ld_u16(p + pos + 2 * k - 2))) {
                return et_fail(err, err_len, "scheme entry %u: channel list must be ascending, unique and < %u", e,
                    c_out);
            }
        }
        if ((n_sel & 1u) && et_ld_u16(p + pos + 2 * n_sel) != 0) {
            return et_fail(err, err_len, "scheme entry %u: channel list padding is not zero", e);
        }
        s[layer].flags = (uint8_t)flags;
        s[layer].n_sel = (uint16_t)n_sel;
        s[layer].channels = n_sel ? p + pos : NULL;
        pos += list;
    }
    if (pos != len) {
        return et_fail(err, err_len, "scheme section has %u bytes, its entries use %u", (unsigned)len, (unsigned)pos);
    }
    return NULL;
}

const char *et_scheme_build(const et_model_t *m, uint32_t n_bias, const uint8_t *den,
    et_scheme_layer_t *s, char *err, size_t err_len) {
    memset(s, 0, sizeof(*s) * m->n_layers);
    uint32_t n_weighted = 0;
    for (unsigned i = 0; i < m->n_layers; ++i) {
        et_layer_t l;
        et_model_layer(m, i, &l);
        n_weighted += et_scheme_is_weight_op(l.op) ? 1u : 0u;
    }
    if (n_bias > n_weighted) {
        return et_fail(err, err_len, "scheme: n_bias=%lu but the model has %lu layers with weights",
            (unsigned long)n_bias, (unsigned long)n_weighted);
    }
    uint32_t seen = 0;
    for (int i = (int)m->n_layers - 1; i >= 0; --i) {
        et_layer_t l;
        et_model_layer(m, (unsigned)i, &l);
        const int weighted = et_scheme_is_weight_op(l.op);
        uint8_t d = den ? den[i] : 0;
        if (d && !weighted) {
            return et_fail(err, err_len, "scheme: layer %d (op %u) has no weights to train", i, l.op);
        }
        if (d && d != 1 && d != 2 && d != 4 && d != 8) {
            return et_fail(err, err_len, "scheme: layer %d ratio 1/%u (allowed: 1, 1/2, 1/4, 1/8)", i, d);
        }
        if (!weighted) {
            continue;
        }
        const int classifier = i == (int)m->n_layers - 1 && l.op == ET_OP_FULLY_CONNECTED;
        if (classifier) {
            d = 1;
        }
        if (seen < n_bias || classifier) {
            if (l.bias != ET_NONE) {
                s[i].flags |= ET_SCHEME_BIAS;
            }
        }
        ++seen;
        if (d) {
            const uint16_t c_out = out_channels(m, &l);
            const uint16_t n_sel = (uint16_t)(c_out / d);
            s[i].flags |= ET_SCHEME_WEIGHTS;
            s[i].den = d;
            s[i].n_sel = n_sel ? n_sel : 1;
        }
    }
    return NULL;
}

void et_scheme_default(const et_model_t *m, et_scheme_layer_t *s) {
    char err[80];
    uint32_t n = 0;
    for (unsigned i = 0; i < m->n_layers; ++i) {
        et_layer_t l;
        et_model_layer(m, i, &l);
        n += et_scheme_is_weight_op(l.op) ? 1u : 0u;
    }
    (void)et_scheme_build(m, n, NULL, s, err, sizeof err);
}

void et_scheme_select_l1(const et_model_t *m, unsigned layer, uint16_t n_sel, int16_t *map,
    int32_t *scratch) {
    et_layer_t l;
    et_tensor_t tw;
    et_model_layer(m, layer, &l);
    et_model_tensor(m, l.weight, &tw);
    const int8_t *w = (const int8_t *)tw.data;
    const int dw = l.op == ET_OP_DEPTHWISE_CONV_2D;
    const uint32_t c_out = dw ? tw.shape[3] : tw.shape[0];
    const uint32_t per = (uint32_t)(et_tensor_elems(&tw) / c_out);
    for (uint32_t c = 0; c < c_out; ++c) {
        int32_t sum = 0;
        for (uint32_t k = 0; k < per; ++k) {
            const int32_t v = dw ? w[(size_t)k * c_out + c] : w[(size_t)c * per + k];
            sum += v < 0 ? -v : v;
        }
        scratch[c] = sum;
    }
    int16_t slot = 0;
    for (uint32_t c = 0; c < c_out; ++c) {
        uint32_t rank = 0;
        for (uint32_t d = 0; d < c_out && rank < n_sel; ++d) {
            if (scratch[d] > scratch[c] || (scratch[d] == scratch[c] && d < c)) {
                ++rank;
            }
        }
        map[c] = rank < n_sel ? slot++ : -1;
    }
}
