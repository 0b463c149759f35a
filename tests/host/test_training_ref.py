"""Unit tests of the training-step numpy twin (host/edgetune/twin/training.py), the Scheme
(host/edgetune/format/scheme.py) and the training arena model (host/edgetune/twin/memory.py) against
docs/training.md. No TensorFlow here except through cached random models (tests/support/modelgen.py).
"""

from __future__ import annotations

import math
import struct
import zlib
from fractions import Fraction

import numpy as np
import pytest

from edgetune.convert import prepare
from edgetune.twin.memory import align4, inference_arena, training_arena, training_layout
from edgetune.format.modelfile import (
    DT_INT8, DT_INT32, OP_FULLY_CONNECTED, EtmModel, Layer, Tensor, write_etm,
)
from edgetune.format.scheme import Entry, Scheme, l1_channels, weight_layers
from edgetune.twin.qmath import F32, et_expf, et_logf, rdiv, round_sat
from edgetune.twin.training import Trainer

# --------------------------------------------------------------------------------------------
# Toy models built by hand (no converter needed)
# --------------------------------------------------------------------------------------------


def _fc_layer(tensors: list, k: int, c: int, rng, s_in: float, zp_in: int, s_out: float, zp_out: int,
              bias: bool = True, w_scale=(0.002, 0.01), act=(-128, 127), w=None) -> Layer:
    t_in = len(tensors) - 1
    if w is None:
        w = rng.integers(-127, 128, (c, 1, 1, k)).astype(np.int8)
    s_w = rng.uniform(*w_scale, c).astype(np.float32)
    tensors.append(Tensor(DT_INT8, (c, 1, 1, k), 0, 0.0, s_w, 0, np.asarray(w, np.int8).reshape(c, 1, 1, k), "w"))
    wi = len(tensors) - 1
    bi = 0xFFFF
    if bias:
        b = rng.integers(-2000, 2000, (c, 1, 1, 1)).astype(np.int32)
        tensors.append(Tensor(DT_INT32, (c, 1, 1, 1), 0, 0.0, (F32(s_in) * s_w).astype(np.float32), 0, b, "b"))
        bi = len(tensors) - 1
    tensors.append(Tensor(DT_INT8, (1, 1, 1, c), zp_out, s_out, name="y"))
    mult, shift = prepare.conv_multipliers(s_in, s_w, s_out, c)
    return Layer(OP_FULLY_CONNECTED, t_in, len(tensors) - 1, wi, bi, input_offset=-zp_in, output_offset=zp_out,
                 act_min=act[0], act_max=act[1], multipliers=mult, shifts=shift)


def fc_model(k: int = 8, c: int = 3, seed: int = 0, hidden: int = 0, bias: bool = True, w=None) -> EtmModel:
    """x (1,1,1,k) -> [FC hidden, ReLU] -> FC c logits."""
    rng = np.random.default_rng(seed)
    s_in, zp_in = 0.05, -3
    tensors = [Tensor(DT_INT8, (1, 1, 1, k), zp_in, s_in, name="x")]
    layers = []
    if hidden:
        s_h, zp_h = 0.05, -128
        layers.append(_fc_layer(tensors, k, hidden, rng, s_in, zp_in, s_h, zp_h, act=(-128, 127)))
        k, s_in, zp_in = hidden, s_h, zp_h
    layers.append(_fc_layer(tensors, k, c, rng, s_in, zp_in, 0.1, 5, bias=bias, w=w))
    return EtmModel(tensors, layers, 0, len(tensors) - 1, {"name": "toy"})


# --------------------------------------------------------------------------------------------
# Spec helper functions
# --------------------------------------------------------------------------------------------


def test_et_expf_close_to_exp():
    x = np.linspace(-87.0, 0.0, 40001, dtype=np.float32)
    got = et_expf(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    rel = np.abs(got - want) / want
    assert rel.max() < 1e-6, rel.max()
    assert et_expf(np.float32(0.0)) == np.float32(1.0)
    assert et_expf(np.float32(-87.5)) == 0 and et_expf(np.float32(-1e30)) == 0


def test_et_logf_close_to_log():
    x = np.concatenate([np.linspace(1.0, 4.0, 20001), np.geomspace(4.0, 3e38, 20001)]).astype(np.float32)
    got = et_logf(x).astype(np.float64)
    want = np.log(x.astype(np.float64))
    err = np.abs(got - want)
    assert np.all(err <= 2e-7 + 1e-6 * want), (err / np.maximum(want, 1e-30)).max()
    assert et_logf(np.float32(1.0)) == 0.0
    assert math.isclose(float(et_logf(np.float32(math.e))), 1.0, rel_tol=1e-6)


def test_round_sat_edges():
    v = np.array([0.5, -0.5, 1.5, -1.5, 2.5, 0.49999997, -0.49999997, 0.4, -0.4, 0.0, -0.0,
                  32766.6, 32767.0, 40000.0, -40000.0, np.inf, -np.inf, np.nan], np.float32)
    got = round_sat(v, 32767)
    # 0.49999997f + 0.5f rounds to 1.0f in float32: that quirk is part of the spec (C does the same)
    assert got.tolist() == [1, -1, 2, -2, 3, 1, -1, 0, 0, 0, 0, 32767, 32767, 32767, -32767, 32767, -32767, 0]
    big = round_sat(np.array([2.0**30, -(2.0**30), 2.0**30 - 64, 1e20], np.float32))
    assert big.tolist() == [2**30, -(2**30), 2**30 - 64, 2**30]


def test_rdiv_rounds_half_away_from_zero():
    cases = {(5, 2): 3, (-5, 2): -3, (4, 3): 1, (-4, 3): -1, (1024, 3): 341, (1024, 6): 171, (0, 7): 0,
             (7, 7): 1, (-7, 7): -1, (3, 7): 0, (-3, 7): 0, (4, 7): 1, (-4, 7): -1}
    for (a, b), want in cases.items():
        assert int(rdiv(a, b)) == want, (a, b)
    rng = np.random.default_rng(1)
    a = rng.integers(-(2**40), 2**40, 2000)
    b = rng.integers(1, 2**20, 2000)
    got = rdiv(a, b)
    for ai, bi, gi in zip(a.tolist(), b.tolist(), got.tolist()):
        q = Fraction(ai, bi)
        want = math.floor(abs(q) + Fraction(1, 2)) * (1 if q >= 0 else -1)
        assert gi == want


# --------------------------------------------------------------------------------------------
# Scheme
# --------------------------------------------------------------------------------------------


def test_scheme_encode_decode_round_trip_and_bytes():
    m = fc_model(k=6, c=9, hidden=5)
    s = Scheme.build(m, n_bias=2, weights={0: Fraction(1, 4)})
    assert s.entries[0] == Entry(0, True, l1_channels(m, 0, 1))
    assert s.entries[1] == Entry(1, True, tuple(range(9)))  # classifier: bias + all channels
    data = s.encode()
    # header, entry 0 (1 channel + pad), entry 1 (9 channels + pad)
    assert data[:4] == struct.pack("<HH", 1, 2)
    assert data[4:12] == struct.pack("<HBBHH", 0, 3, 0, 1, 0)
    assert len(data) == 4 + (8 + 4) + (8 + 20)
    assert Scheme.decode(data, m) == s
    assert s.first == 0
    m.scheme = data
    assert Scheme.for_model(m) == s
    assert Scheme.parse("bias=2,w0=1/4", m) == s
    assert Scheme.parse("default", m) == Scheme.default(m)
    assert Scheme.default(m).entries == (Entry(0, True, ()), Entry(1, True, tuple(range(9))))
    assert Scheme.build(m, 1, with_classifier=False).entries == (Entry(1, True, ()),)
    assert Scheme.build(m, 0, with_classifier=False).first is None


def _section(entries, version=1, pad=0, extra=b"", res=(0, 0)):
    out = struct.pack("<HH", version, len(entries))
    for layer, flags, chans in entries:
        out += struct.pack("<HBBHH", layer, flags, res[0], len(chans), res[1])
        out += struct.pack(f"<{len(chans)}H", *chans) + (struct.pack("<H", pad) if len(chans) % 2 else b"")
    return out + extra


@pytest.mark.parametrize("data, msg", [
    (b"\x01\x00", "header"),
    (_section([(1, 1, [])], version=2), "version"),
    (_section([(1, 1, [])], extra=b"\0\0\0\0"), "take"),
    (_section([(1, 1, [])])[:-2], "truncated"),
    (_section([(1, 1, []), (0, 1, [])]), "increasing"),
    (_section([(1, 1, []), (1, 1, [])]), "increasing"),
    (_section([(5, 1, [])]), "has 2 layers"),
    (_section([(1, 0, [])]), "flags"),
    (_section([(1, 4, [])]), "flags"),
    (_section([(1, 2, [])]), "n_sel"),
    (_section([(1, 1, [0])]), "n_sel"),
    (_section([(1, 2, [9])]), "ascending"),
    (_section([(1, 2, [2, 1])]), "ascending"),
    (_section([(1, 2, [1, 1])]), "ascending"),
    (_section([(1, 2, list(range(10)))]), "channels selected"),
    (_section([(1, 2, [3])], pad=7), "pad"),
    (_section([(1, 2, [3])], res=(1, 0)), "reserved"),
])
def test_scheme_decode_rejects(data, msg):
    m = fc_model(k=6, c=9, hidden=5)
    with pytest.raises(ValueError, match=msg):
        Scheme.decode(data, m)


def test_scheme_validation_errors():
    m = fc_model(k=6, c=4, hidden=5, bias=False)  # classifier without bias
    with pytest.raises(ValueError, match="no bias tensor"):
        Scheme((Entry(1, True, ()),)).validate(m)
    with pytest.raises(ValueError, match="trains nothing"):
        Scheme((Entry(1, False, ()),)).validate(m)
    with pytest.raises(ValueError, match="n_bias"):
        Scheme.build(m, n_bias=3)
    with pytest.raises(ValueError, match="ratio"):
        Scheme.build(m, weights={0: Fraction(1, 3)})
    with pytest.raises(ValueError, match="out of range"):
        Scheme.build(m, weights={7: 1})
    with pytest.raises(ValueError, match="not understood"):
        Scheme.parse("bias=1,foo", m)
    # n_bias counts the classifier even though it has no bias: nothing but layer 0's bias... no:
    s = Scheme.build(m, n_bias=1, with_classifier=False)
    assert s.entries == ()
    assert Scheme.build(m, n_bias=2, with_classifier=False).entries == (Entry(0, True, ()),)


def test_scheme_accumulator_bound():
    # x(4) -> FC 2 -> FC 600 -> FC 3: 32767*127*600 >= 2^31, so layer 1's input gradient can't
    # use an int32 accumulator; training layer 0 (first = 0 < 1) is refused, later layers are not
    rng = np.random.default_rng(3)
    tensors = [Tensor(DT_INT8, (1, 1, 1, 4), 0, 0.1)]
    layers = [_fc_layer(tensors, 4, 2, rng, 0.1, 0, 0.1, 0)]
    layers.append(_fc_layer(tensors, 2, 600, rng, 0.1, 0, 0.1, 0))
    layers.append(_fc_layer(tensors, 600, 3, rng, 0.1, 0, 0.1, 0))
    m = EtmModel(tensors, layers, 0, len(tensors) - 1)
    with pytest.raises(ValueError, match="overflow"):
        Scheme.build(m, n_bias=3)
    with pytest.raises(ValueError, match="overflow"):
        Trainer(m, Scheme((Entry(0, True, ()),)))
    Scheme.build(m, n_bias=2)  # layers 1, 2 train: only layer 2's input gradient (fanout 3)


def test_l1_channel_selection_with_ties():
    w = np.zeros((6, 1, 1, 4), np.int8)
    w[:, 0, 0, 0] = [5, 9, 9, 1, 9, 5]  # l1 scores: 5 9 9 1 9 5 (channels 1, 2, 4 tie for max)
    m = fc_model(k=4, c=6, w=w)
    assert l1_channels(m, 0, 1) == (1,)
    assert l1_channels(m, 0, 2) == (1, 2)
    assert l1_channels(m, 0, 3) == (1, 2, 4)
    assert l1_channels(m, 0, 4) == (0, 1, 2, 4)  # tie 0 vs 5 -> 0
    w[:, 0, 0, 1] = [0, 0, 0, 0, -1, 0]  # |-1| counts: channel 4 now leads
    m = fc_model(k=4, c=6, w=w)
    assert l1_channels(m, 0, 1) == (4,)
    s = Scheme.build(m, 0, {0: Fraction(1, 2)}, with_classifier=False)
    assert s.entries == (Entry(0, False, (1, 2, 4)),)


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


def _data(n: int, k: int, c: int, seed: int):
    """A linearly separable toy problem: class j has a bump of +70 on feature j."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    xs = rng.integers(-40, 20, (n, k))
    xs[np.arange(n), labels] += 70
    return xs.astype(np.int8), labels


def test_training_reduces_loss_on_separable_toy_problem():
    m = fc_model(k=8, c=3, hidden=6, seed=4)
    tr = Trainer(m)
    xs, ys = _data(300, 8, 3, 5)
    loss0, acc0 = tr.evaluate(xs, ys)
    for k in range(600):
        tr.step(xs[k % 300], ys[k % 300], lr=0.05)
    loss1, acc1 = tr.evaluate(xs, ys)
    assert loss1 < 0.5 * loss0, (loss0, loss1)
    assert acc1 >= 0.9 and acc1 > acc0, (acc0, acc1)
    assert isinstance(loss1, np.float32) and isinstance(acc1, np.float32)


def test_residuals_accumulate_sub_lsb_steps():
    """With a tiny lr every step is < 1/2 LSB (a truncating or rounding update never moves),
    but the residual carries the fractions: 32768*b + r advances by exactly sum(d)."""
    m = fc_model(k=8, c=3, seed=6)
    tr = Trainer(m, Scheme.build(m, n_bias=1))
    b0 = tr.bias[0].reshape(-1).astype(np.int64).copy()
    x = np.full(8, 30, np.int8)
    total = np.zeros(3, np.int64)
    for _ in range(400):
        tr.step(x, 0, lr=2e-5, trace=True)
        d = tr.info.grads[0]["db"]
        assert np.abs(d).max() < 16384  # every single step is below half an LSB
        total += d
    b1 = tr.bias[0].reshape(-1).astype(np.int64)
    assert np.array_equal(32768 * b1 + tr.res_b[0], 32768 * b0 + total)
    assert np.any(b1 != b0)  # ... and yet the bias moved
    assert np.all(tr.res_b[0] >= -16384) and np.all(tr.res_b[0] <= 16383)


def test_qas_and_plain_sgd_factors():
    m = fc_model(k=8, c=4, hidden=5, seed=7)
    x = np.random.default_rng(8).integers(-100, 100, 8).astype(np.int8)
    lr = 0.01
    steps = {}
    for qas in (True, False):
        tr = Trainer(m, Scheme.build(m, n_bias=2))
        tr.step(x, 2, lr=lr, qas=qas, trace=True)
        steps[qas] = tr.info.grads
    for layer in (0, 1):
        g = steps[True][layer]
        s_b = m.tensors[m.layers[layer].bias].scales.astype(np.float64)
        # QAS: d/2^15 * s_b = -lr * dL/db (the float32 rounding of the factors and the
        # step's rounding to 2^-15 LSB are the only differences)
        want = -lr * g["b"] / s_b * 32768
        assert np.all(np.abs(g["db"] - want) <= 1 + 1e-5 * np.abs(want))
        # plain int8 SGD: d/2^15 = -lr * dL/d(b_q) = -lr * dL/db * s_b
        want_p = -lr * steps[False][layer]["b"] * s_b * 32768
        assert np.all(np.abs(steps[False][layer]["db"] - want_p) <= 1 + 1e-5 * np.abs(want_p))
    gw = steps[True][1]
    s_w = m.tensors[m.layers[1].weight].scales.astype(np.float64)
    want = -lr * gw["w"] / s_w[:, None] * 32768
    assert np.all(np.abs(gw["dw"] - want) <= 1 + 1e-5 * np.abs(want))


def test_momentum_is_a_float32_velocity():
    m = fc_model(k=8, c=3, seed=9)
    tr = Trainer(m, Scheme.build(m, n_bias=1), momentum=0.9)
    x = np.full(8, 10, np.int8)
    v = np.zeros(3, np.float32)
    for _ in range(5):
        tr.step(x, 1, lr=1e-3, trace=True)
        v = (np.float32(0.9) * v + tr.info.grads[0]["db"].astype(np.float32)).astype(np.float32)
    assert np.array_equal(tr.mom_b[0], v)
    with pytest.raises(ValueError, match="momentum"):
        Trainer(m, momentum=1.5)


def test_step_validates_inputs_and_no_scheme_changes_nothing():
    m = fc_model(k=8, c=3, seed=10)
    tr = Trainer(m, Scheme())
    loss = tr.step(np.zeros(8, np.int8), 1, lr=1.0)
    assert isinstance(loss, np.float32) and loss > 0
    assert tr.state_bytes()[32:] == b""
    with pytest.raises(ValueError, match="label"):
        tr.step(np.zeros(8, np.int8), 3, lr=0.1)
    with pytest.raises(TypeError):
        tr.step(np.zeros(8, np.int16), 0, lr=0.1)
    with pytest.raises(ValueError, match="elements"):
        tr.step(np.zeros(7, np.int8), 0, lr=0.1)
    assert training_arena(m, Scheme()) == inference_arena(m)


def test_loss_matches_float64_softmax():
    m = fc_model(k=8, c=5, seed=11)
    tr = Trainer(m)
    xs, _ = _data(20, 8, 5, 12)
    for x in xs:
        q = tr.predict(x).reshape(-1).astype(np.float64)
        z = 0.1 * (q - 5)
        for label in range(5):
            want = np.log(np.exp(z - z.max()).sum()) + z.max() - z[label]
            got = Trainer(m).step(x, label, lr=0.0)
            assert abs(float(got) - want) <= 1e-5 * max(1.0, want)


# --------------------------------------------------------------------------------------------
# Memory layout
# --------------------------------------------------------------------------------------------


def test_training_layout_by_hand():
    # x(10) -> FC 5 (ReLU) -> FC 3; scheme: bias of both + classifier weights (default)
    m = fc_model(k=10, c=3, hidden=5, seed=13)
    s = Scheme.default(m)
    regions = training_layout(m, s)
    a = inference_arena(m)  # max(12+8, 8+4) = 20
    assert a == 20
    # int16 gradient ping-pong: slots align4(2*5) = 12 (t_1) and align4(2*3) = 8 (t_2), pair 20;
    # t_2 (the logits) at 0, t_1 flush against 20; the fold buffer (layer 1 trains weights,
    # 3 outputs) at 20, align4(2*3) = 8 bytes; l1 selection needs 4*3 = 12
    assert [r.name for r in regions] == ["work", "saved", "params", "loss"]
    assert regions[0].size == max(a, 20 + 8, 12) == 28
    assert ("grad", 2, 0, 8) in regions[0].items and ("grad", 1, 8, 12) in regions[0].items
    assert ("fold", -1, 20, 8) in regions[0].items
    # saved: layer 0 mask (5 bits -> 4 bytes), layer 1 input (5 -> 8) + mask (3 bits -> 4)
    assert regions[1].size == 4 + 8 + 4
    # params: layer 0 bias 20 + res 12 (10 -> 12); layer 1 bias 12, map 8 (6), weights 16 (15),
    # residuals 2*(3+15)=36; the classifier's scales and multipliers 16*3 (§6.3, refit §9)
    assert regions[2].size == 20 + 12 + 12 + 8 + 16 + 36 + 48
    assert regions[3].size == 12
    off = 0
    for r in regions:
        assert r.offset == off and r.offset % 4 == 0 and r.size % 4 == 0
        for _, _, o, n in r.items:
            assert o % 4 == 0 and n % 4 == 0
        off += r.size
    assert training_arena(m, s) == off == 28 + 16 + 152 + 12
    assert training_arena(m, s, momentum=True) == off + 4 * 5 + align4(4 * 18)
    assert regions[2].size == len(Trainer(m, s).params_region())
    assert training_layout(m, s, True)[2].size == len(Trainer(m, s, momentum=0.5).params_region())


def test_params_region_size_matches_memory_model_on_random_models():
    from tests.support.modelgen import tflite_model

    from edgetune.convert.export import tflite_to_etm

    for seed in range(12):
        m = tflite_to_etm(tflite_model(seed))
        wl = weight_layers(m)
        if not wl:
            continue
        for s in (Scheme.default(m), Scheme.build(m, 1, {wl[0]: Fraction(1, 2)})):
            for mom in (0.0, 0.5):
                tr = Trainer(m, s, momentum=mom)
                regions = training_layout(m, s, mom > 0)
                assert regions[2].size == len(tr.params_region()), seed
                assert sum(r.size for r in regions) == training_arena(m, s, mom > 0)


# --------------------------------------------------------------------------------------------
# Trained-weights file
# --------------------------------------------------------------------------------------------


def _trained(momentum: float = 0.5):
    m = fc_model(k=8, c=4, hidden=6, seed=14)
    s = Scheme.build(m, 2, {0: Fraction(1, 2)})
    tr = Trainer(m, s, momentum=momentum)
    xs, ys = _data(30, 8, 4, 15)
    for x, y in zip(xs, ys):
        tr.step(x, y, lr=0.02)
    return m, s, tr, xs, ys


def test_state_round_trip_and_continue_identically(tmp_path):
    m, s, tr, xs, ys = _trained()
    data = tr.state_bytes()
    magic, ver, hsize, size, crc, mcrc, scrc, p, flags = struct.unpack_from("<4sHHIIIIII", data)
    assert (magic, ver, hsize, size, flags) == (b"EDTW", 2, 32, len(data), 1)
    assert crc == zlib.crc32(data[16:]) & 0xFFFFFFFF
    assert mcrc == struct.unpack_from("<I", write_etm(m), 12)[0]
    assert scrc == zlib.crc32(s.encode()) & 0xFFFFFFFF and p == len(data) - 32
    fresh = Trainer(write_etm(m), s, momentum=0.5)
    assert fresh.state_bytes() != data
    path = tmp_path / "w.edtw"
    tr.save(str(path))
    assert path.read_bytes() == data and not (tmp_path / "w.edtw.tmp").exists()
    fresh.load(str(path))
    assert fresh.state_bytes() == data
    for x, y in zip(xs[:5], ys[:5]):
        assert tr.step(x, y, lr=0.02) == fresh.step(x, y, lr=0.02)
    assert tr.state_bytes() == fresh.state_bytes()
    fresh.reset()
    assert fresh.state_bytes() == Trainer(m, s, momentum=0.5).state_bytes()


def _recrc(b: bytearray) -> bytes:
    struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return bytes(b)


def test_state_refusals_leave_state_unchanged():
    m, s, tr, _, _ = _trained()
    good = tr.state_bytes()
    other = Trainer(fc_model(k=8, c=4, hidden=6, seed=99), s, momentum=0.5)
    target = Trainer(m, s, momentum=0.5)
    target.step(np.zeros(8, np.int8), 1, lr=0.1)
    before = target.state_bytes()
    flipped = bytearray(good)
    flipped[40] ^= 1
    bad_scheme = Trainer(m, Scheme.build(m, 2, {0: 1}), momentum=0.5).state_bytes()
    bad_weight = bytearray(good)
    # first weight byte of layer 0's copy: after layer-0 bias (6 x 4 bytes) and map (6 x 2)
    bad_weight[32 + 24 + 12] = 0x80
    bad_res = bytearray(good)
    off = 32 + 24 + 12 + align4(3 * 8)  # first residual (a bias residual) of layer 0
    bad_res[off: off + 2] = struct.pack("<h", 16384)
    bad_map = bytearray(good)
    bad_map[32 + 24: 32 + 26] = struct.pack("<h", 2)  # channel 0 claims slot 2
    cases = {
        "channel map": _recrc(bad_map),
        "another model": other.state_bytes(),
        "truncated": good[:-4],
        "truncated header": good[:20],
        "CRC": bytes(flipped),
        "scheme": bad_scheme,
        "momentum": Trainer(m, s).state_bytes(),
        "magic": b"XXXX" + good[4:],
        "weight": _recrc(bad_weight),
        "residual": _recrc(bad_res),
    }
    for what, data in cases.items():
        with pytest.raises(ValueError):
            target.load_state(data)
            print("accepted:", what)
        assert target.state_bytes() == before, what
    target.load_state(good)
    assert target.state_bytes() == good


def test_unusable_scales_refused():
    m = fc_model(k=6, c=4, hidden=5, seed=16)
    m.tensors[m.layers[1].weight].scales[2] = 0.0  # frozen classifier weights after first = 0
    with pytest.raises(ValueError, match="weight scale"):
        Trainer(m, Scheme((Entry(0, True, ()),)))
    m = fc_model(k=6, c=4, hidden=5, seed=16)
    m.tensors[m.layers[0].bias].scales[0] = np.nan
    with pytest.raises(ValueError, match="bias scale"):
        Trainer(m, Scheme((Entry(0, True, ()),)))
    Trainer(m, Scheme((Entry(1, True, ()),)))  # layer 0 is not used: fine


def test_attach_writes_the_scheme_into_the_etm():
    from edgetune.format.modelfile import read_etm
    from edgetune.format.scheme import attach

    m = fc_model(k=6, c=9, hidden=5)
    s = attach(m, "bias=1,w0=1/2")
    back = read_etm(write_etm(m))
    assert Scheme.for_model(back) == s
    assert s.entries == (Entry(0, False, l1_channels(m, 0, 2)), Entry(1, True, tuple(range(9))))
    with pytest.raises(ValueError, match="ratio"):
        attach(m, "w0=1/3")
