/*
 * libFuzzer target: the training-scheme parser (et_scheme_parse) and builder (et_scheme_build)
 * on a fixed base model (fuzz/base.etm: every op, trainable), then the training plan and a
 * training round on every accepted scheme.
 *
 * Input: byte 0 = mode. mode bit 0 clear: bytes 1.. are the .etm scheme section, written into
 * a copy of the base model (4-aligned, after its last byte; header fixed up). mode bit 0 set:
 * byte 1 = n_bias, bytes 2.. = the per-layer ratio denominators (missing ones 0). mode bit 1:
 * momentum 0.5.
 */
#include "fuzz_common.h"

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
    char err[192];
    const uint8_t mode = data[0];
    const size_t sec = size - 1, off = (base_len + 3u) & ~(size_t)3u;
    const size_t len = (mode & 1) ? base_len : off + sec;
    uint8_t *buf = calloc(len ? len : 1, 1);
    memcpy(buf, base, base_len);
    if (!(mode & 1)) {
        memcpy(buf + off, data + 1, sec);
        et_wr32(buf + 40, sec ? (uint32_t)off : 0u);
        et_wr32(buf + 44, (uint32_t)sec);
        fz_fix_etm(buf, len);
    }
    et_model_t m;
    if (et_model_init(&m, buf, len, err, sizeof err) != NULL) {
        fprintf(stderr, "base model refused: %s\n", err);
        abort();
    }
    et_train_layer_t *tl = calloc(m.n_layers, sizeof *tl);
    et_scheme_layer_t *s = calloc(m.n_layers, sizeof *s);
    const char *msg;
    if (mode & 1) {
        uint8_t den[ET_MAX_LAYERS] = { 0 };
        for (unsigned i = 0; i < m.n_layers && 2 + i < size; ++i) {
            den[i] = data[2 + i];
        }
        msg = et_scheme_build(&m, size > 1 ? data[1] : 0, den, s, err, sizeof err);
    } else if (m.scheme_off) {
        msg = et_scheme_parse(&m, s, err, sizeof err);
    } else {
        msg = NULL;
        et_scheme_default(&m, s);
    }
    if (msg == NULL) {
        for (unsigned i = 0; i < m.n_layers; ++i) {
            tl[i].s = s[i];
        }
        fz_train(&m, tl, (mode & 2) ? 0.5f : 0.0f, data, size, NULL, 0, 0);
    }
    free(s);
    free(tl);
    free(buf);
    return 0;
}
