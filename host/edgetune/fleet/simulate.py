"""`edgetune fleet simulate`: Flower's Simulation Engine over the watch fleet, and the
centralized baseline (docs/fleet.md §5).

Every (subject, arm) client (or its time parts, `splits`) is a simulated SuperNode running
client.app on the numpy twin; the ServerApp runs FleetStrategy for `rounds` rounds over all
clients, evaluating the global int8 state on the held-out subjects before the first and after
every round. `centralized` fine-tunes the same parameters on the pooled client windows (same
lr, rounds x epochs passes) with the same twin: the reference the federated accuracy is held to.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from . import client, refit_stats as rs, update
from .data import fleet_data


@dataclass
class Settings:
    model: str
    rounds: int = 20
    epochs: int = 1
    lr: float = 0.01
    clip: float = 1.0  # device-side L2 clip of the update, real units
    topk: float = 0.05  # fraction of parameters sent
    sigma: float = 0.0  # device-side noise std in units of clip
    splits: int = 1
    seed: int = 0
    dp_epsilon: float = 0.0  # > 0: Flower's central DP wrapper with the noise for this epsilon
    delta: float = 1e-5
    dp_clip: float = 0.0  # server-side fixed clipping norm (0: the device clip)
    server_lr: float = 1.0  # server learning rate on the aggregate (1: plain FedAvg)
    server_momentum: float = 0.0  # server momentum (FedAvgM; 0: none)
    refit_l2: float = 0.0  # > 0: one exact refit round first (refit mode, ridge l2), then the SGD rounds
    refit_alpha: float = 1.0  # the refit's blend with the flashed classifier
    refit_bits: int = 0  # > 0: the refit round's statistics quantized to this many bits (refit_quant.py)
    driver: str = "twin"
    progress: bool = True

    def check(self) -> None:
        if not os.path.exists(self.model):
            raise ValueError(f"model {self.model!r} does not exist: make demo writes build/demo/model/model.etm")
        for name in ("rounds", "epochs", "splits"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not (0 < self.lr <= 1):
            raise ValueError(f"lr={self.lr} must be in (0, 1]")
        if not (0 < self.topk <= 1):
            raise ValueError(f"topk={self.topk} must be a fraction in (0, 1]")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip={self.clip} must be a positive number")
        if self.sigma < 0 or self.dp_epsilon < 0:
            raise ValueError("sigma and dp_epsilon must be >= 0")
        if not (self.server_lr > 0 and math.isfinite(self.server_lr)):
            raise ValueError(f"server_lr={self.server_lr} must be a positive number (1: plain FedAvg)")
        if not (0 <= self.server_momentum < 1):
            raise ValueError(f"server_momentum={self.server_momentum} must be in [0, 1)")
        if not (self.refit_l2 >= 0 and math.isfinite(self.refit_l2)):
            raise ValueError(f"refit_l2={self.refit_l2} must be >= 0 (0: no refit round first)")
        if not 0 <= self.refit_alpha <= 1:
            raise ValueError(f"refit_alpha={self.refit_alpha} must be in [0, 1]")
        if self.refit_bits:
            from .refit_quant import check_bits

            if self.refit_l2 <= 0:
                raise ValueError("refit_bits needs the refit round (refit_l2 > 0)")
            check_bits(self.refit_bits)


def _k(lay: update.Layout, frac: float) -> int:
    return max(1, min(lay.size, int(round(lay.size * frac))))


def train_config(s: Settings, lay: update.Layout) -> dict:
    return {"model": os.path.abspath(s.model), "lr": float(s.lr), "epochs": int(s.epochs), "clip": float(s.clip),
            "k": _k(lay, s.topk), "sigma": float(s.sigma), "splits": int(s.splits), "seed": int(s.seed),
            "driver": s.driver}


def _say(s: Settings, msg: str) -> None:
    if s.progress:
        print(msg, file=sys.stderr, flush=True)


def simulate(s: Settings) -> dict:
    """Run the federated simulation; returns per-round accuracy, bytes and epsilon."""
    s.check()
    from flwr.app import Array, ArrayRecord, MetricRecord
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from . import quiet_flower
    from .accountant import noise_for
    from .server import build_strategy

    quiet_flower()

    path = os.path.abspath(s.model)
    _, t, lay = client._model(path)
    fd = fleet_data(t.model.meta, s.splits)
    n = len(fd.clients)
    t.reset()
    state0 = t.state_bytes()
    z = noise_for(s.dp_epsilon, s.rounds, s.delta) if s.dp_epsilon > 0 else 0.0
    strategy, acc = build_strategy(n, lay, state0, train_config(s, lay), dp_noise=z,
                                   dp_clip=s.dp_clip or s.clip, delta=s.delta, server_lr=s.server_lr,
                                   server_momentum=s.server_momentum)
    out: dict = {"accuracy": [], "epsilon": []}

    def evaluate_fn(rnd: int, arrays) -> MetricRecord:
        from ..twin.training import Trainer

        ev = Trainer(t.model)
        ev.load_state(strategy.state)
        _, a = ev.evaluate(fd.eval_x, fd.eval_y)
        out["accuracy"].append(float(a))
        eps = acc.get_epsilon(s.delta) if acc is not None else None
        out["epsilon"].append(eps)
        r = strategy.rounds[-1] if strategy.rounds else None
        extra = f", sent {r['bytes_sent']} B vs {r['bytes_dense']} B dense" if r else ""
        _say(s, f"fleet: round {rnd}/{s.rounds}: held-out accuracy {a:.3f}{extra}"
             + (f", epsilon {eps:.2f}" if eps is not None else ""))
        return MetricRecord({"accuracy": float(a)})

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        nonlocal state0
        if s.refit_l2 > 0:  # the product's recipe: the exact refit first (refit_flower.py), SGD from there
            from .refit_flower import refit_round

            r = refit_round(grid, n, path, state0, s.splits, s.refit_l2, s.refit_alpha, bits=s.refit_bits)
            state0 = strategy.state = r["state"]
            out["refit_bytes_up"] = r["bytes_up"]
            out["refit_projected"] = r["projected"]
            t.load_state(state0)
            _say(s, f"fleet: refit round: held-out accuracy {t.evaluate(fd.eval_x, fd.eval_y)[1]:.3f}")
        strategy.start(grid=grid, initial_arrays=ArrayRecord({"params": Array(update.real(lay, state0))}),
                       num_rounds=s.rounds, evaluate_fn=evaluate_fn, timeout=3600)

    _say(s, f"fleet: {n} clients, {lay.size} parameters, top-k {_k(lay, s.topk)}, "
         + (f"central DP noise multiplier {z:.3f}" if z else "no central DP"))
    run_simulation(server_app=app, client_app=client.app, num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}},
                   verbose_logging=False)
    if len(out["accuracy"]) != s.rounds + 1:
        raise RuntimeError(f"the simulation stopped after {len(out['accuracy']) - 1} of {s.rounds} rounds")
    rounds = strategy.rounds
    return {"rounds": s.rounds, "clients": n, "params": lay.size, "k": _k(lay, s.topk),
            "global_acc": out["accuracy"], "epsilon_per_round": out["epsilon"],
            "bytes_up_sent": int(sum(r["bytes_sent"] for r in rounds)),
            "bytes_up_dense": int(sum(r["bytes_dense"] for r in rounds)),
            "bytes_per_round": [r["bytes_sent"] for r in rounds],
            "loss_per_round": [r["loss"] for r in rounds],
            "state_sha256_per_round": [r["state_sha256"] for r in rounds], "state": strategy.state.hex(),
            "refit_bytes_up": out.get("refit_bytes_up"), "refit_projected": out.get("refit_projected"),
            "refit_values": rs.upload_values(*rs.dims(t)) if s.refit_l2 > 0 else None, "noise_multiplier": z,
            "epsilon": acc.get_epsilon(s.delta) if acc is not None else None,
            "delta": s.delta if acc is not None else None, "settings": dataclasses.asdict(s)}


def centralized(s: Settings) -> dict:
    """The same parameters fine-tuned on the pooled client windows (rounds x epochs passes)."""
    from ..twin.training import Trainer

    _, t0, _ = client._model(os.path.abspath(s.model))
    fd = fleet_data(t0.model.meta, s.splits)
    x, y = fd.pooled()
    t = Trainer(t0.model)
    if s.refit_l2 > 0:  # the centralized refit on the pooled windows (= the federated one, bit for bit,
        # unless the federated statistics were quantized)
        t.refit(x, y, s.refit_l2, s.refit_alpha)
    accs = [float(t.evaluate(fd.eval_x, fd.eval_y)[1])]
    passes = s.rounds * s.epochs
    rng = np.random.default_rng(s.seed + 99)
    for p in range(passes):
        for i in rng.permutation(len(y)):
            t.step(x[i], int(y[i]), s.lr, True)
        accs.append(float(t.evaluate(fd.eval_x, fd.eval_y)[1]))
        _say(s, f"centralized: pass {p + 1}/{passes}: held-out accuracy {accs[-1]:.3f}")
    return {"centralized_acc": accs[-1], "centralized_curve": accs, "pooled_windows": int(len(y))}
