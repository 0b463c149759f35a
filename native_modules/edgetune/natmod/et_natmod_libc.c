/*
 * The C library functions the edgetune sources call, for the native .mpy build (make natmod):
 * a native module links no libc, so these forward to the firmware through mp_fun_table
 * (memset, memmove, mp_vprintf). Only the formats our messages use matter to vsnprintf:
 * %d %u %lu %s %c %x with flags/width, which MicroPython's mp_vprintf handles.
 */
#include <stdarg.h>
#include <stddef.h>

#include "py/dynruntime.h"

void *memset(void *s, int c, size_t n) {
    return mp_fun_table.memset_(s, c, n);
}

void *memmove(void *dest, const void *src, size_t n) {
    return mp_fun_table.memmove_(dest, src, n);
}

void *memcpy(void *dest, const void *src, size_t n) {
    return mp_fun_table.memmove_(dest, src, n);
}

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *p = a, *q = b;
    for (size_t i = 0; i < n; ++i) {
        if (p[i] != q[i]) {
            return p[i] < q[i] ? -1 : 1;
        }
    }
    return 0;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) {
        ++n;
    }
    return n;
}

/* vsnprintf into buf[0..size-1], always NUL-terminated when size > 0; returns the full length. */
typedef struct {
    char *buf;
    size_t size, len;
} et_sn_t;

static void et_sn_strn(void *data, const char *str, size_t len) {
    et_sn_t *sn = data;
    for (size_t i = 0; i < len; ++i, ++sn->len) {
        if (sn->len + 1 < sn->size) {
            sn->buf[sn->len] = str[i];
        }
    }
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
    et_sn_t sn = { buf, size, 0 };
    mp_print_t print = { &sn, et_sn_strn };
    mp_vprintf(&print, fmt, ap);
    if (size) {
        buf[sn.len < size ? sn.len : size - 1] = '\0';
    }
    return (int)sn.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

#if defined(__ARM_ARCH_6M__) && !defined(__ARM_FP)
/*
 * float32 division for ARMv6-M: libgcc's Thumb-1 __aeabi_fdiv reads a reciprocal table through
 * an absolute address, which a native module cannot relocate (tools/mpy_ld.py). IEEE 754
 * division is correctly rounded, so this one (restoring division, round to nearest even,
 * subnormals, infinities, NaN) gives the same bits as any conforming one.
 */
static uint32_t et_fdiv_bits(uint32_t a, uint32_t b) {
    const uint32_t sign = (a ^ b) & 0x80000000u;
    int32_t ea = (int32_t)((a >> 23) & 0xff), eb = (int32_t)((b >> 23) & 0xff);
    uint32_t ma = a & 0x7fffffu, mb = b & 0x7fffffu;
    if (ea == 0xff && ma) {
        return a | 0x400000u;
    }
    if (eb == 0xff && mb) {
        return b | 0x400000u;
    }
    if (ea == 0xff) {
        return eb == 0xff ? 0x7fc00000u : sign | 0x7f800000u;
    }
    if (eb == 0xff) {
        return sign;
    }
    if (eb == 0 && mb == 0) {
        return (ea == 0 && ma == 0) ? 0x7fc00000u : sign | 0x7f800000u;
    }
    if (ea == 0 && ma == 0) {
        return sign;
    }
    if (ea == 0) {
        ea = 1;
        while (!(ma & 0x800000u)) {
            ma <<= 1;
            --ea;
        }
    } else {
        ma |= 0x800000u;
    }
    if (eb == 0) {
        eb = 1;
        while (!(mb & 0x800000u)) {
            mb <<= 1;
            --eb;
        }
    } else {
        mb |= 0x800000u;
    }
    int32_t e = ea - eb + 127;
    if (ma < mb) {
        ma <<= 1;
        --e;
    }
    /* 26 quotient bits (1 integer, 23 fraction, guard, round) and a sticky bit. */
    uint32_t q = 0, r = ma;
    for (int i = 0; i < 26; ++i) {
        q <<= 1;
        if (r >= mb) {
            r -= mb;
            q |= 1;
        }
        r <<= 1;
    }
    uint32_t sticky = r != 0;
    if (e >= 0xff) {
        return sign | 0x7f800000u;
    }
    if (e <= 0) {
        const int32_t sh = 1 - e;
        if (sh >= 32) {
            sticky |= q != 0;
            q = 0;
        } else {
            sticky |= (q & ((1u << sh) - 1)) != 0;
            q >>= sh;
        }
        e = 0;
    }
    uint32_t mant = q >> 2;
    const uint32_t rb = (q >> 1) & 1, st = (q & 1) | sticky;
    if (rb && (st || (mant & 1))) {
        ++mant;
    }
    if (e == 0) {
        return sign | mant; /* a carry into bit 23 makes it the smallest normal */
    }
    return sign | (((uint32_t)e << 23) + mant - 0x800000u); /* a carry to 2^24 bumps e */
}

float __aeabi_fdiv(float a, float b);
float __aeabi_fdiv(float a, float b) {
    union { float f; uint32_t u; } x, y, z;
    x.f = a;
    y.f = b;
    z.u = et_fdiv_bits(x.u, y.u);
    return z.f;
}

/*
 * int64 -> float32, round to nearest even (as any conforming conversion). libgcc's Thumb-1
 * __aeabi_l2f goes through soft double arithmetic: 5 KB more machine code in the heap, and slow.
 */
static uint32_t et_l2f_bits(int64_t v) {
    if (v == 0) {
        return 0;
    }
    const uint32_t sign = v < 0 ? 0x80000000u : 0;
    const uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int p = 63;
    uint32_t hi = (uint32_t)(u >> 32);
    if (hi == 0) {
        p = 31;
        hi = (uint32_t)u;
    }
    while (!(hi & 0x80000000u)) {
        hi <<= 1;
        --p;
    }
    uint32_t mant;
    if (p <= 23) {
        mant = (uint32_t)u << (23 - p);
    } else {
        const int sh = p - 23;
        mant = (uint32_t)(u >> sh);
        const uint64_t rem = u & (((uint64_t)1 << sh) - 1), half = (uint64_t)1 << (sh - 1);
        if (rem > half || (rem == half && (mant & 1))) {
            ++mant;
        }
    }
    /* a carry to 2^24 moves into the exponent by the addition */
    return sign | (((uint32_t)(p + 127) << 23) + mant - 0x800000u);
}

float __aeabi_l2f(int64_t v);
float __aeabi_l2f(int64_t v) {
    union { float f; uint32_t u; } z;
    z.u = et_l2f_bits(v);
    return z.f;
}
#endif
