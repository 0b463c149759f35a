"""Fine-tune many schemes of one model in lockstep: R `training.Trainer` runs as one batch.

The scheme search (search/) fine-tunes ~40 schemes of the same model on the same samples in
the same order, each with the bit-exact twin. One twin step on a small model is ~150 numpy
operations on tiny arrays, so the cost is call overhead; running the R schemes as a leading
batch axis does each operation once for all of them.

`Lockstep(etm_bytes, schemes, lrs, qas)` keeps per run the trained copies (biases, all weights
of every layer some run trains) and their residuals; `step(x, label)` does for every run
exactly what `Trainer.step(x, label, lr_r, qas)` does, with the same float32 operations in the
same order per element (a run's layer is updated only if its scheme trains it; a run whose
gradient vanished or stopped is left alone; a weight channel a run does not train is never
written). `trainer(r)` returns run r as a `Trainer` (state installed), e.g. for `evaluate`.
tests/host/test_lockstep.py compares every run's trained-weights file with a sequential Trainer.

The arithmetic is not copied: the step loop (`backprop`), the loss gradient, the input and
weight gradients and the integer update are backward.py's run-axis functions, which `Trainer`
calls with R = 1; what is Lockstep's own is only its state (per-run copies and masks) and the
`update` it hands to `backprop`. The forward of a layer with per-run weights is
`reference.run_layer` with those weights.

Supported: momentum 0 and, from the lowest first trained layer up, CONV_2D, FULLY_CONNECTED,
MAX_POOL_2D and MEAN (the layers below run as inference); anything else raises
NotImplementedError and the caller falls back to one Trainer per scheme.
"""

from __future__ import annotations

import numpy as np

from . import reference
from ..format.modelfile import NONE, OP_CONV_2D, OP_FULLY_CONNECTED, OP_MAX_POOL_2D, OP_MEAN, read_etm
from ..format.scheme import Scheme, out_channels
from .grid import scatter_matrix
from .backward import backprop, commit, factor, input_grad, softmax_xent, to_lsb, weight_grad
from .qmath import F32, channel_scales, check_scales
from .training import Trainer

SUPPORTED = (OP_CONV_2D, OP_FULLY_CONNECTED, OP_MAX_POOL_2D, OP_MEAN)


class Lockstep:
    def __init__(self, buf: bytes, schemes: list[Scheme], lrs, qas: bool = True):
        self.buf = bytes(buf)
        m = self.model = read_etm(self.buf)
        self.schemes = list(schemes)
        R = self.R = len(self.schemes)
        if R == 0:
            raise ValueError("no schemes")
        self.lr = np.asarray(lrs, dtype=F32).reshape(-1)
        if self.lr.size != R:
            raise ValueError("one learning rate per scheme")
        self.qas = bool(qas)
        L = len(m.layers)
        for s in self.schemes:
            s.validate(m)
            check_scales(m, s)
        self.first = np.array([L if s.first is None else s.first for s in self.schemes], np.int64)
        self.f0 = int(self.first.min())
        for i in range(self.f0, L):
            ly = m.layers[i]
            if ly.op not in SUPPORTED:
                raise NotImplementedError(f"lockstep: {ly.op_name} above the first trained layer")
            if ly.op == OP_CONV_2D:
                oh, ow = m.tensors[ly.output].shape[1:3]
                _, kh, kw, _ = m.tensors[ly.weight].shape
                h, w = m.tensors[ly.input].shape[1:3]
                if scatter_matrix(oh, ow, kh, kw, ly.stride_h, ly.stride_w, ly.pad_h, ly.pad_w, h, w) is None:
                    raise NotImplementedError("lockstep: conv geometry too large for the scatter matrix")
        # per layer: runs training its bias / which channels of its weights
        self.bmask: dict[int, np.ndarray] = {}
        self.wmask: dict[int, np.ndarray] = {}
        for r, s in enumerate(self.schemes):
            for e in s.entries:
                c = out_channels(m, e.layer)
                if e.bias:
                    self.bmask.setdefault(e.layer, np.zeros(R, bool))[r] = True
                if e.channels:
                    self.wmask.setdefault(e.layer, np.zeros((R, c), bool))[r, list(e.channels)] = True
        self.trained = sorted(set(self.bmask) | set(self.wmask))
        # per-run copies of every trained layer's bias and weights (identical until trained)
        self.B: dict[int, np.ndarray] = {}
        self.W: dict[int, np.ndarray] = {}
        self.res_b: dict[int, np.ndarray] = {}
        self.res_w: dict[int, np.ndarray] = {}
        for i in self.trained:
            ly = m.layers[i]
            c = out_channels(m, i)
            if ly.bias != NONE:
                self.B[i] = np.repeat(m.tensors[ly.bias].data.astype(np.int32).reshape(1, c), R, 0)
                self.res_b[i] = np.zeros((R, c), np.int16)
            w = m.tensors[ly.weight].data.astype(np.int8)
            self.W[i] = np.repeat(w[None], R, 0)
            self.res_w[i] = np.zeros((R, c, w.size // c), np.int16)
        self.s_w = {i: channel_scales(m.tensors[ly.weight], out_channels(m, i))
                    for i, ly in enumerate(m.layers) if ly.weight != NONE}
        self.r_c = {i: (sw / sw.max()).astype(F32) for i, sw in self.s_w.items()}
        self.s_wmax = {i: sw.max() for i, sw in self.s_w.items()}
        self.s_b = {i: channel_scales(m.tensors[m.layers[i].bias], out_channels(m, i)) for i in self.B}

    # ------------------------------------------------------------------ forward

    def _weights(self, i: int) -> np.ndarray:
        """(R or 1, *weight shape) int8: per-run copies or the frozen tensor."""
        if i in self.W:
            return self.W[i]
        return self.model.tensors[self.model.layers[i].weight].data[None]

    def _layer(self, i: int, x: np.ndarray) -> np.ndarray:
        m = self.model
        ly = m.layers[i]
        return reference.run_layer(m, ly, x, self.W.get(i), self.B.get(i))

    # ------------------------------------------------------------------ step

    def step(self, x, label: int) -> np.ndarray:
        """One SGD step of every run on the same sample; returns the float32 losses (R,)."""
        m, R = self.model, self.R
        t_in = m.input_tensor
        x = np.asarray(x)
        if x.dtype != np.int8 or x.size != t_in.size:
            raise ValueError("input must be int8 with the model's input size")
        label = int(label)
        L = len(m.layers)
        a = x.reshape((1,) + tuple(t_in.shape[1:]))
        for i in range(self.f0):
            a = reference.run_layer(m, m.layers[i], a)
        acts: dict[int, np.ndarray] = {self.f0: np.repeat(a, R, 0)}
        for i in range(self.f0, L):
            acts[i + 1] = self._layer(i, acts[i])
        t_out = m.output_tensor
        loss, g = softmax_xent(acts[L].reshape(R, -1), t_out.scale, t_out.zero_point, label)
        backprop(m.layers, acts, g, self.first, self.f0, self._input_grad, self._update)
        return loss

    def _input_grad(self, i: int, g: np.ndarray, s_g: np.ndarray, x: np.ndarray):
        m = self.model
        ly = m.layers[i]
        w = self._weights(i) if ly.weight != NONE else None
        return input_grad(ly, g, s_g, x, w, self.r_c.get(i), self.s_wmax.get(i), m.tensors[ly.input].shape[1:])

    def _update(self, i: int, g: np.ndarray, s_g: np.ndarray, x: np.ndarray, upd: np.ndarray) -> None:
        if i not in self.bmask and i not in self.wmask:
            return
        m = self.model
        ly = m.layers[i]
        R = g.shape[0]
        c_out = g.shape[-1]
        g2 = g.reshape(R, -1, c_out)
        neg = ((-self.lr) * s_g).astype(F32)
        if i in self.bmask:
            rows = upd & self.bmask[i]
            if rows.any():
                G = g2.sum(axis=1)
                d = to_lsb(factor(neg, self.s_b[i], self.qas) * G.astype(F32))
                p, r = commit(d, self.res_b[i], self.B[i], True)
                self.B[i][rows] = p[rows]
                self.res_b[i][rows] = r[rows]
        if i in self.wmask:
            sel = self.wmask[i] & upd[:, None]
            rw = np.flatnonzero(sel.any(axis=1))  # only the runs that train these weights
            if rw.size:
                sel = sel[rw]
                t_in = m.tensors[ly.input]
                s_x, zp_x = F32(t_in.scale), int(t_in.zero_point)
                A = weight_grad(ly, m.tensors[ly.weight].shape[1:3], g[rw], x[rw], zp_x)
                f = factor((neg[rw] * s_x).astype(F32), self.s_w[i], self.qas)
                d = to_lsb(f[:, :, None] * A.astype(F32))
                view = self.W[i].reshape(R, c_out, -1)[rw]
                res = self.res_w[i][rw]
                p, r = commit(d, res, view, False)
                view[sel] = p[sel].astype(np.int8)
                res[sel] = r[sel]
                self.W[i].reshape(R, c_out, -1)[rw] = view
                self.res_w[i][rw] = res

    # ------------------------------------------------------------------ results

    def accuracy(self, xs, labels) -> list[float]:
        """Per run: `Trainer.evaluate(xs, labels)[1]` (the same forward and the same float32
        division), without the per-sample loss loop."""
        m = self.model
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        n = labels.size
        t_in = m.input_tensor
        xs = np.asarray(xs)
        if n == 0 or xs.dtype != np.int8 or xs.size != n * t_in.size:
            raise ValueError(f"xs must be int8 with {n} x {t_in.size} elements")
        if np.any((labels < 0) | (labels >= m.output_tensor.size)):
            raise ValueError("label out of range")
        xs = xs.reshape((n,) + tuple(t_in.shape[1:]))
        out = []
        for r in range(self.R):
            ys = reference.forward_batch(self.trainer(r).live, xs).reshape(n, -1)
            correct = int((np.argmax(ys, axis=1) == labels).sum())
            out.append(float(F32(F32(correct) / F32(n))))
        return out

    def trainer(self, r: int) -> Trainer:
        """Run r as a Trainer with its trained state installed."""
        tr = Trainer(self.buf, self.schemes[r])
        m = self.model
        for e in self.schemes[r].entries:
            i = e.layer
            if e.bias:
                tr.bias[i].reshape(-1)[:] = self.B[i][r]
                tr.res_b[i][:] = self.res_b[i][r]
            if e.channels:
                sel = tr.sel[i]
                view = tr.weight[i].reshape(out_channels(m, i), -1)
                view[sel] = self.W[i][r].reshape(out_channels(m, i), -1)[sel]
                tr.res_w[i][:] = self.res_w[i][r][sel]
        return tr
