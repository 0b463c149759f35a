"""Analytic memory model: the device arena, predicted to the byte (docs/memory.md).

The C module (native_modules/edgetune/model.c) plans its arena with exactly these rules and
reports the result as `Model.info()['arena']`; tests compare the two.

Inference: the activations form a chain t_0 (model input) .. t_L (model output). Each tensor
gets a slot of align4(elements) bytes (int8). Consecutive tensors ping-pong between the two
ends of one block: t_i with even i at offset 0, with odd i flush against the end. A layer reads
t_i and writes t_{i+1}, which therefore never overlap, so the block only has to hold the
largest consecutive pair:

    arena = max_i align4(size t_i) + align4(size t_{i+1})

No other scratch: the kernels need none.

Training (docs/training.md §6) extends this block; `training_arena` will live in this module
next to `inference_arena` (not implemented yet).
"""

from __future__ import annotations

from .modelfile import DT_INT8, EtmModel


def align4(n: int) -> int:
    """Round a byte count up to a multiple of 4."""
    return (int(n) + 3) & ~3


def activation_chain(model: EtmModel) -> list[int]:
    """Tensor indices of t_0 .. t_L: the model input, then each layer's output in order."""
    return [model.input] + [ly.output for ly in model.layers]


def slot_size(model: EtmModel, tensor: int) -> int:
    """Bytes reserved for an activation tensor: align4(number of int8 elements)."""
    t = model.tensors[tensor]
    if t.dtype != DT_INT8:
        raise ValueError(f"activation tensor {tensor} is not int8")
    return align4(t.size)


def inference_arena(model: EtmModel) -> int:
    """Bytes of the inference arena: max over consecutive pairs of the two slot sizes."""
    sizes = [slot_size(model, t) for t in activation_chain(model)]
    return max(a + b for a, b in zip(sizes, sizes[1:]))


def inference_plan(model: EtmModel) -> list[tuple[int, int, int]]:
    """(tensor index, byte offset, slot size) for t_0 .. t_L in chain order.

    t_i with even i sits at offset 0, with odd i at `inference_arena(model) - slot size`.
    """
    arena = inference_arena(model)
    plan = []
    for i, t in enumerate(activation_chain(model)):
        size = slot_size(model, t)
        plan.append((t, 0 if i % 2 == 0 else arena - size, size))
    return plan


# Training arena (docs/training.md §6): work (inference ping-pong / gradient buffers), saved
# activations and masks, trainable params + residuals (+ momentum), loss. To be added here as
# `training_arena(model, scheme) -> int` with its per-region plan, reusing `inference_arena`.
