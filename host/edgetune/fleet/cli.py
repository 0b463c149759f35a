"""`edgetune fleet simulate | serve | join` (docs/fleet.md §7)."""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_MODEL = os.path.join("build", "demo", "model", "model.etm")


def _sim_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="the .etm (default: the `make demo` model)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=8.0, help="device L2 clip of an update (real units)")
    p.add_argument("--topk", type=float, default=0.05, help="fraction of parameters a board sends")
    p.add_argument("--sigma", type=float, default=0.0, help="device noise std in units of --clip")
    p.add_argument("--splits", type=int, default=1, help="time parts per (subject, arm): 7 gives 112 clients")
    p.add_argument("--dp-epsilon", type=float, default=0.0, help="central DP (Flower's wrapper) at this epsilon")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--server-lr", type=float, default=1.0, help="server learning rate on the aggregate (1: FedAvg)")
    p.add_argument("--server-momentum", type=float, default=0.0, help="server momentum (FedAvgM)")
    p.add_argument("--refit-l2", type=float, default=0.0, help="> 0: one exact refit round first (refit mode, "
                   "this ridge strength), the SGD rounds from its state; the centralized baseline refits too")
    p.add_argument("--refit-alpha", type=float, default=1.0, help="the refit's blend with the flashed classifier")
    p.add_argument("--refit-bits", type=int, default=0, help="4..16: the refit round's statistics quantized to this "
                   "many bits a value (docs/fleet-refit.md §7; 12 is the measured choice); 0: exact int32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--centralized", action="store_true", help="also fine-tune centrally on the pooled windows")
    p.add_argument("--out", default=os.path.join("build", "bench", "fleet-simulate.json"))
    p.add_argument("--quiet", action="store_true")


def simulate_cli(a: argparse.Namespace) -> int:
    from ..outpaths import check_file
    from . import report
    from .simulate import Settings, centralized, simulate

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    check_file(a.out)
    s = Settings(model=a.model, rounds=a.rounds, epochs=a.epochs, lr=a.lr, clip=a.clip, topk=a.topk,
                 sigma=a.sigma, splits=a.splits, seed=a.seed, dp_epsilon=a.dp_epsilon, delta=a.delta,
                 server_lr=a.server_lr, server_momentum=a.server_momentum, refit_l2=a.refit_l2,
                 refit_alpha=a.refit_alpha, refit_bits=a.refit_bits, progress=not a.quiet)
    res = simulate(s)
    if a.centralized:
        res.update(centralized(s))
    report.write_json(a.out, res)
    png = os.path.splitext(a.out)[0] + ".png"
    report.plot(png, res)
    print(f"held-out accuracy {res['global_acc'][0]:.3f} -> {res['global_acc'][-1]:.3f}; "
          f"{res['bytes_up_sent']} B sent vs {res['bytes_up_dense']} B dense"
          + (f"; epsilon {res['epsilon']:.2f} at delta {res['delta']:g}" if res.get("epsilon") else "")
          + f"; {a.out}, {png}")
    return 0


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgetune fleet", description="fleet learning on Flower (docs/fleet.md)")
    sub = p.add_subparsers(dest="cmd", required=True)
    _sim_parser(sub.add_parser("simulate", help="Flower Simulation Engine over the watch fleet (numpy twin)"))
    from . import deploy

    deploy.add_parsers(sub)
    from . import refit_cli

    refit_cli.add_parser(sub)
    a = p.parse_args(argv)
    try:
        if a.cmd == "simulate":
            return simulate_cli(a)
        if a.cmd == "refit":
            return refit_cli.run(a)
        return deploy.run_cli(a)
    except ValueError as e:
        print(f"edgetune fleet: {e}", file=sys.stderr)
        return 2
