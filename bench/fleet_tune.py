"""Hyperparameter choice for the fleet benchmark on a validation split of the TRAINING subjects
(docs/fleet.md §8): the held-out test subjects are never looked at here.

    python -m bench.fleet_tune --runs "central:lr=0.01" "fedavg:slr=8,mom=0.5,ep=2" ...

The last `--val-subjects` training subjects (default 2: both arms, every window) are the
validation set; the other training subjects' (subject, arm) clients train. `central` is the
centralized baseline (rounds x epochs passes of one-sample SGD over the pooled windows);
`fedavg` is the fleet round in-process, without Flower: every client from the global state,
`ep` local epochs through the device compression (clip / top-k / int8 with error feedback, or
`dense=1` for the uncompressed update), the window-weighted mean of the decoded updates, then
the server step (server learning rate `slr`, server momentum `mom`, FedAvgM) applied with
update.apply. Same functions as the Flower run (client.order, client.twin_round, compress,
update); Flower's FedAvg computes the same weighted mean. `scaffold` adds SCAFFOLD's drift
correction (`every` local steps, `cexact`), `fedprox` FedProx's proximal term (`mu`); `decay`
multiplies the lr per round / pass; `refit=1` starts both kinds from the exact refit on the
training windows (l2/alpha given or from the refit's CV there; `qbits=B` with l2/alpha given:
the federated refit from the boards' B-bit quantized statistics, fleet/refit_quant.py, which the
centralized counterpart does not have); `last=1` ends either kind with
the exact refit under the final state (every training client's statistics under the final
global parameters, summed = Trainer.refit on the pooled windows, checked; `last_l2`/`last_alpha`
given or from the refit's CV there) and records its accuracy (`last_acc`) next to the SGD's, and
that of every (l2, alpha) grid point (`last_grid`). Results (validation accuracy per
round) go to build/bench/fleet-tune.json (appended per run); `--test` (only after choosing on
validation) trains on every training client and scores the held-out test subjects instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from edgetune.fleet import client, compress, update
from edgetune.fleet.data import fleet_data
from edgetune.fleet.server import ServerOpt


def split(fd, n_val: int):
    subjects = sorted({c.subject for c in fd.clients})
    val = set(subjects[-n_val:])
    train = [c for c in fd.clients if c.subject not in val]
    vx = np.concatenate([c.x for c in fd.clients if c.subject in val])
    vy = np.concatenate([c.y for c in fd.clients if c.subject in val])
    return train, vx, vy


def central(path, train, vx, vy, rounds, lr, ep, seed, start=None, decay=1.0):
    _, t, _ = client._model(path)
    if start is not None:
        t.load_state(start)
    x = np.concatenate([c.x for c in train])
    y = np.concatenate([c.y for c in train])
    accs = [float(t.evaluate(vx, vy)[1])]
    rng = np.random.default_rng(seed + 99)
    for p in range(rounds * ep):
        a = lr * decay ** (p // ep)
        for i in rng.permutation(len(y)):
            t.step(x[i], int(y[i]), a, True)
        accs.append(float(t.evaluate(vx, vy)[1]))
    return accs, t.state_bytes()


def fedavg(path, train, vx, vy, rounds, lr, ep, slr, mom, clip, topk, dense, seed, start=None,
           scaffold=False, every=1, mu=0.0, decay=1.0, cexact=False):
    """FedAvg rounds; `scaffold`: SCAFFOLD (Karimireddy et al. 2020, option II control variates):
    client i corrects its steps by c - c_i (local_round), then c_i += -c - u_i / (K_i lr) with u_i
    the update as decoded from the wire (so server and board hold the same c_i; `cexact=1`: the
    board's own uncompressed u_i, which the server then cannot know without a second upload),
    and c = the window-weighted mean of the c_i (all clients take part every round)."""
    _, t, lay = client._model(path)
    if start is not None:
        t.load_state(start)
    state = t.state_bytes()
    c_glob = np.zeros(lay.size, np.float32)
    c_loc = [np.zeros(lay.size, np.float32) for _ in train]
    k = lay.size if dense else max(1, int(round(lay.size * topk)))
    comps = [compress.Compressor(lay.size, 1e30 if dense else clip, k, 0.0, i + 1) for i in range(len(train))]
    opt = ServerOpt(slr, mom, lay.size)
    accs = [float(t.evaluate(vx, vy)[1])]
    for rnd in range(1, rounds + 1):
        acc = np.zeros(lay.size, np.float64)
        tot = 0
        for ci, c in enumerate(train):
            idx = client.order(len(c.y), ep, (seed * 1_000_003 + ci) * 131 + rnd)
            a = lr * decay ** (rnd - 1)
            corr = (c_glob - c_loc[ci]).astype(np.float32) if scaffold else None
            local, steps = local_round(path, state, c.x, c.y, idx, a, corr, every, mu)
            u = update.delta(lay, local, state)
            dec = compress.decode(comps[ci].compress(u), lay.size)
            acc += len(c.y) * dec.astype(np.float64)
            tot += len(c.y)
            if scaffold:
                c_loc[ci] = (c_loc[ci] - c_glob - (u if cexact else dec) / np.float32(steps * a)).astype(np.float32)
        state = opt.step(lay, state, (acc / tot).astype(np.float32))
        if scaffold:
            w = sum(len(c.y) * c_loc[ci].astype(np.float64) for ci, c in enumerate(train))
            c_glob = (w / tot).astype(np.float32)
        t.load_state(state)
        accs.append(float(t.evaluate(vx, vy)[1]))
    return accs, state


def local_round(path, state, x, y, idx, lr, corr, every, mu):
    """One client's local round on the twin from `state`: one-sample SGD over idx, and every
    `every` steps a real-unit drift correction added with update.apply (what firmware/fleet.py's
    apply can do on a board between m.train calls): `-lr * steps * corr` (SCAFFOLD's c - c_i,
    a constant per round) and `-lr * steps * mu * (w - w_global)` (FedProx's proximal term).
    Returns (local state, steps taken)."""
    _, t, lay = client._model(path)
    t.load_state(state)
    pend = 0
    for j, i in enumerate(idx):
        t.step(x[i], int(y[i]), lr, True)
        pend += 1
        if (corr is not None or mu) and (pend == every or j == len(idx) - 1):
            v = np.zeros(lay.size, np.float32)
            if corr is not None:
                v -= np.float32(lr * pend) * corr
            if mu:
                v -= np.float32(lr * pend * mu) * update.delta(lay, t.state_bytes(), state)
            t.load_state(update.apply(lay, t.state_bytes(), v))
            pend = 0
    return t.state_bytes(), len(idx)


def refit_exact(path, train, l2, alpha, state=None):
    """The exact federated refit round (fleet/refit_stats.py): every client's statistics under
    `state` (None: the flashed state), summed, solved with (l2, alpha); bit-equal to the
    centralized refit (Trainer.refit) on the pooled windows under the same state, which is
    checked. l2/alpha None: the centralized refit's own CV on the pooled training windows
    chooses them (then used by the federated solve). Returns (global state, l2, alpha, pooled
    statistics)."""
    from edgetune.fleet import refit_stats as rs
    from edgetune.twin.training import Trainer

    _, t, _ = client._model(path)
    if state is not None:
        t.load_state(state)
    state0 = t.state_bytes()
    x = np.concatenate([c.x for c in train])
    y = np.concatenate([c.y for c in train])
    cen = Trainer(t.model)
    cen.load_state(state0)
    r = cen.refit(x, y, l2, alpha)
    K, C = rs.dims(t)
    parts = []
    for c in train:
        tr = Trainer(t.model)
        tr.load_state(state0)
        parts.append(rs.unpack(rs.pack(rs.client_stats(tr, c.x, c.y)), K, C))
    st = rs.aggregate(parts)
    glob = rs.global_state(t, st, r["l2"], r["alpha"])
    if glob != cen.state_bytes():
        raise RuntimeError("federated refit != centralized refit")
    return glob, r["l2"], r["alpha"], st


def refit_quant(path, train, l2, alpha, bits):
    """The federated refit round with quantized statistics (fleet/refit_quant.py): every client's
    upload about the server's integer centre, dequantized, summed, projected, solved. Returns
    (global state, bytes per client, projected)."""
    from edgetune.fleet import refit_quant as rq, refit_stats as rs
    from edgetune.fleet.data import server_windows
    from edgetune.twin.training import Trainer

    if l2 is None or alpha is None:
        raise SystemExit("qbits needs l2 and alpha (the server cannot cross-validate)")
    _, t, _ = client._model(path)
    K, C = rs.dims(t)
    m = rq.centre(t, server_windows(t.model.meta))
    parts = []
    for c in train:
        tr = Trainer(t.model)
        tr.load_state(t.state_bytes())
        parts.append(rq.unpack(rq.quantize(rs.client_stats(tr, c.x, c.y), m, bits), K, C, bits, m))
    st, projected = rq.pooled(parts)
    return rs.global_state(t, st, l2, alpha), rq.wire_bytes(K, C, bits), projected


def refit_last(path, train, state, l2, alpha, vx, vy):
    """The refit at the end: refit_exact under the run's final state, and the accuracy on
    (vx, vy) of the solve at every (l2, alpha) of the refit's grid from the same pooled
    statistics (what a fleet that fixes l2/alpha in advance would get; chosen on validation)."""
    from edgetune.fleet import refit_stats as rs
    from edgetune.twin import refit as rf

    glob, l2, alpha, st = refit_exact(path, train, l2, alpha, state)
    _, t, _ = client._model(path)
    t.load_state(state)
    _, ev, _ = client._model(path)
    grid = {}
    for av in rf.ALPHA_GRID[1:]:
        for lv in rf.L2_GRID:
            ev.load_state(rs.global_state(t, st, lv, av))
            grid[f"l2={lv:g},alpha={av:g}"] = float(ev.evaluate(vx, vy)[1])
    ev.load_state(glob)
    return {"last_l2": float(l2), "last_alpha": float(alpha), "last_acc": float(ev.evaluate(vx, vy)[1]),
            "last_grid": grid}


def parse(spec: str) -> tuple[str, dict]:
    kind, _, rest = spec.partition(":")
    kv = dict(p.split("=") for p in rest.split(",") if p)
    return kind, {k: float(v) for k, v in kv.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join("build", "demo", "model", "model.etm"))
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--val-subjects", type=int, default=2)
    p.add_argument("--splits", type=int, default=1, help="time parts per (subject, arm): 7 gives the scale run's "
                   "112 clients (validation: their windows of the last subjects)")
    p.add_argument("--out", default=os.path.join("build", "bench", "fleet-tune.json"))
    p.add_argument("--test", action="store_true", help="after tuning only: train on every training client and "
                   "report the held-out TEST subjects (bench/fleet.py's split) instead of the validation split")
    p.add_argument("--runs", nargs="+", required=True, help="central:lr=..,ep=..,decay=..,refit=0|1,last=0|1  "
                   "fedavg|scaffold|fedprox:lr=..,ep=..,slr=..,mom=..,clip=..,topk=..,dense=0|1,seed=..,decay=..,"
                   "refit=0|1,qbits=..,every=..,mu=..,cexact=0|1,last=0|1 (last_l2=..,last_alpha=..)")
    a = p.parse_args()
    path = os.path.abspath(a.model)
    _, t, _ = client._model(path)
    fd = fleet_data(t.model.meta, a.splits)
    train, vx, vy = (fd.clients, fd.eval_x, fd.eval_y) if a.test else split(fd, a.val_subjects)
    res = []
    if os.path.exists(a.out):
        with open(a.out) as f:
            res = json.load(f)
    for spec in a.runs:
        kind, o = parse(spec)
        t0 = time.time()
        lr, ep, seed = o.get("lr", 0.01), int(o.get("ep", 1)), int(o.get("seed", 0))
        start, extra = None, {}
        if o.get("refit", 0):
            if o.get("qbits"):
                l2, alpha = o.get("l2"), o.get("alpha")
                start, qbytes, projected = refit_quant(path, train, l2, alpha, int(o["qbits"]))
            else:
                start, l2, alpha, _ = refit_exact(path, train, o.get("l2"), o.get("alpha"))
            _, tv, _ = client._model(path)
            tv.load_state(start)
            extra = {"refit_l2": float(l2), "refit_alpha": float(alpha), "refit_val_acc": float(tv.evaluate(vx, vy)[1])}
            if o.get("qbits"):
                extra.update({"refit_bytes": qbytes, "refit_projected": bool(projected)})
        if kind == "central":
            accs, final = central(path, train, vx, vy, a.rounds, lr, ep, seed, start, o.get("decay", 1.0))
        elif kind in ("fedavg", "scaffold", "fedprox"):
            accs, final = fedavg(path, train, vx, vy, a.rounds, lr, ep, o.get("slr", 1.0), o.get("mom", 0.0),
                          o.get("clip", 8.0), o.get("topk", 0.05), bool(o.get("dense", 0)), seed, start,
                          kind == "scaffold", int(o.get("every", 1)), o.get("mu", 0.0), o.get("decay", 1.0),
                          bool(o.get("cexact", 0)))
        else:
            raise SystemExit(f"run kind {kind!r}: central, fedavg, scaffold or fedprox")
        if o.get("last", 0):
            extra.update(refit_last(path, train, final, o.get("last_l2"), o.get("last_alpha"), vx, vy))
        r = {"run": spec, "val_acc": accs, "final": accs[-1], "best": max(accs), "seconds": round(time.time() - t0, 1),
             "clients": len(train), "splits": a.splits, "val_windows": int(len(vy)),
             "split": "test" if a.test else "validation", **extra}
        tail = (f", refit last (l2 {extra['last_l2']:g}, alpha {extra['last_alpha']:g}) {extra['last_acc']:.3f}"
                if "last_acc" in extra else "")
        print(f"{spec}: {r['split']} {accs[0]:.3f} -> {accs[-1]:.3f} (best {max(accs):.3f}){tail} in {r['seconds']} s",
              flush=True)
        res.append(r)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
