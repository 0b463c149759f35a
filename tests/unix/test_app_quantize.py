"""The device app quantizes raw sensor samples with `model.quantize` (firmware/collect.py
Quantizer): with the C module and with edgetune_py the windows it stores are exactly the host
twin's `quantize_input` of the same samples, ties included (on the real unix port). Without a
model (tag N) it falls back to Python floats, which differ at ties."""

from __future__ import annotations

import numpy as np

from edgetune.format.modelfile import read_etm
from edgetune.twin.quantize_input import quantize_input

from tests.support.relhelp import REPO, reference_etm, run_script

SCRIPT = r"""
import binascii, collect, edgetune, edgetune_py, core
buf = open({etm!r}, 'rb').read()
riq = core.metadata(buf)['raw_input_quant']
rows = {rows!r}
for tag, mod in (('C', edgetune), ('P', edgetune_py), ('N', None)):
    q = collect.Quantizer(riq['scale'], riq['zero_point'], mod.Model(buf) if tag != 'N' else None)
    w = collect.Windower(q, len(rows), len(rows))
    for r in rows:
        win = w.push(r)
    print(tag, binascii.hexlify(win).decode())
"""


def test_app_windows_equal_the_host_twin(tmp_path):
    etm = reference_etm()
    riq = read_etm(etm.read_bytes()).meta["raw_input_quant"]
    sc = np.asarray(riq["scale"], np.float32)
    zp = np.asarray(riq["zero_point"], np.float32)
    rng = np.random.default_rng(3)
    n = 100
    # half the samples sit exactly on a rounding tie of the float32 recipe, half are random
    k = rng.integers(-120, 120, (n, 6)).astype(np.float32) + np.float32(0.5)
    ties = ((k - zp) * sc).astype(np.float32)
    raw = rng.normal(0, 2, (n, 6)).astype(np.float32)
    raw[::2] = ties[::2]
    rows = [[float(v) for v in r] for r in raw]
    want = quantize_input(raw.reshape(-1), sc, zp).astype(np.int8).tobytes().hex()
    proc = run_script(SCRIPT.format(etm=str(etm), rows=rows), tmp_path, extra_path=(str(REPO / "firmware"),))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = dict(line.split() for line in proc.stdout.splitlines())
    assert got["C"] == want
    assert got["P"] == want
    # the samples really probe ties: the app's old path (no model: Python's double arithmetic
    # and round) gives other bytes for some of them (142 of 600 here)
    assert got["N"] != want
