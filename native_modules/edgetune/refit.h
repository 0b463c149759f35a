/*
 * Closed-form classifier refit on the device (docs/training.md §9): forward passes over the
 * given windows, integer statistics of the classifier's input, the float32 ridge solve and
 * blend of kernels/et_refit_f32.c, cross-validation of (l2, alpha) on the written grid, and the
 * requantized classifier written into the params region (its bias and weight copies and the
 * classifier-quantization item of §6.3). Plain C99, no allocation: the caller gives three
 * scratch blocks of et_refit_scratch_blocks() bytes (4-byte aligned).
 */
#ifndef EDGETUNE_REFIT_H
#define EDGETUNE_REFIT_H

#include <stddef.h>
#include <stdint.h>

#include "train.h"

#define ET_REFIT_MAX_WINDOWS 32767
#define ET_REFIT_N_L2 4
#define ET_REFIT_N_ALPHA 5
#define ET_REFIT_BLOCKS 3

typedef struct {
    float l2, alpha;    /* the values used */
    float cv_accuracy;  /* correct / n of the chosen pair, if cv */
    int cv;             /* cross-validation ran (l2 or alpha was None) */
} et_refit_result_t;

/* Check the arguments (l2/alpha: NaN = choose by CV); NULL if fine, else a ValueError message
 * (never NULL on failure; plain text, the bindings add "edgetune: ", et_err.h). */
const char *et_refit_check(const et_train_t *t, const int32_t *labels, int32_t n, float l2, float alpha);

/* Scratch bytes for n windows with these labels (checked); cv: l2 or alpha is chosen by CV. */
size_t et_refit_scratch_size(const et_train_t *t, const int32_t *labels, int32_t n, int cv);

/* The same split into its three blocks (Gram matrix, factor, the rest; sizes multiple of 4). */
void et_refit_scratch_blocks(const et_train_t *t, const int32_t *labels, int32_t n, int cv,
    size_t size[ET_REFIT_BLOCKS]);

/* Refit (arguments checked). xs[s] is window s. Returns NULL, or a ValueError message with nothing
 * changed (a non-finite solve). */
const char *et_refit_run(et_train_t *t, const int8_t *const *xs, const int32_t *labels, int32_t n, float l2,
    float alpha, void *const scratch[ET_REFIT_BLOCKS], et_refit_result_t *res);

/* The integer statistics of §10a (cnt[c], S1[k], G lower triangle, B[c][k]; zeroed here) of the
 * windows xs (arguments checked as for et_refit_run) under the current parameters: one forward
 * pass per window, nothing in the model changes. et_refit_run builds its final solve's
 * statistics with it. */
void et_refit_stats(et_train_t *t, const int8_t *const *xs, const int32_t *labels, int32_t n, int32_t *g,
    int32_t *s1, int32_t *b, int32_t *cnt);

/* Bytes of the packed statistics: 4 * (C + K + K(K+1)/2 + C*K). */
size_t et_refit_stats_bytes(const et_train_t *t);

/* The packed statistics (the fleet refit mode's upload, docs/fleet-refit.md §1): cnt, S1, G's
 * lower triangle row by row, B row-major, each int32 little-endian, into out (4-byte aligned,
 * et_refit_stats_bytes() bytes). */
void et_refit_stats_pack(et_train_t *t, const int8_t *const *xs, const int32_t *labels, int32_t n, void *out);

#endif /* EDGETUNE_REFIT_H */
