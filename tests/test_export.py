"""`edgetune export`: real Keras models through the real TFLite converter into .etm files.

Checks the EtmModel structure (ops, shapes, weights, quantization, prepared parameters), the
write/read round trip, the errors for models the device cannot run, and that the prepared
multipliers agree with the tflite-micro interpreter exactly at rounding boundaries (weights set to
zero and the bias chosen so that the output depends only on multiplier and shift).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgetune.convert import prepare
from edgetune.commands.export import cli
from edgetune.convert.export import tflite_to_etm
from edgetune.format.modelfile import (
    ACT_NONE,
    ACT_RELU,
    ACT_RELU6,
    DT_INT8,
    DT_INT32,
    KIND_CONST,
    NONE,
    OP_FULLY_CONNECTED,
    read_etm,
    write_etm,
)

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
L = keras.layers


def _convert(model, shape, quantize: bool = True, per_tensor_dense: bool = False) -> bytes:
    """Full-integer int8 conversion with a representative dataset and int8 input/output."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        def rep():
            rng = np.random.default_rng(0)
            for _ in range(16):
                yield [rng.standard_normal((1,) + shape).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        if per_tensor_dense:
            conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    return conv.convert()


def _bias_init():
    return keras.initializers.RandomNormal(stddev=0.3, seed=1)


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    keras.utils.set_random_seed(7)
    out = {}
    # 1-D: Conv1D (SAME, RELU, bias) -> DepthwiseConv1D (VALID, stride 2, no bias) -> pools -> GAP1D
    m = keras.Sequential([
        keras.Input((16, 3)),
        L.Conv1D(4, 3, padding="same", activation="relu", bias_initializer=_bias_init()),
        L.DepthwiseConv1D(3, strides=2, use_bias=False),
        L.MaxPooling1D(2),
        L.AveragePooling1D(2, padding="same"),
        L.GlobalAveragePooling1D(),
        L.Dense(5, use_bias=False),
        L.Softmax(),
    ])
    out["1d"] = _convert(m, (16, 3))
    # 2-D: Conv2D (VALID, stride 2, RELU6, no bias) -> DepthwiseConv2D (SAME, dm 2) -> pools -> Flatten
    m = keras.Sequential([
        keras.Input((11, 9, 2)),
        L.Conv2D(4, 3, strides=2, activation="relu6", use_bias=False),
        L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, bias_initializer=_bias_init()),
        L.MaxPooling2D(2, padding="same"),
        L.AveragePooling2D((1, 2)),
        L.Flatten(),
        L.Dense(6, activation="relu", bias_initializer=_bias_init()),
    ])
    out["2d"] = _convert(m, (11, 9, 2))
    # GAP2D and a per-tensor quantized dense layer with bias
    m = keras.Sequential([
        keras.Input((6, 5, 3)),
        L.Conv2D(5, 1, bias_initializer=_bias_init()),
        L.GlobalAveragePooling2D(),
        L.Dense(4, bias_initializer=_bias_init()),
    ])
    out["gap_pt"] = _convert(m, (6, 5, 3), per_tensor_dense=True)
    m = keras.Sequential([keras.Input((8,)), L.Dense(4, activation="tanh")])
    out["tanh"] = _convert(m, (8,))
    x = keras.Input((8, 2))
    y = L.Conv1D(2, 3, padding="same")(x)
    out["add"] = _convert(keras.Model(x, L.Add()(
        [x, y])), (8, 2))
    m = keras.Sequential([keras.Input((8, 2)), L.Conv1D(3, 3), L.GlobalAveragePooling1D()])
    out["float"] = _convert(m, (8, 2), quantize=False)
    return out


def _check_prepared(model) -> None:
    for ly in model.layers:
        assert ly.multipliers.shape == ly.shifts.shape
        for m, s in zip(ly.multipliers.tolist(), ly.shifts.tolist()):
            assert m == 0 or (1 << 29) <= m < (1 << 31)  # MEAN folds 1/N: >= 2^29
            assert -31 <= s <= 30
        assert -128 <= ly.act_min <= ly.act_max <= 127
        assert -128 <= ly.output_offset <= 127 and -127 <= ly.input_offset <= 128


def test_1d_model_structure(models):
    m = tflite_to_etm(models["1d"], {"class_names": ["a", "b", "c", "d", "e"]})
    assert m.meta["ops"] == ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN",
                             "FULLY_CONNECTED"]
    assert m.meta["softmax_on_host"] is True
    assert m.meta["class_names"] == ["a", "b", "c", "d", "e"]
    assert m.meta["input_shape"] == [1, 16, 3]
    assert m.input_tensor.shape == (1, 1, 16, 3)
    assert m.meta["input_scale"] == pytest.approx(m.input_tensor.scale)
    assert m.meta["input_zero_point"] == m.input_tensor.zero_point
    assert m.output_tensor.shape == (1, 1, 1, 5)
    assert m.meta["output_zero_point"] == m.output_tensor.zero_point
    conv, dw, mp, ap, mean, fc = m.layers
    # Conv1D: H = 1, OHWI weights, per-channel scales, int32 bias with per-channel scales
    w = m.tensors[conv.weight]
    assert w.shape == (4, 1, 3, 3) and w.dtype == DT_INT8 and w.kind == KIND_CONST
    assert w.scales is not None and w.scales.shape == (4,) and w.quant_axis == 0
    b = m.tensors[conv.bias]
    assert b.dtype == DT_INT32 and b.shape == (4, 1, 1, 1) and b.scales.shape == (4,)
    np.testing.assert_allclose(b.scales, m.input_tensor.scale * w.scales, rtol=1e-5)
    assert (conv.filter_h, conv.filter_w, conv.stride_h, conv.stride_w) == (1, 3, 1, 1)
    assert (conv.pad_h, conv.pad_w) == (0, 1)  # SAME, k = 3
    assert conv.activation == ACT_RELU
    out = m.tensors[conv.output]
    assert conv.act_min == max(-128, out.zero_point) and conv.act_max == 127
    assert m.tensors[conv.output].shape == (1, 1, 16, 4)
    # DepthwiseConv1D: (1, KH, KW, C_out) weights, axis 3, no bias, VALID stride 2
    wd = m.tensors[dw.weight]
    assert wd.shape == (1, 1, 3, 4) and wd.quant_axis == 3 and wd.scales.shape == (4,)
    # the converter gives bias-free convolutions a zero bias; bias-free dense layers get none
    assert dw.depth_multiplier == 1
    assert dw.bias == NONE or not m.tensors[dw.bias].data.any()
    assert (dw.stride_w, dw.pad_w) == (2, 0) and m.tensors[dw.output].shape == (1, 1, 7, 4)
    assert dw.activation == ACT_NONE and (dw.act_min, dw.act_max) == (-128, 127)
    # pools keep quantization, carry filter/stride
    assert mp.weight == NONE and mp.multipliers.size == 0 and (mp.filter_w, mp.stride_w) == (2, 2)
    assert m.tensors[mp.output].shape == (1, 1, 3, 4)
    assert (ap.filter_w, ap.stride_w, ap.pad_w) == (2, 2, 0) and m.tensors[ap.output].shape == (1, 1, 2, 4)
    assert m.tensors[ap.output].zero_point == m.tensors[ap.input].zero_point
    # MEAN: one multiplier with 1/N folded in
    assert mean.multipliers.size == 1 and mean.p0 == 0
    x_t, y_t = m.tensors[mean.input], m.tensors[mean.output]
    n = x_t.shape[1] * x_t.shape[2]
    m0, s0 = prepare.quantize_multiplier(float(np.float32(x_t.scale)) / float(np.float32(y_t.scale)))
    k = min(n.bit_length() - 1, 32, 31 + s0)
    assert (int(mean.multipliers[0]), int(mean.shifts[0])) == ((m0 << k) // n, s0 - k)
    assert y_t.shape == (1, 1, 1, 4)
    # FC: (C_out, 1, 1, K) weights
    assert m.tensors[fc.weight].shape == (5, 1, 1, 4) and fc.multipliers.shape == (5,)
    assert fc.bias == NONE
    _check_prepared(m)


def test_2d_model_structure(models):
    m = tflite_to_etm(models["2d"])
    assert m.meta["ops"] == ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED"]
    assert "softmax_on_host" not in m.meta
    conv, dw, mp, ap, fc = m.layers
    assert conv.activation == ACT_RELU6
    assert conv.bias == NONE or not m.tensors[conv.bias].data.any()  # use_bias=False
    out = m.tensors[conv.output]
    q6 = out.zero_point + prepare.round_half_away(float(np.float32(6.0) / np.float32(out.scale)))
    assert conv.act_max == min(127, q6) and conv.act_min == max(-128, out.zero_point)
    assert out.shape == (1, 5, 4, 4) and (conv.stride_h, conv.stride_w, conv.pad_h, conv.pad_w) == (2, 2, 0, 0)
    assert dw.depth_multiplier == 2 and m.tensors[dw.weight].shape == (1, 3, 3, 8)
    assert (dw.pad_h, dw.pad_w) == (1, 1) and m.tensors[dw.output].shape == (1, 5, 4, 8)
    assert dw.bias != NONE and m.tensors[dw.bias].shape == (8, 1, 1, 1)
    # MaxPool 2x2 SAME on 5x4: out 3x2, total padding 1 / 0 -> top/left pad 0
    assert m.tensors[mp.output].shape == (1, 3, 2, 8) and (mp.pad_h, mp.pad_w) == (0, 0)
    assert m.tensors[ap.output].shape == (1, 3, 1, 8)
    # Flatten is removed: FC reads the (1, 3, 1, 8) tensor as K = 24
    assert fc.input == ap.output and m.tensors[fc.weight].shape == (6, 1, 1, 24)
    assert fc.activation == ACT_RELU
    assert m.output_tensor.shape == (1, 1, 1, 6)
    _check_prepared(m)


def test_per_tensor_dense_multiplier(models):
    m = tflite_to_etm(models["gap_pt"])
    assert m.meta["ops"] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    fc = m.layers[-1]
    w = m.tensors[fc.weight]
    assert w.scales is None and w.scale > 0  # per-tensor
    x, y = m.tensors[fc.input], m.tensors[fc.output]
    # the all-double product (what the installed tflite-micro does, see the boundary tests)
    expect = prepare.quantize_multiplier(float(np.float32(x.scale)) * float(np.float32(w.scale))
                                         / float(np.float32(y.scale)))
    assert all((int(a), int(b)) == expect for a, b in zip(fc.multipliers, fc.shifts))
    assert fc.multipliers.shape == (4,)
    _check_prepared(m)


@pytest.mark.parametrize("name", ["1d", "2d", "gap_pt"])
def test_write_read_round_trip(models, name):
    m = tflite_to_etm(models[name])
    blob = write_etm(m)
    m2 = read_etm(blob)
    assert write_etm(m2) == blob
    assert len(m2.layers) == len(m.layers) and m2.meta == json.loads(json.dumps(m.meta))
    for a, b in zip(m.layers, m2.layers):
        assert a.op == b.op and a.input == b.input and a.output == b.output
        assert np.array_equal(a.multipliers, b.multipliers) and np.array_equal(a.shifts, b.shifts)
    for a, b in zip(m.tensors, m2.tensors):
        assert a.shape == b.shape and a.zero_point == b.zero_point
        assert (a.data is None) == (b.data is None)
        if a.data is not None:
            assert np.array_equal(a.data, b.data)


@pytest.mark.parametrize("name", ["1d", "2d", "gap_pt"])
def test_exported_model_matches_tflite_micro(models, name):
    """The numpy twin on the exported model equals tflite-micro on every layer output (the
    logits too when the SOFTMAX was dropped), so the exporter's shapes and parameters are the
    ones TFLM runs with."""
    from tflite_micro.python.tflite_micro import runtime

    from edgetune.twin import reference

    tfl = models[name]
    m = read_etm(write_etm(tflite_to_etm(tfl)))
    names = {}
    for i, t in enumerate(runtime.convert_bytearray_to_object(tfl).subgraphs[0].tensors):
        names.setdefault(t.name.decode() if isinstance(t.name, bytes) else str(t.name), i)
    exported = tflite_to_etm(tfl)
    idx = [names[exported.tensors[ly.output].name] for ly in exported.layers]
    itp = runtime.Interpreter.from_bytes(tfl, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    shape = tuple(itp.get_input_details(0)["shape"])
    rng = np.random.default_rng(4)
    xs = rng.integers(-128, 128, (40, m.input_tensor.size)).astype(np.int8)
    _, acts = reference.forward_batch(m, xs, keep=True)
    for n in range(len(xs)):
        itp.set_input(xs[n].reshape(shape), 0)
        itp.invoke()
        for k, ti in enumerate(idx):
            want = np.asarray(itp.GetTensor(ti, 0)["tensor_data"]).reshape(-1)
            assert np.array_equal(want, acts[k + 1][n].reshape(-1)), f"input {n}, layer {k} ({m.layers[k].op_name})"


def test_float_model_rejected(models):
    with pytest.raises(ValueError, match=r"FLOAT32.*int8"):
        tflite_to_etm(models["float"])


def test_unsupported_ops_rejected(models):
    with pytest.raises(ValueError, match=r"operator \d+ \(TANH\) is not supported"):
        tflite_to_etm(models["tanh"])
    with pytest.raises(ValueError, match=r"operator \d+ \(ADD\) is not supported"):
        tflite_to_etm(models["add"])


def test_corrupt_input_rejected(models):
    with pytest.raises(ValueError, match="TFL3"):
        tflite_to_etm(b"")
    with pytest.raises(ValueError, match="TFL3"):
        tflite_to_etm(b"\0" * 100)
    good = models["2d"]
    rng = np.random.default_rng(0)
    cuts = sorted(set(rng.integers(8, len(good), 25).tolist()))
    for n in cuts:  # truncated files: a ValueError, never another exception
        with pytest.raises(ValueError):
            tflite_to_etm(good[:n])
    for _ in range(60):  # random byte damage: converts or raises ValueError
        bad = bytearray(good)
        for pos in rng.integers(8, len(good), 4):
            bad[pos] = int(rng.integers(0, 256))
        try:
            tflite_to_etm(bytes(bad))
        except ValueError:
            pass


def _ops(model, g, S, name):
    code = getattr(S.BuiltinOperator, name)
    return [op for op in g.operators if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                                            model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == code]


def _batch2(model, g, S):
    g.tensors[g.inputs[0]].shape = np.array([2, 11, 9, 2], np.int32)


def _int16_input(model, g, S):
    g.tensors[g.inputs[0]].type = S.TensorType.INT16


def _uint8_weights(model, g, S):
    conv = _ops(model, g, S, "CONV_2D")[0]
    g.tensors[conv.inputs[1]].type = S.TensorType.UINT8


def _dilation(model, g, S):
    _ops(model, g, S, "CONV_2D")[0].builtinOptions.dilationHFactor = 2


def _relu_n1(model, g, S):
    _ops(model, g, S, "CONV_2D")[0].builtinOptions.fusedActivationFunction = S.ActivationFunctionType.RELU_N1_TO_1


def _pool_requant(model, g, S):
    op = _ops(model, g, S, "MAX_POOL_2D")[0]
    g.tensors[op.outputs[0]].quantization.zeroPoint = [g.tensors[op.outputs[0]].quantization.zeroPoint[0] + 1]


def _reshape_requant(model, g, S):
    op = _ops(model, g, S, "RESHAPE")[-1]
    g.tensors[op.outputs[0]].quantization.scale = [np.float32(g.tensors[op.outputs[0]].quantization.scale[0] * 2)]


def _branch(model, g, S):
    conv, fc = _ops(model, g, S, "CONV_2D")[0], _ops(model, g, S, "FULLY_CONNECTED")[0]
    fc.inputs[0] = conv.outputs[0]  # skips depthwise and the pools: not a chain


def _two_subgraphs(model, g, S):
    import copy
    model.subgraphs.append(copy.deepcopy(g))


def _keep_num_dims(model, g, S):
    fc = _ops(model, g, S, "FULLY_CONNECTED")[0]
    fc.builtinOptions.keepNumDims = True
    g.tensors[fc.outputs[0]].shape = np.array([1, 1, 6], np.int32)


def _two_outputs(model, g, S):
    g.outputs = [g.outputs[0], _ops(model, g, S, "CONV_2D")[0].outputs[0]]


@pytest.mark.parametrize("edit, msg", [
    (_batch2, r"model input tensor \d+ '.*' \(INT8, shape \[2, 11, 9, 2\]\) has batch 2"),
    (_int16_input, r"tensor \d+ '.*' \(INT16, .*is INT16; edgetune needs a full-integer int8 model"),
    (_uint8_weights, r"operator 0 \(CONV_2D\): weights tensor \d+ '.*' \(UINT8, .*only int8 weights"),
    (_dilation, r"operator 0 \(CONV_2D\): dilation 2x1 is not supported"),
    (_relu_n1, r"operator 0 \(CONV_2D\): fused activation RELU_N1_TO_1 is not supported"),
    (_pool_requant, r"operator \d+ \(MAX_POOL_2D\): input and output quantization differ"),
    (_reshape_requant, r"operator \d+ \(RESHAPE\) changes quantization"),
    (_branch, r"do not form a chain: operator 1 \(DEPTHWISE_CONV_2D\) is not on the path"),
    (_two_subgraphs, r"2 subgraphs"),
    (_keep_num_dims, r"operator \d+ \(FULLY_CONNECTED\): keep_num_dims producing a 3-D output"),
    (_two_outputs, r"exactly one input and one output"),
])
def test_unsupported_structures_rejected(models, edit, msg):
    with pytest.raises(ValueError, match=msg):
        tflite_to_etm(_edit(models["2d"], edit))


def test_cli_writes_atomically(models, tmp_path):
    src = tmp_path / "m.tflite"
    src.write_bytes(models["1d"])
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"class_names": ["w", "x", "y", "z", "q"], "sample_rate": 50}))
    out = tmp_path / "m.etm"
    assert cli([str(src), "-o", str(out), "--meta", str(meta)]) == 0
    m = read_etm(out.read_bytes())
    assert m.meta["sample_rate"] == 50 and m.meta["softmax_on_host"] is True
    assert m.scheme == b""
    assert out.read_bytes() == write_etm(tflite_to_etm(models["1d"], json.loads(meta.read_text())))
    with_scheme = tmp_path / "s.etm"
    assert cli([str(src), "-o", str(with_scheme), "--scheme", "default"]) == 0
    assert read_etm(with_scheme.read_bytes()).scheme != b""
    assert cli([str(src), "-o", str(with_scheme), "--scheme", "bogus=1"]) == 1  # keeps the old file
    assert read_etm(with_scheme.read_bytes()).scheme != b""
    # failures: non-zero exit, one-line message, nothing written, an existing file left untouched
    for bad_name in ("tanh", "float"):
        bad = tmp_path / f"{bad_name}.tflite"
        bad.write_bytes(models[bad_name])
        dst = tmp_path / f"{bad_name}.etm"
        proc = subprocess.run([sys.executable, "-m", "edgetune.cli", "export", str(bad), "-o", str(dst)],
                              capture_output=True, text=True)
        assert proc.returncode != 0
        assert proc.stderr.count("\n") == 1 and "edgetune export: error:" in proc.stderr
        assert not dst.exists()
    before = out.read_bytes()
    (tmp_path / "junk.tflite").write_bytes(b"junk" * 10)
    assert cli([str(tmp_path / "junk.tflite"), "-o", str(out)]) == 1
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.tflite", "meta.json", "m.etm", "s.etm", "tanh.tflite", "float.tflite", "junk.tflite"])


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


def _edit(tflite: bytes, edit) -> bytes:
    """Apply `edit(model, subgraph, S)` to the flatbuffer object tree and re-serialize it."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

    model = S.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    edit(model, model.subgraphs[0], S)
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _edit_and_run(tflite: bytes, edit) -> tuple[bytes, np.ndarray]:
    """`_edit`, then run tflite-micro on a zero input; returns (model bytes, int8 output)."""
    from tflite_micro import runtime

    data = _edit(tflite, edit)
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


def test_cli_picks_up_the_meta_json_beside_the_tflite(models, tmp_path, capsys):
    """`edgetune quantize` writes MODEL.meta.json beside MODEL.tflite; export without --meta
    used to drop it silently (no class names on the device: app.score() then failed on 'PEN')."""
    src = tmp_path / "m.tflite"
    src.write_bytes(models["1d"])
    names = ["PEN", "ABD", "x", "y", "z"]
    (tmp_path / "m.meta.json").write_text(json.dumps({"class_names": names, "sample_rate": 50}))
    out = tmp_path / "m.etm"
    assert cli([str(src), "-o", str(out)]) == 0
    assert read_etm(out.read_bytes()).meta["class_names"] == names
    assert "m.meta.json" in capsys.readouterr().err  # says which file it used
    assert cli([str(src), "-o", str(out), "--no-meta"]) == 0
    assert "class_names" not in read_etm(out.read_bytes()).meta
    (tmp_path / "m.meta.json").unlink()
    assert cli([str(src), "-o", str(out)]) == 0
    assert "no class names" in capsys.readouterr().err  # and says when there is none


def test_cli_checks_the_output_path_first(models, tmp_path, capsys):
    """A missing output directory is refused before any conversion or scheme search, naming the
    path (not a temp file) and how to fix it."""
    src = tmp_path / "m.tflite"
    src.write_bytes(models["1d"])
    t0 = __import__("time").time()
    assert cli([str(src), "-o", str(tmp_path / "nodir" / "m.etm"), "--scheme", "auto:budget=5000"]) == 1
    err = capsys.readouterr().err
    assert __import__("time").time() - t0 < 5
    assert "nodir" in err and "does not exist" in err and "mkdir -p" in err and ".tmp" not in err
    assert cli([str(src), "-o", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err
