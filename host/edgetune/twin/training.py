"""The numpy twin of one on-device training step (docs/training.md is the normative text).

`Trainer(etm_bytes_or_model, scheme=None, momentum=0.0, batch=False)` holds the trainable copies
(int32 biases, int8 weights of the selected channels), their int16 residuals and optional float32
momentum, and does exactly what the C module does (`step` one sample; with batch=True,
`step_batch(xs, labels, lr, qas)` a mini-batch, docs/training.md §5):

- the forward pass reuses `reference.run_layer` on a *live* copy of the model whose trained
  tensors are this object's arrays (so the kernels are REF's, not duplicated);
- every float operation is an np.float32 operation in the written order (no float sums except
  the sequential softmax sum); every reduction is an exact integer sum (int64 numpy, or float64
  matmuls of integers whose partial sums stay far below 2**53, which are exact in any order);
- `et_expf`, `et_logf`, `round_sat` and `rdiv` are the spec's functions, vectorized (qmath.py);
- the backward pass is backward.py's run-axis step loop (`backprop`) and its input gradients,
  weight gradients and update arithmetic, called with one run (R = 1): the search's lockstep
  runs (lockstep.py) are the same functions with R > 1. What is the Trainer's own is its state
  (selected channels, momentum, the mini-batch accumulators, the trace) in `_update`.

`state_bytes()` / `load_state()` / `save()` / `load()` are the trained-weights file (§7) whose
payload is the params region of §6.3 byte for byte. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from . import reference
from ..format.modelfile import NONE, OP_FULLY_CONNECTED, EtmModel, read_etm, write_etm
from ..format.scheme import Scheme, channel_weights, out_channels, per_channel
from ..format.weights import WeightsFile
from .backward import backprop, commit, factor, input_grad, softmax_xent, to_lsb, weight_grad
from .qmath import LIM30, F32, channel_scales, check_scales, round_sat  # noqa: F401 (LIM30: training.LIM30)


@dataclasses.dataclass
class StepInfo:
    """Debug record of the last step (real-unit gradients for tests)."""

    loss: np.float32
    g_logits: np.ndarray | None = None  # dL/dz, float32
    # layer -> {"b": dL/db, "w": dL/dW[slot, k] (float64, real units: s_g*G, s_g*s_x*A),
    #           "db", "dw": the steps d in 2^-15 LSB before momentum (int64)}
    grads: dict = dataclasses.field(default_factory=dict)
    stopped_at: int | None = None


class Trainer(WeightsFile):
    """Training state of one model + scheme, bit-identical with the C module (its trained-weights
    file: format/weights.py)."""

    def __init__(self, model: EtmModel | bytes, scheme: Scheme | None = None, momentum: float = 0.0,
                 batch: bool = False):
        if isinstance(model, EtmModel):
            buf = write_etm(model)
            model = read_etm(buf)
        else:
            buf = bytes(model)
            model = read_etm(buf)
        self.model = model
        self.model_crc = struct.unpack_from("<I", buf, 12)[0]
        self.scheme = scheme if scheme is not None else Scheme.for_model(model)
        self.scheme.validate(model)
        for e in self.scheme.entries:  # the C channel map holds int16 channel numbers
            if e.channels and out_channels(model, e.layer) > 32767:
                raise ValueError(f"layer {e.layer}: {out_channels(model, e.layer)} output channels; "
                                 f"training handles at most 32767")
        check_scales(model, self.scheme)
        self.momentum = F32(momentum)
        if not (self.momentum >= 0 and self.momentum < 1):
            raise ValueError(f"momentum {momentum} must be in [0, 1)")
        self.first = self.scheme.first
        self._first_run = np.array([len(model.layers) if self.first is None else self.first])  # backprop's run axis
        self.batch = bool(batch)
        self._acc: dict | None = None  # inside step_batch: {("b"|"w", layer): float32 accumulator}
        # live model: trained tensors are replaced by our own arrays (mutated in place)
        self.live = dataclasses.replace(model, tensors=list(model.tensors), layers=list(model.layers))
        self.bias: dict[int, np.ndarray] = {}
        self.weight: dict[int, np.ndarray] = {}
        self.sel: dict[int, np.ndarray] = {}
        for e in self.scheme.entries:
            ly = model.layers[e.layer]
            if e.bias:
                self.live.tensors[ly.bias] = dataclasses.replace(model.tensors[ly.bias], data=None)
            if e.channels:
                self.live.tensors[ly.weight] = dataclasses.replace(model.tensors[ly.weight], data=None)
                self.sel[e.layer] = np.asarray(e.channels, dtype=np.int64)
        # fixed per-layer float32 constants
        self.s_w: dict[int, np.ndarray] = {}
        self.r_c: dict[int, np.ndarray] = {}
        self.s_wmax: dict[int, np.float32] = {}
        self.s_b: dict[int, np.ndarray] = {}  # bias scales, filled on first use
        for i, ly in enumerate(model.layers):
            if ly.weight != NONE:
                sw = channel_scales(model.tensors[ly.weight], out_channels(model, i))
                self.s_w[i] = sw
                self.s_wmax[i] = sw.max()
                self.r_c[i] = (sw / sw.max()).astype(F32)
        from .refit import refit_layer

        self.refit_layer = refit_layer(model, self.scheme)  # has the §6.3 quantization item
        self.qscale = None
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Back to the flashed weights; residuals and momentum zero."""
        m = self.model
        self.res_b: dict[int, np.ndarray] = {}
        self.res_w: dict[int, np.ndarray] = {}
        self.mom_b: dict[int, np.ndarray] = {}
        self.mom_w: dict[int, np.ndarray] = {}
        for e in self.scheme.entries:
            ly = m.layers[e.layer]
            c_out = out_channels(m, e.layer)
            if e.bias:
                b = m.tensors[ly.bias].data.astype(np.int32).copy()
                self.bias[e.layer] = b
                self.live.tensors[ly.bias].data = b
                self.res_b[e.layer] = np.zeros(c_out, np.int16)
                self.mom_b[e.layer] = np.zeros(c_out, F32)
            if e.channels:
                w = m.tensors[ly.weight].data.astype(np.int8).copy()
                self.weight[e.layer] = w
                self.live.tensors[ly.weight].data = w
                shape = (len(e.channels), per_channel(m, e.layer))
                self.res_w[e.layer] = np.zeros(shape, np.int16)
                self.mom_w[e.layer] = np.zeros(shape, F32)
        if self.refit_layer is not None:
            from .refit import Flashed

            fl = Flashed(m, self.refit_layer)
            self._set_qscale(self.refit_layer, fl.s_w, fl.s_b, fl.mult, fl.shift)

    def _set_qscale(self, i: int, s_w, s_b, mult, shift) -> None:
        """The classifier's per-channel weight/bias scales and requantization multipliers
        (the params region's last item, §6.3): every later forward and update uses them."""
        s_w = np.asarray(s_w, F32).copy()
        self.s_w[i] = s_w
        self.s_wmax[i] = s_w.max()
        self.r_c[i] = (s_w / s_w.max()).astype(F32)
        self.s_b[i] = np.asarray(s_b, F32).copy()
        self.live.layers[i] = dataclasses.replace(self.model.layers[i], multipliers=np.asarray(mult, np.int32).copy(),
                                                  shifts=np.asarray(shift, np.int32).copy())
        self.qscale = (self.s_w[i], self.s_b[i], self.live.layers[i].multipliers, self.live.layers[i].shifts)

    def install_classifier(self, i: int, q: dict) -> None:
        """A refit's result (refit.py): int8 weights (C, K), int32 biases, scales and multipliers;
        the classifier's residuals and momentum restart at zero."""
        self.bias[i].reshape(-1)[:] = q["b"]
        channel_weights(self.model, i, self.weight[i])[:] = q["w"]
        self.res_b[i][:] = 0
        self.res_w[i][:] = 0
        self.mom_b[i][:] = 0
        self.mom_w[i][:] = 0
        self._set_qscale(i, q["s_w"], q["s_b"], q["mult"], q["shift"])

    def refit(self, xs, labels, l2=None, alpha=None) -> dict:
        """Closed-form classifier refit (docs/training.md §9, host/edgetune/twin/refit.py)."""
        from .refit import refit

        return refit(self, xs, labels, l2, alpha)

    def trained_weights(self, layer: int) -> np.ndarray:
        """(n_sel, per_channel) int8 copy of the selected channels of `layer`."""
        return channel_weights(self.model, layer, self.weight[layer])[self.sel[layer]].copy()

    # ------------------------------------------------------------------ inference

    def _input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise TypeError(f"input must be int8, got {x.dtype}")
        t = self.model.input_tensor
        if x.size != t.size:
            raise ValueError(f"input has {x.size} elements, model input {t.shape} needs {t.size}")
        return x.reshape((1,) + tuple(t.shape[1:]))

    def predict(self, x) -> np.ndarray:
        """int8 logits with the current weights."""
        return reference.forward_batch(self.live, self._input(x)).reshape(self.model.output_tensor.shape)

    def _label(self, label) -> int:
        c = self.model.output_tensor.size
        label = int(label)
        if not 0 <= label < c:
            raise ValueError(f"label {label} out of range 0..{c - 1}")
        return label

    def evaluate(self, xs, labels) -> tuple[np.float32, np.float32]:
        """(mean loss, accuracy) as in docs/training.md §5."""
        xs = np.asarray(xs)
        labels = [self._label(lb) for lb in np.asarray(labels).reshape(-1)]
        n = len(labels)
        if n == 0:
            raise ValueError("evaluate needs at least one sample")
        t_in, t_out = self.model.input_tensor, self.model.output_tensor
        if xs.dtype != np.int8 or xs.size != n * t_in.size:
            raise ValueError(f"xs must be int8 with {n} x {t_in.size} elements")
        ys = reference.forward_batch(self.live, xs.reshape((n,) + tuple(t_in.shape[1:]))).reshape(n, -1)
        total = F32(0)
        correct = 0
        for k in range(n):
            loss = softmax_xent(ys[k][None], t_out.scale, t_out.zero_point, labels[k])[0][0]
            total = loss if k == 0 else F32(total + loss)
            correct += int(np.argmax(ys[k]) == labels[k])
        return F32(total / F32(n)), F32(F32(correct) / F32(n))

    # ------------------------------------------------------------------ training step

    def step(self, x, label: int, lr: float, qas: bool = True, trace: bool = False) -> np.float32:
        """One SGD step on one sample (§2–§4); returns the float32 loss. With `trace`, the
        real-unit gradients are kept in `self.info` (a StepInfo)."""
        m = self.model
        label = self._label(label)
        x = self._input(x)
        lr = F32(lr)
        # §2 forward (all activations kept; the device keeps only what §2 lists), one run (R = 1)
        acts = [x]
        for ly in self.live.layers:  # the classifier's multipliers may be a refit's (§6.3)
            acts.append(reference.run_layer(self.live, ly, acts[-1]))
        t_out = m.output_tensor
        losses, gs = softmax_xent(acts[-1].reshape(1, -1), t_out.scale, t_out.zero_point, label)
        loss = losses[0]
        info = StepInfo(loss, gs[0].copy() if trace else None)
        self.info = info
        if self.first is None:
            return loss

        def update(i, g, s_g, x, rows):
            e = self.scheme.entry(i)
            if e is not None:
                self._update(i, e, g[0], s_g[0], x[0], lr, qas, info if trace else None)

        stopped = backprop(m.layers, acts, gs, self._first_run, self.first, self._input_grad, update)
        if stopped[0] >= 0:
            info.stopped_at = int(stopped[0])
        return loss

    def step_batch(self, xs, labels, lr: float, qas: bool = True) -> np.float32:
        """One mini-batch step on k samples (docs/training.md §5); returns the mean float32 loss.
        Every sample runs with the weights as at the start; the real-valued steps accumulate
        in float32 in sample order; then d = round_sat((acc / k) * 32768) and §4f-g once for
        every trainable parameter."""
        if not self.batch:
            raise ValueError("k labels need a batch model: create the Model with batch=True")
        labels = [self._label(lb) for lb in np.asarray(labels).reshape(-1)]
        k = len(labels)
        if k == 0:
            raise ValueError("a batch needs at least one label")
        xs = np.asarray(xs)
        n_in = self.model.input_tensor.size
        if xs.dtype != np.int8 or xs.size != k * n_in:
            raise ValueError(f"xs must be int8 with {k} x {n_in} elements")
        lr = F32(lr)
        if not np.isfinite(lr):
            raise ValueError("lr must be a finite number")
        xs = xs.reshape(k, n_in)
        acc = {}
        for e in self.scheme.entries:
            if e.bias:
                acc[("b", e.layer)] = np.zeros(len(self.res_b[e.layer]), F32)
            if e.channels:
                acc[("w", e.layer)] = np.zeros(self.res_w[e.layer].shape, F32)
        self._acc = acc
        try:
            total = F32(0)
            for s in range(k):
                loss = self.step(xs[s], labels[s], lr, qas)
                total = loss if s == 0 else F32(total + loss)
        finally:
            self._acc = None
        kf = F32(k)
        m = self.model
        for e in self.scheme.entries:
            i = e.layer
            if e.bias:
                d = round_sat((acc[("b", i)] / kf) * F32(32768.0))
                self.res_b[i][:] = self._apply(d, self.res_b[i], self.mom_b[i], self.bias[i].reshape(-1), True)
            if e.channels:
                sel = self.sel[i]
                d = round_sat((acc[("w", i)] / kf) * F32(32768.0))
                view = channel_weights(m, i, self.weight[i])
                wsel = view[sel].astype(np.int64)
                self.res_w[i][:] = self._apply(d, self.res_w[i], self.mom_w[i], wsel, False)
                view[sel] = wsel.astype(np.int8)
        return F32(total / kf)

    def _input_grad(self, i: int, g: np.ndarray, s_g: np.ndarray, x: np.ndarray):
        """§4b for backprop: (acc (1, H, W, C_in) int64, s_acc (1,) float32)."""
        m = self.model
        ly = m.layers[i]
        w = self.live.tensors[ly.weight].data[None] if ly.weight != NONE else None
        return input_grad(ly, g, s_g, x, w, self.r_c.get(i), self.s_wmax.get(i), m.tensors[ly.input].shape[1:])

    def _update(self, i: int, e, g: np.ndarray, s_g, x: np.ndarray, lr, qas: bool, info) -> None:
        """§4d–g for layer i with the masked output gradient g (int64 (OH, OW, C))."""
        m = self.model
        ly = m.layers[i]
        c_out = g.shape[-1]
        g2 = g.reshape(-1, c_out)
        neg = F32(F32(-lr) * s_g)
        if e.bias:
            G = g2.sum(axis=0)
            s_b = self.s_b.get(i)
            if s_b is None:
                s_b = self.s_b[i] = channel_scales(m.tensors[ly.bias], c_out)
            f = factor(neg, s_b, qas)
            if self._acc is not None:
                a = self._acc[("b", i)]
                a[...] = (a + (f * G.astype(F32))).astype(F32)
                return self._update_w(i, g, x, neg, s_g, qas, info) if e.channels else None
            d = to_lsb(f * G.astype(F32))
            if info is not None:
                info.grads.setdefault(i, {}).update(b=float(s_g) * G.astype(np.float64), db=d.copy())
            self.res_b[i][:] = self._apply(d, self.res_b[i], self.mom_b[i], self.bias[i].reshape(-1), True)
        if e.channels:
            self._update_w(i, g, x, neg, s_g, qas, info)

    def _update_w(self, i: int, g: np.ndarray, x: np.ndarray, neg, s_g, qas: bool, info) -> None:
        """§4e (and f, g) for layer i's selected channels."""
        m = self.model
        ly = m.layers[i]
        sel = self.sel[i]
        t_in = m.tensors[ly.input]
        s_x, zp_x = F32(t_in.scale), int(t_in.zero_point)
        A = self._weight_grad(i, g, x, sel, zp_x)
        s_w = self.s_w[i][sel]
        base = F32(neg * s_x)
        f = factor(base, s_w, qas)
        if self._acc is not None:
            a = self._acc[("w", i)]
            a[...] = (a + (f[:, None] * A.astype(F32))).astype(F32)
            return
        d = to_lsb(f[:, None] * A.astype(F32))
        if info is not None:
            info.grads.setdefault(i, {}).update(w=float(s_g) * float(s_x) * A.astype(np.float64), dw=d.copy())
        view = channel_weights(m, i, self.weight[i])
        wsel = view[sel].astype(np.int64)
        self.res_w[i][:] = self._apply(d, self.res_w[i], self.mom_w[i], wsel, False)
        view[sel] = wsel.astype(np.int8)

    def _apply(self, d: np.ndarray, res: np.ndarray, mom: np.ndarray, param: np.ndarray, is_bias: bool) -> np.ndarray:
        """§4f–g in place on `param` (int32 bias view or int64 weight copy); returns the new residual."""
        if self.momentum > 0:
            v = (self.momentum * mom + d.astype(F32)).astype(F32)
            mom[...] = v
            d = round_sat(v)
        param[...], r = commit(d, res, param, is_bias)
        return r

    def _weight_grad(self, i: int, g: np.ndarray, x: np.ndarray, sel: np.ndarray, zp_x: int) -> np.ndarray:
        """§4e: A[slot, k] int64 for the selected channels."""
        ly = self.model.layers[i]
        kernel = (1, 1) if ly.op == OP_FULLY_CONNECTED else self.model.tensors[ly.weight].shape[1:3]
        return weight_grad(ly, kernel, g[None], x[None], zp_x, sel)[0]
