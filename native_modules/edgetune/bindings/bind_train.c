/*
 * m.train (one sample or a mini-batch), m.evaluate and m.reset (docs/training.md §5, §8).
 */
#include <string.h>

#include "et_bind.h"
#include "kernels/et_train_kernels.h"

/* The lr argument of train(): 0.01 if not given; ValueError unless 0 < lr <= ET_LR_MAX
 * (docs/training.md §8: a negative lr climbs the loss, a huge one saturates every weight). */
#define ET_LR_MAX 1.0f
static float lr_convert(mp_obj_t lr_in) {
    return lr_in == MP_OBJ_NULL ? 0.01f : (float)mp_obj_get_float(lr_in);
}

static void lr_check(float lr) {
    if (!(lr > 0.0f && lr <= ET_LR_MAX)) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: lr must be a finite number in (0, 1], e.g. 0.01"));
    }
}

/* m.train(x, label, lr=0.01, qas=True) -> loss (float): one SGD step on one sample; with a
 * batch model and k labels (bytes-like/list/tuple), one mini-batch step (docs/training.md §5).
 * Labels and lr are converted first, then the inputs are looked up and checked, the returned
 * float is allocated, and only then does the step run (docs/reliability.md §7). */
mp_obj_t edgetune_model_train(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_x, ARG_label, ARG_lr, ARG_qas };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_x, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_label, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_lr, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_qas, MP_ARG_BOOL, {.u_bool = true} },
    };
    ET_METHOD_ARGS(self, a, allowed);
    const mp_obj_t label_in = a[ARG_label].u_obj;
    const bool qas = a[ARG_qas].u_bool;
    const bool seq = mp_obj_is_type(label_in, &mp_type_list) || mp_obj_is_type(label_in, &mp_type_tuple);
    mp_buffer_info_t lb;
    if (!seq && (mp_obj_is_str(label_in) || !mp_get_buffer(label_in, &lb, MP_BUFFER_READ))) {
        /* one label: an int (anything else raises label_of's TypeError) */
        const int32_t label = et_bind_label_of(self, label_in);
        const float lr = lr_convert(a[ARG_lr].u_obj);
        lr_check(lr);
        et_bind_check_buffer_unchanged(self);
        const int8_t *x = et_bind_input_of(self, a[ARG_x].u_obj);
        mp_obj_t ret = et_bind_float_slot_new();
        const float loss = et_train_step(&self->train, x, label, lr, qas);
        return et_bind_float_slot_set(ret, (mp_float_t)loss);
    }
    /* A batch: everything is converted and checked before any state changes. */
    if (!self->batch) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: k labels need a batch model: create the Model with batch=True"));
    }
    const size_t k = et_bind_labels_len(label_in);
    if (k == 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: a batch needs at least one label"));
    }
    /* the labels as int32: on the stack for k <= 16, else one heap block */
    int32_t stack[16];
    int32_t *lab = k <= MP_ARRAY_SIZE(stack) ? stack : m_new(int32_t, k);
    et_bind_labels_convert(self, label_in, k, lab, true);
    const float lr = lr_convert(a[ARG_lr].u_obj);
    lr_check(lr);
    et_bind_check_buffer_unchanged(self);
    mp_buffer_info_t xb;
    if (mp_obj_is_str(a[ARG_x].u_obj)) {
        mp_raise_TypeError(MP_ERROR_TEXT("edgetune: an input must be bytes-like int8 data, not a str"));
    }
    mp_get_buffer_raise(a[ARG_x].u_obj, &xb, MP_BUFFER_READ);
    const size_t n_in = et_model_input_size(&self->model);
    if (xb.len != k * n_in) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("edgetune: inputs have %u bytes, %u labels need %u x %u"),
            (unsigned)xb.len, (unsigned)k, (unsigned)k, (unsigned)n_in);
    }
    mp_obj_t ret = et_bind_float_slot_new();
    const float loss = et_train_batch(&self->train, (const int8_t *)xb.buf, lab, (int32_t)k, lr, qas);
    if (lab != stack) {
        m_del(int32_t, lab, k);
    }
    return et_bind_float_slot_set(ret, (mp_float_t)loss);
}

/* m.evaluate(xs, labels) -> (loss, accuracy): mean loss and accuracy over the samples. The labels
 * are converted first; the item array of xs is taken after the last callback. */
mp_obj_t edgetune_model_evaluate(mp_obj_t self_in, mp_obj_t xs_in, mp_obj_t labels_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    const size_t n = et_bind_seq_len(xs_in);
    const size_t n_labels = et_bind_labels_len(labels_in);
    if (n == 0 || n != n_labels) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: evaluate needs as many labels as inputs (at least one)"));
    }
    /* plain labels (ints, bytes) are checked here and read again where used: no heap block */
    int32_t *labels = NULL;
    if (et_bind_labels_plain(labels_in)) {
        for (size_t j = 0; j < n; ++j) {
            (void)et_bind_label_plain_at(self, labels_in, j);
        }
    } else {
        labels = m_new(int32_t, n);
        et_bind_labels_convert(self, labels_in, n, labels, false);
    }
    /* no Python code runs from here on */
    size_t n_now;
    mp_obj_t *xs;
    mp_obj_get_array(xs_in, &n_now, &xs);
    if (n_now != n) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: a list argument changed length while its items were converted"));
    }
    et_bind_check_buffer_unchanged(self);
    for (size_t j = 0; j < n; ++j) {
        (void)et_bind_input_of(self, xs[j]);
    }
    et_tensor_t to;
    et_model_tensor(&self->model, self->model.output, &to);
    const size_t n_out = et_model_output_size(&self->model);
    float total = 0.0f;
    size_t correct = 0;
    for (size_t j = 0; j < n; ++j) {
        const int32_t label = labels ? labels[j] : et_bind_label_plain_at(self, labels_in, j);
        const int8_t *y = et_train_forward(&self->train, et_bind_input_of(self, xs[j]), 0);
        const float loss = et_softmax_xent_loss_f32(y, (int32_t)n_out, to.scale, to.zero_point, label);
        total = j == 0 ? loss : total + loss;
        size_t best = 0;
        for (size_t c = 1; c < n_out; ++c) {
            if (y[c] > y[best]) {
                best = c;
            }
        }
        correct += best == (size_t)label ? 1u : 0u;
    }
    if (labels) {
        m_del(int32_t, labels, n);
    }
    mp_obj_t items[2] = {
        mp_obj_new_float((mp_float_t)(total / (float)n)),
        mp_obj_new_float((mp_float_t)((float)correct / (float)n)),
    };
    return mp_obj_new_tuple(2, items);
}

/* m.reset(): back to the flashed weights; residuals and momentum zero. */
mp_obj_t edgetune_model_reset(mp_obj_t self_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    et_bind_check_buffer_unchanged(self);
    et_train_init(&self->train, self->arena);
    return mp_const_none;
}
