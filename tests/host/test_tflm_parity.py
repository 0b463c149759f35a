"""The numpy twin equals the tflite-micro interpreter, bit for bit, on random models.

For every random model of tests/support/modelgen.py (real TFLite converter, int8): export it with
`edgetune.convert.export.tflite_to_etm`, write and re-read the .etm, run N_INPUTS random int8 inputs
through `reference.forward_batch` and through the `tflite-micro` interpreter (reference kernels,
kPreserveAllTensors so every intermediate tensor stays readable), and compare the output and
every layer's output tensor. Also checks `memory.inference_arena` / `inference_plan` against
values worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import modelgen
from edgetune.twin import memory, reference
from edgetune.convert.export import tflite_to_etm
from edgetune.format.modelfile import read_etm, write_etm

N_MODELS = 60
N_INPUTS = 100
SEEDS = list(range(N_MODELS))
STATS: dict[int, dict] = {}


def _interpreter(tfl: bytes):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(
        tfl, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)


def _tflite_tensor_names(tfl: bytes) -> dict[str, int]:
    from tflite_micro.python.tflite_micro import runtime

    g = runtime.convert_bytearray_to_object(tfl).subgraphs[0]
    names: dict[str, int] = {}
    for i, t in enumerate(g.tensors):
        n = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        names.setdefault(n, i)
    return names


def _inputs(model, seed: int) -> np.ndarray:
    """Half uniform int8 noise, half the quantized calibration distribution (less saturated)."""
    rng = np.random.default_rng([seed, 99])
    t = model.input_tensor
    n_uni = N_INPUTS // 2
    uni = rng.integers(-128, 128, (n_uni, t.size))
    sp = modelgen.spec(seed)
    f = rng.standard_normal((N_INPUTS - n_uni, t.size)) * sp["in_scale"] + sp["in_shift"]
    q = np.clip(np.round(f / t.scale) + t.zero_point, -128, 127)
    return np.concatenate([uni, q]).astype(np.int8)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_model_matches_tflite_micro(seed):
    tfl = modelgen.tflite_model(seed)
    exported = tflite_to_etm(tfl)
    model = read_etm(write_etm(exported))  # run what the device would load
    assert len(model.layers) == len(exported.layers)

    itp = _interpreter(tfl)
    in_shape = tuple(itp.get_input_details(0)["shape"])
    names = _tflite_tensor_names(tfl)
    # TFLite tensor index of each layer's output (the exporter keeps TFLite names on tensors)
    inter = [names.get(exported.tensors[ly.output].name) for ly in exported.layers]
    assert None not in inter, "every layer output must map back to a TFLite tensor"

    xs = _inputs(model, seed)
    ys, acts = reference.forward_batch(model, xs, keep=True)
    bad_out = bad_inter = n_inter = 0
    first = None
    for n in range(N_INPUTS):
        itp.set_input(xs[n].reshape(in_shape), 0)
        itp.invoke()
        want = np.asarray(itp.get_output(0)).reshape(-1)
        if not np.array_equal(want, ys[n].reshape(-1)):
            bad_out += 1
            first = first or f"input {n}: tflm {want[:12]} twin {ys[n].reshape(-1)[:12]}"
        for li, ti in enumerate(inter):
            got_t = np.asarray(itp.GetTensor(ti, 0)["tensor_data"]).reshape(-1)
            n_inter += 1
            if not np.array_equal(got_t, acts[li + 1][n].reshape(-1)):
                bad_inter += 1
                if first is None:
                    d = np.flatnonzero(got_t != acts[li + 1][n].reshape(-1))
                    first = (f"input {n} layer {li} ({model.layers[li].op_name}): {d.size} elements differ, "
                             f"e.g. [{d[0]}] tflm {got_t[d[0]]} twin {acts[li + 1][n].reshape(-1)[d[0]]}")
    STATS[seed] = dict(inputs=N_INPUTS, bad_out=bad_out, inter=n_inter, bad_inter=bad_inter,
                       ops=[ly.op_name for ly in model.layers])
    assert bad_out == 0 and bad_inter == 0, (
        f"model {seed} {STATS[seed]['ops']}: {bad_out}/{N_INPUTS} outputs and {bad_inter}/{n_inter} "
        f"intermediates differ; first: {first}")
    assert n_inter == N_INPUTS * len(model.layers)  # every layer output was compared


def test_parity_summary(capsys):
    """Totals over the random models (run after them in file order)."""
    if len(STATS) < N_MODELS:
        pytest.skip("run together with test_random_model_matches_tflite_micro for all seeds")
    ops: dict[str, int] = {}
    for s in STATS.values():
        for o in s["ops"]:
            ops[o] = ops.get(o, 0) + 1
    tot = {k: sum(s[k] for s in STATS.values()) for k in ("inputs", "bad_out", "inter", "bad_inter")}
    with capsys.disabled():
        print(f"\ntflm parity: {len(STATS)} models, {tot['inputs']} inputs, {tot['bad_out']} output mismatches, "
              f"{tot['inter']} intermediate tensors compared, {tot['bad_inter']} mismatches; layers {ops}")
    assert tot["bad_out"] == 0 and tot["bad_inter"] == 0
    # the generator really covers every op
    assert set(ops) == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN"}


def _compare_all(tfl: bytes, seed: int) -> tuple[int, int]:
    """(mismatching outputs, inputs) of the twin vs tflite-micro on the model's test inputs."""
    model = read_etm(write_etm(tflite_to_etm(tfl)))
    itp = _interpreter(tfl)
    in_shape = tuple(itp.get_input_details(0)["shape"])
    xs = _inputs(model, seed)
    ys = reference.forward_batch(model, xs)
    bad = 0
    for n in range(len(xs)):
        itp.set_input(xs[n].reshape(in_shape), 0)
        itp.invoke()
        bad += not np.array_equal(np.asarray(itp.get_output(0)).reshape(-1), ys[n].reshape(-1))
    return bad, len(xs)


def test_mean_with_identical_input_and_output_quantization():
    """Older TFLM took a truncating `sum / N` path when MEAN's input and output quantization are
    equal; the converter never emits that, so edit a converted model's flatbuffer to force it."""
    import flatbuffers
    from tflite_micro.python.tflite_micro import runtime

    done = 0
    for seed in SEEDS:
        mo = runtime.convert_bytearray_to_object(modelgen.tflite_model(seed))
        g = mo.subgraphs[0]
        for op in g.operators:
            if runtime.get_builtin_code_from_operator_code(mo.operatorCodes[op.opcodeIndex]) != 40:  # MEAN
                continue
            ti, to = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
            to.quantization.scale = list(ti.quantization.scale)
            to.quantization.zeroPoint = list(ti.quantization.zeroPoint)
            b = flatbuffers.Builder(4096)
            b.Finish(mo.Pack(b), file_identifier=b"TFL3")
            bad, n = _compare_all(bytes(b.Output()), seed)
            assert bad == 0, f"model {seed} with MEAN quantization in == out: {bad}/{n} outputs differ"
            done += 1
        if done >= 3:
            break
    assert done >= 3


# ------------------------------------------------------------------ arena, by hand


def _conv1d_gap_dense():
    import keras
    from keras import layers

    inp = keras.Input((32, 3), batch_size=1)
    x = layers.Conv1D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, layers.Dense(5)(x))


def _conv2d_flatten_dense():
    import keras
    from keras import layers

    inp = keras.Input((5, 5, 3), batch_size=1)
    x = layers.Conv2D(5, 3, padding="valid")(inp)
    x = layers.Flatten()(x)
    return keras.Model(inp, layers.Dense(7)(x))


def test_inference_arena_by_hand():
    # docs/memory.md's worked example. Chain (1,1,32,3)=96 -> CONV (1,1,16,8)=128 -> MEAN 8 -> FC 5 (slot 8):
    # pairs 96+128=224, 128+8=136, 8+8=16 -> 224; t_0 at 0, t_1 at 224-128=96, t_2 at 0, t_3 at 216.
    m = tflite_to_etm(modelgen.tflite_named("hand_conv1d_gap_dense", _conv1d_gap_dense, (32, 3)))
    assert [model_ly.op_name for model_ly in m.layers] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert memory.inference_arena(m) == 224
    assert [(off, size) for _, off, size in memory.inference_plan(m)] == [(0, 96), (96, 128), (0, 8), (216, 8)]
    assert [t for t, _, _ in memory.inference_plan(m)] == memory.activation_chain(m)

    # (1,5,5,3)=75 -> slot 76; CONV valid 3x3x5 -> (1,3,3,5)=45 -> 48; FC 7 -> slot 8.
    # pairs 76+48=124, 48+8=56 -> 124; t_0 at 0, t_1 at 124-48=76, t_2 at 0.
    m = tflite_to_etm(modelgen.tflite_named("hand_conv2d_flatten_dense", _conv2d_flatten_dense, (5, 5, 3)))
    assert [ly.op_name for ly in m.layers] == ["CONV_2D", "FULLY_CONNECTED"]
    assert memory.inference_arena(m) == 124
    assert memory.inference_plan(m) == [(m.input, 0, 76), (m.layers[0].output, 76, 48), (m.output, 0, 8)]


@pytest.mark.parametrize("seed", SEEDS[:20])
def test_inference_plan_never_overlaps_a_layers_input_and_output(seed):
    m = tflite_to_etm(modelgen.tflite_model(seed))
    arena = memory.inference_arena(m)
    plan = memory.inference_plan(m)
    for (_, o0, s0), (_, o1, s1) in zip(plan, plan[1:]):
        assert o0 % 4 == 0 and o1 % 4 == 0 and 0 <= o0 and o0 + s0 <= arena and o1 + s1 <= arena
        assert o0 + s0 <= o1 or o1 + s1 <= o0
    assert arena == max(s0 + s1 for (_, _, s0), (_, _, s1) in zip(plan, plan[1:]))
