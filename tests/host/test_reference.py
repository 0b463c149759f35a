"""Unit tests of the numpy twin (host/edgetune/twin/reference.py).

The fixed-point primitives are checked against values worked out by hand from gemmlowp's
definitions and against a literal scalar transcription of the C code; the vectorized ops are
checked against literal transcriptions of TFLM's reference loops on small random cases.
End-to-end agreement with the real tflite-micro interpreter is tests/host/test_tflm_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.twin import reference as ref
from edgetune.format.modelfile import (DT_INT8, DT_INT32, OP_CONV_2D, OP_FULLY_CONNECTED, OP_MEAN, EtmModel,
                                Layer, Tensor)

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


# ------------------------------------------------------------------ scalar C transcriptions


def c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def srdhm_c(a: int, b: int) -> int:
    overflow = a == b == I32_MIN
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return I32_MAX if overflow else c_div(ab + nudge, 1 << 31)


def rdbp_c(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def wrap(x: int) -> int:
    return ((x + 2**31) % 2**32) - 2**31


def mbqm_c(x: int, m: int, shift: int) -> int:
    left = shift if shift > 0 else 0
    right = 0 if shift > 0 else -shift
    return rdbp_c(srdhm_c(wrap(x * (1 << left)), m), right)


# ------------------------------------------------------------------ primitives


@pytest.mark.parametrize("a,b,expected", [
    (I32_MIN, I32_MIN, I32_MAX),               # the only overflow saturates
    (I32_MAX, I32_MAX, 2147483646),            # (2^31-1)^2 / 2^31 = 2^31 - 2 + 0.5000000002 -> trunc
    (I32_MIN, I32_MAX, -2147483647),           # -2^31 + 0.5 (nudge 1-2^30, truncation toward 0)
    (I32_MAX, I32_MIN, -2147483647),
    (1 << 30, 1 << 30, 1 << 29),               # 0.5 * 0.5 in Q31
    (1, 1 << 30, 1),                           # +0.5 rounds up
    (-1, 1 << 30, 0),                          # -0.5 rounds toward zero (nudge 1 - 2^30)
    (-3, 1 << 30, -1),                         # -1.5 -> -1
    (3, 1 << 30, 2),                           # +1.5 -> 2
    (0, I32_MIN, 0),
    (I32_MIN, 1 << 30, -(1 << 30)),
])
def test_srdhm_hand_values(a, b, expected):
    assert int(ref.saturating_rounding_doubling_high_mul(a, b)) == expected
    assert srdhm_c(a, b) == expected


@pytest.mark.parametrize("x,e,expected", [
    (5, 0, 5), (-5, 0, -5), (I32_MIN, 0, I32_MIN), (I32_MAX, 0, I32_MAX),   # shift 0 = identity
    (3, 1, 2), (-3, 1, -2), (1, 1, 1), (-1, 1, -1),                          # ties away from zero
    (5, 2, 1), (-5, 2, -1), (6, 2, 2), (-6, 2, -2), (7, 2, 2), (-7, 2, -2),
    (I32_MIN, 31, -1), (I32_MAX, 31, 1), (1 << 30, 31, 1), (-(1 << 30), 31, -1),
    ((1 << 30) - 1, 31, 0), (-(1 << 30) + 1, 31, 0), (-1, 31, 0), (1, 31, 0),
    (12345678, 20, 12), (-12345678, 20, -12),                                # 11.77 -> 12
])
def test_rdbp_hand_values(x, e, expected):
    assert int(ref.rounding_divide_by_pot(x, e)) == expected
    assert rdbp_c(x, e) == expected


def test_rdbp_rejects_bad_exponent():
    with pytest.raises(ValueError):
        ref.rounding_divide_by_pot(1, 32)
    with pytest.raises(ValueError):
        ref.rounding_divide_by_pot(1, -1)


@pytest.mark.parametrize("x,m,shift,expected", [
    (100, 1 << 30, -1, 25),          # x * 0.5 / 2
    (-100, 1 << 30, 0, -50),
    (12345, 1 << 30, 1, 12345),      # left shift before the high-mul
    (5, 1 << 30, -1, 2),             # double rounding: 2.5 -> 3, then 1.5 -> 2 (exact 1.25)
    (-5, 1 << 30, -1, -1),           # -2.5 -> -2 (nudge), then -1.0 -> -1
    (1000, 1518500250, -3, 88),      # 1000 * 0.7071 / 8 = 88.39
    (I32_MAX, I32_MAX, -31, 1),
    (I32_MIN, I32_MIN, -31, 1),      # saturation then the largest right shift
    (7, 0, 0, 0),                    # zero multiplier (QuantizeMultiplier's flush to zero)
    (1 << 30, 1 << 30, 1, -(1 << 30)),  # x << 1 wraps to INT32_MIN as C int32 arithmetic does
])
def test_mbqm_hand_values(x, m, shift, expected):
    assert int(ref.multiply_by_quantized_multiplier(x, m, shift)) == expected
    assert mbqm_c(x, m, shift) == expected


def test_primitives_match_scalar_c_on_random_and_edge_values():
    rng = np.random.default_rng(1)
    edges = [I32_MIN, I32_MIN + 1, -(1 << 30), -(1 << 16), -3, -2, -1, 0, 1, 2, 3, 1 << 16, 1 << 30, I32_MAX - 1, I32_MAX]
    xs = np.concatenate([np.array(edges), rng.integers(I32_MIN, I32_MAX, 3000, endpoint=True),
                         rng.integers(-100000, 100000, 3000)])
    ms = np.concatenate([np.array(edges), rng.integers(1 << 30, I32_MAX, 3000, endpoint=True),
                         rng.integers(0, I32_MAX, 3000, endpoint=True)])
    rng.shuffle(ms)
    sh = rng.integers(-31, 31, xs.size)
    e = rng.integers(0, 32, xs.size)
    got_srdhm = ref.saturating_rounding_doubling_high_mul(xs, ms)
    got_rdbp = ref.rounding_divide_by_pot(xs, e)
    got_mbqm = ref.multiply_by_quantized_multiplier(xs, ms, sh)
    for i in range(xs.size):
        x, m = int(xs[i]), int(ms[i])
        assert int(got_srdhm[i]) == srdhm_c(x, m), (x, m)
        assert int(got_rdbp[i]) == rdbp_c(x, int(e[i])), (x, e[i])
        assert int(got_mbqm[i]) == mbqm_c(x, m, int(sh[i])), (x, m, sh[i])
    # per-channel broadcasting: multiplier/shift arrays on the last axis
    acc = rng.integers(-50000, 50000, (3, 4, 5))
    mult = rng.integers(1 << 30, I32_MAX, 5)
    shift = rng.integers(-12, 2, 5)
    got = ref.multiply_by_quantized_multiplier(acc, mult, shift)
    want = np.vectorize(mbqm_c)(acc, mult, shift)
    assert np.array_equal(got, want)


def test_wrap_int32():
    assert list(ref.wrap_int32(np.array([2**31, -(2**31) - 1, 5, -5, 2**32 + 7]))) == [I32_MIN, I32_MAX, 5, -5, 7]


# ------------------------------------------------------------------ ops vs literal TFLM loops


def conv_loops(x, w, b, sh, sw, ph, pw, oh, ow, in_off, out_off, mult, shift, lo, hi, depthwise=False, dm=1):
    """Literal transcription of TFLM reference_integer_ops::ConvPerChannel / DepthwiseConvPerChannel."""
    _, H, W, C = x.shape
    if depthwise:
        _, KH, KW, CO = w.shape
    else:
        CO, KH, KW, _ = w.shape
    out = np.zeros((1, oh, ow, CO), np.int8)
    for oy in range(oh):
        for ox in range(ow):
            for oc in range(CO):
                ic_list = [oc // dm] if depthwise else range(C)
                acc = 0
                for ky in range(KH):
                    for kx in range(KW):
                        iy, ix = oy * sh - ph + ky, ox * sw - pw + kx
                        if not (0 <= iy < H and 0 <= ix < W):
                            continue
                        for ic in ic_list:
                            fv = int(w[0, ky, kx, oc]) if depthwise else int(w[oc, ky, kx, ic])
                            acc += fv * (int(x[0, iy, ix, ic]) + in_off)
                if b is not None:
                    acc += int(b[oc])
                acc = mbqm_c(acc, int(mult[oc]), int(shift[oc])) + out_off
                out[0, oy, ox, oc] = min(max(acc, lo), hi)
    return out


def pool_loops(x, kh, kw, sh, sw, ph, pw, oh, ow, lo, hi, avg):
    _, H, W, C = x.shape
    out = np.zeros((1, oh, ow, C), np.int8)
    for oy in range(oh):
        for ox in range(ow):
            for c in range(C):
                vals = [int(x[0, oy * sh - ph + ky, ox * sw - pw + kx, c]) for ky in range(kh) for kx in range(kw)
                        if 0 <= oy * sh - ph + ky < H and 0 <= ox * sw - pw + kx < W]
                if avg:
                    acc, n = sum(vals), len(vals)
                    v = c_div(acc + n // 2, n) if acc > 0 else c_div(acc - n // 2, n)
                else:
                    v = max([-128] + vals)
                out[0, oy, ox, c] = min(max(v, lo), hi)
    return out


def _same(n, k, s):
    o = -(-n // s)
    return o, max((o - 1) * s + k - n, 0) // 2


def _rand_case(rng):
    H, W = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    KH, KW = int(rng.integers(1, min(H, 4) + 1)), int(rng.integers(1, min(W, 4) + 1))
    sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    if rng.random() < 0.5:
        (oh, ph), (ow, pw) = _same(H, KH, sh), _same(W, KW, sw)
    else:
        oh, ow, ph, pw = (H - KH) // sh + 1, (W - KW) // sw + 1, 0, 0
    return H, W, KH, KW, sh, sw, ph, pw, oh, ow


@pytest.mark.parametrize("seed", range(30))
def test_conv_and_depthwise_match_loops(seed):
    rng = np.random.default_rng(seed)
    H, W, KH, KW, sh, sw, ph, pw, oh, ow = _rand_case(rng)
    C, CO, dm = int(rng.integers(1, 5)), int(rng.integers(1, 6)), int(rng.integers(1, 3))
    x = rng.integers(-128, 128, (1, H, W, C)).astype(np.int8)
    in_off, out_off = int(rng.integers(-127, 129)), int(rng.integers(-128, 128))
    lo = int(rng.choice([-128, out_off if -128 <= out_off <= 127 else -128]))
    hi = int(rng.choice([127, max(lo, min(127, out_off + 40))]))
    for depthwise in (False, True):
        co = C * dm if depthwise else CO
        w = (rng.integers(-127, 128, (1, KH, KW, co)) if depthwise else rng.integers(-127, 128, (co, KH, KW, C))).astype(np.int8)
        b = rng.integers(-5000, 5000, co).astype(np.int32) if rng.random() < 0.7 else None
        mult = rng.integers(1 << 30, 2**31 - 1, co)
        shift = rng.integers(-12, 1, co)
        want = conv_loops(x, w, b, sh, sw, ph, pw, oh, ow, in_off, out_off, mult, shift, lo, hi, depthwise, dm)
        kw = dict(stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw, out_h=oh, out_w=ow, input_offset=in_off,
                  output_offset=out_off, multipliers=mult, shifts=shift, act_min=lo, act_max=hi)
        if depthwise:
            got = ref.depthwise_conv_2d(x, w, b, depth_multiplier=dm, **kw)
        else:
            got = ref.conv_2d(x, w, b, **kw)
        assert np.array_equal(got, want), (depthwise, seed)


@pytest.mark.parametrize("seed", range(30))
def test_pools_match_loops(seed):
    rng = np.random.default_rng(100 + seed)
    H, W, KH, KW, sh, sw, ph, pw, oh, ow = _rand_case(rng)
    C = int(rng.integers(1, 5))
    x = rng.integers(-128, 128, (1, H, W, C)).astype(np.int8)
    lo, hi = int(rng.choice([-128, -20])), int(rng.choice([127, 60]))
    kw = dict(filter_h=KH, filter_w=KW, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw, out_h=oh, out_w=ow,
              act_min=lo, act_max=hi)
    assert np.array_equal(ref.max_pool_2d(x, **kw), pool_loops(x, KH, KW, sh, sw, ph, pw, oh, ow, lo, hi, False))
    assert np.array_equal(ref.average_pool_2d(x, **kw), pool_loops(x, KH, KW, sh, sw, ph, pw, oh, ow, lo, hi, True))


def test_average_pool_rounding_hand_values():
    # windows of 2: (-3 + -2) = -5 -> (-5 - 1) / 2 = -3 ; (1 + 2) = 3 -> (3 + 1) / 2 = 2 ; (-1 + 0) -> (-1-1)/2 = -1
    x = np.array([-3, -2, 1, 2, -1, 0], np.int8).reshape(1, 1, 6, 1)
    got = ref.average_pool_2d(x, filter_h=1, filter_w=2, stride_h=1, stride_w=2, pad_h=0, pad_w=0, out_h=1,
                              out_w=3, act_min=-128, act_max=127)
    assert got.reshape(-1).tolist() == [-3, 2, -1]


def test_fully_connected_matches_loops():
    rng = np.random.default_rng(7)
    for _ in range(20):
        K, CO = int(rng.integers(1, 40)), int(rng.integers(1, 10))
        x = rng.integers(-128, 128, (3, K)).astype(np.int8)
        w = rng.integers(-127, 128, (CO, K)).astype(np.int8)
        b = rng.integers(-20000, 20000, CO).astype(np.int32)
        mult = np.full(CO, int(rng.integers(1 << 30, 2**31 - 1)))
        shift = np.full(CO, int(rng.integers(-14, 1)))
        in_off, out_off = int(rng.integers(-127, 129)), int(rng.integers(-128, 128))
        got = ref.fully_connected(x, w.reshape(CO, 1, 1, K), b, input_offset=in_off, output_offset=out_off,
                                  multipliers=mult, shifts=shift, act_min=-128, act_max=127)
        for n in range(3):
            for c in range(CO):
                acc = sum(int(w[c, k]) * (int(x[n, k]) + in_off) for k in range(K)) + int(b[c])
                assert got[n, c] == min(max(mbqm_c(acc, int(mult[c]), int(shift[c])) + out_off, -128), 127)


def test_mean_matches_loops():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, 3, 5, 4)).astype(np.int8)
    s = x.astype(np.int64).sum(axis=(1, 2))
    m, sh, in_off, out_off = 1431655765, -3, 17, -9
    got = ref.mean(x, input_offset=in_off, output_offset=out_off, multiplier=m, shift=sh)
    want = np.vectorize(lambda v: min(max(mbqm_c(int(v) + in_off * 15, m, sh) + out_off, -128), 127))(s)
    assert np.array_equal(got, want)
    with pytest.raises(ValueError):
        ref.mean(x, input_offset=0, output_offset=0, multiplier=m, shift=sh, p0=1)


# ------------------------------------------------------------------ forward over a hand-built model


def _hand_model():
    """Conv 3x1 (Conv1D-like) -> MEAN -> FC, built by hand."""
    rng = np.random.default_rng(11)
    t = [
        Tensor(DT_INT8, (1, 1, 10, 2), zero_point=-3, scale=0.1),
        Tensor(DT_INT8, (4, 1, 3, 2), data=rng.integers(-127, 128, (4, 1, 3, 2)).astype(np.int8),
               scales=np.full(4, 0.01, np.float32)),
        Tensor(DT_INT32, (1, 1, 1, 4), data=rng.integers(-500, 500, (1, 1, 1, 4)).astype(np.int32),
               scales=np.full(4, 0.001, np.float32)),
        Tensor(DT_INT8, (1, 1, 5, 4), zero_point=-128, scale=0.05),
        Tensor(DT_INT8, (1, 1, 1, 4), zero_point=-100, scale=0.04),
        Tensor(DT_INT8, (3, 1, 1, 4), data=rng.integers(-127, 128, (3, 1, 1, 4)).astype(np.int8), scale=0.02),
        Tensor(DT_INT8, (1, 1, 1, 3), zero_point=5, scale=0.3),
    ]
    layers = [
        Layer(OP_CONV_2D, 0, 3, weight=1, bias=2, stride_h=1, stride_w=2, filter_h=1, filter_w=3, pad_h=0, pad_w=0,
              input_offset=3, output_offset=-128, act_min=-128, act_max=127,
              multipliers=np.full(4, 1374389535, np.int32), shifts=np.full(4, -5, np.int32)),
        Layer(OP_MEAN, 3, 4, input_offset=128, output_offset=-100, multipliers=np.array([1288490189], np.int32),
              shifts=np.array([-2], np.int32)),
        Layer(OP_FULLY_CONNECTED, 4, 6, weight=5, input_offset=100, output_offset=5,
              multipliers=np.full(3, 1145324612, np.int32), shifts=np.full(3, -10, np.int32)),
    ]
    return EtmModel(t, layers, 0, 6)


def test_forward_chain_and_batch_agree():
    model = _hand_model()
    rng = np.random.default_rng(5)
    xs = rng.integers(-128, 128, (9, 1, 10, 2)).astype(np.int8)
    batch = ref.forward_batch(model, xs)
    assert batch.shape == (9, 1, 1, 3)
    for i in range(9):
        y, acts = ref.forward(model, xs[i], keep=True)
        assert y.shape == (1, 1, 1, 3) and y.dtype == np.int8
        assert np.array_equal(y, batch[i:i + 1])
        assert [a.shape for a in acts] == [(1, 1, 10, 2), (1, 1, 5, 4), (1, 1, 1, 4), (1, 1, 1, 3)]
        # layer by layer through the op functions gives the same activations
        l0 = model.layers[0]
        c = ref.conv_2d(acts[0], model.tensors[1].data, model.tensors[2].data.reshape(-1), stride_h=1, stride_w=2,
                        pad_h=0, pad_w=0, out_h=1, out_w=5, input_offset=3, output_offset=-128,
                        multipliers=l0.multipliers, shifts=l0.shifts, act_min=-128, act_max=127)
        assert np.array_equal(c, acts[1])
    with pytest.raises(ValueError):
        ref.forward(model, np.zeros(7, np.int8))
    with pytest.raises(TypeError):
        ref.forward_batch(model, np.zeros((1, 20), np.int16))
