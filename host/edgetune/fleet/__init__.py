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
`refit_stats` / `refit_dp` (the refit mode's exact and differentially private statistics),
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
