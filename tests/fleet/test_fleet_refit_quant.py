"""The quantized refit statistics (docs/fleet-refit.md §7, fleet/refit_quant.py and
firmware/refit_quant.py): the board's MicroPython quantizer gives the twin's bytes (under CPython
on many random statistics, and on unix-port boards with the C module after m.refit_stats); the
server's dequantized statistics are within half a step of every row's exponent of the exact ones
(one step where the row's largest value saturated), and exact where no row needed an exponent; the wire size is wire_bytes; malformed uploads and bad
settings are ValueErrors saying what is wrong; projection only touches an indefinite scatter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgetune.fleet import refit_quant as rq, refit_stats as rs
from edgetune.fleet.board import UnixBoard
from edgetune.twin.training import Trainer

from tests.support.trainingcases import refittable_models, stepped_state

ROOT = Path(__file__).resolve().parents[2]


def _firmware():
    spec = importlib.util.spec_from_file_location("fw_refit_quant", ROOT / "firmware" / "refit_quant.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _random_stats(rng, K, C, n, lo=-128, hi=384):
    """refit.stats-style statistics of n random centred feature vectors (the device's ranges)."""
    u = rng.integers(lo, hi, (n, K)).astype(np.int64)
    y = rng.integers(0, C, n)
    from edgetune.twin import refit as rf

    return rf.stats(u, y, C), u, y


def _v_rows(st, m):
    """The exact rows of v = u - m statistics, in wire order (G's lower triangle rows, then B)."""
    K = st["g"].shape[0]
    n = st["n"]
    gv = st["g"] - np.outer(st["s1"], m) - np.outer(m, st["s1"]) + n * np.outer(m, m)
    bv = st["b"] - np.outer(st["cnt"], m)
    return [gv[r, :r + 1] for r in range(K)] + list(bv)


@pytest.mark.parametrize("case", range(40))
def test_the_board_quantizer_is_the_twin_and_the_error_is_half_a_step(case):
    fw = _firmware()
    rng = np.random.default_rng([7, case])
    K, C = int(rng.integers(1, 12)), int(rng.integers(2, 8))
    bits = int(rng.integers(rq.MIN_BITS, rq.MAX_BITS + 1))
    st, _, _ = _random_stats(rng, K, C, int(rng.integers(2, 300)))
    m = rng.integers(-200, 300, K)
    wire = rq.quantize(st, m, bits)
    assert len(wire) == rq.wire_bytes(K, C, bits)
    assert fw.quantize(rs.pack(st), [int(v) for v in m], bits) == wire
    back = rq.unpack(wire, K, C, bits, m)
    assert back["n"] == st["n"] and np.array_equal(back["cnt"], st["cnt"])
    exps = np.frombuffer(wire, np.uint8)[2 * C:2 * C + K + C]
    got, want = _v_rows(back, m), _v_rows(st, m)
    hi = 1 << (bits - 1)
    for e, g, w in zip(exps, got, want):
        step = 1 << int(e)
        err = np.abs(g - w)
        sat = ((w + step // 2) >> int(e)) > hi - 1  # rounded past the largest code: saturated
        assert err[~sat].max(initial=0) <= step // 2 and err[sat].max(initial=0) <= step, (case, e)
    assert np.array_equal(back["s1"], back["b"].sum(0))


def test_without_exponents_the_round_trip_is_exact():
    rng = np.random.default_rng(3)
    st, _, _ = _random_stats(rng, 4, 3, 3, -8, 8)
    m = np.zeros(4, np.int64)
    wire = rq.quantize(st, m, 16)
    assert not any(np.frombuffer(wire, np.uint8)[6:6 + 7])
    back = rq.unpack(wire, 4, 3, 16, m)
    for key in ("n", "cnt", "s1", "g", "b"):
        assert np.array_equal(back[key], st[key]), key


def test_malformed_uploads_and_bad_settings_are_refused():
    rng = np.random.default_rng(5)
    K, C, bits = 5, 3, 10
    st, _, _ = _random_stats(rng, K, C, 40)
    m = rng.integers(0, 50, K)
    wire = rq.quantize(st, m, bits)
    with pytest.raises(ValueError, match="expected"):
        rq.unpack(wire[:-1], K, C, bits, m)
    with pytest.raises(ValueError, match="expected"):
        rq.unpack(wire, K, C, bits + 1, m)
    bad = bytearray(wire)
    bad[2 * C] = 40  # G row 0: 2^(9 + 40) is more than any int32 statistics about an int16 centre
    with pytest.raises(ValueError, match="row 0 has exponent 40 > 39"):
        rq.unpack(bytes(bad), K, C, bits, m)
    bad = bytearray(wire)
    bad[2 * C + K] = 255  # a B row
    with pytest.raises(ValueError, match=f"row {K} has exponent 255 > 23"):
        rq.unpack(bytes(bad), K, C, bits, m)
    bad = bytearray(wire)
    bad[2 * C:2 * C + K + C] = bytes([39] * K + [23] * C)  # every exponent at its limit: no overflow,
    with pytest.raises(ValueError, match="beyond 2"):  # but not statistics a board can send
        rq.unpack(bytes(bad), K, C, bits, m)
    vals = K * (K + 1) // 2 + C * K
    if (vals * bits) % 8:
        bad = bytearray(wire)
        bad[-1] |= 0x80
        with pytest.raises(ValueError, match="padding"):
            rq.unpack(bytes(bad), K, C, bits, m)
    for b in (3, 17, 12.5):
        with pytest.raises(ValueError, match="bits"):
            rq.quantize(st, m, b)
    with pytest.raises(ValueError, match="centre must be 5 int16"):
        rq.quantize(st, np.zeros(4, np.int64), bits)
    with pytest.raises(ValueError, match="centre must be 5 int16"):
        rq.quantize(st, np.full(5, 40000), bits)
    with pytest.raises(ValueError, match="centre must be 5 int16"):
        rq.unpack(wire, K, C, bits, np.zeros(5))
    fw = _firmware()
    with pytest.raises(ValueError, match="do not fit"):
        fw.quantize(rs.pack(st)[:-4], [int(v) for v in m], bits)
    with pytest.raises(ValueError, match="bits"):
        fw.quantize(rs.pack(st), [int(v) for v in m], 17)


def test_projection_only_when_the_scatter_is_indefinite():
    rng = np.random.default_rng(9)
    st, _, _ = _random_stats(rng, 6, 3, 50)
    same, projected = rq.project(st)
    assert same is st and not projected
    bad = dict(st, g=st["g"].copy())
    bad["g"][0, 0] -= 10 ** 8  # a negative direction
    fixed, projected = rq.project(bad)
    assert projected
    s1 = fixed["s1"].astype(float)
    a0 = fixed["n"] * fixed["g"].astype(float) - np.outer(s1, s1)
    assert np.linalg.eigvalsh(a0).min() > -fixed["n"] * 6  # G rounded to integers: n/2 per entry at most


@pytest.mark.parametrize("seed,model", refittable_models(6))
def test_unix_boards_send_the_twins_quantized_statistics(micropython, tmp_path, seed, model):
    rng = np.random.default_rng([43, seed])
    etm, glob = stepped_state(model, rng)
    (tmp_path / "m.etm").write_bytes(etm)
    n_in, n_cls = model.input_tensor.size, model.output_tensor.size
    K, C = rs.dims(Trainer(etm))
    m = rng.integers(-20, 120, K)
    board = UnixBoard(tmp_path / "board")
    for bits in (4, 9, 12, 16):
        n = int(rng.integers(2, 30))
        x = rng.integers(-128, 128, (n, n_in)).astype(np.int8)
        y = rng.integers(0, n_cls, n)
        t = Trainer(etm)
        t.load_state(glob)
        want = rq.quantize(rs.client_stats(t, x, y), m, bits)
        got = board.refit_stats(str(tmp_path / "m.etm"), glob, x, y, (bits, m))
        assert got == want, (seed, bits)
    # without quant the same board sends the exact statistics again
    assert board.refit_stats(str(tmp_path / "m.etm"), glob, x, y) == rs.pack(rs.client_stats(t, x, y))


def test_flower_refit_round_with_quantized_statistics(tmp_path):
    """`edgetune fleet refit --bits 12`: one query round through Flower's Simulation Engine (16
    ClientApps on the twin); every upload is wire_bytes long and the global state written is the
    solve of the boards' dequantized statistics summed (about the server's centre); bad
    arguments are refused before anything runs."""
    from tests.support.fleetcli import demo_model, fleet_refit
    from edgetune.fleet import client
    from edgetune.fleet.data import fleet_data, server_windows

    path = demo_model()
    out = tmp_path / "glob.state"
    res = fleet_refit(out, ["--l2", "0.01", "--alpha", "1", "--bits", "12"],
                      bad=((["--l2", "0.01", "--alpha", "1", "--bits", "3"], "bits=3"),
                           (["--l2", "0.01", "--alpha", "1", "--bits", "12", "--dp-epsilon", "8"], "--bits")))
    buf, _, _ = client._model(path)
    t = Trainer(buf)
    fd = fleet_data(t.model.meta)
    K, C = rs.dims(t)
    assert res["clients"] == len(fd.clients) and res["bytes_up_per_client"] == rq.wire_bytes(K, C, 12)
    assert res["bits"] == 12 and res["held_out_after"] > res["held_out_before"] + 0.2
    m = rq.centre(t, server_windows(t.model.meta))
    ups = [rq.unpack(rq.quantize(rs.client_stats(t, c.x, c.y), m, 12), K, C, 12, m) for c in fd.clients]
    st, projected = rq.pooled(ups)
    assert res["projected"] == projected
    assert out.read_bytes() == rs.global_state(t, st, 0.01, 1.0)
