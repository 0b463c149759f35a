"""The device app (firmware/*.py) on the real unix-port MicroPython under the RP2040 heap budget.

- Adaptation: the pre-trained reference model of `make demo` (Keras `small`, rotation scenario,
  cached in build/demo/model; built with the pretrain/quantize/export verbs if missing) sees the
  shifted domain (test subjects, sensor turned 90 degrees) through the replay sensor. For 3 seeds
  (which windows are collected, the step order) the app collects 8 windows per class (1 in 4 held
  back), trains 6 epochs at lr 0.01 and scores the 478 eval-region windows: accuracy must rise by
  at least MARGIN (0.15) on every seed (measured: 0.169 -> 0.42-0.47).
- The "before" accuracy equals the host's int8 twin on the same windows (the device quantizes
  raw samples with the folded normalization; ties may differ by one LSB).
- Restart: a new process restores the saved weights bit-identically (same file bytes when saved
  again, same logits); a corrupted file is ignored with a warning and the flashed weights are used;
  a stale .tmp from an interrupted save is removed and the last good file still loads.
- `edgetune train`'s generated REPL code runs on the app; the board verbs build the right argv.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.device import board, emulate

from tests.support.deviceapp import FIRMWARE, HEAP, demo, demo_assets, run_device

REPO = Path(__file__).resolve().parents[2]
MARGIN = 0.15
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def assets(micropython) -> dict:
    return demo_assets()


def scores(rows: list[dict]) -> list[float]:
    return [r["acc"] for r in rows if r["ev"] == "score"]


@pytest.mark.parametrize("seed", SEEDS)
def test_adaptation_improves_shifted_accuracy(assets, tmp_path, seed):
    code = demo.adapt_script(assets["etm"], assets["adapt"], assets["eval"], tmp_path / "w.etw",
                             n=8, epochs=6, lr=0.01, seed=seed)
    _, rows = run_device(code, tmp_path)
    before, after = scores(rows)
    boot = next(r for r in rows if r["ev"] == "boot")
    end = next(r for r in rows if r["ev"] == "end")
    assert boot["impl"] == "c" and boot["heap_total"] <= HEAP
    # 7 classes x 8 windows: per class the last 2 check, the one before them dropped, 5 train;
    # SGD may stop early (no better check result for recipe.PATIENCE epochs)
    assert end["steps"] % 35 == 0 and 0 < end["steps"] <= 6 * 35
    assert sum(r["ev"] == "train" for r in rows) == end["steps"]
    assert end["peak"] == end["arena"] == boot["arena"]
    stages = [r.get("stage") for r in rows if r["ev"] == "recipe"]
    assert stages[0] == "before" and stages[-1] == "sgd", stages
    guard = next(r for r in rows if r["ev"] == "guard" and r["stage"] == "final")
    assert guard["n"] == 14 and guard["kept"] == end["kept"]
    print(f"seed {seed}: accuracy {before:.3f} -> {after:.3f}; check {guard['before']:.3f} -> "
          f"{guard['after']:.3f} kept {guard['kept']}")
    assert after >= before + MARGIN, (before, after)
    assert (tmp_path / "w.etw").exists()


def test_before_accuracy_matches_host_twin(assets, tmp_path):
    """The device's windows and predictions equal the host's int8 pipeline on the eval session."""
    from edgetune.learn import data
    from edgetune.format.modelfile import read_etm
    from edgetune.twin.reference import forward_batch

    code = f"""
import app
app.boot({str(assets['etm'])!r}, weights=None, config=None)
print("acc", app.score({str(assets['eval'])!r}))
"""
    out, rows = run_device(code, tmp_path)
    dev_acc = scores(rows)[0]
    etm = read_etm(assets["etm"].read_bytes())
    meta = etm.meta
    riq = meta["raw_input_quant"]
    recs = data.load_session(str(assets["eval"]), meta["class_names"])
    w = data.make_windows(recs, meta["window"], meta["step"])
    q = np.clip(np.round(w.x / np.asarray(riq["scale"]) + np.asarray(riq["zero_point"])), -128, 127).astype(np.int8)
    logits = forward_batch(etm, q).reshape(len(q), -1)
    pred = np.argmax(logits, axis=1)  # first of equal maxima, as predict_class
    host_acc = float(np.mean(pred == w.y))
    assert rows[-1]["n"] == len(w)
    assert abs(dev_acc - host_acc) <= 2 / len(w), (dev_acc, host_acc)


BOOT = """
import app
app.boot({etm!r}, weights={w!r}, config=None)
"""
# logits of the first 20 eval windows, then the weights saved again under another name
CHECK = """
app.S.model.save({copy!r})
import collect, sensors
src = sensors.Replay({evalp!r}, app.S.names, loop=False)
win = collect.Windower(app.S.quant, app.S.window, app.S.step)
outs = []
while len(outs) < 20:
    w = win.push(src.read())
    if w is not None:
        outs.append(app.S.model.predict(w).hex())
print("LOGITS", ",".join(outs))
"""
RESTART_CHECK = BOOT + CHECK


def _logits(out: str) -> list[str]:
    return next(s for s in out.splitlines() if s.startswith("LOGITS ")).split(" ", 1)[1].split(",")


@pytest.fixture(scope="module")
def trained(assets, tmp_path_factory) -> dict:
    """One adaptation run that saved its weights; logits of 20 eval windows after training."""
    d = tmp_path_factory.mktemp("trained")
    code = demo.adapt_script(assets["etm"], assets["adapt"], assets["eval"], d / "w.etw", n=8, epochs=3,
                             lr=0.01, seed=0)
    code += CHECK.format(copy=str(d / "same.etw"), evalp=str(assets["eval"]))  # same process, no reboot
    out, rows = run_device(code, d)
    assert (d / "same.etw").read_bytes() == (d / "w.etw").read_bytes()
    return {"dir": d, "logits": _logits(out), "weights": (d / "w.etw").read_bytes()}


def test_restart_restores_weights_bit_identically(assets, trained, tmp_path):
    w = tmp_path / "w.etw"
    w.write_bytes(trained["weights"])
    out, rows = run_device(RESTART_CHECK.format(etm=str(assets["etm"]), w=str(w), copy=str(tmp_path / "copy.etw"),
                                                evalp=str(assets["eval"])), tmp_path)
    boot = next(r for r in rows if r["ev"] == "boot")
    assert boot["restored"] is True
    assert (tmp_path / "copy.etw").read_bytes() == trained["weights"]  # trainables, residuals: same bytes
    assert _logits(out) == trained["logits"]


def _flashed_logits(assets, d: Path) -> list[str]:
    out, rows = run_device(RESTART_CHECK.format(etm=str(assets["etm"]), w=str(d / "none.etw"),
                                                copy=str(d / "flashed.etw"), evalp=str(assets["eval"])), d)
    assert next(r for r in rows if r["ev"] == "boot")["restored"] is False
    return _logits(out)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupted_save_is_ignored_with_warning(assets, trained, tmp_path, damage):
    w = tmp_path / "w.etw"
    blob = bytearray(trained["weights"])
    if damage == "flip":
        blob[len(blob) // 2] ^= 0x10
    elif damage == "truncate":
        blob = blob[:-7]
    else:
        blob = bytearray(b"not a weights file" * 3)
    w.write_bytes(bytes(blob))
    out, rows = run_device(RESTART_CHECK.format(etm=str(assets["etm"]), w=str(w), copy=str(tmp_path / "c.etw"),
                                                evalp=str(assets["eval"])), tmp_path)
    assert "warning: ignored saved weights" in out
    assert any(r["ev"] == "warning" for r in rows)
    assert next(r for r in rows if r["ev"] == "boot")["restored"] is False
    flashed = _flashed_logits(assets, tmp_path)
    assert _logits(out) == flashed != trained["logits"]
    assert not w.exists() and (tmp_path / "w.etw.bad").read_bytes() == bytes(blob)


def test_interrupted_save_keeps_last_good_file(assets, trained, tmp_path):
    w = tmp_path / "w.etw"
    w.write_bytes(trained["weights"])
    (tmp_path / "w.etw.tmp").write_bytes(trained["weights"][:40])  # power cut while writing
    out, rows = run_device(RESTART_CHECK.format(etm=str(assets["etm"]), w=str(w), copy=str(tmp_path / "c.etw"),
                                                evalp=str(assets["eval"])), tmp_path)
    assert next(r for r in rows if r["ev"] == "boot")["restored"] is True
    assert not (tmp_path / "w.etw.tmp").exists()
    assert _logits(out) == trained["logits"]


def test_collect_records_session_file_the_host_reads(assets, tmp_path):
    """collect(..., path=) writes the raw samples as a session CSV that data.load_session reads."""
    from edgetune.learn import data

    code = f"""
import app
app.boot({str(assets['etm'])!r}, weights=None, config=None,
         source={{"bus": "replay", "path": {str(assets['adapt'])!r}}})
app.collect("ABD", n=3, path="rec.csv")
app.collect("ER", n=2, path="rec.csv")
print("INFO", app.info()["per_class"], app.info()["collected"])
"""
    out, rows = run_device(code, tmp_path)
    recs = data.load_session(str(tmp_path / "rec.csv"))
    assert [r.label for r in recs] == [1, 4]
    assert [len(r.x) for r in recs] == [100 + 2 * 50, 100 + 50]  # 3 and 2 windows, step 50
    adapt = data.load_session(str(assets["adapt"]))
    first_abd = next(r for r in adapt if r.label == 1)
    np.testing.assert_allclose(recs[0].x, first_abd.x[:200], rtol=1e-5, atol=1e-6)
    assert [r["label"] for r in rows if r["ev"] == "collect"] == ["ABD", "ER"]


def test_train_verb_code_runs_on_the_app(assets, tmp_path):
    code = board.train_code(["PEN", "IR"], n=4, epochs=1, lr=0.01, target=None, save=True)
    prelude = f"""
import app
app.boot({str(assets['etm'])!r}, weights="w.etw", config=None,
         source={{"bus": "replay", "path": {str(assets['adapt'])!r}}})
"""
    out, rows = run_device(prelude + code + "\n", tmp_path)
    assert [r["label"] for r in rows if r["ev"] == "collect"] == ["PEN", "IR"]
    assert next(r for r in rows if r["ev"] == "end")["steps"] == 4  # 4 a class: 1 check, 1 gap, 2 train
    assert any(r["ev"] == "save" for r in rows) and (tmp_path / "w.etw").exists()


def test_board_verbs_argv(tmp_path):
    m = tmp_path / "m.etm"
    m.write_bytes(b"x")
    argv = board.deploy_argv("/dev/ttyACM0", m, tmp_path / "config.json", board.firmware_files())
    assert argv[:5] == [sys.executable, "-m", "mpremote", "connect", "/dev/ttyACM0"]
    segs = " ".join(argv[3:]).split(" + ")
    assert segs[0].startswith("connect /dev/ttyACM0 fs cp ") and segs[0].endswith(" :")
    for name in ("app.py", "sensors.py", "collect.py", "log.py", "store.py", "core.py", "main.py"):
        assert str(FIRMWARE / name) in segs[0]
    assert segs[1] == f"fs cp {m} :model.etm" and segs[2].endswith(" :config.json")
    assert segs[3] == "soft-reset" and segs[4] == "exec " + board.BOOT_CHECK and segs[5] == "soft-reset"
    argv = board.deploy_argv("p", m, tmp_path / "config.json", [], session=tmp_path / "s.csv")
    assert argv[3:5] == ["connect", "p"] and argv[5:8] == ["fs", "cp", str(m)]
    assert " ".join(argv).split(" + ")[2] == f"fs cp {tmp_path / 's.csv'} :session.csv"
    assert board.device_config("qemu", session=True)["imu"] == {"bus": "replay", "path": "session.csv", "loop": True}
    assert board.device_config("rp2040")["imu"] == {**json.loads((REPO / "boards/rp2040/board.json").read_text())["imu"]}
    assert board.repl_argv("/dev/ttyUSB0")[3:] == ["connect", "/dev/ttyUSB0", "repl"]
    cmd = board.train_argv("p", board.train_code(["it's"], 3))
    assert cmd[3:6] == ["connect", "p", "exec"] and "app.collect(\"it's\", n=3)" in cmd[6]
    assert "app.train(epochs=5, lr=0.01, target=None)" in board.train_code(["A"], 3)
    assert "target=None, refit=False, guard=False)" in board.train_code(["A"], 3, refit=False, guard=False)
    # the verbs are wired into the CLI
    r = subprocess.run([sys.executable, "-m", "edgetune.cli", "deploy", "--port", "/dev/ttyX", "--model", str(m),
                        "--dry-run"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and ":model.etm" in r.stdout and "/dev/ttyX" in r.stdout


def test_boot_uses_frozen_model_when_no_file(assets, tmp_path):
    """Without model.etm on the filesystem, boot() takes et_model.MODEL (edgetune freeze output,
    what make firmware MODEL=... freezes); with neither it says so."""
    subprocess.run([sys.executable, "-m", "edgetune.device.freeze", str(assets["etm"]), "-o", str(tmp_path / "et_model.py")],
                   check=True, capture_output=True)
    code = """
import sys
sys.path.append(".")
import app
app.boot(weights=None, config=None)
print("ARENA", app.info()["arena"])
"""
    out, rows = run_device(code, tmp_path)
    assert rows[0]["ev"] == "boot" and f"ARENA {rows[0]['arena']}" in out
    (tmp_path / "et_model.py").unlink()
    script = tmp_path / "device.py"
    proc = emulate._run_binary(emulate.find_micropython(), script, str(HEAP), 60, tmp_path, [str(FIRMWARE)])
    assert proc.returncode == 1 and "no frozen et_model" in proc.stderr


def test_early_stop_at_target(assets, tmp_path):
    code = f"""
import app
app.boot({str(assets['etm'])!r}, weights=None, config=None,
         source={{"bus": "replay", "path": {str(assets['adapt'])!r}}})
for name in app.S.names:
    app.collect(name, n=4)
app.train(epochs=30, lr=0.01, target=0.5, calibrate=False, refit=False, guard=False)  # SGD early stop alone
"""
    _, rows = run_device(code, tmp_path)
    end = next(r for r in rows if r["ev"] == "end")
    evals = [r for r in rows if r["ev"] == "eval"]
    assert end["early_stop"] is True and end["steps"] < 30 * 14 and end["steps"] % 14 == 0
    assert evals[-1]["acc"] >= 0.5 > max(e["acc"] for e in evals[:-1])
    assert end["acc"] == evals[-1]["acc"]


def test_live_source_is_paced_at_the_model_rate(assets, tmp_path):
    """A realtime source is read every 1000 / sample_rate ms (virtual clock injected into
    collect.py, so the test does not depend on the machine's speed)."""
    code = f"""
import app, collect, sensors

class Clock:  # stands in for hal (firmware/hal.py): ticks advance only when the app sleeps
    now = 0
    def ticks_ms(self): return self.now
    def ticks_diff(self, a, b): return a - b
    def ticks_add(self, a, b): return a + b
    def sleep_ms(self, ms): self.now += ms

clock = Clock()
collect.hal = clock

class Live(sensors.Source):  # a live IMU (realtime) that notes when it was read
    def __init__(self): self.t = []
    def read(self):
        self.t.append(clock.now)
        clock.now += 3  # the I2C transfer takes time
        return [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]

src = Live()
app.boot({str(assets['etm'])!r}, weights=None, config=None, source=src)
app.collect("PEN", n=2)
d = [b - a for a, b in zip(src.t, src.t[1:])]
print("READS", len(src.t), min(d), max(d))
"""
    out, _ = run_device(code, tmp_path)
    assert "READS 150 20 20" in out  # 100 + 50 samples for 2 windows at 50 Hz


LOW_HEAP_RESTORE = """
import gc, os, sys
import edgetune, store
m = edgetune.Model(open({etm!r}, "rb").read())
size = os.stat({w!r})[6]
# Fill the heap with 512-byte blocks, then free every other one of the last 64: about 16 KB
# free, all in holes smaller than the weights file (a fragmented heap).
ballast = [None] * 1024
gc.collect()
n = 0
try:
    while n < 1024:
        ballast[n] = bytearray(512)
        n += 1
except MemoryError:
    pass
i = n - 1
while i >= 0 and i >= n - 64:
    ballast[i] = None
    i -= 2
gc.collect()
r = store.restore(m, {w!r})
ballast = None
gc.collect()
print("RESTORED", r, "KEPT", os.stat({w!r})[6] == size)
"""


def test_restore_without_heap_for_the_file_keeps_it(assets, trained, tmp_path):
    """A boot with too little free heap to read the weights file: Model.load raises MemoryError
    before changing anything; the app keeps the flashed weights for now and does NOT set the
    (intact) file aside, so the next boot with more heap restores it."""
    w = tmp_path / "w.etw"
    w.write_bytes(trained["weights"])
    assert len(trained["weights"]) > 600, "the file must be larger than the heap's holes"
    out, rows = run_device(LOW_HEAP_RESTORE.format(etm=str(assets["etm"]), w=str(w)), tmp_path)
    assert "RESTORED False KEPT True" in out, out[-2000:]
    assert "not enough heap to load" in out
    assert w.read_bytes() == trained["weights"] and not (tmp_path / "w.etw.bad").exists()
    out, rows = run_device(RESTART_CHECK.format(etm=str(assets["etm"]), w=str(w), copy=str(tmp_path / "c.etw"),
                                                evalp=str(assets["eval"])), tmp_path)
    assert next(r for r in rows if r["ev"] == "boot")["restored"] is True
    assert _logits(out) == trained["logits"]


def test_ring_buffer_is_sized_from_the_free_heap(assets, tmp_path):
    """boot() (capacity=None) gives the ring buffer every window that fits in the free heap less
    app._margin() = max(RING_MARGIN, heap / 4); asking for more raises a MemoryError naming the
    numbers (and leaves no half-booted app), and a capacity that fits is taken as given."""
    code = f"""
import app, gc
etm = open({str(assets['etm'])!r}, 'rb').read()
s = app.boot(etm, weights=None, config=None)
gc.collect()
print('AUTO', s.ring.capacity, s.ring.nbytes, app._margin(), gc.mem_free(), gc.mem_free() + gc.mem_alloc(),
      app.info()['capacity'])
s = None
try:
    app.boot(etm, weights=None, config=None, capacity=100000)
except MemoryError as e:
    print('ERR', e)
print('STATE', app.S)
print('FIXED', app.boot(etm, weights=None, config=None, capacity=20).ring.capacity)
"""
    for heap in (HEAP, 143360):  # the RP2040's and the qemu board's heap
        out, _ = run_device(code, tmp_path, heap=heap)
        auto = next(line.split()[1:] for line in out.splitlines() if line.startswith("AUTO "))
        cap, nbytes, margin, free, total, info_cap = map(int, auto)
        assert nbytes == 600 and info_cap == cap and margin == max(32 * 1024, total // 4)
        # What is left free is the margin, give or take a window and the boot's small objects.
        assert margin - 4096 <= free <= margin + (nbytes + 2) + 16 * 1024, (heap, cap, free, margin)
        assert cap >= 20
        err = next(line for line in out.splitlines() if line.startswith("ERR "))
        assert "ring buffer of 100000 windows needs 60200000 bytes (602 a window)" in err, err
        m = re.search(r"but (\d+) bytes of heap are free and (\d+) are kept for training \(app.RING_MARGIN\): "
                      r"at most capacity=(\d+) fits", err)
        assert m and int(m[2]) == margin and int(m[3]) == (int(m[1]) - margin) // 602 >= 20, err
        assert "STATE None" in out and "FIXED 20" in out
