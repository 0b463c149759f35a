"""What a board does to its update before anything leaves it (numpy twin of firmware/fleet.py).

`Compressor(D, clip, k, sigma, seed)` keeps the error-feedback memory e (float32, D values, zero at
start) and the PRNG state; `compress(u)` turns one real-unit update u (update.delta) into the
wire bytes. All float32, elementwise or sequential in index order (docs/fleet.md §3):

1. v = u + e
2. clip: n2 = ((v_0*v_0 + v_1*v_1) + ...) sequential; norm = et_sqrtf(n2) (refit's sqrt);
   if norm > C: f = C / norm, v = v * f
3. top-k: the k indices of the largest |v| (ties to the lower index), sent in ascending order
4. noise (sigma > 0): x_j = v_j + nz_j with nz_j = (sigma * C) * z_j, z_j from the PRNG, one
   per selected index in ascending order; else x_j = v_j
5. int8: m = max |x_j|; s = m / 127; q_j = round_sat(x_j / s, 127) (s = 0: all q = 0)
6. error feedback: e_i = v_i outside the selection; e_j = v_j - ((q_j * s) - nz_j) inside (the
   memory carries what sparsification and quantization dropped, never the noise)

PRNG: xorshift32 (x ^= x << 13; x ^= x >> 17; x ^= x << 5, 32-bit), state = seed (0 → 1).
z = (S - 393210) / 65536 with S the sum of the upper 16 bits of 12 draws: mean 0, variance
12 * (65536^2 - 1) / 12 / 65536^2 ≈ 1 (Irwin-Hall, |z| ≤ 6), exact in float32.

Wire format (little-endian): u8 version = 1, u8 flags (bit0 noised), u16 k, u32 D, f32 s,
then k u16 indices (ascending, < D ≤ 65535) and k int8 values: 12 + 3k bytes.
"""

from __future__ import annotations

import struct

import numpy as np

from ..twin.refit import et_sqrtf
from ..twin.qmath import round_sat

F32 = np.float32
VERSION = 1
HEAD = struct.Struct("<BBHIf")


def xorshift32(x: int) -> int:
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    return x


class Gauss:
    """The device's seeded approximately-Gaussian stream (module doc)."""

    def __init__(self, seed: int):
        self.x = (int(seed) & 0xFFFFFFFF) or 1

    def next(self) -> np.float32:
        s = 0
        x = self.x
        for _ in range(12):
            x = xorshift32(x)
            s += x >> 16
        self.x = x
        return F32(s - 393210) / F32(65536.0)


def check_params(d: int, clip: float, k: int, sigma: float) -> None:
    if not (isinstance(d, int) and 1 <= d <= 65535):
        raise ValueError(f"the update has {d} values; the wire format holds 1..65535")
    if not (isinstance(k, int) and 1 <= k <= d):
        raise ValueError(f"top-k k={k} must be an int in 1..{d} (the update's size)")
    if not (np.isfinite(clip) and clip > 0):
        raise ValueError(f"clip={clip} must be a positive finite number (an L2 norm in real units)")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma={sigma} must be a finite number >= 0 (noise std in units of clip)")


class Compressor:
    def __init__(self, d: int, clip: float, k: int, sigma: float = 0.0, seed: int = 1):
        check_params(d, clip, k, sigma)
        self.d, self.k = d, k
        self.clip, self.sigma = F32(clip), F32(sigma)
        self.e = np.zeros(d, F32)
        self.seed = int(seed)
        self.rng = Gauss(seed)

    def save(self) -> bytes:
        """The memory kept between rounds (PRNG state, error feedback), as firmware/fleet.py's."""
        return struct.pack("<I", self.rng.x) + self.e.astype("<f4").tobytes()

    def restore(self, b: bytes) -> None:
        if len(b) != 4 + 4 * self.d:
            raise ValueError(f"fleet memory of {len(b)} bytes, expected {4 + 4 * self.d}")
        self.rng.x = struct.unpack_from("<I", b, 0)[0] or 1
        self.e = np.frombuffer(b, "<f4", self.d, 4).astype(F32)

    def compress(self, u) -> bytes:
        u = np.asarray(u, F32).reshape(-1)
        if u.size != self.d:
            raise ValueError(f"the update has {u.size} values, the compressor {self.d}")
        if not np.all(np.isfinite(u)):
            raise ValueError("the update holds a NaN or an infinity")
        v = (u + self.e).astype(F32)
        n2 = np.add.accumulate((v * v).astype(F32), dtype=F32)[-1]
        if n2 > 0:
            norm = et_sqrtf(n2)
            if norm > self.clip:
                f = F32(self.clip / norm)
                v = (v * f).astype(F32)
        # top-k: sort by |v| descending, ties to the lower index (stable sort of -|v|)
        order = np.argsort(-np.abs(v), kind="stable")
        idx = np.sort(order[: self.k])
        x = v[idx].copy()
        nz = np.zeros(self.k, F32)
        if self.sigma > 0:
            sc = F32(self.sigma * self.clip)
            for j in range(self.k):
                nz[j] = F32(sc * self.rng.next())
            x = (x + nz).astype(F32)
        m = np.abs(x).max()
        s = F32(m / F32(127.0))
        if s > 0:
            q = round_sat((x / s).astype(F32), 127).astype(np.int8)
        else:
            q = np.zeros(self.k, np.int8)
        sent = (q.astype(F32) * s).astype(F32)
        e = v.copy()
        e[idx] = (v[idx] - (sent - nz).astype(F32)).astype(F32)
        self.e = e
        flags = 1 if self.sigma > 0 else 0
        return HEAD.pack(VERSION, flags, self.k, self.d, s) + idx.astype("<u2").tobytes() + q.tobytes()


def decode(buf: bytes, d: int | None = None) -> np.ndarray:
    """The server's dense float32 update from wire bytes (q_j * s at the indices, 0 elsewhere)."""
    buf = bytes(buf)
    if len(buf) < HEAD.size:
        raise ValueError(f"a fleet update is at least {HEAD.size} bytes, got {len(buf)}")
    ver, _flags, k, dd, s = HEAD.unpack_from(buf)
    if ver != VERSION:
        raise ValueError(f"fleet update version {ver}, this server reads {VERSION}")
    if d is not None and dd != d:
        raise ValueError(f"the update is for {dd} parameters, the global model has {d}")
    if len(buf) != HEAD.size + 3 * k:
        raise ValueError(f"a fleet update with k={k} is {HEAD.size + 3 * k} bytes, got {len(buf)}")
    idx = np.frombuffer(buf, "<u2", k, HEAD.size).astype(np.int64)
    q = np.frombuffer(buf, np.int8, k, HEAD.size + 2 * k)
    if k and (idx.max() >= dd or np.any(np.diff(idx) <= 0)):
        raise ValueError("fleet update indices must be ascending and below D")
    if not np.isfinite(s):
        raise ValueError("fleet update scale is not finite")
    out = np.zeros(dd, F32)
    out[idx] = (q.astype(F32) * F32(s)).astype(F32)
    return out


def dense_bytes(d: int) -> int:
    """Bytes of the same update sent dense as float32."""
    return 4 * d
