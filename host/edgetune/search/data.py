"""The search's personalization data: adapt and selection windows, quantized with the model's
input quantization (docs/scheme-search.md §1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..format.modelfile import EtmModel
from ..learn import data, pretrain
from ..twin.quantize_input import quantize_normalized


@dataclass
class SearchData:
    """int8 windows: `adapt` fine-tunes (in `order`), `select` measures the gain."""

    x_adapt: np.ndarray
    y_adapt: np.ndarray
    order: np.ndarray
    x_select: np.ndarray
    y_select: np.ndarray
    source: str

    def key(self) -> str:
        h = hashlib.sha1()
        for a in (self.x_adapt, self.y_adapt, self.order, self.x_select, self.y_select):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def load_data(model: EtmModel, data_spec: str = "watch", scenario: str | None = None, k: int = 8,
              epochs: int = 10, seed: int = 0, n_select: int | None = None) -> SearchData:
    """Personalization data for the search, quantized with the model's input quantization.

    `watch`: the scenario stored in the model's metadata (`split`, as pretrain wrote it; name
    overridable by `scenario`): adapt = k windows per class from the shifted domain's fit region
    (seeded, as bench/learning.py), select = the fit-val region; the eval region is not used.
    A session file (CSV/NPZ, data.load_session): every recording's first 60 % is adapt (k per
    class), the rest select; normalization from the metadata."""
    meta = model.meta or {}
    if "input_scale" not in meta:
        raise ValueError("the model has no input quantization metadata (export it with --meta MODEL.meta.json)")
    s_in, z_in = float(meta["input_scale"]), int(meta["input_zero_point"])
    if data_spec == "watch":
        cfg = dict(meta.get("split") or pretrain.scenario_config({}))
        if scenario:
            cfg["name"] = scenario
        sc = pretrain.scenario_from_config(cfg)
        fit, sel, norm = sc.shift_fit, sc.shift_val, sc.norm
        source = f"watch/{cfg['name']}: adapt = fit region, select = fit-val region (eval region unused)"
    else:
        if "normalization" not in meta:
            raise ValueError("a session file needs the model's normalization metadata")
        norm = data.Norm.from_json(meta["normalization"])
        recs = data.load_session(data_spec, meta.get("class_names", data.WATCH_CLASSES))
        w, st = int(meta.get("window", data.WINDOW)), int(meta.get("step", data.STEP))
        fit = data.make_windows(recs, w, st, (0.0, 0.6))
        sel = data.make_windows(recs, w, st, (0.6, 1.0))
        source = f"session {data_spec}: adapt = first 60 % of each recording, select = the rest"

    def q(x):
        return quantize_normalized(norm.apply(x), s_in, z_in)

    idx = data.per_class_sample(fit, k, seed)
    rng = np.random.default_rng(1000 + seed)
    order = np.concatenate([rng.permutation(len(idx)) for _ in range(epochs)])
    sel_idx = np.arange(len(sel))
    if n_select is not None and n_select < len(sel):
        sel_idx = np.sort(np.random.default_rng(seed).permutation(len(sel))[:n_select])
    return SearchData(q(fit.x[idx]), fit.y[idx].astype(np.int64), order,
                      q(sel.x[sel_idx]), sel.y[sel_idx].astype(np.int64), source)
