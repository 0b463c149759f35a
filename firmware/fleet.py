"""Fleet learning on the board: the update a board sends and how it takes the global one back.

Pure MicroPython (struct, array, binascii), works with the C module or the edgetune_py fallback:
it reads and writes the trained-weights bytes of `m.state()` / `m.load_state()`. Bit for bit the
numpy twin host/edgetune/fleet/update.py + compress.py (docs/fleet.md has the arithmetic):

    lay = Layout(segs, scales)          # from the host (update.layout(...).to_device())
    g = m.state()                       # the global state the server sent, loaded
    ... m.train(...) ...                # local training
    c = Compressor(lay.size, clip, k, sigma, seed)     # once per board: keeps e and the PRNG
    wire = c.compress(delta(lay, m.state(), g))        # clip, top-k + error feedback, int8, noise
    m.load_state(apply(lay, g, v))      # a global real-unit update v back into int8 + residuals

Floats: every float32 operation goes through a one-element array('f') store (as edgetune_py
does), so the unix port's double floats give the float32 bits.
"""

import struct
from array import array

try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover - ports without binascii.crc32
    _crc32 = None

_F = array("f", [0.0])
_LIM30 = 1 << 30
_HEAD = "<BBHIf"
_INV15 = 1.0 / 32768.0  # 2^-15 exactly (a decimal literal is not parsed exactly on every port)


def _f(v):
    _F[0] = v
    return _F[0]


def _round_sat(v, lim):
    if v != v:
        return 0
    if v >= lim:
        return lim
    if v <= -lim:
        return -lim
    _F[0] = v + 0.5 if v >= 0 else v - 0.5
    return int(_F[0])


def _sqrtf(x):
    """docs/training.md §10c sqrtf: bits seed, 4 Newton steps."""
    b = struct.unpack("<I", struct.pack("<f", x))[0]
    y = struct.unpack("<f", struct.pack("<I", (b >> 1) + 0x1FBD1DF5))[0]
    for _ in range(4):
        y = _f(0.5 * _f(y + _f(x / y)))
    return y


def _crc(buf):
    if _crc32 is not None:
        return _crc32(buf) & 0xFFFFFFFF
    c = 0xFFFFFFFF
    for b in buf:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0xEDB88320 & -(c & 1))
    return c ^ 0xFFFFFFFF


class Layout:
    """Segments [kind 'b'|'w', value offset, residual offset, channels, per channel, scale index]
    over the state bytes, and the per-channel float32 scales."""

    def __init__(self, segs, scales):
        self.segs = [tuple(s) for s in segs]
        self.scales = array("f", scales)
        self.size = 0
        for s in self.segs:
            if s[0] not in ("b", "w"):
                raise ValueError("layout segment kind must be 'b' or 'w'")
            self.size += s[3] * s[4]


def _params(lay, state):
    """(q list, r list) in layout order."""
    qs = []
    rs = []
    for kind, val, res, nch, per, _sc in lay.segs:
        n = nch * per
        qs.extend(struct.unpack_from(("<%di" if kind == "b" else "<%db") % n, state, val))
        rs.extend(struct.unpack_from("<%dh" % n, state, res))
    return qs, rs


def _scale_of(lay):
    """Per-parameter scales (float32 values) in layout order."""
    out = []
    sc = lay.scales
    for _kind, _val, _res, nch, per, s0 in lay.segs:
        for c in range(nch):
            v = sc[s0 + c]
            for _ in range(per):
                out.append(v)
    return out


def delta(lay, local, glob):
    """The real-unit update (array 'f') from state `glob` to state `local`."""
    ql, rl = _params(lay, local)
    qg, rg = _params(lay, glob)
    sc = _scale_of(lay)
    out = array("f", bytes(4 * len(ql)))
    for i in range(len(ql)):
        n = (ql[i] - qg[i]) * 32768 + (rl[i] - rg[i])
        u = _f(float(n))
        out[i] = _f(u * sc[i]) * _INV15
    return out


def apply(lay, state, v):
    """`state` (bytes) with the real-unit update v added; returns new bytes, CRC refreshed.
    ValueError (nothing returned) for a wrong length or a non-finite value."""
    if len(v) != lay.size:
        raise ValueError("the update has %d values, the layout %d: same model and scheme?" % (len(v), lay.size))
    for x in v:
        if x != x or x in (float("inf"), float("-inf")):
            raise ValueError("the update holds a NaN or an infinity")
    q, r = _params(lay, state)
    sc = _scale_of(lay)
    out = bytearray(state)
    i = 0
    for kind, val, res, nch, per, _s0 in lay.segs:
        for j in range(nch * per):
            a = _round_sat(_f(_f(v[i] / sc[i]) * 32768.0), _LIM30)
            t = a + r[i]
            n = (t + 16384) >> 15
            rr = t - (n << 15)
            w = q[i] + n
            if kind == "b":
                w = -0x80000000 if w < -0x80000000 else (0x7FFFFFFF if w > 0x7FFFFFFF else w)
                struct.pack_into("<i", out, val + 4 * j, w)
            else:
                w = -127 if w < -127 else (127 if w > 127 else w)
                struct.pack_into("<b", out, val + j, w)
            struct.pack_into("<h", out, res + 2 * j, rr)
            i += 1
    struct.pack_into("<I", out, 12, _crc(memoryview(out)[16:]))
    return bytes(out)


class Gauss:
    """xorshift32; z = (sum of the upper 16 bits of 12 draws - 393210) / 65536."""

    def __init__(self, seed):
        self.x = (int(seed) & 0xFFFFFFFF) or 1

    def next(self):
        x = self.x
        s = 0
        for _ in range(12):
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            s += x >> 16
        self.x = x
        return _f(float(s - 393210) / 65536.0)


class Compressor:
    """Clip, top-k with error feedback, optional noise, int8: the wire bytes of one update."""

    def __init__(self, d, clip, k, sigma=0.0, seed=1):
        if not (1 <= d <= 65535):
            raise ValueError("the update has %d values; the wire format holds 1..65535" % d)
        if not (isinstance(k, int) and 1 <= k <= d):
            raise ValueError("top-k k=%r must be an int in 1..%d" % (k, d))
        if not (clip > 0 and clip < float("inf")):
            raise ValueError("clip must be a positive finite number")
        if not (sigma >= 0 and sigma < float("inf")):
            raise ValueError("sigma must be a finite number >= 0")
        self.d = d
        self.k = k
        self.clip = _f(clip)
        self.sigma = _f(sigma)
        self.e = array("f", bytes(4 * d))
        self.rng = Gauss(seed)

    def save(self):
        """The memory to keep between rounds (error feedback + PRNG state) as bytes."""
        return struct.pack("<I", self.rng.x) + bytes(self.e)

    def restore(self, b):
        if len(b) != 4 + 4 * self.d:
            raise ValueError("fleet memory of %d bytes, expected %d" % (len(b), 4 + 4 * self.d))
        self.rng.x = struct.unpack_from("<I", b, 0)[0] or 1
        self.e = array("f", b[4:])

    def compress(self, u):
        d = self.d
        if len(u) != d:
            raise ValueError("the update has %d values, the compressor %d" % (len(u), d))
        e = self.e
        v = array("f", bytes(4 * d))
        n2 = 0.0
        for i in range(d):
            x = _f(u[i] + e[i])
            if x != x or x in (float("inf"), float("-inf")):
                raise ValueError("the update holds a NaN or an infinity")
            v[i] = x
            n2 = _f(n2 + _f(x * x))
        if n2 > 0:
            norm = _sqrtf(n2)
            if norm > self.clip:
                f = _f(self.clip / norm)
                for i in range(d):
                    v[i] = v[i] * f
        order = sorted(range(d), key=lambda i: -abs(v[i]))
        idx = sorted(order[: self.k])
        k = self.k
        x = array("f", [v[j] for j in idx])
        nz = array("f", bytes(4 * k))
        if self.sigma > 0:
            sc = _f(self.sigma * self.clip)
            for j in range(k):
                nz[j] = sc * self.rng.next()
                x[j] = x[j] + nz[j]
        m = 0.0
        for j in range(k):
            a = abs(x[j])
            if a > m:
                m = a
        s = _f(m / 127.0)
        q = bytearray(k)
        for j in range(k):
            qj = _round_sat(_f(x[j] / s), 127) if s > 0 else 0
            q[j] = qj & 0xFF
            sent = _f(qj * s)
            e[idx[j]] = v[idx[j]] - _f(sent - nz[j])
        sel = set(idx)
        for i in range(d):
            if i not in sel:
                e[i] = v[i]
        head = struct.pack(_HEAD, 1, 1 if self.sigma > 0 else 0, k, d, s)
        return head + struct.pack("<%dH" % k, *idx) + bytes(q)
