"""Memory pressure on the real unix port (docs/reliability.md).

For the reference model (host/edgetune/learn/zoo.py's small variant, exported as `make demo` does)
a ladder of training schemes, ordered by training arena (memory.training_arena, checked against
info()['arena']): classifier only, more biases, then channel slices of more and more layers,
with and without momentum. For every board heap budget in boards/*/board.json the unix port
runs with `-X heapsize=<budget>`: all schemes in one process, in ladder order (every Model()
either succeeds and trains, or raises MemoryError up front naming the arena it needed; after the
first failure every larger one fails too), and, by bisection over fresh processes (one boot, one
Model()), the largest scheme that fits and the first that does not (None: the whole ladder fits;
for the reference model the largest scheme, every weight layer fully trained with momentum,
needs an 83684-byte arena, which fits every board budget at a fresh boot). On 64-bit unix, Python objects take
about twice their MCU size while the int8 arena is the same, so these limits are conservative
for the 32-bit boards.

Then the smallest heap in which Model() succeeds for the largest scheme that fits the RP2040
budget is found by bisection, and for every heap from a little below to a little above it a
full training session (3 epochs, evaluate, save, load) either fails with MemoryError at
Model(), before any step, or completes: never a MemoryError in the middle.
"""

from __future__ import annotations

import json

import pytest

from tests.support.relhelp import heap_budgets, record, reference_etm, run_script

LADDER_SCRIPT = r"""
import edgetune, gc, json
buf = open({etm!r}, 'rb').read()
x = bytes({n_in})
for name, scheme, mom in {ladder!r}:
    m = None
    gc.collect()
    try:
        m = edgetune.Model(buf, scheme=scheme, momentum=mom)
    except MemoryError as e:
        print(json.dumps([name, 'MemoryError', str(e)]))
        continue
    info = m.info()
    try:
        for i in range(2):
            m.train(x, i % {ncls}, lr=0.01)
        m.predict(x)
        print(json.dumps([name, 'OK', info['arena']]))
    except MemoryError as e:
        print(json.dumps([name, 'MID', str(e)]))
"""

SESSION_SCRIPT = r"""
import edgetune, gc, os
buf = open({etm!r}, 'rb').read()
xs = [bytes(((i * 13 + k) % 256) for k in range({n_in})) for i in range(16)]
ys = [i % {ncls} for i in range(16)]
gc.collect()
try:
    m = edgetune.Model(buf, scheme={scheme!r}, momentum={mom!r})
except MemoryError:
    print('MODEL_MEMORY')
    raise SystemExit
stage = 'train'
try:
    for epoch in range(3):
        for i in range(16):
            m.train(xs[i], ys[i], lr=0.02)
    stage = 'evaluate'
    m.evaluate(xs, ys)
    stage = 'predict'
    y0 = m.predict(xs[0])
except MemoryError as e:
    print('MID', stage, e)
    raise SystemExit
# Saving and loading need a buffer of the weights file's size: at the tightest heaps they may
# raise MemoryError, but only before anything changed.
try:
    m.save({w!r})
    save = 'ok'
except MemoryError:
    try:
        os.stat({w!r})
        save = 'memory-FILE-WRITTEN'
    except OSError:
        save = 'memory'
try:
    m.load({good!r})
    load = 'ok'
except MemoryError:
    load = 'memory' if m.predict(xs[0]) == y0 else 'memory-CHANGED'
print('DONE', save, load)
"""


def ladder(model):
    """[(name, scheme dict, momentum, arena bytes)] ordered by training arena."""
    from edgetune.twin import memory
    from edgetune.format.scheme import Scheme, weight_layers

    wl = weight_layers(model)
    hidden = wl[:-1]
    out = []
    for mom in (0.0, 0.9):
        for n_bias in range(len(wl) + 1):
            out.append((f"bias{n_bias}", {"n_bias": n_bias}, mom, Scheme.build(model, n_bias)))
        for k in range(1, len(hidden) + 1):  # the last k hidden weight layers, sliced 1/8 .. 1
            for d in (8, 4, 2, 1):
                layers = hidden[-k:]
                sch = {"n_bias": len(wl), "weights": [(i, d) for i in layers]}
                out.append((f"w{k}x1/{d}", sch, mom, Scheme.build(model, len(wl), {i: 1 / d for i in layers})))
    rows = []
    for name, sch, mom, s in out:
        arena = memory.training_arena(model, s, mom != 0.0)
        rows.append((f"{name}{'+mom' if mom else ''}", sch, mom, arena))
    rows.sort(key=lambda r: (r[3], r[0]))
    return rows


@pytest.fixture(scope="module")
def ref():
    from edgetune.format.modelfile import read_etm

    etm = reference_etm()
    model = read_etm(etm.read_bytes())
    return {"etm": etm, "model": model, "ladder": ladder(model), "bytes": etm.stat().st_size}


@pytest.fixture(scope="module")
def per_board(ref, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("memory")
    lad = [(n, s, m) for n, s, m, _ in ref["ladder"]]
    code = LADDER_SCRIPT.format(etm=str(ref["etm"]), n_in=ref["model"].input_tensor.size,
                                ncls=ref["model"].output_tensor.size, ladder=lad)
    out = {}
    for board, heap in heap_budgets().items():
        proc = run_script(code, d, heap=heap)
        assert proc.returncode == 0, (board, proc.stdout[-2000:], proc.stderr[-2000:])
        out[board] = {"heap": heap, "rows": [json.loads(line) for line in proc.stdout.splitlines()]}
    return out


def test_arena_prediction_matches_device(ref, per_board):
    big = max(per_board.values(), key=lambda b: b["heap"])
    arenas = {name: a for name, _, _, a in ref["ladder"]}
    for name, status, arena in big["rows"]:
        if status == "OK":
            assert arena == arenas[name], name


def _probe(ref, heap: int, idx: int, d) -> tuple[str, str]:
    name, scheme, mom, _ = ref["ladder"][idx]
    code = LADDER_SCRIPT.format(etm=str(ref["etm"]), n_in=ref["model"].input_tensor.size,
                                ncls=ref["model"].output_tensor.size, ladder=[(name, scheme, mom)])
    proc = run_script(code, d, heap=heap)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.splitlines()[-1])
    return row[1], row[2]


def _bisect(ref, heap: int, d) -> tuple[str | None, str | None]:
    """(largest ladder scheme that fits a fresh boot with this heap, first that does not)."""
    lad = ref["ladder"]
    lo, hi = -1, len(lad)  # lad[lo] fits (or lo = -1), lad[hi] does not (or hi = len)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        status, msg = _probe(ref, heap, mid, d)
        assert status in ("OK", "MemoryError"), (lad[mid][0], status, msg)
        if status == "OK":
            lo = mid
        else:
            assert f"needs {lad[mid][3]} bytes of arena" in msg, msg
            hi = mid
    return (lad[lo][0] if lo >= 0 else None), (lad[hi][0] if hi < len(lad) else None)


def test_largest_fitting_scheme_per_board(ref, per_board, tmp_path):
    arenas = {name: a for name, _, _, a in ref["ladder"]}
    figures = {}
    for board, res in per_board.items():
        rows = res["rows"]
        assert [r[0] for r in rows] == [r[0] for r in ref["ladder"]]
        statuses = [r[1] for r in rows]
        assert "MID" not in statuses, (board, rows)
        # Ordered by arena: a prefix fits, the rest raises MemoryError up front.
        k = statuses.index("MemoryError") if "MemoryError" in statuses else len(statuses)
        assert statuses[:k] == ["OK"] * k and set(statuses[k:]) <= {"MemoryError"}, (board, statuses)
        for name, status, msg in rows[k:]:
            assert f"needs {arenas[name]} bytes of arena" in msg, msg
        # The reported limits come from fresh processes (one Model() per boot, no fragmentation
        # left by earlier attempts): bisection over the ladder.
        largest, first_fail = _bisect(ref, res["heap"], tmp_path)
        figures[board] = {"heap_bytes": res["heap"], "largest_fitting": largest,
                          "largest_arena": arenas[largest] if largest else None, "first_failing": first_fail,
                          "first_failing_arena": arenas[first_fail] if first_fail else None}
    record("memory_pressure_boards", {"model_bytes": ref["bytes"], "boards": figures,
                                      "ladder": [[n, a] for n, _, _, a in ref["ladder"]]})
    # The RP2040 budget runs the demo's default scheme; the smallest board cannot take everything.
    assert figures["rp2040"]["largest_fitting"] is not None
    assert figures["esp32s3"]["first_failing"] is not None or figures["esp32s3"]["largest_fitting"]


def _session(ref, d, heap, scheme, mom) -> str:
    code = SESSION_SCRIPT.format(etm=str(ref["etm"]), n_in=ref["model"].input_tensor.size,
                                 ncls=ref["model"].output_tensor.size, scheme=scheme, mom=mom,
                                 w=str(d / f"w{heap}.etw"), good=str(d / "good.etw"))
    proc = run_script(code, d, heap=heap)
    if proc.returncode != 0:
        return "CRASH " + proc.stderr[-500:]
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "NO OUTPUT"


def test_session_at_just_enough_heap_completes(ref, per_board, tmp_path):
    """Whenever Model() succeeds, the training session (train, evaluate, predict) completes;
    save/load at the tightest heaps may raise MemoryError (they need a buffer the size of the
    weights file) but then nothing was written and nothing changed."""
    rows = per_board["rp2040"]["rows"]
    fits = [r[0] for r in rows if r[1] == "OK"]
    name = fits[-1]
    _, scheme, mom, arena = next(r for r in ref["ladder"] if r[0] == name)
    lo, hi = arena, per_board["rp2040"]["heap"]  # lo: Model() fails, hi: it succeeds
    # A valid file to load: what a model with this scheme saves after the same session.
    proc = run_script(SESSION_SCRIPT.split("try:\n    m.save")[0].format(
        etm=str(ref["etm"]), n_in=ref["model"].input_tensor.size, ncls=ref["model"].output_tensor.size,
        scheme=scheme, mom=mom) + f"m.save({str(tmp_path / 'good.etw')!r})\n", tmp_path, heap=hi)
    assert proc.returncode == 0 and (tmp_path / "good.etw").exists(), proc.stderr
    assert _session(ref, tmp_path, hi, scheme, mom) == "DONE ok ok"
    while hi - lo > 32:
        mid = (lo + hi) // 2 // 32 * 32
        if mid <= lo:
            break
        if _session(ref, tmp_path, mid, scheme, mom) == "MODEL_MEMORY":
            lo = mid
        else:
            hi = mid
    h_min = hi
    outcomes = {}
    state_bytes = (tmp_path / "good.etw").stat().st_size
    heaps = list(range(h_min - 256, h_min + 513, 32))
    heaps += list(range(heaps[-1] + 4096, h_min + 2 * state_bytes + 8192, 4096))
    for heap in heaps:
        outcomes[heap] = _session(ref, tmp_path, heap, scheme, mom)
    allowed = {"MODEL_MEMORY", "DONE ok ok", "DONE memory ok", "DONE ok memory", "DONE memory memory"}
    bad = {h: o for h, o in outcomes.items() if o not in allowed}
    full = [h for h, o in sorted(outcomes.items()) if o == "DONE ok ok"]
    kinds = {o: sum(1 for v in outcomes.values() if v == o) for o in set(outcomes.values())}
    record("memory_pressure_session", {"scheme": name, "arena": arena, "min_heap_model": h_min,
                                       "min_heap_with_save_load": full[0] if full else None,
                                       "weights_file_bytes": state_bytes,
                                       "heaps_tried": len(outcomes), "mid_session_failures": len(bad),
                                       "outcomes": kinds})
    assert not bad, bad
    assert outcomes[h_min].startswith("DONE")
    assert outcomes[h_min - 256] == "MODEL_MEMORY"
    # From some heap on, save and load fit too, and stay fitting.
    assert full and all(outcomes[h] == "DONE ok ok" for h in outcomes if h >= full[0])
