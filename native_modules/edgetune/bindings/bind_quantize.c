/*
 * m.quantize: raw float samples to the model's int8 input (docs/data.md §2, docs/training.md
 * §8), through the model's sensor frame when one is set.
 */
#include <string.h>

#include "et_bind.h"
#include "kernels/et_frame_f32.h"
#include "kernels/et_quantize_f32.h"

/* Up to this many channels the per-channel scale/zero point live on the C stack; more take one
 * GC block after every check passed (freed before returning). */
#define QUANTIZE_STACK_CHANNELS 16

/* The scale or zero_point argument of quantize/calibrate: None (the input tensor's own value,
 * dflt, for every channel) or one number per channel, converted into out[0..channels). */
void et_bind_quant_param_convert(mp_obj_t obj, const char *what, size_t channels, float dflt, float *out) {
    if (obj == mp_const_none) {
        for (size_t c = 0; c < channels; ++c) {
            out[c] = dflt;
        }
        return;
    }
    const size_t n = et_bind_floats_len(obj, what);
    if (n != channels) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: %s has %u values, the input has %u channels"),
            what, (unsigned)n, (unsigned)channels);
    }
    et_bind_floats_convert(obj, n, out);
}

/* m.quantize(samples, scale=None, zero_point=None) -> bytes: samples (list/tuple of numbers or
 * an 'f' buffer; value i of channel i % C, C the input's last dimension) quantized to int8 by
 * et_quantize_f32 with the per-channel scale/zero_point (default: the input tensor's own).
 * scale and zero_point are converted and checked first, then the samples are converted one at a
 * time (a list is looked up again after every item's __float__) straight into the result; a NaN
 * sample or a non-number item raises (the model is never changed). */
mp_obj_t edgetune_model_quantize(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_samples, ARG_scale, ARG_zero_point };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_samples, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_scale, MP_ARG_OBJ, {.u_obj = mp_const_none} },
        { MP_QSTR_zero_point, MP_ARG_OBJ, {.u_obj = mp_const_none} },
    };
    ET_METHOD_ARGS(self, a, allowed);
    et_bind_check_buffer_unchanged(self);
    et_tensor_t tin;
    et_model_tensor(&self->model, self->model.input, &tin);
    const size_t channels = (size_t)tin.shape[3];
    const mp_obj_t samples = a[ARG_samples].u_obj;
    const size_t len = et_bind_floats_len(samples, "samples");
    if (len % channels) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("edgetune: %u samples are not a multiple of the input's %u channels"),
            (unsigned)len, (unsigned)channels);
    }
    float stack[2 * QUANTIZE_STACK_CHANNELS];
    float *sc = channels <= QUANTIZE_STACK_CHANNELS ? stack : m_new(float, 2 * channels);
    float *zp = sc + channels;
    et_bind_quant_param_convert(a[ARG_scale].u_obj, "scale", channels, tin.scale, sc);
    et_bind_quant_param_convert(a[ARG_zero_point].u_obj, "zero_point", channels, (float)tin.zero_point, zp);
    for (size_t c = 0; c < channels; ++c) {
        if (!et_quantize_scale_ok(sc[c])) {
            mp_raise_msg_varg(&mp_type_ValueError,
                MP_ERROR_TEXT("edgetune: scale of channel %u must be > 0 and finite, with a finite float32 1/scale"),
                (unsigned)c);
        }
        if (!(zp[c] - zp[c] == 0.0f)) {
            mp_raise_msg_varg(&mp_type_ValueError,
                MP_ERROR_TEXT("edgetune: zero_point of channel %u must be finite (float32)"), (unsigned)c);
        }
    }

    vstr_t out;
    vstr_init_len(&out, len);
    int8_t *q = (int8_t *)out.buf;
    size_t bad = len;
    mp_buffer_info_t bi;
    const bool is_buf = !mp_obj_is_type(samples, &mp_type_list) && !mp_obj_is_type(samples, &mp_type_tuple);
    if (is_buf) {
        /* an 'f' buffer: no Python code runs below, its pointer stays valid */
        mp_get_buffer_raise(samples, &bi, MP_BUFFER_READ);
        if (bi.len / sizeof(float) != len) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: a list argument changed length while its items were converted"));
        }
    }
    if (self->frame_on) {
        /* the model's sensor frame first (docs/training.md §9): one sample of C values at a
         * time, accel <- R^T accel, gyro <- det(R) R^T gyro, then the same quantization */
        float one[QUANTIZE_STACK_CHANNELS];
        float *v = channels <= QUANTIZE_STACK_CHANNELS ? one : m_new(float, channels);
        for (size_t t = 0; t < len && bad == len; t += channels) {
            for (size_t c = 0; c < channels; ++c) {
                v[c] = et_bind_floats_at(samples, t + c, len);
            }
            et_frame_apply(self->frame_r, self->frame_improper, self->frame_accel, self->frame_gyro, v);
            const size_t k = et_quantize_f32(v, channels, channels, sc, zp, q + t);
            if (k != channels) {
                bad = t + k;
            }
        }
        if (v != one) {
            m_del(float, v, channels);
        }
    } else if (is_buf && ((uintptr_t)bi.buf & (sizeof(float) - 1)) == 0) {
        bad = et_quantize_f32((const float *)(const void *)bi.buf, len, channels, sc, zp, q);
    } else {
        /* list/tuple items (or an unaligned buffer): one value per call, channel c */
        for (size_t i = 0; i < len; ++i) {
            const float x = et_bind_floats_at(samples, i, len);
            const size_t c = i % channels;
            if (et_quantize_f32(&x, 1, 1, &sc[c], &zp[c], &q[i]) != 1) {
                bad = i;
                break;
            }
        }
    }
    if (sc != stack) {
        m_del(float, sc, 2 * channels);
    }
    if (bad != len) {
        vstr_clear(&out);
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: sample %u is NaN"), (unsigned)bad);
    }
    return mp_obj_new_bytes_from_vstr(&out);
}
