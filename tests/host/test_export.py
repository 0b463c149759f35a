"""`edgetune export`: real Keras models through the real TFLite converter into .etm files.

Checks the EtmModel structure (ops, shapes, weights, quantization, prepared parameters), the
write/read round trip, the errors for models the device cannot run and the CLI. The prepared
multipliers against the tflite-micro interpreter at rounding boundaries: test_export_rounding.py.
The models: tests/host/conftest.py.
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
    ACT_NONE, ACT_RELU, ACT_RELU6, DT_INT8, DT_INT32, KIND_CONST, NONE, read_etm, write_etm,
)

from tests.support.tflitefile import edit_tflite

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def models(export_models) -> dict[str, bytes]:
    return export_models


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
        tflite_to_etm(edit_tflite(models["2d"], edit))


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
