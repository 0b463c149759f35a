"""The server: Flower's FedAvg (optionally inside its central-DP wrapper with fixed clipping)
behind a thin strategy that speaks the fleet's wire format (docs/fleet.md §4).

`FleetStrategy(inner, layout, state, train_config)`:
- `configure_train` adds the global int8 + residual state (trained-weights bytes) and the
  round's settings to the config the inner strategy sends; the ArrayRecord the Flower loop
  carries is the global parameters in real units (update.real).
- `aggregate_train` puts the replies in a canonical order first (`canonical`: by wire bytes,
  then metrics; the order they arrived in, and the Flower node ids, which are random per run,
  play no part), counts the bytes each board sent, decodes its sparse int8 update into the
  dense real-unit parameters `global + update` (the form Flower's strategies aggregate), hands
  the replies to the inner strategy (FedAvg weighted by `num-examples`; under DP the wrapper
  clips every client's `reply - global` to C, FedAvg averages uniformly (`weight`), the wrapper
  adds N(0, (z C / m)^2) and the accountant composes the release), and applies the aggregate's
  difference to the global state with update.apply, the same rule a board uses.

The canonical order is what makes a non-DP run bit-reproducible: Flower's FedAvg sums
`weight * params` in float32 in list order, and float32 addition is not associative, so the same
replies in another arrival order gave another global state (docs/fleet.md §4). Under central DP
the wrapper's noise comes from numpy's global, unseeded generator (np.random.normal), so a DP
run is not reproducible, by design: seeding it would make the noise predictable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, Strategy

from . import compress, update

F32 = np.float32


def _key(r: Message) -> tuple:
    """A reply's place in the canonical order: error replies last (the inner strategy drops
    them), the others by their wire bytes, then their metrics (repr is exact for floats), so
    replies with equal keys are equal in everything the aggregate reads."""
    if r.has_error():
        return (1, b"", ())
    wire = r.content["arrays"]["update"].numpy().tobytes()
    metrics = tuple(sorted((k, repr(v)) for rec in r.content.metric_records.values() for k, v in rec.items()))
    return (0, wire, metrics)


def canonical(replies: Iterable[Message]) -> list[Message]:
    """The replies in an order that depends only on their contents (see the module doc)."""
    return sorted(replies, key=_key)


class ServerOpt:
    """The server's step from the aggregate: FedAvg with a server learning rate and server
    momentum (FedAvgM: Hsu et al. 2019; the server-lr form of Reddi et al. 2021), in float32:
    `m = momentum * m + d; state = update.apply(state, lr * m)` with d the aggregate's mean
    update. lr = 1, momentum = 0 is plain FedAvg. Post-processing of the aggregate: it changes
    nothing of the central-DP guarantee."""

    def __init__(self, lr: float = 1.0, momentum: float = 0.0, d: int = 0):
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"server lr={lr} must be a positive number (1: plain FedAvg)")
        if not (0 <= momentum < 1):
            raise ValueError(f"server momentum={momentum} must be in [0, 1) (0: none)")
        self.lr, self.momentum = F32(lr), F32(momentum)
        self.m = np.zeros(d, F32)

    def step(self, lay: update.Layout, state: bytes, d) -> bytes:
        d = np.asarray(d, F32).reshape(-1)
        if self.m.size != d.size:
            self.m = np.zeros(d.size, F32)
        self.m = (self.momentum * self.m + d).astype(F32)
        return update.apply(lay, state, (self.lr * self.m).astype(F32))


class FleetStrategy(Strategy):
    def __init__(self, inner: Strategy, lay: update.Layout, state: bytes, train_config: dict,
                 server_lr: float = 1.0, server_momentum: float = 0.0):
        super().__init__()
        self.inner = inner
        self.lay = lay
        self.state = bytes(state)
        self.opt = ServerOpt(server_lr, server_momentum, lay.size)
        self.train_config = dict(train_config)
        self.rounds: list[dict] = []  # per round: bytes sent, dense bytes, clients, loss, state hash

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        cfg = ConfigRecord({**dict(config), **self.train_config, "state": self.state})
        return self.inner.configure_train(server_round, arrays, cfg, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = canonical(replies)
        glob = update.real(self.lay, self.state)
        sent = dense = 0
        losses = []
        ok = 0
        for r in replies:
            if r.has_error():
                continue
            wire = r.content["arrays"]["update"].numpy().tobytes()
            sent += len(wire)
            dense += compress.dense_bytes(self.lay.size)
            v = compress.decode(wire, self.lay.size)
            r.content["arrays"] = ArrayRecord({"params": Array((glob + v).astype(F32))})
            losses.append(float(r.content["metrics"]["loss"]))
            ok += 1
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        self.rounds.append({"round": server_round, "clients": ok, "bytes_sent": sent, "bytes_dense": dense,
                            "loss": float(np.mean(losses)) if losses else None})
        if arrays is not None:
            new = np.asarray(arrays["params"].numpy(), F32)
            self.state = self.opt.step(self.lay, self.state, (new - glob).astype(F32))
        self.rounds[-1]["state_sha256"] = hashlib.sha256(self.state).hexdigest()
        if arrays is None:
            return None, metrics
        return ArrayRecord({"params": Array(update.real(self.lay, self.state))}), metrics

    def configure_evaluate(self, server_round, arrays, config, grid):
        return []

    def aggregate_evaluate(self, server_round, replies):
        return None


def build_strategy(n_clients: int, lay: update.Layout, state: bytes, train_config: dict, *,
                   dp_noise: float = 0.0, dp_clip: float = 0.0, delta: float = 1e-5, server_lr: float = 1.0,
                   server_momentum: float = 0.0):
    """(FleetStrategy, accountant or None): FedAvg over every client each round, inside
    Flower's DifferentialPrivacyServerSideFixedClipping when dp_noise > 0; the aggregate goes
    into the global state through ServerOpt(server_lr, server_momentum)."""
    acc = None
    if dp_noise > 0:
        from .accountant import accountant

        acc = accountant(n_clients, delta)
        inner = DifferentialPrivacyServerSideFixedClipping(
            FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n_clients,
                   min_available_nodes=n_clients, weighted_by_key="weight"),
            noise_multiplier=dp_noise, clipping_norm=dp_clip, num_sampled_clients=n_clients, accountant=acc)
    else:
        inner = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n_clients,
                       min_available_nodes=n_clients, weighted_by_key="num-examples")
    return FleetStrategy(inner, lay, state, train_config, server_lr, server_momentum), acc

