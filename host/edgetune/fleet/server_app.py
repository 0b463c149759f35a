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
    pyproject), FedAvg over `nodes` SuperNodes for `rounds` rounds, the per-round record written
    to `out` (JSON) when given."""
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        rc = context.run_config
        s = Settings(model=str(rc["model"]), rounds=int(rc["rounds"]), lr=float(rc["lr"]), clip=float(rc["clip"]),
                     topk=float(rc["topk"]), sigma=float(rc["sigma"]), driver="unix", progress=False)
        s.check()
        _, t, lay = client._model(s.model)
        t.reset()
        state0 = t.state_bytes()
        n = int(rc["nodes"])
        strategy, _ = build_strategy(n, lay, state0, train_config(s, lay))
        strategy.start(grid=grid, initial_arrays=ArrayRecord({"params": Array(update.real(lay, state0))}),
                       num_rounds=s.rounds, timeout=600)
        if rc.get("out"):
            with open(str(rc["out"]), "w") as f:
                json.dump({"rounds": strategy.rounds, "state": strategy.state.hex()}, f)

    return app
