"""Contribution analysis (docs/scheme-search.md §1): fine-tune candidate schemes with the
bit-exact twin on the adapt split (many at once in lockstep), measure selection accuracy, cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from ..format.modelfile import EtmModel, read_etm, write_etm
from ..format.scheme import Scheme, channel_weights, out_channels
from ..twin.lockstep import Lockstep
from ..twin.training import Trainer
from .data import SearchData
from .space import CRITERIA, DENS, LR_GRID, Candidate, Space


@dataclass
class Contributions:
    """Selection-split accuracies; gains are differences of them."""

    acc_none: float                      # no fine-tuning
    acc_bias: list[float]                # acc_bias[k]: classifier + biases of the last k layers
    acc_w: dict[tuple[int, int, str], float]  # (layer index j, den, crit) -> all biases + clf + w_j
    lr: float
    lr_scan: dict[str, float]
    runs: int
    cached: int
    seconds: float

    def gain_w(self, j: int, den: int, crit: str) -> float:
        return 0.0 if den == 0 else self.acc_w[(j, den, crit)] - self.acc_bias[-1]

    def best_crit(self, j: int, den: int, criteria: Sequence[str]) -> str:
        return max(criteria, key=lambda c: (self.gain_w(j, den, c), c == "l1"))

    def predict(self, c: Candidate) -> float:
        crit = c.crit or ("l1",) * len(c.dens)
        return self.acc_bias[c.k] + sum(self.gain_w(j, d, crit[j]) for j, d in enumerate(c.dens))

    def to_json(self, space: Space) -> dict[str, Any]:
        return {
            "acc_no_training": self.acc_none, "lr": self.lr, "lr_scan": self.lr_scan,
            "acc_bias": {str(k): a for k, a in enumerate(self.acc_bias)},
            "gain_bias": {str(k): a - self.acc_bias[0] for k, a in enumerate(self.acc_bias)},
            "gain_weights": [{"layer": space.layers[j], "ratio": f"1/{d}", "criterion": cr,
                              "acc": a, "gain": a - self.acc_bias[-1]}
                             for (j, d, cr), a in sorted(self.acc_w.items())],
            "runs": self.runs, "cached_runs": self.cached, "seconds": round(self.seconds, 2),
        }


class Runner:
    """Fine-tune a scheme with the twin on the adapt split; accuracy on the selection split.
    Results are cached in a JSON file."""

    def __init__(self, model: EtmModel, d: SearchData, cache_path: str | None = None, qas: bool = True):
        self.buf = write_etm(without_scheme(model))
        self.model, self.d, self.qas = model, d, qas
        self.cache_path = cache_path
        self.cache: dict[str, float] = {}
        if cache_path and os.path.exists(cache_path):
            try:
                with open(cache_path) as f:
                    self.cache = json.load(f)
            except (OSError, ValueError):
                self.cache = {}
        self.base = hashlib.sha1(self.buf).hexdigest()[:16] + d.key() + ("q" if qas else "s")
        self.runs = self.hits = 0
        self._pool = None  # worker processes, spawned once and kept until close()
        self._pool_jobs = 0

    def _executor(self, jobs: int):
        if self._pool is None or self._pool_jobs != jobs:
            self.close()
            # The twin's matrices are tiny: BLAS threads in every worker only spin against the
            # other workers (about 15 % more CPU for the same bits). Spawned children inherit
            # this; an explicit setting by the user wins.
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
                os.environ.setdefault(var, "1")
            self._pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
            self._pool_jobs = jobs
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (if any were started)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def accuracy(self, scheme: Scheme, lr: float) -> float:
        key = f"{self.base}:{lr:g}:{scheme.encode().hex()}"
        if key in self.cache:
            self.hits += 1
            return self.cache[key]
        acc = finetune(self.buf, self.d, self.qas, scheme.encode(), lr)
        self.cache[key] = acc
        self.runs += 1
        return acc

    def accuracy_many(self, jobs_list: list[tuple[Scheme, float]], jobs: int = 1, bar=None) -> list[float]:
        """accuracy() of every (scheme, lr); the uncached ones run as `jobs` lockstep batches
        (edgetune.twin.lockstep: the same bits as one Trainer each), one per worker process (spawned:
        the parent may have imported TensorFlow)."""
        keys = [f"{self.base}:{lr:g}:{sc.encode().hex()}" for sc, lr in jobs_list]
        todo = {}
        for key, (sc, lr) in zip(keys, jobs_list):
            if key in self.cache:
                self.hits += 1
                if bar is not None:
                    bar.update(1)
            elif key not in todo:
                todo[key] = (sc.encode(), lr)
            else:
                self.hits += 1
                if bar is not None:
                    bar.update(1)
        # the runs go in lockstep batches (edgetune.twin.lockstep), one batch per worker process
        items = list(todo.items())
        n_chunks = max(1, min(jobs, len(items)))
        chunks = [items[c::n_chunks] for c in range(n_chunks)]
        if n_chunks > 1:
            args = (self.buf, self.d, self.qas)
            ex = self._executor(jobs)
            futs = {ex.submit(finetune_many, *args, [v for _, v in ch]): ch for ch in chunks}
            for f in as_completed(futs):
                for (key, _), acc in zip(futs[f], f.result()):
                    self.cache[key] = acc
                    self.runs += 1
                if bar is not None:
                    bar.update(len(futs[f]))
        elif items:
            for (key, _), acc in zip(items, finetune_many(self.buf, self.d, self.qas, [v for _, v in items])):
                self.cache[key] = acc
                self.runs += 1
            if bar is not None:
                bar.update(len(items))
        return [self.cache[k] for k in keys]

    def no_training(self) -> float:
        return float(Trainer(self.buf, Scheme(())).evaluate(self.d.x_select, self.d.y_select)[1])

    def save(self) -> None:
        if self.cache_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.cache_path)), exist_ok=True)
            tmp = self.cache_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.cache, f)
            os.replace(tmp, self.cache_path)


def finetune(buf: bytes, d: SearchData, qas: bool, scheme_bytes: bytes, lr: float) -> float:
    """Selection accuracy after fine-tuning the encoded scheme on the adapt split (the twin)."""
    model = read_etm(buf)
    tr = Trainer(buf, Scheme.decode(scheme_bytes, model))
    for i in d.order:
        tr.step(d.x_adapt[i], int(d.y_adapt[i]), lr, qas)
    return float(tr.evaluate(d.x_select, d.y_select)[1])


def finetune_many(buf: bytes, d: SearchData, qas: bool, runs: list[tuple[bytes, float]]) -> list[float]:
    """finetune of every (encoded scheme, lr), all in one lockstep batch (the same bits; one
    Trainer per run where the lockstep twin does not support the model)."""
    model = read_etm(buf)
    try:
        ls = Lockstep(buf, [Scheme.decode(enc, model) for enc, _ in runs], [lr for _, lr in runs], qas)
    except NotImplementedError:
        return [finetune(buf, d, qas, enc, lr) for enc, lr in runs]
    for i in d.order:
        ls.step(d.x_adapt[i], int(d.y_adapt[i]))
    return ls.accuracy(d.x_select, d.y_select)


def without_scheme(model: EtmModel) -> EtmModel:
    return dataclasses.replace(model, scheme=b"") if model.scheme else model


def fisher_scores(space: Space, d: SearchData) -> dict[int, np.ndarray]:
    """Per output channel: sum over the adapt samples of the squared real-unit weight gradients
    (at the pre-trained weights; lr = 0 steps of the twin with trace=True). Layers that cannot be
    first (accumulator bounds) get the l1 score instead."""
    m = space.model
    layers = list(space.layers)
    while layers:
        try:
            s = Scheme.build(m, 0, {i: 1 for i in layers}, with_classifier=True)
            break
        except ValueError:
            layers = layers[1:]
    out: dict[int, np.ndarray] = {}
    for i in space.layers:
        if i not in layers:
            out[i] = np.abs(channel_weights(m, i).astype(np.int64)).sum(axis=1).astype(np.float64)
    if not layers:
        return out
    tr = Trainer(write_etm(without_scheme(m)), s)
    acc = {i: np.zeros(out_channels(m, i)) for i in layers}
    for x, y in zip(d.x_adapt, d.y_adapt):
        tr.step(x, int(y), 0.0, True, trace=True)
        for i in layers:
            g = tr.info.grads.get(i, {}).get("w")
            if g is not None:
                acc[i] += (g * g).sum(axis=1)
    out.update(acc)
    return out


def analyze(space: Space, runner: Runner, criteria: Sequence[str] = CRITERIA, lr: float | None = None,
            progress: bool = True, jobs: int = 1) -> Contributions:
    """Measure every contribution (search/__init__.py); picks lr on the selection split with
    the all-biases + classifier scheme when `lr` is None. `jobs` worker processes."""
    t0 = time.time()
    runs0, hits0 = runner.runs, runner.hits
    L = len(space.layers)
    n_clf = 1 if space.clf is not None else 0
    lrs = LR_GRID if lr is None else (lr,)
    total = (len(lrs) if lr is None else 0) + (L + 1) + L * (len(DENS) - 1) * len(criteria)
    bar = _bar(total, "contributions", progress)
    lr_scan: dict[str, float] = {}
    full_bias = Scheme.build(space.model, L + n_clf)
    if lr is None:
        accs = runner.accuracy_many([(full_bias, v) for v in lrs], jobs, bar)
        lr_scan = {f"{v:g}": a for v, a in zip(lrs, accs)}
        lr = max(lrs, key=lambda v: (lr_scan[f"{v:g}"], -v))
    tasks: list[tuple[Scheme, float]] = [(Scheme.build(space.model, k + n_clf), lr) for k in range(L + 1)]
    acc_w: dict[tuple[int, int, str], float] = {}
    wkeys = []
    for j in range(L):
        for den in DENS[1:]:
            for crit in criteria:
                dens = tuple(den if jj == j else 0 for jj in range(L))
                c = Candidate(L, dens, tuple(crit for _ in range(L)))
                try:
                    sch = space.scheme(c)
                except ValueError:  # accumulator bound: this layer cannot train
                    acc_w[(j, den, crit)] = float("-inf")
                    bar.update(1)
                else:
                    tasks.append((sch, lr))
                    wkeys.append((j, den, crit))
    accs = runner.accuracy_many(tasks, jobs, bar)
    acc_bias = accs[:L + 1]
    acc_w.update(zip(wkeys, accs[L + 1:]))
    bar.close()
    runner.save()
    return Contributions(runner.no_training(), acc_bias, acc_w, lr, lr_scan, runner.runs - runs0,
                         runner.hits - hits0, time.time() - t0)


def _bar(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)
