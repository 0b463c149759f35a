"""The default recipe (firmware/recipe.py, host/edgetune/learn/recipe.py).

- split(): per class the last n // holdout windows are the check set, the `gap` windows before
  them are dropped; no check window overlaps a training window of the same class when windows are
  cut every half window (gap_windows).
- better(): the guard's rule (accuracy as counts, then loss with the margin).
- The recipe (refit -> SGD with rollback -> guard) on the unix-port MicroPython with the C module
  equals the recipe on the numpy twin (same events, same final trained-weights bytes) on random
  trainable models, and both the keep and the roll-back paths of the final guard and of the
  refit's own guard occur.
- Rollback: the guard restores the model from before the recipe bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.twin import memory
from edgetune.learn import recipe
from edgetune.format.scheme import Scheme
from edgetune.format.modelfile import write_etm

from tests.support.trainingcases import train_model


def test_split_last_windows_with_gap():
    labels = [0] * 8 + [1] * 8 + [0] * 4 + [2] * 3
    tr, ck = recipe.split(labels, holdout=4, gap=1)
    # class 0: 12 windows (0..7, 16..19): check = last 3 (17, 18, 19), 16 dropped
    assert [i for i in ck if labels[i] == 0] == [17, 18, 19]
    assert [i for i in tr if labels[i] == 0] == list(range(8))
    # class 1: 8 windows: check 14, 15; 13 dropped
    assert [i for i in ck if labels[i] == 1] == [14, 15] and [i for i in tr if labels[i] == 1] == list(range(8, 13))
    # class 2: 3 < holdout windows: all train
    assert [i for i in tr if labels[i] == 2] == [20, 21, 22] and not [i for i in ck if labels[i] == 2]
    assert tr == sorted(tr) and ck == sorted(ck) and not set(tr) & set(ck)
    assert recipe.split(labels, holdout=0)[1] == []


@pytest.mark.parametrize("window,step,gap", [(100, 50, 1), (100, 100, 0), (100, 25, 3), (100, 30, 3), (100, 200, 0)])
def test_gap_means_no_overlap(window, step, gap):
    assert recipe.gap_windows(window, step) == gap
    # consecutive windows of one run start every `step` samples: the first check window must not
    # share a sample with the last training window
    tr, ck = recipe.split([0] * 16, holdout=4, gap=gap)
    assert ck[0] * step >= tr[-1] * step + window


def test_guard_rule():
    n = 14
    assert recipe.ACC_MARGIN == 1 and recipe.LOSS_MARGIN is None
    assert recipe.better((1.0, 5 / n), (2.0, 7 / n), n)  # two more correct: kept, whatever the loss
    assert not recipe.better((1.0, 5 / n), (0.1, 6 / n), n)  # one more: noise, not kept
    assert not recipe.better((1.0, 6 / n), (0.1, 5 / n), n)  # one fewer correct: never
    assert not recipe.better((1.0, 5 / n), (0.01, 5 / n), n)  # equal: the loss counts only with a margin
    assert recipe.better((1.0, 5 / n), (0.97, 5 / n), n, 0, 0.02)  # equal, loss lower by > margin
    assert not recipe.better((1.0, 5 / n), (0.99, 5 / n), n, 0, 0.02)  # within the margin
    assert recipe.better((1.0, 5 / n), (2.0, 6 / n), n, 0, None)  # margin 0: one more window


def _cases(n_models: int):
    out = []
    for s in range(200):
        m = train_model(s)
        if m.output_tensor.size >= 3:
            out.append(m)
        if len(out) == n_models:
            break
    return out


def test_recipe_c_equals_twin(micropython, tmp_path):
    """Random trainable models, random windows with a learnable signal: the recipe's events and
    final weights are the same on the C module and the twin; the guard keeps some and rolls back
    some."""
    kept, refit_kept, n_refit_all = [], [], 0
    for k, model in enumerate(_cases(6)):
        etm = write_etm(model)
        rng = np.random.default_rng(k)
        ncls = model.output_tensor.size
        n_in = model.input_tensor.size
        labels = [c for c in range(ncls) for _ in range(8)]
        proto = rng.integers(-100, 100, (ncls, n_in))
        xs = np.clip(proto[labels] + rng.integers(-60, 60, (len(labels), n_in)), -128, 127).astype(np.int8)
        tr, ck = recipe.split(labels, 4, 1)
        ys = np.asarray(labels)
        kw = {"sgd_epochs": 3, "lr": [0.3, 0.01][k % 2], "seed": k}
        ev_t, st_t, _ = recipe.twin_run(etm, xs[tr], ys[tr], xs[ck], ys[ck], **kw)
        ev_c, st_c = recipe.device_run(etm, xs[tr], ys[tr], xs[ck], ys[ck], tmp_path / f"c{k}", **kw)
        assert st_c == st_t, f"model {k}: final weights differ"
        # the checkpoint's heap price (memory.py) is the state's size
        assert len(st_t) == memory.checkpoint_bytes(model, Scheme.for_model(model)), k
        assert [r["ev"] for r in ev_c] == [r["ev"] for r in ev_t]
        for a, b in zip(ev_c, ev_t):
            assert a.keys() == b.keys()
            for key in a:
                if isinstance(a[key], float):
                    assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (k, a, b)
                else:
                    assert a[key] == b[key], (k, a, b)
        g = [r for r in ev_t if r["ev"] == "guard" and r["stage"] == "final"][0]
        kept.append(g["kept"])
        refit_kept.extend(r["kept"] for r in ev_t if r["ev"] == "guard" and r["stage"] == "refit")
        n_refit_all += sum(r["ev"] == "recipe" and r["stage"] == "refit_all" for r in ev_t)
        if not g["kept"]:
            assert st_t == recipe.TwinModel(etm).t.state_bytes(), "a rejected recipe must restore the start bit for bit"
    assert any(kept) and not all(kept), kept
    assert any(refit_kept) and not all(refit_kept), refit_kept  # the refit's own guard both ways
    assert n_refit_all > 0  # and the last refit over every window ran (same bits on both sides)


def test_rollback_restores_best_epoch():
    """SGD whose later epochs get worse ends at the best epoch's weights."""
    model = _cases(1)[0]
    etm = write_etm(model)
    rng = np.random.default_rng(5)
    ncls, n_in = model.output_tensor.size, model.input_tensor.size
    xs = rng.integers(-128, 128, (30, n_in)).astype(np.int8)
    ys = rng.integers(0, ncls, 30)
    m = recipe.TwinModel(etm)
    ev = recipe.Events()
    best, ep = recipe.sgd(m, list(xs[:20]), list(ys[:20]), list(xs[20:]), list(ys[20:]), epochs=6, lr=1.0, seed=1,
                          emit=ev, patience=99)
    evals = ev.of("eval")
    assert len(evals) == 6
    if ep >= 0:
        assert m.evaluate(list(xs[20:]), list(ys[20:])) == pytest.approx(best)
        assert best[1] >= max(e["acc"] for e in evals) - 1e-9
        if ep < 5:
            assert ev.of("rollback") and ev.of("rollback")[0]["epoch"] == ep


def test_app_defaults_are_the_recipe_defaults():
    """app.train's literal defaults (no module import at app load) equal recipe.EPOCHS / LR."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).resolve().parents[2] / "firmware" / "app.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    names = [a.arg for a in fn.args.args]
    defaults = dict(zip(names[len(names) - len(fn.args.defaults):], (ast.literal_eval(d) for d in fn.args.defaults)))
    assert defaults["epochs"] == recipe.EPOCHS and defaults["lr"] == recipe.LR
    assert all(defaults[k] is True for k in ("calibrate", "refit", "sgd", "guard", "refit_all"))


def test_checkpoint_price_with_a_frame(micropython, tmp_path):
    """m.state() on the C module: memory.checkpoint_bytes without and with a sensor frame, and
    load_state restores the frame the checkpoint had."""
    from tests.support.trainingcases import run_script

    from pathlib import Path

    from edgetune.format.modelfile import read_etm
    from tests.support.relhelp import demo_module

    etm = demo_module().ensure_model(Path(__file__).resolve().parents[2] / "build" / "demo")  # 6 IMU channels
    model = read_etm(etm.read_bytes())
    (tmp_path / "m.etm").write_bytes(etm.read_bytes())
    code = f"""
import edgetune
m = edgetune.Model(open({str(tmp_path / 'm.etm')!r}, 'rb').read())
a = m.state()
m.frame([0, -1, 0, 1, 0, 0, 0, 0, 1])
b = m.state()
m.load_state(a)
print('SIZES', len(a), len(b), m.frame() is None)
m.load_state(b)
print('FRAME', m.frame() is not None)
"""
    proc = run_script(micropython, tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    sizes = next(ln for ln in proc.stdout.splitlines() if ln.startswith("SIZES")).split()
    sch = Scheme.for_model(model)
    assert int(sizes[1]) == memory.checkpoint_bytes(model, sch)
    assert int(sizes[2]) == memory.checkpoint_bytes(model, sch, frame=True)
    assert sizes[3] == "True" and "FRAME True" in proc.stdout
