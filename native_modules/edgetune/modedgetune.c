/*
 * MicroPython bindings of edgetune (thin: convert objects, call model.c).
 *
 *   import edgetune
 *   m = edgetune.Model(buf)   # buf: bytes-like .etm, read in place (no copy)
 *   y = m.predict(x)          # x: bytes-like int8 of the input size -> bytes (int8 output)
 *   k = m.predict_class(x)    # arg-max of the output
 *   m.info()                  # dict: layers, shapes, quantization, arena bytes
 *
 * The activation arena is ONE block from the MicroPython heap (so gc accounting
 * and -X heapsize limits see it), referenced from the Model object.
 */
#include <string.h>

#include "py/gc.h"
#include "py/obj.h"
#include "py/runtime.h"

#include "model.h"

typedef struct _edgetune_model_obj_t {
    mp_obj_base_t base;
    mp_obj_t buf_obj;    /* keeps the .etm buffer alive; weights are read from it */
    et_model_t model;    /* points into buf_obj's data */
    uint8_t *arena;      /* model.arena_size bytes from the GC heap */
} edgetune_model_obj_t;

static const char *const act_names[] = { "NONE", "RELU", "RELU6" };
static const char *const op_names[] = {
    "?", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN",
};

/* The buffer must still be where Model() validated it (a bytearray can be resized). */
static void check_buffer_unchanged(edgetune_model_obj_t *self) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(self->buf_obj, &bi, MP_BUFFER_READ);
    if ((const uint8_t *)bi.buf != self->model.buf || bi.len != self->model.len) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: the model buffer was resized or moved after Model()"));
    }
}

static mp_obj_t edgetune_model_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, 1, false);
    mp_buffer_info_t bi;
    mp_get_buffer_raise(args[0], &bi, MP_BUFFER_READ);
    if (((uintptr_t)bi.buf & 3u) != 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: model buffer must be 4-byte aligned (copy it into a bytes object)"));
    }
    et_model_t model;
    char err[192];
    const char *msg = et_model_init(&model, (const uint8_t *)bi.buf, bi.len, err, sizeof err);
    if (msg) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: %s"), msg);
    }
    uint8_t *arena = m_malloc_maybe(model.arena_size);
    if (arena == NULL) {
        gc_info_t info;
        gc_info(&info);
        mp_raise_msg_varg(&mp_type_MemoryError,
            MP_ERROR_TEXT("edgetune: model needs %u bytes of arena, the largest free heap block has %u"),
            (unsigned)model.arena_size, (unsigned)(info.max_free * MICROPY_BYTES_PER_GC_BLOCK));
    }
    edgetune_model_obj_t *self = mp_obj_malloc(edgetune_model_obj_t, type);
    self->buf_obj = args[0];
    self->model = model;
    self->arena = arena;
    return MP_OBJ_FROM_PTR(self);
}

/* Run the model on x; returns a pointer to the output inside the arena. */
static const int8_t *run(edgetune_model_obj_t *self, mp_obj_t x_in) {
    mp_buffer_info_t xb;
    mp_get_buffer_raise(x_in, &xb, MP_BUFFER_READ);
    const size_t n_in = et_model_input_size(&self->model);
    if (xb.len != n_in) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: input has %u bytes, the model expects %u"),
            (unsigned)xb.len, (unsigned)n_in);
    }
    check_buffer_unchanged(self);
    const int8_t *y = et_model_forward(&self->model, self->arena, (const int8_t *)xb.buf);
    if (y == NULL) {
        mp_raise_msg(&mp_type_RuntimeError, MP_ERROR_TEXT("edgetune: a kernel rejected its arguments"));
    }
    return y;
}

static mp_obj_t edgetune_model_predict(mp_obj_t self_in, mp_obj_t x_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    const int8_t *y = run(self, x_in);
    return mp_obj_new_bytes((const byte *)y, et_model_output_size(&self->model));
}
static MP_DEFINE_CONST_FUN_OBJ_2(edgetune_model_predict_obj, edgetune_model_predict);

static mp_obj_t edgetune_model_predict_class(mp_obj_t self_in, mp_obj_t x_in) {
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
static MP_DEFINE_CONST_FUN_OBJ_2(edgetune_model_predict_class_obj, edgetune_model_predict_class);

static mp_obj_t shape_tuple(const et_tensor_t *t) {
    mp_obj_t items[4];
    for (int k = 0; k < 4; ++k) {
        items[k] = MP_OBJ_NEW_SMALL_INT(t->shape[k]);
    }
    return mp_obj_new_tuple(4, items);
}

static void store(mp_obj_t dict, const char *key, mp_obj_t value) {
    mp_obj_dict_store(dict, mp_obj_new_str(key, strlen(key)), value);
}

static void store_quant(mp_obj_t dict, const char *scale_key, const char *zp_key, const et_tensor_t *t) {
    #if MICROPY_PY_BUILTINS_FLOAT
    store(dict, scale_key, mp_obj_new_float((mp_float_t)t->scale));
    #else
    (void)scale_key;
    #endif
    store(dict, zp_key, mp_obj_new_int(t->zero_point));
}

static mp_obj_t edgetune_model_info(mp_obj_t self_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    const et_model_t *m = &self->model;
    check_buffer_unchanged(self);
    mp_obj_t layers = mp_obj_new_list(0, NULL);
    for (unsigned i = 0; i < m->n_layers; ++i) {
        et_layer_t l;
        et_tensor_t tin, tout;
        et_model_layer(m, i, &l);
        et_model_tensor(m, l.input, &tin);
        et_model_tensor(m, l.output, &tout);
        mp_obj_t d = mp_obj_new_dict(0);
        store(d, "op", mp_obj_new_str(op_names[l.op], strlen(op_names[l.op])));
        store(d, "input_shape", shape_tuple(&tin));
        store(d, "output_shape", shape_tuple(&tout));
        store(d, "activation", mp_obj_new_str(act_names[l.activation], strlen(act_names[l.activation])));
        if (l.weight != ET_NONE) {
            et_tensor_t tw;
            et_model_tensor(m, l.weight, &tw);
            store(d, "weight_shape", shape_tuple(&tw));
        }
        store(d, "bias", mp_obj_new_bool(l.bias != ET_NONE));
        mp_obj_list_append(layers, d);
    }
    et_tensor_t tin, tout;
    et_model_tensor(m, m->input, &tin);
    et_model_tensor(m, m->output, &tout);
    mp_obj_t d = mp_obj_new_dict(0);
    store(d, "layers", layers);
    store(d, "input_shape", shape_tuple(&tin));
    store(d, "output_shape", shape_tuple(&tout));
    store_quant(d, "input_scale", "input_zero_point", &tin);
    store_quant(d, "output_scale", "output_zero_point", &tout);
    store(d, "arena", mp_obj_new_int_from_uint(m->arena_size));
    store(d, "model_bytes", mp_obj_new_int_from_uint(m->len));
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_1(edgetune_model_info_obj, edgetune_model_info);

static const mp_rom_map_elem_t edgetune_model_locals_dict_table[] = {
    { MP_ROM_QSTR(MP_QSTR_predict), MP_ROM_PTR(&edgetune_model_predict_obj) },
    { MP_ROM_QSTR(MP_QSTR_predict_class), MP_ROM_PTR(&edgetune_model_predict_class_obj) },
    { MP_ROM_QSTR(MP_QSTR_info), MP_ROM_PTR(&edgetune_model_info_obj) },
};
static MP_DEFINE_CONST_DICT(edgetune_model_locals_dict, edgetune_model_locals_dict_table);

MP_DEFINE_CONST_OBJ_TYPE(
    edgetune_type_Model,
    MP_QSTR_Model,
    MP_TYPE_FLAG_NONE,
    make_new, edgetune_model_make_new,
    locals_dict, &edgetune_model_locals_dict
    );

static const mp_rom_map_elem_t edgetune_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_edgetune) },
    { MP_ROM_QSTR(MP_QSTR_Model), MP_ROM_PTR(&edgetune_type_Model) },
};
static MP_DEFINE_CONST_DICT(edgetune_module_globals, edgetune_module_globals_table);

const mp_obj_module_t edgetune_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&edgetune_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_edgetune, edgetune_user_cmodule);
