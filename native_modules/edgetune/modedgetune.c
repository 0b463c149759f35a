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

#include "py/gc.h"
#include "py/obj.h"
#include "py/runtime.h"

#include "model.h"
#include "train.h"
#include "refit.h"
#include "kernels/et_mathf.h"
#include "kernels/et_frame_f32.h"
#include "kernels/et_quantize_f32.h"
#include "kernels/et_train_kernels.h"

/* The sanitizer build (scripts/sanitize.sh: -DEDGETUNE_SANITIZE_HEAP=1) keeps the arena, the refit
 * scratch and a copy of the model in exact-size malloc blocks, freed by the Model's finaliser:
 * the GC heap is one malloc block to AddressSanitizer, which then sees an access one byte past
 * any of them (docs/reliability.md §5). The GC blocks are still allocated (and unused) so that
 * heap accounting and MemoryError behave as in the normal build. */
#ifndef EDGETUNE_SANITIZE_HEAP
#define EDGETUNE_SANITIZE_HEAP 0
#endif
#if EDGETUNE_SANITIZE_HEAP
#include <stdlib.h>
#endif
#if MICROPY_ENABLE_DYNRUNTIME
/* Built as a native .mpy (make natmod): what py/dynruntime.h lacks, see natmod/et_natmod.h. */
#include "natmod/et_natmod.h"
#else
/* Argument tables of mp_arg_parse_all (a native module fills them at call time). */
#define ET_ARG_TABLE static const
#endif

typedef struct _edgetune_model_obj_t {
    mp_obj_base_t base;
    mp_obj_t buf_obj;    /* keeps the .etm buffer alive; weights are read from it */
    #if EDGETUNE_SANITIZE_HEAP
    const uint8_t *buf_data; /* buf_obj's data when Model() validated it (model.buf is a copy) */
    #endif
    et_model_t model;    /* points into buf_obj's data */
    uint8_t *arena;      /* train.arena_size bytes from the GC heap (training arena, docs/training.md §6) */
    #if EDGETUNE_SANITIZE_HEAP
    void *arena_gc;      /* the GC block of the normal build, unused */
    #endif
    et_train_layer_t *tlayers; /* model.n_layers entries: the scheme and its arena plan */
    et_train_t train;    /* training state; train.m points at model above */
    bool batch;          /* Model(..., batch=True): train() takes k labels (docs/training.md §5) */
    /* sensor frame (docs/training.md §9): applied by quantize() when frame_on */
    bool frame_on;
    uint8_t frame_improper;
    uint8_t frame_accel[3], frame_gyro[3];
    float frame_r[9];
} edgetune_model_obj_t;

static const char *const act_names[] = { "NONE", "RELU", "RELU6" };
static const char *const op_names[] = {
    "?", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN",
};

/* The buffer must still be where Model() validated it. Model() accepts only read-only buffers
 * (bytes, a memoryview of bytes), which can neither change nor move; this stays as a cheap
 * guard before anything reads the model buffer. */
static void check_buffer_unchanged(edgetune_model_obj_t *self) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(self->buf_obj, &bi, MP_BUFFER_READ);
    #if EDGETUNE_SANITIZE_HEAP
    const uint8_t *data = self->buf_data;
    #else
    const uint8_t *data = self->model.buf;
    #endif
    if ((const uint8_t *)bi.buf != data || bi.len != self->model.len) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: the model buffer was resized or moved after Model()"));
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Argument conversion: the bindings' contract (docs/reliability.md §7)                      */
/*                                                                                            */
/* 1. Every conversion that can run Python code (__int__, __float__, __index__, __bool__ of an */
/*    argument or of a list item) comes first and yields C values. List items are read one at */
/*    a time through seq_item(), which re-reads the list after each callback and refuses one  */
/*    whose length changed, so no stale item array is ever used.                              */
/* 2. Then the buffers (inputs, bytes-like labels, the model's) are looked up and every check */
/*    runs, on the converted values only; no Python code runs between a check and the use.    */
/* 3. Return objects are allocated before the model changes: a MemoryError leaves it as it    */
/*    was.                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* Number of items of a list/tuple argument (TypeError for anything else). */
static size_t seq_len(mp_obj_t seq) {
    size_t n;
    mp_obj_t *items;
    mp_obj_get_array(seq, &n, &items);
    return n;
}

/* Item i of a list/tuple that had n items when its conversion started. */
static mp_obj_t seq_item(mp_obj_t seq, size_t i, size_t n) {
    size_t now;
    mp_obj_t *items;
    mp_obj_get_array(seq, &now, &items);
    if (now != n) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: a list argument changed length while its items were converted"));
    }
    return items[i];
}

/* A float return value, allocated before the model changes (rule 3) and filled in after. */
typedef struct {
    mp_obj_base_t base;
    mp_float_t value;
} float_slot_t; /* the layout of py/objfloat.c's mp_obj_float_t */

static mp_obj_t float_slot_new(void) {
    return mp_obj_new_float((mp_float_t)0);
}

static mp_obj_t float_slot_set(mp_obj_t slot, mp_float_t v) {
    #if MICROPY_OBJ_REPR == MICROPY_OBJ_REPR_C || MICROPY_OBJ_REPR == MICROPY_OBJ_REPR_D
    (void)slot;
    return mp_obj_new_float(v); /* a float is boxed in the word: nothing is allocated */
    #else
    ((float_slot_t *)MP_OBJ_TO_PTR(slot))->value = v;
    return slot;
    #endif
}

/* The int8 input x (any bytes-like object but a str) of exactly the model's input size. Runs no
 * Python code. */
static const int8_t *input_of(edgetune_model_obj_t *self, mp_obj_t x_in) {
    if (mp_obj_is_str(x_in)) { /* a str has a buffer too: its UTF-8 bytes */
        mp_raise_TypeError(MP_ERROR_TEXT("edgetune: an input must be bytes-like int8 data, not a str"));
    }
    mp_buffer_info_t xb;
    mp_get_buffer_raise(x_in, &xb, MP_BUFFER_READ);
    const size_t n_in = et_model_input_size(&self->model);
    if (xb.len != n_in) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: input has %u bytes, the model expects %u"),
            (unsigned)xb.len, (unsigned)n_in);
    }
    return (const int8_t *)xb.buf;
}

static void label_check(edgetune_model_obj_t *self, mp_int_t label) {
    const size_t n = et_model_output_size(&self->model);
    if (label < 0 || (size_t)label >= n) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: label %ld out of range 0..%u"), (long)label,
            (unsigned)(n - 1));
    }
}

/* One label: an int (or an object with __int__), range-checked. */
static int32_t label_of(edgetune_model_obj_t *self, mp_obj_t label_in) {
    if (mp_obj_is_str(label_in) || mp_obj_is_float(label_in)) {
        mp_raise_TypeError(MP_ERROR_TEXT("edgetune: a label must be an int"));
    }
    const mp_int_t label = mp_obj_get_int(label_in);
    label_check(self, label);
    return (int32_t)label;
}

/* The bytes-like labels of lb: bytes, bytearray or array('B') (0..255), array('b') (signed). */
static bool labels_buffer(mp_obj_t obj, mp_buffer_info_t *lb) {
    if (mp_obj_is_type(obj, &mp_type_list) || mp_obj_is_type(obj, &mp_type_tuple) || mp_obj_is_str(obj)
        || !mp_get_buffer(obj, lb, MP_BUFFER_READ)) {
        return false;
    }
    if (lb->typecode != 'B' && lb->typecode != 'b' && lb->typecode != 1 /* bytearray */) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: labels must be ints, bytes or a list/tuple of ints"));
    }
    return true;
}

/* Number of labels in a labels argument (a list/tuple of ints or bytes-like, see labels_buffer). */
static size_t labels_len(mp_obj_t obj) {
    mp_buffer_info_t lb;
    return labels_buffer(obj, &lb) ? lb.len : seq_len(obj);
}

/* Convert the n labels of obj (n from labels_len) into out[], each range-checked. May run Python
 * code (items' __int__, unless ints_only: then only int/bool items are taken, as train()'s batch
 * always did); the buffer of bytes-like labels is looked up again here. */
static void labels_convert(edgetune_model_obj_t *self, mp_obj_t obj, size_t n, int32_t *out, bool ints_only) {
    mp_buffer_info_t lb;
    if (labels_buffer(obj, &lb)) {
        if (lb.len != n) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: a list argument changed length while its items were converted"));
        }
        for (size_t s = 0; s < n; ++s) {
            const mp_int_t v = lb.typecode == 'b' ? (mp_int_t)((const int8_t *)lb.buf)[s]
                : (mp_int_t)((const uint8_t *)lb.buf)[s];
            label_check(self, v);
            out[s] = (int32_t)v;
        }
        return;
    }
    for (size_t s = 0; s < n; ++s) {
        const mp_obj_t o = seq_item(obj, s, n);
        if (ints_only && !mp_obj_is_int(o) && !mp_obj_is_bool(o)) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: labels must be ints"));
        }
        out[s] = label_of(self, o);
    }
}

/* Whether reading the labels runs no Python code: bytes-like, or a list/tuple of ints/bools only
 * (then they can be read again where used, and evaluate() needs no label array). */
static bool labels_plain(mp_obj_t obj) {
    mp_buffer_info_t lb;
    if (labels_buffer(obj, &lb)) {
        return true;
    }
    size_t n;
    mp_obj_t *items;
    mp_obj_get_array(obj, &n, &items);
    for (size_t s = 0; s < n; ++s) {
        if (!mp_obj_is_int(items[s]) && !mp_obj_is_bool(items[s])) {
            return false;
        }
    }
    return true;
}

/* Label s of plain labels (labels_plain), range-checked; runs no Python code. */
static int32_t label_plain_at(edgetune_model_obj_t *self, mp_obj_t obj, size_t s) {
    mp_buffer_info_t lb;
    if (labels_buffer(obj, &lb)) {
        const mp_int_t v = lb.typecode == 'b' ? (mp_int_t)((const int8_t *)lb.buf)[s]
            : (mp_int_t)((const uint8_t *)lb.buf)[s];
        label_check(self, v);
        return (int32_t)v;
    }
    size_t n;
    mp_obj_t *items;
    mp_obj_get_array(obj, &n, &items);
    return label_of(self, items[s]);
}

/* A sequence of numbers: a list/tuple (items converted like float(), then to float32) or a
 * float32 ('f') buffer. */
static size_t floats_len(mp_obj_t obj, const char *what) {
    if (mp_obj_is_type(obj, &mp_type_list) || mp_obj_is_type(obj, &mp_type_tuple)) {
        return seq_len(obj);
    }
    mp_buffer_info_t bi;
    if (mp_get_buffer(obj, &bi, MP_BUFFER_READ) && bi.typecode == 'f') {
        return bi.len / sizeof(float);
    }
    mp_raise_msg_varg(&mp_type_TypeError,
        MP_ERROR_TEXT("edgetune: %s must be a list/tuple of numbers or a float32 ('f') buffer"), what);
}

/* Value i of a sequence of numbers that had n values when its conversion started (a list item's
 * __float__ may run Python code; the list or buffer is looked up again for every value). */
static float floats_at(mp_obj_t obj, size_t i, size_t n) {
    if (mp_obj_is_type(obj, &mp_type_list) || mp_obj_is_type(obj, &mp_type_tuple)) {
        return (float)mp_obj_get_float(seq_item(obj, i, n)); /* TypeError for a non-number */
    }
    mp_buffer_info_t bi;
    mp_get_buffer_raise(obj, &bi, MP_BUFFER_READ);
    if (bi.len / sizeof(float) != n) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: a list argument changed length while its items were converted"));
    }
    float v;
    memcpy(&v, (const uint8_t *)bi.buf + i * sizeof(float), sizeof v);
    return v;
}

/* All n values of a sequence of numbers into out[]. */
static void floats_convert(mp_obj_t obj, size_t n, float *out) {
    for (size_t i = 0; i < n; ++i) {
        out[i] = floats_at(obj, i, n);
    }
}

/* A path argument: a non-empty str (a user object could run Python code from + or open()). */
static void path_check(mp_obj_t path) {
    if (!mp_obj_is_str(path)) {
        mp_raise_TypeError(MP_ERROR_TEXT("edgetune: a path must be a str"));
    }
    size_t len;
    (void)mp_obj_str_get_data(path, &len);
    if (len == 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: the path is empty"));
    }
}

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
        const size_t n = seq_len(w);
        if (n > ET_MAX_LAYERS) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: scheme weights need (layer, 1|2|4|8) pairs, each layer once"));
        }
        for (size_t k = 0; k < n; ++k) {
            mp_obj_t *pair;
            mp_obj_get_array_fixed_n(seq_item(w, k, n), 2, &pair);
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
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: %s"), msg);
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
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: %s"), msg);
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
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: %s"), msg);
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

/* Run the model on x; returns a pointer to the output inside the arena. */
static const int8_t *run(edgetune_model_obj_t *self, mp_obj_t x_in) {
    check_buffer_unchanged(self); /* before anything reads the model buffer */
    return et_train_forward(&self->train, input_of(self, x_in), 0);
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

/* ---------------------------------------------------------------------------------------- */
/* Training (docs/training.md): train, evaluate, save, load, reset                           */
/* ---------------------------------------------------------------------------------------- */

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
static mp_obj_t edgetune_model_train(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_x, ARG_label, ARG_lr, ARG_qas };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_x, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_label, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_lr, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_qas, MP_ARG_BOOL, {.u_bool = true} },
    };
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(pos_args[0]);
    mp_arg_val_t a[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all(n_args - 1, pos_args + 1, kw_args, MP_ARRAY_SIZE(allowed), allowed, a);
    const mp_obj_t label_in = a[ARG_label].u_obj;
    const bool qas = a[ARG_qas].u_bool;
    const bool seq = mp_obj_is_type(label_in, &mp_type_list) || mp_obj_is_type(label_in, &mp_type_tuple);
    mp_buffer_info_t lb;
    if (!seq && (mp_obj_is_str(label_in) || !mp_get_buffer(label_in, &lb, MP_BUFFER_READ))) {
        /* one label: an int (anything else raises label_of's TypeError) */
        const int32_t label = label_of(self, label_in);
        const float lr = lr_convert(a[ARG_lr].u_obj);
        lr_check(lr);
        check_buffer_unchanged(self);
        const int8_t *x = input_of(self, a[ARG_x].u_obj);
        mp_obj_t ret = float_slot_new();
        const float loss = et_train_step(&self->train, x, label, lr, qas);
        return float_slot_set(ret, (mp_float_t)loss);
    }
    /* A batch: everything is converted and checked before any state changes. */
    if (!self->batch) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: k labels need a batch model: create the Model with batch=True"));
    }
    const size_t k = labels_len(label_in);
    if (k == 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: a batch needs at least one label"));
    }
    /* the labels as int32: on the stack for k <= 16, else one heap block */
    int32_t stack[16];
    int32_t *lab = k <= MP_ARRAY_SIZE(stack) ? stack : m_new(int32_t, k);
    labels_convert(self, label_in, k, lab, true);
    const float lr = lr_convert(a[ARG_lr].u_obj);
    lr_check(lr);
    check_buffer_unchanged(self);
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
    mp_obj_t ret = float_slot_new();
    const float loss = et_train_batch(&self->train, (const int8_t *)xb.buf, lab, (int32_t)k, lr, qas);
    if (lab != stack) {
        m_del(int32_t, lab, k);
    }
    return float_slot_set(ret, (mp_float_t)loss);
}
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_train_obj, 3, edgetune_model_train);

/* m.evaluate(xs, labels) -> (loss, accuracy): mean loss and accuracy over the samples. The labels
 * are converted first; the item array of xs is taken after the last callback. */
static mp_obj_t edgetune_model_evaluate(mp_obj_t self_in, mp_obj_t xs_in, mp_obj_t labels_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    const size_t n = seq_len(xs_in);
    const size_t n_labels = labels_len(labels_in);
    if (n == 0 || n != n_labels) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: evaluate needs as many labels as inputs (at least one)"));
    }
    /* plain labels (ints, bytes) are checked here and read again where used: no heap block */
    int32_t *labels = NULL;
    if (labels_plain(labels_in)) {
        for (size_t j = 0; j < n; ++j) {
            (void)label_plain_at(self, labels_in, j);
        }
    } else {
        labels = m_new(int32_t, n);
        labels_convert(self, labels_in, n, labels, false);
    }
    /* no Python code runs from here on */
    size_t n_now;
    mp_obj_t *xs;
    mp_obj_get_array(xs_in, &n_now, &xs);
    if (n_now != n) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: a list argument changed length while its items were converted"));
    }
    check_buffer_unchanged(self);
    for (size_t j = 0; j < n; ++j) {
        (void)input_of(self, xs[j]);
    }
    et_tensor_t to;
    et_model_tensor(&self->model, self->model.output, &to);
    const size_t n_out = et_model_output_size(&self->model);
    float total = 0.0f;
    size_t correct = 0;
    for (size_t j = 0; j < n; ++j) {
        const int32_t label = labels ? labels[j] : label_plain_at(self, labels_in, j);
        const int8_t *y = et_train_forward(&self->train, input_of(self, xs[j]), 0);
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
static MP_DEFINE_CONST_FUN_OBJ_3(edgetune_model_evaluate_obj, edgetune_model_evaluate);

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

/* m.refit(xs, labels, l2=None, alpha=None) -> dict: closed-form classifier refit (docs/training.md
 * §9). xs: list/tuple of windows; labels: bytes-like or list/tuple of ints. Every argument is
 * converted first, then checked (ValueError); the index arrays and the scratch are allocated
 * before anything changes (MemoryError leaves the model as it was). */
static mp_obj_t edgetune_model_refit(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_xs, ARG_labels, ARG_l2, ARG_alpha };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_xs, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_labels, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_l2, MP_ARG_OBJ, {.u_obj = mp_const_none} },
        { MP_QSTR_alpha, MP_ARG_OBJ, {.u_obj = mp_const_none} },
    };
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(pos_args[0]);
    mp_arg_val_t a[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all(n_args - 1, pos_args + 1, kw_args, MP_ARRAY_SIZE(allowed), allowed, a);
    /* conversions (TypeError for a wrong type), every Python callback (__float__, __int__) first:
     * the item array of xs is taken only after the last one, and only converted values are
     * checked and used (a callback may resize a list or answer differently the second time) */
    const float nan = et_f32_from_bits(0x7FC00000u);
    const int l2_none = a[ARG_l2].u_obj == mp_const_none, alpha_none = a[ARG_alpha].u_obj == mp_const_none;
    const float l2 = l2_none ? nan : (float)mp_obj_get_float(a[ARG_l2].u_obj);
    const float alpha = alpha_none ? nan : (float)mp_obj_get_float(a[ARG_alpha].u_obj);
    const size_t n_labels = labels_len(a[ARG_labels].u_obj);
    if (n_labels > ET_REFIT_MAX_WINDOWS) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: refit needs 2..32767 windows"));
    }
    int32_t *labels = m_new(int32_t, n_labels ? n_labels : 1);
    labels_convert(self, a[ARG_labels].u_obj, n_labels, labels, false);
    /* checks (ValueError, nothing changed); no Python code runs from here on */
    size_t n;
    mp_obj_t *xs;
    mp_obj_get_array(a[ARG_xs].u_obj, &n, &xs);
    if (n != n_labels) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: refit needs as many labels as windows"));
    }
    if ((!l2_none && l2 != l2) || (!alpha_none && alpha != alpha)) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: l2 and alpha must be numbers (None: chosen by cross-validation)"));
    }
    check_buffer_unchanged(self);
    for (size_t k = 0; k < n; ++k) {
        (void)input_of(self, xs[k]);
    }
    const char *msg = et_refit_check(&self->train, labels, (int32_t)n, l2, alpha);
    if (msg) {
        m_del(int32_t, labels, n ? n : 1);
        mp_raise_ValueError((mp_rom_error_text_t)msg);
    }
    const int8_t **px = m_new(const int8_t *, n);
    for (size_t k = 0; k < n; ++k) {
        px[k] = input_of(self, xs[k]);
    }
    const int cv = l2_none || alpha_none;
    size_t size[ET_REFIT_BLOCKS];
    et_refit_scratch_blocks(&self->train, labels, (int32_t)n, cv, size);
    const size_t need = size[0] + size[1] + size[2];
    /* the result first (rule 3): its floats are filled in after the refit */
    mp_obj_t r_l2 = float_slot_new(), r_alpha = float_slot_new(), r_cv = float_slot_new();
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
    msg = et_refit_run(&self->train, px, labels, (int32_t)n, l2, alpha, scratch, &res);
    for (int k = 0; k < ET_REFIT_BLOCKS; ++k) {
        scratch_free(scratch[k], size[k] ? size[k] : 4);
    }
    m_del(const int8_t *, px, n);
    m_del(int32_t, labels, n);
    if (msg) {
        mp_raise_ValueError((mp_rom_error_text_t)msg);
    }
    /* replacing a value under an existing key allocates nothing */
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_l2), float_slot_set(r_l2, (mp_float_t)res.l2));
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_alpha), float_slot_set(r_alpha, (mp_float_t)res.alpha));
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_cv_accuracy),
        res.cv ? float_slot_set(r_cv, (mp_float_t)res.cv_accuracy) : mp_const_none);
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_refit_obj, 3, edgetune_model_refit);

/* Call f.<method>(args...) through the runtime. */
static mp_obj_t call_method(mp_obj_t obj, qstr name, size_t n_args, const mp_obj_t *args) {
    mp_obj_t call[2 + 2];
    mp_load_method(obj, name, call);
    for (size_t k = 0; k < n_args; ++k) {
        call[2 + k] = args[k];
    }
    return mp_call_method_n_kw(n_args, 0, call);
}

/* open(path, mode); an OSError is raised again as OSError(errno, "edgetune: cannot open|create
 * PATH"), printed "[Errno 2] ENOENT: edgetune: cannot create PATH" -- the runtime's own names no file. */
static mp_obj_t open_file(mp_obj_t path, const char *mode) {
    mp_obj_t args[2] = { path, mp_obj_new_str(mode, strlen(mode)) };
    mp_obj_t open_fn = mp_load_global(MP_QSTR_open);
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        mp_obj_t f = mp_call_function_n_kw(open_fn, 2, 0, args);
        nlr_pop();
        return f;
    }
    mp_obj_t exc = MP_OBJ_FROM_PTR(nlr.ret_val);
    if (!mp_obj_is_subclass_fast(MP_OBJ_FROM_PTR(mp_obj_get_type(exc)), MP_OBJ_FROM_PTR(&mp_type_OSError))) {
        nlr_jump(nlr.ret_val);
    }
    vstr_t vs;
    mp_print_t pr;
    vstr_init_print(&vs, 64, &pr);
    mp_printf(&pr, "edgetune: cannot %s ", mode[0] == 'w' ? "create" : "open");
    mp_obj_print_helper(&pr, path, PRINT_STR);
    mp_obj_t eargs[2] = { mp_obj_exception_get_value(exc), mp_obj_new_str_from_vstr(&vs) };
    nlr_raise(mp_obj_new_exception_args(&mp_type_OSError, 2, eargs));
}

/* f.close() / os.remove(p) for the error paths: any exception they raise is dropped, so the
 * caller re-raises the original one. */
static void close_quietly(mp_obj_t f) {
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        call_method(f, MP_QSTR_close, 0, NULL);
        nlr_pop();
    }
}

static void remove_quietly(mp_obj_t path) {
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        mp_obj_t os = mp_import_name(MP_QSTR_os, mp_const_none, MP_OBJ_NEW_SMALL_INT(0));
        mp_call_function_n_kw(mp_load_attr(os, MP_QSTR_remove), 1, 0, &path);
        nlr_pop();
    }
}

/* Sensor-frame helpers (defined with m.calibrate / m.frame below). */
static void frame_check(edgetune_model_obj_t *self, const uint8_t *accel, const uint8_t *gyro,
    unsigned improper, unsigned pad, const float *r);
static void frame_set(edgetune_model_obj_t *self, const uint8_t *accel, const uint8_t *gyro, unsigned improper,
    const float *r);
static size_t frame_trailer(edgetune_model_obj_t *self, uint8_t *tail);

/* m.save(path): the trained-weights file (docs/training.md §7), written as path + ".tmp"
 * and renamed over path. If a write or the close fails (a full filesystem: OSError), the file
 * is closed and the tmp removed before the error propagates: path keeps the old weights and
 * no open file is left for the GC (LittleFS misbehaves when it finalises one whose file was
 * meanwhile removed or replaced). */
static mp_obj_t edgetune_model_save(mp_obj_t self_in, mp_obj_t path) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    path_check(path);
    check_buffer_unchanged(self);
    uint8_t hdr[ET_STATE_HEADER];
    uint8_t tail[ET_STATE_FRAME_BYTES];
    const size_t tail_len = frame_trailer(self, tail);
    et_train_state_header_tail(&self->train, hdr, tail, tail_len);
    mp_obj_t tmp = mp_binary_op(MP_BINARY_OP_ADD, path, mp_obj_new_str(".tmp", 4));
    mp_obj_t f = open_file(tmp, "wb");
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        mp_obj_t chunk = mp_obj_new_bytes(hdr, sizeof hdr);
        call_method(f, MP_QSTR_write, 1, &chunk);
        if (self->train.params_size) {
            chunk = mp_obj_new_memoryview('B', self->train.params_size, self->arena + self->train.params_off);
            call_method(f, MP_QSTR_write, 1, &chunk);
        }
        if (tail_len) {
            chunk = mp_obj_new_bytes(tail, tail_len);
            call_method(f, MP_QSTR_write, 1, &chunk);
        }
        call_method(f, MP_QSTR_close, 0, NULL);
        nlr_pop();
    } else {
        close_quietly(f); /* closing twice is harmless */
        remove_quietly(tmp);
        nlr_jump(nlr.ret_val);
    }
    /* the rename fails for a path that names a directory (or on a read-only directory): the tmp
     * goes, the old file stays */
    if (nlr_push(&nlr) == 0) {
        mp_obj_t os = mp_import_name(MP_QSTR_os, mp_const_none, MP_OBJ_NEW_SMALL_INT(0));
        mp_obj_t names[2] = { tmp, path };
        mp_call_function_n_kw(mp_load_attr(os, MP_QSTR_rename), 2, 0, names);
        nlr_pop();
    } else {
        remove_quietly(tmp);
        nlr_jump(nlr.ret_val);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(edgetune_model_save_obj, edgetune_model_save);

/* Check a trained-weights image, then install it (ValueError leaves the model unchanged). */
static mp_obj_t install_state(edgetune_model_obj_t *self, mp_obj_t data) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(data, &bi, MP_BUFFER_READ);
    char err[160];
    const char *msg = et_train_state_check(&self->train, (const uint8_t *)bi.buf, bi.len, err, sizeof err);
    if (msg) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: %s"), msg);
    }
    const uint8_t *b = (const uint8_t *)bi.buf;
    float fr[9];
    const bool has_frame = (b[28] & ET_STATE_FLAG_FRAME) != 0;
    if (has_frame) {
        const uint8_t *tl = b + bi.len - ET_STATE_FRAME_BYTES;
        memcpy(fr, tl + 8, sizeof fr);
        frame_check(self, tl, tl + 3, tl[6], tl[7], fr); /* ValueError before anything changes */
    }
    et_train_state_load(&self->train, b);
    self->frame_on = has_frame;
    if (has_frame) {
        const uint8_t *tl = b + bi.len - ET_STATE_FRAME_BYTES;
        frame_set(self, tl, tl + 3, tl[6], fr);
    }
    return mp_const_none;
}

/* m.load(path): read a trained-weights file; everything is checked before the model
 * changes (ValueError and the current weights stay). The file is closed on every path. */
static mp_obj_t edgetune_model_load(mp_obj_t self_in, mp_obj_t path) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    path_check(path);
    check_buffer_unchanged(self);
    mp_obj_t f = open_file(path, "rb");
    mp_obj_t data;
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        data = call_method(f, MP_QSTR_read, 0, NULL);
        nlr_pop();
    } else {
        close_quietly(f);
        nlr_jump(nlr.ret_val);
    }
    call_method(f, MP_QSTR_close, 0, NULL);
    return install_state(self, data);
}
static MP_DEFINE_CONST_FUN_OBJ_2(edgetune_model_load_obj, edgetune_model_load);

/* m.state(): the trained-weights file's bytes (docs/training.md §7) as a new bytes object, an
 * in-RAM checkpoint (32 + params_size bytes of heap) for rollback; m.load_state(buf) installs
 * such bytes with the checks of m.load. */
static mp_obj_t edgetune_model_state(mp_obj_t self_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    check_buffer_unchanged(self);
    uint8_t tail[ET_STATE_FRAME_BYTES];
    const size_t tail_len = frame_trailer(self, tail);
    size_t n = ET_STATE_HEADER + self->train.params_size + tail_len;
    vstr_t v;
    vstr_init_len(&v, n);
    et_train_state_header_tail(&self->train, (uint8_t *)v.buf, tail, tail_len);
    if (self->train.params_size) {
        memcpy(v.buf + ET_STATE_HEADER, self->arena + self->train.params_off, self->train.params_size);
    }
    if (tail_len) {
        memcpy(v.buf + ET_STATE_HEADER + self->train.params_size, tail, tail_len);
    }
    return mp_obj_new_bytes_from_vstr(&v);
}
static MP_DEFINE_CONST_FUN_OBJ_1(edgetune_model_state_obj, edgetune_model_state);

static mp_obj_t edgetune_model_load_state(mp_obj_t self_in, mp_obj_t data) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    check_buffer_unchanged(self);
    return install_state(self, data);
}
static MP_DEFINE_CONST_FUN_OBJ_2(edgetune_model_load_state_obj, edgetune_model_load_state);

/* m.reset(): back to the flashed weights; residuals and momentum zero. */
static mp_obj_t edgetune_model_reset(mp_obj_t self_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    check_buffer_unchanged(self);
    et_train_init(&self->train, self->arena);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(edgetune_model_reset_obj, edgetune_model_reset);

/* ---------------------------------------------------------------------------------------- */
/* Input quantization (docs/data.md §2, docs/training.md §8)                                 */
/* ---------------------------------------------------------------------------------------- */

/* Up to this many channels the per-channel scale/zero point live on the C stack; more take one
 * GC block after every check passed (freed before returning). */
#define QUANTIZE_STACK_CHANNELS 16

/* The scale or zero_point argument of quantize/calibrate: None (the input tensor's own value,
 * dflt, for every channel) or one number per channel, converted into out[0..channels). */
static void quant_param_convert(mp_obj_t obj, const char *what, size_t channels, float dflt, float *out) {
    if (obj == mp_const_none) {
        for (size_t c = 0; c < channels; ++c) {
            out[c] = dflt;
        }
        return;
    }
    const size_t n = floats_len(obj, what);
    if (n != channels) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: %s has %u values, the input has %u channels"),
            what, (unsigned)n, (unsigned)channels);
    }
    floats_convert(obj, n, out);
}

/* m.quantize(samples, scale=None, zero_point=None) -> bytes: samples (list/tuple of numbers or
 * an 'f' buffer; value i of channel i % C, C the input's last dimension) quantized to int8 by
 * et_quantize_f32 with the per-channel scale/zero_point (default: the input tensor's own).
 * scale and zero_point are converted and checked first, then the samples are converted one at a
 * time (a list is looked up again after every item's __float__) straight into the result; a NaN
 * sample or a non-number item raises (the model is never changed). */
static mp_obj_t edgetune_model_quantize(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_samples, ARG_scale, ARG_zero_point };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_samples, MP_ARG_REQUIRED | MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_scale, MP_ARG_OBJ, {.u_obj = mp_const_none} },
        { MP_QSTR_zero_point, MP_ARG_OBJ, {.u_obj = mp_const_none} },
    };
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(pos_args[0]);
    mp_arg_val_t a[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all(n_args - 1, pos_args + 1, kw_args, MP_ARRAY_SIZE(allowed), allowed, a);
    check_buffer_unchanged(self);
    et_tensor_t tin;
    et_model_tensor(&self->model, self->model.input, &tin);
    const size_t channels = (size_t)tin.shape[3];
    const mp_obj_t samples = a[ARG_samples].u_obj;
    const size_t len = floats_len(samples, "samples");
    if (len % channels) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("edgetune: %u samples are not a multiple of the input's %u channels"),
            (unsigned)len, (unsigned)channels);
    }
    float stack[2 * QUANTIZE_STACK_CHANNELS];
    float *sc = channels <= QUANTIZE_STACK_CHANNELS ? stack : m_new(float, 2 * channels);
    float *zp = sc + channels;
    quant_param_convert(a[ARG_scale].u_obj, "scale", channels, tin.scale, sc);
    quant_param_convert(a[ARG_zero_point].u_obj, "zero_point", channels, (float)tin.zero_point, zp);
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
                v[c] = floats_at(samples, t + c, len);
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
            const float x = floats_at(samples, i, len);
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
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_quantize_obj, 2, edgetune_model_quantize);

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

/* ---------------------------------------------------------------------------------------- */
/* Sensor frame (docs/training.md §9): m.calibrate, m.frame, the weights-file trailer        */
/* ---------------------------------------------------------------------------------------- */

static size_t input_channels(edgetune_model_obj_t *self) {
    et_tensor_t tin;
    et_model_tensor(&self->model, self->model.input, &tin);
    return (size_t)tin.shape[3];
}

/* ValueError unless accel/gyro are 3 distinct channels of the input each (gyro may be absent:
 * gyro[0] == ET_FRAME_NONE), improper is 0/1, pad is 0 and r is finite and orthogonal
 * (|R R^T - I| <= 1e-3 per entry, float32). */
static void frame_check(edgetune_model_obj_t *self, const uint8_t *accel, const uint8_t *gyro,
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

static void frame_set(edgetune_model_obj_t *self, const uint8_t *accel, const uint8_t *gyro, unsigned improper,
    const float *r) {
    self->frame_on = true;
    self->frame_improper = (uint8_t)improper;
    memcpy(self->frame_accel, accel, 3);
    memcpy(self->frame_gyro, gyro, 3);
    memcpy(self->frame_r, r, sizeof self->frame_r);
}

/* The 44-byte trailer of the weights file (0 bytes without a frame): accel[3], gyro[3]
 * (0xFF = none), improper, 0, then R as 9 little-endian float32, row-major. */
static size_t frame_trailer(edgetune_model_obj_t *self, uint8_t *tail) {
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
    if (seq_len(obj) != 3) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: frame: a channel group has 3 channels"));
    }
    mp_int_t c[3];
    for (int i = 0; i < 3; ++i) {
        c[i] = mp_obj_get_int(seq_item(obj, (size_t)i, 3));
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
static mp_obj_t edgetune_model_frame(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
    enum { ARG_r, ARG_accel, ARG_gyro };
    ET_ARG_TABLE mp_arg_t allowed[] = {
        { MP_QSTR_R, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_accel, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
        { MP_QSTR_gyro, MP_ARG_OBJ, {.u_obj = MP_OBJ_NULL} },
    };
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(pos_args[0]);
    mp_arg_val_t a[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all(n_args - 1, pos_args + 1, kw_args, MP_ARRAY_SIZE(allowed), allowed, a);
    check_buffer_unchanged(self);
    if (a[ARG_r].u_obj == MP_OBJ_NULL) {
        if (!self->frame_on) {
            return mp_const_none;
        }
        mp_obj_t d = mp_obj_new_dict(0);
        store(d, "R", floats_tuple(self->frame_r, 9));
        store(d, "improper", mp_obj_new_bool(self->frame_improper));
        store(d, "accel", group_tuple(self->frame_accel));
        store(d, "gyro", group_tuple(self->frame_gyro));
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
    if (floats_len(a[ARG_r].u_obj, "R") != 9) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: frame: R must have 9 numbers (row-major)"));
    }
    float r[9];
    floats_convert(a[ARG_r].u_obj, 9, r);
    /* det sign: r0 (r4 r8 - r5 r7) - r1 (r3 r8 - r5 r6) + r2 (r3 r7 - r4 r6) */
    float det = r[0] * (r[4] * r[8] - r[5] * r[7]);
    det = det - r[1] * (r[3] * r[8] - r[5] * r[6]);
    det = det + r[2] * (r[3] * r[7] - r[4] * r[6]);
    frame_check(self, accel, gyro, det < 0.0f ? 1u : 0u, 0, r);
    frame_set(self, accel, gyro, det < 0.0f ? 1u : 0u, r);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_frame_obj, 1, edgetune_model_frame);

/* m.calibrate(xs, labels, stats, scale=None, zero_point=None, accel=(0, 1, 2), gyro=(3, 4, 5))
 * -> dict: the frame fit of kernels/et_frame_f32.c over int8 windows xs (quantized with
 * scale/zero_point in the model's current frame) against the source statistics (K x 15 floats,
 * K the model's classes). When a frame is chosen the model's frame becomes R_old @ R_fit. All
 * checks come before anything changes (ValueError). */
static mp_obj_t edgetune_model_calibrate(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args) {
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
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(pos_args[0]);
    mp_arg_val_t a[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all(n_args - 1, pos_args + 1, kw_args, MP_ARRAY_SIZE(allowed), allowed, a);
    check_buffer_unchanged(self);
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
    const size_t n = seq_len(a[ARG_xs].u_obj);
    const size_t n_labels = labels_len(a[ARG_labels].u_obj);
    if (n == 0 || n != n_labels) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: calibrate needs as many labels as windows (at least one)"));
    }
    const size_t st_len = floats_len(a[ARG_stats].u_obj, "stats");
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
    labels_convert(self, a[ARG_labels].u_obj, n, lab, false);
    floats_convert(a[ARG_stats].u_obj, st_len, stf);
    quant_param_convert(a[ARG_scale].u_obj, "scale", C, tin.scale, sc);
    quant_param_convert(a[ARG_zero_point].u_obj, "zero_point", C, (float)tin.zero_point, zp);
    /* checks; no Python code runs from here on */
    {
        static const float eye[9] = { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
        frame_check(self, accel, gyro, 0, 0, eye);
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
        (void)input_of(self, xs[k]);
    }
    const size_t n_in = et_model_input_size(&self->model);
    for (size_t k = 0; k < n; ++k) {
        if (et_frame_accumulate(&acc[lab[k]], input_of(self, xs[k]), n_in, C, accel, gyro) != 0) {
            m_del(uint8_t, blk, bytes);
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: calibrate: too many samples in one class"));
        }
    }
    et_frame_fit_t fit;
    et_frame_fit(acc, K, n_sets, stf, sc, zp, accel, gyro, &fit);
    m_del(uint8_t, blk, bytes);
    static const char *const chosen[] = { "identity", "proper", "improper" };
    mp_obj_t d = mp_obj_new_dict(0);
    store(d, "R", floats_tuple(fit.r, 9));
    store(d, "improper", mp_obj_new_bool(fit.improper));
    store(d, "chosen", mp_obj_new_str(chosen[fit.chosen], strlen(chosen[fit.chosen])));
    store(d, "set", MP_OBJ_NEW_SMALL_INT(fit.set));
    store(d, "e_identity", mp_obj_new_float((mp_float_t)fit.e_identity));
    store(d, "e_proper", mp_obj_new_float((mp_float_t)fit.e_proper));
    store(d, "e_improper", mp_obj_new_float((mp_float_t)fit.e_improper));
    if (fit.chosen) {
        float total[9];
        if (self->frame_on) {
            et_frame_mm(self->frame_r, fit.r, total);
        } else {
            memcpy(total, fit.r, sizeof total);
        }
        frame_set(self, accel, gyro, (self->frame_on ? self->frame_improper : 0u) ^ (unsigned)fit.improper, total);
    }
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_KW(edgetune_model_calibrate_obj, 4, edgetune_model_calibrate);

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
    store(d, "arena", mp_obj_new_int_from_uint(self->train.arena_size));
    store(d, "inference_arena", mp_obj_new_int_from_uint(m->arena_size));
    store(d, "peak", mp_obj_new_int_from_uint(self->train.peak));
    store(d, "trainable", mp_obj_new_int_from_uint(self->train.n_trainable));
    store(d, "batch", mp_obj_new_bool(self->batch));
    /* docs/training.md §9: scratch of m.refit with l2 and alpha given (CV adds its held-out fold) */
    store(d, "refit_scratch", self->train.refit_layer < 0 ? mp_const_none
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
    store(d, "scheme", scheme);
    store(d, "model_bytes", mp_obj_new_int_from_uint(m->len));
    return d;
}
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
mp_map_elem_t edgetune_model_locals_dict_table[14]; /* not static: mpy_ld relocates bss only through the GOT */
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
    edgetune_type_Model.base.type = (void *)&mp_type_type;
    edgetune_type_Model.flags = MP_TYPE_FLAG_NONE;
    edgetune_type_Model.name = MP_QSTR_Model;
    MP_OBJ_TYPE_SET_SLOT(&edgetune_type_Model, make_new, edgetune_model_make_new, 0);
    MP_OBJ_TYPE_SET_SLOT(&edgetune_type_Model, locals_dict, (void *)&edgetune_model_locals_dict, 1);
    mp_store_global(MP_QSTR_Model, MP_OBJ_FROM_PTR(&edgetune_type_Model));
    MP_DYNRUNTIME_INIT_EXIT
}
#endif /* !MICROPY_ENABLE_DYNRUNTIME */
