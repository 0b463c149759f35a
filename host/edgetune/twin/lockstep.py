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

The arithmetic is not copied: the loss gradient, the input and weight gradients and the integer
update are backward.py's run-axis functions, which `Trainer` calls with R = 1; the forward of a
layer with per-run weights uses reference.py's padding, im2col and requantization.

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
from .backward import commit, max_pool_input_grad, mean_input_grad, softmax_xent, weight_grad, weighted_input_grad
from .qmath import F32, channel_scales, check_scales, rdiv, round_sat
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
        if i not in self.W:
            return reference.run_layer(m, ly, x)
        R = x.shape[0]
        t_out = m.tensors[ly.output]
        W = self.W[i]
        c_out = out_channels(m, i)
        if ly.op == OP_CONV_2D:
            _, oh, ow, _ = t_out.shape
            _, _, kh, kw, _ = W.shape
            xs = x.astype(np.float64) + ly.input_offset
            xp = reference.pad(xs, ly.pad_h, ly.pad_w, kh, kw, ly.stride_h, ly.stride_w, oh, ow, 0)
            cols = reference.im2col(xp, kh, kw, ly.stride_h, ly.stride_w, oh, ow).reshape(R, oh * ow, -1)
            acc = np.matmul(cols, W.reshape(R, c_out, -1).astype(np.float64).transpose(0, 2, 1))
        else:  # FULLY_CONNECTED
            xs = x.reshape(R, 1, -1).astype(np.float64) + ly.input_offset
            acc = np.matmul(xs, W.reshape(R, c_out, -1).astype(np.float64).transpose(0, 2, 1))
        acc = acc.astype(np.int64)
        if i in self.B:
            acc += self.B[i][:, None, :]
        y = reference.requantize(acc, ly.multipliers, ly.shifts, ly.output_offset, ly.act_min, ly.act_max)
        return y.reshape((R,) + tuple(t_out.shape[1:]))

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
        big = np.abs(g).max(axis=1)
        active = (big != 0) & (self.first < L)
        if not active.any():
            return loss
        s_g = np.where(active, (big / F32(32767.0)).astype(F32), F32(1)).astype(F32)
        g_q = round_sat(g / s_g[:, None], 32767).reshape(acts[L].shape)
        for i in range(L - 1, self.f0 - 1, -1):
            ly = m.layers[i]
            if i < L - 1:
                y = acts[i + 1]
                g_q = np.where((y > ly.act_min) & (y < ly.act_max), g_q, 0)
            stop = None
            if i > self.f0:
                acc, s_acc = self._input_grad(i, g_q, s_g, acts[i])
                bigi = np.abs(acc.reshape(R, -1)).max(axis=1)
                zero = bigi == 0
                stop = zero & (i > self.first)
                safe = np.where(zero, 1, bigi)
                g_next = rdiv(acc * 32767, safe.reshape((R,) + (1,) * (acc.ndim - 1)))
                s_next = ((s_acc * bigi.astype(F32)).astype(F32) / F32(32767.0)).astype(F32)
                s_next = np.where(zero, F32(1), s_next).astype(F32)
            upd = active & (i >= self.first)
            if upd.any() and i in self.trained:
                self._update(i, g_q, s_g, acts[i], upd)
            if stop is not None:
                active = active & ~stop
                g_q, s_g = g_next, s_next
            if not active.any():
                break
        return loss

    def _input_grad(self, i: int, g: np.ndarray, s_g: np.ndarray, x: np.ndarray):
        m = self.model
        ly = m.layers[i]
        h_in, w_in, c_in = m.tensors[ly.input].shape[1:]
        if ly.op in (OP_FULLY_CONNECTED, OP_CONV_2D):
            h = round_sat(g.astype(F32) * self.r_c[i], 32767).astype(np.float64)
            s_acc = (s_g * self.s_wmax[i]).astype(F32)
            return weighted_input_grad(ly, self._weights(i), h, h_in, w_in, c_in), s_acc
        if ly.op == OP_MEAN:
            return mean_input_grad(g, h_in, w_in), (s_g / F32(h_in * w_in)).astype(F32)
        return max_pool_input_grad(ly, g, x, h_in, w_in), s_g

    def _update(self, i: int, g: np.ndarray, s_g: np.ndarray, x: np.ndarray, upd: np.ndarray) -> None:
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
                s_b = self.s_b[i]
                f = (neg[:, None] / s_b[None, :]) if self.qas else (neg[:, None] * s_b[None, :])
                d = round_sat((f.astype(F32) * G.astype(F32)) * F32(32768.0))
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
                base = (neg[rw] * s_x).astype(F32)
                s_w = self.s_w[i]
                f = (base[:, None] / s_w[None, :]) if self.qas else (base[:, None] * s_w[None, :])
                d = round_sat((f.astype(F32)[:, :, None] * A.astype(F32)) * F32(32768.0))
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
