/*
 * tests/test_c_errors.py: the engine's error convention (native_modules/edgetune/et_err.h). Every
 * entry point that can refuse its input must report the refusal -- a non-NULL message -- also
 * when the caller passes no error buffer (err == NULL, err_len == 0), and with a buffer the
 * message is the formatted text in that buffer. Each refusal is provoked on a copy of a real
 * model (argv[1], fuzz/base.etm): a truncated file, a bad CRC, a scheme section of an unknown
 * version, a scheme with too many biases, a weight scale that is not positive, a trained-weights
 * file whose size field lies. Prints one line per case and "N failed, M passed".
 *
 * Uses the public API only (model.h, scheme.h, train.h) and fuzz/fuzz_common.h; little-endian host.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h" /* fz_slurp (fuzz/); model.h, scheme.h, train.h */

static int n_failed, n_passed;

/* msg_none: the result without a buffer; msg_buf: with one (err). */
static void expect(const char *what, const char *msg_none, const char *msg_buf, const char *err) {
    const int ok = msg_none != NULL && msg_buf != NULL && msg_buf == err ? strchr(err, '%') == NULL
        : msg_none != NULL && msg_buf != NULL;
    printf("%s %s: no buffer -> %s | buffer -> %s\n", ok ? "ok    " : "FAILED", what,
        msg_none ? msg_none : "(NULL = success)", msg_buf ? msg_buf : "(NULL = success)");
    if (ok) {
        ++n_passed;
    } else {
        ++n_failed;
    }
}

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void wr32(uint8_t *p, uint32_t v) {
    memcpy(p, &v, 4);
}

/* Size and CRC fields of an .etm copy made right after an edit. */
static void fix_etm(uint8_t *b, size_t len) {
    wr32(b + 8, (uint32_t)len);
    wr32(b + 12, et_crc32(0, b + 16, len - 16));
}

/* A 4-byte aligned copy of the base model (+ room for 8 more bytes). */
static uint8_t *copy(const uint8_t *base, size_t len) {
    uint8_t *b = malloc(len + 64);
    memcpy(b, base, len);
    return b;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s BASE.etm\n", argv[0]);
        return 2;
    }
    size_t len;
    const uint8_t *base = fz_slurp(argv[1], &len);
    char err[192];
    et_model_t m;

    /* et_model_init: a truncated file, a corrupted CRC */
    uint8_t *b = copy(base, len);
    expect("model: truncated", et_model_init(&m, b, 40, NULL, 0), et_model_init(&m, b, 40, err, sizeof err), err);
    b[len - 1] ^= 0x55;
    expect("model: CRC", et_model_init(&m, b, len, NULL, 0), et_model_init(&m, b, len, err, sizeof err), err);
    free(b);

    /* et_scheme_parse: a scheme section of version 2 appended to the model */
    b = copy(base, len);
    const uint8_t section[8] = { 2, 0, 0, 0, 0, 0, 0, 0 };
    const size_t at = (len + 3u) & ~(size_t)3u;
    memset(b + len, 0, at - len);
    memcpy(b + at, section, 4);
    wr32(b + 40, (uint32_t)at);
    wr32(b + 44, 4);
    fix_etm(b, at + 4);
    if (et_model_init(&m, b, at + 4, err, sizeof err) != NULL) {
        printf("FAILED setup: the model with a scheme section was refused: %s\n", err);
        return 1;
    }
    et_scheme_layer_t s[ET_MAX_LAYERS];
    expect("scheme: version", et_scheme_parse(&m, s, NULL, 0), et_scheme_parse(&m, s, err, sizeof err), err);
    free(b);

    /* et_scheme_build: more biases than weight layers */
    b = copy(base, len);
    if (et_model_init(&m, b, len, err, sizeof err) != NULL) {
        printf("FAILED setup: the base model was refused: %s\n", err);
        return 1;
    }
    expect("scheme: n_bias", et_scheme_build(&m, 1000, NULL, s, NULL, 0),
        et_scheme_build(&m, 1000, NULL, s, err, sizeof err), err);

    /* et_train_state_check: a trained-weights file whose size field lies */
    et_train_layer_t tl[ET_MAX_LAYERS];
    memset(tl, 0, sizeof tl);
    et_scheme_default(&m, s);
    for (unsigned i = 0; i < m.n_layers; ++i) {
        tl[i].s = s[i];
    }
    et_train_t t;
    if (et_train_plan(&t, &m, tl, 0.0f, err, sizeof err) != NULL) {
        printf("FAILED setup: the default scheme was refused: %s\n", err);
        return 1;
    }
    uint8_t *arena = malloc(t.arena_size);
    et_train_init(&t, arena);
    const size_t n_state = et_train_state_size(&t);
    uint8_t *state = malloc(n_state);
    et_train_state_header(&t, state);
    memcpy(state + ET_STATE_HEADER, arena + t.params_off, t.params_size);
    if (et_train_state_check(&t, state, n_state, err, sizeof err) != NULL) {
        printf("FAILED setup: the model's own trained-weights file was refused: %s\n", err);
        return 1;
    }
    wr32(state + 8, rd32(state + 8) + 4);
    expect("state: size field", et_train_state_check(&t, state, n_state, NULL, 0),
        et_train_state_check(&t, state, n_state, err, sizeof err), err);
    free(state);
    free(arena);

    /* et_train_plan: a weight layer with a per-channel scale that is not positive */
    int done = 0;
    for (unsigned i = 0; i < m.n_layers && !done; ++i) {
        et_layer_t l;
        et_tensor_t tw;
        et_model_layer(&m, i, &l);
        if (l.weight == ET_NONE) {
            continue;
        }
        et_model_tensor(&m, l.weight, &tw);
        if (!tw.quant) {
            continue;
        }
        const size_t off = (size_t)((const uint8_t *)tw.scales - b);
        const float neg = -1.0f;
        memcpy(b + off, &neg, 4);
        fix_etm(b, len);
        if (et_model_init(&m, b, len, err, sizeof err) != NULL) {
            printf("FAILED setup: a negative weight scale was refused by et_model_init: %s\n", err);
            return 1;
        }
        memset(tl, 0, sizeof tl);
        for (unsigned k = 0; k < m.n_layers; ++k) {
            tl[k].s = s[k];
        }
        const char *none = et_train_plan(&t, &m, tl, 0.0f, NULL, 0);
        const char *with = et_train_plan(&t, &m, tl, 0.0f, err, sizeof err);
        expect("train plan: weight scale", none, with, err);
        done = 1;
    }
    if (!done) {
        printf("FAILED setup: no per-channel weight tensor in the base model\n");
        return 1;
    }
    free(b);
    printf("%d failed, %d passed\n", n_failed, n_passed);
    return n_failed != 0;
}
