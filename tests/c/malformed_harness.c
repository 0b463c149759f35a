/* tests/test_unix_malformed.py's host harness: the engine (model.c, forward.c, ...) and the
 * kernels built with -fsanitize=address,undefined.
 * cases FILE: every case copied into its own exactly-sized heap block (so any read past the
 * end is caught), validated, and run on two inputs when valid.
 * run ETM INPUTS OUTPUTS: forward every input of INPUTS, write the outputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h" /* fz_slurp, fz_predict (fuzz/) */

static void run_one(const et_model_t *m, const int8_t *x, int8_t *y) {
    uint8_t *arena = malloc(m->arena_size);
    const int8_t *out = fz_predict(m, arena, x);
    if (!out) { printf("KERNEL-ERROR\n"); exit(3); }
    memcpy(y, out, et_model_output_size(m));
    free(arena);
}

int main(int argc, char **argv) {
    char err[192];
    if (argc == 3 && !strcmp(argv[1], "cases")) {
        size_t len;
        uint8_t *data = fz_slurp(argv[2], &len);
        uint32_t n;
        memcpy(&n, data, 4);
        size_t pos = 4 + 4 * (size_t)n;
        for (uint32_t i = 0; i < n; ++i) {
            uint32_t ln;
            memcpy(&ln, data + 4 + 4 * i, 4);
            uint8_t *buf = malloc(ln ? ln : 1); /* malloc is 16-aligned: 4-byte alignment holds */
            memcpy(buf, data + pos, ln);
            pos += ln;
            et_model_t m;
            const char *msg = et_model_init(&m, buf, ln, err, sizeof err);
            if (msg) {
                printf("VE %u %s\n", i, msg);
            } else if (et_model_input_size(&m) > (1u << 24) || m.arena_size > (1u << 26)) {
                printf("OK %u too big to run\n", i);
            } else {
                size_t k = et_model_input_size(&m);
                int8_t *x = malloc(k), *y = malloc(et_model_output_size(&m));
                memset(x, 0, k);
                run_one(&m, x, y);
                memset(x, 0x7f, k);
                run_one(&m, x, y);
                printf("OK %u\n", i);
                free(x);
                free(y);
            }
            free(buf);
        }
        printf("DONE\n");
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "run")) {
        size_t len, xlen;
        uint8_t *raw = fz_slurp(argv[2], &len);
        uint8_t *buf = malloc(len);
        memcpy(buf, raw, len);
        et_model_t m;
        if (et_model_init(&m, buf, len, err, sizeof err)) { printf("VE %s\n", err); return 4; }
        int8_t *xs = (int8_t *)fz_slurp(argv[3], &xlen);
        size_t k = et_model_input_size(&m), o = et_model_output_size(&m);
        FILE *f = fopen(argv[4], "wb");
        int8_t *x = malloc(k), *y = malloc(o);
        for (size_t i = 0; i + k <= xlen; i += k) {
            memcpy(x, xs + i, k); /* exactly-sized input block */
            run_one(&m, x, y);
            fwrite(y, 1, o, f);
        }
        fclose(f);
        printf("DONE\n");
        return 0;
    }
    return 2;
}
