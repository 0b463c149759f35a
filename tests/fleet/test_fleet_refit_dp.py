"""DP for the fleet refit mode (fleet/refit_dp.py): the calibration of its one Gaussian
mechanism and its post-processing, on random refittable models.

- without noise and without active clipping the release is the exact pooled statistics
  (refit_stats.aggregate), and the solved state is the exact mode's bit for bit, with and
  without a public centre;
- adding or removing one board (board unit) or one window (window unit) moves the released
  vector (w_cnt cnt, w_G G / R^2, w_B B / R) by at most `sensitivity(n_max, weights)`, for random
  windows at the clip and random centres; removing one raw sample (sample unit: every window
  make_windows cut around it) by at most windows_per_sample times that, and by more than
  windows_per_sample - 1 times it for near-equal overlapping windows;
- the noise added has the calibrated standard deviation z * sensitivity / w per block;
- bad settings are a ValueError naming the setting.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.twin import refit as rf
from edgetune.fleet import refit_dp, refit_stats as rs
from edgetune.format.modelfile import write_etm
from edgetune.twin.training import Trainer


from tests.support.trainingcases import refittable_models


def _boards(model, rng, k=4):
    t = Trainer(write_etm(model))
    n_in, n_cls = model.input_tensor.size, model.output_tensor.size
    xs = [rng.integers(-128, 128, (int(rng.integers(3, 12)), n_in)).astype(np.int8) for _ in range(k)]
    ys = [rng.integers(0, n_cls, len(x)).astype(np.int64) for x in xs]
    return t, xs, ys


@pytest.mark.parametrize("seed,model", refittable_models(5))
def test_no_noise_no_clip_is_the_exact_mode(seed, model):
    rng = np.random.default_rng([5, seed])
    t, xs, ys = _boards(model, rng)
    parts = [refit_dp.clipped_stats(t, x, y, 1e9, 1000) for x, y in zip(xs, ys)]
    assert all(p["clipped"] == 0 for p in parts)
    st = refit_dp.release(parts, 1e9, 1000, 0.0, rng)
    want = rs.aggregate([rs.client_stats(t, x, y) for x, y in zip(xs, ys)])
    for key in ("n", "cnt", "s1", "g", "b"):
        assert np.array_equal(st[key], want[key]), key
    assert refit_dp.global_state(t, st, 0.1, 1.0) == rs.global_state(t, want, 0.1, 1.0)


@pytest.mark.parametrize("seed,model", refittable_models(5))
def test_centred_no_noise_no_clip_is_the_exact_mode(seed, model):
    rng = np.random.default_rng([6, seed])
    t, xs, ys = _boards(model, rng)
    K = rs.dims(t)[0]
    m = rng.uniform(-40, 200, K)  # any centre: the server moves the sums back to u exactly
    parts = [refit_dp.clipped_stats(t, x, y, 1e9, None, centre=m) for x, y in zip(xs, ys)]
    assert all(p["clipped"] == 0 for p in parts) and sum(p["windows"] for p in parts) == sum(map(len, ys))
    st = refit_dp.release(parts, 1e9, None, 0.0, rng, centre=m)
    want = rs.aggregate([rs.client_stats(t, x, y) for x, y in zip(xs, ys)])
    for key in ("n", "cnt", "s1", "g", "b"):
        assert np.array_equal(st[key], want[key]), key
    assert refit_dp.global_state(t, st, 0.1, 1.0) == rs.global_state(t, want, 0.1, 1.0)


def test_one_window_moves_the_release_by_at_most_the_window_sensitivity():
    rng = np.random.default_rng(12)
    K, C, clip, w = 12, 4, 50.0, (0.3, 0.5, 1.0)
    j, k = np.tril_indices(K)
    worst = 0.0
    for _ in range(200):
        n = int(rng.integers(2, 30))
        u = rng.uniform(0, 255, (n, K))
        y = rng.integers(0, C, n)
        m = rng.uniform(0, 150, K)
        full = refit_dp.clip_sum(u, y, C, clip, None, centre=m)
        less = refit_dp.clip_sum(u[1:], y[1:], C, clip, None, centre=m)
        assert full["windows"] == n  # the window unit keeps every window
        vec = [w[0] * (full["cnt"] - less["cnt"]), w[1] * (full["g"] - less["g"])[j, k] / clip ** 2,
               w[2] * (full["b"] - less["b"]).ravel() / clip]
        worst = max(worst, float(np.linalg.norm(np.concatenate(vec))) / refit_dp.sensitivity(None, w))
        v = u[0] - m
        assert np.linalg.norm(v * min(1.0, clip / np.linalg.norm(v))) <= clip * (1 + 1e-12)
    assert 0.5 < worst <= 1.0 + 1e-12
    assert refit_dp.sensitivity(None, w) == refit_dp.sensitivity(1, w)


@pytest.mark.parametrize("window,step", [(100, 50), (100, 30), (60, 60)])
def test_one_raw_sample_moves_the_release_by_at_most_windows_per_sample_sensitivities(window, step):
    """The sample unit: a raw sample lies in the windows make_windows cuts around it; removing it
    removes them all. The release moves by at most windows_per_sample * sensitivity (what the
    sample unit's z * windows_per_sample covers), and by more than (windows_per_sample - 1) *
    sensitivity for consecutive windows of one class pointing the same way (so a smaller
    multiplier would be wrong)."""
    from edgetune.learn.data import Recording, make_windows

    rng = np.random.default_rng([13, window, step])
    K, C, clip, w = 8, 3, 40.0, (0.3, 0.5, 1.0)
    group = refit_dp.windows_per_sample({"window": window, "step": step})
    j, k = np.tril_indices(K)
    worst = 0.0
    for trial in range(40):
        recs = [Recording(np.zeros((int(rng.integers(window, 6 * window)), 6), np.float32), int(rng.integers(C)))
                for _ in range(3)]
        wins = make_windows(recs, window, step)
        m = rng.uniform(0, 100, K)
        if trial % 2:  # near-equal windows far outside the clip: the worst case
            u = m + rng.uniform(5e3, 5.1e3) * (1 + rng.uniform(0, 1e-3, (len(wins), K)))
        else:
            u = rng.uniform(0, 255, (len(wins), K))
        full = refit_dp.clip_sum(u, wins.y, C, clip, None, centre=m)
        for r, rec in enumerate(recs):
            for i in rng.choice(len(rec.x), 5, replace=False):
                keep = ~((wins.rec == r) & (wins.start <= i) & (i < wins.start + window))
                assert (~keep).sum() <= group
                less = refit_dp.clip_sum(u[keep], wins.y[keep], C, clip, None, centre=m)
                vec = [w[0] * (full["cnt"] - less["cnt"]), w[1] * (full["g"] - less["g"])[j, k] / clip ** 2,
                       w[2] * (full["b"] - less["b"]).ravel() / clip]
                worst = max(worst, float(np.linalg.norm(np.concatenate(vec))) / refit_dp.sensitivity(None, w))
    assert group - 1 < worst <= group * (1 + 1e-9)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (0.3, 0.3, 1.0), (2.0, 0.5, 1.0)])
def test_one_board_moves_the_release_by_at_most_the_sensitivity(weights):
    rng = np.random.default_rng(11)
    K, C, clip, n_max = 12, 4, 50.0, 6
    wc, wg, wb = weights
    j, k = np.tril_indices(K)
    worst = 0.0
    for _ in range(200):
        n = int(rng.integers(1, 20))  # more windows than n_max: the board keeps n_max
        u = rng.uniform(0, 255, (n, K)) * rng.choice([0.1, 1.0, 10.0])
        y = rng.integers(0, C, n)
        p = refit_dp.clip_sum(u, y, C, clip, n_max, int(rng.integers(1 << 30)))
        assert p["windows"] == min(n, n_max)
        vec = np.concatenate([wc * p["cnt"], wg * p["g"][j, k] / clip ** 2, wb * p["b"].ravel() / clip])
        worst = max(worst, float(np.linalg.norm(vec)) / refit_dp.sensitivity(n_max, weights))
    assert 0.5 < worst <= 1.0 + 1e-12


@pytest.mark.parametrize("n_max", [4, None])
def test_noise_has_the_calibrated_std(n_max):
    K, C, clip, z = 6, 3, 10.0, 0.7
    w = (0.5, 0.25, 1.0)
    part = {"cnt": np.full(C, 1e6), "g": np.eye(K) * 1e6 * clip ** 2, "b": np.full((C, K), 1e6 * clip)}
    sd = z * refit_dp.sensitivity(n_max, w)
    rng = np.random.default_rng(3)
    bs, cs = [], []
    for _ in range(400):
        st = refit_dp.release([part], clip, n_max, z, rng, w)
        bs.append(st["b"].ravel() / clip - 1e6)
        cs.append(st["cnt"] - 1e6)
    assert np.std(bs) == pytest.approx(sd / w[2], rel=0.05)
    assert np.std(cs) == pytest.approx(sd / w[0], rel=0.08)


def test_released_scatter_is_positive_semidefinite():
    rng = np.random.default_rng(4)
    K, C = 10, 3
    u = rng.uniform(0, 200, (30, K))
    y = rng.integers(0, C, 30)
    p = refit_dp.clip_sum(u, y, C, 150.0, 30)
    st = refit_dp.release([p], 150.0, 30, 2.0, rng)
    a0 = st["n"] * st["g"].astype(float) - np.outer(st["s1"], st["s1"]).astype(float)
    assert np.linalg.eigvalsh(a0).min() >= -st["n"] * K / 2  # only G's rounding to integers
    raw = st["n"] * (p["g"] + rng.normal(0, 2.0 * refit_dp.sensitivity(30) * 150.0 ** 2, (K, K)))
    assert np.linalg.eigvalsh((raw + raw.T) / 2 - np.outer(st["s1"], st["s1"])).min() < -1e3 * st["n"] * K
    assert np.array_equal(st["s1"], st["b"].sum(0)) and st["cnt"].min() >= 1


@pytest.mark.parametrize("clip,n_max,z,w,word", [
    (0.0, 5, 1.0, (1, 1, 1), "clip"), (1.0, 0, 1.0, (1, 1, 1), "n_max"),
    (1.0, 5, -1.0, (1, 1, 1), "noise"), (1.0, 5, 1.0, (1, 0, 1), "weights"),
    (1.0, 2.5, 1.0, (1, 1, 1), "n_max")])
def test_bad_settings(clip, n_max, z, w, word):
    part = {"cnt": np.ones(2), "g": np.eye(3), "b": np.ones((2, 3))}
    with pytest.raises(ValueError, match=word):
        refit_dp.release([part], clip, n_max, z, np.random.default_rng(0), w)


@pytest.mark.parametrize("centre", [np.zeros(2), np.array([0.0, np.nan, 1.0])])
def test_bad_centre(centre):
    part = {"cnt": np.ones(2), "g": np.eye(3), "b": np.ones((2, 3))}
    with pytest.raises(ValueError, match="centre"):
        refit_dp.release([part], 1.0, None, 1.0, np.random.default_rng(0), centre=centre)
    with pytest.raises(ValueError, match="centre"):
        refit_dp.clip_sum(np.ones((2, 3)), np.zeros(2, np.int64), 2, 1.0, None, centre=centre)


def test_windows_per_sample():
    assert refit_dp.windows_per_sample({"window": 100, "step": 50}) == 2
    assert refit_dp.windows_per_sample({"window": 100, "step": 30}) == 4  # a sample in up to 4 windows
    assert refit_dp.windows_per_sample({"window": 100, "step": 100}) == 1
    with pytest.raises(ValueError, match="step"):
        refit_dp.windows_per_sample({"window": 100, "step": 0})


def test_flower_dp_refit_round_is_the_twin_release(tmp_path):
    """`edgetune fleet refit --dp-epsilon 8`: one query round through Flower's Simulation Engine
    (16 ClientApps on the twin, the demo model's fleet); with the server's noise seeded, the global
    state written is the twin's release (clipped_stats per board, release, solve) bit for bit;
    the noise is calibrated for one raw sample (z doubled for the demo's overlapping windows);
    bad DP arguments are refused before anything runs."""
    from tests.support.fleetcli import demo_model, fleet_refit
    from edgetune.fleet import client
    from edgetune.fleet.accountant import gaussian_noise_for
    from edgetune.fleet.data import fleet_data, server_windows

    path = demo_model()
    out = tmp_path / "dp.state"
    bad = ((["--dp-epsilon", "0"], "--dp-epsilon"), (["--dp-epsilon", "8", "--dp-weights", "1,2"], "--dp-weights"),
           (["--dp-epsilon", "8", "--dp-clip", "-1"], "clip"),
           (["--dp-epsilon", "8", "--dp-unit", "board", "--dp-n-max", "0"], "--dp-n-max"))
    res = fleet_refit(out, ["--l2", "0.3", "--alpha", "1", "--dp-epsilon", "8", "--dp-seed", "7"], bad)
    z = gaussian_noise_for(8.0, 1e-5) * 2
    assert res["dp"]["unit"] == "sample" and res["dp"]["noise_multiplier"] == z and 7.9 < res["dp"]["epsilon"] <= 8.0
    assert res["dp"]["clip"] == refit_dp.DEFAULTS["sample"]["clip"] == 100.0 and res["dp"]["centre"]
    buf, _, _ = client._model(path)
    t = Trainer(buf)
    fd = fleet_data(t.model.meta)
    K, C = rs.dims(t)
    assert res["clients"] == len(fd.clients) and res["bytes_up_per_client"] == 4 * refit_dp.upload_values(K, C)
    centre = refit_dp.public_centre(t, server_windows(t.model.meta))
    parts = [refit_dp.unpack(refit_dp.pack(refit_dp.clipped_stats(t, c.x, c.y, 100.0, None, i, centre)), K, C)
             for i, c in enumerate(fd.clients)]
    st = refit_dp.release(parts, 100.0, None, z, np.random.default_rng(7), (0.3, 0.5, 1.0), centre)
    assert out.read_bytes() == refit_dp.global_state(t, st, 0.3, 1.0)
    assert res["held_out_after"] > res["held_out_before"] + 0.3


def test_pack_unpack():
    rng = np.random.default_rng(9)
    K, C = 5, 3
    p = refit_dp.clip_sum(rng.uniform(0, 99, (7, K)), rng.integers(0, C, 7), C, 50.0, None)
    q = refit_dp.unpack(refit_dp.pack(p), K, C)
    for key in ("cnt", "g", "b"):
        assert np.array_equal(p[key].astype(np.float32), q[key]), key
    wire = refit_dp.pack(p)
    assert len(wire) == 4 * refit_dp.upload_values(K, C)
    with pytest.raises(ValueError, match="bytes"):
        refit_dp.unpack(wire[:-4], K, C)
    with pytest.raises(ValueError, match="non-finite"):
        refit_dp.unpack(np.full(refit_dp.upload_values(K, C), np.nan, np.float32).tobytes(), K, C)
