/*
 * .etm parsing, validation, arena planning and the forward pass
 * (docs/etm-format.md is the contract; host/edgetune/format/modelfile.py the writer).
 *
 * Every multi-byte field is read with an explicit little-endian load; every
 * offset, length and count is checked before it is used, in 64-bit arithmetic
 * so that no check can overflow. The int32 multiplier/shift/bias arrays and the
 * weights are then used in place, which needs a little-endian target and a
 * 4-byte aligned buffer (both checked).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "model.h"
#include "kernels/et_kernels.h"

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "edgetune reads int32 data of the .etm in place and needs a little-endian target"
#endif

static const char *const op_names[] = {
    "?", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN",
};

/* ---------------------------------------------------------------------------------------- */
/* Little-endian loads.                                                                      */

static uint16_t ld_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t ld_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int32_t ld_i32(const uint8_t *p) {
    return (int32_t)ld_u32(p);
}

static int16_t ld_i16(const uint8_t *p) {
    return (int16_t)ld_u16(p);
}

static float ld_f32(const uint8_t *p) {
    uint32_t u = ld_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---------------------------------------------------------------------------------------- */
/* CRC-32 (zlib), nibble-table driven: small in flash, fast enough for a one-off check.     */

uint32_t et_crc32(uint32_t crc, const uint8_t *p, size_t n) {
    static const uint32_t tab[16] = {
        0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
        0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c, 0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
    };
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ tab[crc & 15];
        crc = (crc >> 4) ^ tab[crc & 15];
    }
    return ~crc;
}

/* ---------------------------------------------------------------------------------------- */
/* Record decoding (no checks: callers validated the tables first).                          */

void et_model_tensor(const et_model_t *m, unsigned i, et_tensor_t *t) {
    const uint8_t *r = m->buf + m->tensor_off + (size_t)i * ET_TENSOR_REC;
    t->dtype = r[0];
    t->kind = r[1];
    t->quant = r[2];
    t->axis = r[3];
    for (int k = 0; k < 4; ++k) {
        t->shape[k] = ld_u16(r + 4 + 2 * k);
    }
    t->zero_point = ld_i32(r + 12);
    t->scale = ld_f32(r + 16);
    uint32_t sc_off = ld_u32(r + 20);
    t->scales = t->quant ? (const float *)(const void *)(m->buf + sc_off) : NULL;
    t->data_len = ld_u32(r + 28);
    t->data = t->kind == ET_KIND_CONST ? (const void *)(m->buf + ld_u32(r + 24)) : NULL;
}

void et_model_layer(const et_model_t *m, unsigned i, et_layer_t *l) {
    const uint8_t *r = m->buf + m->layer_off + (size_t)i * ET_LAYER_REC;
    l->op = r[0];
    l->activation = r[1];
    l->input = ld_u16(r + 4);
    l->output = ld_u16(r + 6);
    l->weight = ld_u16(r + 8);
    l->bias = ld_u16(r + 10);
    l->stride_h = r[12];
    l->stride_w = r[13];
    l->filter_h = r[14];
    l->filter_w = r[15];
    l->pad_h = ld_i16(r + 16);
    l->pad_w = ld_i16(r + 18);
    l->depth_multiplier = ld_u16(r + 20);
    l->n_mult = ld_u16(r + 22);
    l->input_offset = ld_i32(r + 24);
    l->output_offset = ld_i32(r + 28);
    l->act_min = ld_i32(r + 32);
    l->act_max = ld_i32(r + 36);
    uint32_t m_off = ld_u32(r + 40);
    l->multipliers = l->n_mult ? (const int32_t *)(const void *)(m->buf + m_off) : NULL;
    l->shifts = l->n_mult ? (const int32_t *)(const void *)(m->buf + m_off + 4u * l->n_mult) : NULL;
    l->p0 = ld_i32(r + 44);
}

size_t et_tensor_elems(const et_tensor_t *t) {
    return (size_t)t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3];
}

static size_t align4(size_t n) {
    return (n + 3u) & ~(size_t)3u;
}

unsigned et_model_chain_tensor(const et_model_t *m, unsigned i) {
    if (i == 0) {
        return m->input;
    }
    return ld_u16(m->buf + m->layer_off + (size_t)(i - 1) * ET_LAYER_REC + 6);
}

static size_t chain_slot(const et_model_t *m, unsigned i) {
    et_tensor_t t;
    et_model_tensor(m, et_model_chain_tensor(m, i), &t);
    return align4(et_tensor_elems(&t));
}

size_t et_model_arena_size(const et_model_t *m) {
    size_t best = 0;
    for (unsigned i = 0; i < m->n_layers; ++i) {
        size_t s = chain_slot(m, i) + chain_slot(m, i + 1);
        if (s > best) {
            best = s;
        }
    }
    return best;
}

size_t et_model_chain_offset(const et_model_t *m, unsigned i) {
    return (i & 1u) ? m->arena_size - chain_slot(m, i) : 0;
}

size_t et_model_input_size(const et_model_t *m) {
    et_tensor_t t;
    et_model_tensor(m, m->input, &t);
    return et_tensor_elems(&t);
}

size_t et_model_output_size(const et_model_t *m) {
    et_tensor_t t;
    et_model_tensor(m, m->output, &t);
    return et_tensor_elems(&t);
}

/* ---------------------------------------------------------------------------------------- */
/* Validation.                                                                               */

typedef struct {
    char *buf;
    size_t len;
} errbuf_t;

static const char *fail(errbuf_t *e, const char *fmt, ...) {
    if (!e->buf || e->len == 0) {
        return fmt; /* no buffer: the format string itself is the (static) message */
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->buf, e->len, fmt, ap);
    va_end(ap);
    return e->buf;
}

/* [off, off + len) inside the file, after the header, and off 4-byte aligned. */
static int range_ok(uint64_t off, uint64_t len, uint64_t size) {
    return off >= ET_HEADER_SIZE && off <= size && len <= size - off && (off & 3u) == 0;
}

/* Output size and top/left padding consistent with TFLM for SAME or VALID padding
 * (ComputeOutSize and ComputePaddingHeightWidth with dilation 1). */
static int spatial_ok(int32_t in, int32_t out, int32_t filter, int32_t stride, int32_t pad) {
    const int32_t out_same = (in + stride - 1) / stride;
    const int32_t out_valid = in >= filter ? (in - filter + stride) / stride : 0;
    if (out != out_same && out != out_valid) {
        return 0;
    }
    int64_t total = (int64_t)(out - 1) * stride + filter - in;
    if (total < 0) {
        total = 0;
    }
    return pad == total / 2;
}

#define MSG_PREFIX "layer %u (%s): "

static const char *check_layer(const et_model_t *m, unsigned i, const et_layer_t *l, errbuf_t *e) {
    const char *name = op_names[l->op];
    et_tensor_t tin, tout, tw, tb;
    et_model_tensor(m, l->input, &tin);
    et_model_tensor(m, l->output, &tout);
    const int32_t in_h = tin.shape[1], in_w = tin.shape[2], in_c = tin.shape[3];
    const int32_t out_h = tout.shape[1], out_w = tout.shape[2], out_c = tout.shape[3];

    if (l->activation > ET_ACT_RELU6) {
        return fail(e, MSG_PREFIX "unknown fused activation %u", i, name, l->activation);
    }
    if (l->act_min < -128 || l->act_max > 127 || l->act_min > l->act_max) {
        return fail(e, MSG_PREFIX "activation clamp [%ld, %ld] is not within [-128, 127]", i, name,
            (long)l->act_min, (long)l->act_max);
    }
    if (l->input_offset < -127 || l->input_offset > 128 || l->output_offset < -128 || l->output_offset > 127) {
        return fail(e, MSG_PREFIX "input/output offset %ld/%ld out of the int8 zero-point range", i, name,
            (long)l->input_offset, (long)l->output_offset);
    }
    for (unsigned k = 0; k < l->n_mult; ++k) {
        if (l->multipliers[k] < 0) {
            return fail(e, MSG_PREFIX "multiplier %u is negative (%ld)", i, name, k, (long)l->multipliers[k]);
        }
        if (l->shifts[k] < -31 || l->shifts[k] > 30) {
            return fail(e, MSG_PREFIX "shift %u is %ld, outside [-31, 30]", i, name, k, (long)l->shifts[k]);
        }
    }
    if (l->op != ET_OP_DEPTHWISE_CONV_2D && l->depth_multiplier != 1) {
        return fail(e, MSG_PREFIX "depth_multiplier must be 1, got %u", i, name, l->depth_multiplier);
    }

    const int has_weights = l->op <= ET_OP_FULLY_CONNECTED;
    if (!has_weights) {
        if (l->weight != ET_NONE || l->bias != ET_NONE) {
            return fail(e, MSG_PREFIX "must have no weight or bias tensor", i, name);
        }
    } else {
        if (l->weight == ET_NONE) {
            return fail(e, MSG_PREFIX "needs a weight tensor", i, name);
        }
        et_model_tensor(m, l->weight, &tw);
        if (tw.kind != ET_KIND_CONST || tw.dtype != ET_DT_INT8) {
            return fail(e, MSG_PREFIX "weight tensor %u must be a constant int8 tensor", i, name, l->weight);
        }
        if (l->n_mult != out_c) {
            return fail(e, MSG_PREFIX "%u multipliers for %ld output channels", i, name, l->n_mult, (long)out_c);
        }
        /* per-channel scales: one per output channel, along the output-channel axis (training reads
         * out_c of them) */
        const unsigned w_axis = l->op == ET_OP_DEPTHWISE_CONV_2D ? 3u : 0u;
        if (tw.quant && (tw.axis != w_axis || tw.shape[w_axis] != out_c)) {
            return fail(e, MSG_PREFIX "weight tensor %u is quantized per channel along axis %u; it needs one scale "
                "per output channel along axis %u", i, name, l->weight, tw.axis, w_axis);
        }
        if (l->bias != ET_NONE) {
            et_model_tensor(m, l->bias, &tb);
            if (tb.kind != ET_KIND_CONST || tb.dtype != ET_DT_INT32 || et_tensor_elems(&tb) != (size_t)out_c) {
                return fail(e, MSG_PREFIX "bias tensor %u must be a constant int32 tensor of %ld elements", i, name,
                    l->bias, (long)out_c);
            }
            if (tb.quant && tb.shape[tb.axis] != out_c) {
                return fail(e, MSG_PREFIX "bias tensor %u has %u per-channel scales for %ld output channels", i, name,
                    l->bias, tb.shape[tb.axis], (long)out_c);
            }
        }
    }
    if ((has_weights || l->op == ET_OP_MEAN)
        && (l->input_offset != -tin.zero_point || l->output_offset != tout.zero_point)) {
        return fail(e, MSG_PREFIX "offsets %ld/%ld do not match the zero points %ld/%ld of tensors %u/%u", i,
            name, (long)l->input_offset, (long)l->output_offset, (long)tin.zero_point, (long)tout.zero_point,
            l->input, l->output);
    }

    switch (l->op) {
        case ET_OP_CONV_2D:
        case ET_OP_DEPTHWISE_CONV_2D: {
            const int dw = l->op == ET_OP_DEPTHWISE_CONV_2D;
            if (dw) {
                if (tw.shape[0] != 1 || tw.shape[3] != out_c || l->depth_multiplier < 1
                    || (int64_t)in_c * l->depth_multiplier != out_c) {
                    return fail(e, MSG_PREFIX "weight shape (%u, %u, %u, %u) with depth_multiplier %u does not map %ld "
                        "to %ld channels", i, name, tw.shape[0], tw.shape[1], tw.shape[2], tw.shape[3],
                        l->depth_multiplier, (long)in_c, (long)out_c);
                }
            } else if (tw.shape[0] != out_c || tw.shape[3] != in_c) {
                return fail(e, MSG_PREFIX "weight shape (%u, %u, %u, %u) does not map %ld to %ld channels", i, name,
                    tw.shape[0], tw.shape[1], tw.shape[2], tw.shape[3], (long)in_c, (long)out_c);
            }
            if (l->filter_h != tw.shape[1] || l->filter_w != tw.shape[2]) {
                return fail(e, MSG_PREFIX "filter %ux%u differs from the weight's %ux%u", i, name, l->filter_h,
                    l->filter_w, tw.shape[1], tw.shape[2]);
            }
        }
        /* fall through */
        case ET_OP_MAX_POOL_2D:
        case ET_OP_AVERAGE_POOL_2D:
            if (l->stride_h < 1 || l->stride_w < 1 || l->filter_h < 1 || l->filter_w < 1) {
                return fail(e, MSG_PREFIX "stride %ux%u and filter %ux%u must be at least 1", i, name, l->stride_h,
                    l->stride_w, l->filter_h, l->filter_w);
            }
            if (!spatial_ok(in_h, out_h, l->filter_h, l->stride_h, l->pad_h)
                || !spatial_ok(in_w, out_w, l->filter_w, l->stride_w, l->pad_w)) {
                return fail(e, MSG_PREFIX "output %ldx%ld and padding (%d, %d) do not follow from input %ldx%ld, "
                    "filter %ux%u, stride %ux%u with SAME or VALID padding", i, name, (long)out_h, (long)out_w,
                    l->pad_h, l->pad_w, (long)in_h, (long)in_w, l->filter_h, l->filter_w, l->stride_h, l->stride_w);
            }
            if (l->op >= ET_OP_MAX_POOL_2D) {
                if (in_c != out_c || l->n_mult != 0) {
                    return fail(e, MSG_PREFIX "%ld input and %ld output channels, %u multipliers (pools keep channels "
                        "and have none)", i, name, (long)in_c, (long)out_c, l->n_mult);
                }
                if (tin.zero_point != tout.zero_point) {
                    return fail(e, MSG_PREFIX "input and output zero points differ (%ld, %ld)", i, name,
                        (long)tin.zero_point, (long)tout.zero_point);
                }
                /* every window must touch the input (TFLM's AveragePool fails otherwise) */
                if (l->pad_h >= l->filter_h || l->pad_w >= l->filter_w
                    || (int32_t)(out_h - 1) * l->stride_h - l->pad_h >= in_h
                    || (int32_t)(out_w - 1) * l->stride_w - l->pad_w >= in_w) {
                    return fail(e, MSG_PREFIX "a pooling window lies entirely in the padding", i, name);
                }
            }
            break;
        case ET_OP_FULLY_CONNECTED: {
            const size_t k = et_tensor_elems(&tin);
            if (tw.shape[0] != out_c || (size_t)tw.shape[1] * tw.shape[2] * tw.shape[3] != k
                || et_tensor_elems(&tout) != (size_t)out_c) {
                return fail(e, MSG_PREFIX "weight shape (%u, %u, %u, %u) does not map %lu inputs to output shape "
                    "(%u, %u, %u, %u)", i, name, tw.shape[0], tw.shape[1], tw.shape[2], tw.shape[3],
                    (unsigned long)k, tout.shape[0], tout.shape[1], tout.shape[2], tout.shape[3]);
            }
            break;
        }
        case ET_OP_MEAN:
            if (out_h != 1 || out_w != 1 || out_c != in_c) {
                return fail(e, MSG_PREFIX "output shape (%u, %u, %u, %u) is not (1, 1, 1, %ld)", i, name,
                    tout.shape[0], tout.shape[1], tout.shape[2], tout.shape[3], (long)in_c);
            }
            if (l->n_mult != 1 || l->p0 != 0) {
                return fail(e, MSG_PREFIX "needs exactly 1 multiplier (has %u) and p0 = 0 (is %ld)", i, name,
                    l->n_mult, (long)l->p0);
            }
            break;
        default:
            break;
    }
    return NULL;
}

const char *et_model_init(et_model_t *m, const uint8_t *buf, size_t len, char *err, size_t err_len) {
    errbuf_t e = { err, err_len };
    if (err && err_len) {
        err[0] = 0;
    }
    memset(m, 0, sizeof *m);
    if (len < ET_HEADER_SIZE) {
        return fail(&e, "not an .etm file: %lu bytes, the header alone is %d", (unsigned long)len, ET_HEADER_SIZE);
    }
    if (((uintptr_t)buf & 3u) != 0) {
        return fail(&e, "model buffer must be 4-byte aligned (copy it into a bytes object)");
    }
    if (memcmp(buf, "EDTM", 4) != 0) {
        return fail(&e, "not an .etm file: bad magic");
    }
    const unsigned version = ld_u16(buf + 4);
    if (version != ET_FORMAT_VERSION) {
        return fail(&e, ".etm format version %u is not supported (this firmware reads %d); re-export the model",
            version, ET_FORMAT_VERSION);
    }
    if (ld_u16(buf + 6) != ET_HEADER_SIZE) {
        return fail(&e, ".etm header size %u, expected %d", ld_u16(buf + 6), ET_HEADER_SIZE);
    }
    const uint64_t size = ld_u32(buf + 8);
    if (size != (uint64_t)len) {
        return fail(&e, ".etm file size field says %lu bytes but the buffer has %lu (truncated or padded?)",
            (unsigned long)size, (unsigned long)len);
    }
    const uint32_t crc = ld_u32(buf + 12), actual = et_crc32(0, buf + 16, len - 16);
    if (crc != actual) {
        return fail(&e, ".etm CRC mismatch: header 0x%08lx, contents 0x%08lx (file corrupted)", (unsigned long)crc,
            (unsigned long)actual);
    }
    m->buf = buf;
    m->len = len;
    m->n_tensors = ld_u16(buf + 16);
    m->n_layers = ld_u16(buf + 18);
    m->input = ld_u16(buf + 20);
    m->output = ld_u16(buf + 22);
    m->tensor_off = ld_u32(buf + 24);
    m->layer_off = ld_u32(buf + 28);
    m->meta_off = ld_u32(buf + 32);
    m->meta_len = ld_u32(buf + 36);
    m->scheme_off = ld_u32(buf + 40);
    m->scheme_len = ld_u32(buf + 44);
    if (m->n_tensors < 1 || m->n_tensors > ET_MAX_TENSORS || m->n_layers < 1 || m->n_layers > ET_MAX_LAYERS) {
        return fail(&e, ".etm counts out of range: %u tensors (1..%d), %u layers (1..%d)", m->n_tensors,
            ET_MAX_TENSORS, m->n_layers, ET_MAX_LAYERS);
    }
    for (int k = 48; k < 64; ++k) {
        if (buf[k]) {
            return fail(&e, ".etm reserved header bytes are not zero");
        }
    }
    if (!range_ok(m->tensor_off, (uint64_t)m->n_tensors * ET_TENSOR_REC, size)) {
        return fail(&e, ".etm tensor table at %lu (%u records) lies outside the file or is misaligned",
            (unsigned long)m->tensor_off, m->n_tensors);
    }
    if (!range_ok(m->layer_off, (uint64_t)m->n_layers * ET_LAYER_REC, size)) {
        return fail(&e, ".etm layer table at %lu (%u records) lies outside the file or is misaligned",
            (unsigned long)m->layer_off, m->n_layers);
    }
    if (!range_ok(m->meta_off, m->meta_len, size)) {
        return fail(&e, ".etm metadata [%lu, +%lu) lies outside the file or is misaligned",
            (unsigned long)m->meta_off, (unsigned long)m->meta_len);
    }
    if (m->scheme_off ? !range_ok(m->scheme_off, m->scheme_len, size) : m->scheme_len != 0) {
        return fail(&e, ".etm scheme section [%lu, +%lu) lies outside the file or is misaligned",
            (unsigned long)m->scheme_off, (unsigned long)m->scheme_len);
    }
    if (m->input >= m->n_tensors || m->output >= m->n_tensors) {
        return fail(&e, ".etm input/output tensor index %u/%u out of range (n_tensors=%u)", m->input, m->output,
            m->n_tensors);
    }

    /* Tensors: codes, shapes, and every blob inside the file. */
    for (unsigned i = 0; i < m->n_tensors; ++i) {
        const uint8_t *r = buf + m->tensor_off + (size_t)i * ET_TENSOR_REC;
        const unsigned dt = r[0], kind = r[1], quant = r[2], axis = r[3];
        if (dt != ET_DT_INT8 && dt != ET_DT_INT32) {
            return fail(&e, "tensor %u: unknown dtype code %u", i, dt);
        }
        if (kind > ET_KIND_CONST || quant > 1 || axis > 3) {
            return fail(&e, "tensor %u: bad kind/quant/axis %u/%u/%u", i, kind, quant, axis);
        }
        uint64_t elems = 1;
        for (int k = 0; k < 4; ++k) {
            const unsigned d = ld_u16(r + 4 + 2 * k);
            if (d == 0) {
                return fail(&e, "tensor %u: zero dimension in its shape", i);
            }
            elems *= d; /* <= 65535^4 < 2^64 */
        }
        if (quant && !range_ok(ld_u32(r + 20), 4ull * ld_u16(r + 4 + 2 * axis), size)) {
            return fail(&e, "tensor %u: per-channel scales lie outside the file or are misaligned", i);
        }
        if (kind == ET_KIND_CONST) {
            const uint64_t need = elems * (dt == ET_DT_INT32 ? 4u : 1u);
            const uint64_t d_len = ld_u32(r + 28);
            if (d_len != need) {
                return fail(&e, "tensor %u: data length %lu, its shape needs %lu bytes", i, (unsigned long)d_len,
                    (unsigned long)(need > 0xFFFFFFFFu ? 0xFFFFFFFFu : need));
            }
            if (!range_ok(ld_u32(r + 24), d_len, size)) {
                return fail(&e, "tensor %u: data [%lu, +%lu) lies outside the file or is misaligned", i,
                    (unsigned long)ld_u32(r + 24), (unsigned long)d_len);
            }
        } else {
            if (dt != ET_DT_INT8 || quant != 0) {
                return fail(&e, "tensor %u: activations must be per-tensor int8", i);
            }
            if (elems > ET_MAX_ACT_ELEMS) {
                return fail(&e, "tensor %u: activation of %lu elements is too large", i,
                    (unsigned long)(elems > 0xFFFFFFFFu ? 0xFFFFFFFFu : elems));
            }
            const int32_t zp = ld_i32(r + 12);
            if (zp < -128 || zp > 127 || ld_u16(r + 4) != 1) {
                return fail(&e, "tensor %u: activation needs batch 1 and a zero point in [-128, 127] (has %ld)", i,
                    (long)zp);
            }
        }
    }

    /* Layers: codes, indices and multiplier arrays first, then the chain, then the op checks. */
    unsigned prev = m->input;
    for (unsigned i = 0; i < m->n_layers; ++i) {
        const uint8_t *r = buf + m->layer_off + (size_t)i * ET_LAYER_REC;
        const unsigned op = r[0];
        if (op < ET_OP_CONV_2D || op > ET_OP_MEAN) {
            return fail(&e, "layer %u: unknown op code %u", i, op);
        }
        if (ld_u16(r + 2) != 0) {
            return fail(&e, "layer %u (%s): reserved field is not zero", i, op_names[op]);
        }
        static const char *const what[4] = { "input", "output", "weight", "bias" };
        for (int k = 0; k < 4; ++k) {
            const unsigned idx = ld_u16(r + 4 + 2 * k);
            if ((idx == ET_NONE && k < 2) || (idx != ET_NONE && idx >= m->n_tensors)) {
                return fail(&e, "layer %u (%s): %s tensor index %u out of range (n_tensors=%u)", i, op_names[op],
                    what[k], idx, m->n_tensors);
            }
        }
        const unsigned n_mult = ld_u16(r + 22);
        if (n_mult && !range_ok(ld_u32(r + 40), 8ull * n_mult, size)) {
            return fail(&e, "layer %u (%s): %u multipliers/shifts lie outside the file or are misaligned", i,
                op_names[op], n_mult);
        }
        const unsigned li = ld_u16(r + 4), lo = ld_u16(r + 6);
        if (li != prev) {
            return fail(&e, "layer %u (%s) reads tensor %u, expected %u (layers must form a chain)", i, op_names[op],
                li, prev);
        }
        if (buf[m->tensor_off + (size_t)li * ET_TENSOR_REC + 1] != ET_KIND_ACT
            || buf[m->tensor_off + (size_t)lo * ET_TENSOR_REC + 1] != ET_KIND_ACT) {
            return fail(&e, "layer %u (%s): input %u and output %u must be activation tensors", i, op_names[op], li,
                lo);
        }
        prev = lo;
    }
    if (prev != m->output) {
        return fail(&e, "the last layer writes tensor %u but the model output is tensor %u", prev, m->output);
    }
    for (unsigned i = 0; i < m->n_layers; ++i) {
        et_layer_t l;
        et_model_layer(m, i, &l);
        const char *msg = check_layer(m, i, &l, &e);
        if (msg) {
            return msg;
        }
    }
    {
        /* the loss works on scale * (q - zero_point), |q - zero_point| <= 255: a scale up to
         * ET_MAX_OUTPUT_SCALE keeps every loss (and a sum of many) finite in float32 */
        const float so = ld_f32(buf + m->tensor_off + (size_t)m->output * ET_TENSOR_REC + 16);
        if (!(so >= 0.0f && so <= ET_MAX_OUTPUT_SCALE)) {
            return fail(&e, "the output scale is outside [0, 2^32] (losses would not be finite)");
        }
    }
    m->arena_size = et_model_arena_size(m);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Forward pass.                                                                             */

static void dims_of(const et_tensor_t *t, et_dims_t *d) {
    d->n = t->shape[0];
    d->h = t->shape[1];
    d->w = t->shape[2];
    d->c = t->shape[3];
}

const int8_t *et_model_forward(const et_model_t *m, uint8_t *arena, const int8_t *input) {
    memcpy(arena + et_model_chain_offset(m, 0), input, et_model_input_size(m));
    for (unsigned i = 0; i < m->n_layers; ++i) {
        et_layer_t l;
        et_tensor_t tin, tout;
        et_dims_t din, dout;
        et_model_layer(m, i, &l);
        et_model_tensor(m, l.input, &tin);
        et_model_tensor(m, l.output, &tout);
        dims_of(&tin, &din);
        dims_of(&tout, &dout);
        const int8_t *x = (const int8_t *)(arena + et_model_chain_offset(m, i));
        int8_t *y = (int8_t *)(arena + et_model_chain_offset(m, i + 1));
        const et_per_channel_quant_t q = { l.multipliers, l.shifts };
        et_status_t st = ET_ERR_ARG;
        switch (l.op) {
            case ET_OP_CONV_2D:
            case ET_OP_DEPTHWISE_CONV_2D:
            case ET_OP_FULLY_CONNECTED: {
                et_tensor_t tw, tb;
                et_dims_t dw;
                et_model_tensor(m, l.weight, &tw);
                dims_of(&tw, &dw);
                const int32_t *bias = NULL;
                if (l.bias != ET_NONE) {
                    et_model_tensor(m, l.bias, &tb);
                    bias = (const int32_t *)tb.data;
                }
                if (l.op == ET_OP_FULLY_CONNECTED) {
                    const et_fc_params_t p = { l.input_offset, l.output_offset, l.act_min, l.act_max };
                    st = et_fully_connected_s8(&p, &q, 1, (int32_t)et_tensor_elems(&tin), x, dw.n,
                        (const int8_t *)tw.data, bias, y);
                    break;
                }
                const et_conv_params_t p = {
                    l.input_offset, l.output_offset, l.stride_h, l.stride_w, l.pad_h, l.pad_w,
                    l.depth_multiplier, l.act_min, l.act_max,
                };
                st = (l.op == ET_OP_CONV_2D ? et_conv_s8 : et_depthwise_conv_s8)(&p, &q, &din, x, &dw,
                    (const int8_t *)tw.data, bias, &dout, y);
                break;
            }
            case ET_OP_MAX_POOL_2D:
            case ET_OP_AVERAGE_POOL_2D: {
                const et_pool_params_t p = {
                    l.stride_h, l.stride_w, l.pad_h, l.pad_w, l.filter_h, l.filter_w, l.act_min, l.act_max,
                };
                st = (l.op == ET_OP_MAX_POOL_2D ? et_max_pool_s8 : et_avg_pool_s8)(&p, &din, x, &dout, y);
                break;
            }
            case ET_OP_MEAN: {
                const et_mean_params_t p = {
                    l.input_offset, l.output_offset, l.multipliers[0], l.shifts[0], l.act_min, l.act_max,
                };
                st = et_mean_s8(&p, &din, x, y);
                break;
            }
            default:
                break;
        }
        if (st != ET_OK) {
            return NULL;
        }
    }
    return (const int8_t *)(arena + et_model_chain_offset(m, m->n_layers));
}
