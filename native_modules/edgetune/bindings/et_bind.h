/*
 * What the binding files (bindings/bind_*.c, modedgetune.c) share: the Model object, the argument conversions of
 * bind_args.c (docs/reliability.md §7), the small dict/tuple builders, the sensor-frame helpers
 * and the method functions that modedgetune.c puts in the type's table. Only the bindings
 * include MicroPython headers; the engine (model.c, train.c, ...) never does.
 */
#ifndef EDGETUNE_ET_BIND_H
#define EDGETUNE_ET_BIND_H

#include <stdbool.h>
#include <stdint.h>

#include "py/gc.h"
#include "py/obj.h"
#include "py/runtime.h"

#include "model.h"
#include "train.h"

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


/* An engine failure (et_err.h: a plain message, never NULL) as ValueError("edgetune: <msg>"):
 * every engine message reaches Python through this one MP_ERROR_TEXT format. */
#define et_bind_raise_engine(msg) mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: %s"), (msg))

/* The start of a method with keyword arguments (n_args, pos_args, kw_args): the Model `self`
 * and the values `a` of the argument table `allowed`. */
#define ET_METHOD_ARGS(self, a, allowed) \
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(pos_args[0]); \
    mp_arg_val_t a[MP_ARRAY_SIZE(allowed)]; \
    mp_arg_parse_all(n_args - 1, pos_args + 1, kw_args, MP_ARRAY_SIZE(allowed), allowed, a)

/* bind_args.c: the buffer guard and argument conversion */
void et_bind_check_buffer_unchanged(edgetune_model_obj_t *self);
size_t et_bind_seq_len(mp_obj_t seq);
mp_obj_t et_bind_seq_item(mp_obj_t seq, size_t i, size_t n);
mp_obj_t et_bind_float_slot_new(void);
mp_obj_t et_bind_float_slot_set(mp_obj_t slot, mp_float_t v);
const int8_t *et_bind_input_of(edgetune_model_obj_t *self, mp_obj_t x_in);
void et_bind_label_check(edgetune_model_obj_t *self, mp_int_t label);
int32_t et_bind_label_of(edgetune_model_obj_t *self, mp_obj_t label_in);
size_t et_bind_labels_len(mp_obj_t obj);
void et_bind_labels_convert(edgetune_model_obj_t *self, mp_obj_t obj, size_t n, int32_t *out, bool ints_only);
bool et_bind_labels_plain(mp_obj_t obj);
int32_t et_bind_label_plain_at(edgetune_model_obj_t *self, mp_obj_t obj, size_t s);
size_t et_bind_floats_len(mp_obj_t obj, const char *what);
float et_bind_floats_at(mp_obj_t obj, size_t i, size_t n);
void et_bind_floats_convert(mp_obj_t obj, size_t n, float *out);
void et_bind_path_check(mp_obj_t path);

/* bind_predict.c: dict and tuple builders */
mp_obj_t et_bind_shape_tuple(const et_tensor_t *t);
void et_bind_store(mp_obj_t dict, const char *key, mp_obj_t value);
void et_bind_store_quant(mp_obj_t dict, const char *scale_key, const char *zp_key, const et_tensor_t *t);

/* bind_quantize.c: a per-channel scale/zero_point argument */
void et_bind_quant_param_convert(mp_obj_t obj, const char *what, size_t channels, float dflt, float *out);

/* bind_frame.c: the sensor frame */
void et_bind_frame_check(edgetune_model_obj_t *self, const uint8_t *accel, const uint8_t *gyro,
    unsigned improper, unsigned pad, const float *r);
void et_bind_frame_set(edgetune_model_obj_t *self, const uint8_t *accel, const uint8_t *gyro, unsigned improper,
    const float *r);
size_t et_bind_frame_trailer(edgetune_model_obj_t *self, uint8_t *tail);

/* The methods (modedgetune.c makes their function objects and the type's table). */
mp_obj_t edgetune_model_predict(mp_obj_t self_in, mp_obj_t x_in);
mp_obj_t edgetune_model_predict_class(mp_obj_t self_in, mp_obj_t x_in);
mp_obj_t edgetune_model_info(mp_obj_t self_in);
mp_obj_t edgetune_model_train(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args);
mp_obj_t edgetune_model_evaluate(mp_obj_t self_in, mp_obj_t xs_in, mp_obj_t labels_in);
mp_obj_t edgetune_model_reset(mp_obj_t self_in);
mp_obj_t edgetune_model_refit(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args);
mp_obj_t edgetune_model_refit_stats(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args);
mp_obj_t edgetune_model_save(mp_obj_t self_in, mp_obj_t path);
mp_obj_t edgetune_model_load(mp_obj_t self_in, mp_obj_t path);
mp_obj_t edgetune_model_state(mp_obj_t self_in);
mp_obj_t edgetune_model_load_state(mp_obj_t self_in, mp_obj_t data);
mp_obj_t edgetune_model_quantize(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args);
mp_obj_t edgetune_model_calibrate(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args);
mp_obj_t edgetune_model_frame(size_t n_args, const mp_obj_t *pos_args, mp_map_t *kw_args);

#endif /* EDGETUNE_ET_BIND_H */
