"""Sensor-frame calibration: the numpy twin of `m.calibrate(...)` (docs/training.md §9).

A board mounted in another orientation (or worn on the other arm) sees every physical vector v
as `R @ v` (R orthogonal: a rotation, or a reflection for the other arm). Given per-class
source statistics exported with the model (accelerometer means, accelerometer and gyroscope
covariances, raw units, from the training split: `source_stats`) and a few labelled int8
windows recorded on the device, `fit_frame` finds the R that best explains the windows'
per-class statistics (orthogonal Procrustes with covariance terms), proper and improper, and
keeps the identity unless the fitted frame explains the statistics clearly better. The device
then maps the accelerometer by R^T and the gyroscope (an axial vector) by det(R) R^T before
quantizing (`apply_frame`), so the model sees the source frame again.

Bit-exact with the C kernel native_modules/edgetune/kernels/et_frame_f32.c and the pure-Python
firmware/edgetune_py_frame.py (tests/unix/test_frame.py). Every float operation below is one
float32 operation in the written order, no fused multiply-add (3x3 products: t = a0*b0;
t = t + a1*b1; t = t + a2*b2). The recipe:

1. Target statistics per class k with n_k > 0 samples (n_k = windows * T), from the int8 values
   q of each group's 3 channels, with integer sums (exact): S_c = sum q_c, P_cd = sum q_c q_d;
   mean_c = ((float)S_c / (float)n - zp_c) * scale_c;
   cov_cd = ((float)(n P_cd - S_c S_d) / ((float)n * (float)n)) * (scale_c * scale_d).
2. Normalizers over the classes present (ascending k, entries in row-major order):
   Nm = sum |mu_k|^2, Na = sum ||A_k||_F^2, Ng = sum ||G_k||_F^2 (source statistics);
   wm = 1/Nm, wa = ALPHA/Na, wg = BETA/Ng (0 where a normalizer is 0 or the group is absent).
3. Hm = wm * sum_k m_k mu_k^T. For d in (+1, -1), D = diag(1, 1, d):
   R = solve(Hm D) D, then ITERS times: H = Hm + (2 wa) sum_k Sa_k R A_k + (2 wg) sum_k Sg_k R G_k,
   R = solve(H D) D (a monotone ascent of the fit: the covariance term is convex in R).
   solve(H) = the proper rotation maximizing tr(R^T H) by Horn's quaternion method: the
   dominant eigenvector of the 4x4 symmetric N(H) by SQUARINGS squarings of N + c I
   (c = 2 sum |H_ij|, so N + c I is positive semi-definite), each normalized by its largest
   |entry| with entries below 2^-40 flushed to 0; q = the column with the largest diagonal;
   R = rotation of the unnormalized q divided by q.q. No square root, no libm.
4. Residual E(R) = wm sum |m - R mu|^2 + wa sum ||Sa - R A R^T||^2 + wg sum ||Sg - R G R^T||^2.
   The set's candidate = the improper one if E_improper <= MIRROR * E_proper, else the proper
   one (a mounting is a rotation; the other arm is a reflection that must explain the
   statistics clearly better).
5. Steps 2-4 run for every statistics set (pooled, then each arm: `stats_sets`); the candidate
   with the smallest E wins (strictly smaller replaces, so ties keep the earlier set); it is
   chosen if E <= GUARD * (the smallest E(identity) over the sets), else the identity is kept.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

F32 = np.float32
ALPHA = F32(3.0)  # weight of the accelerometer covariance term (relative to the means)
BETA = F32(1.0)  # weight of the gyroscope covariance term (chosen on fit-val, docs/data.md §9)
ITERS = 16  # Kabsch iterations with the covariance terms
SQUARINGS = 24  # squarings of the shifted Horn matrix (its 2^24-th power)
GUARD = F32(0.5)  # the fitted frame must halve the identity's residual
MIRROR = F32(0.8)  # a reflection must beat the best rotation by 20 % (mountings are rotations)
FLUSH = F32(2.0 ** -40)  # no subnormals inside the eigen-solve
MAX_SETS = 4  # statistics sets (pooled, per arm, ...)
STAT_FLOATS = 15  # per class: mu(3), A (xx xy xz yy yz zz), G (same)
MAX_CLASS_SAMPLES = 1 << 19  # integer sums stay exact: |S| <= 2^26, |n P - S S| <= 2^53
_TRI = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


# ----------------------------------------------------------------------------- host: export side


def source_stats(x: np.ndarray, y: np.ndarray, n_classes: int, accel: Sequence[int] = (0, 1, 2),
                 gyro: Sequence[int] | None = (3, 4, 5)) -> list[list[float]]:
    """Per-class source statistics (raw units, float64 then rounded to float32) of windows
    x (N, T, C) with labels y: [mu x y z, A xx xy xz yy yz zz, G xx xy xz yy yz zz] per class
    (G zeros without a gyroscope group). Covariances are of all samples of the class's windows
    around the class mean (biased, 1/n)."""
    out = []
    for k in range(n_classes):
        v = np.asarray(x)[np.asarray(y) == k].reshape(-1, np.asarray(x).shape[-1]).astype(np.float64)
        if len(v) == 0:
            raise ValueError(f"class {k} has no source windows")
        a = v[:, list(accel)]
        mu = a.mean(0)
        ca = (a - mu).T @ (a - mu) / len(a)
        if gyro is not None:
            g = v[:, list(gyro)]
            cg = (g - g.mean(0)).T @ (g - g.mean(0)) / len(g)
        else:
            cg = np.zeros((3, 3))
        row = list(mu) + [ca[i, j] for i, j in _TRI] + [cg[i, j] for i, j in _TRI]
        out.append([float(f"{float(F32(v_)):.9g}") for v_ in row])  # 9 digits: the float32 back
    return out


def frame_metadata(sc) -> dict[str, Any]:
    """The .etm metadata entries of the frame calibration (6-channel IMU layout) for a
    data.Scenario: the channel groups, `frame_stats` (the whole training split) and, when the
    training split holds both arms of the watch data, `frame_stats_sides` (arm 0, arm 1: a
    user wears the board on one arm, and one arm's windows fit its own arm's statistics better
    than both arms pooled; the device tries every set, docs/training.md §9)."""
    from ..learn import data

    n = len(sc.class_names)
    meta: dict[str, Any] = {"channel_groups": {"accel": [0, 1, 2], "gyro": [3, 4, 5]},
                            "frame_stats": source_stats(sc.train.x, sc.train.y, n)}
    subjects = sc.info.get("train_subjects")
    if subjects and sc.info.get("scenario") != "side" and sc.class_names == data.WATCH_CLASSES:
        ds = data.load_watch()
        sides = []
        for side in (0, 1):
            w = data.make_windows(ds.select(subjects, (side,)), sc.window, sc.step)
            if len(set(w.y.tolist())) < n:
                return meta
            sides.append(source_stats(w.x, w.y, n))
        meta["frame_stats_sides"] = sides
    return meta


def stats_sets(meta: dict[str, Any]) -> list[list[list[float]]]:
    """The statistics sets the device tries, from .etm metadata: frame_stats, then each of
    frame_stats_sides (what app.calibrate passes, flattened)."""
    return [meta["frame_stats"]] + list(meta.get("frame_stats_sides") or [])


# ----------------------------------------------------------------------------- float32 helpers


def _mm(a, b):
    """3x3 product, t = a[i][0]*b[0][j]; t = t + a[i][1]*b[1][j]; t = t + a[i][2]*b[2][j]."""
    out = [[F32(0)] * 3 for _ in range(3)]
    for i in range(3):
        for j in range(3):
            t = a[i][0] * b[0][j]
            t = t + a[i][1] * b[1][j]
            t = t + a[i][2] * b[2][j]
            out[i][j] = t
    return out


def _tr(a):
    return [[a[j][i] for j in range(3)] for i in range(3)]


def _sym(v):
    """3x3 symmetric matrix from the 6 upper-triangle values xx xy xz yy yz zz."""
    m = [[F32(0)] * 3 for _ in range(3)]
    for (i, j), t in zip(_TRI, v):
        m[i][j] = t
        m[j][i] = t
    return m


def _eye():
    return [[F32(1) if i == j else F32(0) for j in range(3)] for i in range(3)]


def _rdiag(r, d):
    """r @ diag(1, 1, d): the last column negated when d < 0 (exact)."""
    return [[r[i][0], r[i][1], -r[i][2] if d < 0 else r[i][2]] for i in range(3)]


def _solve(h):
    """Proper rotation maximizing tr(R^T h) (Horn's quaternion method, see the module doc)."""
    s = _tr(h)  # Horn's S_ij = sum src_i tgt_j = h[j][i]
    sxx, sxy, sxz = s[0]
    syx, syy, syz = s[1]
    szx, szy, szz = s[2]
    n = [
        [(sxx + syy) + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, (sxx - syy) - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, (syy - sxx) - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, (szz - sxx) - syy],
    ]
    c = F32(0)
    for i in range(3):
        for j in range(3):
            c = c + abs(h[i][j])
    c = c + c
    if not c > 0:
        return _eye()
    for i in range(4):
        n[i][i] = n[i][i] + c
    a = n
    for _ in range(SQUARINGS):
        b = [[F32(0)] * 4 for _ in range(4)]
        mx = F32(0)
        for i in range(4):
            for j in range(4):
                t = a[i][0] * a[0][j]
                t = t + a[i][1] * a[1][j]
                t = t + a[i][2] * a[2][j]
                t = t + a[i][3] * a[3][j]
                b[i][j] = t
                if abs(t) > mx:
                    mx = abs(t)
        if not mx > 0:
            return _eye()
        for i in range(4):
            for j in range(4):
                t = b[i][j] / mx
                b[i][j] = F32(0) if abs(t) < FLUSH else t
        a = b
    jmax = 0
    for j in range(1, 4):
        if a[j][j] > a[jmax][jmax]:
            jmax = j
    w, x, y, z = (a[i][jmax] for i in range(4))
    ww, xx, yy, zz = w * w, x * x, y * y, z * z
    nn = ((ww + xx) + yy) + zz
    inv = F32(1) / nn
    two = F32(2)
    r = [
        [((ww + xx) - yy) - zz, two * (x * y - w * z), two * (x * z + w * y)],
        [two * (x * y + w * z), ((ww - xx) + yy) - zz, two * (y * z - w * x)],
        [two * (x * z - w * y), two * (y * z + w * x), ((ww - xx) - yy) + zz],
    ]
    return [[r[i][j] * inv for j in range(3)] for i in range(3)]


def _sqdist(a, b):
    t = F32(0)
    for i in range(3):
        for j in range(3):
            d = a[i][j] - b[i][j]
            t = t + d * d
    return t


# ----------------------------------------------------------------------------- device side (twin)


def target_stats(xs: np.ndarray, labels: Sequence[int], n_classes: int, scale, zero_point,
                 accel: Sequence[int], gyro: Sequence[int] | None):
    """Per class: None (no windows) or (m (3,), Sa 3x3, Sg 3x3 or None) in float32 (step 1)."""
    sc = np.asarray(scale, np.float64).astype(F32)
    zp = np.asarray(zero_point, np.float64).astype(F32)
    C = len(sc)
    q = np.asarray(xs, np.int8).reshape(len(labels), -1, C).astype(np.int64)
    lab = np.asarray(labels, np.int64)
    out = []
    for k in range(n_classes):
        v = q[lab == k].reshape(-1, C)
        n = len(v)
        if n == 0:
            out.append(None)
            continue
        if n > MAX_CLASS_SAMPLES:
            raise ValueError(f"class {k} has more than {MAX_CLASS_SAMPLES} samples")

        def group(ch):
            s = [int(v[:, c].sum()) for c in ch]
            m = [(F32(s[i]) / F32(n) - zp[c]) * sc[c] for i, c in enumerate(ch)]
            cov = [[F32(0)] * 3 for _ in range(3)]
            for i, j in _TRI:
                p = int((v[:, ch[i]] * v[:, ch[j]]).sum())
                num = n * p - s[i] * s[j]
                t = F32(num) / (F32(n) * F32(n))
                t = t * (sc[ch[i]] * sc[ch[j]])
                cov[i][j] = cov[j][i] = t
            return m, cov

        m, sa = group(list(accel))
        sg = group(list(gyro))[1] if gyro is not None else None
        out.append((m, sa, sg))
    return out


def check_args(n_windows: int, window_len: int, labels, n_classes: int, stats, scale, zero_point,
               accel, gyro) -> None:
    """ValueError for anything calibrate refuses (the same checks as the C binding)."""
    C = len(scale)
    if C < 3 or len(zero_point) != C:
        raise ValueError("scale/zero_point must have the input's channel count (>= 3)")
    if n_windows == 0 or len(labels) != n_windows:
        raise ValueError("need one label per window and at least one window")
    if window_len % C:
        raise ValueError("window length is not a multiple of the channel count")
    for k in labels:
        if not 0 <= int(k) < n_classes:
            raise ValueError(f"label {k} out of range")
    chans = list(accel) + (list(gyro) if gyro is not None else [])
    if len(accel) != 3 or (gyro is not None and len(gyro) != 3) or len(set(chans)) != len(chans) \
            or any(not 0 <= c < C for c in chans):
        raise ValueError("accel/gyro must be 3 distinct channel indices each, inside the input")
    st = np.asarray(stats, np.float64).astype(F32).reshape(-1)
    per = n_classes * STAT_FLOATS
    if st.size == 0 or st.size % per or st.size // per > MAX_SETS or not np.all(np.isfinite(st)):
        raise ValueError(f"stats must be 1..{MAX_SETS} sets of {n_classes} x {STAT_FLOATS} finite numbers")
    sc = np.asarray(scale, np.float64).astype(F32)
    zp = np.asarray(zero_point, np.float64).astype(F32)
    if not (np.all(sc > 0) and np.all(np.isfinite(sc)) and np.all(np.isfinite(zp))):
        raise ValueError("scale must be positive and finite, zero_point finite")


def fit_frame(xs, labels, n_classes: int, stats, scale, zero_point, accel: Sequence[int] = (0, 1, 2),
              gyro: Sequence[int] | None = (3, 4, 5)) -> dict[str, Any]:
    """The frame fit of the module doc. xs: (N, T*C) int8 windows (quantized with scale /
    zero_point, the folded raw-input quantization, in the frame they were recorded in);
    labels: N class indices; stats: S sets of n_classes x 15 source statistics (S >= 1, e.g.
    both arms pooled, then each arm). Returns {"R": 3x3 float32 list (the chosen transform:
    windows ~ R @ source), "improper": bool, "chosen": "identity" | "proper" | "improper",
    "set": the statistics set of the candidate, "e_identity" (the smallest over the sets),
    "e_proper", "e_improper" (of that set)}."""
    xs = np.asarray(xs)
    xs = xs.reshape(len(xs), -1) if xs.ndim > 1 else xs.reshape(1, -1)
    check_args(len(xs), xs.shape[1], labels, n_classes, stats, scale, zero_point, accel, gyro)
    sts = np.asarray(stats, np.float64).astype(F32).reshape(-1, n_classes, STAT_FLOATS)
    tgt = target_stats(xs, labels, n_classes, scale, zero_point, accel, gyro)
    fits = [_fit_set(tgt, st, n_classes, gyro) for st in sts]
    e0 = fits[0][0]
    for f in fits[1:]:
        if f[0] < e0:
            e0 = f[0]
    b = 0
    for i in range(1, len(fits)):
        if fits[i][3] < fits[b][3]:
            b = i
    _, res, d, e = fits[b]
    r = res[d][0]
    if e <= GUARD * e0:
        chosen = "proper" if d > 0 else "improper"
    else:
        r, d, chosen = _eye(), 1, "identity"
    return {"R": [[float(v) for v in row] for row in r], "improper": d < 0, "chosen": chosen, "set": b,
            "e_identity": float(e0), "e_proper": float(res[1][1]), "e_improper": float(res[-1][1])}


def _fit_set(tgt, st, n_classes, gyro):
    """Steps 2-4 against one statistics set: (E(identity), {d: (R, E)}, d of the candidate, its E)."""
    ks = [k for k in range(n_classes) if tgt[k] is not None]
    mu = {k: list(st[k, 0:3]) for k in ks}
    A = {k: _sym(st[k, 3:9]) for k in ks}
    G = {k: _sym(st[k, 9:15]) for k in ks}
    nm = na = ng = F32(0)
    for k in ks:
        for i in range(3):
            nm = nm + mu[k][i] * mu[k][i]
        for i in range(3):
            for j in range(3):
                na = na + A[k][i][j] * A[k][i][j]
        for i in range(3):
            for j in range(3):
                ng = ng + G[k][i][j] * G[k][i][j]
    wm = F32(1) / nm if nm > 0 else F32(0)
    wa = ALPHA / na if na > 0 else F32(0)
    wg = BETA / ng if (ng > 0 and gyro is not None) else F32(0)
    wa2, wg2 = wa + wa, wg + wg
    hm = [[F32(0)] * 3 for _ in range(3)]
    for k in ks:
        m = tgt[k][0]
        for i in range(3):
            for j in range(3):
                hm[i][j] = hm[i][j] + m[i] * mu[k][j]
    hm = [[hm[i][j] * wm for j in range(3)] for i in range(3)]

    def energy(r):
        em = ea = eg = F32(0)
        for k in ks:
            m, sa, sg = tgt[k]
            for i in range(3):
                t = r[i][0] * mu[k][0]
                t = t + r[i][1] * mu[k][1]
                t = t + r[i][2] * mu[k][2]
                d = m[i] - t
                em = em + d * d
            rt = _tr(r)
            ea = ea + _sqdist(sa, _mm(_mm(r, A[k]), rt))
            if sg is not None:
                eg = eg + _sqdist(sg, _mm(_mm(r, G[k]), rt))
        e = em * wm
        e = e + ea * wa
        return e + eg * wg

    res = {}
    for d in (1, -1):
        r = _rdiag(_solve(_rdiag(hm, d)), d)
        for _ in range(ITERS):
            acc_a = [[F32(0)] * 3 for _ in range(3)]
            acc_g = [[F32(0)] * 3 for _ in range(3)]
            for k in ks:
                _, sa, sg = tgt[k]
                u = _mm(sa, _mm(r, A[k]))
                acc_a = [[acc_a[i][j] + u[i][j] for j in range(3)] for i in range(3)]
                if sg is not None:
                    u = _mm(sg, _mm(r, G[k]))
                    acc_g = [[acc_g[i][j] + u[i][j] for j in range(3)] for i in range(3)]
            h = [[(hm[i][j] + wa2 * acc_a[i][j]) + wg2 * acc_g[i][j] for j in range(3)] for i in range(3)]
            r = _rdiag(_solve(_rdiag(h, d)), d)
        res[d] = (r, energy(r))
    e0 = energy(_eye())
    d = -1 if res[-1][1] <= MIRROR * res[1][1] else 1
    return e0, res, d, res[d][1]


def compose(r_old, r_fit) -> list[list[float]]:
    """The new total frame R_old @ R_fit (windows quantized with R_old applied, fit R_fit)."""
    a = [[F32(v) for v in row] for row in np.asarray(r_old, np.float64).reshape(3, 3)]
    b = [[F32(v) for v in row] for row in np.asarray(r_fit, np.float64).reshape(3, 3)]
    return [[float(v) for v in row] for row in _mm(a, b)]


def apply_frame(samples, r, improper: bool, C: int, accel: Sequence[int] = (0, 1, 2),
                gyro: Sequence[int] | None = (3, 4, 5)) -> np.ndarray:
    """float32 samples (any shape, a multiple of C values) mapped back to the source frame:
    accel y_i = sum_k R[k][i] x_k (R^T x; t = R0i*x0; t = t + R1i*x1; t = t + R2i*x2), the gyro
    the same then negated when improper. Other channels unchanged. What m.quantize does before
    quantizing when the model has a frame (then quantize_input on the result)."""
    x = np.asarray(samples, np.float64).astype(F32)
    v = x.reshape(-1, C).copy()
    rr = np.asarray(r, np.float64).astype(F32).reshape(3, 3)
    for grp, neg in ((accel, False), (gyro, improper)):
        if grp is None:
            continue
        src = v[:, list(grp)].copy()
        for i, c in enumerate(grp):
            t = rr[0, i] * src[:, 0]
            t = t + rr[1, i] * src[:, 1]
            t = t + rr[2, i] * src[:, 2]
            v[:, c] = -t if neg else t
    return v.reshape(x.shape)


def requantize(xs, r, improper: bool, scale, zero_point, accel=(0, 1, 2), gyro=(3, 4, 5)) -> np.ndarray:
    """int8 windows recorded in one frame -> the same windows in the frame after a fit R:
    dequantize (x = ((float)q - zp) * scale), apply_frame, quantize_input."""
    from .quantize_input import quantize_input

    sc = np.asarray(scale, np.float64).astype(F32)
    zp = np.asarray(zero_point, np.float64).astype(F32)
    q = np.asarray(xs, np.int8)
    C = len(sc)
    x = (q.reshape(-1, C).astype(F32) - zp) * sc
    return quantize_input(apply_frame(x, r, improper, C, accel, gyro), sc, zp).reshape(q.shape)
