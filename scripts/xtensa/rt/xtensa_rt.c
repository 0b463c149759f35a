/*
 * The runtime helpers LLVM's Xtensa backend calls, for code built by scripts/xtensa/xtensawin-gcc:
 * Debian ships no libgcc for the windowed ABI, and a MicroPython native module links no
 * library anyway, so the module (and the qemu-xtensa board's firmware) carries its own.
 *
 *   __divsf3                    float division (the core's FPU has no div.s), IEEE 754 binary32,
 *                               round to nearest even, subnormals, inf and NaN: bit for bit the
 *                               host's division (tests/test_xtensa_rt.py checks it on x86-64).
 *   __muldi3                    64-bit product; called only without MUL32_HIGH (mulsh/muluh),
 *                               i.e. in the build for QEMU's de233_fpu core.
 *   __udivdi3 __divdi3 __umoddi3 __moddi3   64-bit division (et_rdiv, et_floor_div)
 *   __ashldi3 __lshrdi3 __ashrdi3           64-bit shifts
 *   __floatdisf                 int64 -> float, round to nearest even
 *
 * Plain C99 on 32-bit operations only (so that none of them calls itself); no variadic
 * function (LLVM 22 miscompiles those for Xtensa).
 */
#include <stdint.h>

typedef union {
    float f;
    uint32_t u;
} et_rt_fu;

typedef union {
    uint64_t u;
    int64_t i;
    struct {
        uint32_t lo, hi;  /* little-endian */
    } w;
} et_rt_dw;

float __divsf3(float a, float b);
int64_t __muldi3(int64_t a, int64_t b);
uint64_t __udivdi3(uint64_t a, uint64_t b);
int64_t __divdi3(int64_t a, int64_t b);
uint64_t __umoddi3(uint64_t a, uint64_t b);
int64_t __moddi3(int64_t a, int64_t b);
uint64_t __ashldi3(uint64_t a, int n);
uint64_t __lshrdi3(uint64_t a, int n);
int64_t __ashrdi3(int64_t a, int n);
float __floatdisf(int64_t a);

static float et_rt_from_bits(uint32_t u) {
    et_rt_fu v;
    v.u = u;
    return v.f;
}

float __divsf3(float a, float b) {
    et_rt_fu va, vb;
    va.f = a;
    vb.f = b;
    uint32_t ua = va.u, ub = vb.u;
    uint32_t sign = (ua ^ ub) & 0x80000000u;
    int ea = (int)((ua >> 23) & 0xffu), eb = (int)((ub >> 23) & 0xffu);
    uint32_t ma = ua & 0x7fffffu, mb = ub & 0x7fffffu;

    if (ea == 255) {
        if (ma != 0) {
            return et_rt_from_bits(ua | 0x400000u);  /* NaN / x: a's NaN, quieted */
        }
        if (eb == 255) {
            return et_rt_from_bits(mb != 0 ? (ub | 0x400000u) : 0xffc00000u);  /* inf / inf */
        }
        return et_rt_from_bits(sign | 0x7f800000u);
    }
    if (eb == 255) {
        return et_rt_from_bits(mb != 0 ? (ub | 0x400000u) : sign);  /* x / NaN, x / inf */
    }
    if (eb == 0 && mb == 0) {
        return et_rt_from_bits(ea == 0 && ma == 0 ? 0xffc00000u : (sign | 0x7f800000u));
    }
    if (ea == 0 && ma == 0) {
        return et_rt_from_bits(sign);
    }
    /* Normalize both significands to [2^23, 2^24). */
    if (ea == 0) {
        ea = 1;
        while ((ma & 0x800000u) == 0) {
            ma <<= 1;
            ea--;
        }
    } else {
        ma |= 0x800000u;
    }
    if (eb == 0) {
        eb = 1;
        while ((mb & 0x800000u) == 0) {
            mb <<= 1;
            eb--;
        }
    } else {
        mb |= 0x800000u;
    }
    int e = ea - eb + 127;
    if (ma < mb) {
        ma <<= 1;
        e--;
    }
    /* Long division: 26 quotient bits (24 + round + one more), the remainder is the sticky. */
    uint32_t q = 0, r = ma;
    for (int i = 0; i < 26; i++) {
        q <<= 1;
        if (r >= mb) {
            r -= mb;
            q |= 1u;
        }
        r <<= 1;
    }
    uint32_t sticky = r != 0;
    if (e >= 255) {
        return et_rt_from_bits(sign | 0x7f800000u);
    }
    if (e <= 0) {  /* subnormal result: shift right, keeping what falls off as sticky */
        int sh = 1 - e;
        if (sh >= 26) {
            sticky |= q != 0;
            q = 0;
        } else {
            sticky |= (q & ((1u << sh) - 1u)) != 0;
            q >>= sh;
        }
        e = 0;
    }
    uint32_t mant = q >> 2;
    uint32_t round = (q >> 1) & 1u;
    sticky |= q & 1u;
    if (round && (sticky || (mant & 1u))) {
        mant++;
    }
    uint32_t bits = e == 0 ? mant : ((uint32_t)(e - 1) << 23) + mant;
    if (bits >= 0x7f800000u) {
        bits = 0x7f800000u;
    }
    return et_rt_from_bits(sign | bits);
}

/* 32 x 32 -> 64 unsigned from 16-bit halves (mull only). */
static void et_rt_umul32(uint32_t a, uint32_t b, uint32_t *lo, uint32_t *hi) {
    uint32_t a0 = a & 0xffffu, a1 = a >> 16, b0 = b & 0xffffu, b1 = b >> 16;
    uint32_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint32_t mid = (p00 >> 16) + (p01 & 0xffffu) + (p10 & 0xffffu);
    *lo = (p00 & 0xffffu) | (mid << 16);
    *hi = p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16);
}

int64_t __muldi3(int64_t a, int64_t b) {
    et_rt_dw x, y, r;
    x.i = a;
    y.i = b;
    et_rt_umul32(x.w.lo, y.w.lo, &r.w.lo, &r.w.hi);
    r.w.hi += x.w.lo * y.w.hi + x.w.hi * y.w.lo;
    return r.i;
}

uint64_t __ashldi3(uint64_t a, int n) {
    et_rt_dw x;
    x.u = a;
    n &= 63;
    if (n >= 32) {
        x.w.hi = x.w.lo << (n - 32);
        x.w.lo = 0;
    } else if (n > 0) {
        x.w.hi = (x.w.hi << n) | (x.w.lo >> (32 - n));
        x.w.lo <<= n;
    }
    return x.u;
}

uint64_t __lshrdi3(uint64_t a, int n) {
    et_rt_dw x;
    x.u = a;
    n &= 63;
    if (n >= 32) {
        x.w.lo = x.w.hi >> (n - 32);
        x.w.hi = 0;
    } else if (n > 0) {
        x.w.lo = (x.w.lo >> n) | (x.w.hi << (32 - n));
        x.w.hi >>= n;
    }
    return x.u;
}

int64_t __ashrdi3(int64_t a, int n) {
    et_rt_dw x;
    x.i = a;
    uint32_t fill = (x.w.hi & 0x80000000u) ? 0xffffffffu : 0u;
    n &= 63;
    if (n >= 32) {
        x.w.lo = n == 32 ? x.w.hi : ((x.w.hi >> (n - 32)) | (fill << (64 - n)));
        x.w.hi = fill;
    } else if (n > 0) {
        x.w.lo = (x.w.lo >> n) | (x.w.hi << (32 - n));
        x.w.hi = (x.w.hi >> n) | (fill << (32 - n));
    }
    return x.i;
}

/* Unsigned 64-bit division with remainder: shift-subtract, on 32-bit words. */
static void et_rt_udivmod(uint64_t n, uint64_t d, uint64_t *qo, uint64_t *ro) {
    et_rt_dw num, den, q, r;
    num.u = n;
    den.u = d;
    q.u = 0;
    r.u = 0;
    if (den.w.hi == 0 && num.w.hi == 0) {
        if (den.w.lo != 0) {
            q.w.lo = num.w.lo / den.w.lo;
            r.w.lo = num.w.lo - q.w.lo * den.w.lo;
        }
        *qo = q.u;
        *ro = r.u;
        return;
    }
    for (int i = 63; i >= 0; i--) {
        /* r = (r << 1) | bit i of num */
        r.w.hi = (r.w.hi << 1) | (r.w.lo >> 31);
        r.w.lo = (r.w.lo << 1) | ((i >= 32 ? num.w.hi >> (i - 32) : num.w.lo >> i) & 1u);
        /* if r >= den: r -= den, set bit i of q */
        if (r.w.hi > den.w.hi || (r.w.hi == den.w.hi && r.w.lo >= den.w.lo)) {
            uint32_t borrow = r.w.lo < den.w.lo;
            r.w.lo -= den.w.lo;
            r.w.hi -= den.w.hi + borrow;
            if (i >= 32) {
                q.w.hi |= 1u << (i - 32);
            } else {
                q.w.lo |= 1u << i;
            }
        }
    }
    *qo = q.u;
    *ro = r.u;
}

static uint64_t et_rt_neg(uint64_t v) {
    et_rt_dw x;
    x.u = v;
    x.w.lo = ~x.w.lo;
    x.w.hi = ~x.w.hi;
    x.w.lo += 1u;
    if (x.w.lo == 0) {
        x.w.hi += 1u;
    }
    return x.u;
}

static int et_rt_isneg(int64_t v) {
    et_rt_dw x;
    x.i = v;
    return (x.w.hi & 0x80000000u) != 0;
}

uint64_t __udivdi3(uint64_t a, uint64_t b) {
    uint64_t q, r;
    et_rt_udivmod(a, b, &q, &r);
    return q;
}

uint64_t __umoddi3(uint64_t a, uint64_t b) {
    uint64_t q, r;
    et_rt_udivmod(a, b, &q, &r);
    return r;
}

int64_t __divdi3(int64_t a, int64_t b) {
    int na = et_rt_isneg(a), nb = et_rt_isneg(b);
    uint64_t q, r;
    et_rt_udivmod(na ? et_rt_neg((uint64_t)a) : (uint64_t)a, nb ? et_rt_neg((uint64_t)b) : (uint64_t)b, &q, &r);
    return (int64_t)(na != nb ? et_rt_neg(q) : q);
}

int64_t __moddi3(int64_t a, int64_t b) {
    int na = et_rt_isneg(a), nb = et_rt_isneg(b);
    uint64_t q, r;
    et_rt_udivmod(na ? et_rt_neg((uint64_t)a) : (uint64_t)a, nb ? et_rt_neg((uint64_t)b) : (uint64_t)b, &q, &r);
    return (int64_t)(na ? et_rt_neg(r) : r);
}

float __floatdisf(int64_t a) {
    et_rt_dw x;
    x.i = a;
    uint32_t sign = x.w.hi & 0x80000000u;
    if (sign) {
        x.u = et_rt_neg(x.u);  /* |a| (INT64_MIN stays 2^63, read as unsigned) */
    }
    if (x.w.hi == 0 && x.w.lo == 0) {
        return et_rt_from_bits(0);
    }
    /* Normalise so that bit 63 is set; e = the unbiased exponent. */
    int e = 63;
    while ((x.w.hi & 0x80000000u) == 0) {
        x.w.hi = (x.w.hi << 1) | (x.w.lo >> 31);
        x.w.lo <<= 1;
        e--;
    }
    /* 24 significant bits in hi >> 8, round bit 7, sticky the rest. */
    uint32_t mant = x.w.hi >> 8;
    uint32_t round = (x.w.hi >> 7) & 1u;
    uint32_t sticky = (x.w.hi & 0x7fu) != 0 || x.w.lo != 0;
    if (round && (sticky || (mant & 1u))) {
        mant++;  /* may carry to 2^24: the exponent field absorbs it below */
    }
    return et_rt_from_bits(sign | (((uint32_t)(e + 127 - 1) << 23) + mant));
}
