"""What edgetune_py and the parts it loads lazily (edgetune_py_batch, _frame, _refit) share:
the float32 emulation cell and its conversions, round_sat, the SGD commit, zero-filled arrays,
the op codes and integer limits, and the classifier's quantization parameters (a refit
installs them, a weights file restores them).

Its own module so that those parts import it and never edgetune_py itself: edgetune_py imports
them, and nothing imports edgetune_py back (no import cycle, nothing private shared). Plain
bytecode like the rest of the fallback (docs/training.md has the arithmetic).
"""

import struct
import sys
from array import array

MPY = sys.implementation.name != "cpython"  # MicroPython / CircuitPython

OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED = 1, 2, 3
OP_MAX_POOL_2D, OP_AVERAGE_POOL_2D, OP_MEAN = 4, 5, 6
I32_MIN = -0x80000000
I32_MAX = 0x7FFFFFFF
LIM30 = 1 << 30

F32 = array("f", [0.0])  # float32 rounding cell: F32[0] = v; v = F32[0]
ITEM_SIZE = {"b": 1, "h": 2, "H": 2, "i": 4, "f": 4}


def f32(v):
    F32[0] = v
    return F32[0]


def from_bits(b):
    return struct.unpack("<f", struct.pack("<I", b))[0]


def to_bits(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


FLT_MAX = from_bits(0x7F7FFFFF)


def round_sat(v, lim):
    """docs/training.md round_sat of a float32 value."""
    if v != v:
        return 0
    if v >= lim:
        return lim
    if v <= -lim:
        return -lim
    F = F32
    if v >= 0:
        F[0] = v + 0.5
    else:
        F[0] = v - 0.5
    return int(F[0])


def commit(d, beta, mom, res, j):
    """§4f-g for parameter j from its step d (2^-15 LSB): momentum (beta > 0), residual; returns n."""
    F = F32
    if beta > 0:
        F[0] = beta * mom[j]
        v = F[0]
        F[0] = float(d)
        F[0] = v + F[0]
        mom[j] = F[0]
        d = round_sat(F[0], LIM30)
    a = d + res[j]
    n = (a + 16384) >> 15
    res[j] = a - (n << 15)
    return n


def zeros(tc, n):
    """array(tc) of n zeros (0.0 for 'f'): no list of n items and, on MicroPython, one
    allocation (array() of a sized iterable allocates it at once; then zeroed): a temporary
    bytes object of the same size would leave a hole beside every long-lived array."""
    if not MPY:
        return array(tc, bytes(ITEM_SIZE[tc] * n))
    a = array(tc, range(n))
    for k in range(n):
        a[k] = 0
    return a


def to_float(v):
    """float(v) for numbers only, like the C module's mp_obj_get_float (float('0.1') would parse)."""
    if isinstance(v, (str, bytes)):
        raise TypeError("can't convert %s to float" % type(v).__name__)
    return float(v)


def install_qscale(L, qf, qi):
    """Install the classifier's scales and multipliers (docs/training.md §6.3, §9): qf = s_w (C)
    + s_b (C) float32, qi = multiplier (C) + shift (C). The flashed ones are kept in L.q0 for
    reset(); installing them again allocates nothing, the first refitted values make the arrays
    that later ones are written into."""
    C = L.oc
    q0 = getattr(L, "q0", None)
    if q0 is None:
        q0 = L.q0 = (L.s_w, L.s_b, L.s_wmax, L.r_c, L.rm, L.rl, L.rr)
    if L.s_w is q0[0]:  # still the flashed arrays (shared with the tensor table)
        for c in range(C):
            if L.s_w[c] != qf[c] or L.s_b[c] != qf[C + c] or L.rm[c] != qi[c] or L.rl[c] - L.rr[c] != qi[C + c]:
                break
        else:  # the flashed values (a file never refitted): nothing to allocate
            return
        L.s_w, L.s_b, L.r_c = zeros("f", C), zeros("f", C), zeros("f", C)
        L.rm, L.rl, L.rr = zeros("i", C), zeros("b", C), zeros("b", C)
    mx = 0.0
    for c in range(C):
        L.s_w[c] = qf[c]
        L.s_b[c] = qf[C + c]
        L.rm[c] = qi[c]
        v = qi[C + c]
        L.rl[c] = v if v > 0 else 0
        L.rr[c] = -v if v < 0 else 0
        if L.s_w[c] > mx:
            mx = L.s_w[c]
    L.s_wmax = mx
    for c in range(C):
        L.r_c[c] = L.s_w[c] / mx  # the store rounds to float32


def refit_scratch(L):
    """The C module's refit scratch without CV (docs/training.md §9 f): K(K+1)/2 int32 + as many
    float32, 3 K + 2 C K + 8 C words."""
    K, C = L.per, L.oc
    return 4 * (K * (K + 1) + 3 * K + 2 * C * K + 8 * C)
