/*
 * libFuzzer target: the .etm model parser and everything a validated model reaches.
 *
 * Input: an .etm file. It is checked twice, as given (size/CRC paths) and with the header's
 * file size and CRC fixed up (so mutations reach the table/tensor/layer validation). A model
 * that validates is run forward on two inputs, then trained under its stored scheme (or the
 * default) with momentum off or on: plan, init, two steps, forward, save/check/load round trip;
 * when the last byte's bit 1 is set, once more with every weight layer's weights and bias
 * trained (the backward pass through every layer the bound allows).
 * Mutations: fuzz_mutate.h (structure-aware, size and CRC fixed), or libFuzzer's own.
 */
#include "fuzz_common.h"
#include "fuzz_mutate.h"

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
    return fzm_mutate_etm(data, size, max_size, seed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[192];
    et_model_t m;
    uint8_t *buf = fz_copy(data, size);
    (void)et_model_init(&m, buf, size, err, sizeof err);
    fz_fix_etm(buf, size);
    if (et_model_init(&m, buf, size, err, sizeof err) == NULL && fz_runnable(&m)) {
        fz_forward(&m, data, size);
        et_train_layer_t *tl = calloc(m.n_layers, sizeof *tl);
        et_scheme_layer_t *s = calloc(m.n_layers, sizeof *s);
        const char *msg = NULL;
        if (m.scheme_off) {
            msg = et_scheme_parse(&m, s, err, sizeof err);
        } else {
            et_scheme_default(&m, s);
        }
        if (msg == NULL) {
            for (unsigned i = 0; i < m.n_layers; ++i) {
                tl[i].s = s[i];
            }
            fz_train(&m, tl, (data[size - 1] & 1) ? 0.5f : 0.0f, data, size, NULL, 0, 0);
        }
        if (data[size - 1] & 2) {
            uint8_t den[ET_MAX_LAYERS] = { 0 };
            uint32_t n_w = 0;
            for (unsigned i = 0; i < m.n_layers; ++i) {
                et_layer_t l;
                et_model_layer(&m, i, &l);
                if (et_scheme_is_weight_op(l.op)) {
                    den[i] = 1;
                    ++n_w;
                }
            }
            if (et_scheme_build(&m, n_w, den, s, err, sizeof err) == NULL) {
                for (unsigned i = 0; i < m.n_layers; ++i) {
                    tl[i].s = s[i];
                }
                fz_train(&m, tl, (data[size - 1] & 1) ? 0.5f : 0.0f, data, size, NULL, 0, 0);
            }
        }
        free(s);
        free(tl);
    }
    free(buf);
    return 0;
}
