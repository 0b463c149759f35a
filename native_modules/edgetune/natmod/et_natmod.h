/*
 * What modedgetune.c needs from the MicroPython runtime and py/dynruntime.h does not give a
 * dynamic native module (.mpy, `make natmod`): each missing function is a macro of the same
 * name onto a small static replacement built from mp_fun_table, so the bindings compile
 * unchanged in both builds. Included by modedgetune.c only when MICROPY_ENABLE_DYNRUNTIME.
 *
 * Behaviour differs from the built-in module only where noted:
 * - mp_obj_new_bytes_from_vstr copies the buffer (no way to adopt a heap block as bytes),
 * - gc_info() reports only max_free, found by probing allocations (on the MemoryError path),
 * - mp_obj_new_memoryview('B', ...) is a bytearray over the same memory (used for f.write).
 */
#ifndef EDGETUNE_NATMOD_H
#define EDGETUNE_NATMOD_H

#include <stdarg.h>
#include <string.h>

#include "py/dynruntime.h"

/* Memory ------------------------------------------------------------------------------------ */

#define m_malloc_maybe(n) (m_realloc_maybe(NULL, (n), false))
#define m_malloc0(n) (et_dyn_malloc0((n)))

static inline void *et_dyn_malloc0(size_t n) {
    void *p = m_malloc(n);
    memset(p, 0, n);
    return p;
}

/* The largest block the heap can give now, by bisection of real allocations (each freed at
 * once); only max_free is filled. Used on the arena's MemoryError path only. */
#define gc_info(info) (et_dyn_gc_info((info)))

static inline void et_dyn_gc_info(gc_info_t *info) {
    size_t lo = 0, hi = (size_t)1 << 24;
    while (hi - lo > MICROPY_BYTES_PER_GC_BLOCK) {
        size_t mid = lo + (hi - lo) / 2;
        void *p = m_realloc_maybe(NULL, mid, false);
        if (p) {
            m_free(p);
            lo = mid;
        } else {
            hi = mid;
        }
    }
    memset(info, 0, sizeof *info);
    info->max_free = lo / MICROPY_BYTES_PER_GC_BLOCK;
}

/* Types the dynamic runtime does not name ----------------------------------------------------- */

#define mp_type_OSError (*(mp_obj_type_t *)(mp_load_global(MP_QSTR_OSError)))
#define mp_type_MemoryError (*(mp_obj_type_t *)(mp_load_global(MP_QSTR_MemoryError)))
#define mp_type_float (*(mp_obj_type_t *)(mp_load_global(MP_QSTR_float)))

/* qstrs: the value of a qstr object (py/obj.h's definition, which dynruntime.h removes; object
 * representation A, as the firmwares we target), and a qstr's bytes through its str object. */
#if MICROPY_OBJ_REPR == MICROPY_OBJ_REPR_A
#define MP_OBJ_QSTR_VALUE(o) (((mp_uint_t)(o)) >> 3)
#endif
#define qstr_data(q, len) ((const byte *)mp_obj_str_get_data(MP_OBJ_NEW_QSTR((q)), (len)))

/* Non-local return through the firmware's nlr_push/nlr_pop (same nlr_buf_t layout: the
 * module is compiled for the firmware's architecture). */
#undef nlr_push
#undef nlr_pop
#undef nlr_jump
#define nlr_push(buf) (mp_fun_table.nlr_push((buf)))
#define nlr_pop() (mp_fun_table.nlr_pop())
#define nlr_jump(val) (mp_raise_dyn(MP_OBJ_FROM_PTR((val))))

/* Strings and printing ------------------------------------------------------------------------- */

#define vstr_init_print(vstr, alloc, print) (et_dyn_vstr_init_print((vstr), (alloc), (print)))
#define vstr_init_len(vstr, len) (et_dyn_vstr_init_len((vstr), (len)))
#define vstr_clear(vstr) (m_free((vstr)->buf))
#define mp_obj_new_str_from_vstr(vstr) (et_dyn_new_from_vstr((vstr), false))
#define mp_obj_new_bytes_from_vstr(vstr) (et_dyn_new_from_vstr((vstr), true))
#define mp_print_str(print, s) (mp_printf((print), "%s", (s)))
#define mp_obj_print_helper(print, o, kind) (et_dyn_print_obj((print), (o), (kind)))
#define mp_raise_msg_varg(type, ...) (et_dyn_raise_msg_varg((type), __VA_ARGS__))

static inline void et_dyn_vstr_init_len(vstr_t *vstr, size_t len) {
    vstr->alloc = len + 1;
    vstr->len = len;
    vstr->buf = (char *)m_malloc(len + 1);
    vstr->fixed_buf = false;
}

static void et_dyn_vstr_print_strn(void *data, const char *str, size_t len) {
    vstr_t *vstr = (vstr_t *)data;
    if (vstr->len + len + 1 > vstr->alloc) {
        size_t alloc = vstr->len + len + 16;
        vstr->buf = (char *)m_realloc(vstr->buf, alloc);
        vstr->alloc = alloc;
    }
    memcpy(vstr->buf + vstr->len, str, len);
    vstr->len += len;
}

static inline void et_dyn_vstr_init_print(vstr_t *vstr, size_t alloc, mp_print_t *print) {
    et_dyn_vstr_init_len(vstr, alloc);
    vstr->len = 0;
    print->data = vstr;
    print->print_strn = et_dyn_vstr_print_strn;
}

static inline mp_obj_t et_dyn_new_from_vstr(vstr_t *vstr, bool bytes) {
    mp_obj_t o = bytes ? mp_obj_new_bytes((const byte *)vstr->buf, vstr->len)
        : mp_obj_new_str(vstr->buf, vstr->len);
    m_free(vstr->buf);
    vstr->buf = NULL;
    vstr->alloc = 0;
    return o;
}

/* print(o) / repr(o) through the builtins str and repr. */
static inline void et_dyn_print_obj(const mp_print_t *print, mp_obj_t o, mp_print_kind_t kind) {
    mp_obj_t s = mp_call_function_n_kw(mp_load_global(kind == PRINT_REPR ? MP_QSTR_repr : MP_QSTR_str), 1, 0, &o);
    size_t len;
    const char *data = (const char *)mp_obj_str_get_data(s, &len);
    print->print_strn(print->data, data, len);
}

static NORETURN void et_dyn_raise_msg_varg(const mp_obj_type_t *type, const char *fmt, ...) {
    vstr_t vstr;
    mp_print_t print;
    et_dyn_vstr_init_print(&vstr, 64, &print);
    va_list ap;
    va_start(ap, fmt);
    mp_vprintf(&print, fmt, ap);
    va_end(ap);
    mp_raise_dyn(mp_obj_new_exception_arg1_dyn(type, et_dyn_new_from_vstr(&vstr, false)));
}

/* Objects ------------------------------------------------------------------------------------ */

#define mp_obj_equal(a, b) (mp_binary_op(MP_BINARY_OP_EQUAL, (a), (b)) == mp_const_true)
#define mp_obj_dict_get_map(dict) (&((mp_obj_dict_t *)MP_OBJ_TO_PTR((dict)))->map)
#define mp_map_lookup(map, key, kind) (et_dyn_map_lookup((map), (key)))
#define mp_obj_get_array_fixed_n(o, n, items) (et_dyn_get_array_fixed_n((o), (n), (items)))
#define mp_obj_is_subclass_fast(object, classinfo) (et_dyn_is_subclass((object), (classinfo)))
#define mp_obj_exception_get_value(exc) (et_dyn_exception_get_value((exc)))
#define mp_obj_new_exception_args(type, n, args) (mp_call_function_n_kw(MP_OBJ_FROM_PTR((type)), (n), 0, (args)))
#define mp_call_method_n_kw(n_args, n_kw, args) (mp_fun_table.call_method_n_kw((n_args), (n_kw), (args)))
#define mp_obj_new_memoryview(typecode, n, items) (mp_obj_new_bytearray_by_ref((n), (items)))

/* Lookup only (MP_MAP_LOOKUP), by equality, over the slots: the dicts seen here are tiny. */
static inline mp_map_elem_t *et_dyn_map_lookup(mp_map_t *map, mp_obj_t key) {
    for (size_t i = 0; i < map->alloc; ++i) {
        if (mp_map_slot_is_filled(map, i) && mp_obj_equal(map->table[i].key, key)) {
            return &map->table[i];
        }
    }
    return NULL;
}

static inline void et_dyn_get_array_fixed_n(mp_obj_t o, size_t n, mp_obj_t **items) {
    size_t len;
    mp_obj_get_array(o, &len, items);
    if (len != n) {
        mp_raise_msg_varg(&mp_type_ValueError, "requested length %d but object has length %d", (int)n, (int)len);
    }
}

static inline bool et_dyn_is_subclass(mp_const_obj_t object, mp_const_obj_t classinfo) {
    mp_obj_t args[2] = { (mp_obj_t)object, (mp_obj_t)classinfo };
    return mp_obj_is_true(mp_call_function_n_kw(mp_load_global(MP_QSTR_issubclass), 2, 0, args));
}

static inline mp_obj_t et_dyn_exception_get_value(mp_obj_t exc) {
    mp_obj_t args = mp_load_attr(exc, MP_QSTR_args);
    size_t n;
    mp_obj_t *items;
    mp_obj_get_array(args, &n, &items);
    return n ? items[0] : mp_const_none;
}

/* Argument tables hold qstrs, which a native module only knows at load time: no static
 * const tables (ET_ARG_TABLE in modedgetune.c). */
#define ET_ARG_TABLE const

#endif /* EDGETUNE_NATMOD_H */
