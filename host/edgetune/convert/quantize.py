"""`edgetune quantize`: full-integer int8 TFLite conversion of a pre-trained model + metadata.

Post-training quantization with the TFLite converter: int8 weights (per output channel),
int8 activations, int8 model input and output, calibrated on a seeded sample of the
*normalized training split* (representative dataset). Next to MODEL.tflite it writes
MODEL.meta.json, the metadata `edgetune export --meta` embeds in the .etm: class names,
sample rate, window, channels, input/output scale and zero point, the normalization
statistics and the normalization folded into a per-channel raw-input quantization.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from ..learn import data
from ..twin import frame

N_REPRESENTATIVE = 500


def convert(model: Any, representative: np.ndarray) -> bytes:
    """Full-integer int8 .tflite bytes of a Keras model (int8 input and output)."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def rep():
        for x in representative:
            yield [x[None].astype(np.float32)]

    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def io_quant(tflite: bytes) -> tuple[tuple[float, int], tuple[float, int], tuple[int, ...]]:
    """((input scale, zp), (output scale, zp), input shape) as the tflite-micro interpreter sees them."""
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(tflite)
    i, o = it.get_input_details(0), it.get_output_details(0)
    qi, qo = i["quantization_parameters"], o["quantization_parameters"]
    return ((float(qi["scales"][0]), int(qi["zero_points"][0])),
            (float(qo["scales"][0]), int(qo["zero_points"][0])), tuple(int(d) for d in i["shape"]))


def metadata(sc: data.Scenario, tflite: bytes, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The export metadata of a quantized model for scenario `sc`."""
    (s_in, z_in), (s_out, z_out), shape = io_quant(tflite)
    meta = {
        "class_names": list(sc.class_names),
        "sample_rate": sc.sample_rate,
        "window": sc.window,
        "step": sc.step,
        "channels": list(data.CHANNELS),
        "units": {"accel": "g", "gyro": "rad/s"},
        "input_shape": list(shape),
        "input_scale": s_in,
        "input_zero_point": z_in,
        "output_scale": s_out,
        "output_zero_point": z_out,
        "normalization": sc.norm.to_json(),
        "raw_input_quant": sc.norm.fold(s_in, z_in),
        "data": "seglearn watch (BSD-3)",
        "scenario": sc.name,
        # sensor-frame calibration (docs/training.md §9): which channels are 3-vectors and the
        # per-class source statistics of the training split in raw units
        **frame.frame_metadata(sc),
    }
    meta.update(extra or {})
    return meta


def representative(sc: data.Scenario, n: int = N_REPRESENTATIVE, seed: int = 0) -> np.ndarray:
    """A seeded sample of n normalized training windows."""
    idx = np.random.default_rng(seed).permutation(len(sc.train))[:n]
    return sc.norm.apply(sc.train.x[np.sort(idx)])


def quantize_run(path: str, out: str, n: int = N_REPRESENTATIVE, seed: int = 0) -> dict[str, Any]:
    """Quantize a pretrain run (dir or .keras inside one) to `out`; returns the metadata."""
    from ..learn.pretrain import load_run

    m, sc, split = load_run(path)
    tfl = convert(m, representative(sc, n, seed))
    meta = metadata(sc, tfl, {"variant": split.get("train", {}).get("variant"), "split": split["config"]})
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(tfl)
    with open(meta_path(out), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def meta_path(tflite_path: str) -> str:
    base = tflite_path[:-7] if tflite_path.endswith(".tflite") else tflite_path
    return base + ".meta.json"


def cli(argv: Sequence[str]) -> int:
    from .. import tfquiet
    from ..learn.pretrain import positive_int

    p = argparse.ArgumentParser(prog="edgetune quantize", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="pretrain output directory or the model.keras inside it")
    p.add_argument("--out", required=True, help="MODEL.tflite (metadata goes to MODEL.meta.json)")
    p.add_argument("--samples", type=positive_int, default=N_REPRESENTATIVE, help="representative training windows")
    p.add_argument("--seed", type=int, default=0, help="seed of the representative sample")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's and the converter's own log output")
    a = p.parse_args(argv)
    if not os.path.exists(a.model):
        print(f"edgetune quantize: error: no pretrain run at {a.model} (run edgetune pretrain --out DIR first)",
              file=sys.stderr)
        return 1
    from ..outpaths import check_dir

    try:  # its directory is created (makedirs) if missing
        if os.path.isdir(a.out):
            raise ValueError(f"--out {a.out} is a directory; give MODEL.tflite")
        check_dir(os.path.dirname(os.path.abspath(a.out)), "--out directory")
    except ValueError as e:
        print(f"edgetune quantize: error: {e}", file=sys.stderr)
        return 1
    tfquiet.setup(a.verbose)
    with tfquiet.quiet(a.verbose):
        meta = quantize_run(a.model, a.out, a.samples, a.seed)
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes) and {meta_path(a.out)}: "
          f"input scale {meta['input_scale']:.6g} zero point {meta['input_zero_point']}")
    return 0
