"""Fleet learning on Flower (docs/fleet.md): boards fine-tune the scheme's parameters locally and
send clipped, top-k sparsified, int8-quantized (optionally noised) updates; the server averages
them with Flower's FedAvg (optionally under its central DP wrapper with fixed clipping).

One concept per module: `update` (the update in real units, apply to int8 + residual state),
`compress` (the device-side clip / top-k / int8 / noise and the wire format, numpy twin of
firmware/fleet.py), `data` (clients by person and arm), `accountant` (RDP of the Gaussian
mechanism), `client` (the ClientApp), `board` (a unix-port board process a node drives),
`server` (strategy and server step), `server_app` (the Deployment Engine's ServerApp),
`simulate` (Simulation Engine run and the centralized baseline), `leakage` (the analytic
gradient-leakage attack), `leakage_iter` (the iterative gradient-matching attack),
`refit_stats` / `refit_quant` / `refit_dp` (the refit mode's exact, quantized and differentially
private statistics),
`refit_flower` / `refit_cli` (its Flower round and `edgetune fleet refit`), `deploy`
(SuperLink / SuperNode processes), `report` (JSON and PNG), `cli` (`edgetune fleet`).
"""

import os as _os

# One BLAS thread in every fleet process. Flower's Simulation Engine evaluates on a server thread
# while Ray starts its actors; with OpenBLAS's own thread pool the server thread's first large
# matmul (the twin's conv on ~1000 held-out windows) was seen spinning in exec_blas for 14+
# minutes at 100 % CPU (py-spy), the "hang" of a second simulation in one session. Set before
# numpy loads (the CLI imports this package first); Ray's workers inherit it.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_v, "1")

# Ray warns on every start about a future change of its GPU variable handling, which says
# nothing about a fleet run (no GPUs are asked for).
_os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


# Flower warnings that every fleet run triggers on purpose: evaluation is the server's own
# (fraction_evaluate 0), and the Simulation Engine is started from Python (run_simulation).
_EXPECTED = ("fraction_evaluate is set to 0.0", "The `run_simulation` function is deprecated")


def _unexpected(record) -> bool:
    msg = record.getMessage()
    return not any(e in msg for e in _EXPECTED)


def quiet_flower(quiet: bool = True) -> None:
    """Flower's own INFO lines (round banners, sampled nodes, metric records: what the fleet's
    progress lines say already) and the two warnings every fleet run triggers on purpose
    (_EXPECTED) hidden, or shown again with quiet=False; other warnings and errors always print.
    (TensorFlow's start-up notes still print: Flower's Ray transport imports it.)"""
    import logging

    log = logging.getLogger("flwr")
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    for h in log.handlers:
        if quiet and _unexpected not in h.filters:
            h.addFilter(_unexpected)
        elif not quiet:
            h.removeFilter(_unexpected)
