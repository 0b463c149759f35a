"""The server's aggregate does not depend on the order the replies arrive in (fleet/server.py
`canonical`): Flower's FedAvg sums `weight * params` in float32 in list order, so before the
replies were put in a canonical order the same replies in another order gave another global
state (docs/fleet.md §4). Real Flower Messages and Flower's FedAvg inside FleetStrategy, real wire
bytes (compress.Compressor) of random updates, many random models
(tests.support.trainingcases.train_model)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from edgetune.fleet import compress, update
from edgetune.fleet.server import build_strategy, canonical
from edgetune.twin.training import Trainer

from tests.support.trainingcases import train_model

N = 9  # clients answering; one more fails


@pytest.fixture
def identity(monkeypatch):
    """The ServerApp's task identity, which a Message needs (Flower's runtime sets it)."""
    for name, v in (("_run_id", 7), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, v)


def _replies(lay: update.Layout, rng) -> tuple[list[Message], np.ndarray, np.ndarray]:
    """N replies as client.app sends them (dense int8 wire: every value sent, so the float32 sum
    sees every client everywhere) plus one error reply; (replies, decoded updates, weights)."""
    msgs, ups, ws = [], [], []
    for i in range(N + 1):
        ins = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=1000 + i,
                      message_type="train")
        if i == N // 2:
            msgs.append(Message(Error(code=1, reason="the board went away"), reply_to=ins))
            continue
        u = (rng.standard_normal(lay.size) * rng.uniform(0.01, 0.2)).astype(np.float32)
        wire = compress.Compressor(lay.size, 1e6, lay.size).compress(u)
        n = int(rng.integers(20, 300))
        metrics = {"num-examples": n, "weight": 1, "bytes-sent": len(wire),
                   "bytes-dense": compress.dense_bytes(lay.size), "loss": float(rng.uniform(0.1, 3))}
        msgs.append(Message(RecordDict({"arrays": ArrayRecord({"update": Array(np.frombuffer(wire, np.uint8).copy())}),
                                        "metrics": MetricRecord(metrics)}), reply_to=ins))
        ups.append(compress.decode(wire, lay.size))
        ws.append(n)
    return msgs, np.array(ups, np.float64), np.array(ws, np.float64)


def _aggregate(lay, state, msgs_fn, order) -> tuple[bytes, bytes, dict]:
    strategy, _ = build_strategy(N, lay, state, {})
    msgs = msgs_fn()[0]
    arrays, _ = strategy.aggregate_train(1, [msgs[i] for i in order])
    return strategy.state, arrays["params"].numpy().tobytes(), strategy.rounds[-1]


@pytest.mark.parametrize("seed", range(6))
def test_aggregate_is_the_same_in_any_arrival_order(seed, identity):
    rng = np.random.default_rng([17, seed])
    t = Trainer(train_model(seed))
    lay = update.layout(t.model, t.scheme)
    state = t.state_bytes()
    data_seed = int(rng.integers(1 << 30))

    def msgs_fn():  # fresh Messages for every run (aggregate_train rewrites their content)
        return _replies(lay, np.random.default_rng(data_seed))

    _, ups, ws = msgs_fn()
    orders = [np.arange(N + 1), np.arange(N + 1)[::-1]] + [rng.permutation(N + 1) for _ in range(4)]
    runs = [_aggregate(lay, state, msgs_fn, o) for o in orders]
    for r in runs[1:]:
        assert r == runs[0]
    new_state, params, rec = runs[0]
    assert rec["clients"] == N and new_state != state
    # it is FedAvg: the global state took the num-examples-weighted mean update (float32 sums apart)
    mean = ((ws[:, None] * ups).sum(0) / ws.sum()).astype(np.float32)
    assert np.frombuffer(params, np.float32) == pytest.approx(update.real(lay, update.apply(lay, state, mean)), abs=1e-5)
    assert np.frombuffer(params, np.float32).tobytes() == update.real(lay, new_state).tobytes()


def test_canonical_order_ignores_arrival_and_puts_errors_last(identity):
    t = Trainer(train_model(0))
    lay = update.layout(t.model, t.scheme)
    msgs, _, _ = _replies(lay, np.random.default_rng(3))
    a = canonical(msgs)
    b = canonical(msgs[::-1])
    assert [id(m) for m in a] == [id(m) for m in b]
    assert a[-1].has_error() and not any(m.has_error() for m in a[:-1])
    wires = [m.content["arrays"]["update"].numpy().tobytes() for m in a[:-1]]
    assert wires == sorted(wires)
