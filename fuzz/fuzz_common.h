/*
 * Shared helpers of the libFuzzer harnesses (fuzz/README.md) and of the C test harnesses
 * (tests/c/malformed_harness.c, tests/c/train_harness.c): exact-size heap copies (so
 * AddressSanitizer sees any read past the end), header fix-ups that let mutations get past the
 * CRC checks, a cost bound that keeps pathological-but-valid models from timing out, and one
 * training round (plan, init, forward, step, save/check round trip) on a validated model.
 *
 * Plain C99 over the module's C API (model.h, scheme.h, train.h); no MicroPython.
 */
#ifndef EDGETUNE_FUZZ_COMMON_H
#define EDGETUNE_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "scheme.h"
#include "train.h"
#include "et_util.h"

/* Bounds on what a fuzz input may make us run (valid models can be huge; the parser is what
 * we fuzz, and the kernels only need to see many small shapes). */
#define FUZZ_MAX_ARENA (1u << 20)
#define FUZZ_MAX_COST 4000000.0

/* An exact-size malloc copy (malloc is 16-byte aligned, so the 4-byte alignment holds). */
static uint8_t *fz_copy(const uint8_t *data, size_t size) {
    uint8_t *p = malloc(size ? size : 1);
    if (size) {
        memcpy(p, data, size);
    }
    return p;
}

/* Make the .etm header's file size and CRC agree with the buffer (no-op if too short). */
static void fz_fix_etm(uint8_t *buf, size_t len) {
    if (len >= ET_HEADER_SIZE) {
        et_wr32(buf + 8, (uint32_t)len);
        et_wr32(buf + 12, et_crc32(0, buf + 16, len - 16));
    }
}

/* Rough multiply-accumulate count of the forward pass (and the backward pass, about 2x). */
static double fz_cost(const et_model_t *m) {
    double cost = 0.0;
    for (unsigned i = 0; i < m->n_layers; ++i) {
        et_layer_t l;
        et_tensor_t tin, tout;
        et_model_layer(m, i, &l);
        et_model_tensor(m, l.input, &tin);
        et_model_tensor(m, l.output, &tout);
        double k = (double)l.filter_h * (double)l.filter_w;
        if (l.weight != ET_NONE) {
            et_tensor_t tw;
            et_model_tensor(m, l.weight, &tw);
            k = (double)et_tensor_elems(&tw);
        }
        cost += (double)et_tensor_elems(&tout) * (k > 1.0 ? k : 1.0) + (double)et_tensor_elems(&tin);
    }
    return cost;
}

static int fz_runnable(const et_model_t *m) {
    return m->arena_size <= FUZZ_MAX_ARENA && fz_cost(m) <= FUZZ_MAX_COST;
}

/* Losses stay finite on every model that validates (the output scale is bounded). */
static void fz_finite(float loss, const char *what) {
    if (!(loss - loss == 0.0f)) {
        fprintf(stderr, "%s: the loss is not finite (%g)\n", what, (double)loss);
        abort();
    }
}

/* The trained-weights file of t as it stands: it must pass et_train_state_check, then loads. */
static void fz_round_trip(et_train_t *t, const char *when) {
    char err[192];
    const size_t n_state = et_train_state_size(t);
    uint8_t *own = malloc(n_state);
    et_train_state_header(t, own);
    memcpy(own + ET_STATE_HEADER, t->arena + t->params_off, t->params_size);
    const char *msg = et_train_state_check(t, own, n_state, err, sizeof err);
    if (msg != NULL) {
        fprintf(stderr, "the model's own trained-weights file was refused %s: %s\n", when, msg);
        abort();
    }
    et_train_state_load(t, own);
    free(own);
}

/* Inference with the flashed parameters: the forward walker (et_train_forward) under a plan in
 * which nothing trains, whose arena is the inference arena (m->arena_size bytes). Returns the
 * output inside `arena`. */
static const int8_t *fz_predict(const et_model_t *m, uint8_t *arena, const int8_t *x) {
    et_train_layer_t *tl = calloc(m->n_layers, sizeof *tl);
    et_train_t t;
    const char *msg = et_train_plan(&t, m, tl, 0.0f, NULL, 0);
    if (msg != NULL || t.arena_size != m->arena_size) {
        fprintf(stderr, "a plan with nothing trained was refused or grew the arena: %s\n", msg ? msg : "(size)");
        abort();
    }
    et_train_init(&t, arena);
    const int8_t *y = et_train_forward(&t, x, 0);
    free(tl);
    return y;
}

/* Forward the model on a few inputs built from `seed` bytes. */
static void fz_forward(const et_model_t *m, const uint8_t *seed, size_t seed_len) {
    const size_t n_in = et_model_input_size(m), n_out = et_model_output_size(m);
    uint8_t *arena = malloc(m->arena_size ? m->arena_size : 1);
    int8_t *x = malloc(n_in ? n_in : 1);
    for (int pass = 0; pass < 2; ++pass) {
        for (size_t k = 0; k < n_in; ++k) {
            x[k] = (int8_t)(pass ? (seed_len ? seed[k % seed_len] : 0x7f) : 0x80);
        }
        const int8_t *y = fz_predict(m, arena, x);
        volatile int8_t sink = 0;
        for (size_t k = 0; k < n_out; ++k) {
            sink ^= y[k];
        }
        (void)sink;
    }
    free(x);
    free(arena);
}

/*
 * Plan the scheme in tl[i].s, and when it is accepted and small enough: init, two training
 * steps (QAS and plain), a forward pass, and the save -> check -> load round trip (a file the
 * model itself wrote must always load). Then, if `state` is given, check it as a trained-weights
 * file and load it when accepted, and run another step on the loaded parameters.
 */
static void fz_train(const et_model_t *m, et_train_layer_t *tl, float momentum, const uint8_t *seed,
    size_t seed_len, const uint8_t *state, size_t state_len, int fix_state) {
    et_train_t t;
    char err[192];
    if (et_train_plan(&t, m, tl, momentum, err, sizeof err) != NULL) {
        return;
    }
    if (t.arena_size > 4u * FUZZ_MAX_ARENA || 3.0 * fz_cost(m) > FUZZ_MAX_COST) {
        return;
    }
    uint8_t *arena = malloc(t.arena_size ? t.arena_size : 1);
    et_train_init(&t, arena);
    const size_t n_in = et_model_input_size(m), n_out = et_model_output_size(m);
    int8_t *x = malloc(n_in ? n_in : 1);
    for (size_t k = 0; k < n_in; ++k) {
        x[k] = (int8_t)(seed_len ? seed[(k * 7) % seed_len] : k);
    }
    const int32_t label = (int32_t)((seed_len ? seed[0] : 0) % n_out);
    fz_finite(et_train_step(&t, x, label, 0.05f, 1), "QAS step");
    fz_finite(et_train_step(&t, x, (label + 1) % (int32_t)n_out, 1.0f, 0), "plain step");
    (void)et_train_forward(&t, x, 0);

    /* Round trip: what the model saves, it loads. */
    fz_round_trip(&t, "after training");

    if (state != NULL) {
        uint8_t *buf = fz_copy(state, state_len);
        if (fix_state && state_len >= ET_STATE_HEADER) {
            /* Make size, model CRC, scheme CRC and file CRC right so mutations reach the
             * per-layer checks; the raw bytes were checked before. */
            et_wr32(buf + 8, (uint32_t)state_len);
            et_wr32(buf + 16, et_ld_u32(m->buf + 12));
            et_wr32(buf + 20, et_train_scheme_crc(&t));
            et_wr32(buf + 12, et_crc32(0, buf + 16, state_len - 16));
        }
        const char *why = et_train_state_check(&t, buf, state_len, err, sizeof err);
        if (getenv("FUZZ_VERBOSE")) {
            fprintf(stderr, "state: %s\n", why ? why : "loaded");
        }
        if (why == NULL) {
            et_train_state_load(&t, buf);
            (void)et_train_forward(&t, x, 0);
            fz_finite(et_train_step(&t, x, label, 0.05f, 1), "step after load");
            fz_finite(et_train_step(&t, x, (label + 1) % (int32_t)n_out, 1.0f, 0), "plain step after load");
            fz_round_trip(&t, "after loading a file and training"); /* train, save, load again */
        }
        free(buf);
    }
    free(x);
    free(arena);
}

/* Read a whole file (the base model of the scheme/state targets); exits on failure. */
static uint8_t *fz_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    if (fread(p, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(2);
    }
    fclose(f);
    *len = (size_t)n;
    return p;
}

#ifndef FUZZ_BASE_ETM
#define FUZZ_BASE_ETM "fuzz/base.etm"
#endif

/* The base model of the scheme/state targets: $FUZZ_BASE_ETM, else the path compiled in. */
static uint8_t *fz_base_etm(size_t *len) {
    const char *path = getenv("FUZZ_BASE_ETM");
    return fz_slurp(path ? path : FUZZ_BASE_ETM, len);
}

#endif /* EDGETUNE_FUZZ_COMMON_H */
