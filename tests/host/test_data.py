"""The real IMU data set (seglearn smartwatch exercises), windows, splits, shifts, sessions.

Everything runs on the installed data file (offline); no TensorFlow here.
"""

import collections

import numpy as np
import pytest

from edgetune.learn import data


@pytest.fixture(scope="module")
def ds():
    return data.load_watch()


@pytest.fixture(scope="module")
def rot():
    return data.build_scenario("rotation")


def test_dataset_loads_offline_with_expected_shape(ds):
    # 10 subjects x 2 arms x 7 exercises, 6 channels at 50 Hz, 244 102 samples in all
    assert len(ds.recordings) == 140
    assert ds.class_names == data.WATCH_CLASSES
    assert ds.sample_rate == 50
    assert ds.subjects() == list(range(1, 11))
    assert all(r.x.ndim == 2 and r.x.shape[1] == 6 and r.x.dtype == np.float32 for r in ds.recordings)
    assert sum(len(r.x) for r in ds.recordings) == 244102
    assert min(len(r.x) for r in ds.recordings) == 947 and max(len(r.x) for r in ds.recordings) == 2618
    assert collections.Counter(r.label for r in ds.recordings) == {c: 20 for c in range(7)}
    per = collections.Counter((r.subject, r.side) for r in ds.recordings)
    assert per == {(s, side): 7 for s in range(1, 11) for side in (0, 1)}
    # each (subject, arm) holds every exercise exactly once
    for s in range(1, 11):
        for side in (0, 1):
            assert sorted(r.label for r in ds.select([s], [side])) == list(range(7))
    # accelerometer in g: the average magnitude is about one g (gravity plus motion)
    acc = np.concatenate([r.x[:, :3] for r in ds.recordings])
    assert 0.9 < np.linalg.norm(acc, axis=1).mean() < 1.4
    assert np.isfinite(acc).all()


def test_windows_cut_as_specified(ds):
    rec = ds.recordings[:3]
    w = data.make_windows(rec, 100, 50)
    expect = sum((len(r.x) - 100) // 50 + 1 for r in rec)
    assert w.x.shape == (expect, 100, 6) and len(w.y) == expect
    for i in (0, expect // 2, expect - 1):
        r = rec[w.rec[i]]
        np.testing.assert_array_equal(w.x[i], r.x[w.start[i]:w.start[i] + 100])
        assert w.y[i] == r.label
    # another length and step
    w2 = data.make_windows(rec[:1], 64, 64)
    assert len(w2) == len(rec[0].x) // 64


def test_regions_share_no_sample(rot):
    # the shifted domain's fit / fit-val / eval windows come from disjoint time regions
    def spans(w):
        return {(int(r), int(s)) for r, s in zip(w.rec, w.start)}

    cover = collections.defaultdict(set)
    for name in ("shift_fit", "shift_val", "shift_eval"):
        w = getattr(rot, name)
        assert len(w) > 0 and set(np.unique(w.y)) == set(range(7)), name
        for r, s in spans(w):
            cover[r].update((name, t) for t in range(s, s + rot.window))
    for r, items in cover.items():
        by_sample = collections.defaultdict(set)
        for name, t in items:
            by_sample[t].add(name)
        assert all(len(v) == 1 for v in by_sample.values()), f"recording {r}: a sample is in two regions"


def test_splits_are_disjoint_by_subject(ds):
    for name in data.SCENARIOS:
        sc = data.build_scenario(name, ds)
        tr, va, te = (set(sc.info[k]) for k in ("train_subjects", "val_subjects", "test_subjects"))
        assert tr and va and te and not (tr & va) and not (tr & te) and not (va & te), name
        assert tr | va | te == set(range(1, 11))
        counts = sc.info["counts"]
        assert all(v > 0 for v in counts.values()), (name, counts)
    side = data.build_scenario("side", ds, train_side=1)
    assert side.info["shifted_side"] == 0
    with pytest.raises(ValueError, match="overlap"):
        data.build_scenario("rotation", ds, val_subjects=[9], test_subjects=[9, 10])


def test_rotation_changes_data_and_preserves_norms(rot, ds):
    r = np.asarray(rot.info["rotation"])
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)
    # default: 90 degrees about z maps the x axis onto y
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    x = np.concatenate([rec.x for rec in ds.select(rot.info["test_subjects"])])
    y = data.rotate_array(x, r)
    # the data really change (by about the signal's own size) ...
    assert np.abs(y - x).mean() > 0.3 * np.abs(x).mean()
    # ... the accelerometer and gyroscope magnitudes do not ...
    for sl in (slice(0, 3), slice(3, 6)):
        np.testing.assert_allclose(np.linalg.norm(y[:, sl], axis=1), np.linalg.norm(x[:, sl], axis=1), rtol=1e-5, atol=1e-5)
    # ... and both 3-vectors went through the SAME rotation
    np.testing.assert_allclose(y[:, :3], x[:, :3] @ r.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[:, 3:], x[:, 3:] @ r.T, rtol=1e-5, atol=1e-5)
    # the scenario's shifted windows are exactly the rotated test-subject recordings
    src = data.make_windows(ds.select(rot.info["test_subjects"]), rot.window, rot.step, (0.5, 1.0))
    np.testing.assert_allclose(rot.shift_eval.x, data.rotate_array(src.x, r), rtol=1e-6, atol=1e-6)
    # a seeded random rotation is proper, reproducible and differs between seeds
    a, b = data.random_rotation(1), data.random_rotation(2)
    assert np.allclose(a @ a.T, np.eye(3)) and np.isclose(np.linalg.det(a), 1.0)
    np.testing.assert_array_equal(a, data.random_rotation(1))
    assert not np.allclose(a, b)
    with pytest.raises(ValueError):
        data.rotate(ds.recordings[:1], np.diag([1.0, 1.0, -1.0]))  # a reflection is not a mounting


def test_normalization_from_training_split_and_folding(rot):
    z = rot.norm.apply(rot.train.x).reshape(-1, 6)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
    # folded raw-input quantization == normalize, then quantize with the model's input params
    s_in, z_in = 0.07, 5
    f = rot.norm.fold(s_in, z_in)
    x = rot.test.x[:50].astype(np.float64)
    q_fold = np.clip(np.round(x / np.array(f["scale"]) + np.array(f["zero_point"])), -128, 127)
    q_ref = np.clip(np.round(((x - rot.norm.mean) / rot.norm.std) / s_in) + z_in, -128, 127)
    diff = np.abs(q_fold - q_ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # only float ties at .5 may differ


def test_per_class_sample(rot):
    idx = data.per_class_sample(rot.shift_fit, 4, seed=3)
    assert collections.Counter(rot.shift_fit.y[idx].tolist()) == {c: 4 for c in range(7)}
    np.testing.assert_array_equal(idx, data.per_class_sample(rot.shift_fit, 4, seed=3))
    assert not np.array_equal(idx, data.per_class_sample(rot.shift_fit, 4, seed=4))


def test_recorded_session_loads_through_the_same_api(tmp_path, ds):
    rec = ds.recordings[0]
    n = 300
    x = rec.x[:2 * n]
    labels = ["ABD"] * n + ["ROW"] * n
    csv = tmp_path / "session.csv"
    with open(csv, "w") as f:
        f.write("ax,ay,az,gx,gy,gz,label\n")
        for row, lab in zip(x, labels):
            f.write(",".join(f"{v:.6f}" for v in row) + f",{lab}\n")
    recs = data.load_session(str(csv))
    assert [r.label for r in recs] == [1, 6] and [len(r.x) for r in recs] == [n, n]
    np.testing.assert_allclose(recs[0].x, x[:n], atol=1e-6)
    w = data.make_windows(recs)
    assert w.x.shape == (2 * ((n - 100) // 50 + 1), 100, 6)
    # NPZ, column form with integer labels; -1 marks unlabelled samples
    lab = np.array([2] * n + [-1] * 10 + [2] * n)
    xx = np.concatenate([x[:n], x[:10], x[n:]])
    npz = tmp_path / "session.npz"
    np.savez(npz, **{c: xx[:, i] for i, c in enumerate(data.CHANNELS)}, label=lab)
    recs = data.load_session(str(npz))
    assert [r.label for r in recs] == [2, 2] and [len(r.x) for r in recs] == [n, n]
    # NPZ, matrix form
    np.savez(npz, x=x, y=np.zeros(len(x), int))
    assert [len(r.x) for r in data.load_session(str(npz))] == [2 * n]
    bad = tmp_path / "bad.csv"
    bad.write_text("ax,ay,az,label\n1,2,3,PEN\n")
    with pytest.raises(ValueError, match="missing columns"):
        data.load_session(str(bad))
    bad.write_text("ax,ay,az,gx,gy,gz,label\n1,2,3,4,5,6,JUMP\n")
    with pytest.raises(ValueError, match="unknown label"):
        data.load_session(str(bad))


def test_write_session_round_trip(tmp_path, ds):
    recs = [ds.recordings[3], ds.recordings[7]]
    assert recs[0].label != recs[1].label  # adjacent runs stay separate recordings
    for name in ("s.csv", "s.npz"):
        data.write_session(str(tmp_path / name), recs)
        back = data.load_session(str(tmp_path / name))
        assert [r.label for r in back] == [r.label for r in recs]
        for a, b in zip(back, recs):
            np.testing.assert_allclose(a.x, b.x, rtol=1e-5, atol=1e-6)
