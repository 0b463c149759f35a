"""firmware/fleet.py on the real unix-port MicroPython (C module) = the numpy twin, bit for bit.

Random trainable models (tests.support.trainingcases.train_model) with the default scheme (biases of
every weight layer + the classifier's weights, so both int32 and int8 segments), two of them
with a scheme that also trains half of a hidden layer's channels (stored in the .etm):
- `fleet.apply` of a random real-unit global update to the flashed state gives the twin's bytes
  (update.apply), and `m.load_state` accepts them;
- after 6 local C-module training steps, `fleet.delta` equals update.delta, and two rounds of
  `Compressor.compress` (clip active or not, noise on or off, error feedback carried over) give
  the twin's wire bytes;
- bad arguments raise ValueError on both sides.
All models run in one MicroPython process.
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from edgetune.fleet import compress, update
from edgetune.format.modelfile import read_etm, write_etm
from edgetune.format.scheme import Scheme, weight_layers
from edgetune.twin.training import Trainer
from tests.support.trainingcases import train_model

SEEDS = range(10)
STEPS = 6


def _case(seed: int) -> dict:
    rng = np.random.default_rng([907, seed])
    m = train_model(seed)
    if seed % 5 == 4:  # a hidden layer's channels too
        wl = weight_layers(m)
        if len(wl) >= 2:
            sch = Scheme.build(m, len(wl), {wl[-2]: Fraction(1, 2)})
            m = read_etm(write_etm(m))
            m.scheme = sch.encode()
    buf = write_etm(m)
    t = Trainer(buf)
    lay = update.layout(t.model, t.scheme)
    g0 = t.state_bytes()
    v0 = (lay.per_param_scale() * rng.normal(0, 3, lay.size)).astype(np.float32)
    g1 = update.apply(lay, g0, v0)
    t.load_state(g1)
    n_in = t.model.input_tensor.size
    n_cls = t.model.output_tensor.size
    xs = rng.integers(-128, 128, (STEPS, n_in)).astype(np.int8)
    ys = rng.integers(0, n_cls, STEPS)
    lrs = [0.05] * STEPS
    for x, y in zip(xs, ys):
        t.step(x, int(y), 0.05, True)
    local = t.state_bytes()
    u = update.delta(lay, local, g1)
    norm = float(np.sqrt(np.sum(u.astype(np.float64) ** 2)))
    clip = norm * (0.5 if seed % 2 else 4.0)  # odd seeds: the clip bites
    clip = clip if clip > 0 else 1.0
    k = max(1, lay.size // (3 + seed % 4))
    sigma = 0.3 if seed % 3 == 0 else 0.0
    c = compress.Compressor(lay.size, clip, k, sigma, seed + 11)
    w1 = c.compress(u)
    u2 = (u * np.float32(0.5)).astype(np.float32)
    w2 = c.compress(u2)
    segs, scales = lay.to_device()
    return {"buf": buf, "segs": segs, "scales": scales, "v0": v0, "g1": g1, "xs": xs, "ys": ys, "lrs": lrs,
            "u": u, "clip": clip, "k": k, "sigma": sigma, "seed": seed + 11, "w1": w1, "w2": w2}


DEVICE = r"""
import edgetune, fleet, struct, ubinascii
from array import array
def hx(b):
    return ubinascii.hexlify(b).decode()
for c in CASES:
    m = edgetune.Model(ubinascii.unhexlify(c["buf"]))
    lay = fleet.Layout(c["segs"], c["scales"])
    g0 = m.state()
    g1 = fleet.apply(lay, g0, array("f", c["v0"]))
    m.load_state(g1)
    xs = ubinascii.unhexlify(c["xs"])
    n = len(xs) // len(c["ys"])
    for i in range(len(c["ys"])):
        m.train(xs[i * n:(i + 1) * n], c["ys"][i], 0.05, True)
    u = fleet.delta(lay, m.state(), g1)
    comp = fleet.Compressor(lay.size, c["clip"], c["k"], c["sigma"], c["seed"])
    w1 = comp.compress(u)
    u2 = array("f", [x * 0.5 for x in u])
    w2 = comp.compress(u2)
    errs = []
    for bad in (lambda: fleet.apply(lay, g1, array("f", [0.0] * (lay.size + 1))),
                lambda: fleet.apply(lay, g1, array("f", [float("nan")] * lay.size)),
                lambda: fleet.Compressor(lay.size, 0.0, 1),
                lambda: fleet.Compressor(lay.size, 1.0, lay.size + 1),
                lambda: comp.compress(array("f", [0.0] * (lay.size - 1)))):
        try:
            bad()
            errs.append("none")
        except ValueError:
            errs.append("ValueError")
    print("R", hx(g1), hx(bytes(u)), hx(w1), hx(w2), ",".join(errs))
"""


def _device_literal(cases: list[dict]) -> str:
    out = []
    for c in cases:
        out.append({"buf": c["buf"].hex(), "segs": c["segs"], "scales": c["scales"],
                    "v0": [float(x) for x in c["v0"]], "xs": c["xs"].tobytes().hex(), "ys": [int(y) for y in c["ys"]],
                    "clip": float(c["clip"]), "k": c["k"], "sigma": c["sigma"], "seed": c["seed"]})
    return "CASES = " + json.dumps(out) + "\n"


def test_fleet_device_matches_twin(run_mpy, repo_root):
    cases = [_case(s) for s in SEEDS]
    assert any(c["sigma"] > 0 for c in cases)
    assert any(s.kind == "w" and s.per > 1 for c in cases for s in update.layout(read_etm(c["buf"])).segments)
    out = run_mpy(_device_literal(cases) + DEVICE, timeout=300, extra_path=[str(repo_root / "firmware")])
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("R ")]
    assert len(rows) == len(cases)
    for c, r in zip(cases, rows):
        _, g1, u, w1, w2, errs = r
        assert bytes.fromhex(g1) == c["g1"], f"apply differs (seed {c['seed']})"
        assert bytes.fromhex(u) == c["u"].tobytes(), f"delta differs (seed {c['seed']})"
        assert bytes.fromhex(w1) == c["w1"], f"round 1 wire differs (seed {c['seed']})"
        assert bytes.fromhex(w2) == c["w2"], f"round 2 wire (error feedback) differs (seed {c['seed']})"
        assert errs == "ValueError," * 4 + "ValueError"


def test_twin_roundtrip_and_refusals():
    """decode(compress(u)) is the sent part; e holds the rest; the clip bounds what is sent;
    malformed wire bytes are refused."""
    rng = np.random.default_rng(3)
    d = 500
    u = rng.normal(0, 1, d).astype(np.float32)
    c = compress.Compressor(d, clip=2.0, k=25)
    w = c.compress(u)
    assert len(w) == 12 + 3 * 25 and len(w) * 10 < compress.dense_bytes(d)
    dec = compress.decode(w, d)
    assert np.count_nonzero(dec) <= 25
    assert np.linalg.norm(dec) <= 2.0 * 1.01
    # sent + memory = the clipped update (up to float32 rounding)
    scale = 2.0 / np.linalg.norm(u.astype(np.float64))
    np.testing.assert_allclose(dec + c.e, u * scale, rtol=0, atol=1e-5)
    for bad in (w[:-1], b"\x02" + w[1:], w[:12] + (b"\xff\xff" * 25) + w[62:]):
        with pytest.raises(ValueError):
            compress.decode(bad, d)
    with pytest.raises(ValueError):
        compress.decode(w, d + 1)
    with pytest.raises(ValueError):
        compress.Compressor(d, clip=-1.0, k=3)
    with pytest.raises(ValueError):
        compress.Compressor(70000, clip=1.0, k=3)
