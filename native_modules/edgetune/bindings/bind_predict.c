/*
 * m.predict, m.predict_class and m.info(): the forward walker on one input, and the model's
 * layers, shapes, quantization and arena figures as a dict.
 */
#include <string.h>

#include "et_bind.h"
#include "et_ops.h"
#include "refit.h"

static const char *const act_names[] = { "NONE", "RELU", "RELU6" };

/* Run the model on x; returns a pointer to the output inside the arena. */
static const int8_t *run(edgetune_model_obj_t *self, mp_obj_t x_in) {
    et_bind_check_buffer_unchanged(self); /* before anything reads the model buffer */
    return et_train_forward(&self->train, et_bind_input_of(self, x_in), 0);
}

mp_obj_t edgetune_model_predict(mp_obj_t self_in, mp_obj_t x_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    const int8_t *y = run(self, x_in);
    return mp_obj_new_bytes((const byte *)y, et_model_output_size(&self->model));
}

mp_obj_t edgetune_model_predict_class(mp_obj_t self_in, mp_obj_t x_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    const int8_t *y = run(self, x_in);
    const size_t n = et_model_output_size(&self->model);
    size_t best = 0;
    for (size_t i = 1; i < n; ++i) {
        if (y[i] > y[best]) {
            best = i;
        }
    }
    return MP_OBJ_NEW_SMALL_INT((mp_int_t)best);
}

mp_obj_t et_bind_shape_tuple(const et_tensor_t *t) {
    mp_obj_t items[4];
    for (int k = 0; k < 4; ++k) {
        items[k] = MP_OBJ_NEW_SMALL_INT(t->shape[k]);
    }
    return mp_obj_new_tuple(4, items);
}

void et_bind_store(mp_obj_t dict, const char *key, mp_obj_t value) {
    mp_obj_dict_store(dict, mp_obj_new_str(key, strlen(key)), value);
}

void et_bind_store_quant(mp_obj_t dict, const char *scale_key, const char *zp_key, const et_tensor_t *t) {
    #if MICROPY_PY_BUILTINS_FLOAT
    et_bind_store(dict, scale_key, mp_obj_new_float((mp_float_t)t->scale));
    #else
    (void)scale_key;
    #endif
    et_bind_store(dict, zp_key, mp_obj_new_int(t->zero_point));
}

mp_obj_t edgetune_model_info(mp_obj_t self_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    const et_model_t *m = &self->model;
    et_bind_check_buffer_unchanged(self);
    mp_obj_t layers = mp_obj_new_list(0, NULL);
    for (unsigned i = 0; i < m->n_layers; ++i) {
        et_layer_t l;
        et_tensor_t tin, tout;
        et_model_layer(m, i, &l);
        et_model_tensor(m, l.input, &tin);
        et_model_tensor(m, l.output, &tout);
        mp_obj_t d = mp_obj_new_dict(0);
        et_bind_store(d, "op", mp_obj_new_str(et_op(l.op)->name, strlen(et_op(l.op)->name)));
        et_bind_store(d, "input_shape", et_bind_shape_tuple(&tin));
        et_bind_store(d, "output_shape", et_bind_shape_tuple(&tout));
        et_bind_store(d, "activation", mp_obj_new_str(act_names[l.activation], strlen(act_names[l.activation])));
        if (l.weight != ET_NONE) {
            et_tensor_t tw;
            et_model_tensor(m, l.weight, &tw);
            et_bind_store(d, "weight_shape", et_bind_shape_tuple(&tw));
        }
        et_bind_store(d, "bias", mp_obj_new_bool(l.bias != ET_NONE));
        mp_obj_list_append(layers, d);
    }
    et_tensor_t tin, tout;
    et_model_tensor(m, m->input, &tin);
    et_model_tensor(m, m->output, &tout);
    mp_obj_t d = mp_obj_new_dict(0);
    et_bind_store(d, "layers", layers);
    et_bind_store(d, "input_shape", et_bind_shape_tuple(&tin));
    et_bind_store(d, "output_shape", et_bind_shape_tuple(&tout));
    et_bind_store_quant(d, "input_scale", "input_zero_point", &tin);
    et_bind_store_quant(d, "output_scale", "output_zero_point", &tout);
    et_bind_store(d, "arena", mp_obj_new_int_from_uint(self->train.arena_size));
    et_bind_store(d, "inference_arena", mp_obj_new_int_from_uint(m->arena_size));
    et_bind_store(d, "peak", mp_obj_new_int_from_uint(self->train.peak));
    et_bind_store(d, "trainable", mp_obj_new_int_from_uint(self->train.n_trainable));
    et_bind_store(d, "batch", mp_obj_new_bool(self->batch));
    /* docs/training.md §9: scratch of m.refit with l2 and alpha given (CV adds its held-out fold) */
    et_bind_store(d, "refit_scratch", self->train.refit_layer < 0 ? mp_const_none
        : mp_obj_new_int_from_uint(et_refit_scratch_size(&self->train, NULL, 0, 0)));
    mp_obj_t scheme = mp_obj_new_list(0, NULL);
    for (unsigned i = 0; i < m->n_layers; ++i) {
        const et_train_layer_t *tl = &self->tlayers[i];
        if (tl->s.flags) {
            mp_obj_t e[3] = {
                MP_OBJ_NEW_SMALL_INT(i), mp_obj_new_bool(tl->s.flags & ET_SCHEME_BIAS),
                MP_OBJ_NEW_SMALL_INT(tl->s.n_sel),
            };
            mp_obj_list_append(scheme, mp_obj_new_tuple(3, e));
        }
    }
    et_bind_store(d, "scheme", scheme);
    et_bind_store(d, "model_bytes", mp_obj_new_int_from_uint(m->len));
    return d;
}
