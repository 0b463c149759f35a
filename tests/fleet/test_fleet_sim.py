"""`edgetune fleet simulate` through Flower's Simulation Engine (Ray, real ServerApp/ClientApp
processes' code paths), the leakage check and the accountant (docs/fleet.md).

Short runs only (2 rounds); the 20-round / 112-client numbers are bench/fleet.py's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.fleet import client, leakage
from edgetune.fleet.accountant import accountant, noise_for
from edgetune.fleet.data import fleet_data
from edgetune.fleet.simulate import _k

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_model() -> Path:
    from tests.support import deviceapp

    return deviceapp.demo.ensure_model(REPO / "build" / "demo")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgetune.cli", "fleet", "simulate", *args], capture_output=True,
                          text=True, timeout=900, cwd=REPO)


def test_simulate_two_rounds_compressed_with_central_dp(demo_model, tmp_path):
    """One Simulation Engine run (two Ray runs in one session hung here): 16 clients, 2 rounds,
    the device compression (>= 10x fewer bytes) and Flower's central-DP wrapper with our
    accountant (epsilon per round, at most the target). Learning itself: bench/fleet.py."""
    out = tmp_path / "dp.json"
    r = _run(["--model", str(demo_model), "--rounds", "2", "--dp-epsilon", "8", "--quiet", "--out", str(out)])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["clients"] == 16 and res["rounds"] == 2 and len(res["global_acc"]) == 3
    assert res["bytes_up_sent"] * 10 <= res["bytes_up_dense"]
    assert res["bytes_per_round"] == [16 * (12 + 3 * res["k"])] * 2
    eps = res["epsilon_per_round"]
    assert eps[0] == 0 and 0 < eps[1] < eps[2] <= 8.0 and res["delta"] == 1e-5
    assert res["noise_multiplier"] == noise_for(8.0, 2)
    assert (tmp_path / "dp.png").stat().st_size > 10_000


def test_simulate_twice_gives_the_same_global_state(demo_model, tmp_path):
    """A non-DP Flower run is bit-reproducible: two Simulation Engine runs (each its own process,
    so Ray, the node ids and the replies' arrival order are new) with the same seed end in the
    same global state bytes after every round (server.py aggregates in a canonical order; the
    clients' orders, the device noise and the error-feedback memory are seeded per partition).
    Seeded device noise on, so its PRNG is covered too."""
    args = ["--model", str(demo_model), "--rounds", "2", "--sigma", "0.25", "--seed", "1", "--quiet"]
    res = []
    for i in (1, 2):
        out = tmp_path / f"run{i}.json"
        r = _run([*args, "--out", str(out)])
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        res.append(json.loads(out.read_text()))
    a, b = res
    _, t, _ = client._model(str(demo_model))
    t.reset()
    assert a["state"] == b["state"] and bytes.fromhex(a["state"]) != t.state_bytes()
    assert a["state_sha256_per_round"] == b["state_sha256_per_round"] and len(set(a["state_sha256_per_round"])) == 2
    assert a["global_acc"] == b["global_acc"] and a["loss_per_round"] == b["loss_per_round"]


def test_bad_arguments_are_refused(tmp_path):
    for args, word in ((["--rounds", "0"], "rounds"), (["--topk", "2"], "topk"), (["--model", str(tmp_path / "no.etm")], "make demo")):
        r = _run([*args, "--quiet", "--out", str(tmp_path / "x.json")])
        assert r.returncode == 2 and word in r.stderr, r.stderr


def test_accountant_against_the_gaussian_mechanism():
    """One release: RDP's epsilon is an upper bound of the exact (analytic) Gaussian epsilon and
    close to it; releases compose; the noise for a target epsilon meets it."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    from edgetune.fleet.accountant import gaussian_delta as exact_delta  # checked below by integration

    for z in (0.8, 1.5, 4.0):
        a = accountant(10)
        a.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=10, population_size=10))
        eps = a.get_epsilon(1e-5)
        assert exact_delta(eps, z) <= 1e-5 * 1.001  # the reported epsilon is valid
        assert exact_delta(eps * 0.7, z) > 1e-5  # and not loose by more than 30 %
    a = accountant(10)
    a.compose(GaussianPrivacyEvent(noise_multiplier=2.0, sample_size=10, population_size=10), 5)
    b = accountant(10)
    for _ in range(5):
        b.compose(GaussianPrivacyEvent(noise_multiplier=2.0, sample_size=10, population_size=10))
    assert a.get_epsilon(1e-5) == pytest.approx(b.get_epsilon(1e-5)) and b.num_releases == 5
    z = noise_for(8.0, 20)
    c = accountant(10)
    c.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=10, population_size=10), 20)
    assert 7.9 < c.get_epsilon(1e-5) <= 8.0


def _hockey_stick(eps: float, z: float) -> float:
    """δ(ε) of N(0, z²) against N(1, z²) by numerical integration: ∫ max(0, p - e^ε q)."""
    x = np.linspace(-60 * z - 2, 60 * z + 2, 2_000_001)
    p = np.exp(-x * x / (2 * z * z))
    q = np.exp(-(x - 1) ** 2 / (2 * z * z))
    return float(np.trapezoid(np.maximum(0.0, p - math.exp(eps) * q), x) / (z * math.sqrt(2 * math.pi)))


@pytest.mark.parametrize("eps,z", [(8.0, 0.601), (8.0, 1.2), (1.0, 3.731), (0.5, 2.0), (3.0, 0.9)])
def test_exact_gaussian_delta_against_integration(eps, z):
    """accountant.gaussian_delta (the closed form the refit's one DP release is calibrated with)
    equals the hockey-stick divergence of the two Gaussians, integrated numerically."""
    from edgetune.fleet.accountant import gaussian_delta

    assert gaussian_delta(eps, z) == pytest.approx(_hockey_stick(eps, z), rel=1e-4, abs=1e-12)


def test_exact_gaussian_calibration():
    """One release at ε 8, δ 1e-5: the exact calibration's z meets δ and 0.001 less does not;
    it is below the RDP bound's z (same guarantee, less noise); gaussian_epsilon_for inverts it;
    bad arguments are ValueErrors."""
    from edgetune.fleet.accountant import gaussian_delta, gaussian_epsilon_for, gaussian_noise_for

    z = gaussian_noise_for(8.0, 1e-5)
    assert gaussian_delta(8.0, z) <= 1e-5 < gaussian_delta(8.0, z - 0.001)
    assert z == 0.601 and z < noise_for(8.0, 1, 1e-5) == 0.638
    assert 7.98 < gaussian_epsilon_for(z, 1e-5) <= 8.0
    assert gaussian_epsilon_for(noise_for(8.0, 1, 1e-5), 1e-5) < 7.5  # RDP's z is over-calibrated
    for bad in ((0.0, 1e-5), (8.0, 0.0), (8.0, 1.0)):
        with pytest.raises(ValueError):
            gaussian_noise_for(*bad)


def test_leakage_attack_works_and_the_fleet_setting_stops_it(demo_model):
    path = str(demo_model)
    _, t, lay = client._model(path)
    t.reset()
    fd = fleet_data(t.model.meta)
    res = leakage.run(path, fd, t.state_bytes(), lr=0.01, clip=8.0, k=_k(lay, 0.05), sigma=0.25,
                      one_sample_trials=60, repeats=2)
    one = res["one-sample"]
    assert one["label_recovery"] >= 0.95 and one["feature_cosine"] >= 0.99, one
    for name in ("top-k", "clipped+noised"):
        assert res[name]["label_recovery"] <= res["chance"] + 0.10, (name, res[name])
        assert res[name]["feature_cosine"] <= 0.5, (name, res[name])
    assert res["local-epoch"]["feature_cosine"] < one["feature_cosine"]


def test_model_cache_gives_every_caller_a_fresh_trainer(tmp_path):
    """client._model caches the file's bytes and layout, not a Trainer: a caller that trains
    must not change the start state the next caller gets (it did: one shared Trainer)."""
    from tests.support import tinymodels
    from edgetune.format.modelfile import write_etm

    m = tinymodels.app_model(window=16)
    p = tmp_path / "m.etm"
    p.write_bytes(write_etm(m))
    buf, t1, lay = client._model(str(p))
    flashed = t1.state_bytes()
    rng = np.random.default_rng(0)
    for _ in range(5):
        t1.step(rng.integers(-128, 128, t1.model.input_tensor.size).astype(np.int8), int(rng.integers(0, 3)), 0.1)
    assert t1.state_bytes() != flashed
    buf2, t2, lay2 = client._model(str(p))
    assert t2 is not t1 and buf2 == buf and lay2 is lay
    assert t2.state_bytes() == flashed


def test_simulate_refit_first_starts_from_the_centralized_refit(demo_model, tmp_path):
    """`--refit-l2`: one Flower refit query round first (client.app answers it), the SGD round
    from the refit's global state; the round-0 accuracy is that of the centralized refit on the
    pooled windows (bit-equal states, docs/fleet-refit.md), not the flashed model's."""
    from edgetune.fleet import refit_stats as rs

    out = tmp_path / "rf.json"
    r = _run(["--model", str(demo_model), "--rounds", "1", "--refit-l2", "0.001", "--refit-alpha", "1",
              "--centralized", "--quiet", "--out", str(out)])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    _, t, _ = client._model(str(demo_model))
    K, C = rs.dims(t)
    assert res["refit_bytes_up"] == [4 * rs.upload_values(K, C)] * 16
    fd = fleet_data(t.model.meta)
    flashed = float(t.evaluate(fd.eval_x, fd.eval_y)[1])
    x, y = fd.pooled()
    t.refit(x, y, 0.001, 1.0)
    refit = float(t.evaluate(fd.eval_x, fd.eval_y)[1])
    assert res["global_acc"][0] == res["centralized_curve"][0] == refit != flashed
    assert len(res["global_acc"]) == 2 and res["bytes_up_sent"] * 10 <= res["bytes_up_dense"]
    r = _run(["--refit-alpha", "2", "--refit-l2", "1", "--quiet", "--out", str(tmp_path / "bad.json")])
    assert r.returncode == 2 and "refit_alpha" in r.stderr and not (tmp_path / "bad.json").exists()
