/*
 * m.save, m.load, m.state, m.load_state: the trained-weights file (docs/training.md §7), written
 * atomically (tmp + rename) and checked fully before anything changes.
 */
#include <string.h>

#include "et_bind.h"

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

/* m.save(path): the trained-weights file (docs/training.md §7), written as path + ".tmp"
 * and renamed over path. If a write or the close fails (a full filesystem: OSError), the file
 * is closed and the tmp removed before the error propagates: path keeps the old weights and
 * no open file is left for the GC (LittleFS misbehaves when it finalises one whose file was
 * meanwhile removed or replaced). */
mp_obj_t edgetune_model_save(mp_obj_t self_in, mp_obj_t path) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    et_bind_path_check(path);
    et_bind_check_buffer_unchanged(self);
    uint8_t hdr[ET_STATE_HEADER];
    uint8_t tail[ET_STATE_FRAME_BYTES];
    const size_t tail_len = et_bind_frame_trailer(self, tail);
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

/* Check a trained-weights image, then install it (ValueError leaves the model unchanged). */
static mp_obj_t install_state(edgetune_model_obj_t *self, mp_obj_t data) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(data, &bi, MP_BUFFER_READ);
    char err[160];
    const char *msg = et_train_state_check(&self->train, (const uint8_t *)bi.buf, bi.len, err, sizeof err);
    if (msg) {
        et_bind_raise_engine(msg);
    }
    const uint8_t *b = (const uint8_t *)bi.buf;
    float fr[9];
    const bool has_frame = (b[28] & ET_STATE_FLAG_FRAME) != 0;
    if (has_frame) {
        const uint8_t *tl = b + bi.len - ET_STATE_FRAME_BYTES;
        memcpy(fr, tl + 8, sizeof fr);
        et_bind_frame_check(self, tl, tl + 3, tl[6], tl[7], fr); /* ValueError before anything changes */
    }
    et_train_state_load(&self->train, b);
    self->frame_on = has_frame;
    if (has_frame) {
        const uint8_t *tl = b + bi.len - ET_STATE_FRAME_BYTES;
        et_bind_frame_set(self, tl, tl + 3, tl[6], fr);
    }
    return mp_const_none;
}

/* m.load(path): read a trained-weights file; everything is checked before the model
 * changes (ValueError and the current weights stay). The file is closed on every path. */
mp_obj_t edgetune_model_load(mp_obj_t self_in, mp_obj_t path) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    et_bind_path_check(path);
    et_bind_check_buffer_unchanged(self);
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

/* m.state(): the trained-weights file's bytes (docs/training.md §7) as a new bytes object, an
 * in-RAM checkpoint (32 + params_size bytes of heap) for rollback; m.load_state(buf) installs
 * such bytes with the checks of m.load. */
mp_obj_t edgetune_model_state(mp_obj_t self_in) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    et_bind_check_buffer_unchanged(self);
    uint8_t tail[ET_STATE_FRAME_BYTES];
    const size_t tail_len = et_bind_frame_trailer(self, tail);
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

mp_obj_t edgetune_model_load_state(mp_obj_t self_in, mp_obj_t data) {
    edgetune_model_obj_t *self = MP_OBJ_TO_PTR(self_in);
    et_bind_check_buffer_unchanged(self);
    return install_state(self, data);
}
