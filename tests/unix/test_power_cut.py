"""Power-cut safety of saved weights, on the real unix port (docs/reliability.md).

A filesystem shim (SHIM below, a MicroPython module imported before anything else) wraps
`open` (builtins) and `os` (sys.modules): every mutating step of a save is counted, one step
per byte written, per open-for-writing, per close, per rename and per remove, and the shim
"cuts the power" (raises PowerCut, a BaseException nobody catches) just before step N. Writes
reach the file immediately, so a cut leaves exactly the bytes written so far (the harshest
model of a flash file system: no write-back buffer that would hide a torn file).

For every N from 0 to the number of steps of a complete save, for both save paths (the module's
`m.save`, and the device app's `store.save` in firmware/store.py) and both starting points (an
older weights file present, or none), the save of NEW weights is cut at step N; then a fresh
process boots on each resulting directory (`store.restore`, or `m.load` when the file exists)
and must end with exactly the OLD (or, with no old file, the flashed) weights or exactly the
NEW ones: compared as the complete trained-weights bytes, never a mix, never garbage, and
never a refused file.
"""

from __future__ import annotations

import json

import pytest

from tests.support.relhelp import REPO, record, reference_etm, run_script

SHIM = r'''
"""Power-cut filesystem shim: install() before importing anything that saves."""
import builtins, sys
import os as _os

_open = builtins.open


class PowerCut(BaseException):
    pass


budget = -1  # steps allowed before the cut; -1: no cut
steps = 0
_live = []


def _step(n=1):
    """Allow up to n steps; returns how many were allowed (raises PowerCut at the budget)."""
    global steps
    if budget >= 0 and steps + n > budget:
        k = budget - steps
        steps = budget
        return k
    steps += n
    return n


def _check(n=1):
    if _step(n) < n:
        raise PowerCut()


class _File:
    def __init__(self, f):
        self._f = f

    def write(self, b):
        mv = memoryview(b)
        k = _step(len(mv))
        if k:
            self._f.write(mv[:k])
        if k < len(mv):
            raise PowerCut()
        return k

    def read(self, *a):
        return self._f.read(*a)

    def close(self):
        _check()
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def open(path, mode="r", *a):
    if "w" in mode or "a" in mode or "+" in mode:
        _check()
        f = _File(_open(path, mode, *a))
        _live.append(f._f)
        return f
    return _open(path, mode, *a)


class _OS:
    def rename(self, a, b):
        _check()
        _os.rename(a, b)

    def remove(self, p):
        _check()
        _os.remove(p)

    def __getattr__(self, name):
        return getattr(_os, name)


def power_off():
    """After a cut: the open files are gone (their bytes are already on disk)."""
    global budget
    for f in _live:
        try:
            f.close()
        except OSError:
            pass
    _live.clear()
    budget = -1


def arm(n):
    global budget, steps
    budget, steps = n, 0


builtins.open = open
sys.modules["os"] = _OS()
'''

CUT = r'''
import pcshim
import edgetune, json, os, store
D = {d!r}
buf = open({etm!r}, 'rb').read()
xs = [bytes(((i * 29 + k * 7) % 256) for k in range({n_in})) for i in range(4)]
m = edgetune.Model(buf)
m.save(D + '/flashed.etw')
for i in range(4):
    m.train(xs[i], i % {ncls}, lr=0.05)
m.save(D + '/old.etw')
for i in range(4):
    m.train(xs[3 - i], (i + 1) % {ncls}, lr=0.05)
m.save(D + '/new.etw')
OLD = open(D + '/old.etw', 'rb').read()

def save(how, path):
    if how == 'store':
        store.save(m, path)
    else:
        m.save(path)

out = {{}}
for how in ('module', 'store'):
    pcshim.arm(-1)
    save(how, D + '/count.etw')
    total = pcshim.steps
    for with_old in (1, 0):
        for n in range(total + 1):
            d = '%s/%s%d_%d' % (D, how, with_old, n)
            os.mkdir(d)
            if with_old:
                with open(d + '/w.etw', 'wb') as f:
                    f.write(OLD)
            pcshim.arm(n)
            try:
                save(how, d + '/w.etw')
                done = True
            except pcshim.PowerCut:
                done = False
            pcshim.power_off()
            if done != (n == total):
                raise SystemExit('save completed at %d of %d steps' % (n, total))
    out[how] = total
print(json.dumps(out))
'''

BOOT = r'''
import edgetune, json, os, store
D = {d!r}
buf = open({etm!r}, 'rb').read()
names = {{open(D + '/' + k + '.etw', 'rb').read(): k for k in ('flashed', 'old', 'new')}}

def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False

totals = {totals!r}
for how, total in totals.items():
    for with_old in (1, 0):
        for n in range(total + 1):
            d = '%s/%s%d_%d' % (D, how, with_old, n)
            m = edgetune.Model(buf)   # a fresh boot: flashed weights
            path = d + '/w.etw'
            try:
                if how == 'store':
                    store.restore(m, path)
                elif exists(path):
                    m.load(path)
                m.save(D + '/probe.etw')
                got = names.get(open(D + '/probe.etw', 'rb').read(), 'MIX')
            except Exception as e:
                got = 'ERROR ' + repr(e)
            print(json.dumps([how, with_old, n, got, exists(path + '.bad')]))
'''


@pytest.fixture(scope="module")
def boots(tmp_path_factory) -> dict:
    from edgetune.format.modelfile import read_etm

    d = tmp_path_factory.mktemp("power_cut")
    etm = reference_etm()
    model = read_etm(etm.read_bytes())
    (d / "pcshim.py").write_text(SHIM)
    fw = str(REPO / "firmware")
    cut = run_script(CUT.format(d=str(d), etm=str(etm), n_in=model.input_tensor.size, ncls=model.output_tensor.size),
                     d, extra_path=(str(d), fw), timeout=600)
    assert cut.returncode == 0, cut.stdout[-2000:] + cut.stderr[-3000:]
    totals = json.loads(cut.stdout.splitlines()[-1])
    boot = run_script(BOOT.format(d=str(d), etm=str(etm), totals=totals), d, extra_path=(fw,), timeout=600)
    assert boot.returncode == 0, boot.stdout[-2000:] + boot.stderr[-3000:]
    rows = [json.loads(line) for line in boot.stdout.splitlines() if line.startswith("[")]
    weights = (d / "new.etw").stat().st_size
    return {"totals": totals, "rows": rows, "weights_bytes": weights}


def test_every_cut_point_boots_old_or_new(boots):
    rows, totals = boots["rows"], boots["totals"]
    # Steps of a complete save: open + every byte + close + rename (+ nothing else).
    assert totals["module"] == boots["weights_bytes"] + 3
    assert len(rows) == 2 * sum(t + 1 for t in totals.values())
    bad = []
    for how, with_old, n, got, set_aside in rows:
        allowed = {"old" if with_old else "flashed", "new"}
        if got not in allowed:
            bad.append(f"{how} old={with_old} cut at step {n}: booted {got}")
        if n == totals[how] and got != "new":
            bad.append(f"{how} old={with_old}: complete save booted {got}")
        if set_aside:
            bad.append(f"{how} old={with_old} cut at {n}: a good file was set aside as .bad")
    recovered = len(rows) - len(bad)
    record("power_cut", {"cut_points_tried": len(rows), "cut_points_recovering": recovered,
                         "steps_per_save": totals, "weights_file_bytes": boots["weights_bytes"]})
    assert not bad, "\n".join(bad[:30])


def test_cuts_before_the_rename_keep_the_old_weights(boots):
    """The rename is the commit point: every cut before it boots the old weights, every cut
    after it (none: it is the last step) the new ones."""
    assert boots["totals"]["store"] == boots["totals"]["module"]  # store.save adds only a stat
    for how, with_old, n, got, _ in boots["rows"]:
        if n < boots["totals"][how]:
            assert got == ("old" if with_old else "flashed"), (how, with_old, n, got)
