"""Closed-form classifier refit of the pure-Python Model (firmware/edgetune_py.py; docs/training.md §9).

Its own module so that boards which never refit do not load it: edgetune_py's Model.refit imports
it (and Model.load, for the classifier's scales and multipliers of a weights file). Same bits as the
C module (native_modules/edgetune/refit.c, kernels/et_refit_f32.c) and the numpy twin
(host/edgetune/twin/refit.py): every float32 operation is rounded through the one-element array('f')
cell right after it. Unlike the C module, the classifier's input of every window is computed once
and kept (n x K int16) instead of a forward pass per fold. The result is written into the model's
state arrays in place (edgetune_py keeps one int8 array per layer, rows are views of it).
"""

import gc
import struct
from array import array

from edgetune_py_num import (F32, FLT_MAX, LIM30, OP_FULLY_CONNECTED, from_bits, install_qscale, refit_scratch,
                             round_sat, to_bits, zeros)

_FOLDS = 5
_L2_GRID = (from_bits(0x3F800000), from_bits(0x3DCCCCCD), from_bits(0x3C23D70A), from_bits(0x3A83126F))  # 1 .1 .01 .001
_A_GRID = (0.0, from_bits(0x3E800000), from_bits(0x3F000000), from_bits(0x3F400000), from_bits(0x3F800000))
_MAX_N = 32767


def _r(v):
    """Round to float32."""
    F32[0] = v
    return F32[0]


def _tri(j):
    return j * (j + 1) // 2


def set_qscale(L, q):
    """Install the classifier's scales and multipliers q = (s_w * C, s_b * C, mult * C, shift * C)."""
    C = L.oc
    install_qscale(L, q[:2 * C], q[2 * C:])


class _Work:
    """Every buffer of the refit, allocated once before the forward passes (small heaps
    fragment: a solve must not need a fresh contiguous block)."""

    def __init__(self, K, C):
        T = _tri(K)
        self.g, self.s1, self.b, self.cnt = zeros("i", T), zeros("i", K), zeros("i", C * K), zeros("i", C)
        self.L, self.D, self.e = zeros("f", T), zeros("f", K), zeros("f", K)
        self.wr, self.ir = zeros("f", C * K), zeros("f", C)


def _stats(W, U, labs, idx, K, C):
    """Integer statistics of the windows idx: [n, G (packed lower), S1, B (C x K), cnt] in W."""
    g, s1, b, cnt = W.g, W.s1, W.b, W.cnt
    for a in (g, s1, b, cnt):
        for i in range(len(a)):
            a[i] = 0
    for q in idx:
        u = U[q]
        c = labs[q]
        cnt[c] += 1
        o = c * K
        for j in range(K):
            uj = u[j]
            if uj:
                s1[j] += uj
                b[o + j] += uj
                t = _tri(j)
                for k in range(j + 1):
                    g[t + k] += uj * u[k]
    return [len(idx), g, s1, b, cnt]


def _a0(st, j, k):
    n, g, s1 = st[0], st[1], st[2]
    hi, lo = (j, k) if j > k else (k, j)
    return _r(float(n * g[_tri(hi) + lo] - s1[j] * s1[k]))


def _solve(W, st, K, C, l2):
    """§9b: (wr (C x K, array 'f'), ir (C))."""
    gc.collect()  # the previous solve's arrays: keep the small boards' heap unfragmented
    n, s1, b, cnt = st[0], st[2], st[3], st[4]
    tr = 0.0
    for k in range(K):
        a = _a0(st, k, k)
        tr = a if k == 0 else _r(tr + a)
    lam = _r(_r(l2 * tr) / _r(float(K)))
    if not lam > 0.0:
        lam = 1.0
    Lm = W.L
    for j in range(K):
        t = _tri(j)
        for k in range(j):
            Lm[t + k] = _a0(st, j, k)
        Lm[t + j] = _r(_a0(st, j, j) + lam)
    D, e = W.D, W.e
    for j in range(K):
        tj = _tri(j)
        for i in range(j):
            e[i] = Lm[tj + i] * D[i]
        d = Lm[tj + j]
        for i in range(j):
            d = _r(d - _r(Lm[tj + i] * e[i]))
        if not d > 0.0:
            d = lam
        D[j] = d
        for r in range(j + 1, K):
            tr_ = _tri(r)
            s = Lm[tr_ + j]
            for i in range(j):
                s = _r(s - _r(Lm[tr_ + i] * e[i]))
            Lm[tr_ + j] = s / d
    wr, ir = W.wr, W.ir
    fn = _r(float(n))
    for c in range(C):
        o = c * K
        for q in range(K):
            tq = _tri(q)
            v = _r(float(n * b[o + q] - cnt[c] * s1[q]))
            for i in range(q):
                v = _r(v - _r(Lm[tq + i] * wr[o + i]))
            wr[o + q] = v
        for q in range(K):
            wr[o + q] = wr[o + q] / D[q]
        for q in range(K - 1, -1, -1):
            v = wr[o + q]
            for i in range(q + 1, K):
                v = _r(v - _r(Lm[_tri(i) + q] * wr[o + i]))
            wr[o + q] = v
        dot = 0.0
        for k in range(K):
            t = _r(wr[o + k] * _r(_r(float(s1[k])) / fn))
            dot = t if k == 0 else _r(dot + t)
        ir[c] = _r(_r(float(cnt[c])) / fn) - dot
    return wr, ir


def _quad(st, K, C, w):
    acc = 0.0
    for c in range(C):
        o = c * K
        for j in range(K):
            t = 0.0
            for k in range(K):
                p = _r(_a0(st, j, k) * w[o + k])
                t = p if k == 0 else _r(t + p)
            p = _r(w[o + j] * t)
            acc = p if (c == 0 and j == 0) else _r(acc + p)
    return acc


def _sqrtf(x):
    y = from_bits((to_bits(x) >> 1) + 0x1FBD1DF5)
    for _ in range(4):
        y = _r(0.5 * _r(y + _r(x / y)))
    return y


def _terms(st, K, C, wr, wf, bf):
    """§9c: (gamma, delta)."""
    vf = _quad(st, K, C, wf)
    vr = _quad(st, K, C, wr)
    q = _r(vf / vr) if vr > 0.0 else 0.0
    gm = _sqrtf(q) if (vr > 0.0 and vf > 0.0 and q <= FLT_MAX and q > 0.0) else 1.0
    n, s1 = st[0], st[2]
    fn = _r(float(n))
    mf = 0.0
    for c in range(C):
        dot = 0.0
        for k in range(K):
            t = _r(wf[c * K + k] * _r(_r(float(s1[k])) / fn))
            dot = t if k == 0 else _r(dot + t)
        z = _r(dot + bf[c])
        mf = z if c == 0 else _r(mf + z)
    fc = _r(float(C))
    mf = _r(mf / fc)
    return gm, _r(mf - _r(gm / fc))


def _logits(u, K, C, w, bias):
    z = []
    for c in range(C):
        o = c * K
        s = 0.0
        for k in range(K):
            t = _r(_r(float(u[k])) * w[o + k])
            s = t if k == 0 else _r(s + t)
        z.append(_r(s + bias[c]))
    return z


def _multiplier(m):
    b = to_bits(m)
    e = ((b >> 23) & 255) - 127
    if (b >> 31) or e == -127 or (e == 128 and (b & 0x7FFFFF)):
        return 0, 0
    if e == 128 or e + 1 > 30:
        return 0x7FFFFFFF, 30
    if e + 1 < -31:
        return 0, 0
    return ((b & 0x7FFFFF) | 0x800000) << 7, e + 1


def _folds(labs, C):
    """The j-th window of its class is in fold j % 5."""
    seen = [0] * C
    f = []
    for c in labs:
        f.append(seen[c] % _FOLDS)
        seen[c] += 1
    return f


def _num(v, what):
    if v is None:
        return None
    if isinstance(v, (str, bytes)):
        raise TypeError("edgetune: %s must be a number or None" % what)
    return _r(float(v))  # float() runs __float__, as the C module's mp_obj_get_float


def _flashed(self, i):
    """Flashed classifier (int8 rows, int32 biases, s_w, s_b) of layer i."""
    L = self._layers[i]
    t = self._tensors[L.bias]
    bq = list(struct.unpack_from("<%di" % L.oc, memoryview(self._buf), t.d_off))
    q0 = getattr(L, "q0", None) or (L.s_w, L.s_b, L.s_wmax, L.r_c, L.rm, L.rl, L.rr)
    return self._weights_of(i), bq, q0


def _args(self, xs, labels, l2, alpha):
    """The refit's arguments converted, then checked (ValueError, nothing changed):
    (xs, labels, l2, alpha, classifier layer index)."""
    xs = list(xs)
    if isinstance(labels, (list, tuple)):
        labs = [int(v) for v in labels]
    else:
        labs = list(bytes(labels))
    l2 = _num(l2, "l2")
    alpha = _num(alpha, "alpha")
    n = len(xs)
    if n != len(labs):
        raise ValueError("edgetune: refit needs as many labels as windows")
    if (l2 is not None and l2 != l2) or (alpha is not None and alpha != alpha):
        raise ValueError("edgetune: l2 and alpha must be numbers (None: chosen by cross-validation)")
    for x in xs:  # every input checked before any is used; each converted when used
        if len(x) != self._n_in:
            self._x(x)
    labs = [self._label(v) for v in labs]
    li = self._rl
    if li < 0:
        raise ValueError("edgetune: refit needs a FULLY_CONNECTED classifier with a bias whose bias and all "
                         "weights the scheme trains")
    if n < 2 or n > _MAX_N:
        raise ValueError("edgetune: refit needs 2..32767 windows")
    if l2 is not None and not (l2 > 0.0 and l2 <= FLT_MAX):
        raise ValueError("edgetune: l2 must be a positive finite number")
    if alpha is not None and not (alpha >= 0.0 and alpha <= 1.0):
        raise ValueError("edgetune: alpha must be in [0, 1]")
    s_out = self._tensors[self._output].scale
    if not (s_out > 0.0 and s_out <= FLT_MAX):
        raise ValueError("edgetune: refit needs a positive output scale")
    return xs, labs, l2, alpha, li


def _centred(self, xs, L):
    """The classifier's centred input u = x - zp of every window (forward passes only), n x K int16."""
    K, zp = L.per, self._tensors[L.inp].zp
    U = []
    acts = self._acts
    for x in xs:
        x = self._x(x)
        for i in range(len(self._layers) - 1):
            x = self._fwd_layer(self._layers[i], x, acts[i + 1])
        u = zeros("h", K)
        for j in range(K):
            u[j] = x[j] - zp
        U.append(u)
    if self._inference_arena > self._peak:
        self._peak = self._inference_arena
    return U


def refit_stats(self, xs, labels):
    """Model.refit_stats -> bytes: the integer statistics (§10 a) of the windows under the current
    parameters, packed as the fleet refit mode's upload (cnt, S1, G lower triangle row by row,
    B row-major; int32 little-endian); the refit's checks, nothing in the model changes."""
    xs, labs, _, _, li = _args(self, xs, labels, None, None)
    L = self._layers[li]
    K, C = L.per, L.oc
    gc.collect()
    W = _Work(K, C)
    st = _stats(W, _centred(self, xs, L), labs, range(len(xs)), K, C)
    out = bytearray(4 * (C + K + len(W.g) + C * K))
    o = 0
    for a in (st[4], st[2], st[1], st[3]):
        for v in a:
            struct.pack_into("<i", out, o, v)
            o += 4
    return bytes(out)


def refit(self, xs, labels, l2, alpha):
    """Model.refit (docs/training.md §9) -> {"l2", "alpha", "cv_accuracy", "n", "scratch"}."""
    xs, labs, l2, alpha, li = _args(self, xs, labels, l2, alpha)
    n = len(xs)
    L = self._layers[li]
    K, C = L.per, L.oc
    t_in = self._tensors[L.inp]
    s_x, s_out = t_in.scale, self._tensors[self._output].scale
    gc.collect()
    W = _Work(K, C)
    U = _centred(self, xs, L)
    wrows, bq, q0 = _flashed(self, li)
    swf, sbf = q0[0], q0[1]
    sf = [_r(s_x * swf[c]) for c in range(C)]
    wf = zeros("f", C * K)
    for c in range(C):
        row = wrows[c]
        for k in range(K):
            wf[c * K + k] = sf[c] * float(row[k])
    bf = [_r(sbf[c] * _r(float(bq[c]))) for c in range(C)]
    l2s = (l2,) if l2 is not None else _L2_GRID
    als = (alpha,) if alpha is not None else _A_GRID
    cv = l2 is None or alpha is None
    l2v, av, cv_acc = l2s[0], als[0], None
    if cv:
        correct = [0] * (len(l2s) * len(als))
        fo = _folds(labs, C)
        for f in range(_FOLDS):
            tr = [q for q in range(n) if fo[q] != f]
            te = [q for q in range(n) if fo[q] == f]
            if not tr or not te:
                continue
            st = _stats(W, U, labs, tr, K, C)
            for il in range(len(l2s)):
                wr, ir = _solve(W, st, K, C, l2s[il])
                gm, de = _terms(st, K, C, wr, wf, bf)
                for q in te:
                    zf = _logits(U[q], K, C, wf, bf)
                    zr = _logits(U[q], K, C, wr, ir)
                    for ia in range(len(als)):
                        a = als[ia]
                        a1, ga, ad = _r(1.0 - a), _r(a * gm), _r(a * de)
                        best, zb = 0, 0.0
                        for c in range(C):
                            z = _r(_r(_r(a1 * zf[c]) + _r(ga * zr[c])) + ad)
                            if c == 0 or z > zb:
                                zb, best = z, c
                        if best == labs[q]:
                            correct[ia * len(l2s) + il] += 1
        best = -1
        for ia in range(len(als)):
            for il in range(len(l2s)):
                if correct[ia * len(l2s) + il] > best:
                    best = correct[ia * len(l2s) + il]
                    l2v, av = l2s[il], als[ia]
        cv_acc = _r(_r(float(best)) / _r(float(n)))
    # scratch of the C module (docs/training.md §9 f), reported alike
    scratch = refit_scratch(L)
    if cv:
        fo = _folds(labs, C)
        fmax = max(fo.count(f) for f in range(_FOLDS))
        scratch += 80 + ((fmax * K + 3) & ~3) + 4 * fmax
    out = {"l2": l2v, "alpha": av, "cv_accuracy": cv_acc, "n": n, "scratch": scratch}
    mom = self._momentum > 0
    if av == 0.0:  # the flashed classifier
        qv = list(swf) + list(sbf) + list(q0[4]) + [q0[5][c] - q0[6][c] for c in range(C)]
        newb, neww = bq, wrows
    else:
        st = _stats(W, U, labs, range(n), K, C)
        wr, ir = _solve(W, st, K, C, l2v)
        gm, de = _terms(st, K, C, wr, wf, bf)
        a1, ga, ad = _r(1.0 - av), _r(av * gm), _r(av * de)
        for j in range(C * K):
            v = _r(_r(a1 * wf[j]) + _r(ga * wr[j]))
            if not (v - v == 0.0):
                raise ValueError("edgetune: refit: the solve gave non-finite weights (try a larger l2)")
            wr[j] = v
        for c in range(C):
            v = _r(_r(_r(a1 * bf[c]) + _r(ga * ir[c])) + ad)
            if not (v - v == 0.0):
                raise ValueError("edgetune: refit: the solve gave non-finite weights (try a larger l2)")
            ir[c] = v
        sws, sbs, mults, shifts, newb, neww = [], [], [], [], [], []
        for c in range(C):
            o = c * K
            m = 0.0
            for k in range(K):
                a = wr[o + k]
                a = -a if a < 0.0 else a
                if a > m:
                    m = a
            sw = _r(_r(m / 127.0) / s_x) if m > 0.0 else 0.0
            sb = _r(s_x * sw)
            if m > 0.0 and sw > 0.0 and sw <= FLT_MAX and sb > 0.0 and sb <= FLT_MAX:
                inv = _r(127.0 / m)
                neww.append(array("b", [round_sat(_r(wr[o + k] * inv), 127) for k in range(K)]))
            else:
                sw, sb = swf[c], sbf[c]
                neww.append(array("b", [0] * K))
            sws.append(sw)
            sbs.append(sb)
            newb.append(round_sat(_r(ir[c] / sb), LIM30))
            mu, sh = _multiplier(_r(sb / s_out))
            mults.append(mu)
            shifts.append(sh)
        qv = sws + sbs + mults + shifts
    b = L.b  # into the state arrays (the rows are views of the layer's one int8 array)
    for c in range(C):
        b[c] = newb[c]
        row, src = L.w[c], neww[c]
        for k in range(K):
            row[k] = src[k]
        L.res_b[c] = 0
        res = L.res_w[c]
        for k in range(K):
            res[k] = 0
        if mom:
            L.mom_b[c] = 0.0
            m_ = L.mom_w[c]
            for k in range(K):
                m_[k] = 0.0
    set_qscale(L, qv)
    return out


assert OP_FULLY_CONNECTED == 3
