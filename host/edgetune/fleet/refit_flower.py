"""The fleet refit mode on Flower (docs/fleet-refit.md): one query round.

The ServerApp sends every SuperNode a query message with the model path, the global state and
the split; each ClientApp (`app`, numpy twin) answers with its packed int32 refit statistics
(refit_stats.pack); the server sums them (refit_stats.aggregate), solves and returns the global
state (refit_stats.global_state). `simulate_refit` runs it on Flower's Simulation Engine.

With `dp` (docs/fleet-refit.md §5) the query also carries the clip, the windows-per-board cap
and the public centre; every board answers with its clipped float64 statistics
(refit_dp.pack), and the server sums them in partition order, adds the Gaussian noise once
(refit_dp.release) and solves.
"""

from __future__ import annotations

import os

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from . import client, refit_dp, refit_quant as rq, refit_stats as rs
from .data import fleet_data

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    return client.refit_answer(msg, int(context.node_config["partition-id"]))


def refit_round(grid, n: int, path: str, state: bytes, splits: int, l2: float, alpha: float,
                dp: dict | None = None, bits: int = 0) -> dict:
    """The server side of one refit round inside a ServerApp: wait for n SuperNodes, query each
    for its statistics under `state`, sum them exactly and solve; {"state", "bytes_up"}.
    `bits` > 0: the boards send the quantized statistics (refit_quant.py) about the server's
    integer centre (its own pre-training windows under `state`), the server sums their exact
    dequantized values and projects the scatter if it came out indefinite ("projected").
    `dp`: {"clip", "n_max" (None: every window), "z", "weights", "centre" (None or K floats),
    "seed" (None: fresh entropy; a known seed voids the guarantee)} for the DP release."""
    import time

    _, t, _ = client._model(path)
    t.load_state(state)
    K, C = rs.dims(t)
    nodes = list(grid.get_node_ids())
    for _ in range(600):  # the SuperNodes register after the ServerApp starts
        if len(nodes) >= n:
            break
        time.sleep(0.5)
        nodes = list(grid.get_node_ids())
    if len(nodes) < n:
        raise RuntimeError(f"{len(nodes)} of {n} SuperNodes joined")
    cfg = {"model": path, "state": state, "splits": int(splits)}
    if bits and dp is not None:
        raise ValueError("the quantized statistics are for the exact mode, not the DP release")
    if bits:
        from .data import server_windows

        centre = rq.centre(t, server_windows(t.model.meta))
        cfg.update({"q-bits": rq.check_bits(bits), "q-centre": centre.astype("<i2").tobytes()})
    if dp is not None:
        cfg.update({"dp-clip": float(dp["clip"]), "dp-n-max": int(dp["n_max"] or 0)})
        if dp.get("centre") is not None:
            cfg["dp-centre"] = np.asarray(dp["centre"], "<f8").tobytes()
    cfg = ConfigRecord(cfg)
    msgs = [Message(content=RecordDict({"config": cfg}), dst_node_id=nid, message_type="query") for nid in nodes]
    replies = list(grid.send_and_receive(msgs, timeout=3600))
    ups = []
    for r in replies:
        if r.has_error():
            raise RuntimeError(f"refit query failed on a node: {r.error}")
        part = int(r.content["metrics"]["partition"]) if dp is not None else 0
        ups.append((part, r.content["arrays"]["stats"].numpy().tobytes()))
    if len(ups) != n:
        raise RuntimeError(f"{len(ups)} of {n} clients answered")
    projected = None
    if bits:
        st, projected = rq.pooled([rq.unpack(u, K, C, bits, centre) for _, u in ups])
    elif dp is None:
        st = rs.aggregate([rs.unpack(u, K, C) for _, u in ups])
    else:  # float sums: in partition order, so a run is reproducible given the seed
        parts = [refit_dp.unpack(u, K, C) for _, u in sorted(ups, key=lambda pu: pu[0])]
        st = refit_dp.release(parts, dp["clip"], dp["n_max"], dp["z"], np.random.default_rng(dp.get("seed")),
                              dp["weights"], dp.get("centre"))
    return {"state": rs.global_state(t, st, l2, alpha), "bytes_up": [len(u) for _, u in ups],
            "projected": projected}


def simulate_refit(model: str, l2: float, alpha: float, splits: int = 1, dp: dict | None = None,
                   bits: int = 0) -> dict:
    """One Flower round of the refit mode over every client of the fleet data (with `dp`: the
    DP release, refit_round); returns {"state": global state bytes, "clients": K, "bytes_up":
    [per client]}."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    path = os.path.abspath(model)
    _, t, _ = client._model(path)
    state0 = t.state_bytes()
    n = len(fleet_data(t.model.meta, splits).clients)
    out: dict = {}
    server = ServerApp()

    from . import quiet_flower

    quiet_flower()

    @server.main()
    def main(grid, context) -> None:
        out.update(refit_round(grid, n, path, state0, splits, l2, alpha, dp, bits))

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
