"""Real IMU data: the smartwatch shoulder-exercise set, windowing, splits and domain shifts.

The data set ships inside the `seglearn` wheel (BSD-3) as `seglearn/data/watch_dataset.npy`;
we read that file directly and never import `seglearn` (which would pull scipy/scikit-learn).
Nothing is fetched at run time. Recorded device sessions (CSV/NPZ with columns
ax,ay,az,gx,gy,gz,label) load into the same `Recording` records and go through the same
windowing. docs/data.md documents every choice made here.

Pipeline: recordings -> (domain shift) -> windows (raw units: g, rad/s) -> `Norm.apply` ->
model input. The normalization is per channel with statistics of the training split; the
exported metadata folds it into the input quantization (`Norm.fold`).
"""

from __future__ import annotations

import csv
import importlib.util
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

CHANNELS = ("ax", "ay", "az", "gx", "gy", "gz")  # accel in g, gyro in rad/s
WATCH_CLASSES = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
WATCH_RATE_HZ = 50
WINDOW = 100  # 2 s at 50 Hz
STEP = 50  # 50 % overlap
SCENARIOS = ("rotation", "side", "subject")
DEFAULT_ROTATION_DEG = (90.0, 0.0, 0.0)  # board turned 90 degrees about its z axis (zyx Euler)
DEFAULT_VAL_SUBJECTS = (8,)
DEFAULT_TEST_SUBJECTS = (9, 10)
DEFAULT_PERSONAL_FRACTIONS = (0.3, 0.2, 0.5)  # adapt-fit | adapt-val | eval, in time per recording


@dataclass
class Recording:
    """One continuous recording of one exercise: x is (n, 6) float32 in g and rad/s."""

    x: np.ndarray
    label: int
    subject: int = 0
    side: int = 0
    name: str = ""


@dataclass
class Dataset:
    recordings: list[Recording]
    class_names: tuple[str, ...]
    sample_rate: int
    source: str = ""

    def subjects(self) -> list[int]:
        return sorted({r.subject for r in self.recordings})

    def select(self, subjects: Iterable[int] | None = None, sides: Iterable[int] | None = None) -> list[Recording]:
        s = None if subjects is None else set(subjects)
        d = None if sides is None else set(sides)
        return [r for r in self.recordings if (s is None or r.subject in s) and (d is None or r.side in d)]


@dataclass
class Windows:
    """Fixed-length windows: x (N, T, 6) float32, y (N,), and where each came from."""

    x: np.ndarray
    y: np.ndarray
    rec: np.ndarray  # index into the recording list the windows were cut from
    start: np.ndarray  # first sample of the window inside its recording

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> "Windows":
        return Windows(self.x[idx], self.y[idx], self.rec[idx], self.start[idx])

    @staticmethod
    def concat(parts: Sequence["Windows"]) -> "Windows":
        return Windows(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "y", "rec", "start")))


# ----------------------------------------------------------------------------- loading


def watch_path() -> str:
    """Path of the installed seglearn data file (raises if the wheel is not installed)."""
    spec = importlib.util.find_spec("seglearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the seglearn wheel is not installed (pip install --no-deps seglearn==1.2.5)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "watch_dataset.npy")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing from the seglearn install")
    return path


def load_watch() -> Dataset:
    """The 140 recordings (10 subjects x 2 arms x 7 exercises) of the seglearn watch set."""
    d = np.load(watch_path(), allow_pickle=True).item()
    if tuple(d["X_labels"]) != ("ax", "ay", "az", "wx", "wy", "wz"):
        raise ValueError(f"unexpected channel labels {d['X_labels']}")
    recs = [
        Recording(np.asarray(x, np.float32), int(y), int(s), int(side), f"watch/{i}")
        for i, (x, y, s, side) in enumerate(zip(d["X"], d["y"], d["subject"], d["side"]))
    ]
    return Dataset(recs, tuple(d["y_labels"]), WATCH_RATE_HZ, "seglearn watch_dataset.npy (BSD-3)")


def load_session(path: str, class_names: Sequence[str] = WATCH_CLASSES, subject: int = 0, side: int = 0) -> list[Recording]:
    """A recorded device session (CSV with a header, or NPZ) as recordings.

    Columns ax,ay,az,gx,gy,gz,label (accel in g, gyro in rad/s); label is a class name or an
    integer index. NPZ holds either those seven arrays or `x` (n, 6) and `label`/`y` (n,).
    Every run of consecutive equal labels becomes one recording; negative labels (or an
    empty label) mark unlabelled samples and are dropped.
    """
    if path.endswith(".npz"):
        z = np.load(path, allow_pickle=False)
        if "x" in z:
            x = np.asarray(z["x"], np.float32)
            lab = z["label"] if "label" in z else z["y"]
        else:
            x = np.stack([np.asarray(z[c], np.float32) for c in CHANNELS], axis=1)
            lab = z["label"]
        labels = [_label_index(v, class_names) for v in np.asarray(lab).tolist()]
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        missing = [c for c in (*CHANNELS, "label") if rows and c not in rows[0]]
        if missing:
            raise ValueError(f"{path}: missing columns {missing} (need {','.join(CHANNELS)},label)")
        x = np.array([[float(r[c]) for c in CHANNELS] for r in rows], np.float32).reshape(-1, 6)
        labels = [_label_index(r["label"], class_names) for r in rows]
    if x.ndim != 2 or x.shape[1] != 6 or len(labels) != len(x):
        raise ValueError(f"{path}: expected (n, 6) samples with n labels, got {x.shape} and {len(labels)}")
    recs, i = [], 0
    base = os.path.basename(path)
    while i < len(x):
        j = i
        while j < len(x) and labels[j] == labels[i]:
            j += 1
        if labels[i] >= 0:
            recs.append(Recording(x[i:j].copy(), labels[i], subject, side, f"{base}[{i}:{j}]"))
        i = j
    return recs


def write_session(path: str, recs: Sequence[Recording], class_names: Sequence[str] = WATCH_CLASSES) -> None:
    """Write recordings as a session file `load_session` reads back (CSV with class names, or NPZ).

    Useful to replay real data through the device app's replay sensor in emulation.
    """
    x = np.concatenate([r.x for r in recs]).astype(np.float32) if recs else np.zeros((0, 6), np.float32)
    lab = np.concatenate([np.full(len(r.x), r.label, np.int64) for r in recs]) if recs else np.zeros(0, np.int64)
    if path.endswith(".npz"):
        np.savez(path, **{c: x[:, i] for i, c in enumerate(CHANNELS)}, label=lab)
        return
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*CHANNELS, "label"])
        for row, y in zip(x, lab):
            w.writerow([f"{v:.6g}" for v in row] + [class_names[y]])


def _label_index(v: Any, class_names: Sequence[str]) -> int:
    if isinstance(v, (int, np.integer)):
        return int(v)
    s = str(v).strip()
    if s == "":
        return -1
    if s in class_names:
        return list(class_names).index(s)
    try:
        return int(float(s))
    except ValueError:
        raise ValueError(f"unknown label {s!r}; classes are {list(class_names)}") from None


# ----------------------------------------------------------------------------- windows


def make_windows(recs: Sequence[Recording], window: int = WINDOW, step: int = STEP,
                 region: tuple[float, float] = (0.0, 1.0)) -> Windows:
    """Cut every recording into windows of `window` samples every `step` samples.

    `region` = (a, b) restricts each recording to samples [round(a*n), round(b*n)); windows
    never cross the region's edges, so windows from disjoint regions share no sample. The
    tail shorter than a window is dropped.
    """
    xs, ys, rs, ss = [], [], [], []
    for i, r in enumerate(recs):
        n = len(r.x)
        lo, hi = int(round(region[0] * n)), int(round(region[1] * n))
        for s in range(lo, hi - window + 1, step):
            xs.append(r.x[s:s + window])
            ys.append(r.label)
            rs.append(i)
            ss.append(s)
    if not xs:
        return Windows(np.zeros((0, window, 6), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Windows(np.stack(xs).astype(np.float32), np.array(ys, np.int64), np.array(rs, np.int64), np.array(ss, np.int64))


# ----------------------------------------------------------------------------- normalization


@dataclass
class Norm:
    """Per-channel standardization x' = (x - mean) / std, statistics from the training split."""

    mean: np.ndarray
    std: np.ndarray

    @staticmethod
    def fit(w: Windows | np.ndarray) -> "Norm":
        x = (w.x if isinstance(w, Windows) else w).reshape(-1, 6).astype(np.float64)
        return Norm(x.mean(0).astype(np.float32), np.maximum(x.std(0), 1e-6).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def fold(self, input_scale: float, input_zero_point: int) -> dict[str, list[float]]:
        """Quantization of RAW sensor values straight to the model's int8 input.

        q[c] = clamp(round(x_raw[c] / scale[c] + zero_point[c]), -128, 127) equals the model's
        int8 quantization of the normalized value, with scale[c] = s_in * std[c] and
        zero_point[c] = zp_in - mean[c] / (s_in * std[c]) (a float: it is only ever added
        before rounding). So the device skips the normalization step.
        """
        scale = input_scale * self.std.astype(np.float64)
        zp = input_zero_point - self.mean.astype(np.float64) / scale
        return {"scale": [float(v) for v in scale], "zero_point": [float(v) for v in zp]}

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Norm":
        return Norm(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


# ----------------------------------------------------------------------------- rotation shift


def rotation_matrix(euler_deg: Sequence[float]) -> np.ndarray:
    """Rotation R = Rz(a) @ Ry(b) @ Rx(c) for intrinsic z-y-x Euler angles (a, b, c) in degrees."""
    a, b, c = np.deg2rad(np.asarray(euler_deg, np.float64))
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def random_rotation(seed: int) -> np.ndarray:
    """A rotation drawn uniformly from SO(3) (unit quaternion from a seeded normal draw)."""
    q = np.random.default_rng(seed).normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotate(recs: Sequence[Recording], r: np.ndarray) -> list[Recording]:
    """The same recordings as seen by a sensor mounted rotated: both 3-vectors become R @ v.

    A sensor frame rotated by R^T relative to the original measures R @ v for every
    physical vector v; accelerometer and gyroscope sit on the same die, so they share R.
    """
    r = np.asarray(r, np.float64)
    if r.shape != (3, 3) or not np.allclose(r @ r.T, np.eye(3), atol=1e-9) or np.linalg.det(r) < 0:
        raise ValueError("rotation must be a proper 3x3 rotation matrix")
    return [replace(rec, x=rotate_array(rec.x, r), name=rec.name + "+rot") for rec in recs]


def rotate_array(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Rotate (..., 6) samples: accel (channels 0-2) and gyro (3-5) both become R @ v."""
    x64 = np.asarray(x, np.float64)
    r = np.asarray(r, np.float64)
    return np.concatenate([x64[..., :3] @ r.T, x64[..., 3:] @ r.T], axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    """Source-domain splits for pre-training and a shifted domain for personalization.

    train/val/test are windows of the source domain (test: the test subjects in the source
    condition, i.e. what the model sees without the shift). The shifted domain is split in
    time inside every recording: fit (adaptation samples), fit_val (learning-rate tuning) and
    eval (held-out measurement); the three regions share no sample.
    """

    name: str
    class_names: tuple[str, ...]
    sample_rate: int
    window: int
    step: int
    norm: Norm
    train: Windows
    val: Windows
    test: Windows
    shift_fit: Windows
    shift_val: Windows
    shift_eval: Windows
    info: dict[str, Any] = field(default_factory=dict)


def build_scenario(name: str, ds: Dataset | None = None, *, window: int = WINDOW, step: int = STEP,
                   val_subjects: Sequence[int] = DEFAULT_VAL_SUBJECTS,
                   test_subjects: Sequence[int] = DEFAULT_TEST_SUBJECTS, train_side: int = 1,
                   rotation_deg: Sequence[float] | None = DEFAULT_ROTATION_DEG, rotation_seed: int | None = None,
                   fractions: Sequence[float] = DEFAULT_PERSONAL_FRACTIONS) -> Scenario:
    """Build one of SCENARIOS.

    - rotation: source = both arms; shifted = the test subjects (both arms) with accel and gyro
      rotated by the same R (Euler angles `rotation_deg`, or a seeded random R if
      `rotation_seed` is given);
    - side: source = arm `train_side`; shifted = the test subjects' other arm;
    - subject: source = both arms of the training subjects; shifted = the test subjects (source
      `test` is then the validation subjects: a new person has no unshifted condition).
    Subjects not in val/test are training subjects.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {SCENARIOS}")
    ds = ds or load_watch()
    val_s, test_s = set(val_subjects), set(test_subjects)
    if val_s & test_s:
        raise ValueError(f"validation subjects {sorted(val_s)} and test subjects {sorted(test_s)} overlap")
    train_s = [s for s in ds.subjects() if s not in val_s | test_s]
    sides = (train_side,) if name == "side" else None
    src_train = ds.select(train_s, sides)
    src_val = ds.select(val_s, sides)
    src_test = ds.select(test_s, sides)
    info: dict[str, Any] = {"scenario": name, "train_subjects": train_s, "val_subjects": sorted(val_s),
                            "test_subjects": sorted(test_s), "window": window, "step": step,
                            "fractions": list(fractions)}
    if name == "rotation":
        r = random_rotation(rotation_seed) if rotation_seed is not None else rotation_matrix(rotation_deg)
        shifted = rotate(src_test, r)
        info.update(rotation=r.tolist(), rotation_deg=None if rotation_seed is not None else list(rotation_deg),
                    rotation_seed=rotation_seed, sides=[0, 1])
    elif name == "side":
        shifted = ds.select(test_s, (1 - train_side,))
        info.update(train_side=train_side, shifted_side=1 - train_side)
    else:
        shifted = src_test
        src_test = src_val
        info.update(sides=[0, 1])
    train = make_windows(src_train, window, step)
    norm = Norm.fit(train)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions {list(fractions)} must be three positive numbers summing to 1")
    f0, f1, _ = fractions
    a, b = f0, f0 + f1
    sc = Scenario(
        name, ds.class_names, ds.sample_rate, window, step, norm, train,
        make_windows(src_val, window, step), make_windows(src_test, window, step),
        make_windows(shifted, window, step, (0.0, a)), make_windows(shifted, window, step, (a, b)),
        make_windows(shifted, window, step, (b, 1.0)), info,
    )
    info["counts"] = {k: len(getattr(sc, k)) for k in ("train", "val", "test", "shift_fit", "shift_val", "shift_eval")}
    info["norm"] = norm.to_json()
    return sc


def per_class_sample(w: Windows, k: int, seed: int) -> np.ndarray:
    """Indices of up to k windows per class, drawn without replacement with `seed`."""
    rng = np.random.default_rng(seed)
    idx = [rng.permutation(np.flatnonzero(w.y == c))[:k] for c in np.unique(w.y)]
    return np.sort(np.concatenate(idx)) if idx else np.zeros(0, np.int64)
