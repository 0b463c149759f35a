/*
 * Raw float32 samples -> int8 model input (docs/data.md §2); the numpy twin is
 * host/edgetune/twin/quantize_input.py, the pure-Python one edgetune_py.Model.quantize.
 */
#include "et_quantize_f32.h"

int et_quantize_scale_ok(float scale) {
    /* scale - scale == 0 is false for +-inf and NaN; "> 0" rejects NaN, 0 and negatives */
    if (!(scale > 0.0f) || !(scale - scale == 0.0f)) {
        return 0;
    }
    const float inv = 1.0f / scale;
    return inv - inv == 0.0f;
}

/* Round half to even, clamped to [-128, 127]; v is not NaN. Integer logic, no libm/rintf,
 * so it does not depend on the FPU's rounding mode or on how a port's libm rounds. */
static int8_t round_clamp_s8(float v) {
    if (v >= 127.0f) {
        return 127;
    }
    if (v <= -128.0f) {
        return -128;
    }
    int32_t t = (int32_t)v;          /* toward zero; |v| < 128 */
    const float f = v - (float)t;    /* exact: the fraction, with the sign of v */
    if (f > 0.5f || (f == 0.5f && (t & 1))) {
        t += 1;
    } else if (f < -0.5f || (f == -0.5f && (t & 1))) {
        t -= 1;
    }
    return (int8_t)t;
}

size_t et_quantize_f32(const float *x, size_t n, size_t channels,
    const float *scale, const float *zero_point, int8_t *out) {
    size_t c = 0;
    for (size_t i = 0; i < n; ++i) {
        const float xi = x[i];
        if (xi != xi) {
            return i;
        }
        const float inv = 1.0f / scale[c];
        float v = xi * inv;
        v = v + zero_point[c];
        out[i] = round_clamp_s8(v);
        if (++c == channels) {
            c = 0;
        }
    }
    return n;
}
