// The few libc/libm/libgcc pieces the qemu-xtensa board's MicroPython core needs beyond
// shared/libc/string0.c, lib/libm and scripts/xtensa/rt/xtensa_rt.c, written for LLVM 22's
// Xtensa backend: no select between two float constants (it crashes the backend). The variadic
// printf/snprintf format through mp_vprintf (their va_start is repaired by
// scripts/xtensa/vafix.py, like every variadic function the board compiles).
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "py/mphal.h"
#include "py/mpprint.h"
#include "py/stream.h"

typedef union {
    float f;
    uint32_t u;
} fu_t;

typedef union {
    double d;
    uint64_t u;
    struct {
        uint32_t lo, hi;
    } w;
} du_t;

float copysignf(float x, float y);
float fabsf(float x);
float nanf(const char *tag);
float nearbyintf(float x);
double __extendsfdf2(float a);
float __truncdfsf2(double a);
double __floatsidf(int32_t i);
int printf(const char *fmt, ...);
int snprintf(char *buf, size_t size, const char *fmt, ...);

float copysignf(float x, float y) {
    fu_t a, b;
    a.f = x;
    b.f = y;
    a.u = (a.u & 0x7fffffffu) | (b.u & 0x80000000u);
    return a.f;
}

float fabsf(float x) {
    fu_t a;
    a.f = x;
    a.u &= 0x7fffffffu;
    return a.f;
}

float nanf(const char *tag) {
    (void)tag;
    fu_t a;
    a.u = 0x7fc00000u;
    return a.f;
}

// Round to the nearest integer, ties to even (the default rounding mode), on the bits.
float nearbyintf(float x) {
    fu_t a;
    a.f = x;
    uint32_t e = (a.u >> 23) & 0xffu;
    if (e >= 127 + 23) {
        return x;  // integral already, inf or NaN
    }
    uint32_t sign = a.u & 0x80000000u;
    if (e < 126) {
        a.u = sign;  // |x| < 0.5 -> +-0
        return a.f;
    }
    // 0.5 <= |x| < 2^23: the fraction has (150 - e) bits below the unit.
    uint32_t shift = 150u - e;
    uint32_t m = (a.u & 0x7fffffu) | 0x800000u;
    uint32_t ip = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (ip & 1u))) {
        ip++;
    }
    if (ip == 0) {
        a.u = sign;
        return a.f;
    }
    // ip < 2^24: exact in float; rebuild by normalising.
    uint32_t exp = 150u;
    while (ip < 0x800000u) {
        ip <<= 1;
        exp--;
    }
    while (ip >= 0x1000000u) {
        ip >>= 1;
        exp++;
    }
    a.u = sign | (exp << 23) | (ip & 0x7fffffu);
    return a.f;
}

double __extendsfdf2(float a) {
    fu_t x;
    du_t r;
    x.f = a;
    uint32_t sign = x.u & 0x80000000u, e = (x.u >> 23) & 0xffu, m = x.u & 0x7fffffu;
    if (e == 255) {
        r.w.hi = sign | 0x7ff00000u | (m >> 3);
        r.w.lo = m << 29;
    } else if (e == 0) {
        if (m == 0) {
            r.w.hi = sign;
            r.w.lo = 0;
        } else {
            int32_t ee = 1;
            while ((m & 0x800000u) == 0) {
                m <<= 1;
                ee--;
            }
            m &= 0x7fffffu;
            r.w.hi = sign | ((uint32_t)(ee - 127 + 1023) << 20) | (m >> 3);
            r.w.lo = m << 29;
        }
    } else {
        r.w.hi = sign | ((e - 127 + 1023) << 20) | (m >> 3);
        r.w.lo = m << 29;
    }
    return r.d;
}

float __truncdfsf2(double a) {
    du_t x;
    fu_t r;
    x.d = a;
    uint32_t sign = x.w.hi & 0x80000000u;
    int32_t e = (int32_t)((x.w.hi >> 20) & 0x7ffu);
    uint32_t mhi = x.w.hi & 0xfffffu, mlo = x.w.lo;
    if (e == 0x7ff) {
        r.u = sign | 0x7f800000u | ((mhi | mlo) ? (0x400000u | (mhi << 3) | (mlo >> 29)) : 0u);
        return r.f;
    }
    if (e == 0 && mhi == 0 && mlo == 0) {
        r.u = sign;
        return r.f;
    }
    // The 53-bit significand; drop 29 bits (more for a subnormal float), round to nearest even.
    {
        uint64_t full = ((uint64_t)((e ? 0x100000u : 0u) | mhi) << 32) | mlo;  // 53 bits
        int32_t drop = 29;  // bits to drop for a normal float result
        int32_t fe2 = e - 1023 + 127;
        if (e == 0) {
            fe2 = 1 - 1023 + 127;
        }
        if (fe2 <= 0) {
            drop += 1 - fe2;
            fe2 = 0;
        }
        uint32_t mant, g, st;
        if (drop >= 64) {
            mant = 0;
            g = 0;
            st = full != 0;
        } else {
            mant = (uint32_t)(full >> drop);
            g = (uint32_t)(full >> (drop - 1)) & 1u;
            st = (full & (((uint64_t)1 << (drop - 1)) - 1u)) != 0;
        }
        if (g && (st || (mant & 1u))) {
            mant++;
        }
        uint32_t bits = fe2 == 0 ? mant : ((uint32_t)(fe2 - 1) << 23) + mant;
        if (fe2 >= 255 || bits >= 0x7f800000u) {
            bits = 0x7f800000u;
        }
        r.u = sign | bits;
        return r.f;
    }
}

double __floatsidf(int32_t i) {
    du_t r;
    if (i == 0) {
        r.u = 0;
        return r.d;
    }
    uint32_t sign = i < 0 ? 0x80000000u : 0u;
    uint32_t m = i < 0 ? 0u - (uint32_t)i : (uint32_t)i;
    int32_t e = 31;
    while ((m & 0x80000000u) == 0) {
        m <<= 1;
        e--;
    }
    // m: 1.xxx in bit 31; 52-bit fraction = the 31 bits below, shifted.
    m <<= 1;
    r.w.hi = sign | ((uint32_t)(e + 1023) << 20) | (m >> 12);
    r.w.lo = m << 20;
    return r.d;
}

int printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = mp_vprintf(&mp_plat_print, fmt, ap);
    va_end(ap);
    return n;
}

typedef struct {
    char *buf;
    size_t size, len;
} board_snprintf_t;

static void board_snprintf_strn(void *data, const char *str, size_t len) {
    board_snprintf_t *s = data;
    for (size_t i = 0; i < len; i++, s->len++) {
        if (s->len + 1 < s->size) {
            s->buf[s->len] = str[i];
        }
    }
}

int snprintf(char *buf, size_t size, const char *fmt, ...) {
    board_snprintf_t s = {buf, size, 0};
    mp_print_t print = {&s, board_snprintf_strn};
    va_list ap;
    va_start(ap, fmt);
    mp_vprintf(&print, fmt, ap);
    va_end(ap);
    if (size > 0) {
        buf[s.len < size ? s.len : size - 1] = '\0';
    }
    return (int)s.len;
}

uintptr_t mp_hal_stdio_poll(uintptr_t poll_flags) {
    return poll_flags & MP_STREAM_POLL_WR;
}
