"""The device's default adaptation recipe on the host: firmware/recipe.py itself (one description
of the decisions: check-set split, SGD with rollback, guard and its margins), run on the numpy
training twin (host/edgetune/twin/training.py, bit-exact with the C module) through `TwinModel`, which
has the device Model's calls.

    from edgetune import recipe
    tr, ck = recipe.split(labels, recipe.HOLDOUT, recipe.gap_windows(window, step))
    m = recipe.TwinModel(etm_bytes)
    steps, kept = recipe.run(m, xs, ys, cxs, cys, sgd_epochs=recipe.EPOCHS, lr=recipe.LR)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

_PATH = Path(__file__).resolve().parents[3] / "firmware" / "recipe.py"
# recipe.py imports the device's `checkset` module: load that file under its device name first
import sys  # noqa: E402

if "checkset" not in sys.modules:
    _cs = importlib.util.spec_from_file_location("checkset", _PATH.parent / "checkset.py")
    _csm = importlib.util.module_from_spec(_cs)
    _cs.loader.exec_module(_csm)  # type: ignore[union-attr]
    sys.modules["checkset"] = _csm
_spec = importlib.util.spec_from_file_location("edgetune._device_recipe", _PATH)
device = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(device)  # type: ignore[union-attr]

HOLDOUT = device.HOLDOUT
ACC_MARGIN = device.ACC_MARGIN
LOSS_MARGIN = device.LOSS_MARGIN
PATIENCE = device.PATIENCE
EPOCHS = device.EPOCHS
LR = device.LR
gap_windows = device.gap_windows
split = device.split
better = device.better
run = device.run
sgd = device.sgd


class TwinModel:
    """The device Model's evaluate / train / state / load_state on the numpy twin (Trainer)."""

    def __init__(self, etm: bytes, scheme: Any = None, stats: Any = None, meta: dict[str, Any] | None = None):
        from ..twin.training import Trainer

        self.t = Trainer(etm, scheme)
        self.steps = 0
        self.stats = stats  # the statistics sets of the frame fit (frame.stats_sets of the .etm metadata)
        self.meta = meta or {}
        self.frame: tuple[Any, bool] | None = None  # (R, improper): the model's sensor frame

    def frame_rt(self) -> tuple[Any, bool] | None:
        return self.frame

    def refit(self, xs, labels) -> dict[str, Any] | None:
        """m.refit(xs, labels) (l2, alpha by cross-validation) on the twin; None when this model's
        scheme cannot refit (the step is then logged as not supported)."""
        from ..twin import refit as _refit

        if _refit.refit_layer(self.t.model, self.t.scheme) is None:
            return None
        d = _refit.refit(self.t, np.asarray(xs, np.int8), np.asarray(labels))
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in d.items()}

    def calibrate_hook(self, xs: list, ys: list, cxs: list, fit_xs=None, fit_ys=None):
        """The calibrate step: the frame fit (m.calibrate's twin) on fit_xs/fit_ys (app.calibrate:
        every collected window; default the training windows), the model's frame composed with
        it, and the training and check windows re-quantized into the new frame in place (as the
        app re-quantizes its ring). None result: no statistics."""
        if fit_xs is None:
            fit_xs, fit_ys = xs, ys
        def run() -> dict[str, Any] | None:
            from ..twin import frame

            if self.stats is None or "raw_input_quant" not in self.meta:
                return None
            riq = self.meta["raw_input_quant"]
            k = self.t.model.output_tensor.size
            fit = frame.fit_frame(np.asarray(fit_xs, np.int8), list(fit_ys), k, self.stats, riq["scale"], riq["zero_point"])
            if fit["chosen"] != "identity":
                for lst in (xs, cxs):
                    if lst:
                        q = frame.requantize(np.asarray(lst, np.int8), fit["R"], fit["improper"], riq["scale"],
                                             riq["zero_point"])
                        lst[:] = list(q)
                if self.frame is None:
                    self.frame = (fit["R"], fit["improper"])
                else:
                    self.frame = (frame.compose(self.frame[0], fit["R"]), self.frame[1] != fit["improper"])
            return {"chosen": fit["chosen"], "improper": fit["improper"]}
        return run

    def evaluate(self, xs, labels) -> tuple[float, float]:
        loss, acc = self.t.evaluate(np.asarray(xs, np.int8), np.asarray(labels))
        return float(loss), float(acc)

    def train(self, x, label, lr: float = LR, qas: bool = True) -> float:
        self.steps += 1
        return float(self.t.step(np.asarray(x, np.int8), int(label), lr, qas))

    def state(self) -> tuple[bytes, Any]:
        """The checkpoint: the trained-weights bytes and the sensor frame (the C module's
        m.state() carries the frame in the file's trailer)."""
        return self.t.state_bytes(), self.frame

    def load_state(self, data: tuple[bytes, Any]) -> None:
        self.t.load_state(data[0])
        self.frame = data[1]

    def reset(self) -> None:
        self.t.reset()

    def accuracy(self, xs: np.ndarray, ys: np.ndarray) -> float:
        return float(self.t.evaluate(np.asarray(xs, np.int8), np.asarray(ys))[1])


class Events:
    """An `emit` that keeps the recipe's events as dicts (the device prints them as @et lines)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, name: str, fields: tuple) -> None:
        self.rows.append({"ev": name, **dict(fields)})

    def of(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["ev"] == name]


DEVICE_SCRIPT = """
import sys
sys.path.append({fw!r})
import edgetune, recipe, json
D = {d!r}
buf = open(D + '/m.etm', 'rb').read()
m = edgetune.Model(buf)
def load(name):
    b = open(D + '/' + name, 'rb').read()
    n = {n}
    return [b[i * n:(i + 1) * n] for i in range(len(b) // n)]
xs, cxs = load('xs'), load('cxs')
ys, cys = list(open(D + '/ys', 'rb').read()), list(open(D + '/cys', 'rb').read())
def emit(name, fields):
    print('EV', json.dumps(dict([('ev', name)] + list(fields))))
kw = {kw!r}
ra = recipe.hook(m, 'refit', kw.pop('refit_all'), xs + cxs, ys + cys)
steps, kept = recipe.run(m, xs, ys, cxs, cys, refit=recipe.hook(m, 'refit', kw.pop('refit'), xs, ys), emit=emit,
                         refit_all=ra, **kw)
m.save(D + '/final.etw')
print('KEPT', kept)
"""


def device_run(etm: bytes, xs: np.ndarray, ys, cxs: np.ndarray, cys, workdir: str | Path,
               **kw: Any) -> tuple[list[dict[str, Any]], bytes]:
    """The same recipe on the unix-port MicroPython with the C module (the spot check of the
    twin; no frame step: random models have no frame statistics): (events, final trained-weights
    bytes). kw: run()'s keywords + the refit flag."""
    import json

    from ..device import emulate

    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "m.etm").write_bytes(etm)
    xs, cxs = np.asarray(xs, np.int8), np.asarray(cxs, np.int8)
    n = xs[0].size
    (d / "xs").write_bytes(xs.tobytes())
    (d / "cxs").write_bytes(cxs.tobytes())
    (d / "ys").write_bytes(bytes(int(v) for v in ys))
    (d / "cys").write_bytes(bytes(int(v) for v in cys))
    kw = {"refit": True, "refit_all": True, **kw}
    script = d / "recipe_run.py"
    script.write_text(DEVICE_SCRIPT.format(fw=str(_PATH.parent), d=str(d), n=n, kw=kw))
    proc = emulate._run_binary(emulate.find_micropython(), script, None, 1800, d, [])
    if proc.returncode != 0:
        raise RuntimeError(f"MicroPython failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rows = [json.loads(line[3:]) for line in proc.stdout.splitlines() if line.startswith("EV ")]
    return rows, (d / "final.etw").read_bytes()


def twin_run(etm: bytes, xs, ys, cxs, cys, **kw: Any) -> tuple[list[dict[str, Any]], bytes, TwinModel]:
    """The recipe on the numpy twin: (events, final trained-weights bytes, the model)."""
    m = TwinModel(etm)
    ev = Events()
    kw = {"refit": True, "refit_all": True, **kw}
    xs, ys, cxs, cys = list(xs), [int(v) for v in ys], list(cxs), [int(v) for v in cys]
    run(m, xs, ys, cxs, cys, emit=ev, refit=device.hook(m, "refit", kw.pop("refit"), xs, ys),
        refit_all=device.hook(m, "refit", kw.pop("refit_all"), xs + cxs, ys + cys), **kw)
    return ev.rows, m.t.state_bytes(), m
