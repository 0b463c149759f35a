"""Sparse-update scheme search under an SRAM budget (docs/scheme-search.md).

    edgetune scheme MODEL.tflite|MODEL.etm [--data watch|SESSION.csv] [--scenario rotation]
                    --budget 96K [--board rp2040] [--out DIR] [--etm OUT.etm]

Three steps, all on the host, all with the bit-exact numpy training twin (edgetune.training):

1. **Contribution analysis** on personalization data of the shifted domain: the *adapt* split
   fine-tunes, a separate *selection* split measures accuracy (the scenario's final evaluation
   split is never touched). Measured: accuracy of the classifier alone (k = 0), the gain of the
   biases of the last k weight layers (k = 1..L), and the gain of each weight layer at channel
   ratios 1/8, 1/4, 1/2, 1 on top of all biases + classifier, with the channels chosen by the
   device's l1 criterion and by a Fisher criterion (sum over the adapt samples of the squared
   weight gradients of each output channel, at the pre-trained weights). Measurements are cached
   on disk (JSON), keyed by model CRC, data, learning rate, steps and the encoded scheme.
2. **Pricing**: every candidate (k, ratio per layer) is priced exactly with
   `memory.training_arena` plus the board's fixed cost (heap the app itself uses).
3. **Search**: maximize the predicted accuracy acc(0) + gain_b[k] + sum gain_w[l, r] (additive
   assumption) with price <= budget. Exact dynamic programme: for a fixed k, a fixed `first`
   layer and a fixed bound on the fold buffer (the largest output of the weight-trained layers
   above `first`) the arena is exactly additive over layers (work + masks depend only on those;
   each entry's params and saved input only on its own layer), so a group knapsack per
   (k, first, fold) in 4-byte units is exact; every answer is re-priced with training_arena.
   Exhaustive enumeration (when the space is small), an evolutionary search and random search at
   equal evaluations are run and reported alongside.

Output: a Pareto table (arena -> scheme, predicted accuracy), JSON + PNG, and the chosen scheme
(explicit channel lists) written into a .etm. `edgetune export --scheme auto[:opts]` and
`--scheme @scheme.json` use `attach_spec` below.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import memory
from .modelfile import NONE, EtmModel, read_etm, write_etm
from .scheme import Scheme, channel_weights, classifier, l1_channels, out_channels, weight_layers

DENS = (0, 8, 4, 2, 1)  # ratio 1/den of the output channels; 0 = weights frozen
CRITERIA = ("l1", "fisher")
LR_GRID = (0.003, 0.01, 0.03)


def parse_bytes(s: str | int) -> int:
    """'96K' -> 98304, '1M' -> 1048576, '12000' -> 12000."""
    if isinstance(s, int):
        return s
    t = str(s).strip().upper().rstrip("B")
    mul = 1
    if t and t[-1] in "KM":
        mul = 1024 if t[-1] == "K" else 1 << 20
        t = t[:-1]
    try:
        return int(float(t) * mul)
    except ValueError:
        raise ValueError(f"byte count {s!r} not understood (e.g. 96K, 1M, 20000)") from None


# ============================================================================== data


@dataclass
class SearchData:
    """int8 windows: `adapt` fine-tunes (in `order`), `select` measures the gain."""

    x_adapt: np.ndarray
    y_adapt: np.ndarray
    order: np.ndarray
    x_select: np.ndarray
    y_select: np.ndarray
    source: str

    def key(self) -> str:
        h = hashlib.sha1()
        for a in (self.x_adapt, self.y_adapt, self.order, self.x_select, self.y_select):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def load_data(model: EtmModel, data_spec: str = "watch", scenario: str | None = None, k: int = 8,
              epochs: int = 10, seed: int = 0, n_select: int | None = None) -> SearchData:
    """Personalization data for the search, quantized with the model's input quantization.

    `watch`: the scenario stored in the model's metadata (`split`, as pretrain wrote it; name
    overridable by `scenario`): adapt = k windows per class from the shifted domain's fit region
    (seeded, as bench/learning.py), select = the fit-val region; the eval region is not used.
    A session file (CSV/NPZ, data.load_session): every recording's first 60 % is adapt (k per
    class), the rest select; normalization from the metadata."""
    from . import data

    meta = model.meta or {}
    if "input_scale" not in meta:
        raise ValueError("the model has no input quantization metadata (export it with --meta MODEL.meta.json)")
    s_in, z_in = float(meta["input_scale"]), int(meta["input_zero_point"])
    if data_spec == "watch":
        from . import pretrain

        cfg = dict(meta.get("split") or pretrain.scenario_config({}))
        if scenario:
            cfg["name"] = scenario
        sc = pretrain.scenario_from_config(cfg)
        fit, sel, norm = sc.shift_fit, sc.shift_val, sc.norm
        source = f"watch/{cfg['name']}: adapt = fit region, select = fit-val region (eval region unused)"
    else:
        if "normalization" not in meta:
            raise ValueError("a session file needs the model's normalization metadata")
        norm = data.Norm.from_json(meta["normalization"])
        recs = data.load_session(data_spec, meta.get("class_names", data.WATCH_CLASSES))
        w, st = int(meta.get("window", data.WINDOW)), int(meta.get("step", data.STEP))
        fit = data.make_windows(recs, w, st, (0.0, 0.6))
        sel = data.make_windows(recs, w, st, (0.6, 1.0))
        source = f"session {data_spec}: adapt = first 60 % of each recording, select = the rest"

    def q(x):
        v = np.round(norm.apply(x) / s_in) + z_in
        return np.clip(v, -128, 127).astype(np.int8)

    idx = data.per_class_sample(fit, k, seed)
    rng = np.random.default_rng(1000 + seed)
    order = np.concatenate([rng.permutation(len(idx)) for _ in range(epochs)])
    sel_idx = np.arange(len(sel))
    if n_select is not None and n_select < len(sel):
        sel_idx = np.sort(np.random.default_rng(seed).permutation(len(sel))[:n_select])
    return SearchData(q(fit.x[idx]), fit.y[idx].astype(np.int64), order,
                      q(sel.x[sel_idx]), sel.y[sel_idx].astype(np.int64), source)


# ============================================================================== candidates


@dataclass(frozen=True)
class Candidate:
    """k = biases of the last k non-classifier weight layers; dens[j] = 1/den of layer j's
    output channels trains (0 = frozen), j over `Space.layers`; crit[j] = channel criterion."""

    k: int
    dens: tuple[int, ...]
    crit: tuple[str, ...] = ()

    def text(self, space: "Space") -> str:
        parts = [f"bias={self.k + (1 if space.clf is not None else 0)}"]
        for j, d in enumerate(self.dens):
            if d:
                c = self.crit[j] if self.crit else "l1"
                parts.append(f"w{space.layers[j]}=1/{d}" + ("" if c == "l1" else f"({c})"))
        return ",".join(parts)


@dataclass
class Space:
    """The search space of one model: non-classifier weight layers, their channel choices."""

    model: EtmModel
    layers: list[int]
    clf: int | None
    fisher: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> per-channel score

    @classmethod
    def of(cls, model: EtmModel) -> "Space":
        clf = classifier(model)
        return cls(model, [i for i in weight_layers(model) if i != clf], clf)

    @property
    def size(self) -> int:
        return (len(self.layers) + 1) * len(DENS) ** len(self.layers)

    def channels(self, layer: int, den: int, crit: str) -> tuple[int, ...]:
        n_sel = max(1, out_channels(self.model, layer) // den)
        if crit == "l1":
            return l1_channels(self.model, layer, n_sel)
        score = self.fisher[layer]
        order = np.lexsort((np.arange(score.size), -score))
        return tuple(int(c) for c in np.sort(order[:n_sel]))

    def scheme(self, c: Candidate) -> Scheme:
        """The device scheme (classifier always included) with explicit channel lists."""
        w = {}
        for j, d in enumerate(c.dens):
            if d:
                w[self.layers[j]] = list(self.channels(self.layers[j], d, c.crit[j] if c.crit else "l1"))
        return Scheme.build(self.model, c.k + (1 if self.clf is not None else 0), w)

    def all(self) -> list[Candidate]:
        L = len(self.layers)
        return [Candidate(k, dens) for k in range(L + 1) for dens in itertools.product(DENS, repeat=L)]


# ============================================================================== pricing


class Pricer:
    """Exact price of a candidate: memory.training_arena + the fixed cost; None if the device
    would refuse the scheme (accumulator bounds). Memoized; counts distinct evaluations."""

    def __init__(self, space: Space, fixed: int = 0, momentum: bool = False):
        self.space, self.fixed, self.momentum = space, fixed, momentum
        self.memo: dict[tuple, int | None] = {}

    def arena(self, c: Candidate) -> int | None:
        key = (c.k, c.dens)
        if key not in self.memo:
            try:
                s = self.space.scheme(Candidate(c.k, c.dens))
                # nothing trains (a model without classifier, k = 0, no weights): not a scheme
                self.memo[key] = memory.training_arena(self.space.model, s, self.momentum) if s.entries else None
            except ValueError:
                self.memo[key] = None
        return self.memo[key]

    def price(self, c: Candidate) -> int | None:
        a = self.arena(c)
        return None if a is None else a + self.fixed


# ============================================================================== contributions


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
        self.buf = write_etm(_without_scheme(model))
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
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

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
        acc = _finetune(self.buf, self.d, self.qas, scheme.encode(), lr)
        self.cache[key] = acc
        self.runs += 1
        return acc

    def accuracy_many(self, jobs_list: list[tuple[Scheme, float]], jobs: int = 1, bar=None) -> list[float]:
        """accuracy() of every (scheme, lr); the uncached ones run as `jobs` lockstep batches
        (edgetune.lockstep: the same bits as one Trainer each), one per worker process (spawned:
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
        # the runs go in lockstep batches (edgetune.lockstep), one batch per worker process
        items = list(todo.items())
        n_chunks = max(1, min(jobs, len(items)))
        chunks = [items[c::n_chunks] for c in range(n_chunks)]
        if n_chunks > 1:
            from concurrent.futures import as_completed

            args = (self.buf, self.d, self.qas)
            ex = self._executor(jobs)
            futs = {ex.submit(_finetune_many, *args, [v for _, v in ch]): ch for ch in chunks}
            for f in as_completed(futs):
                for (key, _), acc in zip(futs[f], f.result()):
                    self.cache[key] = acc
                    self.runs += 1
                if bar is not None:
                    bar.update(len(futs[f]))
        elif items:
            for (key, _), acc in zip(items, _finetune_many(self.buf, self.d, self.qas, [v for _, v in items])):
                self.cache[key] = acc
                self.runs += 1
            if bar is not None:
                bar.update(len(items))
        return [self.cache[k] for k in keys]

    def no_training(self) -> float:
        from .training import Trainer

        return float(Trainer(self.buf, Scheme(())).evaluate(self.d.x_select, self.d.y_select)[1])

    def save(self) -> None:
        if self.cache_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.cache_path)), exist_ok=True)
            tmp = self.cache_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.cache, f)
            os.replace(tmp, self.cache_path)


def _finetune(buf: bytes, d: SearchData, qas: bool, scheme_bytes: bytes, lr: float) -> float:
    """Selection accuracy after fine-tuning the encoded scheme on the adapt split (the twin)."""
    from .training import Trainer

    model = read_etm(buf)
    tr = Trainer(buf, Scheme.decode(scheme_bytes, model))
    for i in d.order:
        tr.step(d.x_adapt[i], int(d.y_adapt[i]), lr, qas)
    return float(tr.evaluate(d.x_select, d.y_select)[1])


def _finetune_many(buf: bytes, d: SearchData, qas: bool, runs: list[tuple[bytes, float]]) -> list[float]:
    """_finetune of every (encoded scheme, lr), all in one lockstep batch (the same bits; one
    Trainer per run where the lockstep twin does not support the model)."""
    from .lockstep import Lockstep

    model = read_etm(buf)
    try:
        ls = Lockstep(buf, [Scheme.decode(enc, model) for enc, _ in runs], [lr for _, lr in runs], qas)
    except NotImplementedError:
        return [_finetune(buf, d, qas, enc, lr) for enc, lr in runs]
    for i in d.order:
        ls.step(d.x_adapt[i], int(d.y_adapt[i]))
    return ls.accuracy(d.x_select, d.y_select)


def _without_scheme(model: EtmModel) -> EtmModel:
    import dataclasses

    return dataclasses.replace(model, scheme=b"") if model.scheme else model


def fisher_scores(space: Space, d: SearchData) -> dict[int, np.ndarray]:
    """Per output channel: sum over the adapt samples of the squared real-unit weight gradients
    (at the pre-trained weights; lr = 0 steps of the twin with trace=True). Layers that cannot be
    first (accumulator bounds) get the l1 score instead."""
    from .training import Trainer

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
    tr = Trainer(write_etm(_without_scheme(m)), s)
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
    """Measure every contribution (see module docstring); picks lr on the selection split with
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
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


# ============================================================================== search


@dataclass
class Result:
    method: str
    cand: Candidate | None
    price: int | None
    predicted: float
    evaluations: int
    seconds: float


def with_crit(space: Space, contrib: Contributions, c: Candidate, criteria: Sequence[str]) -> Candidate:
    """The candidate with the best measured criterion per layer (cost does not depend on it)."""
    return Candidate(c.k, c.dens, tuple(contrib.best_crit(j, d, criteria) if d else "l1"
                                        for j, d in enumerate(c.dens)))


def exhaustive(space: Space, pricer: Pricer, contrib: Contributions, budget: int,
               criteria: Sequence[str] = ("l1",)) -> Result:
    t0 = time.time()
    best, best_key = None, None
    n = 0
    for c in space.all():
        n += 1
        p = pricer.price(c)
        if p is None or p > budget:
            continue
        c = with_crit(space, contrib, c, criteria)
        key = (contrib.predict(c), -p)
        if best_key is None or key > best_key:
            best, best_key = c, key
    return Result("exhaustive", best, None if best is None else -best_key[1],
                  float("-inf") if best is None else best_key[0], n, time.time() - t0)


def _layer_cost(space: Space, layer: int, bias: bool, den: int) -> int:
    """Exact bytes layer `layer`'s entry adds: its params items (+ momentum none) and, when its
    weights train, the saved copy of its input."""
    m = space.model
    ch = tuple(range(max(1, out_channels(m, layer) // den))) if den else ()
    bias = bias and m.layers[layer].bias != NONE
    if not bias and not ch:
        return 0
    s = Scheme((_entry(layer, bias, ch),))
    cost = sum(n for _, _, n in memory.params_items(m, s, space_momentum(space)))
    if ch:
        cost += memory.align4(m.tensors[memory.activation_chain(m)[layer]].size)
    return cost


def space_momentum(space: Space) -> bool:
    return getattr(space, "momentum", False)


def _entry(layer, bias, ch):
    from .scheme import Entry

    return Entry(layer, bias, ch)


def _out_size(space: Space, layer: int) -> int:
    return space.model.tensors[space.model.layers[layer].output].size


def _base_cost(space: Space, first: int, fold: int | None = None) -> int | None:
    """Bytes that depend only on `first` and `fold`: work, masks of layers >= first, MAX_POOL
    arg-max records (i > first), loss (the entries themselves are priced by _layer_cost). `fold`
    is a layer above `first` whose output is the largest among the layers above `first` that
    train weights (the work region's fold buffer holds one such output; docs/training.md §6),
    None when no layer above `first` trains weights. None if `first` violates the accumulator
    bounds."""
    from .scheme import check_bounds

    m = space.model
    try:
        check_bounds(m, first)
    except ValueError:
        return None
    # price the scheme "layer `first` trains a dummy entry (+ one weight channel of `fold`)"
    # and subtract the entries' own costs
    ly = m.layers[first]
    dummy = _entry(first, ly.bias != NONE, () if ly.bias != NONE else (0,))
    entries = [dummy]
    sub = _layer_cost(space, first, dummy.bias, 0 if not dummy.channels else out_channels(m, first))
    if fold is not None:
        entries.append(_entry(fold, False, (0,)))
        sub += _layer_cost(space, fold, False, out_channels(m, fold))
    total = memory.training_arena(m, Scheme(tuple(entries)), space_momentum(space))
    return total - sub


def additive_arena(space: Space, c: Candidate) -> int | None:
    """The arena as the DP sees it: base(first) + one exact cost per trained layer. Equal to
    memory.training_arena for every valid candidate (tests/host/test_search.py checks the whole
    space of the tiny model); None when `first` violates the accumulator bounds."""
    L = len(space.layers)
    trained = [j for j in range(L) if c.dens[j] or j >= L - c.k]
    first = space.layers[trained[0]] if trained else space.clf
    if first is None:
        return None
    above = [space.layers[j] for j in trained if c.dens[j] and space.layers[j] > first]
    if space.clf is not None and space.clf > first:
        above.append(space.clf)
    fold = max(above, key=lambda i: _out_size(space, i)) if above else None
    base = _base_cost(space, first, fold)
    if base is None:
        return None
    total = base + sum(_layer_cost(space, space.layers[j], j >= L - c.k, c.dens[j]) for j in trained)
    if space.clf is not None:
        total += _layer_cost(space, space.clf, True, 1)
    return total


def dp(space: Space, pricer: Pricer, contrib: Contributions, budget: int,
       criteria: Sequence[str] = ("l1",)) -> Result:
    """Exact optimum of the additive predicted accuracy under the budget (module docstring)."""
    t0 = time.time()
    L = len(space.layers)
    cap = budget - pricer.fixed
    best: tuple[float, int, Candidate] | None = None
    evals = 0
    clf_cost = {}
    if space.clf is not None:
        clf_cost[True] = _layer_cost(space, space.clf, True, 1)
    firsts = list(range(L)) + ([L] if space.clf is not None else [])  # L = the classifier
    for k in range(L + 1):
        bias_from = L - k  # layers j >= bias_from train their bias
        for f in firsts:
            if f > bias_from and f < L:
                continue  # a bias below f would make it the first
            if f == L and k > 0:
                continue
            first_layer = space.layers[f] if f < L else space.clf
            # the fold buffer is sized by the largest output of the weight-trained layers above
            # `first` (the classifier is one of them unless it is `first`): enumerate that layer,
            # only layers with outputs no larger may train weights; priced exactly when it is
            # the true maximum, over-priced (never chosen wrongly) otherwise
            folds = [space.layers[j] for j in range(f + 1, L)]
            if f < L and space.clf is not None:
                folds.append(space.clf)
            by_size = {}
            for fl in folds:
                by_size.setdefault(_out_size(space, fl), fl)
            if space.clf is not None and f < L:
                h_min = _out_size(space, space.clf)
                fold_opts = [(h, fl) for h, fl in sorted(by_size.items()) if h >= h_min]
            else:
                fold_opts = [(0, None)] + sorted(by_size.items())
            for h_fold, fold in fold_opts:
                res = _dp_fold(space, contrib, criteria, k, f, first_layer, fold, h_fold, cap, clf_cost)
                if res is None:
                    continue
                evals += res[1]
                cand = with_crit(space, contrib, Candidate(k, res[0]), criteria)
                pred = contrib.acc_bias[k] + res[2]
                price = pricer.price(cand)
                if price is None or price > budget:  # the exact check; cannot happen if the model is right
                    raise AssertionError(f"dp picked {cand} priced {price} > budget {budget}")
                key = (pred, -price)
                if best is None or key > (best[0], -best[1]):
                    best = (pred, price, cand)
    if best is None:
        return Result("dp", None, None, float("-inf"), evals, time.time() - t0)
    return Result("dp", best[2], best[1], best[0], evals, time.time() - t0)


def _dp_fold(space: Space, contrib: Contributions, criteria: Sequence[str], k: int, f: int, first_layer: int,
             fold: int | None, h_fold: int, cap: int, clf_cost: dict) -> tuple[tuple[int, ...], int, float] | None:
    """Group knapsack for fixed (k, first, fold): (dens, evaluations, gain) or None."""
    L = len(space.layers)
    bias_from = L - k
    evals = 0
    base = _base_cost(space, first_layer, fold)
    if base is None:
        return None
    rem = cap - base - clf_cost.get(True, 0)
    if rem < 0:
        return None
    units = rem // 4
    # value[c] = best gain with cost 4*c; -inf = unreachable
    val = np.full(units + 1, -np.inf)
    val[0] = 0.0
    choice: list[np.ndarray] = []
    for j in range(f, L):
        bias = j >= bias_from
        opts = []
        for den in DENS:
            if j == f and den == 0 and not bias:
                continue  # the first layer must train something
            if den and j > f and _out_size(space, space.layers[j]) > h_fold:
                continue  # its output would outgrow the fold buffer priced here
            cost = _layer_cost(space, space.layers[j], bias, den)
            assert cost % 4 == 0
            crit = contrib.best_crit(j, den, criteria) if den else "l1"
            g = contrib.gain_w(j, den, crit)
            if np.isfinite(g):
                opts.append((den, cost // 4, g))
        new = np.full(units + 1, -np.inf)
        arg = np.full(units + 1, -1, np.int64)
        for o, (den, cu, g) in enumerate(opts):
            if cu > units:
                continue
            cand = np.full(units + 1, -np.inf)
            cand[cu:] = val[:units + 1 - cu] + g
            better = cand > new
            new[better] = cand[better]
            arg[better] = o
            evals += 1
        choice.append((opts, arg))
        val = new
    if not np.isfinite(val).any():
        return None
    c_best = int(np.argmax(val))  # first index of the max = cheapest at that gain
    gain = float(val[c_best])
    dens = [0] * L
    c = c_best
    for jj in range(L - 1, f - 1, -1):
        opts, arg = choice[jj - f]
        o = int(arg[c])
        den, cu, _ = opts[o]
        dens[jj] = den
        c -= cu
    return tuple(dens), evals, gain


def evolution(space: Space, pricer: Pricer, contrib: Contributions, budget: int, evaluations: int = 300,
              seed: int = 0, criteria: Sequence[str] = ("l1",), population: int = 16) -> Result:
    """Regularized evolution (tournament of 4, one mutation per child, the oldest dies):
    fitness = predicted accuracy, -inf over budget. `evaluations` distinct candidates priced."""
    t0 = time.time()
    rng = np.random.default_rng(seed)
    L = len(space.layers)
    seen: dict[tuple, float] = {}

    def fit(c: Candidate) -> float:
        key = (c.k, c.dens)
        if key not in seen:
            p = pricer.price(c)
            seen[key] = (contrib.predict(with_crit(space, contrib, c, criteria))
                         if p is not None and p <= budget else float("-inf"))
        return seen[key]

    def rand() -> Candidate:
        # bias towards cheap candidates: each layer frozen with probability 1/2
        return Candidate(int(rng.integers(L + 1)),
                         tuple(0 if rng.random() < 0.5 else int(rng.choice(DENS[1:])) for _ in range(L)))

    limit = min(evaluations, space.size)
    pop = [Candidate(0, (0,) * L)]  # the classifier alone: the cheapest, so a tight budget has a parent
    fit(pop[0])
    tries = 0
    while len(pop) < population and len(seen) < limit and tries < 100 * population:
        c = rand()
        tries += 1
        fit(c)
        pop.append(c)
    tries = 0
    while len(seen) < limit and tries < 50 * evaluations:
        tries += 1
        idx = rng.choice(len(pop), size=min(4, len(pop)), replace=False)
        parent = max((pop[i] for i in idx), key=fit)
        if rng.random() < 0.3 or L == 0:
            child = Candidate(int(np.clip(parent.k + rng.choice([-1, 1]), 0, L)), parent.dens)
        else:
            j = int(rng.integers(L))
            dens = list(parent.dens)
            dens[j] = int(rng.choice([d for d in DENS if d != dens[j]]))
            child = Candidate(parent.k, tuple(dens))
        fit(child)
        pop.append(child)
        pop.pop(0)
    return _best_of("evolution", seen, space, pricer, contrib, criteria, t0)


def random_search(space: Space, pricer: Pricer, contrib: Contributions, budget: int, evaluations: int = 300,
                  seed: int = 0, criteria: Sequence[str] = ("l1",)) -> Result:
    """Uniform random candidates, `evaluations` distinct ones priced."""
    t0 = time.time()
    rng = np.random.default_rng(seed)
    L = len(space.layers)
    seen: dict[tuple, float] = {}
    limit = min(evaluations, space.size)
    while len(seen) < limit:
        c = Candidate(int(rng.integers(L + 1)), tuple(int(rng.choice(DENS)) for _ in range(L)))
        if (c.k, c.dens) in seen:
            continue
        p = pricer.price(c)
        seen[(c.k, c.dens)] = (contrib.predict(with_crit(space, contrib, c, criteria))
                               if p is not None and p <= budget else float("-inf"))
    return _best_of("random", seen, space, pricer, contrib, criteria, t0)


def _best_of(method, seen, space, pricer, contrib, criteria, t0) -> Result:
    ok = [(v, -pricer.price(Candidate(*key)), key) for key, v in seen.items() if np.isfinite(v)]
    if not ok:
        return Result(method, None, None, float("-inf"), len(seen), time.time() - t0)
    v, negp, key = max(ok)
    c = with_crit(space, contrib, Candidate(*key), criteria)
    return Result(method, c, -negp, v, len(seen), time.time() - t0)


def pareto(space: Space, pricer: Pricer, contrib: Contributions, criteria: Sequence[str] = ("l1",),
           budgets: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Non-dominated (price, predicted accuracy) candidates, cheapest first (exhaustive when the
    space is small, else the DP at the given `budgets`)."""
    pts = []
    if space.size <= 200_000:
        for c in space.all():
            p = pricer.price(c)
            if p is not None:
                cc = with_crit(space, contrib, c, criteria)
                pts.append((p, -contrib.predict(cc), c.k, c.dens, cc))
        pts.sort()
        front, best = [], float("-inf")
        for p, negv, _, _, cc in pts:
            if -negv > best + 1e-12:
                best = -negv
                front.append((p, cc, -negv))
    else:
        front = []
        for b in budgets or []:
            r = dp(space, pricer, contrib, b, criteria)
            if r.cand is not None and (not front or r.predicted > front[-1][2]):
                front.append((r.price, r.cand, r.predicted))
    return [{"price": p, "arena": p - pricer.fixed, "scheme": c.text(space), "predicted_acc": v,
             "trainable": space.scheme(c).n_params(space.model)} for p, c, v in front]


# ============================================================================== board costs


def board_fixed(board: str | None, model: EtmModel | None = None, repo: str | None = None
                ) -> tuple[int, int | None, str]:
    """(fixed bytes, heap bytes, source text) for a board config (boards/NAME/board.json).

    The fixed cost is the device app's own live heap besides the training arena: the board
    config's `app_heap_bytes` if it states one, else our measurement (APP_HEAP_BASE + the
    collection ring buffer of APP_RING_WINDOWS windows of the model's input size)."""
    if not board:
        return 0, None, "no board: the budget is for the training arena alone"
    root = repo or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    path = os.path.join(root, "boards", board, "board.json")
    with open(path) as f:
        cfg = json.load(f)
    heap = int(cfg["heap_bytes"])
    if "app_heap_bytes" in cfg:
        return int(cfg["app_heap_bytes"]), heap, f"{path}: app_heap_bytes"
    n_in = model.tensors[model.input].size if model is not None else 600
    fixed = APP_HEAP_BASE + APP_RING_WINDOWS * n_in
    return fixed, heap, (f"device app heap besides the arena = {APP_HEAP_BASE} B + ring buffer "
                         f"{APP_RING_WINDOWS} x {n_in} B = {fixed} B (measured: {APP_HEAP_SOURCE}); "
                         f"heap {heap} B from {path}")


# Measured on the 32-bit QEMU board (MPS2-AN385 firmware, frozen device app incl. hal, C module,
# at ec25ebd): gc.mem_alloc() after gc.collect() rose by 92 256 B across `import app;
# app.boot(model=buf)` with the small model (arena 6 564 B, input 100 x 6 = 600 B, ring capacity
# 128 windows = 76 800 B), i.e. 85 692 B besides the arena = 8 892 B of app objects + the ring.
APP_HEAP_BASE = 8892
APP_RING_WINDOWS = 128
APP_HEAP_SOURCE = ("qemu MPS2-AN385 firmware, gc.mem_alloc() across import app + app.boot() with the small "
                   "model, ring capacity 128 (docs/scheme-search.md)")


# ============================================================================== top level


@dataclass
class Report:
    space: Space
    contrib: Contributions
    pricer: Pricer
    budget: int
    criteria: tuple[str, ...]
    results: dict[str, Result]
    chosen: Result
    front: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def scheme(self) -> Scheme:
        if self.chosen.cand is None:
            raise ValueError(f"no scheme fits the budget of {self.budget} bytes "
                             f"(fixed cost {self.pricer.fixed} B)")
        return self.space.scheme(self.chosen.cand)

    def to_json(self) -> dict[str, Any]:
        sp = self.space

        def res(r: Result) -> dict[str, Any]:
            return {"scheme": None if r.cand is None else r.cand.text(sp), "price": r.price,
                    "arena": None if r.price is None else r.price - self.pricer.fixed,
                    "predicted_acc": r.predicted, "evaluations": r.evaluations, "seconds": round(r.seconds, 4)}

        out = {
            "budget": self.budget, "fixed_cost": self.pricer.fixed, "criteria": list(self.criteria),
            "layers": sp.layers, "classifier": sp.clf, "space_size": sp.size,
            "contributions": self.contrib.to_json(sp),
            "search": {k: res(r) for k, r in self.results.items()},
            "chosen": res(self.chosen), "pareto": self.front, **self.extra,
        }
        if self.chosen.cand is not None:
            s = self.scheme()
            out["chosen"]["entries"] = [{"layer": e.layer, "bias": e.bias, "channels": list(e.channels)}
                                        for e in s.entries]
            out["chosen"]["description"] = s.describe()
        return out


def cheapest(space: Space, pricer: Pricer) -> tuple[Candidate, int] | None:
    """The cheapest candidate and its price: the fewest biases with no weights (training
    weights only adds arena), i.e. the classifier alone where there is one."""
    best = None
    for k in range(len(space.layers) + 1):
        c = Candidate(k, (0,) * len(space.layers))
        p = pricer.price(c)
        if p is not None and (best is None or p < best[1]):
            best = (c, p)
    return best


def check_budget(space: Space, pricer: Pricer, budget: int) -> None:
    """ValueError naming the cheapest scheme's price when not even it fits `budget`."""
    low = cheapest(space, pricer)
    if low is None:
        raise ValueError("no scheme can train this model (no layer with weights or biases to train)")
    c, price = low
    if price > budget:
        fixed = pricer.fixed
        raise ValueError(f"no scheme fits the budget of {budget} B: the cheapest, {c.text(space)}, needs {price} B "
                         f"(training arena {price - fixed} B + fixed cost {fixed} B); give --budget {price} or more")


def search(model: EtmModel, d: SearchData, budget: int, fixed: int = 0, criteria: Sequence[str] = CRITERIA,
           lr: float | None = None, cache: str | None = None, evaluations: int = 300, seed: int = 0,
           progress: bool = True, contrib: Contributions | None = None, verify: int = 0, jobs: int = 1) -> Report:
    """Contribution analysis (or the given `contrib`), then DP / exhaustive / evolution / random
    search at `budget` (bytes: arena + fixed) and the Pareto front. With `verify` > 0 the chosen
    scheme is the best *measured* of the `verify` best-predicted candidates (verify_top)."""
    space = Space.of(model)
    check_budget(space, Pricer(space, fixed), budget)  # at once, not after the analysis
    crits = tuple(criteria)
    if "fisher" in crits:
        space.fisher = fisher_scores(space, d)
    runner = Runner(model, d, cache)  # one pool of worker processes for the analysis and verify
    try:
        return _search(space, runner, budget, fixed, crits, lr, evaluations, seed, progress, contrib, verify, jobs)
    finally:
        runner.close()


def _search(space: Space, runner: Runner, budget: int, fixed: int, crits: tuple[str, ...], lr: float | None,
            evaluations: int, seed: int, progress: bool, contrib: Contributions | None, verify: int,
            jobs: int) -> Report:
    if contrib is None:
        contrib = analyze(space, runner, crits, lr, progress, jobs)
    pricer = Pricer(space, fixed)
    results = {"dp": dp(space, pricer, contrib, budget, crits)}
    if space.size <= 200_000:
        results["exhaustive"] = exhaustive(space, pricer, contrib, budget, crits)
    results["evolution"] = evolution(space, pricer, contrib, budget, evaluations, seed, crits)
    results["random"] = random_search(space, pricer, contrib, budget, evaluations, seed, crits)
    front = pareto(space, pricer, contrib, crits)
    chosen = results["dp"]
    extra: dict[str, Any] = {}
    if verify and chosen.cand is not None:
        chosen, extra["verify"] = verify_top(space, pricer, contrib, runner, budget, verify, crits, jobs)
        runner.save()
        results["dp+verify"] = chosen
    return Report(space, contrib, pricer, budget, crits, results, chosen, front, extra)


def top_candidates(space: Space, pricer: Pricer, contrib: Contributions, budget: int, n: int,
                   criteria: Sequence[str]) -> list[Candidate]:
    """The n candidates with the highest predicted accuracy within the budget (exhaustive when
    the space is small, else the DP at n budgets down the Pareto front)."""
    if space.size <= 200_000:
        ok = []
        for c in space.all():
            p = pricer.price(c)
            if p is not None and p <= budget:
                cc = with_crit(space, contrib, c, criteria)
                ok.append((-contrib.predict(cc), p, c.k, c.dens, cc))
        ok.sort()
        return [x[-1] for x in ok[:n]]
    out, b = [], budget
    for _ in range(n):
        r = dp(space, pricer, contrib, b, criteria)
        if r.cand is None:
            break
        out.append(r.cand)
        b = r.price - 4
    return out


def verify_top(space: Space, pricer: Pricer, contrib: Contributions, runner: "Runner", budget: int, n: int,
               criteria: Sequence[str], jobs: int = 1) -> tuple[Result, list[dict[str, Any]]]:
    """Fine-tune the n best-predicted candidates within the budget and keep the one with the
    highest *measured* selection accuracy (the additive prediction is optimistic: the largest
    predicted sums collect the most measurement noise). Ties go to the cheaper one."""
    t0 = time.time()
    rows = []
    cands = top_candidates(space, pricer, contrib, budget, n, criteria)
    accs = runner.accuracy_many([(space.scheme(c), contrib.lr) for c in cands], jobs)
    for c, acc in zip(cands, accs):
        rows.append({"scheme": c.text(space), "price": pricer.price(c), "predicted_acc": contrib.predict(c),
                     "measured_acc": acc, "_c": c})
    best = max(rows, key=lambda r: (r["measured_acc"], -r["price"]))
    res = Result("dp+verify", best["_c"], best["price"], best["predicted_acc"], len(rows), time.time() - t0)
    for r in rows:
        del r["_c"]
    return res, rows


def measure_actual(report: Report, model: EtmModel, d: SearchData, cache: str | None = None) -> dict[str, Any]:
    """Additivity check: measured selection accuracy vs the additive prediction, for the DP's
    optimum (the pure test of the assumption) and for the chosen scheme."""
    if report.chosen.cand is None:
        return {}
    r = Runner(model, d, cache)
    base = report.contrib.acc_bias[0]
    out: dict[str, Any] = {}
    for name, res in (("dp", report.results["dp"]), ("chosen", report.chosen)):
        actual = r.accuracy(report.space.scheme(res.cand), report.contrib.lr)
        out[name] = {"scheme": res.cand.text(report.space), "predicted_acc": res.predicted, "actual_acc": actual,
                     "predicted_gain": res.predicted - base, "actual_gain": actual - base}
    r.save()
    out.update(out["chosen"])
    return out


def print_table(rep: Report, file=sys.stdout) -> None:
    c = rep.contrib
    sp = rep.space
    print(f"selection accuracy: no training {c.acc_none:.3f}, classifier only {c.acc_bias[0]:.3f}, "
          f"lr {c.lr:g} ({c.runs} runs, {c.cached} cached, {c.seconds:.1f} s)", file=file)
    print("  biases of the last k layers: " + ", ".join(f"k={k}: {a - c.acc_bias[0]:+.3f}"
                                                         for k, a in enumerate(c.acc_bias)), file=file)
    for j, layer in enumerate(sp.layers):
        row = []
        for den in DENS[1:]:
            row.append(f"1/{den} " + "/".join(f"{c.gain_w(j, den, cr):+.3f}" for cr in rep.criteria))
        print(f"  layer {layer} weights ({'/'.join(rep.criteria)}): " + ", ".join(row), file=file)
    print(f"\nPareto front (price = arena + fixed {rep.pricer.fixed} B):", file=file)
    print(f"  {'price':>8} {'arena':>8} {'pred.acc':>8} {'params':>7}  scheme", file=file)
    for p in rep.front:
        print(f"  {p['price']:>8} {p['arena']:>8} {p['predicted_acc']:>8.3f} {p['trainable']:>7}  {p['scheme']}",
              file=file)
    for v in rep.extra.get("verify", []):
        print(f"  verify: predicted {v['predicted_acc']:.3f} measured {v['measured_acc']:.3f}  price {v['price']}  "
              f"{v['scheme']}", file=file)
    print(f"\nbudget {rep.budget} B:", file=file)
    for name, r in rep.results.items():
        s = "-" if r.cand is None else r.cand.text(sp)
        print(f"  {name:<10} pred.acc {r.predicted:.3f}  price {r.price}  evals {r.evaluations:>5}  "
              f"{r.seconds:.3f} s  {s}", file=file)


def plot(rep: Report, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sp, c = rep.space, rep.contrib
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    xs = [p["arena"] for p in rep.front]
    ys = [p["predicted_acc"] for p in rep.front]
    a1.step(xs, ys, where="post", marker="o", ms=3)
    a1.axvline(rep.budget - rep.pricer.fixed, ls="--", color="r", lw=1, label="budget (arena)")
    if rep.chosen.cand is not None:
        a1.plot([rep.chosen.price - rep.pricer.fixed], [rep.chosen.predicted], "r*", ms=12, label="chosen")
    act = rep.extra.get("additivity", {})
    if "actual_acc" in act:
        a1.plot([rep.chosen.price - rep.pricer.fixed], [act["actual_acc"]], "kx", ms=9, label="chosen, measured")
    a1.set_xscale("log")
    a1.set_xlabel("training arena bytes")
    a1.set_ylabel("predicted selection accuracy")
    a1.set_title("Pareto front (additive prediction)")
    a1.legend(fontsize=7)
    labels, vals = [], []
    for k in range(1, len(c.acc_bias)):
        labels.append(f"b{k}")
        vals.append(c.acc_bias[k] - c.acc_bias[0])
    a2.bar(range(len(vals)), vals, color="#999")
    x = len(vals)
    ticks = list(range(len(vals)))
    for j, layer in enumerate(sp.layers):
        for den in DENS[1:]:
            for ci, cr in enumerate(rep.criteria):
                a2.bar(x + 0.4 * ci, c.gain_w(j, den, cr), width=0.4, color=["#4c72b0", "#dd8452"][ci % 2],
                       label=cr if (j == 0 and den == DENS[1]) else None)
            ticks.append(x)
            labels.append(f"L{layer}\n1/{den}")
            x += 1
    a2.set_xticks(ticks, labels, fontsize=6)
    a2.set_ylabel("accuracy gain (selection split)")
    a2.set_title("contributions: biases of last k layers; weights on top of all biases")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_model(path: str) -> EtmModel:
    """A .etm, or a .tflite (exported on the fly; metadata from MODEL.meta.json if present)."""
    with open(path, "rb") as f:
        blob = f.read()
    if path.endswith(".tflite"):
        from .export import tflite_to_etm

        meta = None
        mp = os.path.splitext(path)[0] + ".meta.json"
        if os.path.exists(mp):
            with open(mp) as f:
                meta = json.load(f)
        return tflite_to_etm(blob, meta)
    return read_etm(blob)


def attach_spec(model: EtmModel, spec: str) -> Scheme:
    """For `edgetune export --scheme`: `@FILE` (a search JSON: its chosen entries) or
    `auto[:key=value,...]` (keys: budget, board, data, scenario, k, epochs, seed, lr, criteria;
    runs the search on `model` and attaches the DP's choice)."""
    if spec.startswith("@"):
        with open(spec[1:]) as f:
            j = json.load(f)
        ent = j.get("chosen", j).get("entries")
        if ent is None:
            raise ValueError(f"{spec[1:]}: no chosen scheme entries (did the search find one within budget?)")
        from .scheme import Entry

        s = Scheme(tuple(Entry(int(e["layer"]), bool(e["bias"]), tuple(int(c) for c in e["channels"]))
                         for e in ent))
        s.validate(model)
    else:
        opts = dict(kv.split("=", 1) for kv in spec.partition(":")[2].split(",") if "=" in kv)
        fixed, heap, _ = board_fixed(opts.get("board"), model)
        budget = parse_bytes(opts.get("budget", str(heap) if heap else "96K"))
        space = Space.of(model)
        check_budget(space, Pricer(space, fixed), budget)  # search() checks too; this is before load_data
        d = load_data(model, opts.get("data", "watch"), opts.get("scenario"), int(opts.get("k", 8)),
                      int(opts.get("epochs", 10)), int(opts.get("seed", 0)))
        crit = tuple(opts.get("criteria", "l1+fisher").split("+"))
        rep = search(model, d, budget, fixed, crit, float(opts["lr"]) if "lr" in opts else None,
                     opts.get("cache", os.path.join("build", "scheme_cache.json")), progress=True,
                     verify=int(opts.get("verify", 5)), jobs=int(opts.get("jobs", 2)))
        s = rep.scheme()
        print(f"scheme auto: {rep.chosen.cand.text(rep.space)} -> {s.describe()}, arena "
              f"{rep.chosen.price - fixed} B, predicted selection accuracy {rep.chosen.predicted:.3f}",
              file=sys.stderr)
    model.scheme = s.encode()
    return s


def cli(argv: list[str]) -> int:
    from .pretrain import positive_float, positive_int

    p = argparse.ArgumentParser(prog="edgetune scheme",
                                description="Search a sparse-update scheme under an SRAM budget.")
    p.add_argument("model", help="MODEL.etm or MODEL.tflite (with MODEL.meta.json beside it)")
    p.add_argument("--data", default="watch", help="'watch' (the model's scenario) or a session CSV/NPZ")
    p.add_argument("--scenario", help="override the scenario name stored in the model's metadata")
    p.add_argument("--budget", help="bytes for the training arena + the board's fixed cost, e.g. 96K "
                                    "(default: the board's heap)")
    p.add_argument("--board", help="board config under boards/ (fixed costs and heap), e.g. rp2040")
    p.add_argument("--k", type=positive_int, default=8, help="adapt samples per class")
    p.add_argument("--epochs", type=positive_int, default=10, help="passes over the adapt samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=positive_float, help="learning rate (default: best of 0.003/0.01/0.03 on the selection split)")
    p.add_argument("--criteria", default="l1,fisher", help="channel criteria to measure: l1, fisher or both")
    p.add_argument("--evaluations", type=positive_int, default=300, help="evaluations of evolution and random search")
    p.add_argument("--out", default="build/scheme", help="directory for scheme.json, scheme.png")
    p.add_argument("--cache", help="contribution cache (default OUT/cache.json)")
    p.add_argument("--etm", help="write the model with the chosen scheme to this .etm")
    p.add_argument("--verify", type=int, default=5, help="fine-tune the N best-predicted schemes and keep the "
                                                         "best measured one (0: the DP's choice as is)")
    p.add_argument("--jobs", type=positive_int, default=2, help="worker processes for the fine-tuning runs")
    p.add_argument("--no-measure", action="store_true", help="skip the additivity check run")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        model = load_model(a.model)
        fixed, heap, fsrc = board_fixed(a.board, model)
        if a.budget is None and heap is None:
            raise ValueError("give --budget or --board")
        budget = parse_bytes(a.budget) if a.budget else heap
        if heap is not None and budget > heap:
            print(f"edgetune scheme: note: budget {budget} B exceeds the {a.board} heap ({heap} B); using the heap",
                  file=sys.stderr)
            budget = heap
        crits = tuple(c for c in a.criteria.replace("+", ",").split(",") if c)
        if not crits or any(c not in CRITERIA for c in crits):
            raise ValueError(f"--criteria must name some of {CRITERIA}")
        from .outpaths import check_dir, check_file

        check_dir(a.out, "--out directory")
        if a.etm:
            check_file(a.etm, "--etm")
        space = Space.of(model)
        check_budget(space, Pricer(space, fixed), budget)
        t0 = time.time()
        d = load_data(model, a.data, a.scenario, a.k, a.epochs, a.seed)
        rep = search(model, d, budget, fixed, crits, a.lr, a.cache or os.path.join(a.out, "cache.json"),
                     a.evaluations, a.seed, not a.no_progress, verify=a.verify, jobs=a.jobs)
        rep.extra["fixed_cost_source"] = fsrc
        rep.extra["data"] = d.source
        if not a.no_measure:
            rep.extra["additivity"] = measure_actual(rep, model, d, a.cache or os.path.join(a.out, "cache.json"))
        rep.extra["seconds"] = round(time.time() - t0, 2)
        os.makedirs(a.out, exist_ok=True)
        print_table(rep)
        if "additivity" in rep.extra and rep.extra["additivity"]:
            ad = rep.extra["additivity"]
            for name in ("dp", "chosen"):
                x = ad[name]
                print(f"  additivity ({name}): predicted gain {x['predicted_gain']:+.3f}, measured "
                      f"{x['actual_gain']:+.3f} (selection accuracy {x['predicted_acc']:.3f} predicted, "
                      f"{x['actual_acc']:.3f} measured)  {x['scheme']}")
        with open(os.path.join(a.out, "scheme.json"), "w") as f:
            json.dump(rep.to_json(), f, indent=1)
        plot(rep, os.path.join(a.out, "scheme.png"))
        rep.scheme()  # ValueError when nothing fits (after the table and JSON are written)
        if a.etm:
            s = rep.scheme()
            model.scheme = s.encode()
            with open(a.etm, "wb") as f:
                f.write(write_etm(model))
            print(f"{a.etm}: scheme {s.describe()}")
        print(f"wrote {os.path.join(a.out, 'scheme.json')} and scheme.png ({rep.extra['seconds']} s)")
    except (OSError, ValueError) as e:
        print(f"edgetune scheme: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0
