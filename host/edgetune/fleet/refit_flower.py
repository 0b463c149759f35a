"""The fleet refit mode on Flower (docs/fleet-refit.md): one query round.

The ServerApp sends every SuperNode a query message with the model path, the global state and
the split; each ClientApp (`app`, numpy twin) answers with its packed int32 refit statistics
(refit_stats.pack); the server sums them (refit_stats.aggregate), solves and returns the global
state (refit_stats.global_state). `simulate_refit` runs it on Flower's Simulation Engine.
"""

from __future__ import annotations

import os

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from . import client, refit_stats as rs
from .data import fleet_data

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    cfg = msg.content["config"]
    part = int(context.node_config["partition-id"])
    _, t, _ = client._model(str(cfg["model"]))
    t.load_state(bytes(cfg["state"]))
    fd = fleet_data(t.model.meta, int(cfg.get("splits", 1)))
    if not 0 <= part < len(fd.clients):
        raise ValueError(f"partition {part} is not a client (0..{len(fd.clients) - 1})")
    c = fd.clients[part]
    wire = rs.pack(rs.client_stats(t, c.x, c.y))
    return Message(content=RecordDict({"arrays": ArrayRecord({"stats": Array(np.frombuffer(wire, np.uint8).copy())})}),
                   reply_to=msg)


def simulate_refit(model: str, l2: float, alpha: float, splits: int = 1) -> dict:
    """One Flower round of the refit mode over every client of the fleet data; returns
    {"state": global state bytes, "clients": K, "bytes_up": [per client]}."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    path = os.path.abspath(model)
    _, t, _ = client._model(path)
    state0 = t.state_bytes()
    n = len(fleet_data(t.model.meta, splits).clients)
    K, C = rs.dims(t)
    out: dict = {}
    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:
        import time

        nodes = list(grid.get_node_ids())
        for _ in range(600):  # the SuperNodes register after the ServerApp starts
            if len(nodes) >= n:
                break
            time.sleep(0.5)
            nodes = list(grid.get_node_ids())
        if len(nodes) < n:
            raise RuntimeError(f"{len(nodes)} of {n} SuperNodes joined")
        cfg = ConfigRecord({"model": path, "state": state0, "splits": int(splits)})
        msgs = [Message(content=RecordDict({"config": cfg}), dst_node_id=nid, message_type="query") for nid in nodes]
        replies = list(grid.send_and_receive(msgs, timeout=3600))
        ups = []
        for r in replies:
            if r.has_error():
                raise RuntimeError(f"refit query failed on a node: {r.error}")
            ups.append(r.content["arrays"]["stats"].numpy().tobytes())
        out["bytes_up"] = [len(u) for u in ups]
        out["state"] = rs.global_state(t, rs.aggregate([rs.unpack(u, K, C) for u in ups]), l2, alpha)

    run_simulation(server_app=server, client_app=app, num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}},
                   verbose_logging=False)
    if "state" not in out:
        raise RuntimeError("the refit round did not finish")
    if len(out["bytes_up"]) != n:
        raise RuntimeError(f"{len(out['bytes_up'])} of {n} clients answered")
    out["clients"] = n
    return out
