/*
 * libFuzzer target: the trained-weights file loader (et_train_state_check / _load in train.c)
 * on a fixed base model (fuzz/base.etm), then training on the loaded parameters.
 *
 * Input: byte 0 = mode, bytes 1.. = the trained-weights file. mode bit 0: momentum 0.5;
 * bits 1-3: n_bias; bits 4-5: ratio denominator {none, 1, 2, 4} of every weight layer but the
 * last; bit 7: fix up the file's size, model CRC, scheme CRC and CRC before checking (so
 * mutations reach the per-layer checks). The same mapping is in fuzz/make_seeds.py.
 */
#include "fuzz_common.h"
#include "fuzz_mutate.h"

/* Structure-aware: the weights file's values and header fields (fuzz_mutate.h), mostly with the
 * fix-up bit set so the per-layer checks are reached; the mode byte changes now and then. */
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
    fzm_rng_t r = { seed * 2654435761u + 7u };
    if (size < 1 + 32 || max_size < 1 + 32) {
        return LLVMFuzzerMutate(data, size, max_size);
    }
    if (fzm_below(&r, 16) == 0) {
        data[0] = (uint8_t)fzm_next(&r);
    } else if (fzm_below(&r, 4)) {
        data[0] |= 0x80;
    }
    return 1 + fzm_mutate_state(data + 1, size - 1, max_size - 1, &r);
}

static uint8_t *base;
static size_t base_len;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    base = fz_base_etm(&base_len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) {
        return 0;
    }
    static const uint8_t dens[4] = { 0, 1, 2, 4 };
    char err[192];
    const uint8_t mode = data[0];
    et_model_t m;
    if (et_model_init(&m, base, base_len, err, sizeof err) != NULL) {
        fprintf(stderr, "base model refused: %s\n", err);
        abort();
    }
    uint8_t den[ET_MAX_LAYERS] = { 0 };
    int last = -1;
    for (unsigned i = 0; i < m.n_layers; ++i) {
        et_layer_t l;
        et_model_layer(&m, i, &l);
        if (et_scheme_is_weight_op(l.op)) {
            den[i] = dens[(mode >> 4) & 3];
            last = (int)i;
        }
    }
    if (last >= 0) {
        den[last] = 0;
    }
    et_train_layer_t *tl = calloc(m.n_layers, sizeof *tl);
    et_scheme_layer_t *s = calloc(m.n_layers, sizeof *s);
    if (et_scheme_build(&m, (mode >> 1) & 7, den, s, err, sizeof err) == NULL) {
        for (unsigned i = 0; i < m.n_layers; ++i) {
            tl[i].s = s[i];
        }
        fz_train(&m, tl, (mode & 1) ? 0.5f : 0.0f, data + 1, size - 1, data + 1, size - 1, mode >> 7);
    }
    free(s);
    free(tl);
    return 0;
}
