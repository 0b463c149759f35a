/*
 * Argument conversion, the bindings' contract (docs/reliability.md §7): list items, labels,
 * numbers, inputs and paths into C values; the buffer guard every method runs first.
 */
#include <string.h>

#include "et_bind.h"

/* The buffer must still be where Model() validated it. Model() accepts only read-only buffers
 * (bytes, a memoryview of bytes), which can neither change nor move; this stays as a cheap
 * guard before anything reads the model buffer. */
void et_bind_check_buffer_unchanged(edgetune_model_obj_t *self) {
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
/*    a time through et_bind_seq_item(), which re-reads the list after each callback and refuses one  */
/*    whose length changed, so no stale item array is ever used.                              */
/* 2. Then the buffers (inputs, bytes-like labels, the model's) are looked up and every check */
/*    runs, on the converted values only; no Python code runs between a check and the use.    */
/* 3. Return objects are allocated before the model changes: a MemoryError leaves it as it    */
/*    was.                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* Number of items of a list/tuple argument (TypeError for anything else). */
size_t et_bind_seq_len(mp_obj_t seq) {
    size_t n;
    mp_obj_t *items;
    mp_obj_get_array(seq, &n, &items);
    return n;
}

/* Item i of a list/tuple that had n items when its conversion started. */
mp_obj_t et_bind_seq_item(mp_obj_t seq, size_t i, size_t n) {
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

mp_obj_t et_bind_float_slot_new(void) {
    return mp_obj_new_float((mp_float_t)0);
}

mp_obj_t et_bind_float_slot_set(mp_obj_t slot, mp_float_t v) {
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
const int8_t *et_bind_input_of(edgetune_model_obj_t *self, mp_obj_t x_in) {
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

void et_bind_label_check(edgetune_model_obj_t *self, mp_int_t label) {
    const size_t n = et_model_output_size(&self->model);
    if (label < 0 || (size_t)label >= n) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("edgetune: label %ld out of range 0..%u"), (long)label,
            (unsigned)(n - 1));
    }
}

/* One label: an int (or an object with __int__), range-checked. */
int32_t et_bind_label_of(edgetune_model_obj_t *self, mp_obj_t label_in) {
    if (mp_obj_is_str(label_in) || mp_obj_is_float(label_in)) {
        mp_raise_TypeError(MP_ERROR_TEXT("edgetune: a label must be an int"));
    }
    const mp_int_t label = mp_obj_get_int(label_in);
    et_bind_label_check(self, label);
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
size_t et_bind_labels_len(mp_obj_t obj) {
    mp_buffer_info_t lb;
    return labels_buffer(obj, &lb) ? lb.len : et_bind_seq_len(obj);
}

/* Convert the n labels of obj (n from labels_len) into out[], each range-checked. May run Python
 * code (items' __int__, unless ints_only: then only int/bool items are taken, as train()'s batch
 * always did); the buffer of bytes-like labels is looked up again here. */
void et_bind_labels_convert(edgetune_model_obj_t *self, mp_obj_t obj, size_t n, int32_t *out, bool ints_only) {
    mp_buffer_info_t lb;
    if (labels_buffer(obj, &lb)) {
        if (lb.len != n) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: a list argument changed length while its items were converted"));
        }
        for (size_t s = 0; s < n; ++s) {
            const mp_int_t v = lb.typecode == 'b' ? (mp_int_t)((const int8_t *)lb.buf)[s]
                : (mp_int_t)((const uint8_t *)lb.buf)[s];
            et_bind_label_check(self, v);
            out[s] = (int32_t)v;
        }
        return;
    }
    for (size_t s = 0; s < n; ++s) {
        const mp_obj_t o = et_bind_seq_item(obj, s, n);
        if (ints_only && !mp_obj_is_int(o) && !mp_obj_is_bool(o)) {
            mp_raise_ValueError(MP_ERROR_TEXT("edgetune: labels must be ints"));
        }
        out[s] = et_bind_label_of(self, o);
    }
}

/* Whether reading the labels runs no Python code: bytes-like, or a list/tuple of ints/bools only
 * (then they can be read again where used, and evaluate() needs no label array). */
bool et_bind_labels_plain(mp_obj_t obj) {
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
int32_t et_bind_label_plain_at(edgetune_model_obj_t *self, mp_obj_t obj, size_t s) {
    mp_buffer_info_t lb;
    if (labels_buffer(obj, &lb)) {
        const mp_int_t v = lb.typecode == 'b' ? (mp_int_t)((const int8_t *)lb.buf)[s]
            : (mp_int_t)((const uint8_t *)lb.buf)[s];
        et_bind_label_check(self, v);
        return (int32_t)v;
    }
    size_t n;
    mp_obj_t *items;
    mp_obj_get_array(obj, &n, &items);
    return et_bind_label_of(self, items[s]);
}

/* A sequence of numbers: a list/tuple (items converted like float(), then to float32) or a
 * float32 ('f') buffer. */
size_t et_bind_floats_len(mp_obj_t obj, const char *what) {
    if (mp_obj_is_type(obj, &mp_type_list) || mp_obj_is_type(obj, &mp_type_tuple)) {
        return et_bind_seq_len(obj);
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
float et_bind_floats_at(mp_obj_t obj, size_t i, size_t n) {
    if (mp_obj_is_type(obj, &mp_type_list) || mp_obj_is_type(obj, &mp_type_tuple)) {
        return (float)mp_obj_get_float(et_bind_seq_item(obj, i, n)); /* TypeError for a non-number */
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
void et_bind_floats_convert(mp_obj_t obj, size_t n, float *out) {
    for (size_t i = 0; i < n; ++i) {
        out[i] = et_bind_floats_at(obj, i, n);
    }
}

/* A path argument: a non-empty str (a user object could run Python code from + or open()). */
void et_bind_path_check(mp_obj_t path) {
    if (!mp_obj_is_str(path)) {
        mp_raise_TypeError(MP_ERROR_TEXT("edgetune: a path must be a str"));
    }
    size_t len;
    (void)mp_obj_str_get_data(path, &len);
    if (len == 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("edgetune: the path is empty"));
    }
}
