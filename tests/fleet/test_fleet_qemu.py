"""One fleet client on the emulated Cortex-M3 board through mpremote (docs/fleet.md §7).

The qemu firmware of tests/qemu/test_qemu.py (C module, single-precision floats) boots; mpremote
copies firmware/fleet.py, firmware/fleet_round.py, the model, the global state and the board's
windows onto its LittleFS and runs two rounds (the second with the error-feedback memory the
first left in fleet.mem). The uploads are copied back and must equal the numpy twin's bytes:
the device-side clip / top-k / int8 / noise on the MCU float32 = the twin. Then the same board
answers a refit query (firmware/fleet_refit.py + refit_quant.py, docs/fleet-refit.md §7) under the
global state: its 12-bit quantized statistics equal the twin's bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest


from tests.support import tinymodels
from tests.support.qemuboard import CLASSES, build_firmware, mpremote as _mpremote

from edgetune.device import emulate
from edgetune.fleet import client, compress, refit_quant, refit_stats, update
from edgetune.format.modelfile import write_etm
from edgetune.twin.training import Trainer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_qemu_board_fleet_rounds_equal_the_twin(tmp_path):
    etm = write_etm(tinymodels.app_model(window=16, classes=CLASSES))
    firmware = build_firmware(etm)
    rng = np.random.default_rng(5)
    t = Trainer(etm)
    lay = update.layout(t.model, t.scheme)
    g = update.apply(lay, t.state_bytes(), (lay.per_param_scale() * rng.normal(0, 2, lay.size)).astype(np.float32))
    n_in = t.model.input_tensor.size
    x = rng.integers(-128, 128, (24, n_in)).astype(np.int8)
    y = rng.integers(0, len(CLASSES), 24)
    order = client.order(24, 2, 3)
    k = max(1, lay.size // 8)
    segs, scales = lay.to_device()
    cfg = {"segs": segs, "scales": scales, "lr": 0.05, "clip": 0.5, "k": k, "sigma": 0.2, "seed": 99,
           "n_in": n_in, "order": [int(i) for i in order]}
    tr = Trainer(etm)
    tr.load_state(g)
    centre = rng.integers(-30, 90, refit_stats.dims(tr)[0])
    files = {"model.etm": etm, "global.bin": g, "windows.bin": x.tobytes(), "labels.bin": y.astype(np.uint8).tobytes(),
             "round.json": json.dumps(cfg).encode(), "quant.bin": bytes([12]) + centre.astype("<i2").tobytes()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    args = ["exec", "import qemufs"]
    for name in ("fleet.py", "fleet_round.py", "fleet_refit.py", "refit_quant.py"):
        args += ["+", "cp", str(REPO / "firmware" / name), f":{name}"]
    for name in files:
        args += ["+", "cp", str(tmp_path / name), f":{name}"]
    with emulate.QemuBoard(firmware) as board:
        _mpremote(board.pty, *args, timeout=300)
        out1 = _mpremote(board.pty, "exec", "import fleet_round", "+", "cp", ":wire.bin", str(tmp_path / "w1.bin"),
                         timeout=600)
        out2 = _mpremote(board.pty, "exec", "import fleet_round", "+", "cp", ":wire.bin", str(tmp_path / "w2.bin"),
                         "+", "exec", "import sys; print(sys.platform)", timeout=600)
        out3 = _mpremote(board.pty, "exec", "import fleet_refit", "+", "cp", ":stats.bin", str(tmp_path / "stats.bin"),
                         timeout=600)
    assert "loss" in out1 and "loss" in out2 and "qemu" in out2 and "stats" in out3
    want = refit_quant.quantize(refit_stats.client_stats(tr, x, y), centre, 12)
    assert (tmp_path / "stats.bin").read_bytes() == want, "the qemu board's quantized refit statistics"
    comp = compress.Compressor(lay.size, cfg["clip"], k, cfg["sigma"], cfg["seed"])
    path = str(tmp_path / "model.etm")
    w1, _ = client.twin_round(path, g, x, y, order, cfg["lr"], comp)
    w2, _ = client.twin_round(path, g, x, y, order, cfg["lr"], comp)
    assert (tmp_path / "w1.bin").read_bytes() == w1
    assert (tmp_path / "w2.bin").read_bytes() == w2
    assert w1 != w2  # the second round carried the error-feedback memory
