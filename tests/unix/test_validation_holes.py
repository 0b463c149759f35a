"""Malformed models and weights files that passed validation before (CRC valid, so only the
parser's own checks stand), docs/reliability.md §2: each must be refused with a ValueError by
the C module (unix port), the pure-Python fallback edgetune_py and the host's numpy reader/twin.

- per-channel weight scales along another axis than the output channels (training read one scale
  per output channel past the end of the scales: ASan heap-buffer-overflow in train.c scale_of)
- per-channel bias scales, fewer than output channels (the same overread)
- an input-gradient accumulator bound that ignored |g| = 32768 and a flashed -128 weight
  (32767 * 127 * fan < 2^31 <= 32768 * 128 * fan: UBSan signed overflow in the FC grad kernel)
- more than 32767 trained output channels (the int16 channel map wrapped: channels >= 32768
  never trained in C while the twin trained them)
- a depthwise in_c * depth_multiplier that overflowed int32 in the validator (UBSan)
- NaN / inf momentum in a trained-weights file (NaN froze parameters, +inf pinned weights at 127)
- an output scale of 3.4e38 (train/evaluate returned inf/NaN)
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from edgetune.format.modelfile import read_etm, write_etm
from edgetune.format.scheme import Scheme
from edgetune.twin.training import Trainer

from tests.support.relhelp import REPO
from tests.support.tinymodels import chain


def _replace_tensor(m, idx, **kw):
    tensors = list(m.tensors)
    tensors[idx] = dataclasses.replace(tensors[idx], **kw)
    return dataclasses.replace(m, tensors=tensors)


def _conv_model():
    return chain([("conv", 1, 3, 4, 1, False, True), ("mean",), ("fc", 3, False)], (1, 1, 8, 2), seed=5)


def _weight_axis():
    m = _conv_model()
    w = m.layers[0].weight
    t = m.tensors[w]  # (4, 1, 3, 2) per channel along axis 0; along axis 1 it has 1 scale
    return write_etm(_replace_tensor(m, w, quant_axis=1, scales=t.scales[:1].copy()))


def _bias_axis():
    m = _conv_model()
    b = m.layers[0].bias
    t = m.tensors[b]  # (4, 1, 1, 1)
    return write_etm(_replace_tensor(m, b, quant_axis=1, scales=t.scales[:1].copy()))


def _output_scale():
    m = _conv_model()
    return write_etm(_replace_tensor(m, m.output, scale=3.4e38))


def _depthwise_overflow():
    m = chain([("dw", 1, 1, 1, False, True)], (1, 1, 1, 1), seed=1)
    m = _replace_tensor(m, 0, shape=(1, 1, 1, 65535))
    layers = list(m.layers)
    layers[0] = dataclasses.replace(layers[0], depth_multiplier=65535)
    return write_etm(dataclasses.replace(m, layers=layers))


def _bound_513():
    # layer 1 (FC 513) above the trained layer 0: 32767 * 127 * 513 < 2^31 <= 32768 * 128 * 513
    return write_etm(chain([("fc", 4, False), ("fc", 513, False), ("fc", 3, False)], (1, 1, 1, 4), seed=2))


def _wide():
    return write_etm(chain([("fc", 32768, False), ("fc", 3, False)], (1, 1, 1, 1), seed=3))


MODELS = {  # name: (bytes, scheme for Model(), where the C message must say)
    "weight_axis": (_weight_axis, None, "axis"),
    "bias_axis": (_bias_axis, None, "per-channel scales"),
    "output_scale": (_output_scale, None, "output scale"),
    "depthwise_overflow": (_depthwise_overflow, None, "depth_multiplier"),
    "bound_513": (_bound_513, {"n_bias": 0, "weights": [(0, 1)]}, "overflow"),
    "wide_32768": (_wide, {"n_bias": 0, "weights": [(0, 8)]}, "32767"),
}

SCRIPT = """
import sys
mod = __import__(sys.argv[1])
for name, scheme in {cases!r}:
    buf = open({d!r} + '/' + name + '.etm', 'rb').read()
    try:
        m = mod.Model(buf) if scheme is None else mod.Model(buf, scheme=scheme)
        print('R', name, 'accepted', m.train(bytes(m.info()['input_shape'][3] * m.info()['input_shape'][2]), 0))
    except Exception as e:
        print('R', name, type(e).__name__, str(e))
print('DONE')
"""


def _run(micropython, module, script, tmp_path, *args):
    path = tmp_path / "script.py"
    path.write_text(script)
    env = dict(os.environ, MICROPYPATH=str(REPO / "firmware"))
    proc = subprocess.run([str(micropython), "-X", "heapsize=16M", str(path), module, *args], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0 and "DONE" in proc.stdout, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc.stdout


@pytest.mark.parametrize("module", ["edgetune", "edgetune_py"])
def test_malformed_models_refused(micropython, tmp_path, module):
    cases = []
    for name, (make, scheme, _) in MODELS.items():
        (tmp_path / f"{name}.etm").write_bytes(make())
        cases.append((name, scheme))
    out = _run(micropython, module, SCRIPT.format(cases=cases, d=str(tmp_path)), tmp_path, module)
    got = {line.split(" ", 2)[1]: line.split(" ", 2)[2] for line in out.splitlines() if line.startswith("R ")}
    for name, (_, _, word) in MODELS.items():
        assert got[name].startswith("ValueError"), (name, got[name])
        if module == "edgetune":
            assert word in got[name], (name, got[name])


@pytest.mark.parametrize("name", [n for n in MODELS if MODELS[n][1] is None])
def test_numpy_reader_refuses(name):
    with pytest.raises(ValueError):
        read_etm(MODELS[name][0]())


def test_twin_refuses_bound_and_wide():
    with pytest.raises(ValueError, match="overflow"):
        Scheme.build(read_etm(_bound_513()), 0, {0: 1})
    m = read_etm(_wide())
    with pytest.raises(ValueError, match="32767"):
        Trainer(m, Scheme.build(m, 0, {0: 0.125}))


# -------------------------------------------------------------------- momentum in weights files

STATE_SCRIPT = """
import sys
mod = __import__(sys.argv[1])
buf = open({etm!r}, 'rb').read()
m = mod.Model(buf, scheme={{'n_bias': 1}}, momentum=0.5)
x = bytes(range(16))
m.train(x, 1)
s = m.state()
open({d!r} + '/good.etw', 'wb').write(s)
for name in {names!r}:
    bad = open({d!r} + '/' + name + '.etw', 'rb').read()
    try:
        m.load_state(bad)
        print('R', name, 'accepted')
    except ValueError as e:
        print('R', name, 'ValueError', e, m.state() == s)
print('DONE')
"""


def _patched(state: bytes, off: int, value: float) -> bytes:
    b = bytearray(state)
    b[off:off + 4] = struct.pack("<f", value)
    b[12:16] = struct.pack("<I", zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return bytes(b)


@pytest.mark.parametrize("module", ["edgetune", "edgetune_py"])
def test_non_finite_momentum_refused(micropython, tmp_path, module):
    m = chain([("fc", 3, False)], (1, 1, 4, 4), seed=4)
    etm = tmp_path / "m.etm"
    etm.write_bytes(write_etm(m))
    # first run: a valid state. The scheme trains the classifier's 3 biases and (always) its 3 x 16
    # weights: bias int32 x 3, channel map a4(int16 x 3), weights 48, residuals a4(int16 x 51),
    # then the momentum block (float32 x 51)
    names = ["nan", "inf", "ninf"]
    for n in names:  # placeholders so the first run finds files
        (tmp_path / f"{n}.etw").write_bytes(b"")
    _run(micropython, module, STATE_SCRIPT.format(etm=str(etm), d=str(tmp_path), names=[]), tmp_path, module)
    good = (tmp_path / "good.etw").read_bytes()
    off = 32 + 12 + 8 + 48 + 104
    assert struct.unpack_from("<f", good, off)[0] != 0.0  # the first momentum value of the step
    for n, v in (("nan", math.nan), ("inf", math.inf), ("ninf", -math.inf)):
        (tmp_path / f"{n}.etw").write_bytes(_patched(good, off, v))
    out = _run(micropython, module, STATE_SCRIPT.format(etm=str(etm), d=str(tmp_path), names=names), tmp_path,
               module)
    got = {line.split(" ", 2)[1]: line.split(" ", 2)[2] for line in out.splitlines() if line.startswith("R ")}
    for n in names:
        assert got[n].startswith("ValueError") and "momentum" in got[n] and got[n].endswith("True"), (n, got[n])
    # the twin: the same file refused, the good one accepted
    t = Trainer(m, Scheme.build(m, 1), momentum=0.5)
    t.load_state(good)
    for n in names:
        with pytest.raises(ValueError, match="momentum"):
            t.load_state((tmp_path / f"{n}.etw").read_bytes())
    assert np.isfinite(struct.unpack_from("<f", good, off)[0])
