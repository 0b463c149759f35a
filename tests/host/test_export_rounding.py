"""`edgetune export`: the prepared multipliers agree with the tflite-micro interpreter exactly at
rounding boundaries (weights set to zero and the bias chosen so that the output depends only on
multiplier and shift), and prepare.py's quantization helpers at their edges.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.convert import prepare
from edgetune.convert.export import tflite_to_etm
from edgetune.format.modelfile import ACT_RELU6, OP_FULLY_CONNECTED

from tests.support.tflitefile import edit_tflite

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def models(export_models) -> dict[str, bytes]:
    return export_models


# --- prepare.py against the tflite-micro interpreter, at rounding boundaries --------------------


def _mbqm(x: int, m: int, s: int) -> int:
    """TFLM MultiplyByQuantizedMultiplier (double rounding) on Python ints."""
    x = x * (1 << s) if s > 0 else x
    x = (x + 2**31) % 2**32 - 2**31
    if x == m == -(2**31):
        hi = 2**31 - 1
    else:
        v = x * m + ((1 << 30) if x * m >= 0 else 1 - (1 << 30))
        hi = v // 2**31 if v >= 0 else -((-v) // 2**31)  # C division truncates toward zero
    e = -s if s < 0 else 0
    mask = (1 << e) - 1
    rem, thr = hi & mask, (mask >> 1) + (1 if hi < 0 else 0)
    return (hi >> e) + (1 if rem > thr else 0)


def _boundary_biases(ok: tuple[int, int], alt: tuple[int, int], zp: int, count: int) -> list[int]:
    """int32 accumulators where multipliers `ok` and `alt` give different int8 outputs, found
    next to the rounding boundaries (y + 1/2) / M of the real multiplier M."""
    m, s = ok
    real = m * 2.0 ** (s - 31)
    found = []
    for y in list(range(126 - zp, 0, -1)) + list(range(-127 - zp, 0)):
        base = int((y + 0.5) / real)
        for acc in range(base - 2, base + 3):
            if not -(2**31) <= acc < 2**31:
                continue
            r = _mbqm(acc, m, s)
            if -128 <= r + zp <= 127 and _mbqm(acc, *alt) != r:
                found.append(acc)
                break
        if len(found) == count:
            break
    return found


def _edit_and_run(tflite: bytes, edit) -> tuple[bytes, np.ndarray]:
    """`edit_tflite`, then run tflite-micro on a zero input; returns (model bytes, int8 output)."""
    from tflite_micro import runtime

    data = edit_tflite(tflite, edit)
    it = runtime.Interpreter.from_bytes(data)
    it.set_input(np.zeros(it.get_input_details(0)["shape"], np.int8), 0)
    it.invoke()
    return data, it.get_output(0).reshape(-1)


def _set_buffer(model, tensor, arr: np.ndarray) -> None:
    model.buffers[tensor.buffer].data = np.frombuffer(arr.tobytes(), np.uint8).copy()


# Real multipliers ~ 1e-7, so rounding boundaries spread over the whole int32 range. SW_RARE is
# one of the ~1 in 10^7 filter scales (found offline with numpy) for which
# double(SI) * double(SW) / double(SO) and double(SI) * (double(SW) / double(SO)) round to
# different multipliers; SW_PLAIN only separates the float-product order.
SI, SO = np.float32(0.0437), np.float32(21011.7)
SW_RARE = np.float32(0.0963919386267662)
SW_PLAIN = [np.float32(v) for v in (0.0123, 0.0456, 0.0789, 0.0321)]


def _candidates(si, sw, so) -> dict[str, tuple[int, int]]:
    """The orders TFLM could evaluate the effective scale in (prepare.py uses 'double')."""
    return {
        "double": prepare.quantize_multiplier(float(si) * float(sw) / float(so)),
        "float_product": prepare.quantize_multiplier(float(np.float32(si * sw)) / float(so)),
        "filter_over_out": prepare.quantize_multiplier(float(si) * (float(sw) / float(so))),
    }


def _biases_against(sw, alt_name: str, zp: int, count: int) -> list[int]:
    c = _candidates(SI, sw, SO)
    assert c["double"] != c[alt_name], f"scale {sw} does not separate 'double' from {alt_name!r}"
    b = _boundary_biases(c["double"], c[alt_name], zp, count)
    assert len(b) == count
    return b


def test_fc_per_tensor_multiplier_matches_tflm(models):
    """Per-tensor FULLY_CONNECTED: with zero weights the output is MBQM(bias) + zp, so biases on
    rounding boundaries reveal which multiplier tflite-micro computed."""
    zp = 0
    sw = SW_RARE
    ok = _candidates(SI, sw, SO)["double"]
    alts = [_candidates(SI, sw, SO)[k] for k in ("float_product", "filter_over_out")]
    biases = _biases_against(sw, "float_product", zp, 2) + _biases_against(sw, "filter_over_out", zp, 2)

    def edit(model, g, S):
        fc = g.operators[-1]
        ti, tw, tb, to = (g.tensors[i] for i in (fc.inputs[0], fc.inputs[1], fc.inputs[2], fc.outputs[0]))
        ti.quantization.scale = [SI]
        tw.quantization.scale = [sw]
        tb.quantization.scale = [np.float32(SI * sw)]
        to.quantization.scale, to.quantization.zeroPoint = [SO], [zp]
        _set_buffer(model, tw, np.zeros(tuple(tw.shape), np.int8))
        _set_buffer(model, tb, np.array(biases, "<i4"))

    data, y = _edit_and_run(models["gap_pt"], edit)
    m = tflite_to_etm(data)
    fc = m.layers[-1]
    assert fc.op == OP_FULLY_CONNECTED and m.tensors[fc.weight].scales is None
    assert [(int(a), int(b)) for a, b in zip(fc.multipliers, fc.shifts)] == [ok] * 4
    assert y.tolist() == [_mbqm(b, *ok) + zp for b in biases]
    for alt in alts:
        assert y.tolist() != [_mbqm(b, *alt) + zp for b in biases]


def test_conv_per_channel_multiplier_matches_tflm(models):
    """Per-channel CONV_2D (1x1, zero weights): each channel's bias sits on a rounding boundary
    that only the double(in) * double(filter[c]) / double(out) multiplier gets right."""
    zp = 0
    chans = [(SW_RARE, _candidates(SI, SW_RARE, SO)["double"], _biases_against(SW_RARE, "filter_over_out", zp, 1)[0])]
    chans += [(w, _candidates(SI, w, SO)["double"], _biases_against(w, "float_product", zp, 1)[0]) for w in SW_PLAIN]

    def edit(model, g, S):
        conv = g.operators[0]
        ti, tw, tb, to = (g.tensors[i] for i in (conv.inputs[0], conv.inputs[1], conv.inputs[2], conv.outputs[0]))
        ti.quantization.scale = [SI]
        tw.quantization.scale = [c[0] for c in chans]
        tb.quantization.scale = [np.float32(SI * c[0]) for c in chans]
        to.quantization.scale, to.quantization.zeroPoint = [SO], [zp]
        _set_buffer(model, tw, np.zeros(tuple(tw.shape), np.int8))
        _set_buffer(model, tb, np.array([c[2] for c in chans], "<i4"))
        g.operators = [conv]  # the conv output becomes the model output
        g.outputs = [conv.outputs[0]]

    data, y = _edit_and_run(models["gap_pt"], edit)
    m = tflite_to_etm(data)
    conv = m.layers[0]
    assert [(int(a), int(b)) for a, b in zip(conv.multipliers, conv.shifts)] == [c[1] for c in chans]
    expect = [_mbqm(c[2], *c[1]) + zp for c in chans]
    assert np.all(y.reshape(-1, 5) == np.array(expect))
    for name in ("float_product", "filter_over_out"):
        wrong = [_mbqm(c[2], *_candidates(SI, c[0], SO)[name]) + zp for c in chans]
        assert wrong != expect  # the test can tell the evaluation orders apart


def test_relu6_clamp_matches_tflm(models):
    """RELU6's upper clamp is zp + round(6.0f / scale) in *float*: pick an output scale where the
    float quotient rounds up to k + 1/2 but the double one stays below it, saturate the conv (zero
    weights, huge bias) and read the clamp off tflite-micro's output."""
    found = None
    for k in range(60, 120):
        s = np.float32(6.0 / (k + 0.5))
        for _ in range(200):
            if float(np.float32(6.0) / s) >= k + 0.5 > 6.0 / float(s):
                found = s
                break
            s = np.nextafter(s, np.float32(1))
        if found is not None:
            break
    assert found is not None
    zp = -128
    as_float = zp + prepare.round_half_away(float(np.float32(6.0) / found))
    assert as_float != zp + prepare.round_half_away(6.0 / float(found))

    def edit(model, g, S):
        conv = g.operators[0]
        tw, tb, to = (g.tensors[i] for i in (conv.inputs[1], conv.inputs[2], conv.outputs[0]))
        conv.builtinOptions.fusedActivationFunction = S.ActivationFunctionType.RELU6
        to.quantization.scale, to.quantization.zeroPoint = [found], [zp]
        _set_buffer(model, tw, np.zeros(tuple(tw.shape), np.int8))
        _set_buffer(model, tb, np.full(tb.shape[0], 2**30, "<i4"))
        g.operators = [conv]
        g.outputs = [conv.outputs[0]]

    data, y = _edit_and_run(models["gap_pt"], edit)
    conv = tflite_to_etm(data).layers[0]
    assert (conv.act_min, conv.act_max, conv.activation) == (zp, as_float, ACT_RELU6)
    assert set(y.tolist()) == {as_float}


def test_quantize_multiplier_edges():
    assert prepare.quantize_multiplier(0.0) == (0, 0)
    assert prepare.quantize_multiplier(0.5) == (1 << 30, 0)
    assert prepare.quantize_multiplier(1.0) == (1 << 30, 1)
    # q * 2^31 rounds up to 2^31: halve and bump the shift
    assert prepare.quantize_multiplier(1.0 - 2.0**-40) == (1 << 30, 1)
    # shifts below -31 flush to zero; -31 survives
    assert prepare.quantize_multiplier(2.0**-33) == (0, 0)
    assert prepare.quantize_multiplier(2.0**-32) == (1 << 30, -31)
    # round half away from zero, not to even: q = 0.5 + 2^-32 -> 2^30 + 0.5 -> 2^30 + 1
    assert prepare.quantize_multiplier(0.5 + 2.0**-32) == ((1 << 30) + 1, 0)
    m, s = prepare.quantize_multiplier(0.1234)
    assert abs(m * 2.0 ** (s - 31) - 0.1234) < 1e-9
    assert prepare.round_half_away(2.5) == 3 and prepare.round_half_away(-2.5) == -3
    assert prepare.round_half_away(-0.4) == 0


def test_padding_and_activation_range():
    p = prepare.compute_padding(prepare.PADDING_SAME, 5, 4, 2, 2, 2, 2)
    assert (p.out_h, p.out_w, p.pad_h, p.pad_w, p.offset_h, p.offset_w) == (3, 2, 0, 0, 1, 0)
    p = prepare.compute_padding(prepare.PADDING_SAME, 7, 7, 4, 3, 1, 2)
    assert (p.out_h, p.out_w, p.pad_h, p.pad_w, p.offset_h) == (7, 4, 1, 1, 1)
    p = prepare.compute_padding(prepare.PADDING_VALID, 8, 9, 3, 3, 2, 2)
    assert (p.out_h, p.out_w, p.pad_h, p.pad_w) == (3, 4, 0, 0)
    assert prepare.activation_range(prepare.TFL_ACT_RELU, 0.05, -10)[:2] == (-10, 127)
    # 6 / 0.047 = 127.66 -> 128 -> + zp(-128) = 0
    assert prepare.activation_range(prepare.TFL_ACT_RELU6, 0.047, -128)[:2] == (-128, 0)
    assert prepare.activation_range(prepare.TFL_ACT_RELU6, 0.01, -128)[:2] == (-128, 127)
    with pytest.raises(ValueError, match="RELU_N1_TO_1"):
        prepare.activation_range(prepare.TFL_ACT_RELU_N1_TO_1, 0.01, 0, "operator 1 (CONV_2D)")
    with pytest.raises(ValueError, match="quantization differ"):
        prepare.check_pool_quantization(0.1, 0, 0.1, 1, "operator 2 (MAX_POOL_2D)")
    prepare.check_pool_quantization(0.1, 3, 0.1 + 1e-7, 3)
    # MEAN: QuantizeMultiplier(2.0) = (2^30, 2); N = 36 -> k = 5, (2^30 << 5) // 36, shift -3
    mp = prepare.mean_params(0.1, 0, 0.05, 0, 36)
    assert (mp.multiplier, mp.shift, mp.p0) == ((1 << 35) // 36, -3, 0)
