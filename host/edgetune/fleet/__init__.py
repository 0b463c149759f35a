"""Fleet learning on Flower (docs/fleet.md): boards fine-tune the scheme's parameters locally and
send clipped, top-k sparsified, int8-quantized (optionally noised) updates; the server averages
them with Flower's FedAvg (optionally under its central DP wrapper with fixed clipping).

One concept per module: `update` (the update in real units, apply to int8 + residual state),
`compress` (the device-side clip / top-k / int8 / noise and the wire format, numpy twin of
firmware/fleet.py), `data` (clients by person and arm), `accountant` (RDP of the Gaussian
mechanism), `client` (the ClientApp), `server` (strategy and ServerApp), `simulate` (Simulation
Engine run and the centralized baseline), `leakage` (gradient-leakage attacks), `deploy`
(SuperLink / SuperNode processes), `report` (JSON and PNG), `cli` (`edgetune fleet`).
"""
