"""On-device training on the real unix-port MicroPython vs the numpy twin, bit for bit.

The C training core (native_modules/edgetune/train.c, scheme.c, kernels/et_*_grad*.c,
et_update.c) and host/edgetune/twin/training.py both implement docs/training.md. Here:

- random models (hand-built random `EtmModel`s with every op and a FULLY_CONNECTED classifier,
  plus random Keras models through the real converter and export.py) x schemes (default,
  bias-only last n stored in the .etm, classifier-only, classifier + channel-sliced
  conv/depthwise/FC weights) x QAS on/off x momentum on/off: 20 steps on random samples; the
  losses (float32 bits), the saved trained-weights file (every trainable tensor, residual,
  channel map and momentum, byte for byte) and the predictions after training are identical;
  `info()['arena']` equals `memory.training_arena(...)` and `info()['trainable']` the twin's
  parameter count; `evaluate` equals the twin's (loss, accuracy).
- save -> fresh Model -> load restores the state; another model's file, a truncated file or a
  wrong CRC is refused with ValueError and the weights stay; bad label / lr / input length are
  refused and change nothing; the ValueErrors of scheme validation agree with scheme.py.
- MemoryError under a heap too small for the training arena, before any state changes.

All cases of a test run in ONE MicroPython process (losses and file names go through stdout).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgetune.twin import memory
from edgetune.format.modelfile import (
    OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED, EtmModel, read_etm, write_etm,
)
from edgetune.format.scheme import Scheme, weight_layers
from edgetune.twin.training import Trainer

from tests.support.trainingcases import (
    bound_model, cases_for, check_cases, f32hex, hand_cases, N_HAND, N_REAL, real_models,
    run_script, STEPS, train_model,
)


@pytest.mark.natmod
@pytest.mark.parametrize("chunk", range(3))
def test_training_c_vs_numpy_hand_built(micropython, tmp_path, chunk):
    """36 random hand-built models x up to 4 schemes, 20 steps each: identical bits."""
    per = N_HAND // 3
    cases = hand_cases(chunk * per, (chunk + 1) * per)
    assert len(cases) >= 3 * per
    kinds = {c.kind for c in cases}
    assert kinds == {"default", "classifier", "bias_etm", "sliced"}, kinds
    combos = {(c.qas, c.momentum > 0) for c in cases}
    assert len(combos) == 4, combos  # QAS on/off x momentum on/off
    changed = check_cases(micropython, tmp_path, cases, chunk)
    # The steps are real: with QAS the state moved away from the flashed weights in most cases.
    n_qas = sum(c.qas for c in cases)
    assert n_qas >= 0.4 * len(cases) and changed >= 0.8 * n_qas, (changed, n_qas, len(cases))


@pytest.mark.natmod
def test_training_c_vs_numpy_converted_models(micropython, tmp_path):
    """Random Keras models through the TFLite converter and export.py: identical bits."""
    models = real_models()
    if not models:
        pytest.skip("tests/support/modelgen.py or export.py not available")
    cases = []
    for name, m in models.items():
        cases += cases_for(name, m, np.random.default_rng([6, len(cases)]))
    assert len(models) == N_REAL and len(cases) >= 3 * len(models)
    check_cases(micropython, tmp_path, cases, 1000)


def test_sliced_schemes_cover_every_weight_op():
    """The hand-built cases exercise channel-sliced CONV_2D, DEPTHWISE_CONV_2D and hidden FC."""
    ops = set()
    for c in hand_cases(0, N_HAND):
        for e in c.scheme.entries:
            if e.channels and e.layer != len(c.model.layers) - 1:
                ops.add(c.model.layers[e.layer].op)
                if len(e.channels) < c.model.tensors[c.model.layers[e.layer].output].shape[3]:
                    ops.add(("partial", c.model.layers[e.layer].op))
    assert {OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED, ("partial", OP_CONV_2D)} <= ops, ops


# --------------------------------------------------------------------------------------------
# save / load / reset / refusals
# --------------------------------------------------------------------------------------------

STATE_SCRIPT = """
import edgetune, os
D = {d!r}
buf = open(D + '/a.etm', 'rb').read()
xs = open(D + '/a.x', 'rb').read()
n = len(xs) // 10
def snap(m):
    m.save(D + '/snap')
    return open(D + '/snap', 'rb').read()
def attempt(label, f, *a, **k):
    try:
        f(*a, **k)
        print(label, 'OK')
    except Exception as e:
        print(label, type(e).__name__, e)
m = edgetune.Model(buf, momentum=0.5)
flashed = snap(m)
m3_pred = m.predict(xs[:n])
for i in range(10):
    m.train(xs[i * n:(i + 1) * n], i % {ncls}, lr=0.1)
m.save(D + '/a.state')
print('TMP_GONE', 'a.state.tmp' not in os.listdir(D))
trained = snap(m)
print('TRAINED_DIFFERS', trained != flashed)
m2 = edgetune.Model(buf, momentum=0.5)
m2.load(D + '/a.state')
print('LOAD_SAME', snap(m2) == trained)
print('PRED_SAME', m2.predict(xs[:n]) == m.predict(xs[:n]))
for bad in ('b.state', 'trunc.state', 'crc.state', 'sel.state', 'w128.state', 'mom.state'):
    attempt('LOAD_' + bad, m2.load, D + '/' + bad)
    print('UNCHANGED_' + bad, snap(m2) == trained)
before = snap(m2)
y0 = m2.predict(xs[:n])
attempt('LABEL', m2.train, xs[:n], {ncls})
attempt('LABELNEG', m2.train, xs[:n], -1)
attempt('NAN', m2.train, xs[:n], 0, lr=float('nan'))
attempt('INF', m2.train, xs[:n], 0, lr=float('inf'))
attempt('SHORT', m2.train, xs[:n - 1], 0)
attempt('EVAL_LEN', m2.evaluate, [xs[:n]], [0, 1])
attempt('EVAL_LABEL', m2.evaluate, [xs[:n]], [{ncls}])
print('NOTHING_CHANGED', snap(m2) == before and m2.predict(xs[:n]) == y0)
ck = m2.state()
print('STATE_IS_FILE', ck == before)
attempt('LOAD_STATE_BAD', m2.load_state, ck[:-4])
print('STATE_UNCHANGED', m2.state() == before)
m2.load_state(flashed)
print('LOAD_STATE_FLASHED', snap(m2) == flashed and m2.predict(xs[:n]) == m3_pred)
m2.load_state(ck)
print('LOAD_STATE_BACK', snap(m2) == before and m2.predict(xs[:n]) == y0)
m2.reset()
print('RESET', snap(m2) == flashed)
m3 = edgetune.Model(buf, momentum=0.5)
print('RESET_PRED', m2.predict(xs[:n]) == m3.predict(xs[:n]))
attempt('MOM', edgetune.Model, buf, momentum=1.0)
attempt('SCHEME_TYPE', edgetune.Model, buf, scheme=3)
attempt('SCHEME_RATIO', edgetune.Model, buf, scheme={{'n_bias': 0, 'weights': [(0, 3)]}})
attempt('SCHEME_NBIAS', edgetune.Model, buf, scheme={{'n_bias': 99}})
print('DONE')
"""


def _recrc(b: bytearray) -> bytes:
    import zlib

    struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return bytes(b)


@pytest.mark.natmod
def test_save_load_reset_and_refusals(micropython, tmp_path):
    model = next(m for m in (train_model(s) for s in range(100))
                 if any(ly.op == OP_CONV_2D for ly in m.layers) and len(weight_layers(m)) >= 2)
    other = train_model(1000)
    ncls = model.output_tensor.size
    etm = write_etm(model)
    (tmp_path / "a.etm").write_bytes(etm)
    xs = np.random.default_rng(3).integers(-128, 128, (10, model.input_tensor.size)).astype(np.int8)
    (tmp_path / "a.x").write_bytes(xs.tobytes())
    # The twin writes the refused files: another model's, truncated, wrong CRC, and files with
    # valid CRCs but a different channel map, a weight of -128, or no momentum buffers.
    tw = Trainer(etm, momentum=0.5)
    for i, x in enumerate(xs):
        tw.step(x, i % ncls, 0.1)
    good = bytearray(tw.state_bytes())
    (tmp_path / "b.state").write_bytes(Trainer(write_etm(other), momentum=0.5).state_bytes())
    (tmp_path / "trunc.state").write_bytes(bytes(good[:-4]))
    crc = bytearray(good)
    crc[40] ^= 1
    (tmp_path / "crc.state").write_bytes(bytes(crc))
    layout = {(name, layer): off for r in memory.training_layout(model, tw.scheme, True)
              for name, layer, off, _ in r.items}
    params0 = memory.training_layout(model, tw.scheme, True)[2].offset
    clf = len(model.layers) - 1
    sel = bytearray(good)
    struct.pack_into("<h", sel, 32 + layout[("channel_map", clf)] - params0, -1)
    (tmp_path / "sel.state").write_bytes(_recrc(sel))
    w128 = bytearray(good)
    w128[32 + layout[("weights", clf)] - params0] = 0x80
    (tmp_path / "w128.state").write_bytes(_recrc(w128))
    (tmp_path / "mom.state").write_bytes(Trainer(etm).state_bytes())

    proc = run_script(micropython, tmp_path, STATE_SCRIPT.format(d=str(tmp_path), ncls=ncls))
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split(" ", 1) if " " in line else (line, "") for line in proc.stdout.splitlines())
    assert "DONE" in got, proc.stdout
    # The device's saved file equals the twin's after the same 10 steps.
    assert (tmp_path / "a.state").read_bytes() == bytes(good)
    # m.state() / m.load_state(): the in-RAM checkpoint is the file's bytes, checked the same way
    assert got["LOAD_STATE_BAD"].startswith("ValueError"), got["LOAD_STATE_BAD"]
    for key in ("TMP_GONE", "TRAINED_DIFFERS", "LOAD_SAME", "PRED_SAME", "NOTHING_CHANGED", "RESET", "RESET_PRED",
                "STATE_IS_FILE", "STATE_UNCHANGED", "LOAD_STATE_FLASHED", "LOAD_STATE_BACK"):
        assert got[key] == "True", (key, proc.stdout)
    for bad, why in (("b.state", "another model"), ("trunc.state", "truncated"), ("crc.state", "CRC"),
                     ("sel.state", "channel map"), ("w128.state", "-128"), ("mom.state", "momentum")):
        assert got[f"LOAD_{bad}"].startswith("ValueError") and why in got[f"LOAD_{bad}"], (bad, got[f"LOAD_{bad}"])
        assert got[f"UNCHANGED_{bad}"] == "True", bad
    for key in ("LABEL", "LABELNEG", "NAN", "INF", "SHORT", "EVAL_LEN", "EVAL_LABEL", "MOM", "SCHEME_RATIO",
                "SCHEME_NBIAS"):
        assert got[key].startswith("ValueError"), (key, got[key])
    assert got["SCHEME_TYPE"].startswith("TypeError")


@pytest.mark.natmod
def test_scheme_refusals_agree_with_scheme_py(micropython, tmp_path):
    """Stored schemes the twin refuses are refused by Model() (ValueError), and vice versa."""
    rng = np.random.default_rng(8)
    names, want = [], {}
    for seed in range(12):
        m = train_model(seed)
        wl = weight_layers(m)
        base = Scheme.build(m, len(wl), {wl[0]: 1} if len(wl) > 1 else None)
        variants = {"ok": base.encode()}
        enc = bytearray(base.encode())
        variants["version"] = bytes([2]) + bytes(enc[1:])
        variants["trailing"] = bytes(enc) + b"\0\0\0\0"
        variants["short"] = bytes(enc[:-2])
        e0 = bytearray(enc)
        e0[6] = 0  # first entry's flags -> 0
        variants["flags0"] = bytes(e0)
        e1 = bytearray(enc)
        e1[4:6] = struct.pack("<H", len(m.layers))  # layer out of range
        variants["layer"] = bytes(e1)
        for k, v in variants.items():
            mm = read_etm(write_etm(m))
            mm.scheme = v
            name = f"s{seed}_{k}"
            (tmp_path / f"{name}.etm").write_bytes(write_etm(mm))
            try:
                Trainer(write_etm(mm))
                want[name] = "OK"
            except ValueError:
                want[name] = "ValueError"
            names.append(name)
        # A model whose hidden layer has a huge fan-out: training below it must be refused.
    del rng
    code = f"""
import edgetune
for name in {names!r}:
    try:
        edgetune.Model(open({str(tmp_path)!r} + '/' + name + '.etm', 'rb').read())
        print(name, 'OK')
    except ValueError as e:
        print(name, 'ValueError')
print('DONE')
"""
    proc = run_script(micropython, tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line != "DONE")
    assert got == want
    assert sum(v == "OK" for v in want.values()) == 12


def test_accumulator_bound_refused(micropython, tmp_path):
    m = bound_model()
    with pytest.raises(ValueError):
        Scheme.build(m, 0, {0: 1})
    Scheme.build(m, 1)  # only the classifier: no input gradient, fine
    (tmp_path / "m.etm").write_bytes(write_etm(m))
    code = f"""
import edgetune
buf = open({str(tmp_path / 'm.etm')!r}, 'rb').read()
try:
    edgetune.Model(buf, scheme={{'n_bias': 0, 'weights': [(0, 1)]}})
    print('BOUND OK')
except ValueError as e:
    print('BOUND', 'ValueError', e)
m = edgetune.Model(buf, scheme={{'n_bias': 1}})
print('CLF', m.info()['trainable'])
"""
    out = run_script(micropython, tmp_path, code).stdout
    assert "BOUND ValueError" in out and "overflow" in out, out
    assert f"CLF {Scheme.build(m, 1).n_params(m)}" in out, out


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

HEAP_SCRIPT = """
import edgetune, gc
buf = open({etm!r}, 'rb').read()
x = bytes({n_in})
small = edgetune.Model(open({small!r}, 'rb').read(), scheme={{'n_bias': 0}})
y0 = small.predict(bytes({n_small}))
s0 = small.info()['peak']
gc.collect()
try:
    m = edgetune.Model(buf, momentum=0.9)
    print('FITS', m.info()['arena'])
except MemoryError as e:
    print('MEMORY', e)
print('OTHER_OK', small.predict(bytes({n_small})) == y0, small.info()['peak'] == s0)
"""


def test_memory_error_when_the_training_arena_does_not_fit(micropython, tmp_path):
    """Find the smallest heap at which Model() fits (bisection); one GC block less -> MemoryError,
    and another model living in the same heap is untouched. The message names the exact arena."""
    # the model with the largest training arena of the first 60 (the arena is then by far the
    # largest allocation of Model(), so it is what stops fitting first)
    model = max((train_model(s) for s in range(60)),
                key=lambda m: memory.training_arena(m, Scheme.default(m), True))
    small = train_model(2)
    (tmp_path / "m.etm").write_bytes(write_etm(model))
    (tmp_path / "s.etm").write_bytes(write_etm(small))
    arena = memory.training_arena(model, Scheme.default(model), True)
    assert arena > memory.inference_arena(model)
    code = HEAP_SCRIPT.format(etm=str(tmp_path / "m.etm"), small=str(tmp_path / "s.etm"),
                              n_in=model.input_tensor.size, n_small=small.input_tensor.size)

    def run(heap: int) -> str:
        proc = run_script(micropython, tmp_path, code, heapsize=str(heap))
        return proc.stdout if proc.returncode == 0 else "CRASH " + proc.stderr[-300:]

    block = 32  # MICROPY_BYTES_PER_GC_BLOCK on the 64-bit unix port (4 words)
    lo, hi = 4096, 4096 + 16 * arena + 65536
    assert "FITS" in run(hi)
    while hi - lo > block:
        mid = (lo + hi) // 2 // block * block
        out = run(mid)
        if "FITS" in out:
            hi = mid
        else:
            lo = mid
    fits, fails = run(hi), run(hi - block)
    assert f"FITS {arena}" in fits, fits
    assert "MEMORY" in fails and f"needs {arena} bytes" in fails, fails
    assert "OTHER_OK True True" in fails, fails


# --------------------------------------------------------------------------------------------
# The same training core on the host under ASan + UBSan, and compiled with FMA available
# --------------------------------------------------------------------------------------------

# tests/c/train_harness.c (shares fuzz/fuzz_common.h with the libFuzzer targets)
TRAIN_HARNESS_C = Path(__file__).resolve().parents[1] / "c" / "train_harness.c"


def _engine_sources(mod: Path) -> list[str]:
    """The harnesses' C sources: the engine (native_modules/edgetune/*.c, no bindings), every
    kernel, and -I flags for them and fuzz/fuzz_common.h."""
    return [f"-I{mod}", f"-I{mod / 'kernels'}", f"-I{mod.parents[1] / 'fuzz'}", str(TRAIN_HARNESS_C),
            *map(str, sorted(mod.glob("*.c"))), *map(str, sorted((mod / "kernels").glob("*.c")))]


def _build_harness(out: Path, name: str, flags: list[str]) -> Path:
    import shutil

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    mod = Path(__file__).resolve().parents[2] / "native_modules" / "edgetune"
    exe = out / name
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-Wno-unused-function",
           "-ffp-contract=off", *flags, *_engine_sources(mod), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


@pytest.mark.parametrize("variant", ["sanitized", "fma"])
def test_training_core_on_the_host(tmp_path, variant):
    """train.c and the kernels outside MicroPython: under ASan+UBSan (no out-of-bounds access,
    no undefined behaviour), and at -O3 with FMA instructions available (-ffp-contract=off keeps
    the float operations unfused): the same bits as the numpy twin."""
    import platform

    if variant == "sanitized":
        flags = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    else:
        if platform.machine() not in ("x86_64", "AMD64"):
            pytest.skip("FMA variant is x86-64 only")
        flags = ["-O3", "-mavx2", "-mfma"]
    exe = _build_harness(tmp_path, variant, flags)
    env = {"ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1", "PATH": "/usr/bin:/bin"}
    rng = np.random.default_rng(77)
    n_cases = 0
    for c in hand_cases(0, 24):
        if variant == "fma" and not c.qas:
            continue
        m = read_etm(c.etm)
        m.scheme = c.scheme.encode()  # any scheme travels in the .etm
        etm = write_etm(m)
        xs = rng.integers(-128, 128, (STEPS, m.input_tensor.size)).astype(np.int8)
        labels = rng.integers(0, m.output_tensor.size, STEPS).astype(np.uint8)
        (tmp_path / "m.etm").write_bytes(etm)
        (tmp_path / "x.bin").write_bytes(xs.tobytes())
        (tmp_path / "l.bin").write_bytes(labels.tobytes())
        proc = subprocess.run([str(exe), tmp_path / "m.etm", tmp_path / "x.bin", tmp_path / "l.bin", repr(c.lr),
                               str(int(c.qas)), repr(c.momentum), tmp_path / "s.bin"],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, f"{c.name}: {proc.stdout[-500:]}\n{proc.stderr[-3000:]}"
        tw = Trainer(etm, momentum=c.momentum)
        want = [f32hex(tw.step(x, int(lb), c.lr, c.qas)) for x, lb in zip(xs, labels)]
        lines = proc.stdout.splitlines()
        assert lines[0].split() == want, c.name
        _, peak, arena = lines[1].split()
        assert peak == arena == str(memory.training_arena(m, c.scheme, c.momentum > 0)), c.name
        assert (tmp_path / "s.bin").read_bytes() == tw.state_bytes(), c.name
        n_cases += 1
    assert n_cases >= 30


def test_training_core_bare_metal_arm_qemu(tmp_path):
    """The same training core compiled for a Cortex-M3 (soft float, picolibc, semihosting) and run
    in qemu-system-arm (mps2-an385): the same bits as the numpy twin and as x86-64."""
    import shutil

    cc, qemu = shutil.which("arm-none-eabi-gcc"), shutil.which("qemu-system-arm")
    specs = Path("/usr/lib/picolibc/arm-none-eabi/picolibc.specs")
    if not (cc and qemu and specs.is_file()):
        pytest.skip("arm-none-eabi-gcc, picolibc or qemu-system-arm missing")
    mod = Path(__file__).resolve().parents[2] / "native_modules" / "edgetune"
    jobs = tmp_path / "jobs.txt"
    elf = tmp_path / "harness.elf"
    cmd = [cc, "-mcpu=cortex-m3", "-mthumb", "-O2", "-std=gnu99", "-Wall", "-Wextra", "-Werror",
           "-Wno-unused-parameter", "-Wno-unused-function", "-ffp-contract=off", f"--specs={specs}",
           "--oslib=semihost", f'-DJOBS_FILE="{jobs}"', *_engine_sources(mod),
           "-Wl,--defsym=__flash=0x0", "-Wl,--defsym=__flash_size=0x400000", "-Wl,--defsym=__ram=0x20000000",
           "-Wl,--defsym=__ram_size=0x400000", "-Wl,--defsym=__stack_size=0x10000", "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rng = np.random.default_rng(78)
    lines, expect = [], []
    for c in hand_cases(0, 12):
        if not c.qas or len(expect) == 10:
            continue
        m = read_etm(c.etm)
        m.scheme = c.scheme.encode()
        etm = write_etm(m)
        xs = rng.integers(-128, 128, (STEPS, m.input_tensor.size)).astype(np.int8)
        labels = rng.integers(0, m.output_tensor.size, STEPS).astype(np.uint8)
        k = len(expect)
        for suffix, data in (("etm", etm), ("x", xs.tobytes()), ("l", labels.tobytes())):
            (tmp_path / f"{k}.{suffix}").write_bytes(data)
        lines.append(" ".join([str(tmp_path / f"{k}.etm"), str(tmp_path / f"{k}.x"), str(tmp_path / f"{k}.l"),
                               repr(c.lr), "1", repr(c.momentum), str(tmp_path / f"{k}.state")]))
        tw = Trainer(etm, momentum=c.momentum)
        want = [f32hex(tw.step(x, int(lb), c.lr, True)) for x, lb in zip(xs, labels)]
        expect.append((c.name, want, tw.state_bytes()))
    jobs.write_text("\n".join(lines) + "\n")
    import time

    done = Path(str(jobs) + ".done")
    q = subprocess.Popen([qemu, "-machine", "mps2-an385", "-nographic", "-monitor", "null",
                          "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300  # a generous bound against hangs, not a timing assertion
        while not done.exists() and q.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        q.kill()
        q.wait(timeout=10)
    assert done.exists(), "the bare-metal harness did not finish"
    assert len(expect) >= 8
    for k, (name, want, state) in enumerate(expect):
        got = (tmp_path / f"{k}.state.txt").read_text().split("\n")
        assert got[0].split() == want, name
        assert (tmp_path / f"{k}.state").read_bytes() == state, name
