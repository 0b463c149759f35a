/*
 * The sensor frame (docs/training.md §9): m.calibrate, m.frame and the weights-file trailer.
 */
#include <string.h>

#include "et_bind.h"
#include "kernels/et_mathf.h"
#include "kernels/et_frame_f32.h"
#include "kernels/et_quantize_f32.h"

static size_t input_channels(edgetune_model_obj_t *self) {
    et_tensor_t tin;
    et_model_tensor(&self->model, self->model.input, &tin);
    return (size_t)tin.shape[3];
}

/* ValueError unless accel/gyro are 3 distinct channels of the input each (gyro may be absent:
 * gyro[0] == ET_FRAME_NONE), improper is 0/1, pad is 0 and r is finite and orthogonal
 * (|R R^T - I| <= 1e-3 per entry, float32). */
void et_bind_frame_check(edgetune_model_obj_t *self, const uint8_t *accel, const uint8_t *gyro,
    unsigned improper, unsigned pad, const float *r) {
    const size_t C = input_channels(self);
    uint8_t ch[6];
    int n = 0;
    for (int i = 0; i < 3; ++i) {
        ch[n++] = accel[i];
    }
    const bool no_gyro = gyro[0] == ET_FRAME_NONE && gyro[1] == ET_FRAME_NONE && gyro[2] == ET_FRAME_NONE;
    if (!no_gyro) {
        for (int i = 0; i < 3; ++i) {
            ch[n++] = gyro[i];
        }
    }
    bool ok = improper <= 1 && pad == 0;
    for (int i = 0; i < n && ok; ++i) {
        ok = ch[i] < C;
        for (int j = 0; j < i && ok; ++j) {
            ok = ch[i] != ch[j];
        }
    }
    if (!ok) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: frame: accel/gyro must be 3 distinct input channels each"));
    }
    float rr[9], rt[9];
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            rt[3 * i + j] = r[3 * j + i];
        }
    }
    for (int k = 0; k < 9; ++k) {
        if (!(r[k] - r[k] == 0.0f)) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: frame: R must be finite"));
        }
    }
    et_frame_mm(r, rt, rr);
    for (int k = 0; k < 9; ++k) {
        const float d = rr[k] - ((k % 4 == 0) ? et_f32_opaque(1.0f) : 0.0f);
        if (!(d <= 1e-3f && d >= -1e-3f)) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: frame: R must be orthogonal (R R^T = I within 1e-3)"));
        }
    }
}

void et_bind_frame_set(edgetune_model_obj_t *self, const uint8_t *accel, const uint8_t *gyro, unsigned improper,
    const float *r) {
    self->frame_on = true;
    self->frame_improper = (uint8_t)improper;
    memcpy(self->frame_accel, accel, 3);
    memcpy(self->frame_gyro, gyro, 3);
    memcpy(self->frame_r, r, sizeof self->frame_r);
}

/* The 44-byte trailer of the weights file (0 bytes without a frame): accel[3], gyro[3]
 * (0xFF = none), improper, 0, then R as 9 little-endian float32, row-major. */
size_t et_bind_frame_trailer(edgetune_model_obj_t *self, uint8_t *tail) {
    if (!self->frame_on) {
        return 0;
    }
    memcpy(tail, self->frame_accel, 3);
    memcpy(tail + 3, self->frame_gyro, 3);
    tail[6] = self->frame_improper;
    tail[7] = 0;
    memcpy(tail + 8, self->frame_r, sizeof self->frame_r);
    return ET_STATE_FRAME_BYTES;
}

/* A channel group argument: None (only for gyro) or 3 ints (each item's __int__ may run Python
 * code: the list is looked up again for every item). */
static void group_of(mp_obj_t obj, bool may_be_none, uint8_t *out) {
    if (obj == mp_const_none && may_be_none) {
        out[0] = out[1] = out[2] = ET_FRAME_NONE;
        return;
    }
    if (et_bind_seq_len(obj) != 3) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: frame: a channel group has 3 channels"));
    }
    mp_int_t c[3];
    for (int i = 0; i < 3; ++i) {
        c[i] = mp_obj_get_int(et_bind_seq_item(obj, (size_t)i, 3));
    }
    for (int i = 0; i < 3; ++i) {
        if (c[i] < 0 || c[i] >= ET_FRAME_NONE) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: frame: channel index out of range"));
        }
        out[i] = (uint8_t)c[i];
    }
}

static mp_obj_t floats_tuple(const float *v, size_t n) {
    mp_obj_t items[9];
    for (size_t k = 0; k < n; ++k) {
        items[k] = mp_obj_new_float((mp_float_t)v[k]);
    }
    return mp_obj_new_tuple(n, items);
}

static mp_obj_t group_tuple(const uint8_t *g) {
    if (g[0] == ET_FRAME_NONE) {
        return mp_const_none;
    }
    mp_obj_t items[3] = { MP_OBJ_NEW_SMALL_INT(g[0]), MP_OBJ_NEW_SMALL_INT(g[1]), MP_OBJ_NEW_SMALL_INT(g[2]) };
    return mp_obj_new_tuple(3, items);
}

/* m.frame() -> None or {"R", "improper", "accel", "gyro"}; m.frame(None) clears the frame;
 * m.frame(R, accel=(0, 1, 2), gyro=(3, 4, 5)) sets it (R: 9 numbers, row-major, orthogonal;
 * improper = det(R) < 0). */
mp_obj_t edgetune_model_frame(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_r, ARG_accel, ARG_gyro };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_R, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_accel, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_gyro, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
    };
    ET_METHOD_ARGS(self, a, allowed);
    et_bind_check_buffer_unchanged(self);
    if (a[ARG_r].u_obj == MP_OBJ_NULL) {
        if (!self->frame_on) {
            return mp_const_none;
        }
        mp_obj_t d = mp_obj_new_dict(0);
        et_bind_store(d, "R", floats_tuple(self->frame_r, 9));
        et_bind_store(d, "improper", mp_obj_new_bool(self->frame_improper));
        et_bind_store(d, "accel", group_tuple(self->frame_accel));
        et_bind_store(d, "gyro", group_tuple(self->frame_gyro));
        return d;
    }
    if (a[ARG_r].u_obj == mp_const_none) {
        self->frame_on = false;
        return mp_const_none;
    }
    static const uint8_t dflt_accel[3] = { 0, 1, 2 }, dflt_gyro[3] = { 3, 4, 5 };
    uint8_t accel[3], gyro[3];
    if (a[ARG_accel].u_obj == MP_OBJ_NULL) {
        memcpy(accel, dflt_accel, 3);
    } else {
        group_of(a[ARG_accel].u_obj, false, accel);
    }
    if (a[ARG_gyro].u_obj == MP_OBJ_NULL) {
        memcpy(gyro, dflt_gyro, 3);
    } else {
        group_of(a[ARG_gyro].u_obj, true, gyro);
    }
    if (et_bind_floats_len(a[ARG_r].u_obj, "R") != 9) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: frame: R must have 9 numbers (row-major)"));
    }
    float r[9];
    et_bind_floats_convert(a[ARG_r].u_obj, 9, r);
    /* det sign: r0 (r4 r8 - r5 r7) - r1 (r3 r8 - r5 r6) + r2 (r3 r7 - r4 r6) */
    float det = r[0] * (r[4] * r[8] - r[5] * r[7]);
    det = det - r[1] * (r[3] * r[8] - r[5] * r[6]);
    det = det + r[2] * (r[3] * r[7] - r[4] * r[6]);
    et_bind_frame_check(self, accel, gyro, det < 0.0f ? 1u : 0u, 0, r);
    et_bind_frame_set(self, accel, gyro, det < 0.0f ? 1u : 0u, r);
    return mp_const_none;
}

/* m.calibrate(xs, labels, stats, scale=None, zero_point=None, accel=(0, 1, 2), gyro=(3, 4, 5))
 * -> dict: the frame fit of kernels/et_frame_f32.c over int8 windows xs (quantized with
 * scale/zero_point in the model's current frame) against the source statistics (K x 15 floats,
 * K the model's classes). When a frame is chosen the model's frame becomes R_old @ R_fit. All
 * checks come before anything changes (ValueError). */
mp_obj_t edgetune_model_calibrate(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_xs, ARG_labels, ARG_stats, ARG_scale, ARG_zero_point, ARG_accel, ARG_gyro };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_xs, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_labels, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_stats, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_scale, MP_ARG_OBJ, {.u_obj = mp_const_none} },
        { MP_QSTR_zero_point, MP_ARG_OBJ, {.u_obj = mp_const_none} },
        { MP_QSTR_accel, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_gyro, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
    };
    ET_METHOD_ARGS(self, a, allowed);
    et_bind_check_buffer_unchanged(self);
    et_tensor_t tin;
    et_model_tensor(&self->model, self->model.input, &tin);
    const size_t C = (size_t)tin.shape[3];
    const size_t K = et_model_output_size(&self->model);
    /* conversions first (rule 1): channel groups, labels, stats, scale, zero point */
    uint8_t accel[3] = { 0, 1, 2 }, gyro[3] = { 3, 4, 5 };
    if (a[ARG_accel].u_obj != MP_OBJ_NULL) {
        group_of(a[ARG_accel].u_obj, false, accel);
    }
    if (a[ARG_gyro].u_obj != MP_OBJ_NULL) {
        group_of(a[ARG_gyro].u_obj, true, gyro);
    }
    const size_t n = et_bind_seq_len(a[ARG_xs].u_obj);
    const size_t n_labels = et_bind_labels_len(a[ARG_labels].u_obj);
    if (n == 0 || n != n_labels) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: calibrate needs as many labels as windows (at least one)"));
    }
    const size_t st_len = et_bind_floats_len(a[ARG_stats].u_obj, "stats");
    const size_t n_sets = st_len / (K * ET_FRAME_STAT_FLOATS);
    if (st_len == 0 || st_len % (K * ET_FRAME_STAT_FLOATS) || n_sets > ET_FRAME_MAX_SETS) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("edgetune: calibrate: stats must be 1..4 sets of %u x 15 numbers"), (unsigned)K);
    }
    /* one block: K accumulators, then stats, scale and zero point as float32, then the labels */
    const size_t bytes = K * sizeof(et_frame_acc_t) + (st_len + 2 * C) * sizeof(float) + n * sizeof(int32_t);
    uint8_t *blk = m_new0(uint8_t, bytes);
    et_frame_acc_t *acc = (et_frame_acc_t *)(void *)blk;
    float *stf = (float *)(void *)(blk + K * sizeof(et_frame_acc_t));
    float *sc = stf + st_len, *zp = sc + C;
    int32_t *lab = (int32_t *)(void *)(zp + C);
    et_bind_labels_convert(self, a[ARG_labels].u_obj, n, lab, false);
    et_bind_floats_convert(a[ARG_stats].u_obj, st_len, stf);
    et_bind_quant_param_convert(a[ARG_scale].u_obj, "scale", C, tin.scale, sc);
    et_bind_quant_param_convert(a[ARG_zero_point].u_obj, "zero_point", C, (float)tin.zero_point, zp);
    /* checks; no Python code runs from here on */
    {
        static const float eye[9] = { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
        et_bind_frame_check(self, accel, gyro, 0, 0, eye);
    }
    if (self->frame_on && (memcmp(accel, self->frame_accel, 3) != 0 || memcmp(gyro, self->frame_gyro, 3) != 0)) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: calibrate: channel groups differ from the model's frame"));
    }
    for (size_t i = 0; i < st_len; ++i) {
        if (!(stf[i] - stf[i] == 0.0f)) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: calibrate: stats must be finite"));
        }
    }
    for (size_t c = 0; c < C; ++c) {
        if (!et_quantize_scale_ok(sc[c]) || !(zp[c] - zp[c] == 0.0f)) {
            mp_raise_msg_varg(&mp_type_ValueError,
                MP_ERROR_TEXT("edgetune: calibrate: scale/zero_point of channel %u must be finite (scale > 0)"),
                (unsigned)c);
        }
    }
    size_t n_now;
    mp_obj_t *xs;
    mp_obj_get_array(a[ARG_xs].u_obj, &n_now, &xs);
    if (n_now != n) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: a list argument changed length while its items were converted"));
    }
    for (size_t k = 0; k < n; ++k) {
        (void)et_bind_input_of(self, xs[k]);
    }
    const size_t n_in = et_model_input_size(&self->model);
    for (size_t k = 0; k < n; ++k) {
        if (et_frame_accumulate(&acc[lab[k]], et_bind_input_of(self, xs[k]), n_in, C, accel, gyro) != 0) {
            m_del(uint8_t, blk, bytes);
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: calibrate: too many samples in one class"));
        }
    }
    et_frame_fit_t fit;
    et_frame_fit(acc, K, n_sets, stf, sc, zp, accel, gyro, &fit);
    m_del(uint8_t, blk, bytes);
    static const char *const chosen[] = { "identity", "proper", "improper" };
    mp_obj_t d = mp_obj_new_dict(0);
    et_bind_store(d, "R", floats_tuple(fit.r, 9));
    et_bind_store(d, "improper", mp_obj_new_bool(fit.improper));
    et_bind_store(d, "chosen", mp_obj_new_str(chosen[fit.chosen], strlen(chosen[fit.chosen])));
    et_bind_store(d, "set", MP_OBJ_NEW_SMALL_INT(fit.set));
    et_bind_store(d, "e_identity", mp_obj_new_float((mp_float_t)fit.e_identity));
    et_bind_store(d, "e_proper", mp_obj_new_float((mp_float_t)fit.e_proper));
    et_bind_store(d, "e_improper", mp_obj_new_float((mp_float_t)fit.e_improper));
    if (fit.chosen) {
        float total[9];
        if (self->frame_on) {
            et_frame_mm(self->frame_r, fit.r, total);
        } else {
            memcpy(total, fit.r, sizeof total);
        }
        et_bind_frame_set(self, accel, gyro, (self->frame_on ? self->frame_improper : 0u) ^ (unsigned)fit.improper, total);
    }
    return d;
}
