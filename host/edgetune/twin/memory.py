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

Training (docs/training.md §6) extends this block: `training_layout` / `training_arena` below
(the section owned by the training core).
"""

from __future__ import annotations

from ..format.modelfile import DT_INT8, NONE, OP_MAX_POOL_2D, EtmModel, align4  # noqa: F401 (align4: the planner's rounding)
from ..format.scheme import Entry, Scheme, check_bounds, out_channels, per_channel
from .refit import qscale_bytes, refit_layer
from .refit import refit_scratch as _refit_scratch


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


# ============================================================================================
# Training arena (docs/training.md §6). Section owned by the training core (TRAINPY); the C
# module (train.c) lays out its arena with exactly these rules.
#   1. work    max(A, P + align4(2*H), 4*C_max): inference ping-pong, then the int16 gradient
#              ping-pong (P bytes) and the fold buffer of the weight-trained layers above `first`
#   2. saved   per layer i = first..L-1: input copy (weight-trained layers), arg-max indices
#              (MAX_POOL_2D above `first`), output mask (1 bit/element)
#   3. params  per scheme entry: bias, channel map, weights, residuals, momentum
#   (batch)    Model(batch=True) only: float32 accumulator per trainable parameter
#   4. loss    float32 per class
# Every item starts at a multiple of 4 (sizes rounded up).
# ============================================================================================

from dataclasses import dataclass, field  # noqa: E402


@dataclass
class Region:
    """One region of the training arena and its items (name, layer, offset, size)."""

    name: str
    offset: int
    size: int
    items: list[tuple[str, int, int, int]] = field(default_factory=list)


def _needs_input(scheme, i: int) -> bool:
    """Layer i's input copy is saved iff it trains weights (the weight gradient reads it)."""
    e = scheme.entry(i)
    return bool(e is not None and e.channels)


def argmax_bits(kh: int, kw: int) -> int:
    """Bits of a MAX_POOL_2D arg-max index: ceil(log2(KH*KW)), 0 for a 1x1 window."""
    return (int(kh) * int(kw) - 1).bit_length()


def _argmax_bytes(model: EtmModel, scheme, i: int, n_out: int) -> int | None:
    """Bytes of layer i's arg-max record (a MAX_POOL_2D above `first`), else None."""
    ly = model.layers[i]
    if ly.op != OP_MAX_POOL_2D or i <= scheme.first:
        return None
    return align4((n_out * argmax_bits(ly.filter_h, ly.filter_w) + 7) // 8)


def params_items(model: EtmModel, scheme, momentum: bool = False) -> list[tuple[str, int, int]]:
    """(name, layer, aligned size) of the params region items in order (docs/training.md §6.3)."""
    items = []
    for e in scheme.entries:
        c_out = out_channels(model, e.layer)
        n_w = len(e.channels) * per_channel(model, e.layer)
        n_b = c_out if e.bias else 0
        if e.bias:
            items.append(("bias", e.layer, align4(4 * c_out)))
        if e.channels:
            items.append(("channel_map", e.layer, align4(2 * c_out)))
            items.append(("weights", e.layer, align4(n_w)))
        items.append(("residuals", e.layer, align4(2 * (n_b + n_w))))
        if momentum:
            items.append(("momentum", e.layer, align4(4 * (n_b + n_w))))
    layer = refit_layer(model, scheme)
    if layer is not None:  # the classifier's scales and multipliers, which a refit rewrites
        items.append(("classifier_quant", layer, qscale_bytes(out_channels(model, layer))))
    return items


def grad_plan(model: EtmModel, scheme) -> tuple[int, list[tuple[int, int, int]]]:
    """Backward ping-pong of the int16 gradients (docs/training.md §6.1): (bytes, [(j, offset,
    slot)]) for the gradients of t_j, j = L .. first+1. Slot align4(2 * size(t_j)); (L - j) even
    at offset 0, odd flush against the end; bytes = the largest consecutive pair (or the one slot)."""
    first = scheme.first
    chain = activation_chain(model)
    n_layers = len(model.layers)
    slot = {j: align4(2 * model.tensors[chain[j]].size) for j in range(first + 1, n_layers + 1)}
    pp = max([slot[first + 1]] + [slot[j] + slot[j + 1] for j in range(first + 1, n_layers)])
    return pp, [(j, 0 if (n_layers - j) % 2 == 0 else pp - slot[j], slot[j])
                for j in range(n_layers, first, -1)]


def n_trainable(model: EtmModel, scheme) -> int:
    """Trainable parameter count (biases of bias-trained layers + selected channels' weights)."""
    return sum((out_channels(model, e.layer) if e.bias else 0) + len(e.channels) * per_channel(model, e.layer)
               for e in scheme.entries)


def training_layout(model: EtmModel, scheme, momentum: bool = False, batch: bool = False) -> list[Region]:
    """The training arena's regions with their items; [] when nothing trains."""
    first = scheme.first
    if first is None:
        return []
    chain = activation_chain(model)
    size = [model.tensors[t].size for t in chain]
    n_layers = len(model.layers)
    pp, grads = grad_plan(model, scheme)
    items = [("activations", -1, 0, inference_arena(model))]
    items += [("grad", j, off, n) for j, off, n in grads]
    # the fold buffer: only layers above `first` that train weights keep g apart from h
    h_max = max([size[i + 1] for i in range(first + 1, n_layers) if _needs_input(scheme, i)], default=0)
    if h_max:
        items.append(("fold", -1, pp, align4(2 * h_max)))
    # l1 channel selection at init: C_out int32 sums of a weight-trained layer
    c_max = max([out_channels(model, e.layer) for e in scheme.entries if e.channels], default=0)
    work = Region("work", 0, max(inference_arena(model), pp + align4(2 * h_max), 4 * c_max), items)
    regions = [work]
    off = work.size
    saved = Region("saved", off, 0)
    for i in range(first, n_layers):
        if _needs_input(scheme, i):
            saved.items.append(("input", i, off, align4(size[i])))
            off += align4(size[i])
        n = _argmax_bytes(model, scheme, i, size[i + 1])
        if n is not None:
            saved.items.append(("argmax", i, off, n))
            off += n
        n = align4((size[i + 1] + 7) // 8)
        saved.items.append(("mask", i, off, n))
        off += n
    saved.size = off - saved.offset
    params = Region("params", off, 0)
    for name, layer, n in params_items(model, scheme, momentum):
        params.items.append((name, layer, off, n))
        off += n
    params.size = off - params.offset
    regions += [saved, params]
    if batch:  # §5/§6: float32 accumulator per trainable parameter, in residual order
        n = 4 * n_trainable(model, scheme)
        regions.append(Region("batch", off, n, [("batch", -1, off, n)]))
        off += n
    n_cls = model.tensors[model.output].size
    loss = Region("loss", off, align4(4 * n_cls), [("loss", -1, off, align4(4 * n_cls))])
    return regions + [loss]


def training_arena(model: EtmModel, scheme, momentum: bool = False, batch: bool = False) -> int:
    """Bytes of the training arena (docs/training.md §6); the inference arena when nothing trains."""
    regions = training_layout(model, scheme, momentum, batch)
    if not regions:
        return inference_arena(model)
    return regions[-1].offset + regions[-1].size


def refit_scratch(model: EtmModel, scheme, labels=None, cv: bool = True) -> int:
    """Transient scratch of Model.refit (docs/training.md §9): host/edgetune/refit.refit_scratch."""
    return _refit_scratch(model, scheme, labels, cv)


def checkpoint_bytes(model: EtmModel, scheme, momentum: bool = False, frame: bool = False) -> int:
    """Heap bytes of one in-RAM checkpoint, `m.state()` (the app's rollback / do-no-harm guard
    holds at most two at a time: the model before the recipe and the best SGD epoch): the
    trained-weights file's 32-byte header + the params region (docs/training.md §6.3, §7) + the
    sensor-frame trailer (44 bytes) when the model has a frame."""
    return 32 + sum(n for _, _, n in params_items(model, scheme, momentum)) + (44 if frame else 0)


# The training arena decomposed for the scheme search (docs/scheme-search.md §3): for a fixed
# `first` layer and fold buffer the arena is base_cost + the sum of entry_cost over the entries.
# Both are computed with training_arena / params_items above, so the search prices with this
# planner and nothing else.


def entry_cost(model: EtmModel, layer: int, bias: bool, channels: tuple[int, ...], momentum: bool = False) -> int:
    """Exact bytes one scheme entry adds: its params items (+ momentum) and, when its weights
    train, the saved copy of its input. 0 when it trains nothing."""
    bias = bias and model.layers[layer].bias != NONE
    if not bias and not channels:
        return 0
    cost = sum(n for _, _, n in params_items(model, Scheme((Entry(layer, bias, tuple(channels)),)), momentum))
    if channels:
        cost += align4(model.tensors[activation_chain(model)[layer]].size)
    return cost


def base_cost(model: EtmModel, first: int, fold: int | None = None, momentum: bool = False) -> int | None:
    """Bytes that depend only on `first` and `fold`: work, masks of layers >= first, MAX_POOL
    arg-max records (i > first), loss (the entries themselves are entry_cost). `fold` is a layer
    above `first` whose output is the largest among the layers above `first` that train weights
    (the work region's fold buffer holds one such output; docs/training.md §6), None when no
    layer above `first` trains weights. None if `first` violates the accumulator bounds."""
    try:
        check_bounds(model, first)
    except ValueError:
        return None
    # price the scheme "layer `first` trains a dummy entry (+ one weight channel of `fold`)"
    # and subtract the entries' own costs
    ly = model.layers[first]
    dummy = Entry(first, ly.bias != NONE, () if ly.bias != NONE else (0,))
    entries = [dummy]
    sub = entry_cost(model, first, dummy.bias, dummy.channels, momentum)
    if fold is not None:
        entries.append(Entry(fold, False, (0,)))
        sub += entry_cost(model, fold, False, (0,), momentum)
    return training_arena(model, Scheme(tuple(entries)), momentum) - sub
