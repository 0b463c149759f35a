/*
 * m.refit: the closed-form classifier refit (docs/training.md §9, refit.c) with its scratch
 * blocks.
 */
#include <string.h>

#include "et_bind.h"
#include "refit.h"
#include "kernels/et_mathf.h"

/* The refit scratch: GC blocks (malloc in the sanitizer build, see EDGETUNE_SANITIZE_HEAP). */
static void *scratch_alloc(size_t n) {
    #if EDGETUNE_SANITIZE_HEAP
    void *gc_block = m_malloc_maybe(n); /* the normal build's MemoryError, then garbage */
    if (gc_block == NULL) {
        return NULL;
    }
    m_del(uint8_t, gc_block, n);
    return malloc(n);
    #else
    return m_malloc_maybe(n);
    #endif
}

static void scratch_free(void *p, size_t n) {
    #if EDGETUNE_SANITIZE_HEAP
    (void)n;
    free(p);
    #else
    m_del(uint8_t, p, n);
    #endif
}

/* The windows of m.refit / m.refit_stats after their number arguments were converted: labels
 * converted (the last Python callback), then xs looked up and every argument checked with the
 * refit's messages (ValueError, nothing changed; l2/alpha NaN: not given). Returns the window
 * pointers; *labels_out (heap, *n_out of them) the labels. */
static const int8_t **refit_windows(edgetune_model_obj_t *self, mp_obj_t xs_obj, mp_obj_t labels_obj, int l2_none,
    float l2, int alpha_none, float alpha, int32_t **labels_out, size_t *n_out) {
    const size_t n_labels = et_bind_labels_len(labels_obj);
    if (n_labels > ET_REFIT_MAX_WINDOWS) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: refit needs 2..32767 windows"));
    }
    int32_t *labels = m_new(int32_t, n_labels ? n_labels : 1);
    et_bind_labels_convert(self, labels_obj, n_labels, labels, false);
    /* checks (ValueError, nothing changed); no Python code runs from here on */
    size_t n;
    mp_obj_t *xs;
    mp_obj_get_array(xs_obj, &n, &xs);
    if (n != n_labels) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: refit needs as many labels as windows"));
    }
    if ((!l2_none && l2 != l2) || (!alpha_none && alpha != alpha)) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: l2 and alpha must be numbers (None: chosen by cross-validation)"));
    }
    et_bind_check_buffer_unchanged(self);
    for (size_t k = 0; k < n; ++k) {
        (void)et_bind_input_of(self, xs[k]);
    }
    const char *msg = et_refit_check(&self->train, labels, (int32_t)n, l2, alpha);
    if (msg) {
        m_del(int32_t, labels, n ? n : 1);
        et_bind_raise_engine(msg);
    }
    const int8_t **px = m_new(const int8_t *, n);
    for (size_t k = 0; k < n; ++k) {
        px[k] = et_bind_input_of(self, xs[k]);
    }
    *labels_out = labels;
    *n_out = n;
    return px;
}

/* m.refit(xs, labels, l2=None, alpha=None) -> dict: closed-form classifier refit (docs/training.md
 * §9). xs: list/tuple of windows; labels: bytes-like or list/tuple of ints. Every argument is
 * converted first, then checked (ValueError); the index arrays and the scratch are allocated
 * before anything changes (MemoryError leaves the model as it was). */
mp_obj_t edgetune_model_refit(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_xs, ARG_labels, ARG_l2, ARG_alpha };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_xs, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_labels, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_l2, MP_ARG_OBJ, {.u_obj = mp_const_none} },
        { MP_QSTR_alpha, MP_ARG_OBJ, {.u_obj = mp_const_none} },
    };
    ET_METHOD_ARGS(self, a, allowed);
    /* conversions (TypeError for a wrong type), every Python callback (__float__, __int__) first:
     * the item array of xs is taken only after the last one, and only converted values are
     * checked and used (a callback may resize a list or answer differently the second time) */
    const float nan = et_f32_from_bits(0x7FC00000u);
    const int l2_none = a[ARG_l2].u_obj == mp_const_none, alpha_none = a[ARG_alpha].u_obj == mp_const_none;
    const float l2 = l2_none ? nan : (float)mp_obj_get_float(a[ARG_l2].u_obj);
    const float alpha = alpha_none ? nan : (float)mp_obj_get_float(a[ARG_alpha].u_obj);
    int32_t *labels;
    size_t n;
    const int8_t **px = refit_windows(self, a[ARG_xs].u_obj, a[ARG_labels].u_obj, l2_none, l2, alpha_none, alpha,
        &labels, &n);
    const int cv = l2_none || alpha_none;
    size_t size[ET_REFIT_BLOCKS];
    et_refit_scratch_blocks(&self->train, labels, (int32_t)n, cv, size);
    const size_t need = size[0] + size[1] + size[2];
    /* the result first (rule 3): its floats are filled in after the refit */
    mp_obj_t r_l2 = et_bind_float_slot_new(), r_alpha = et_bind_float_slot_new(), r_cv = et_bind_float_slot_new();
    mp_obj_t d = mp_obj_new_dict(5);
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_l2), r_l2);
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_alpha), r_alpha);
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_cv_accuracy), r_cv);
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_n), MP_OBJ_NEW_SMALL_INT((mp_int_t)n));
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_scratch), mp_obj_new_int_from_uint(need));
    void *scratch[ET_REFIT_BLOCKS] = { NULL, NULL, NULL };
    int ok = 1;
    for (int k = 0; k < ET_REFIT_BLOCKS; ++k) { /* three smaller blocks fit a fragmented heap better */
        scratch[k] = scratch_alloc(size[k] ? size[k] : 4);
        ok = ok && scratch[k] != NULL;
    }
    if (!ok) {
        for (int k = 0; k < ET_REFIT_BLOCKS; ++k) {
            if (scratch[k]) {
                scratch_free(scratch[k], size[k] ? size[k] : 4);
            }
        }
        m_del(const int8_t *, px, n);
        m_del(int32_t, labels, n);
        mp_raise_msg_varg(&mp_type_MemoryError, MP_ERROR_TEXT("edgetune: refit needs %u bytes of scratch"),
            (unsigned)need);
    }
    et_refit_result_t res;
    const char *msg = et_refit_run(&self->train, px, labels, (int32_t)n, l2, alpha, scratch, &res);
    for (int k = 0; k < ET_REFIT_BLOCKS; ++k) {
        scratch_free(scratch[k], size[k] ? size[k] : 4);
    }
    m_del(const int8_t *, px, n);
    m_del(int32_t, labels, n);
    if (msg) {
        et_bind_raise_engine(msg);
    }
    /* replacing a value under an existing key allocates nothing */
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_l2), et_bind_float_slot_set(r_l2, (mp_float_t)res.l2));
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_alpha), et_bind_float_slot_set(r_alpha, (mp_float_t)res.alpha));
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_cv_accuracy),
        res.cv ? et_bind_float_slot_set(r_cv, (mp_float_t)res.cv_accuracy) : mp_const_none);
    return d;
}

/* m.refit_stats(xs, labels) -> bytes: the refit's integer statistics of the windows under the
 * current parameters, packed as the fleet refit mode's upload (docs/training.md §8,
 * docs/fleet-refit.md §1); the arguments and checks of m.refit, nothing in the model changes. */
mp_obj_t edgetune_model_refit_stats(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_xs, ARG_labels };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_xs, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_labels, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
    };
    ET_METHOD_ARGS(self, a, allowed);
    const float nan = et_f32_from_bits(0x7FC00000u);
    int32_t *labels;
    size_t n;
    const int8_t **px = refit_windows(self, a[ARG_xs].u_obj, a[ARG_labels].u_obj, 1, nan, 1, nan, &labels, &n);
    const size_t size = et_refit_stats_bytes(&self->train);
    vstr_t out; /* the result, allocated before the forward passes */
    vstr_init_len(&out, size);
    #if EDGETUNE_SANITIZE_HEAP
    void *sums = scratch_alloc(size); /* exact size: AddressSanitizer sees a write past it */
    if (sums == NULL) {
        m_del(const int8_t *, px, n);
        m_del(int32_t, labels, n);
        mp_raise_msg_varg(&mp_type_MemoryError, MP_ERROR_TEXT("edgetune: refit needs %u bytes of scratch"),
            (unsigned)size);
    }
    et_refit_stats_pack(&self->train, px, labels, (int32_t)n, sums);
    memcpy(out.buf, sums, size);
    scratch_free(sums, size);
    #else
    et_refit_stats_pack(&self->train, px, labels, (int32_t)n, out.buf); /* m_malloc: 4-aligned */
    #endif
    m_del(const int8_t *, px, n);
    m_del(int32_t, labels, n);
    return mp_obj_new_bytes_from_vstr(&out);
}
