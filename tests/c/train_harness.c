/* tests/test_unix_train.py's harness: the engine (model.c, scheme.c, train.c, forward.c, ...) and
 * every kernel, on the host (ASan+UBSan, or -O3 with FMA) and bare metal (Cortex-M3 in qemu). Usage:
 *   harness ETM XS LABELS LR QAS MOMENTUM STATE_OUT
 * Model with the .etm's scheme (else the default), exactly-sized heap blocks for the model, the
 * per-layer table, the arena and every input (so ASan sees any access past them); one step per
 * label; prints the losses as float32 hex and "PEAK <peak> <arena>", writes the state file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h" /* fz_slurp (fuzz/); model.h, scheme.h, train.h */

static int run_job(char **argv) {
    char err[192];
    size_t len, xlen, nlab;
    uint8_t *buf = fz_slurp(argv[1], &len);
    et_model_t m;
    const char *bad = et_model_init(&m, buf, len, err, sizeof err);
    if (bad) { printf("VE %s\n", bad); return 4; }
    et_scheme_layer_t *s = malloc(sizeof(*s) * m.n_layers);
    if (m.scheme_off) {
        const char *msg = et_scheme_parse(&m, s, err, sizeof err);
        if (msg) { printf("VE %s\n", msg); return 4; }
    } else {
        et_scheme_default(&m, s);
    }
    et_train_layer_t *tl = calloc(m.n_layers, sizeof(*tl));
    for (unsigned i = 0; i < m.n_layers; ++i) { tl[i].s = s[i]; }
    et_train_t t;
    const char *msg = et_train_plan(&t, &m, tl, (float)atof(argv[6]), err, sizeof err);
    if (msg) { printf("VE %s\n", msg); return 4; }
    uint8_t *arena = malloc(t.arena_size);
    et_train_init(&t, arena);
    int8_t *xs = (int8_t *)fz_slurp(argv[2], &xlen);
    uint8_t *labels = fz_slurp(argv[3], &nlab);
    size_t k = et_model_input_size(&m);
    int8_t *x = malloc(k);
    /* losses as float32 hex, then "PEAK <peak> <arena>", to stdout and to STATE_OUT.txt */
    char path[600];
    snprintf(path, sizeof path, "%s.txt", argv[7]);
    FILE *log = fopen(path, "w");
    for (size_t i = 0; i < nlab; ++i) {
        memcpy(x, xs + i * k, k);
        float loss = et_train_step(&t, x, labels[i], (float)atof(argv[4]), atoi(argv[5]));
        uint8_t b[4];
        memcpy(b, &loss, 4);
        printf("%02x%02x%02x%02x ", b[0], b[1], b[2], b[3]);
        fprintf(log, "%02x%02x%02x%02x ", b[0], b[1], b[2], b[3]);
    }
    printf("\nPEAK %lu %lu\n", (unsigned long)t.peak, (unsigned long)t.arena_size);
    fprintf(log, "\nPEAK %lu %lu\n", (unsigned long)t.peak, (unsigned long)t.arena_size);
    fclose(log);
    uint8_t hdr[ET_STATE_HEADER];
    et_train_state_header(&t, hdr);
    size_t n = et_train_state_size(&t);
    uint8_t *file = malloc(n);
    memcpy(file, hdr, ET_STATE_HEADER);
    memcpy(file + ET_STATE_HEADER, arena + t.params_off, t.params_size);
    if (et_train_state_check(&t, file, n, err, sizeof err)) { printf("CHECK %s\n", err); return 5; }
    FILE *f = fopen(argv[7], "wb");
    fwrite(file, 1, n, f);
    fclose(f);
    free(file); free(x); free(labels); free(xs); free(arena); free(tl); free(s); free(buf);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 8) {
        return run_job(argv);
    }
#ifdef JOBS_FILE
    /* Bare-metal (QEMU + semihosting): one job per line of JOBS_FILE, 7 space-separated fields. */
    static char line[1024];
    FILE *jobs = fopen(JOBS_FILE, "r");
    if (!jobs) { printf("NOJOBS\n"); return 2; }
    while (fgets(line, sizeof line, jobs)) {
        char *args[8] = { "harness" };
        int n = 1;
        for (char *tok = strtok(line, " \n"); tok && n < 8; tok = strtok(NULL, " \n")) { args[n++] = tok; }
        if (n != 8) { break; }
        int rc = run_job(args);
        printf("RC %d\n", rc);
    }
    fclose(jobs);
    /* QEMU's console is buffered and picolibc's exit does not stop the machine: the host
     * polls for this file, then terminates QEMU. */
    snprintf(line, sizeof line, "%s.done", JOBS_FILE);
    FILE *done = fopen(line, "w");
    fputs("DONE\n", done);
    fclose(done);
#endif
    return 2;
}
