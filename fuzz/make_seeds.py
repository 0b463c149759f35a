"""Seed corpora for the libFuzzer targets, from real exported files (fuzz/README.md).

    python -m fuzz.make_seeds OUT_DIR        -> OUT_DIR/{etm,scheme,state}/*

- etm: every exported model found under build/ (the demo's reference model, bench/learning.py's
  models, the converted test models), fuzz/base.etm, small hand-built chains of every op (with
  and without a stored scheme) from tests/support/tinymodels.py.
- scheme: the .etm scheme sections scheme.py encodes for fuzz/base.etm (bias-only, channel
  slices 1, 1/2, 1/4, 1/8, explicit channel lists), each prefixed by mode byte 0; and built
  schemes (mode 1: n_bias, ratio denominators).
- state: trained-weights files the numpy twin (host/edgetune/twin/training.py, the same bytes as
  m.save) writes for fuzz/base.etm after a few training steps, for every scheme/momentum mode
  the target decodes (see fuzz/fuzz_state.c), prefixed by the mode byte (bit 7 set and clear).

Also `python -m fuzz.make_seeds --base` rewrites fuzz/base.etm (only when the format changes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from edgetune.format.modelfile import read_etm, write_etm  # noqa: E402
from edgetune.format.scheme import Scheme, weight_layers  # noqa: E402
from edgetune.twin.training import Trainer  # noqa: E402

BASE = REPO / "fuzz" / "base.etm"
DENS = (0, 1, 2, 4)


def base_model():
    """Every op, trainable, small: conv, depthwise, max/avg pool, conv, MEAN, two FCs."""
    from tests.support import tinymodels

    spec = [("conv", 1, 3, 6, 1, True, True), ("dw", 1, 3, 1, True, True), ("max", 1, 2, 2),
            ("conv", 1, 3, 8, 1, True, False), ("avg", 1, 2, 1), ("dw", 1, 2, 2, False, True), ("mean",),
            ("fc", 6, True), ("fc", 3, False)]
    return tinymodels.chain(spec, (1, 1, 16, 3), seed=11)


def state_scheme(model, mode: int) -> tuple[Scheme, float]:
    """The scheme and momentum fuzz_state.c decodes from a mode byte."""
    wl = weight_layers(model)
    d = DENS[(mode >> 4) & 3]
    weights = {i: 1 / d for i in wl[:-1]} if d else None
    return Scheme.build(model, (mode >> 1) & 7, weights), 0.5 if mode & 1 else 0.0


def etm_seeds() -> dict[str, bytes]:
    from tests.support import tinymodels

    out: dict[str, bytes] = {"base": BASE.read_bytes()}
    for p in sorted((REPO / "build").glob("**/*.etm")):
        if "fuzz" in p.parts:
            continue
        out[f"real_{len(out):03d}_{p.parent.name}"] = p.read_bytes()
    specs = [
        [("conv", 1, 3, 4, 1, True, True), ("fc", 3, False)],
        [("dw", 3, 3, 2, True, False), ("mean",), ("fc", 2, False)],
        [("max", 2, 2, 2), ("avg", 1, 2, 1), ("fc", 4, True), ("fc", 2, False)],
        [("conv", 2, 2, 3, 2, False, False), ("mean",)],
    ]
    for k, spec in enumerate(specs):
        m = tinymodels.chain(spec, (1, 4, 6, 2), seed=k)
        out[f"chain{k}"] = write_etm(m)
        try:
            m.scheme = Scheme.build(m, 1, {weight_layers(m)[0]: 1 / 2}).encode()
            out[f"chain{k}_scheme"] = write_etm(m)
        except (ValueError, IndexError):
            pass
    out["app_model"] = write_etm(tinymodels.app_model())
    return out


def scheme_seeds() -> dict[str, bytes]:
    m = read_etm(BASE.read_bytes())
    wl = weight_layers(m)
    out: dict[str, bytes] = {}
    for n_bias in range(len(wl) + 1):
        out[f"bias{n_bias}"] = b"\0" + Scheme.build(m, n_bias).encode()
    for d in (1, 2, 4, 8):
        for layer in wl[:-1]:
            try:
                out[f"w{layer}_d{d}"] = b"\0" + Scheme.build(m, 1, {layer: 1 / d}).encode()
            except ValueError:
                pass
    out["list"] = b"\0" + Scheme.build(m, 2, {wl[0]: [0, 2, 5], wl[-2]: [1]}).encode()
    out["none"] = b"\0"
    for n_bias in range(3):
        for d in (0, 1, 2, 4, 8):
            den = bytes(d if i in wl[:-1] else 0 for i in range(len(m.layers)))
            out[f"build_b{n_bias}_d{d}"] = bytes([1, n_bias]) + den
            out[f"build_b{n_bias}_d{d}_mom"] = bytes([3, n_bias]) + den
    return out


def state_seeds() -> dict[str, bytes]:
    etm = BASE.read_bytes()
    m = read_etm(etm)
    rng = np.random.default_rng(5)
    xs = rng.integers(-128, 128, (6, m.input_tensor.size)).astype(np.int8)
    out: dict[str, bytes] = {}
    for mode in (0x00, 0x01, 0x04, 0x05, 0x16, 0x17, 0x24, 0x35, 0x3F):
        try:
            scheme, mom = state_scheme(m, mode)
            tw = Trainer(etm, scheme=scheme, momentum=mom)
        except ValueError:
            continue
        for i, x in enumerate(xs):
            tw.step(x, i % m.output_tensor.size, 0.2)
        blob = tw.state_bytes()
        out[f"mode{mode:02x}"] = bytes([mode]) + blob
        out[f"mode{mode | 0x80:02x}"] = bytes([mode | 0x80]) + blob
    return out


def main(argv: list[str]) -> int:
    if argv == ["--base"]:
        BASE.write_bytes(write_etm(base_model()))
        print(f"wrote {BASE}")
        return 0
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    for target, seeds in (("etm", etm_seeds()), ("scheme", scheme_seeds()), ("state", state_seeds())):
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        for name, blob in seeds.items():
            (d / name).write_bytes(blob)
        print(f"{target}: {len(seeds)} seeds in {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
