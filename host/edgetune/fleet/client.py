"""A board as a Flower client: the ClientApp and one local round (docs/fleet.md §2).

A round, on whatever runs the training (`twin`: the bit-exact numpy Trainer in this process;
`unix`: a unix-port MicroPython process with the C module, firmware/fleet.py, edgetune.fleet.board):
load the global state the server sent, `epochs` passes of one-sample QAS SGD over the client's
windows in a seeded order, the update (update.delta) compressed on the device (compress) with
the error-feedback memory kept from the previous round. The reply carries only the wire bytes
(ArrayRecord "arrays" = {"update": uint8}) and metrics: `num-examples`, `weight` (1, the
uniform weight the accounted DP wrapper needs), `bytes-sent`, `bytes-dense`, `loss`.
"""

from __future__ import annotations

import functools

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import compress, refit_dp, refit_quant, refit_stats, update
from .data import fleet_data


@functools.lru_cache(maxsize=2)
def _model_file(path: str) -> tuple[bytes, update.Layout]:
    """The .etm bytes and the update layout of a model file (cached: both are immutable here)."""
    from ..twin.training import Trainer

    with open(path, "rb") as f:
        buf = f.read()
    t = Trainer(buf)
    return buf, update.layout(t.model, t.scheme)


def _model(path: str):
    """(etm bytes, a fresh Trainer at the flashed state, layout): every caller gets its own
    Trainer, so one caller's training never leaks into another's start state."""
    from ..twin.training import Trainer

    buf, lay = _model_file(path)
    return buf, Trainer(buf), lay


def order(n: int, epochs: int, seed: int) -> np.ndarray:
    """The visiting order of a local round: `epochs` seeded permutations of the n windows."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)]) if n else np.zeros(0, np.int64)


def twin_round(model_path: str, glob: bytes, x: np.ndarray, y: np.ndarray, idx: np.ndarray, lr: float,
               comp: compress.Compressor) -> tuple[bytes, float]:
    """One local round on the numpy twin: (wire bytes, mean loss)."""
    _, t, lay = _model(model_path)
    t.load_state(glob)
    total = 0.0
    for i in idx:
        total += float(t.step(x[i], int(y[i]), lr, True))
    u = update.delta(lay, t.state_bytes(), glob)
    return comp.compress(u), total / max(1, len(idx))


def run_round(cfg, partition: int, memory: bytes | None, node: dict | None = None) -> tuple[bytes, dict, bytes]:
    """(wire bytes, metrics, new memory) of this client's round under the server's config; the
    node's config (`driver`, `board-dir`) says what trains: the twin or a unix-port board."""
    node = node or {}
    path = str(cfg["model"])
    _, t, lay = _model(path)
    fd = fleet_data(t.model.meta, int(cfg.get("splits", 1)))
    if not 0 <= partition < len(fd.clients):
        raise ValueError(f"partition {partition} is not a client (0..{len(fd.clients) - 1})")
    c = fd.clients[partition]
    seed = int(cfg.get("seed", 0)) * 1_000_003 + partition
    comp = compress.Compressor(lay.size, float(cfg["clip"]), int(cfg["k"]), float(cfg.get("sigma", 0.0)),
                               (seed * 2654435761) & 0xFFFFFFFF)
    if memory:
        comp.restore(memory)
    idx = order(len(c.y), int(cfg.get("epochs", 1)), seed * 131 + int(cfg.get("server-round", 0)))
    driver = str(node.get("driver", cfg.get("driver", "twin")))
    glob = bytes(cfg["state"])
    if driver == "twin":
        wire, loss = twin_round(path, glob, c.x, c.y, idx, float(cfg["lr"]), comp)
        mem = comp.save()
    else:
        from .board import UnixBoard

        if driver != "unix":
            raise ValueError(f"driver {driver!r}: choose twin or unix")
        board = UnixBoard.for_partition(partition, node.get("board-dir"))
        wire, loss, mem = board.round(path, lay, glob, c.x, c.y, idx, float(cfg["lr"]), comp, memory,
                                      int(cfg.get("server-round", 0)))
    metrics = {"num-examples": int(len(c.y)), "weight": 1, "bytes-sent": len(wire),
               "bytes-dense": compress.dense_bytes(lay.size), "loss": float(loss)}
    return wire, metrics, mem


def refit_answer(msg: Message, part: int, node: dict | None = None) -> Message:
    """Client `part`'s reply to a refit query: its packed int32 statistics under the sent state
    (the query handler of this app and of refit_flower.app); with `dp-clip` in the config, its
    clipped statistics instead (refit_dp.clipped_stats: `dp-n-max` windows at most, 0 = all,
    minus the centre `dp-centre`; float32 on the wire, refit_dp.pack) and its partition id (the
    server sums in that order); with `q-bits` the quantized statistics about the integer centre
    `q-centre` (refit_quant.quantize).
    The node's `driver` says who computes the exact statistics: the twin, or (`unix`) a unix-port
    board's m.refit_stats (board.UnixBoard.refit_stats); the same bytes."""
    node = node or {}
    driver = str(node.get("driver", "twin"))
    if driver not in ("twin", "unix"):
        raise ValueError(f"driver {driver!r}: choose twin or unix")
    cfg = msg.content["config"]
    _, t, _ = _model(str(cfg["model"]))
    t.load_state(bytes(cfg["state"]))
    fd = fleet_data(t.model.meta, int(cfg.get("splits", 1)))
    if not 0 <= part < len(fd.clients):
        raise ValueError(f"partition {part} is not a client (0..{len(fd.clients) - 1})")
    c = fd.clients[part]
    metrics = {}
    quant = None
    if "q-bits" in cfg:
        quant = (int(cfg["q-bits"]), np.frombuffer(bytes(cfg["q-centre"]), "<i2").astype(np.int64))
    if "dp-clip" in cfg:
        if driver != "twin":
            raise ValueError("the DP refit's clipped statistics are computed on the twin only (driver twin)")
        centre = np.frombuffer(bytes(cfg["dp-centre"]), "<f8") if "dp-centre" in cfg else None
        wire = refit_dp.pack(refit_dp.clipped_stats(t, c.x, c.y, float(cfg["dp-clip"]),
                                                    int(cfg["dp-n-max"]) or None, part, centre))
        metrics = {"partition": part}
    elif driver == "unix":
        from .board import UnixBoard

        wire = UnixBoard.for_partition(part, node.get("board-dir")).refit_stats(
            str(cfg["model"]), bytes(cfg["state"]), c.x, c.y, quant)
    elif quant is not None:
        wire = refit_quant.quantize(refit_stats.client_stats(t, c.x, c.y), quant[1], quant[0])
    else:
        wire = refit_stats.pack(refit_stats.client_stats(t, c.x, c.y))
    return Message(content=RecordDict({"arrays": ArrayRecord({"stats": Array(np.frombuffer(wire, np.uint8).copy())}),
                                       "metrics": MetricRecord(metrics)}), reply_to=msg)


app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = msg.content["config"]
    part = int(context.node_config["partition-id"])
    st = context.state
    mem = None
    if "fleet" in st.array_records:
        mem = st["fleet"]["memory"].numpy().tobytes()
    wire, metrics, mem = run_round(cfg, part, mem, dict(context.node_config))
    st["fleet"] = ArrayRecord({"memory": Array(np.frombuffer(mem, np.uint8).copy())})
    content = RecordDict({"arrays": ArrayRecord({"update": Array(np.frombuffer(wire, np.uint8).copy())}),
                          "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """The refit query (the refit-first round of `edgetune fleet simulate`, refit_flower.py);
    a node with `driver="unix"` answers with its board."""
    return refit_answer(msg, int(context.node_config["partition-id"]), dict(context.node_config))
