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
update); Flower's FedAvg computes the same weighted mean. Results (validation accuracy per
round) go to build/bench/fleet-tune.json (appended per run).
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


def central(path, train, vx, vy, rounds, lr, ep, seed):
    _, t, _ = client._model(path)
    x = np.concatenate([c.x for c in train])
    y = np.concatenate([c.y for c in train])
    accs = [float(t.evaluate(vx, vy)[1])]
    rng = np.random.default_rng(seed + 99)
    for _ in range(rounds * ep):
        for i in rng.permutation(len(y)):
            t.step(x[i], int(y[i]), lr, True)
        accs.append(float(t.evaluate(vx, vy)[1]))
    return accs


def fedavg(path, train, vx, vy, rounds, lr, ep, slr, mom, clip, topk, dense, seed):
    _, t, lay = client._model(path)
    state = t.state_bytes()
    k = lay.size if dense else max(1, int(round(lay.size * topk)))
    comps = [compress.Compressor(lay.size, 1e30 if dense else clip, k, 0.0, i + 1) for i in range(len(train))]
    opt = ServerOpt(slr, mom, lay.size)
    accs = [float(t.evaluate(vx, vy)[1])]
    for rnd in range(1, rounds + 1):
        acc = np.zeros(lay.size, np.float64)
        tot = 0
        for ci, c in enumerate(train):
            idx = client.order(len(c.y), ep, (seed * 1_000_003 + ci) * 131 + rnd)
            wire, _ = client.twin_round(path, state, c.x, c.y, idx, lr, comps[ci])
            acc += len(c.y) * compress.decode(wire, lay.size).astype(np.float64)
            tot += len(c.y)
        state = opt.step(lay, state, (acc / tot).astype(np.float32))
        t.load_state(state)
        accs.append(float(t.evaluate(vx, vy)[1]))
    return accs


def parse(spec: str) -> tuple[str, dict]:
    kind, _, rest = spec.partition(":")
    kv = dict(p.split("=") for p in rest.split(",") if p)
    return kind, {k: float(v) for k, v in kv.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join("build", "demo", "model", "model.etm"))
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--val-subjects", type=int, default=2)
    p.add_argument("--out", default=os.path.join("build", "bench", "fleet-tune.json"))
    p.add_argument("--runs", nargs="+", required=True, help="central:lr=..,ep=..  fedavg:lr=..,ep=..,slr=..,mom=..,"
                   "clip=..,topk=..,dense=0|1,seed=..")
    a = p.parse_args()
    path = os.path.abspath(a.model)
    _, t, _ = client._model(path)
    train, vx, vy = split(fleet_data(t.model.meta), a.val_subjects)
    res = []
    if os.path.exists(a.out):
        with open(a.out) as f:
            res = json.load(f)
    for spec in a.runs:
        kind, o = parse(spec)
        t0 = time.time()
        lr, ep, seed = o.get("lr", 0.01), int(o.get("ep", 1)), int(o.get("seed", 0))
        if kind == "central":
            accs = central(path, train, vx, vy, a.rounds, lr, ep, seed)
        elif kind == "fedavg":
            accs = fedavg(path, train, vx, vy, a.rounds, lr, ep, o.get("slr", 1.0), o.get("mom", 0.0),
                          o.get("clip", 8.0), o.get("topk", 0.05), bool(o.get("dense", 0)), seed)
        else:
            raise SystemExit(f"run kind {kind!r}: central or fedavg")
        r = {"run": spec, "val_acc": accs, "final": accs[-1], "best": max(accs), "seconds": round(time.time() - t0, 1),
             "clients": len(train), "val_windows": int(len(vy))}
        print(f"{spec}: validation {accs[0]:.3f} -> {accs[-1]:.3f} (best {max(accs):.3f}) in {r['seconds']} s",
              flush=True)
        res.append(r)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
