"""Fleet refit mode (host/edgetune/fleet/refit_stats.py, docs/fleet-refit.md): boards' refit
statistics summed on the server equal the pooled windows' statistics exactly, and the global
state solved from them is the centralized refit's state bit for bit (numpy twin, many random
models); a unix-port board with the C module loading that state predicts what the twin predicts,
and its own m.refit on the pooled windows gives the same state."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.fleet import refit_stats as rs
from edgetune.format.modelfile import write_etm
from edgetune.twin.training import Trainer

from tests.support.trainingcases import refittable_models, run_script

N_MODELS = 12


def _fleet(model, rng, clients=None):
    """A trained-away start state, a random client split of random windows."""
    etm = write_etm(model)
    mom = float(rng.choice([0.0, 0.9]))
    t0 = Trainer(etm, momentum=mom)
    n_in, n_cls = model.input_tensor.size, model.output_tensor.size
    for _ in range(3):  # the global parameters are not the flashed ones
        t0.step(rng.integers(-128, 128, n_in).astype(np.int8), int(rng.integers(0, n_cls)), 0.05)
    k = clients or int(rng.integers(2, 7))
    sizes = rng.integers(2, 15, k)
    xs = [rng.integers(-128, 128, (s, n_in)).astype(np.int8) for s in sizes]
    ys = [rng.integers(0, n_cls, s).astype(np.int64) for s in sizes]
    return etm, mom, t0, xs, ys


def _client(etm, mom, state0):
    t = Trainer(etm, momentum=mom)
    t.load_state(state0)
    return t


@pytest.mark.parametrize("l2,alpha", [(0.1, 1.0), (1.0, 0.5), (0.01, 0.75)])
def test_federated_refit_equals_centralized(l2, alpha):
    rng = np.random.default_rng(int(l2 * 1000 + alpha * 10))
    for seed, model in refittable_models(N_MODELS):
        etm, mom, t0, xs, ys = _fleet(model, rng)
        state0 = t0.state_bytes()
        K, C = rs.dims(t0)
        ups = []
        for x, y in zip(xs, ys):
            st = rs.client_stats(_client(etm, mom, state0), x, y)
            buf = rs.pack(st)
            assert len(buf) == 4 * rs.upload_values(K, C)
            ups.append(rs.unpack(buf, K, C))
        pooled_x, pooled_y = np.concatenate(xs), np.concatenate(ys)
        agg = rs.aggregate(ups)
        want = rs.client_stats(_client(etm, mom, state0), pooled_x, pooled_y)
        for key in ("n", "cnt", "s1", "g", "b"):
            assert np.array_equal(agg[key], want[key]), (seed, key)
        glob = rs.global_state(_client(etm, mom, state0), agg, l2, alpha)
        cen = _client(etm, mom, state0)
        cen.refit(pooled_x, pooled_y, l2=l2, alpha=alpha)
        assert glob == cen.state_bytes(), seed
        assert glob != state0 or alpha == 0, seed


def test_bad_statistics_are_refused():
    rng = np.random.default_rng(3)
    _, model = refittable_models(1)[0]
    etm, mom, t0, xs, ys = _fleet(model, rng, clients=2)
    K, C = rs.dims(t0)
    st = rs.client_stats(t0, xs[0], ys[0])
    with pytest.raises(ValueError, match="expected"):
        rs.unpack(rs.pack(st)[:-4], K, C)
    with pytest.raises(ValueError, match="2..32767"):
        rs.aggregate([dict(st, n=20000, cnt=np.eye(C, dtype=np.int64)[0] * 20000)] * 2)
    with pytest.raises(ValueError, match="at least one"):
        rs.aggregate([])
    with pytest.raises(ValueError, match="l2 and alpha"):
        rs.global_state(t0, rs.aggregate([st]), None, 1.0)
    before = t0.state_bytes()
    rs.global_state(t0, rs.aggregate([st]), 0.1, 1.0)
    assert t0.state_bytes() == before  # the server's trainer is not changed


BOARD = """
import edgetune
D = {d!r}
for name, mom, n in {cases!r}:
    buf = open(D + '/' + name + '.etm', 'rb').read()
    raw = open(D + '/' + name + '.x', 'rb').read()
    lab = open(D + '/' + name + '.lab', 'rb').read()
    k = len(raw) // n
    xs = [raw[i * k:(i + 1) * k] for i in range(n)]
    m = edgetune.Model(buf, momentum=mom)
    m.load_state(open(D + '/' + name + '.glob', 'rb').read())
    print('Y', name, ' '.join(bytes(m.predict(x)).hex() for x in xs))
    m.load_state(open(D + '/' + name + '.s0', 'rb').read())
    m.refit(xs, lab, l2={l2!r}, alpha={alpha!r})
    print('S', name, int(bytes(m.state()) == open(D + '/' + name + '.glob', 'rb').read()))
print('DONE')
"""


def test_unix_board_loads_the_global_state(micropython, tmp_path):
    rng = np.random.default_rng(11)
    l2, alpha = 0.1, 0.75
    cases, want = [], {}
    for seed, model in refittable_models(6):
        etm, mom, t0, xs, ys = _fleet(model, rng)
        state0 = t0.state_bytes()
        agg = rs.aggregate([rs.client_stats(_client(etm, mom, state0), x, y) for x, y in zip(xs, ys)])
        glob = rs.global_state(t0, agg, l2, alpha)
        px, py = np.concatenate(xs), np.concatenate(ys)
        name = f"m{seed}"
        for ext, data in (("etm", etm), ("x", px.tobytes()), ("lab", py.astype(np.uint8).tobytes()),
                          ("s0", state0), ("glob", glob)):
            (tmp_path / f"{name}.{ext}").write_bytes(data)
        tw = _client(etm, mom, glob)
        want[name] = " ".join(tw.predict(x).astype(np.int8).tobytes().hex() for x in px)
        cases.append((name, mom, len(py)))
    out = run_script(micropython, tmp_path, BOARD.format(d=str(tmp_path), cases=cases, l2=l2, alpha=alpha)).stdout
    assert out.rstrip().endswith("DONE"), out[-2000:]
    got = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if parts[0] in ("Y", "S"):
            got[(parts[0], parts[1])] = parts[2]
    for name in want:
        assert got[("Y", name)] == want[name], name
        assert got[("S", name)] == "1", name  # the board's own refit on the pooled windows = the global state


def test_flower_refit_round_equals_centralized_refit(tmp_path):
    """`edgetune fleet refit`: one query round through Flower's Simulation Engine (16 ClientApps
    on the twin, the demo model's fleet clients); the global state written is Trainer.refit's on
    the pooled windows; bad arguments are refused before anything runs."""
    from tests.support.fleetcli import demo_model, fleet_refit
    from edgetune.fleet import client
    from edgetune.fleet.data import fleet_data

    path = demo_model()
    out = tmp_path / "glob.state"
    res = fleet_refit(out, ["--l2", "0.01", "--alpha", "0.75"],
                      bad=((["--l2", "0", "--alpha", "1"], "--l2"), (["--l2", "1", "--alpha", "2"], "--alpha")))
    from edgetune.twin.training import Trainer

    # a fresh Trainer: client._model's cached one may have been trained by an earlier test
    buf, _, _ = client._model(path)
    t = Trainer(buf)
    fd = fleet_data(t.model.meta)
    K, C = rs.dims(t)
    assert res["clients"] == len(fd.clients) and res["bytes_up_per_client"] == 4 * rs.upload_values(K, C)
    assert res["held_out_after"] > res["held_out_before"] + 0.2
    x, y = fd.pooled()
    t.refit(x, y, l2=0.01, alpha=0.75)
    assert out.read_bytes() == t.state_bytes()
