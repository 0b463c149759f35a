"""The fleet's clients: the watch data split by person and arm (docs/fleet.md §5).

The model's .etm metadata says how it was pre-trained (`split`: scenario, test subjects,
rotation). The fleet is the shifted deployment of that scenario: every board sees the shift
(for `rotation`, the mounting turned by the metadata's rotation). Each (subject, arm) of the
subjects that are not test subjects is one client; `splits` > 1 cuts every client's recordings
in time into that many parts (each part still holds every exercise) for the ≥ 100-client scale
run. The test subjects (both arms, shifted, every window) are the held-out evaluation set.
Windows are int8 through the device's input path (raw_input_quant, as m.quantize does).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..learn import data


@dataclass
class Client:
    subject: int
    side: int
    part: int
    x: np.ndarray  # (n, input size) int8
    y: np.ndarray  # (n,) int64


@dataclass
class FleetData:
    clients: list[Client]
    eval_x: np.ndarray
    eval_y: np.ndarray

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([c.x for c in self.clients]), np.concatenate([c.y for c in self.clients])


def _int8(w: data.Windows, meta: dict) -> np.ndarray:
    from ..twin.quantize_input import quantize_input

    riq = meta["raw_input_quant"]
    return quantize_input(w.x, riq["scale"], riq["zero_point"]).reshape(len(w.x), -1).astype(np.int8)


def _shift(recs, meta: dict):
    split = meta.get("split") or {}
    name = split.get("name", meta.get("scenario"))
    if name == "rotation":
        deg = split.get("rotation_deg")
        r = data.random_rotation(split["rotation_seed"]) if deg is None else data.rotation_matrix(deg)
        return data.rotate(recs, r)
    return list(recs)


@functools.lru_cache(maxsize=4)
def _load(meta_key: str, splits: int) -> FleetData:
    import json

    meta = json.loads(meta_key)
    split = meta.get("split") or {}
    test = set(split.get("test_subjects", data.DEFAULT_TEST_SUBJECTS))
    window, step = int(meta.get("window", data.WINDOW)), int(meta.get("step", data.STEP))
    ds = data.load_watch()
    clients: list[Client] = []
    for s in ds.subjects():
        if s in test:
            continue
        for side in (0, 1):
            recs = _shift(ds.select([s], [side]), meta)
            for p in range(splits):
                w = data.make_windows(recs, window, step, (p / splits, (p + 1) / splits)) if splits > 1 \
                    else data.make_windows(recs, window, step)
                if len(w):
                    clients.append(Client(s, side, p, _int8(w, meta), w.y.astype(np.int64)))
    ev = data.make_windows(_shift(ds.select(sorted(test)), meta), window, step)
    return FleetData(clients, _int8(ev, meta), ev.y.astype(np.int64))


def fleet_data(meta: dict, splits: int = 1) -> FleetData:
    """Clients and the held-out set for a model's metadata (cached per process)."""
    if splits < 1:
        raise ValueError(f"splits={splits} must be >= 1")
    return _load(_meta_key(meta), int(splits))


def _meta_key(meta: dict) -> str:
    """The metadata the windows depend on, as a cache key (ValueError without raw_input_quant)."""
    import json

    keep = {k: meta[k] for k in ("split", "scenario", "window", "step", "raw_input_quant") if k in meta}
    if "raw_input_quant" not in keep:
        raise ValueError("the model's metadata has no raw_input_quant: export it with edgetune export")
    return json.dumps(keep, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _server(meta_key: str) -> np.ndarray:
    import json

    meta = json.loads(meta_key)
    split = meta.get("split") or {}
    name = split.get("name", meta.get("scenario", "rotation"))
    sc = data.build_scenario(name, window=int(meta.get("window", data.WINDOW)), step=int(meta.get("step", data.STEP)),
                             val_subjects=split.get("val_subjects", data.DEFAULT_VAL_SUBJECTS),
                             test_subjects=split.get("test_subjects", data.DEFAULT_TEST_SUBJECTS),
                             train_side=split.get("train_side", 1))
    return _int8(sc.train, meta)


def server_windows(meta: dict) -> np.ndarray:
    """The server's own windows: the model's pre-training windows (the source domain's training
    subjects of its split, unshifted), int8 through the device's input path. No board sent them;
    the DP refit's public centre is computed from them (refit_dp.public_centre)."""
    return _server(_meta_key(meta))
