"""Model zoo: IMU CNNs made only of the ops the device runs.

Allowed: Conv1D, DepthwiseConv1D, MaxPooling1D, AveragePooling1D, GlobalAveragePooling1D,
Dense, with ReLU/ReLU6 fused into the preceding conv/dense. No batch norm, no dropout, no
softmax layer: the model ends in a Dense classifier that outputs logits (the loss applies
softmax, from_logits=True), so the exported chain ends in FULLY_CONNECTED.

Budgets (int8, measured by `summary`): "small" targets the RP2040 (weights < 20 KB,
inference arena < 16 KB), "large" the ESP32-S3. The arena is the lead's chain plan:
max over consecutive activations of align4(a) + align4(b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VARIANTS = ("tiny", "small", "large")


def build(variant: str = "small", n_classes: int = 7, window: int = 100, channels: int = 6, seed: int | None = None) -> Any:
    """A fresh, uncompiled Keras model `variant` (one of VARIANTS)."""
    import keras
    from keras import layers as L

    if seed is not None:
        keras.utils.set_random_seed(seed)
    inp = keras.Input((window, channels), name="imu")
    if variant == "tiny":  # for tests: trains in seconds, still every op kind but average pooling
        x = L.Conv1D(8, 5, strides=2, padding="same", activation="relu", name="conv1")(inp)
        x = L.MaxPooling1D(2, name="pool1")(x)
        x = L.DepthwiseConv1D(3, padding="same", activation="relu6", name="dw2")(x)
        x = L.Conv1D(16, 3, padding="same", activation="relu", name="conv3")(x)
    elif variant == "small":  # RP2040
        x = L.Conv1D(16, 5, strides=2, padding="same", activation="relu", name="conv1")(inp)
        x = L.Conv1D(24, 5, padding="same", activation="relu", name="conv2")(x)
        x = L.MaxPooling1D(2, name="pool2")(x)
        x = L.Conv1D(32, 3, padding="same", activation="relu", name="conv3")(x)
        x = L.MaxPooling1D(2, name="pool3")(x)
        x = L.Conv1D(48, 3, padding="same", activation="relu", name="conv4")(x)
    elif variant == "large":  # ESP32-S3
        x = L.Conv1D(32, 5, strides=2, padding="same", activation="relu", name="conv1")(inp)
        x = L.DepthwiseConv1D(5, padding="same", activation="relu6", name="dw2")(x)
        x = L.Conv1D(64, 1, padding="same", activation="relu", name="pw2")(x)
        x = L.MaxPooling1D(2, name="pool2")(x)
        x = L.Conv1D(96, 3, padding="same", activation="relu", name="conv3")(x)
        x = L.AveragePooling1D(2, name="pool3")(x)
        x = L.Conv1D(128, 3, padding="same", activation="relu", name="conv4")(x)
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    x = L.GlobalAveragePooling1D(name="gap")(x)
    out = L.Dense(n_classes, name="classifier")(x)
    return keras.Model(inp, out, name=f"imu_{variant}")


def compile_model(model: Any, lr: float = 2e-3) -> Any:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


@dataclass
class Footprint:
    """int8 sizes of a model: weight bytes (int8 weights + int32 biases) and inference arena."""

    weight_bytes: int
    arena_bytes: int
    activations: list[tuple[str, tuple[int, ...]]]


def footprint(model: Any) -> Footprint:
    """int8 weight bytes and the chain-plan inference arena of a Keras model of this zoo."""

    def a4(n: int) -> int:
        return (n + 3) & ~3

    wbytes = 0
    acts: list[tuple[str, tuple[int, ...]]] = [("input", tuple(model.input.shape[1:]))]
    for ly in model.layers[1:]:
        for w in ly.weights:
            n = 1
            for d in w.shape:
                n *= int(d)
            wbytes += n * (4 if w.path.endswith("bias") else 1)
        acts.append((ly.name, tuple(int(d) for d in ly.output.shape[1:])))
    sizes = []
    for _, s in acts:
        n = 1
        for d in s:
            n *= d
        sizes.append(a4(n))
    arena = max(sizes[i] + sizes[i + 1] for i in range(len(sizes) - 1))
    return Footprint(wbytes, arena, acts)
