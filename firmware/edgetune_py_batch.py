"""Mini-batch step of the pure-Python Model (firmware/edgetune_py.py; docs/training.md §5).

Its own module so that boards which never train in batches do not load it: edgetune_py's
Model.train imports it when `labels` is a sequence. Same bits as the C module
(native_modules/edgetune/train.c et_train_batch) and the numpy twin (Trainer.step_batch).
"""

from edgetune_py_num import F32, I32_MAX, I32_MIN, LIM30, OP_DEPTHWISE_CONV_2D, commit, f32, round_sat, to_float, zeros


def _batch_d(acc, kf):
    """§5: d = round_sat((acc / k) * 32768, 2^30)."""
    F = F32
    F[0] = acc / kf
    F[0] = F[0] * 32768.0
    return round_sat(F[0], LIM30)


def train_batch(self, xs, labels, lr, qas):
    """§5: the k samples with the weights as at the start, float32 accumulators in sample
    order, then d = round_sat((acc / k) * 32768, 2^30) and §4f-g once per parameter."""
    if not self._batch:
        raise ValueError("edgetune: k labels need a batch model: create the Model with batch=True")
    if isinstance(labels, (list, tuple)):
        for v in labels:
            if not isinstance(v, int):
                raise ValueError("edgetune: labels must be ints")
        labels = list(labels)
    else:  # bytes-like: bytes/bytearray/array('B') 0..255, array('b') signed, as the C module
        if isinstance(labels, str) or len(bytes(labels)) != len(labels):
            raise ValueError("edgetune: labels must be ints, bytes or a list/tuple of ints")
        labels = list(labels)
    k = len(labels)
    if k == 0:
        raise ValueError("edgetune: a batch needs at least one label")
    labels = [self._label(v) for v in labels]
    xb = bytes(xs)
    n = self._n_in
    if len(xb) != k * n:
        raise ValueError("edgetune: inputs must be %d x %d bytes" % (k, n))
    lr = f32(to_float(lr))
    if not (lr > 0.0 and lr <= 1.0):
        raise ValueError("edgetune: lr must be a finite number in (0, 1], e.g. 0.01")
    first = self._first
    layers = self._layers
    if first >= 0:
        for layer, b, ch in self._entries:
            L = layers[layer]
            # float32 cells (exact: every value stored is already float32-rounded)
            L.acc_b = zeros("f", L.oc if b else 0)
            L.acc_w = [zeros("f", L.per) for _ in range(len(ch))]
        if self._params_end + 4 * self._trainable > self._peak:
            self._peak = self._params_end + 4 * self._trainable
    F = F32
    total = 0.0
    self._acc = first >= 0
    try:
        for s in range(k):
            loss = self.train(xb[s * n:(s + 1) * n], labels[s], lr, qas)
            if s == 0:
                total = loss
            else:
                F[0] = total + loss
                total = F[0]
    finally:
        self._acc = False
    if first >= 0:
        kf = float(k)
        beta = self._momentum
        for layer, b, ch in self._entries:
            L = layers[layer]
            if b:
                for c in range(L.oc):
                    nb = L.b[c] + commit(_batch_d(L.acc_b[c], kf), beta, L.mom_b, L.res_b, c)
                    L.b[c] = I32_MIN if nb < I32_MIN else (I32_MAX if nb > I32_MAX else nb)
            for s in range(len(ch)):
                c = ch[s]
                if L.op == OP_DEPTHWISE_CONV_2D:
                    w, wstep, wb = L.w, L.oc, c
                else:
                    w, wstep, wb = L.w[c], 1, 0
                acc = L.acc_w[s]
                mom = L.mom_w[s] if beta > 0 else None
                res = L.res_w[s]
                for kk in range(L.per):
                    idx = wb + kk * wstep
                    nw = w[idx] + commit(_batch_d(acc[kk], kf), beta, mom, res, kk)
                    w[idx] = -127 if nw < -127 else (127 if nw > 127 else nw)
            L.acc_b = L.acc_w = None
    F[0] = total / float(k)
    return F[0]
