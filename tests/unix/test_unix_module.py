"""The C module on the real unix-port MicroPython vs the numpy twin, bit for bit.

(a) Fuzz-style: 1000 + 80 wide + 60 one-layer hand-built random `EtmModel`s (no TensorFlow)
    with random shapes, weights, biases, multipliers in [2^30, 2^31), shifts, SAME/VALID
    paddings, strides, clamps and MEAN layers prepared by prepare.mean_params.
(b) Real models: 60 random Keras models converted by the TFLite converter (tests/support/modelgen.py)
    and exported by host/edgetune/convert/export.py: outputs and every intermediate activation.

All models and inputs of a test go to ONE MicroPython process: the script loads every .etm with
`edgetune.Model`, runs `predict` on every input and writes the outputs to files, which are then
compared with `reference.forward_batch`. `info()` is checked against the model and against
`memory.inference_arena`.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from edgetune.twin import memory, reference
from edgetune.format.modelfile import (
    ACT_RELU, DT_INT8, OP_FULLY_CONNECTED, OP_NAMES, EtmModel, Layer, Tensor, read_etm, write_etm,
)
from edgetune.convert.prepare import mean_params

from tests.support.randmodels import check_against_twin, random_inputs, random_model, run_models


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_random_models_roundtrip_python_reader():
    """The generator's models are valid .etm files (the Python reader accepts them)."""
    for seed in range(50):
        m = random_model(seed)
        back = read_etm(write_etm(m))
        assert len(back.layers) == len(m.layers)


@pytest.mark.natmod
@pytest.mark.parametrize("chunk", range(8))
def test_fuzz_random_models_c_vs_numpy(micropython, tmp_path, chunk):
    """125 random hand-built models per chunk (1000 in all), 24 inputs each, C == numpy."""
    seeds = range(chunk * 125, (chunk + 1) * 125)
    models = {f"m{s}": random_model(s) for s in seeds}
    inputs = {name: random_inputs(m, 24, int(name[1:])) for name, m in models.items()}
    ops = {OP_NAMES[ly.op] for m in models.values() for ly in m.layers}
    assert ops == set(OP_NAMES.values()), f"generator did not cover every op: {ops}"
    outs, infos, classes = run_models(micropython, tmp_path, models, inputs)
    check_against_twin(models, inputs, outs, infos, classes)


@pytest.mark.natmod
def test_wide_random_models_c_vs_numpy(micropython, tmp_path):
    """80 random models with up to 48 channels (dot products of hundreds of terms), 16 inputs each."""
    models = {f"w{s}": random_model(s, wide=True) for s in range(80)}
    inputs = {name: random_inputs(m, 16, 5000 + int(name[1:])) for name, m in models.items()}
    outs, infos, classes = run_models(micropython, tmp_path, models, inputs)
    check_against_twin(models, inputs, outs, infos, classes)


@pytest.mark.natmod
def test_single_layer_extremes(micropython, tmp_path):
    """One-layer models (arena = align4(t0) + align4(t1)) with deep chains of extreme shifts."""
    models, inputs = {}, {}
    for s in range(60):
        m = random_model(10_000 + s, max_layers=1)
        models[f"s{s}"] = m
        inputs[f"s{s}"] = random_inputs(m, 16, s)
    for name, m in models.items():
        a = memory.align4
        assert memory.inference_arena(m) == a(m.tensors[m.input].size) + a(m.tensors[m.output].size)
    outs, infos, classes = run_models(micropython, tmp_path, models, inputs)
    check_against_twin(models, inputs, outs, infos, classes)


N_REAL = 60


@pytest.mark.natmod
def test_converted_keras_models_c_vs_numpy(micropython, tmp_path):
    """Random Keras models through the real TFLite converter and export.py: C == numpy twin on
    100 inputs each (the twin is checked against tflite-micro in test_tflm_parity.py)."""
    from tests.support import modelgen  # tests/support/modelgen.py (REF): cached random Keras models
    from edgetune.convert.export import tflite_to_etm

    models, inputs = {}, {}
    for seed in range(N_REAL):
        model = tflite_to_etm(modelgen.tflite_model(seed))
        models[f"k{seed}"] = read_etm(write_etm(model))
        inputs[f"k{seed}"] = random_inputs(model, 100, 500 + seed)
    outs, infos, classes = run_models(micropython, tmp_path, models, inputs)
    check_against_twin(models, inputs, outs, infos, classes)


def prefix_models(model: EtmModel) -> list[EtmModel]:
    """The model cut after each layer: predict() of cut i returns intermediate activation t_{i+1}."""
    return [EtmModel(model.tensors, model.layers[: i + 1], model.input, ly.output, model.meta)
            for i, ly in enumerate(model.layers[:-1])]


def test_converted_keras_models_intermediates_c_vs_numpy(micropython, tmp_path):
    """Every intermediate activation of converted models, C vs numpy (the module exposes an
    intermediate tensor as the output of the model cut after that layer)."""
    from tests.support import modelgen  # tests/support/modelgen.py (REF): cached random Keras models
    from edgetune.convert.export import tflite_to_etm

    models, inputs = {}, {}
    for seed in range(N_REAL):
        model = tflite_to_etm(modelgen.tflite_model(seed))
        xs = random_inputs(model, 20, 900 + seed)
        for i, cut in enumerate(prefix_models(model)):
            models[f"k{seed}_{i}"] = cut
            inputs[f"k{seed}_{i}"] = xs
    assert len(models) > N_REAL
    outs, infos, classes = run_models(micropython, tmp_path, models, inputs)
    check_against_twin(models, inputs, outs, infos, classes)


@pytest.mark.natmod
def test_weights_are_read_in_place(micropython, tmp_path):
    """Model(buf) keeps the weights in `buf`: the heap grows by about the arena, not by the
    ~49 KB of weights (which is what lets a frozen .etm in flash cost no RAM)."""
    rng = np.random.default_rng(5)
    k, hidden = 512, 96
    t = [Tensor(DT_INT8, (1, 1, 1, k), zero_point=-5, scale=0.1),
         Tensor(DT_INT8, (hidden, 1, 1, k), data=rng.integers(-127, 128, (hidden, 1, 1, k)).astype(np.int8),
                scale=0.01),
         Tensor(DT_INT8, (1, 1, 1, hidden), zero_point=-128, scale=0.2),
         Tensor(DT_INT8, (4, 1, 1, hidden), data=rng.integers(-127, 128, (4, 1, 1, hidden)).astype(np.int8),
                scale=0.01),
         Tensor(DT_INT8, (1, 1, 1, 4), zero_point=3, scale=0.3)]
    layers = [Layer(OP_FULLY_CONNECTED, 0, 2, weight=1, activation=ACT_RELU, input_offset=5, output_offset=-128,
                    act_min=-128, multipliers=np.full(hidden, 1 << 30, np.int32), shifts=np.full(hidden, -10, np.int32)),
              Layer(OP_FULLY_CONNECTED, 2, 4, weight=3, input_offset=128, output_offset=3,
                    multipliers=np.full(4, 1 << 30, np.int32), shifts=np.full(4, -8, np.int32))]
    model = EtmModel(t, layers, 0, 4)
    path = tmp_path / "big.etm"
    path.write_bytes(write_etm(model))
    code = f"""
import edgetune, gc
buf = open({str(path)!r}, 'rb').read()
gc.collect()
f0 = gc.mem_free()
m = edgetune.Model(buf)
gc.collect()
f1 = gc.mem_free()
print(f0 - f1, m.info()['arena'], len(buf))
"""
    script = tmp_path / "t.py"
    script.write_text(code)
    proc = subprocess.run([str(micropython), str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    used, arena, size = map(int, proc.stdout.split())
    assert size > 49_000
    assert used <= arena + 4096, f"Model() used {used} bytes of heap for a {arena}-byte arena"
    assert used >= arena
