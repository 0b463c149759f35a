"""Sensor-frame calibration for edgetune_py (docs/training.md §9): Model.calibrate / Model.frame
and the frame transform m.quantize applies. Loaded lazily, only when a frame is used.

The same float32 operation order as the C kernel native_modules/edgetune/kernels/et_frame_f32.c
and the numpy twin host/edgetune/twin/frame.py (which documents the recipe): every float operation is
rounded to float32 right after it (`f32`), int -> float32 conversions are rounded exactly
(`_i2f`), so results are bit-identical on the unix port, a single-precision port and the host.
"""

import struct

from edgetune_py_num import f32, from_bits, zeros

_ALPHA = 3.0
_BETA = 1.0
_GUARD = 0.5
_MIRROR = from_bits(0x3F4CCCCD)  # 0.8f
_FLUSH = from_bits(0x2B800000)  # 2^-40
_TOL = from_bits(0x3A83126F)  # 1e-3f
_ITERS = 16
_SQUARINGS = 24
_STAT = 15
_MAX_CLASS_SAMPLES = 1 << 19
_NONE = 0xFF
_TRI = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
_EYE = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
FRAME_BYTES = 44


def _i2f(v):
    """int -> float32, rounded to nearest even (as C's (float) of an int64)."""
    if -16777216 <= v <= 16777216:
        return float(v)
    a = -v if v < 0 else v
    e = 1
    while (a >> e) >= 16777216:  # int.bit_length is missing on MicroPython
        e += 1
    m = a >> e
    rem = a - (m << e)
    half = 1 << (e - 1)
    if rem > half or (rem == half and m & 1):
        m += 1
    f = float(m) * float(1 << e)
    return -f if v < 0 else f


def _mm(a, b):
    F = f32
    out = [0.0] * 9
    for i in range(3):
        for j in range(3):
            t = F(a[3 * i] * b[j])
            t = F(t + F(a[3 * i + 1] * b[3 + j]))
            out[3 * i + j] = F(t + F(a[3 * i + 2] * b[6 + j]))
    return out


def _tr(a):
    return [a[0], a[3], a[6], a[1], a[4], a[7], a[2], a[5], a[8]]


def _sym(v):
    m = [0.0] * 9
    for k in range(6):
        i, j = _TRI[k]
        m[3 * i + j] = v[k]
        m[3 * j + i] = v[k]
    return m


def _rdiag(r, d):
    if d < 0:
        r = list(r)
        r[2], r[5], r[8] = -r[2], -r[5], -r[8]
    return r


def _solve(h):
    """Proper rotation maximizing tr(R^T h) (Horn; et_frame_f32.c solve)."""
    F = f32
    sxx, sxy, sxz = h[0], h[3], h[6]
    syx, syy, syz = h[1], h[4], h[7]
    szx, szy, szz = h[2], h[5], h[8]
    a = [F(F(sxx + syy) + szz), F(syz - szy), F(szx - sxz), F(sxy - syx),
         F(syz - szy), F(F(sxx - syy) - szz), F(sxy + syx), F(szx + sxz),
         F(szx - sxz), F(sxy + syx), F(F(syy - sxx) - szz), F(syz + szy),
         F(sxy - syx), F(szx + sxz), F(syz + szy), F(F(szz - sxx) - syy)]
    c = 0.0
    for k in range(9):
        c = F(c + abs(h[k]))
    c = F(c + c)
    if not c > 0:
        return list(_EYE)
    for i in range(4):
        a[5 * i] = F(a[5 * i] + c)
    for _ in range(_SQUARINGS):
        b = [0.0] * 16
        mx = 0.0
        for i in range(4):
            r = 4 * i
            for j in range(4):
                t = F(a[r] * a[j])
                t = F(t + F(a[r + 1] * a[4 + j]))
                t = F(t + F(a[r + 2] * a[8 + j]))
                t = F(t + F(a[r + 3] * a[12 + j]))
                b[r + j] = t
                if abs(t) > mx:
                    mx = abs(t)
        if not mx > 0:
            return list(_EYE)
        for k in range(16):
            t = F(b[k] / mx)
            b[k] = 0.0 if abs(t) < _FLUSH else t
        a = b
    jm = 0
    for j in range(1, 4):
        if a[5 * j] > a[5 * jm]:
            jm = j
    w, x, y, z = a[jm], a[4 + jm], a[8 + jm], a[12 + jm]
    ww, xx, yy, zz = F(w * w), F(x * x), F(y * y), F(z * z)
    inv = F(1.0 / F(F(F(ww + xx) + yy) + zz))
    q = [F(F(F(ww + xx) - yy) - zz), F(2.0 * F(F(x * y) - F(w * z))), F(2.0 * F(F(x * z) + F(w * y))),
         F(2.0 * F(F(x * y) + F(w * z))), F(F(F(ww - xx) + yy) - zz), F(2.0 * F(F(y * z) - F(w * x))),
         F(2.0 * F(F(x * z) - F(w * y))), F(2.0 * F(F(y * z) + F(w * x))), F(F(F(ww - xx) - yy) + zz)]
    return [F(v * inv) for v in q]


def _sqdist(a, b):
    F = f32
    t = 0.0
    for k in range(9):
        d = F(a[k] - b[k])
        t = F(t + F(d * d))
    return t


def _group(ch, n, s, p, sc, zp):
    """Step 1 for one group: (mean, covariance) in raw units from the integer sums."""
    F = f32
    fn = float(n)  # n <= 2^19: exact
    mean = [F(F(F(_i2f(s[i]) / fn) - zp[ch[i]]) * sc[ch[i]]) for i in range(3)]
    cov = [0.0] * 9
    nn = F(fn * fn)
    for k in range(6):
        i, j = _TRI[k]
        t = F(_i2f(n * p[k] - s[i] * s[j]) / nn)
        t = F(t * F(sc[ch[i]] * sc[ch[j]]))
        cov[3 * i + j] = cov[3 * j + i] = t
    return mean, cov


def fit(acc, K, st, sc, zp, accel, gyro):
    """et_frame_fit: acc[k] = None or (n, s[6], p[12]); st: S*K*15 float32 values."""
    has_g = gyro is not None
    tgt = {}
    for k in range(K):
        if acc[k] is not None:
            n, s, p = acc[k]
            tm, tsa = _group(accel, n, s[0:3], p[0:6], sc, zp)
            tsg = _group(gyro, n, s[3:6], p[6:12], sc, zp)[1] if has_g else None
            tgt[k] = (tm, tsa, tsg)
    e0 = best = None
    b = 0
    for si in range(len(st) // (K * _STAT)):
        f = _fit_set(tgt, K, st[si * K * _STAT:(si + 1) * K * _STAT], has_g)
        if e0 is None or f[0] < e0:
            e0 = f[0]
        if best is None or f[2][f[3]] < best[2][best[3]]:
            best, b = f, si
    _, rc, ec, c = best
    if ec[c] <= f32(_GUARD * e0):
        r, improper, chosen = rc[c], c, 1 + c
    else:
        r, improper, chosen = list(_EYE), 0, 0
    return r, improper, chosen, e0, ec[0], ec[1], b


def _fit_set(tgt, K, st, has_g):
    """One statistics set (et_frame_f32.c fit_set): (e0, [R proper, R improper], [E, E], c)."""
    F = f32
    ks = sorted(tgt)
    mu, A, G = {}, {}, {}
    tm = {k: tgt[k][0] for k in ks}
    tsa = {k: tgt[k][1] for k in ks}
    tsg = {k: tgt[k][2] for k in ks}
    nm = na = ng = 0.0
    for k in ks:
        b = k * _STAT
        mu[k] = st[b:b + 3]
        A[k] = _sym(st[b + 3:b + 9])
        G[k] = _sym(st[b + 9:b + 15])
        for i in range(3):
            nm = F(nm + F(mu[k][i] * mu[k][i]))
        for i in range(9):
            na = F(na + F(A[k][i] * A[k][i]))
        for i in range(9):
            ng = F(ng + F(G[k][i] * G[k][i]))
    wm = F(1.0 / nm) if nm > 0 else 0.0
    wa = F(_ALPHA / na) if na > 0 else 0.0
    wg = F(_BETA / ng) if (ng > 0 and has_g) else 0.0
    wa2, wg2 = F(wa + wa), F(wg + wg)
    hm = [0.0] * 9
    for k in ks:
        for i in range(3):
            for j in range(3):
                hm[3 * i + j] = F(hm[3 * i + j] + F(tm[k][i] * mu[k][j]))
    hm = [F(v * wm) for v in hm]

    def energy(r):
        em = ea = eg = 0.0
        rt = _tr(r)
        for k in ks:
            for i in range(3):
                t = F(r[3 * i] * mu[k][0])
                t = F(t + F(r[3 * i + 1] * mu[k][1]))
                t = F(t + F(r[3 * i + 2] * mu[k][2]))
                d = F(tm[k][i] - t)
                em = F(em + F(d * d))
            ea = F(ea + _sqdist(tsa[k], _mm(_mm(r, A[k]), rt)))
            if has_g:
                eg = F(eg + _sqdist(tsg[k], _mm(_mm(r, G[k]), rt)))
        e = F(em * wm)
        e = F(e + F(ea * wa))
        return F(e + F(eg * wg))

    rc, ec = [], []
    for d in (1, -1):
        r = _rdiag(_solve(_rdiag(hm, d)), d)
        for _ in range(_ITERS):
            acc_a = [0.0] * 9
            acc_g = [0.0] * 9
            for k in ks:
                u = _mm(tsa[k], _mm(r, A[k]))
                acc_a = [F(acc_a[i] + u[i]) for i in range(9)]
                if has_g:
                    u = _mm(tsg[k], _mm(r, G[k]))
                    acc_g = [F(acc_g[i] + u[i]) for i in range(9)]
            h = [F(F(hm[i] + F(wa2 * acc_a[i])) + F(wg2 * acc_g[i])) for i in range(9)]
            r = _rdiag(_solve(_rdiag(h, d)), d)
        rc.append(r)
        ec.append(energy(r))
    e0 = energy(list(_EYE))
    return e0, rc, ec, 1 if ec[1] <= F(_MIRROR * ec[0]) else 0


def _group_arg(v, may_be_none):
    if v is None and may_be_none:
        return None
    if len(v) != 3:
        raise ValueError("edgetune: frame: a channel group has 3 channels")
    out = tuple(_seq_ints(v, 3))
    for c in out:
        if c < 0 or c >= _NONE:
            raise ValueError("edgetune: frame: channel index out of range")
    return out


def check(C, accel, gyro, improper=0, pad=0, r=_EYE):
    """As modedgetune.c frame_check (ValueError)."""
    ch = list(accel) + (list(gyro) if gyro is not None else [])
    ok = improper in (0, 1) and pad == 0
    for i in range(len(ch)):
        if not ok:
            break
        ok = ch[i] < C and ch[i] not in ch[:i]
    if not ok:
        raise ValueError("edgetune: frame: accel/gyro must be 3 distinct input channels each")
    for v in r:
        if v - v != 0.0:
            raise ValueError("edgetune: frame: R must be finite")
    rr = _mm(r, _tr(r))
    for k in range(9):
        d = f32(rr[k] - (1.0 if k % 4 == 0 else 0.0))
        if not (-_TOL <= d <= _TOL):
            raise ValueError("edgetune: frame: R must be orthogonal (R R^T = I within 1e-3)")


def _seq_ints(v, n):
    """int() of the n items of v, v looked at again after each (an __int__ may change it)."""
    out = []
    for i in range(n):
        if len(v) != n:
            raise ValueError("edgetune: a list argument changed length while its items were converted")
        out.append(int(v[i]))
    return out


def _floats(v, what):
    if isinstance(v, (bytes, bytearray, str)):
        raise TypeError("edgetune: %s must be a list/tuple of numbers or a float32 ('f') buffer" % what)
    n = len(v)
    out = []
    for i in range(n):  # v looked at again after each __float__ (which may change it)
        if len(v) != n:
            raise ValueError("edgetune: a list argument changed length while its items were converted")
        out.append(f32(v[i]))
    return out


def calibrate(m, xs, labels, stats, scale=None, zero_point=None, accel=(0, 1, 2), gyro=(3, 4, 5)):
    """Model.calibrate of edgetune_py (the C binding's checks, in its order)."""
    t = m._tensors[m._input]
    C = t.shape[3]
    K = m._n_out
    accel = _group_arg(accel, False)
    gyro = _group_arg(gyro, True)
    check(C, accel, gyro)
    fr = m._frame
    if fr is not None and (fr[0] != accel or fr[1] != gyro):
        raise ValueError("edgetune: calibrate: channel groups differ from the model's frame")
    n = len(xs)
    if n == 0 or n != len(labels):
        raise ValueError("edgetune: calibrate needs as many labels as windows (at least one)")
    xq = [m._x(x) for x in xs]
    lab = [m._label(k) for k in labels]
    st = _floats(stats, "stats")
    if not st or len(st) % (K * _STAT) or len(st) // (K * _STAT) > 4:
        raise ValueError("edgetune: calibrate: stats must be 1..4 sets of %d x 15 numbers" % K)
    for v in st:
        if v - v != 0.0:
            raise ValueError("edgetune: calibrate: stats must be finite")
    sc = m._quant_param(scale, "scale", C, t.scale)
    zp = m._quant_param(zero_point, "zero_point", C, t.zp)
    for c in range(C):
        s = sc[c]
        bad = not (s > 0.0) or s - s != 0.0
        if not bad:
            i = f32(1.0 / s)
            bad = i - i != 0.0
        if bad or zp[c] - zp[c] != 0.0:
            raise ValueError("edgetune: calibrate: scale/zero_point of channel %d must be finite (scale > 0)" % c)
    acc = [None] * K
    groups = (accel,) if gyro is None else (accel, gyro)
    for x, k in zip(xq, lab):
        a = acc[k]
        if a is None:
            a = acc[k] = [0, [0] * 6, [0] * 12]
        T = len(x) // C
        if a[0] + T > _MAX_CLASS_SAMPLES:
            raise ValueError("edgetune: calibrate: too many samples in one class")
        s, p = a[1], a[2]
        for tt in range(T):
            o = tt * C
            for g, ch in enumerate(groups):
                v0, v1, v2 = x[o + ch[0]], x[o + ch[1]], x[o + ch[2]]
                b = 3 * g
                s[b] += v0
                s[b + 1] += v1
                s[b + 2] += v2
                b = 6 * g
                p[b] += v0 * v0
                p[b + 1] += v0 * v1
                p[b + 2] += v0 * v2
                p[b + 3] += v1 * v1
                p[b + 4] += v1 * v2
                p[b + 5] += v2 * v2
        a[0] += T
    r, improper, chosen, e0, ep, ei, b = fit(acc, K, st, sc, zp, accel, gyro)
    d = {"R": tuple(r), "improper": bool(improper), "chosen": ("identity", "proper", "improper")[chosen],
         "set": b, "e_identity": e0, "e_proper": ep, "e_improper": ei}
    if chosen:
        if fr is not None:
            m._frame = (accel, gyro, fr[2] ^ improper, _mm(fr[3], r))
        else:
            m._frame = (accel, gyro, improper, list(r))
    return d


def frame(m, *args, **kw):
    """Model.frame(): get (None or a dict), frame(None) clears, frame(R, accel=, gyro=) sets."""
    if len(args) > 1 or any(k not in ("R", "accel", "gyro") for k in kw):
        raise TypeError("edgetune: frame(R=None, accel=(0, 1, 2), gyro=(3, 4, 5))")
    if args:
        kw["R"] = args[0]
    if "R" not in kw:
        fr = m._frame
        if fr is None:
            return None
        return {"R": tuple(fr[3]), "improper": bool(fr[2]), "accel": fr[0], "gyro": fr[1]}
    if kw["R"] is None:
        m._frame = None
        return None
    C = m._tensors[m._input].shape[3]
    accel = _group_arg(kw["accel"], False) if "accel" in kw else (0, 1, 2)
    gyro = _group_arg(kw["gyro"], True) if "gyro" in kw else (3, 4, 5)
    r = _floats(kw["R"], "R")
    if len(r) != 9:
        raise ValueError("edgetune: frame: R must have 9 numbers (row-major)")
    F = f32
    det = F(r[0] * F(F(r[4] * r[8]) - F(r[5] * r[7])))
    det = F(det - F(r[1] * F(F(r[3] * r[8]) - F(r[5] * r[6]))))
    det = F(det + F(r[2] * F(F(r[3] * r[7]) - F(r[4] * r[6]))))
    improper = 1 if det < 0 else 0
    check(C, accel, gyro, improper, 0, r)
    m._frame = (accel, gyro, improper, r)
    return None


def apply(fr, samples, C):
    """The samples (a multiple of C values) mapped by the frame, as an array('f') (et_frame_apply
    per sample; other channels only rounded to float32 by the store): 4 bytes a sample, not a
    list of float objects."""
    F = f32
    accel, gyro, improper, r = fr
    n = len(samples)
    out = zeros("f", n)
    for i in range(n):
        out[i] = samples[i]
    for o in range(0, len(out), C):
        for ch, neg in ((accel, False), (gyro, improper)):
            if ch is None:
                continue
            x0, x1, x2 = out[o + ch[0]], out[o + ch[1]], out[o + ch[2]]
            for i in range(3):
                t = F(r[i] * x0)
                t = F(t + F(r[3 + i] * x1))
                t = F(t + F(r[6 + i] * x2))
                out[o + ch[i]] = -t if neg else t
    return out


def trailer(fr):
    """The 44-byte weights-file trailer of a frame (docs/training.md §7)."""
    accel, gyro, improper, r = fr
    g = gyro if gyro is not None else (_NONE, _NONE, _NONE)
    return bytes(accel) + bytes(g) + bytes((improper, 0)) + struct.pack("<9f", *r)


def from_trailer(C, tail):
    """The frame of a trailer (ValueError if it is not valid for C input channels)."""
    accel = tuple(tail[0:3])
    gyro = tuple(tail[3:6])
    if gyro == (_NONE, _NONE, _NONE):
        gyro = None
    r = list(struct.unpack("<9f", bytes(tail[8:44])))
    check(C, accel, gyro, tail[6], tail[7], r)
    return (accel, gyro, tail[6], r)
