"""Sparse-update schemes: which biases and which weight channels train (docs/training.md §1).

A `Scheme` is an ordered tuple of `Entry(layer, bias, channels)` over the layers that have
weights (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED). `Scheme.build` makes one from the usual
knobs (n_bias, weight layers with channel ratios picked by the l1 criterion, the classifier);
`encode`/`decode` are the .etm scheme section; `validate` raises ValueError on anything the
device would refuse (including the int32 accumulator bounds of §4b).

Text form (`edgetune export --scheme TEXT`, `Scheme.parse`): comma-separated items
  `default`         biases of all weight layers + the classifier (the default scheme)
  `bias=N`          biases of the last N weight layers
  `wL=R`            weights of layer L (negative counts from the end, Python style) with channel
                    ratio R in 1, 1/2, 1/4, 1/8 (l1 criterion)
  `noclf`           do not add the classifier (ablations)
e.g. `bias=2,w-3=1/4`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping

import numpy as np

from .modelfile import (
    NONE, OP_AVERAGE_POOL_2D, OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED, OP_MAX_POOL_2D,
    EtmModel,
)

SCHEME_VERSION = 1
WEIGHT_OPS = (OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED)
RATIOS = (Fraction(1), Fraction(1, 2), Fraction(1, 4), Fraction(1, 8))
FLAG_BIAS, FLAG_WEIGHTS = 1, 2

_HEAD = struct.Struct("<HH")
_ENTRY = struct.Struct("<HBBHH")


@dataclass(frozen=True)
class Entry:
    """One trained layer: its bias (if `bias`) and the weights of output channels `channels`
    (ascending; empty = weights frozen)."""

    layer: int
    bias: bool = False
    channels: tuple[int, ...] = ()

    @property
    def flags(self) -> int:
        return (FLAG_BIAS if self.bias else 0) | (FLAG_WEIGHTS if self.channels else 0)


def weight_layers(model: EtmModel) -> list[int]:
    """Indices of the layers with weights, in order."""
    return [i for i, ly in enumerate(model.layers) if ly.op in WEIGHT_OPS]


def classifier(model: EtmModel) -> int | None:
    """Index of the classifier (layer L-1 if it is FULLY_CONNECTED), else None."""
    last = len(model.layers) - 1
    return last if model.layers[last].op == OP_FULLY_CONNECTED else None


def out_channels(model: EtmModel, layer: int) -> int:
    return int(model.tensors[model.layers[layer].output].shape[3])


def per_channel(model: EtmModel, layer: int) -> int:
    """Number of int8 weights of one output channel (FC: K, CONV: KH*KW*C_in, DEPTHWISE: KH*KW)."""
    ly = model.layers[layer]
    shape = model.tensors[ly.weight].shape
    if ly.op == OP_DEPTHWISE_CONV_2D:
        return int(shape[1] * shape[2])
    return int(shape[1] * shape[2] * shape[3])


def channel_weights(model: EtmModel, layer: int, w: np.ndarray | None = None) -> np.ndarray:
    """View of a weight tensor as (C_out, per_channel) in storage order (depthwise: transposed)."""
    ly = model.layers[layer]
    if w is None:
        w = model.tensors[ly.weight].data
    if ly.op == OP_DEPTHWISE_CONV_2D:
        return w.reshape(-1, w.shape[3]).T
    return w.reshape(w.shape[0], -1)


def l1_channels(model: EtmModel, layer: int, n_sel: int) -> tuple[int, ...]:
    """The `n_sel` channels with the largest sum |w_q|, ties to the lower index, sorted ascending."""
    score = np.abs(channel_weights(model, layer).astype(np.int64)).sum(axis=1)
    order = np.lexsort((np.arange(score.size), -score))
    return tuple(int(c) for c in np.sort(order[:n_sel]))


def _ratio(r) -> Fraction:
    try:
        f = Fraction(r).limit_denominator(64) if isinstance(r, float) else Fraction(r)
    except (ValueError, ZeroDivisionError, TypeError):
        raise ValueError(f"channel ratio {r!r} is not a number; use 1, 1/2, 1/4 or 1/8") from None
    if f not in RATIOS:
        raise ValueError(f"channel ratio {r} is not one of 1, 1/2, 1/4, 1/8")
    return f


@dataclass(frozen=True)
class Scheme:
    entries: tuple[Entry, ...] = ()

    # ---------------------------------------------------------------- construction

    @classmethod
    def build(cls, model: EtmModel, n_bias: int = 0,
              weights: Mapping[int, object] | None = None, with_classifier: bool = True,
              criterion: str = "l1") -> "Scheme":
        """Biases of the last `n_bias` weight layers; weights of the layers in `weights`
        ({layer: ratio in 1, 1/2, 1/4, 1/8, or an explicit channel list}; negative layer
        indices count from the end); plus the classifier's weights and bias unless
        `with_classifier` is False."""
        if criterion != "l1":
            raise ValueError(f"channel criterion {criterion!r} is not supported (only 'l1')")
        wl = weight_layers(model)
        n_layers = len(model.layers)
        if not 0 <= n_bias <= len(wl):
            raise ValueError(f"n_bias={n_bias}: the model has {len(wl)} layers with weights")
        bias = set(i for i in wl[len(wl) - n_bias:] if model.layers[i].bias != NONE)
        chans: dict[int, tuple[int, ...]] = {}
        for key, spec in (weights or {}).items():
            layer = int(key)
            if layer < 0:
                layer += n_layers
            if not 0 <= layer < n_layers:
                raise ValueError(f"weight layer {key} is out of range (the model has {n_layers} layers)")
            if model.layers[layer].op not in WEIGHT_OPS:
                raise ValueError(f"layer {layer} ({model.layers[layer].op_name}) has no weights to train")
            c_out = out_channels(model, layer)
            if isinstance(spec, (list, tuple, np.ndarray)):
                ch = sorted(int(c) for c in spec)
                if not ch or len(set(ch)) != len(ch) or ch[0] < 0 or ch[-1] >= c_out:
                    raise ValueError(f"layer {layer}: channel list {list(spec)} must be non-empty, unique, "
                                     f"within 0..{c_out - 1}")
                chans[layer] = tuple(ch)
            else:
                r = _ratio(spec)
                chans[layer] = l1_channels(model, layer, max(1, c_out // r.denominator))
        clf = classifier(model)
        if with_classifier and clf is not None:
            chans[clf] = tuple(range(out_channels(model, clf)))
            if model.layers[clf].bias != NONE:
                bias.add(clf)
        entries = tuple(Entry(i, i in bias, chans.get(i, ())) for i in sorted(bias | set(chans)))
        s = cls(entries)
        s.validate(model)
        return s

    @classmethod
    def default(cls, model: EtmModel) -> "Scheme":
        """Biases of all weight layers + the classifier's weights (docs/training.md §1)."""
        return cls.build(model, n_bias=len(weight_layers(model)))

    @classmethod
    def for_model(cls, model: EtmModel) -> "Scheme":
        """The scheme stored in the .etm, else the default."""
        return cls.decode(model.scheme, model) if model.scheme else cls.default(model)

    @classmethod
    def parse(cls, text: str, model: EtmModel) -> "Scheme":
        """Build from the text form (module docstring), e.g. `bias=2,w-3=1/4`."""
        n_bias, weights, clf = 0, {}, True
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items == ["default"]:
            return cls.default(model)
        for t in items:
            if t == "noclf":
                clf = False
            elif t.startswith("bias="):
                try:
                    n_bias = int(t[5:])
                except ValueError:
                    raise ValueError(f"scheme item {t!r}: bias=N needs an integer") from None
            elif t.startswith("w") and "=" in t:
                k, v = t[1:].split("=", 1)
                try:
                    weights[int(k)] = Fraction(v)
                except (ValueError, ZeroDivisionError):
                    raise ValueError(f"scheme item {t!r}: expected wLAYER=RATIO, e.g. w3=1/4") from None
            else:
                raise ValueError(f"scheme item {t!r} not understood (use default, bias=N, wL=R, noclf)")
        return cls.build(model, n_bias, weights, clf)

    # ---------------------------------------------------------------- properties

    @property
    def first(self) -> int | None:
        """Smallest layer with a trainable parameter (None when nothing trains)."""
        return self.entries[0].layer if self.entries else None

    def entry(self, layer: int) -> Entry | None:
        for e in self.entries:
            if e.layer == layer:
                return e
        return None

    def n_params(self, model: EtmModel) -> int:
        """Number of trainable parameters (biases + selected weights)."""
        return sum((out_channels(model, e.layer) if e.bias else 0) + len(e.channels) * per_channel(model, e.layer)
                   for e in self.entries)

    def describe(self) -> str:
        parts = []
        for e in self.entries:
            what = (["b"] if e.bias else []) + ([f"w[{len(e.channels)}]"] if e.channels else [])
            parts.append(f"{e.layer}:{'+'.join(what)}")
        return ", ".join(parts) or "(nothing trains)"

    # ---------------------------------------------------------------- file format

    def encode(self) -> bytes:
        """The .etm scheme section (docs/training.md §1)."""
        out = bytearray(_HEAD.pack(SCHEME_VERSION, len(self.entries)))
        for e in self.entries:
            out += _ENTRY.pack(e.layer, e.flags, 0, len(e.channels), 0)
            ch = list(e.channels) + ([0] if len(e.channels) % 2 else [])
            out += struct.pack(f"<{len(ch)}H", *ch)
        return bytes(out)

    def crc(self) -> int:
        return zlib.crc32(self.encode()) & 0xFFFFFFFF

    @classmethod
    def decode(cls, data: bytes, model: EtmModel) -> "Scheme":
        """Parse and validate a scheme section against `model` (ValueError says what is wrong)."""
        data = bytes(data)
        if len(data) < _HEAD.size:
            raise ValueError(f"scheme section has {len(data)} bytes; the header alone is {_HEAD.size}")
        version, n = _HEAD.unpack_from(data, 0)
        if version != SCHEME_VERSION:
            raise ValueError(f"scheme version {version} is not supported (expected {SCHEME_VERSION})")
        off, entries = _HEAD.size, []
        for k in range(n):
            if off + _ENTRY.size > len(data):
                raise ValueError(f"scheme section truncated in entry {k} of {n}")
            layer, flags, res0, n_sel, res1 = _ENTRY.unpack_from(data, off)
            off += _ENTRY.size
            if res0 or res1:
                raise ValueError(f"scheme entry {k} (layer {layer}): reserved fields must be 0")
            if flags not in (1, 2, 3):
                raise ValueError(f"scheme entry {k} (layer {layer}): flags {flags} must be 1 (bias), 2 (weights) or 3")
            if (n_sel == 0) != (not flags & FLAG_WEIGHTS):
                raise ValueError(f"scheme entry {k} (layer {layer}): n_sel={n_sel} but the weights flag is "
                                 f"{'set' if flags & FLAG_WEIGHTS else 'clear'}")
            padded = n_sel + (n_sel & 1)
            if off + 2 * padded > len(data):
                raise ValueError(f"scheme section truncated in the channel list of entry {k} (layer {layer})")
            ch = struct.unpack_from(f"<{padded}H", data, off)
            off += 2 * padded
            if n_sel & 1 and ch[-1]:
                raise ValueError(f"scheme entry {k} (layer {layer}): the pad after an odd channel list must be 0")
            entries.append(Entry(layer, bool(flags & FLAG_BIAS), tuple(ch[:n_sel])))
        if off != len(data):
            raise ValueError(f"scheme section is {len(data)} bytes but its {n} entries take {off}")
        s = cls(tuple(entries))
        s.validate(model)
        return s

    # ---------------------------------------------------------------- validation

    def validate(self, model: EtmModel) -> None:
        """Raise ValueError if the device would refuse this scheme for `model`."""
        prev = -1
        for e in self.entries:
            if e.layer <= prev:
                raise ValueError(f"scheme entries must be in strictly increasing layer order "
                                 f"(layer {e.layer} after {prev})")
            prev = e.layer
            if e.layer >= len(model.layers):
                raise ValueError(f"scheme names layer {e.layer}; the model has {len(model.layers)} layers")
            ly = model.layers[e.layer]
            if ly.op not in WEIGHT_OPS:
                raise ValueError(f"scheme names layer {e.layer} ({ly.op_name}), which has no weights")
            if not e.bias and not e.channels:
                raise ValueError(f"scheme entry for layer {e.layer} trains nothing")
            if e.bias and ly.bias == NONE:
                raise ValueError(f"scheme trains the bias of layer {e.layer} ({ly.op_name}), which has no bias tensor")
            c_out = out_channels(model, e.layer)
            ch = list(e.channels)
            if len(ch) > c_out:
                raise ValueError(f"layer {e.layer}: {len(ch)} channels selected, it has {c_out}")
            if any(b <= a for a, b in zip(ch, ch[1:])) or (ch and (ch[0] < 0 or ch[-1] >= c_out)):
                raise ValueError(f"layer {e.layer}: channel list must be strictly ascending within 0..{c_out - 1}")
        check_bounds(model, self.first)


LIM31 = 1 << 31


def check_bounds(model: EtmModel, first: int | None) -> None:
    """ValueError if an int32 input-gradient accumulator of a layer i > first could overflow (§4b)."""
    if first is None:
        return
    for i in range(first + 1, len(model.layers)):
        ly = model.layers[i]
        if ly.op in WEIGHT_OPS:
            w = model.tensors[ly.weight].shape
            if ly.op == OP_FULLY_CONNECTED:
                fan = w[0]
            elif ly.op == OP_CONV_2D:
                fan = w[0] * w[1] * w[2]
            else:
                fan = ly.depth_multiplier * w[1] * w[2]
            bound = 32768 * 128 * fan  # |g| <= 32768 (int16), |w| <= 128 (a flashed -128)
        elif ly.op == OP_AVERAGE_POOL_2D:
            bound = 32768 * 1024 * ly.filter_h * ly.filter_w
        elif ly.op == OP_MAX_POOL_2D:
            bound = 32768 * ly.filter_h * ly.filter_w
        else:
            continue
        if bound >= LIM31:
            raise ValueError(f"layer {i} ({ly.op_name}): its input-gradient accumulator could overflow int32 "
                             f"(bound {bound} >= 2^31); train only layers after it")


def attach(model: EtmModel, text: str) -> Scheme:
    """Parse a scheme text (module docstring) for `model`, store its encoding in `model.scheme`
    (written into the .etm by `write_etm`) and return it. For `edgetune export --scheme`."""
    s = Scheme.parse(text, model)
    model.scheme = s.encode()
    return s
