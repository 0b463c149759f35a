/*
 * MicroPython bindings of edgetune (thin: convert objects, call model.c).
 *
 *   import edgetune
 *   m = edgetune.Model(buf)   # buf: read-only bytes-like .etm, read in place (no copy)
 *   y = m.predict(x)          # x: bytes-like int8 of the input size -> bytes (int8 output)
 *   k = m.predict_class(x)    # arg-max of the output
 *   m.info()                  # dict: layers, shapes, quantization, arena bytes
 *   q = m.quantize(samples)   # float32 samples -> bytes (int8 model input), per channel
 *
 * The activation arena is ONE block from the MicroPython heap (so gc accounting
 * and -X heapsize limits see it), referenced from the Model object.
 */
#include <string.h>

#include "et_bind.h"

/* The scheme argument of Model(), converted (rule 1) before the model buffer is read:
 * None (the .etm's, else the default) or {"n_bias": n, "weights": [(layer, den), ...]} with
 * den 1, 2, 4 or 8 (ratio 1/den). Only str keys are looked at (a key's __eq__ could run code). */
typedef struct {
    bool given;
    mp_int_t n_bias;
    size_t n_pairs;
    int16_t layer[ET_MAX_LAYERS]; /* out-of-range values saturate (they are refused later) */
    uint8_t den[ET_MAX_LAYERS];    /* 1, 2, 4, 8, or 0 for anything else */
} scheme_arg_t;

/* Whether the str s equals the qstr q (no user code runs: s is an exact str). Using the qstrs
 * keeps 'n_bias' and 'weights' in the firmware's qstr pool, so a script's literals of them are
 * not interned in the heap. */
static bool str_is(mp_obj_t s, qstr q) {
    if (mp_obj_is_qstr(s)) {
        return MP_OBJ_QSTR_VALUE(s) == q;
    }
    size_t len, qlen;
    const char *d = mp_obj_str_get_data(s, &len);
    const char *qs = (const char *)qstr_data(q, &qlen);
    return len == qlen && memcmp(d, qs, len) == 0;
}

static void scheme_convert(mp_obj_t scheme, scheme_arg_t *out) {
    memset(out, 0, sizeof *out); /* no stale stack words for the conservative GC scan to keep */
    out->given = scheme != mp_const_none;
    out->n_bias = 0;
    out->n_pairs = 0;
    if (!out->given) {
        return;
    }
    if (!mp_obj_is_type(scheme, &mp_type_dict)) {
        mp_raise_TypeError(MP_ERROR_TEXT("edgetune: scheme must be None or a dict"));
    }
    /* the two values first (no Python code runs while the dict's table is walked) */
    mp_obj_t nb = MP_OBJ_NULL, w = MP_OBJ_NULL;
    mp_map_t *map = mp_obj_dict_get_map(scheme);
    for (size_t i = 0; i < map->alloc; ++i) {
        if (!mp_map_slot_is_filled(map, i)) {
            continue;
        }
        const mp_obj_t key = map->table[i].key;
        if (!mp_obj_is_str(key)) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: scheme keys must be 'n_bias' and 'weights'"));
        } else if (str_is(key, MP_QSTR_n_bias)) {
            nb = map->table[i].value;
        } else if (str_is(key, MP_QSTR_weights)) {
            w = map->table[i].value;
        } else {
            vstr_t vs;
            mp_print_t pr;
            vstr_init_print(&vs, 48, &pr);
            mp_print_str(&pr, "edgetune: unknown scheme key ");
            mp_obj_print_helper(&pr, key, PRINT_REPR);
            mp_print_str(&pr, "; the valid keys are 'n_bias' and 'weights'");
            nlr_raise(mp_obj_new_exception_arg1(&mp_type_ValueError, mp_obj_new_str_from_vstr(&vs)));
        }
    }
    if (nb != MP_OBJ_NULL) {
        if (mp_obj_is_str(nb) || mp_obj_is_float(nb)) {
            mp_raise_TypeError(MP_ERROR_TEXT("edgetune: scheme n_bias must be an int"));
        }
        out->n_bias = mp_obj_get_int(nb);
    }
    if (w != MP_OBJ_NULL) {
        const size_t n = et_bind_seq_len(w);
        if (n > ET_MAX_LAYERS) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: scheme weights need (layer, 1|2|4|8) pairs, each layer once"));
        }
        for (size_t k = 0; k < n; ++k) {
            mp_obj_t *pair;
            mp_obj_get_array_fixed_n(et_bind_seq_item(w, k, n), 2, &pair);
            const mp_obj_t p0 = pair[0], p1 = pair[1]; /* p0's __int__ may change the pair */
            const mp_int_t layer = mp_obj_get_int(p0), d = mp_obj_get_int(p1);
            out->layer[k] = (int16_t)(layer < -32768 ? -32768 : layer > 32767 ? 32767 : layer);
            out->den[k] = (uint8_t)((d == 1 || d == 2 || d == 4 || d == 8) ? d : 0);
        }
        out->n_pairs = n;
    }
}

/* The converted scheme against the validated model (ValueError). */
static void scheme_apply(const et_model_t *m, const scheme_arg_t *sa, et_scheme_layer_t *out) {
    char err[160];
    const char *msg = NULL;
    if (!sa->given) {
        if (m->scheme_off) {
            msg = et_scheme_parse(m, out, err, sizeof err);
        } else {
            et_scheme_default(m, out);
        }
    } else {
        uint8_t den[ET_MAX_LAYERS];
        memset(den, 0, sizeof den);
        for (size_t k = 0; k < sa->n_pairs; ++k) {
            mp_int_t layer = sa->layer[k];
            const unsigned d = sa->den[k];
            if (layer < 0) {
                layer += m->n_layers;
            }
            if (layer < 0 || layer >= m->n_layers || d == 0 || den[layer]) {
                mp_raise_ValueError(MP_ERROR_TEXT("edgetune: scheme weights need (layer, 1|2|4|8) pairs, each layer once"));
            }
            den[layer] = (uint8_t)d;
        }
        if (sa->n_bias < 0 || sa->n_bias > ET_MAX_LAYERS) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: scheme n_bias must be >= 0 and at most the model's layers with weights"));
        }
        msg = et_scheme_build(m, (uint32_t)sa->n_bias, den, out, err, sizeof err);
    }
    if (msg) {
        et_bind_raise_engine(msg);
    }
}

static mp_obj_t edgetune_model_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    enum { ARG_buf, ARG_scheme, ARG_momentum, ARG_batch };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_buf, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_scheme, MP_ARG_OBJ, {.u_obj = mp_const_none} },
        { MP_QSTR_momentum, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_batch, MP_ARG_BOOL, {.u_bool = false} },
    };
    mp_arg_val_t a[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all_kw_array(n_args, n_kw, args, MP_ARRAY_SIZE(allowed), allowed, a);
    /* conversions first (rule 1): momentum's __float__, the scheme's ints */
    const float momentum = a[ARG_momentum].u_obj == MP_OBJ_NULL ? 0.0f : (float)mp_obj_get_float(a[ARG_momentum].u_obj);
    scheme_arg_t sa; /* 770 bytes of C stack, no heap block (a hole in a tight heap) */
    scheme_convert(a[ARG_scheme].u_obj, &sa);
    if (!(momentum >= 0.0f && momentum < 1.0f)) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: momentum must be in [0, 1)"));
    }
    mp_obj_t buf_obj = a[ARG_buf].u_obj;
    if (mp_obj_is_str(buf_obj)) { /* a str has a buffer too: its UTF-8 bytes */
        mp_raise_msg_varg(&mp_type_TypeError,
            MP_ERROR_TEXT("edgetune: Model() takes the .etm file's bytes, not a path: Model(open('%s', 'rb').read())"),
            mp_obj_str_get_str(buf_obj));
    }
    /* The model is read in place for as long as the Model lives, so its buffer must be one that
     * nobody can change: a bytearray, array or writable memoryview could be resized (the model
     * would read freed memory) or rewritten (counts and offsets no longer validated). */
    mp_buffer_info_t bi;
    if (mp_get_buffer(buf_obj, &bi, MP_BUFFER_WRITE)) {
        mp_raise_TypeError(MP_ERROR_TEXT("edgetune: Model() needs a read-only buffer (bytes, or a memoryview of "
            "bytes), not a bytearray/array that could change under the model: Model(bytes(buf))"));
    }
    mp_get_buffer_raise(buf_obj, &bi, MP_BUFFER_READ);
    et_model_t model;
    char err[192];
    const char *msg = et_model_init(&model, (const uint8_t *)bi.buf, bi.len, err, sizeof err);
    if (msg) {
        et_bind_raise_engine(msg);
    }
    #if EDGETUNE_SANITIZE_HEAP
    {
        uint8_t *copy = malloc(bi.len);
        memcpy(copy, bi.buf, bi.len);
        if (et_model_init(&model, copy, bi.len, err, sizeof err) != NULL) {
            abort(); /* the same bytes validated a moment ago */
        }
    }
    #endif
    et_train_layer_t *tlayers = m_new0(et_train_layer_t, model.n_layers);
    et_scheme_layer_t *sl = m_new(et_scheme_layer_t, model.n_layers);
    scheme_apply(&model, &sa, sl);
    for (unsigned i = 0; i < model.n_layers; ++i) {
        tlayers[i].s = sl[i];
    }
    m_del(et_scheme_layer_t, sl, model.n_layers);
    et_train_t train;
    bool self_batch;
    msg = et_train_plan(&train, &model, tlayers, momentum, err, sizeof err);
    if (msg) {
        et_bind_raise_engine(msg);
    }
    self_batch = a[ARG_batch].u_bool;
    if (self_batch) {
        et_train_plan_batch(&train);
    }
    /* The object first, the arena (the big block) last: if the arena does not fit, the
     * MemoryError names it, and nothing but garbage was allocated. */
    #if EDGETUNE_SANITIZE_HEAP
    edgetune_model_obj_t *self = mp_obj_malloc_with_finaliser(edgetune_model_obj_t, type);
    #else
    edgetune_model_obj_t *self = mp_obj_malloc(edgetune_model_obj_t, type);
    #endif
    uint8_t *arena = m_malloc_maybe(train.arena_size);
    if (arena == NULL) {
        gc_info_t info;
        gc_info(&info);
        mp_raise_msg_varg(&mp_type_MemoryError,
            MP_ERROR_TEXT("edgetune: model needs %u bytes of arena, the largest free heap block has %u"),
            (unsigned)train.arena_size, (unsigned)(info.max_free * MICROPY_BYTES_PER_GC_BLOCK));
    }
    self->buf_obj = buf_obj;
    #if EDGETUNE_SANITIZE_HEAP
    self->buf_data = (const uint8_t *)bi.buf;
    self->arena_gc = arena; /* kept for the accounting, never used */
    arena = malloc(train.arena_size ? train.arena_size : 1);
    #endif
    self->model = model;
    self->arena = arena;
    self->tlayers = tlayers;
    self->train = train;
    self->train.m = &self->model;
    self->train.layers = tlayers;
    self->batch = self_batch;
    et_train_init(&self->train, arena);
    return MP_OBJ_FROM_PTR(self);
}

#if EDGETUNE_SANITIZE_HEAP
/* The finaliser of the sanitizer build: the malloc blocks go with the Model. */
static mp_obj_t edgetune_model_del(mp_obj_t self_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    free(self->arena);
    free((void *)self->model.buf);
    self->arena = NULL;
    self->model.buf = NULL;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(edgetune_model_del_obj, edgetune_model_del);
#endif

/* The method objects (the functions are in the bind_ files, declared in et_bind.h). */
static MP_DEFINE_CONST_FUN_OBJ_2(edgetune_model_predict_obj, edgetune_model_predict);
static MP_DEFINE_CONST_FUN_OBJ_2(edgetune_model_predict_class_obj, edgetune_model_predict_class);
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_train_obj, 3, edgetune_model_train);
static MP_DEFINE_CONST_FUN_OBJ_3(edgetune_model_evaluate_obj, edgetune_model_evaluate);
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_refit_obj, 3, edgetune_model_refit);
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_refit_stats_obj, 3, edgetune_model_refit_stats);
static MP_DEFINE_CONST_FUN_OBJ_2(edgetune_model_save_obj, edgetune_model_save);
static MP_DEFINE_CONST_FUN_OBJ_2(edgetune_model_load_obj, edgetune_model_load);
static MP_DEFINE_CONST_FUN_OBJ_1(edgetune_model_state_obj, edgetune_model_state);
static MP_DEFINE_CONST_FUN_OBJ_2(edgetune_model_load_state_obj, edgetune_model_load_state);
static MP_DEFINE_CONST_FUN_OBJ_1(edgetune_model_reset_obj, edgetune_model_reset);
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_quantize_obj, 2, edgetune_model_quantize);
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_calibrate_obj, 4, edgetune_model_calibrate);
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_frame_obj, 1, edgetune_model_frame);
static MP_DEFINE_CONST_FUN_OBJ_1(edgetune_model_info_obj, edgetune_model_info);

#if !MICROPY_ENABLE_DYNRUNTIME
static const mp_rom_map_elem_t edgetune_model_locals_dict_table[] = {
    #if EDGETUNE_SANITIZE_HEAP
    { MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&edgetune_model_del_obj) },
    #endif
    { MP_ROM_QSTR(MP_QSTR_predict), MP_ROM_PTR(&edgetune_model_predict_obj) },
    { MP_ROM_QSTR(MP_QSTR_predict_class), MP_ROM_PTR(&edgetune_model_predict_class_obj) },
    { MP_ROM_QSTR(MP_QSTR_info), MP_ROM_PTR(&edgetune_model_info_obj) },
    { MP_ROM_QSTR(MP_QSTR_train), MP_ROM_PTR(&edgetune_model_train_obj) },
    { MP_ROM_QSTR(MP_QSTR_evaluate), MP_ROM_PTR(&edgetune_model_evaluate_obj) },
    { MP_ROM_QSTR(MP_QSTR_refit), MP_ROM_PTR(&edgetune_model_refit_obj) },
    { MP_ROM_QSTR(MP_QSTR_refit_stats), MP_ROM_PTR(&edgetune_model_refit_stats_obj) },
    { MP_ROM_QSTR(MP_QSTR_save), MP_ROM_PTR(&edgetune_model_save_obj) },
    { MP_ROM_QSTR(MP_QSTR_load), MP_ROM_PTR(&edgetune_model_load_obj) },
    { MP_ROM_QSTR(MP_QSTR_state), MP_ROM_PTR(&edgetune_model_state_obj) },
    { MP_ROM_QSTR(MP_QSTR_load_state), MP_ROM_PTR(&edgetune_model_load_state_obj) },
    { MP_ROM_QSTR(MP_QSTR_reset), MP_ROM_PTR(&edgetune_model_reset_obj) },
    { MP_ROM_QSTR(MP_QSTR_quantize), MP_ROM_PTR(&edgetune_model_quantize_obj) },
    { MP_ROM_QSTR(MP_QSTR_calibrate), MP_ROM_PTR(&edgetune_model_calibrate_obj) },
    { MP_ROM_QSTR(MP_QSTR_frame), MP_ROM_PTR(&edgetune_model_frame_obj) },
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

#else
/* The native module (make natmod): the type and its locals dict live in the module's RAM and
 * are filled when the .mpy is imported; same names as the table above (tests compare dir()). */
mp_obj_full_type_t edgetune_type_Model;
mp_map_elem_t edgetune_model_locals_dict_table[15]; /* not static: mpy_ld relocates bss only through the GOT */
static MP_DEFINE_CONST_DICT(edgetune_model_locals_dict, edgetune_model_locals_dict_table);

mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args) {
    MP_DYNRUNTIME_INIT_ENTRY
    mp_map_elem_t *t = edgetune_model_locals_dict_table;
    t[0] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_predict), MP_OBJ_FROM_PTR(&edgetune_model_predict_obj) };
    t[1] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_predict_class), MP_OBJ_FROM_PTR(&edgetune_model_predict_class_obj) };
    t[2] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_info), MP_OBJ_FROM_PTR(&edgetune_model_info_obj) };
    t[3] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_train), MP_OBJ_FROM_PTR(&edgetune_model_train_obj) };
    t[4] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_evaluate), MP_OBJ_FROM_PTR(&edgetune_model_evaluate_obj) };
    t[5] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_refit), MP_OBJ_FROM_PTR(&edgetune_model_refit_obj) };
    t[6] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_save), MP_OBJ_FROM_PTR(&edgetune_model_save_obj) };
    t[7] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_load), MP_OBJ_FROM_PTR(&edgetune_model_load_obj) };
    t[8] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_state), MP_OBJ_FROM_PTR(&edgetune_model_state_obj) };
    t[9] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_load_state), MP_OBJ_FROM_PTR(&edgetune_model_load_state_obj) };
    t[10] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_reset), MP_OBJ_FROM_PTR(&edgetune_model_reset_obj) };
    t[11] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_quantize), MP_OBJ_FROM_PTR(&edgetune_model_quantize_obj) };
    t[12] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_calibrate), MP_OBJ_FROM_PTR(&edgetune_model_calibrate_obj) };
    t[13] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_frame), MP_OBJ_FROM_PTR(&edgetune_model_frame_obj) };
    t[14] = (mp_map_elem_t){ MP_OBJ_NEW_QSTR(MP_QSTR_refit_stats), MP_OBJ_FROM_PTR(&edgetune_model_refit_stats_obj) };
    edgetune_type_Model.base.type = (void *)&mp_type_type;
    edgetune_type_Model.flags = MP_TYPE_FLAG_NONE;
    edgetune_type_Model.name = MP_QSTR_Model;
    MP_OBJ_TYPE_SET_SLOT(&edgetune_type_Model, make_new, edgetune_model_make_new, 0);
    MP_OBJ_TYPE_SET_SLOT(&edgetune_type_Model, locals_dict, (void *)&edgetune_model_locals_dict, 1);
    mp_store_global(MP_QSTR_Model, MP_OBJ_FROM_PTR(&edgetune_type_Model));
    MP_DYNRUNTIME_INIT_EXIT
}
#endif /* !MICROPY_ENABLE_DYNRUNTIME */

