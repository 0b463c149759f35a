"""The refit statistics, quantized (docs/fleet-refit.md §7): what a board sends in the refit-first
recipe when bytes matter, about 2.7x fewer than the exact int32 upload (refit_stats.pack).

On the board (`quantize`; firmware/refit_quant.py is the same arithmetic in MicroPython, bit for
bit), from the exact integer statistics of u (refit_stats.client_stats / m.refit_stats):

1. Move them to v = u - m, where m is the server's public centre rounded to integers (sent with
   the query): G_v = G - S1 m^T - m S1^T + n m m^T, B_v[c] = B[c] - cnt[c] m. Integer arithmetic,
   exact. u is a ReLU output whose norm is mostly the mean all windows share; about m the values
   are smaller and the quantization keeps what tells the classes apart.
2. Every row (G_v's lower-triangle rows, then B_v's rows) gets its own exponent e, the smallest
   with |v| < 2^(bits-1+e) for every value of the row, and each value becomes
   q = (v + 2^(e-1)) >> e (round half up; arithmetic shift), saturated to `bits` signed bits.
3. Wire: cnt as C uint16, the K + C exponents as uint8, then the q values as `bits`-bit two's
   complement, packed least significant bit first, zero padding to a whole byte. S1 is not sent:
   it is the sum of B's rows.

On the server (`unpack`): q << e back to integers, then to u by the centre (the inverse of step 1,
exact). Adding the boards' dequantized statistics is exact integer addition as in the exact mode
(refit_stats.aggregate): the server's sum is the sum of what the boards sent, in any order. The
quantization error can leave the pooled centred scatter n G - S1 S1^T slightly indefinite, which
the refit's LDL^T cannot take: `project` clips its negative eigenvalues to 0 (only when there is
one) before the solve.
"""

from __future__ import annotations

import numpy as np

from . import refit_stats as rs

MIN_BITS, MAX_BITS = 4, 16
# A board's statistics are int32 (m.refit_stats) and the centre int16, with at most 65535
# windows: |G_v| < 2^31 + 2 * 2^31 * 2^15 + 2^16 * 2^30 < 2^48 and |B_v| < 2^31 + 2^16 * 2^15
# = 2^32. An upload claiming more is refused before any arithmetic that could overflow int64.
G_V_BITS, B_V_BITS = 48, 32
# Decoded back to u, a board's statistics are int32 plus the rounding; anything past 2^40 is not
# an upload (and the server's sums stay exact in int64 over up to 2^23 boards).
U_LIMIT = 1 << 40


def check_bits(bits) -> int:
    b = int(bits)
    if b != bits or not MIN_BITS <= b <= MAX_BITS:
        raise ValueError(f"bits={bits!r}: the quantized refit statistics take {MIN_BITS}..{MAX_BITS} bits per value")
    return b


def wire_bytes(K: int, C: int, bits: int) -> int:
    """Bytes one board sends: 2C (counts) + K + C (exponents) + the packed values."""
    vals = K * (K + 1) // 2 + C * K
    return 2 * C + K + C + (check_bits(bits) * vals + 7) // 8


def centre(trainer, xs) -> np.ndarray:
    """The integer centre m the server sends: refit_dp.public_centre over windows it holds itself,
    rounded to int16."""
    from .refit_dp import public_centre

    return np.clip(np.rint(public_centre(trainer, xs)), -32768, 32767).astype(np.int64)


def _centre(m, K: int) -> np.ndarray:
    m = np.asarray(m)
    if m.shape != (K,) or not np.issubdtype(m.dtype, np.integer) or m.min(initial=0) < -32768 \
            or m.max(initial=0) > 32767:
        raise ValueError(f"centre must be {K} int16 values (the classifier's input size), got {m.dtype} {m.shape}")
    return m.astype(np.int64)


def _rows(K: int, C: int) -> list[int]:
    return [r + 1 for r in range(K)] + [K] * C


def quantize(st: dict, m, bits: int) -> bytes:
    """One board's upload from its exact statistics st (refit_stats.client_stats' dict)."""
    bits = check_bits(bits)
    K = st["g"].shape[0]
    C = len(st["cnt"])
    m = _centre(m, K)
    cnt = np.asarray(st["cnt"], np.int64)
    if cnt.min(initial=0) < 0 or cnt.max(initial=0) > 65535:
        raise ValueError("class counts must be 0..65535 for the quantized upload")
    s1 = np.asarray(st["s1"], np.int64)
    n = int(cnt.sum())
    gv = np.asarray(st["g"], np.int64) - np.outer(s1, m) - np.outer(m, s1) + n * np.outer(m, m)
    bv = np.asarray(st["b"], np.int64) - np.outer(cnt, m)
    rows = [gv[r, :r + 1] for r in range(K)] + [bv[c] for c in range(C)]
    hi = 1 << (bits - 1)
    exps, qs = [], []
    for v in rows:
        mx = int(np.abs(v).max(initial=0))
        e = 0
        while (mx >> e) >= hi:
            e += 1
        q = v if e == 0 else (v + (1 << (e - 1))) >> e
        exps.append(e)
        qs.append(np.minimum(q, hi - 1))
    q = np.concatenate(qs) & ((1 << bits) - 1)
    return (cnt.astype("<u2").tobytes() + bytes(exps) + _pack_bits(q, bits))


def _pack_bits(q: np.ndarray, bits: int) -> bytes:
    """Values 0..2^bits-1, least significant bit first, zero-padded to a whole byte."""
    b = ((q[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(b, bitorder="little").tobytes()


def unpack(buf: bytes, K: int, C: int, bits: int, m) -> dict:
    """The statistics of u (refit_stats' dict, exact integers) from one board's upload; ValueError
    for a wrong size, non-zero padding, or values no board's int32 statistics can give (an
    exponent or a value out of range)."""
    bits = check_bits(bits)
    m = _centre(m, K)
    want = wire_bytes(K, C, bits)
    if len(buf) != want:
        raise ValueError(f"quantized refit upload has {len(buf)} bytes, expected {want} for K={K}, C={C}, "
                         f"bits={bits}")
    raw = np.frombuffer(buf, np.uint8)
    cnt = np.frombuffer(buf, "<u2", C).astype(np.int64)
    exps = raw[2 * C:2 * C + K + C].astype(np.int64)
    lim = np.r_[np.full(K, G_V_BITS), np.full(C, B_V_BITS)] - (bits - 1)  # |q| < 2^(bits-1)
    if np.any(exps > lim):
        i = int(np.argmax(exps > lim))
        raise ValueError(f"quantized refit upload: row {i} has exponent {int(exps[i])} > {int(lim[i])}, more than "
                         "a board's int32 statistics can need")
    vals = K * (K + 1) // 2 + C * K
    bitv = np.unpackbits(raw[2 * C + K + C:], bitorder="little")
    if bitv[vals * bits:].any():
        raise ValueError("quantized refit upload has non-zero padding bits")
    u = bitv[:vals * bits].reshape(vals, bits).astype(np.int64) @ (1 << np.arange(bits, dtype=np.int64))
    q = np.where(u >= 1 << (bits - 1), u - (1 << bits), u)
    row_e = np.repeat(exps, _rows(K, C))
    v = q << row_e
    T = K * (K + 1) // 2
    gv = np.zeros((K, K), np.int64)
    j, k = np.tril_indices(K)
    gv[j, k] = v[:T]
    gv[k, j] = v[:T]
    bv = v[T:].reshape(C, K)
    n = int(cnt.sum())
    s1v = bv.sum(0)  # |s1v| < C 2^32, so the products below stay far inside int64
    g = gv + np.outer(s1v, m) + np.outer(m, s1v) + n * np.outer(m, m)
    b = bv + np.outer(cnt, m)
    s1 = b.sum(0)
    if max(np.abs(g).max(initial=0), np.abs(b).max(initial=0), np.abs(s1).max(initial=0)) > U_LIMIT:
        raise ValueError("quantized refit upload decodes to statistics beyond 2^40: not what a board sends")
    return {"n": n, "cnt": cnt, "s1": s1, "g": g, "b": b}


def project(st: dict) -> tuple[dict, bool]:
    """Pooled statistics whose centred scatter n G - S1 S1^T has no negative eigenvalue: st itself
    if it has none, else with them clipped to 0 (refit_stats.psd_gram). Returns (st, projected)."""
    g, lowest = rs.psd_gram(int(st["n"]), st["g"], st["s1"])
    if lowest >= 0:
        return st, False
    return dict(st, g=g), True


def pooled(parts: list[dict]) -> tuple[dict, bool]:
    """The server's statistics: the exact sum of the boards' dequantized statistics
    (refit_stats.aggregate's checks), projected (`project`)."""
    return project(rs.aggregate(parts))
