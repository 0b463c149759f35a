"""Host pipeline on real data: pretrain -> quantize -> export, checked against tflite-micro.

One tiny model is trained once per module (seed 0, 6 epochs, about 5 s on 2 cores) through the
real CLI verbs, converted by the real TFLite converter and exported to .etm; the .etm's int8
outputs from the numpy twin (reference.forward_batch) must equal the tflite-micro interpreter's
on real test windows.
"""

import json

import numpy as np
import pytest

from edgetune import cli
from edgetune.learn import data, zoo as model
from edgetune.convert import quantize
from edgetune.format.modelfile import OP_FULLY_CONNECTED, read_etm
from edgetune.twin.quantize_input import quantize_normalized

SEED, EPOCHS = 0, 6
N_WINDOWS = 64


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    out, tfl, etm = d / "run", d / "tiny.tflite", d / "tiny.etm"
    assert cli.main(["pretrain", "--data", "watch", "--scenario", "rotation", "--out", str(out), "--epochs",
                     str(EPOCHS), "--seed", str(SEED), "--variant", "tiny", "--no-progress"]) == 0
    assert cli.main(["quantize", str(out / "model.keras"), "--out", str(tfl)]) == 0
    return {"dir": out, "tflite": tfl, "meta": d / "tiny.meta.json", "etm": etm}


@pytest.fixture(scope="module")
def scenario(run):
    from edgetune.learn.pretrain import load_run

    m, sc, split = load_run(str(run["dir"]))
    return m, sc


def test_pretrain_writes_run_files(run):
    for name in ("model.keras", "history.json", "norm.json", "split.json", "result.json"):
        assert (run["dir"] / name).exists(), name
    hist = json.loads((run["dir"] / "history.json").read_text())
    assert len(hist["loss"]) == EPOCHS and hist["loss"][-1] < hist["loss"][0]
    split = json.loads((run["dir"] / "split.json").read_text())
    assert split["config"]["name"] == "rotation" and split["train"]["seed"] == SEED


def test_quantize_metadata(run, scenario):
    _, sc = scenario
    meta = json.loads(run["meta"].read_text())
    assert meta["class_names"] == list(data.WATCH_CLASSES)
    assert meta["sample_rate"] == 50 and meta["window"] == 100 and meta["input_shape"] == [1, 100, 6]
    assert -128 <= meta["input_zero_point"] <= 127 and meta["input_scale"] > 0
    np.testing.assert_allclose(meta["normalization"]["mean"], sc.norm.mean, rtol=1e-6)
    np.testing.assert_allclose(meta["raw_input_quant"]["scale"], meta["input_scale"] * sc.norm.std, rtol=1e-6)


def _tflm_outputs(tflite_path, xq):
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_file(str(tflite_path))
    outs = []
    for x in xq:
        it.set_input(x[None], 0)
        it.invoke()
        outs.append(np.array(it.get_output(0)).reshape(-1))
    return np.stack(outs)


def test_export_matches_tflite_micro_on_test_windows(run, scenario):
    from edgetune.twin import reference

    _, sc = scenario
    assert cli.main(["export", str(run["tflite"]), "-o", str(run["etm"]), "--meta", str(run["meta"])]) == 0
    em = read_etm(run["etm"].read_bytes())
    assert em.layers[-1].op == OP_FULLY_CONNECTED
    assert em.meta["class_names"] == list(data.WATCH_CLASSES)
    meta = json.loads(run["meta"].read_text())
    idx = np.random.default_rng(0).permutation(len(sc.test))[:N_WINDOWS]
    xq = quantize_normalized(sc.norm.apply(sc.test.x[idx]), meta["input_scale"], meta["input_zero_point"])
    want = _tflm_outputs(run["tflite"], xq)
    got = reference.forward_batch(em, xq).reshape(len(idx), -1)
    assert want.dtype == np.int8 and want.shape == (N_WINDOWS, 7)
    assert len(np.unique(want)) > 10  # real, varied logits, not a saturated constant
    np.testing.assert_array_equal(got, want)


def test_footprint_matches_the_exported_model(run, scenario):
    # model.footprint (Keras-side budget) == memory.py's arena and the .etm's constant bytes
    from edgetune.twin import memory

    m, _ = scenario
    if not run["etm"].exists():
        assert cli.main(["export", str(run["tflite"]), "-o", str(run["etm"]), "--meta", str(run["meta"])]) == 0
    em = read_etm(run["etm"].read_bytes())
    fp = model.footprint(m)
    assert fp.arena_bytes == memory.inference_arena(em)
    assert fp.weight_bytes == sum(t.nbytes for t in em.tensors if t.data is not None)


def test_int8_model_keeps_float_accuracy(run, scenario):
    m, sc = scenario
    meta = json.loads(run["meta"].read_text())
    idx = np.random.default_rng(1).permutation(len(sc.test))[:200]
    w = sc.test.take(idx)
    fp = np.mean(np.argmax(m.predict(sc.norm.apply(w.x), verbose=0), 1) == w.y)
    q = _tflm_outputs(run["tflite"], quantize_normalized(sc.norm.apply(w.x), meta["input_scale"], meta["input_zero_point"]))
    i8 = np.mean(np.argmax(q, 1) == w.y)
    assert fp > 0.5 and abs(fp - i8) < 0.05, (fp, i8)


def test_rotation_shift_lowers_unadapted_accuracy(scenario):
    # Measured (tiny model, 4-8 epochs, seeds 0-2): source 0.65-0.76, rotated 0.15-0.23, a drop of
    # 0.47-0.61. Asserted with headroom: the same windows, rotated, lose at least 0.30.
    m, sc = scenario
    r = np.asarray(sc.info["rotation"])
    src = np.mean(np.argmax(m.predict(sc.norm.apply(sc.test.x), verbose=0), 1) == sc.test.y)
    rot = np.mean(np.argmax(m.predict(sc.norm.apply(data.rotate_array(sc.test.x, r)), verbose=0), 1) == sc.test.y)
    assert src > 0.55, src
    assert src - rot >= 0.30, (src, rot)


def test_zoo_fits_the_boards():
    small = model.footprint(model.build("small"))
    assert small.weight_bytes < 20 * 1024 and small.arena_bytes < 16 * 1024, small
    large = model.footprint(model.build("large"))
    assert large.weight_bytes > small.weight_bytes and large.arena_bytes < 64 * 1024
    for v in model.VARIANTS:
        m = model.build(v)
        assert m.layers[-1].name == "classifier" and m.layers[-1].get_config()["activation"] == "linear"


@pytest.mark.parametrize("variant", ["small", "large"])
def test_board_variants_export_bit_exact(variant, scenario, tmp_path):
    # the RP2040 and ESP32-S3 models (1 epoch: any trained weights will do) also convert, export
    # and match tflite-micro: covers 5-tap depthwise, 1x1 conv and average pooling on real data
    from edgetune.learn import pretrain
    from edgetune.twin import reference

    _, sc = scenario
    m, _ = pretrain.pretrain(sc, variant, epochs=1, seed=0, progress=False)
    tfl = tmp_path / f"{variant}.tflite"
    tfl.write_bytes(quantize.convert(m, quantize.representative(sc, 100)))
    meta = quantize.metadata(sc, tfl.read_bytes())
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    etm = tmp_path / f"{variant}.etm"
    assert cli.main(["export", str(tfl), "-o", str(etm), "--meta", str(tmp_path / "meta.json")]) == 0
    em = read_etm(etm.read_bytes())
    fp = model.footprint(m)
    assert fp.weight_bytes == sum(t.nbytes for t in em.tensors if t.data is not None)
    xq = quantize_normalized(sc.norm.apply(sc.test.x[::40][:24]), meta["input_scale"], meta["input_zero_point"])
    np.testing.assert_array_equal(reference.forward_batch(em, xq).reshape(len(xq), -1), _tflm_outputs(tfl, xq))
