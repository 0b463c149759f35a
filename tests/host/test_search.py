"""Scheme search (host/edgetune/search/) on the tiny zoo model and real watch data.

One tiny model is pre-trained (4 epochs), quantized by the real TFLite converter and exported;
the contribution analysis runs the bit-exact numpy twin on few samples (2 per class, 2 passes,
60 selection windows). Checked: the budget is never exceeded (every method, every Pareto row,
priced again with memory.training_arena), the DP's additive arena decomposition equals
training_arena over the whole space, DP == exhaustive search, evolution/random never beat the
exact optimum, the unix-port module reports exactly the predicted arena for the chosen scheme,
`edgetune export --scheme @scheme.json` / `auto:...` write the searched scheme, and the
additivity of the gains is measured (reported, not asserted to be good).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgetune import cli, search
from edgetune.twin import memory
from edgetune.format.modelfile import read_etm
from edgetune.format.scheme import Scheme

CRITS = ("l1", "fisher")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("search")
    out, tfl, etm = d / "run", d / "tiny.tflite", d / "tiny.etm"
    assert cli.main(["pretrain", "--data", "watch", "--scenario", "rotation", "--out", str(out), "--epochs", "4",
                     "--seed", "0", "--variant", "tiny", "--no-progress"]) == 0
    assert cli.main(["quantize", str(out / "model.keras"), "--out", str(tfl)]) == 0
    assert cli.main(["export", str(tfl), "-o", str(etm), "--meta", str(d / "tiny.meta.json")]) == 0
    return {"dir": d, "tflite": tfl, "etm": etm, "model": read_etm(etm.read_bytes())}


@pytest.fixture(scope="module")
def setup(tiny):
    m = tiny["model"]
    d = search.load_data(m, "watch", None, k=2, epochs=2, seed=0, n_select=60)
    rep = search.search(m, d, 6000, 0, CRITS, lr=0.01, cache=str(tiny["dir"] / "cache.json"), evaluations=60,
                        progress=False)
    return m, d, rep


def budgets(rep):
    prices = sorted({p for c in rep.space.all() if (p := rep.pricer.price(c)) is not None})
    lo, hi = prices[0], prices[-1]
    return [lo - 4, lo, (lo + hi) // 3, (lo + hi) // 2, hi - 4, hi] + prices[::max(1, len(prices) // 12)]


def test_data_splits_are_disjoint_from_eval(tiny, setup):
    m, d, _ = setup
    assert len(d.x_adapt) == 14 and len(d.order) == 28 and len(d.x_select) == 60
    assert d.x_adapt.dtype == np.int8 and "eval region unused" in d.source


def test_dp_arena_decomposition_is_exact(setup):
    m, _, rep = setup
    n = 0
    for c in rep.space.all():
        exact = rep.pricer.arena(c)
        if exact is None:
            continue
        assert search.additive_arena(rep.space, c) == exact, c
        n += 1
    assert n > 100


@pytest.mark.parametrize("fixed", [0, 1000])
def test_budget_never_exceeded(setup, fixed):
    m, _, rep = setup
    pricer = search.Pricer(rep.space, fixed)
    for b in [x + fixed for x in budgets(rep)]:
        for r in (search.dp(rep.space, pricer, rep.contrib, b, CRITS),
                  search.exhaustive(rep.space, pricer, rep.contrib, b, CRITS),
                  search.evolution(rep.space, pricer, rep.contrib, b, 40, 1, CRITS),
                  search.random_search(rep.space, pricer, rep.contrib, b, 40, 1, CRITS)):
            if r.cand is None:
                continue
            arena = memory.training_arena(m, rep.space.scheme(r.cand))
            assert arena + fixed == r.price <= b, (r.method, b)
    for row in rep.front:
        assert row["price"] == row["arena"]


def test_dp_equals_exhaustive(setup):
    m, _, rep = setup
    for crits in (("l1",), CRITS):
        for b in budgets(rep):
            r_dp = search.dp(rep.space, rep.pricer, rep.contrib, b, crits)
            r_ex = search.exhaustive(rep.space, rep.pricer, rep.contrib, b, crits)
            assert (r_dp.cand is None) == (r_ex.cand is None), b
            if r_dp.cand is not None:
                assert r_dp.predicted == pytest.approx(r_ex.predicted, abs=1e-9), (b, r_dp.cand, r_ex.cand)
                assert r_dp.predicted == pytest.approx(rep.contrib.predict(r_dp.cand), abs=1e-9)
                for r in (search.evolution(rep.space, rep.pricer, rep.contrib, b, 50, 0, crits),
                          search.random_search(rep.space, rep.pricer, rep.contrib, b, 50, 0, crits)):
                    assert r.predicted <= r_dp.predicted + 1e-9 and r.evaluations == 50


def test_pareto_front_is_monotone_and_matches_dp(setup):
    _, _, rep = setup
    front = rep.front
    assert len(front) >= 2
    assert all(a["price"] < b["price"] and a["predicted_acc"] < b["predicted_acc"] for a, b in zip(front, front[1:]))
    for row in front:
        r = search.dp(rep.space, rep.pricer, rep.contrib, row["price"], CRITS)
        assert r.predicted == pytest.approx(row["predicted_acc"], abs=1e-9)


def test_fisher_scores_are_gradient_based(setup):
    m, _, rep = setup
    for layer, score in rep.space.fisher.items():
        assert score.shape == (m.tensors[m.layers[layer].output].shape[3],)
        assert np.all(score >= 0) and score.sum() > 0
    # both criteria were measured for every layer and ratio
    assert {cr for (_, _, cr) in rep.contrib.acc_w} == set(CRITS)


def test_additivity_is_measured(setup, capsys):
    m, d, rep = setup
    ad = search.measure_actual(rep, m, d)
    assert {"predicted_acc", "actual_acc", "predicted_gain", "actual_gain", "dp", "chosen"} <= set(ad)
    assert 0 <= ad["actual_acc"] <= 1 and np.isfinite(ad["predicted_gain"])
    with capsys.disabled():
        print(f"\n[additivity, tiny model] predicted gain {ad['predicted_gain']:+.3f}, "
              f"measured {ad['actual_gain']:+.3f} ({rep.chosen.cand.text(rep.space)})")


def test_unix_port_reports_the_predicted_arena(tiny, run_mpy, tmp_path):
    out, etm = tmp_path / "out", tmp_path / "chosen.etm"
    args = ["scheme", str(tiny["etm"]), "--budget", "6000", "--out", str(out), "--etm", str(etm), "--k", "2",
            "--epochs", "1", "--lr", "0.01", "--criteria", "l1,fisher", "--evaluations", "40", "--no-progress"]
    assert cli.main(args) == 0
    rep = json.loads((out / "scheme.json").read_text())
    assert (out / "scheme.png").stat().st_size > 1000
    model = read_etm(etm.read_bytes())
    s = Scheme.decode(model.scheme, model)
    assert [(e.layer, e.bias, list(e.channels)) for e in s.entries] == \
        [(e["layer"], e["bias"], e["channels"]) for e in rep["chosen"]["entries"]]
    predicted = memory.training_arena(model, s)
    assert predicted == rep["chosen"]["arena"] <= 6000
    code = f"import edgetune\nm = edgetune.Model(open({str(etm)!r}, 'rb').read())\n" \
           "i = m.info()\nprint('ARENA', i['arena'], i['trainable'])\n"
    line = [ln for ln in run_mpy(code).splitlines() if ln.startswith("ARENA")][0].split()
    assert int(line[1]) == predicted
    assert int(line[2]) == s.n_params(model)
    # export --scheme @scheme.json writes the same scheme section
    etm2 = tmp_path / "exported.etm"
    assert cli.main(["export", str(tiny["tflite"]), "-o", str(etm2), "--meta",
                     str(tiny["dir"] / "tiny.meta.json"), "--scheme", f"@{out / 'scheme.json'}"]) == 0
    assert read_etm(etm2.read_bytes()).scheme == model.scheme


def test_export_scheme_auto(tiny, tmp_path):
    etm = tmp_path / "auto.etm"
    cache = tmp_path / "c.json"
    assert cli.main(["export", str(tiny["tflite"]), "-o", str(etm), "--meta", str(tiny["dir"] / "tiny.meta.json"),
                     "--scheme", f"auto:budget=5000,k=2,epochs=1,lr=0.01,criteria=l1,cache={cache}"]) == 0
    model = read_etm(etm.read_bytes())
    s = Scheme.decode(model.scheme, model)
    assert s.entries and memory.training_arena(model, s) <= 5000
    assert cache.exists()
    # the same search through the API picks the same scheme
    d = search.load_data(model, "watch", None, k=2, epochs=1, seed=0)
    rep = search.search(model, d, 5000, 0, ("l1",), lr=0.01, cache=str(cache), progress=False, verify=5)
    assert rep.scheme().encode() == model.scheme
    v = rep.extra["verify"]
    assert 1 <= len(v) <= 5 and rep.results["dp+verify"].cand == rep.chosen.cand
    chosen = [x["measured_acc"] for x in v if x["scheme"] == rep.chosen.cand.text(rep.space)]
    assert chosen and max(chosen) == max(x["measured_acc"] for x in v)


def test_budget_too_small_is_an_error(tiny, tmp_path, capsys):
    """Refused at once (no analysis, no table of -inf/None rows), naming the cheapest scheme's
    price, which is the lowest price in the whole search space."""
    import time

    t0 = time.time()
    assert cli.main(["scheme", str(tiny["etm"]), "--budget", "100", "--out", str(tmp_path), "--k", "1",
                     "--epochs", "1", "--lr", "0.01", "--criteria", "l1", "--no-progress"]) == 1
    assert time.time() - t0 < 10
    out = capsys.readouterr()
    assert "no scheme fits" in out.err and "-inf" not in out.out and "None" not in out.out
    space = search.Space.of(tiny["model"])
    pricer = search.Pricer(space)
    low = min(p for c in space.all() if (p := pricer.price(c)) is not None)
    assert f"needs {low} B" in out.err and f"--budget {low}" in out.err
    with pytest.raises(ValueError, match=f"needs {low} B"):  # export --scheme auto:budget=... too
        search.attach_spec(tiny["model"], "auto:budget=100")


def test_board_fixed_cost(tiny, repo_root):
    m = tiny["model"]
    fixed, heap, src = search.board_fixed("rp2040", m)
    assert heap == json.loads((repo_root / "boards" / "rp2040" / "board.json").read_text())["heap_bytes"]
    assert fixed == search.APP_HEAP_BASE + search.APP_RING_WINDOWS * m.tensors[m.input].size
    assert "measured" in src
    assert search.board_fixed(None, m)[:2] == (0, None)
