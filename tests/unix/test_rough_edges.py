"""Rough edges a new user hit (issue 12, part 3), each checked where it happens.

Device side (real unix-port MicroPython with our C module, and the pure-Python fallback in the
same process): missing files are named, a binary file given to app.score() and a str path given
to Model() say what to pass instead, lr outside (0, 1] and unknown scheme keys are refused with
the same message by both cores, and app.train() without held-back windows warns. Host side: a
failed `edgetune train` leaves no empty CSV/PNG, and `pretrain` / `quantize` print their one
useful line, not TensorFlow's log (real TensorFlow, tiny model, one epoch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgetune.device import emulate
from edgetune.device.monitor import parse_text

from tests.support.deviceapp import demo_assets

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
HOST = REPO / "host"


@pytest.fixture(scope="module")
def assets(micropython) -> dict:
    return demo_assets()


def run_device(code: str, cwd: Path) -> str:
    script = cwd / "device.py"
    script.write_text(code)
    proc = emulate._run_binary(emulate.find_micropython(), script, None, 300, cwd, [str(FIRMWARE)])
    assert proc.returncode == 0, f"MicroPython failed\n{proc.stdout[-3000:]}\n{proc.stderr}"
    return proc.stdout


CORES = r"""
import edgetune, edgetune_py, json
buf = open({etm!r}, 'rb').read()
def attempt(tag, label, f):
    try:
        f()
        r = ['OK', '', None]
    except Exception as e:
        r = [type(e).__name__, str(e), getattr(e, 'errno', None)]
    print(json.dumps([tag, label] + r))
for tag, mod in (('C', edgetune), ('P', edgetune_py)):
    m = mod.Model(buf)
    x = bytes(m.info()['input_shape'][2] * m.info()['input_shape'][3])
    attempt(tag, 'path', lambda: mod.Model({etm!r}))
    attempt(tag, 'save_nodir', lambda: m.save('nodir/w'))
    attempt(tag, 'load_missing', lambda: m.load('missing.etw'))
    attempt(tag, 'lr_negative', lambda: m.train(x, 0, lr=-0.01))
    attempt(tag, 'lr_zero', lambda: m.train(x, 0, lr=0.0))
    attempt(tag, 'lr_huge', lambda: m.train(x, 0, lr=1e6))
    attempt(tag, 'lr_str', lambda: m.train(x, 0, lr='0.1'))
    attempt(tag, 'lr_one', lambda: m.train(x, 0, lr=1.0))
    attempt(tag, 'lr_tiny', lambda: m.train(x, 0, lr=1e-12))
    attempt(tag, 'scheme_bogus', lambda: mod.Model(buf, scheme={{'bogus': 1}}))
    attempt(tag, 'scheme_typo', lambda: mod.Model(buf, scheme={{'n_bias': 1, 'weight': [(0, 2)]}}))
    attempt(tag, 'scheme_ok', lambda: mod.Model(buf, scheme={{'n_bias': 1, 'weights': []}}))
"""


def test_core_refusals_name_the_problem_in_c_and_fallback(assets, tmp_path):
    out = run_device(CORES.format(etm=str(assets["etm"])), tmp_path)
    res: dict[str, dict[str, list]] = {"C": {}, "P": {}}
    for line in out.splitlines():
        tag, label, *r = json.loads(line)
        res[tag][label] = r
    assert res["C"] == res["P"], (res["C"], res["P"])  # same types, messages and errnos
    c = res["C"]
    assert c["path"][0] == "TypeError" and "open(" in c["path"][1] and "read()" in c["path"][1]
    assert c["save_nodir"][0] == "OSError" and "nodir/w" in c["save_nodir"][1] and c["save_nodir"][2] == 2
    assert c["load_missing"][0] == "OSError" and "missing.etw" in c["load_missing"][1] and c["load_missing"][2] == 2
    for bad in ("lr_negative", "lr_zero", "lr_huge"):
        assert c[bad][0] == "ValueError" and "(0, 1]" in c[bad][1], (bad, c[bad])
    assert c["lr_str"][0] == "TypeError"  # converted before it is checked
    assert c["lr_one"][0] == c["lr_tiny"][0] == "OK"
    assert c["scheme_bogus"][0] == "ValueError" and "'bogus'" in c["scheme_bogus"][1]
    assert "n_bias" in c["scheme_bogus"][1] and "weights" in c["scheme_bogus"][1]
    assert c["scheme_typo"][0] == "ValueError" and "'weight'" in c["scheme_typo"][1]
    assert c["scheme_ok"][0] == "OK"
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "nodir").exists()


APP = r"""
import app, json
def attempt(label, f):
    try:
        f()
        r = ['OK', '']
    except Exception as e:
        r = [type(e).__name__, str(e)]
    print(json.dumps([label] + r))
attempt('boot_missing', lambda: app.boot(model='nope.etm', config=None))
app.boot({etm!r}, weights='w.etw', config=None, source={{'bus': 'replay', 'path': {adapt!r}}})
attempt('score_missing', lambda: app.score('missing.csv'))
attempt('score_binary', lambda: app.score({etm!r}))
open('names.csv', 'w').write('ax,ay,az,gx,gy,gz,label\n' + '0,0,0,0,0,0,NOPE\n' * 3)
attempt('score_unknown_label', lambda: app.score('names.csv'))
app.collect('PEN', n=3)
app.collect('IR', n=3)
app.train(epochs=1)
"""


def test_app_errors_name_the_file_and_train_warns_without_held_back_windows(assets, tmp_path):
    out = run_device(APP.format(etm=str(assets["etm"]), adapt=str(assets["adapt"])), tmp_path)
    res = {r[0]: r[1:] for r in (json.loads(x) for x in out.splitlines() if x.startswith("["))}
    assert res["boot_missing"][0] == "OSError" and "nope.etm" in res["boot_missing"][1]
    assert res["score_missing"][0] == "OSError" and "missing.csv" in res["score_missing"][1]
    assert res["score_binary"][0] == "ValueError" and "not a session CSV" in res["score_binary"][1]
    assert res["score_unknown_label"][0] == "ValueError" and "'NOPE'" in res["score_unknown_label"][1]
    rows = parse_text(out)
    warn = [r for r in rows if r["ev"] == "warning"]
    # the recipe calls the held-back windows its check set
    assert len(warn) == 1 and "no check windows" in warn[0]["msg"] and "at least 4 windows per class" in warn[0]["msg"]
    start = next(i for i, r in enumerate(rows) if r["ev"] == "start")
    assert rows.index(warn[0]) < start  # before the run, not after it
    assert all(r["acc"] is None for r in rows if r["ev"] == "train")  # the case it warns about


def test_failed_train_writes_no_empty_artefacts(tmp_path):
    """`edgetune train` against a port that does not exist: mpremote fails, and neither an empty
    CSV nor a blank PNG is left behind; an unwritable --csv is refused before the board runs."""
    env = dict(os.environ, PYTHONPATH=str(HOST))
    csv, png = tmp_path / "run.csv", tmp_path / "run.png"
    proc = subprocess.run([sys.executable, "-m", "edgetune.cli", "train", "--port", str(tmp_path / "nonexistent"),
                           "--label", "PEN", "--csv", str(csv), "--plot", str(png)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode != 0
    assert not csv.exists() and not png.exists()
    assert "wrote no" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "edgetune.cli", "train", "--port", "/dev/null", "--label", "PEN",
                           "--csv", str(tmp_path / "nodir" / "run.csv")], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 2 and "nodir" in proc.stderr and "does not exist" in proc.stderr


def _verb(args: list[str], verbose: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["PYTHONPATH"] = str(HOST)
    return subprocess.run([sys.executable, "-m", "edgetune.cli", *args, *(["--verbose"] if verbose else [])],
                          capture_output=True, text=True, timeout=600, env=env)


def test_pretrain_and_quantize_are_quiet_by_default(tmp_path):
    """Real TensorFlow: one line on stdout each (besides pretrain's scenario line), nothing on
    stderr (no progress bar with --no-progress); --verbose shows TensorFlow's log again."""
    run = tmp_path / "run"
    p = _verb(["pretrain", "--variant", "tiny", "--epochs", "1", "--out", str(run), "--no-progress"])
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr
    assert len(p.stdout.splitlines()) == 2 and p.stdout.splitlines()[-1].startswith(f"wrote {run}")
    tfl = tmp_path / "m.tflite"
    q = _verb(["quantize", str(run), "--out", str(tfl), "--samples", "50"])
    assert q.returncode == 0, q.stderr
    assert q.stderr == "", q.stderr
    assert q.stdout.splitlines() == [q.stdout.strip()] and q.stdout.startswith(f"wrote {tfl}")
    qv = _verb(["quantize", str(run), "--out", str(tfl), "--samples", "50"], verbose=True)
    assert qv.returncode == 0 and len((qv.stdout + qv.stderr).splitlines()) > 5


def test_pretrain_rejects_nonsense_numbers_and_help_shows_defaults(tmp_path):
    for args, what in ((["--epochs", "0"], "--epochs"), (["--batch", "-1"], "--batch"), (["--lr", "0"], "--lr"),
                       (["--lr", "nan"], "--lr"), (["--window", "0"], "--window"),
                       (["--step", "200"], "--step"), (["--fractions", "0.5,0.6,0.1"], "--fractions")):
        p = _verb(["pretrain", "--out", str(tmp_path / "never"), *args])
        assert p.returncode == 2 and what in p.stderr, (args, p.stderr)
        assert not (tmp_path / "never").exists()
    q = _verb(["quantize", "x", "--out", "y.tflite", "--samples", "0"])
    assert q.returncode == 2 and "--samples" in q.stderr
    h = _verb(["pretrain", "--help"])
    assert h.returncode == 0 and "(default: 40)" in h.stdout and "(default: 0.002)" in h.stdout


def test_pretrain_and_quantize_check_their_output_first(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    p = _verb(["pretrain", "--out", str(f / "run")])
    assert p.returncode == 2 and "is a file" in p.stderr
    q = _verb(["quantize", str(tmp_path), "--out", str(f / "m.tflite")])
    assert q.returncode == 1 and "not a directory" in q.stderr
