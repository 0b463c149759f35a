"""Fixtures of the host tests: the Keras models that tests/host/test_export.py and
tests/host/test_export_rounding.py export (converted once per session)."""

from __future__ import annotations

import numpy as np
import pytest


def _convert(model, shape, quantize: bool = True, per_tensor_dense: bool = False) -> bytes:
    """Full-integer int8 conversion with a representative dataset and int8 input/output."""
    tf = pytest.importorskip("tensorflow")
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
    keras = pytest.importorskip("keras")
    return keras.initializers.RandomNormal(stddev=0.3, seed=1)


@pytest.fixture(scope="session")
def export_models() -> dict[str, bytes]:
    """Keras models through the real TFLite converter: {name: .tflite bytes} (tests/host/test_export*.py)."""
    keras = pytest.importorskip("keras")
    L = keras.layers
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
