/*
 * Sensor-frame calibration (docs/training.md §9): per-class statistics of int8 windows, the
 * frame fit (orthogonal Procrustes with covariance terms, proper and improper, identity guard)
 * and the frame transform applied before the input quantization.
 *
 * The numpy twin host/edgetune/twin/frame.py documents the recipe and the float32 operation order;
 * this file follows it line by line (and so does firmware/edgetune_py_frame.py).
 * Plain C99, no MicroPython headers, no libm, no double. Compile with -ffp-contract=off.
 */
#ifndef EDGETUNE_ET_FRAME_F32_H
#define EDGETUNE_ET_FRAME_F32_H

#include <stddef.h>
#include <stdint.h>

#define ET_FRAME_STAT_FLOATS 15          /* per class: mu(3), A xx xy xz yy yz zz, G (same) */
#define ET_FRAME_MAX_CLASS_SAMPLES (1L << 19) /* integer sums stay exact (see frame.py) */
#define ET_FRAME_NONE 0xFF               /* gyro group absent */

/* Integer sums of one class: S = sum q of the 6 group channels (accel 0-2, gyro 3-5),
 * P = sum q_c q_d of each group's upper triangle (xx xy xz yy yz zz; accel 0-5, gyro 6-11). */
typedef struct {
    int32_t n;      /* samples */
    int32_t s[6];
    int64_t p[12];
    float m[3], sa[9], sg[9]; /* written by et_frame_fit: the raw target statistics (step 1) */
} et_frame_acc_t;

/* The result of a fit: R (row-major), improper (det R = -1), chosen (0 identity, 1 proper,
 * 2 improper) and the residuals of the identity, the proper and the improper candidate. */
typedef struct {
    float r[9];
    int improper;
    int chosen;
    int set;       /* the statistics set of the candidate */
    float e_identity, e_proper, e_improper;
} et_frame_fit_t;

#define ET_FRAME_MAX_SETS 4

/*
 * Add the samples of one window (len values, channel i % channels) to acc. accel/gyro: the
 * channel indices of each group (gyro[0] == ET_FRAME_NONE: none). Returns 0, or -1 if the class
 * would exceed ET_FRAME_MAX_CLASS_SAMPLES samples (acc unchanged).
 */
int et_frame_accumulate(et_frame_acc_t *acc, const int8_t *x, size_t len, size_t channels,
    const uint8_t accel[3], const uint8_t gyro[3]);

/*
 * The fit (frame.py fit_frame, steps 1-5). acc: n_classes accumulators (n == 0: class absent;
 * their m/sa/sg are written here, no other memory is used: about 1 KB of C stack);
 * stats: n_sets (1..ET_FRAME_MAX_SETS) sets of n_classes x ET_FRAME_STAT_FLOATS source
 * statistics; scale/zero_point: the raw input quantization per channel (checked by the caller:
 * scale > 0 and finite, zero point finite).
 */
void et_frame_fit(et_frame_acc_t *acc, size_t n_classes, size_t n_sets, const float *stats,
    const float *scale, const float *zero_point, const uint8_t accel[3], const uint8_t gyro[3],
    et_frame_fit_t *out);

/* out = a @ b (3x3 row-major; t = a0*b0; t = t + a1*b1; t = t + a2*b2). out may not alias. */
void et_frame_mm(const float *a, const float *b, float *out);

/*
 * One sample of `channels` values in place: accel x <- R^T x, gyro x <- R^T x, negated when
 * improper (y_i = R[0][i]*x0; y_i = y_i + R[1][i]*x1; y_i = y_i + R[2][i]*x2).
 */
void et_frame_apply(const float *r, int improper, const uint8_t accel[3], const uint8_t gyro[3], float *x);

#endif
