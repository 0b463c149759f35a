"""The Deployment Engine's ServerApp (`edgetune fleet serve` submits fleet_app/, whose
fleetapp.py builds it here): the settings from the run config, FleetStrategy (server.py) over the
SuperNodes. Its own module because it joins server.py's strategy with simulate.py's Settings,
and simulate.py builds server.py's strategy too (one module holding both would be a cycle)."""

from __future__ import annotations

import json

from flwr.app import Array, ArrayRecord
from flwr.serverapp import ServerApp

from . import client, update
from .server import build_strategy
from .simulate import Settings, train_config


def deployment_app():
    """The ServerApp of the Deployment Engine: settings from the run config (fleet_app's
    pyproject); with `refit-l2` > 0 one exact refit round first (refit_flower.refit_round: every
    SuperNode's board answers with m.refit_stats, the server sums and solves), then FedAvg over
    `nodes` SuperNodes for `rounds` rounds from that state; the per-round record written to
    `out` (JSON) when given."""
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        rc = context.run_config
        s = Settings(model=str(rc["model"]), rounds=int(rc["rounds"]), lr=float(rc["lr"]), clip=float(rc["clip"]),
                     topk=float(rc["topk"]), sigma=float(rc["sigma"]), driver="unix", progress=False,
                     refit_l2=float(rc.get("refit-l2", 0.0)), refit_alpha=float(rc.get("refit-alpha", 1.0)),
                     refit_bits=int(rc.get("refit-bits", 0)))
        s.check()
        _, t, lay = client._model(s.model)
        t.reset()
        state0 = t.state_bytes()
        n = int(rc["nodes"])
        refit = None
        if s.refit_l2 > 0:  # the product's recipe: the exact refit first, SGD from its state
            from .refit_flower import refit_round

            refit = refit_round(grid, n, s.model, state0, s.splits, s.refit_l2, s.refit_alpha, bits=s.refit_bits)
            state0 = refit["state"]
        strategy, _ = build_strategy(n, lay, state0, train_config(s, lay))
        strategy.start(grid=grid, initial_arrays=ArrayRecord({"params": Array(update.real(lay, state0))}),
                       num_rounds=s.rounds, timeout=600)
        if rc.get("out"):
            with open(str(rc["out"]), "w") as f:
                json.dump({"rounds": strategy.rounds, "state": strategy.state.hex(),
                           "refit_state": refit["state"].hex() if refit else None,
                           "refit_bytes_up": refit["bytes_up"] if refit else None}, f)

    return app
