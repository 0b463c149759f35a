/*
 * .etm parsing, validation and arena planning (docs/etm-format.md is the contract;
 * host/edgetune/format/modelfile.py the writer). The forward pass is forward.c's walker.
 *
 * Every multi-byte field is read with an explicit little-endian load; every
 * offset, length and count is checked before it is used, in 64-bit arithmetic
 * so that no check can overflow. The int32 multiplier/shift/bias arrays and the
 * weights are then used in place, which needs a little-endian target and a
 * 4-byte aligned buffer (both checked).
 */
#include <string.h>

#include "model.h"
#include "et_err.h"
#include "et_ops.h"
#include "et_util.h"

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
        t->shape[k] = et_ld_u16(r + 4 + 2 * k);
    }
    t->zero_point = et_ld_i32(r + 12);
    t->scale = et_ld_f32(r + 16);
    uint32_t sc_off = et_ld_u32(r + 20);
    t->scales = t->quant ? (const float *)(const void *)(m->buf + sc_off) : NULL;
    t->data_len = et_ld_u32(r + 28);
    t->data = t->kind == ET_KIND_CONST ? (const void *)(m->buf + et_ld_u32(r + 24)) : NULL;
}

void et_model_layer(const et_model_t *m, unsigned i, et_layer_t *l) {
    const uint8_t *r = m->buf + m->layer_off + (size_t)i * ET_LAYER_REC;
    l->op = r[0];
    l->activation = r[1];
    l->input = et_ld_u16(r + 4);
    l->output = et_ld_u16(r + 6);
    l->weight = et_ld_u16(r + 8);
    l->bias = et_ld_u16(r + 10);
    l->stride_h = r[12];
    l->stride_w = r[13];
    l->filter_h = r[14];
    l->filter_w = r[15];
    l->pad_h = et_ld_i16(r + 16);
    l->pad_w = et_ld_i16(r + 18);
    l->depth_multiplier = et_ld_u16(r + 20);
    l->n_mult = et_ld_u16(r + 22);
    l->input_offset = et_ld_i32(r + 24);
    l->output_offset = et_ld_i32(r + 28);
    l->act_min = et_ld_i32(r + 32);
    l->act_max = et_ld_i32(r + 36);
    uint32_t m_off = et_ld_u32(r + 40);
    l->multipliers = l->n_mult ? (const int32_t *)(const void *)(m->buf + m_off) : NULL;
    l->shifts = l->n_mult ? (const int32_t *)(const void *)(m->buf + m_off + 4u * l->n_mult) : NULL;
    l->p0 = et_ld_i32(r + 44);
}

size_t et_tensor_elems(const et_tensor_t *t) {
    return (size_t)t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3];
}

unsigned et_model_chain_tensor(const et_model_t *m, unsigned i) {
    if (i == 0) {
        return m->input;
    }
    return et_ld_u16(m->buf + m->layer_off + (size_t)(i - 1) * ET_LAYER_REC + 6);
}

static size_t chain_slot(const et_model_t *m, unsigned i) {
    et_tensor_t t;
    et_model_tensor(m, et_model_chain_tensor(m, i), &t);
    return et_align4(et_tensor_elems(&t));
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

static const char *check_layer(const et_model_t *m, unsigned i, const et_layer_t *l, char *err, size_t err_len) {
    const char *name = et_op(l->op)->name;
    et_tensor_t tin, tout, tw, tb;
    et_model_tensor(m, l->input, &tin);
    et_model_tensor(m, l->output, &tout);
    const int32_t in_h = tin.shape[1], in_w = tin.shape[2], in_c = tin.shape[3];
    const int32_t out_h = tout.shape[1], out_w = tout.shape[2], out_c = tout.shape[3];

    if (l->activation > ET_ACT_RELU6) {
        return et_fail(err, err_len, MSG_PREFIX "unknown fused activation %u", i, name, l->activation);
    }
    if (l->act_min < -128 || l->act_max > 127 || l->act_min > l->act_max) {
        return et_fail(err, err_len, MSG_PREFIX "activation clamp [%ld, %ld] is not within [-128, 127]", i, name,
            (long)l->act_min, (long)l->act_max);
    }
    if (l->input_offset < -127 || l->input_offset > 128 || l->output_offset < -128 || l->output_offset > 127) {
        return et_fail(err, err_len, MSG_PREFIX "input/output offset %ld/%ld out of the int8 zero-point range", i, name,
            (long)l->input_offset, (long)l->output_offset);
    }
    for (unsigned k = 0; k < l->n_mult; ++k) {
        if (l->multipliers[k] < 0) {
            return et_fail(err, err_len, MSG_PREFIX "multiplier %u is negative (%ld)", i, name, k, (long)l->multipliers[k]);
        }
        if (l->shifts[k] < -31 || l->shifts[k] > 30) {
            return et_fail(err, err_len, MSG_PREFIX "shift %u is %ld, outside [-31, 30]", i, name, k, (long)l->shifts[k]);
        }
    }
    if (l->op != ET_OP_DEPTHWISE_CONV_2D && l->depth_multiplier != 1) {
        return et_fail(err, err_len, MSG_PREFIX "depth_multiplier must be 1, got %u", i, name, l->depth_multiplier);
    }

    const int has_weights = et_op_has_weights(l->op);
    if (!has_weights) {
        if (l->weight != ET_NONE || l->bias != ET_NONE) {
            return et_fail(err, err_len, MSG_PREFIX "must have no weight or bias tensor", i, name);
        }
    } else {
        if (l->weight == ET_NONE) {
            return et_fail(err, err_len, MSG_PREFIX "needs a weight tensor", i, name);
        }
        et_model_tensor(m, l->weight, &tw);
        if (tw.kind != ET_KIND_CONST || tw.dtype != ET_DT_INT8) {
            return et_fail(err, err_len, MSG_PREFIX "weight tensor %u must be a constant int8 tensor", i, name, l->weight);
        }
        if (l->n_mult != out_c) {
            return et_fail(err, err_len, MSG_PREFIX "%u multipliers for %ld output channels", i, name, l->n_mult, (long)out_c);
        }
        /* per-channel scales: one per output channel, along the output-channel axis (training reads
         * out_c of them) */
        const unsigned w_axis = l->op == ET_OP_DEPTHWISE_CONV_2D ? 3u : 0u;
        if (tw.quant && (tw.axis != w_axis || tw.shape[w_axis] != out_c)) {
            return et_fail(err, err_len, MSG_PREFIX "weight tensor %u is quantized per channel along axis %u; it needs one scale "
                "per output channel along axis %u", i, name, l->weight, tw.axis, w_axis);
        }
        if (l->bias != ET_NONE) {
            et_model_tensor(m, l->bias, &tb);
            if (tb.kind != ET_KIND_CONST || tb.dtype != ET_DT_INT32 || et_tensor_elems(&tb) != (size_t)out_c) {
                return et_fail(err, err_len, MSG_PREFIX "bias tensor %u must be a constant int32 tensor of %ld elements", i, name,
                    l->bias, (long)out_c);
            }
            if (tb.quant && tb.shape[tb.axis] != out_c) {
                return et_fail(err, err_len, MSG_PREFIX "bias tensor %u has %u per-channel scales for %ld output channels", i, name,
                    l->bias, tb.shape[tb.axis], (long)out_c);
            }
        }
    }
    if ((has_weights || l->op == ET_OP_MEAN)
        && (l->input_offset != -tin.zero_point || l->output_offset != tout.zero_point)) {
        return et_fail(err, err_len, MSG_PREFIX "offsets %ld/%ld do not match the zero points %ld/%ld of tensors %u/%u", i,
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
                    return et_fail(err, err_len, MSG_PREFIX "weight shape (%u, %u, %u, %u) with depth_multiplier %u does not map %ld "
                        "to %ld channels", i, name, tw.shape[0], tw.shape[1], tw.shape[2], tw.shape[3],
                        l->depth_multiplier, (long)in_c, (long)out_c);
                }
            } else if (tw.shape[0] != out_c || tw.shape[3] != in_c) {
                return et_fail(err, err_len, MSG_PREFIX "weight shape (%u, %u, %u, %u) does not map %ld to %ld channels", i, name,
                    tw.shape[0], tw.shape[1], tw.shape[2], tw.shape[3], (long)in_c, (long)out_c);
            }
            if (l->filter_h != tw.shape[1] || l->filter_w != tw.shape[2]) {
                return et_fail(err, err_len, MSG_PREFIX "filter %ux%u differs from the weight's %ux%u", i, name, l->filter_h,
                    l->filter_w, tw.shape[1], tw.shape[2]);
            }
        }
        /* fall through */
        case ET_OP_MAX_POOL_2D:
        case ET_OP_AVERAGE_POOL_2D:
            if (l->stride_h < 1 || l->stride_w < 1 || l->filter_h < 1 || l->filter_w < 1) {
                return et_fail(err, err_len, MSG_PREFIX "stride %ux%u and filter %ux%u must be at least 1", i, name, l->stride_h,
                    l->stride_w, l->filter_h, l->filter_w);
            }
            if (!spatial_ok(in_h, out_h, l->filter_h, l->stride_h, l->pad_h)
                || !spatial_ok(in_w, out_w, l->filter_w, l->stride_w, l->pad_w)) {
                return et_fail(err, err_len, MSG_PREFIX "output %ldx%ld and padding (%d, %d) do not follow from input %ldx%ld, "
                    "filter %ux%u, stride %ux%u with SAME or VALID padding", i, name, (long)out_h, (long)out_w,
                    l->pad_h, l->pad_w, (long)in_h, (long)in_w, l->filter_h, l->filter_w, l->stride_h, l->stride_w);
            }
            if (et_op(l->op)->kind & ET_OPK_POOL) {
                if (in_c != out_c || l->n_mult != 0) {
                    return et_fail(err, err_len, MSG_PREFIX "%ld input and %ld output channels, %u multipliers (pools keep channels "
                        "and have none)", i, name, (long)in_c, (long)out_c, l->n_mult);
                }
                if (tin.zero_point != tout.zero_point) {
                    return et_fail(err, err_len, MSG_PREFIX "input and output zero points differ (%ld, %ld)", i, name,
                        (long)tin.zero_point, (long)tout.zero_point);
                }
                /* every window must touch the input (TFLM's AveragePool fails otherwise) */
                if (l->pad_h >= l->filter_h || l->pad_w >= l->filter_w
                    || (int32_t)(out_h - 1) * l->stride_h - l->pad_h >= in_h
                    || (int32_t)(out_w - 1) * l->stride_w - l->pad_w >= in_w) {
                    return et_fail(err, err_len, MSG_PREFIX "a pooling window lies entirely in the padding", i, name);
                }
            }
            break;
        case ET_OP_FULLY_CONNECTED: {
            const size_t k = et_tensor_elems(&tin);
            if (tw.shape[0] != out_c || (size_t)tw.shape[1] * tw.shape[2] * tw.shape[3] != k
                || et_tensor_elems(&tout) != (size_t)out_c) {
                return et_fail(err, err_len, MSG_PREFIX "weight shape (%u, %u, %u, %u) does not map %lu inputs to output shape "
                    "(%u, %u, %u, %u)", i, name, tw.shape[0], tw.shape[1], tw.shape[2], tw.shape[3],
                    (unsigned long)k, tout.shape[0], tout.shape[1], tout.shape[2], tout.shape[3]);
            }
            break;
        }
        case ET_OP_MEAN:
            if (out_h != 1 || out_w != 1 || out_c != in_c) {
                return et_fail(err, err_len, MSG_PREFIX "output shape (%u, %u, %u, %u) is not (1, 1, 1, %ld)", i, name,
                    tout.shape[0], tout.shape[1], tout.shape[2], tout.shape[3], (long)in_c);
            }
            if (l->n_mult != 1 || l->p0 != 0) {
                return et_fail(err, err_len, MSG_PREFIX "needs exactly 1 multiplier (has %u) and p0 = 0 (is %ld)", i, name,
                    l->n_mult, (long)l->p0);
            }
            break;
        default:
            break;
    }
    return NULL;
}

const char *et_model_init(et_model_t *m, const uint8_t *buf, size_t len, char *err, size_t err_len) {
    if (err && err_len) {
        err[0] = 0;
    }
    memset(m, 0, sizeof *m);
    if (len < ET_HEADER_SIZE) {
        return et_fail(err, err_len, "not an .etm file: %lu bytes, the header alone is %d", (unsigned long)len, ET_HEADER_SIZE);
    }
    if (((uintptr_t)buf & 3u) != 0) {
        return et_fail(err, err_len, "model buffer must be 4-byte aligned (copy it into a bytes object)");
    }
    if (memcmp(buf, "EDTM", 4) != 0) {
        return et_fail(err, err_len, "not an .etm file: bad magic");
    }
    const unsigned version = et_ld_u16(buf + 4);
    if (version != ET_FORMAT_VERSION) {
        return et_fail(err, err_len, ".etm format version %u is not supported (this firmware reads %d); re-export the model",
            version, ET_FORMAT_VERSION);
    }
    if (et_ld_u16(buf + 6) != ET_HEADER_SIZE) {
        return et_fail(err, err_len, ".etm header size %u, expected %d", et_ld_u16(buf + 6), ET_HEADER_SIZE);
    }
    const uint64_t size = et_ld_u32(buf + 8);
    if (size != (uint64_t)len) {
        return et_fail(err, err_len, ".etm file size field says %lu bytes but the buffer has %lu (truncated or padded?)",
            (unsigned long)size, (unsigned long)len);
    }
    const uint32_t crc = et_ld_u32(buf + 12), actual = et_crc32(0, buf + 16, len - 16);
    if (crc != actual) {
        return et_fail(err, err_len, ".etm CRC mismatch: header 0x%08lx, contents 0x%08lx (file corrupted)", (unsigned long)crc,
            (unsigned long)actual);
    }
    m->buf = buf;
    m->len = len;
    m->n_tensors = et_ld_u16(buf + 16);
    m->n_layers = et_ld_u16(buf + 18);
    m->input = et_ld_u16(buf + 20);
    m->output = et_ld_u16(buf + 22);
    m->tensor_off = et_ld_u32(buf + 24);
    m->layer_off = et_ld_u32(buf + 28);
    m->meta_off = et_ld_u32(buf + 32);
    m->meta_len = et_ld_u32(buf + 36);
    m->scheme_off = et_ld_u32(buf + 40);
    m->scheme_len = et_ld_u32(buf + 44);
    if (m->n_tensors < 1 || m->n_tensors > ET_MAX_TENSORS || m->n_layers < 1 || m->n_layers > ET_MAX_LAYERS) {
        return et_fail(err, err_len, ".etm counts out of range: %u tensors (1..%d), %u layers (1..%d)", m->n_tensors,
            ET_MAX_TENSORS, m->n_layers, ET_MAX_LAYERS);
    }
    for (int k = 48; k < 64; ++k) {
        if (buf[k]) {
            return et_fail(err, err_len, ".etm reserved header bytes are not zero");
        }
    }
    if (!range_ok(m->tensor_off, (uint64_t)m->n_tensors * ET_TENSOR_REC, size)) {
        return et_fail(err, err_len, ".etm tensor table at %lu (%u records) lies outside the file or is misaligned",
            (unsigned long)m->tensor_off, m->n_tensors);
    }
    if (!range_ok(m->layer_off, (uint64_t)m->n_layers * ET_LAYER_REC, size)) {
        return et_fail(err, err_len, ".etm layer table at %lu (%u records) lies outside the file or is misaligned",
            (unsigned long)m->layer_off, m->n_layers);
    }
    if (!range_ok(m->meta_off, m->meta_len, size)) {
        return et_fail(err, err_len, ".etm metadata [%lu, +%lu) lies outside the file or is misaligned",
            (unsigned long)m->meta_off, (unsigned long)m->meta_len);
    }
    if (m->scheme_off ? !range_ok(m->scheme_off, m->scheme_len, size) : m->scheme_len != 0) {
        return et_fail(err, err_len, ".etm scheme section [%lu, +%lu) lies outside the file or is misaligned",
            (unsigned long)m->scheme_off, (unsigned long)m->scheme_len);
    }
    if (m->input >= m->n_tensors || m->output >= m->n_tensors) {
        return et_fail(err, err_len, ".etm input/output tensor index %u/%u out of range (n_tensors=%u)", m->input, m->output,
            m->n_tensors);
    }

    /* Tensors: codes, shapes, and every blob inside the file. */
    for (unsigned i = 0; i < m->n_tensors; ++i) {
        const uint8_t *r = buf + m->tensor_off + (size_t)i * ET_TENSOR_REC;
        const unsigned dt = r[0], kind = r[1], quant = r[2], axis = r[3];
        if (dt != ET_DT_INT8 && dt != ET_DT_INT32) {
            return et_fail(err, err_len, "tensor %u: unknown dtype code %u", i, dt);
        }
        if (kind > ET_KIND_CONST || quant > 1 || axis > 3) {
            return et_fail(err, err_len, "tensor %u: bad kind/quant/axis %u/%u/%u", i, kind, quant, axis);
        }
        uint64_t elems = 1;
        for (int k = 0; k < 4; ++k) {
            const unsigned d = et_ld_u16(r + 4 + 2 * k);
            if (d == 0) {
                return et_fail(err, err_len, "tensor %u: zero dimension in its shape", i);
            }
            elems *= d; /* <= 65535^4 < 2^64 */
        }
        if (quant && !range_ok(et_ld_u32(r + 20), 4ull * et_ld_u16(r + 4 + 2 * axis), size)) {
            return et_fail(err, err_len, "tensor %u: per-channel scales lie outside the file or are misaligned", i);
        }
        if (kind == ET_KIND_CONST) {
            const uint64_t need = elems * (dt == ET_DT_INT32 ? 4u : 1u);
            const uint64_t d_len = et_ld_u32(r + 28);
            if (d_len != need) {
                return et_fail(err, err_len, "tensor %u: data length %lu, its shape needs %lu bytes", i, (unsigned long)d_len,
                    (unsigned long)(need > 0xFFFFFFFFu ? 0xFFFFFFFFu : need));
            }
            if (!range_ok(et_ld_u32(r + 24), d_len, size)) {
                return et_fail(err, err_len, "tensor %u: data [%lu, +%lu) lies outside the file or is misaligned", i,
                    (unsigned long)et_ld_u32(r + 24), (unsigned long)d_len);
            }
        } else {
            if (dt != ET_DT_INT8 || quant != 0) {
                return et_fail(err, err_len, "tensor %u: activations must be per-tensor int8", i);
            }
            if (elems > ET_MAX_ACT_ELEMS) {
                return et_fail(err, err_len, "tensor %u: activation of %lu elements is too large", i,
                    (unsigned long)(elems > 0xFFFFFFFFu ? 0xFFFFFFFFu : elems));
            }
            const int32_t zp = et_ld_i32(r + 12);
            if (zp < -128 || zp > 127 || et_ld_u16(r + 4) != 1) {
                return et_fail(err, err_len, "tensor %u: activation needs batch 1 and a zero point in [-128, 127] (has %ld)", i,
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
            return et_fail(err, err_len, "layer %u: unknown op code %u", i, op);
        }
        if (et_ld_u16(r + 2) != 0) {
            return et_fail(err, err_len, "layer %u (%s): reserved field is not zero", i, et_op(op)->name);
        }
        static const char *const what[4] = { "input", "output", "weight", "bias" };
        for (int k = 0; k < 4; ++k) {
            const unsigned idx = et_ld_u16(r + 4 + 2 * k);
            if ((idx == ET_NONE && k < 2) || (idx != ET_NONE && idx >= m->n_tensors)) {
                return et_fail(err, err_len, "layer %u (%s): %s tensor index %u out of range (n_tensors=%u)", i, et_op(op)->name,
                    what[k], idx, m->n_tensors);
            }
        }
        const unsigned n_mult = et_ld_u16(r + 22);
        if (n_mult && !range_ok(et_ld_u32(r + 40), 8ull * n_mult, size)) {
            return et_fail(err, err_len, "layer %u (%s): %u multipliers/shifts lie outside the file or are misaligned", i,
                et_op(op)->name, n_mult);
        }
        const unsigned li = et_ld_u16(r + 4), lo = et_ld_u16(r + 6);
        if (li != prev) {
            return et_fail(err, err_len, "layer %u (%s) reads tensor %u, expected %u (layers must form a chain)", i, et_op(op)->name,
                li, prev);
        }
        if (buf[m->tensor_off + (size_t)li * ET_TENSOR_REC + 1] != ET_KIND_ACT
            || buf[m->tensor_off + (size_t)lo * ET_TENSOR_REC + 1] != ET_KIND_ACT) {
            return et_fail(err, err_len, "layer %u (%s): input %u and output %u must be activation tensors", i, et_op(op)->name, li,
                lo);
        }
        prev = lo;
    }
    if (prev != m->output) {
        return et_fail(err, err_len, "the last layer writes tensor %u but the model output is tensor %u", prev, m->output);
    }
    for (unsigned i = 0; i < m->n_layers; ++i) {
        et_layer_t l;
        et_model_layer(m, i, &l);
        const char *msg = check_layer(m, i, &l, err, err_len);
        if (msg) {
            return msg;
        }
    }
    {
        /* the loss works on scale * (q - zero_point), |q - zero_point| <= 255: a scale up to
         * ET_MAX_OUTPUT_SCALE keeps every loss (and a sum of many) finite in float32 */
        const float so = et_ld_f32(buf + m->tensor_off + (size_t)m->output * ET_TENSOR_REC + 16);
        if (!(so >= 0.0f && so <= ET_MAX_OUTPUT_SCALE)) {
            return et_fail(err, err_len, "the output scale is outside [0, 2^32] (losses would not be finite)");
        }
    }
    m->arena_size = et_model_arena_size(m);
    return NULL;
}
