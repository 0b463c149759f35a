"""Heap limits, bad inputs and buffers on the real unix-port MicroPython: an arena larger than the
heap is a MemoryError (and a smaller model still loads after it), and wrong input lengths and
types, writable or misaligned model buffers are refused with a clear exception.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgetune.format.modelfile import DT_INT8, OP_MAX_POOL_2D, EtmModel, Layer, Tensor, write_etm

from tests.support.randmodels import random_model


def big_activation_model(side: int = 100, channels: int = 4) -> EtmModel:
    """MAX_POOL 1x1 on a (1, side, side, C) input: a tiny file with a large arena."""
    t = [Tensor(DT_INT8, (1, side, side, channels), zero_point=3, scale=0.1),
         Tensor(DT_INT8, (1, side, side, channels), zero_point=3, scale=0.1)]
    return EtmModel(t, [Layer(OP_MAX_POOL_2D, 0, 1)], 0, 1)


def _run(micropython: Path, tmp: Path, code: str, heapsize: str | None = None) -> subprocess.CompletedProcess:
    script = tmp / "t.py"
    script.write_text(code)
    cmd = [str(micropython)] + (["-X", f"heapsize={heapsize}"] if heapsize else []) + [str(script)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.natmod
def test_arena_larger_than_heap_raises_memory_error(micropython, tmp_path):
    big = big_activation_model()
    (tmp_path / "big.etm").write_bytes(write_etm(big))
    (tmp_path / "small.etm").write_bytes(write_etm(random_model(3)))
    code = f"""
import edgetune, gc
buf = open({str(tmp_path / 'big.etm')!r}, 'rb').read()
try:
    edgetune.Model(buf)
    print('LOADED')
except MemoryError as e:
    print('MEMORY', e)
gc.collect()
m = edgetune.Model(open({str(tmp_path / 'small.etm')!r}, 'rb').read())
print('SMALL', m.info()['arena'])
"""
    proc = _run(micropython, tmp_path, code, heapsize="48K")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("MEMORY edgetune: model needs 80000 bytes of arena"), lines
    assert lines[1].startswith("SMALL ")
    # With enough heap the same model loads and runs (the arena is real).
    code2 = f"""
import edgetune
m = edgetune.Model(open({str(tmp_path / 'big.etm')!r}, 'rb').read())
y = m.predict(bytes(range(256)) * 156 + bytes(64))
print('ARENA', m.info()['arena'], len(y), y[:4] == bytes([0, 1, 2, 3]))
"""
    proc = _run(micropython, tmp_path, code2, heapsize="512K")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ARENA", "80000", "40000", "True"]


def test_bad_inputs_and_buffers(micropython, tmp_path):
    model = random_model(5)
    n_in = model.input_tensor.size
    (tmp_path / "m.etm").write_bytes(write_etm(model))
    code = f"""
import edgetune
buf = open({str(tmp_path / 'm.etm')!r}, 'rb').read()
m = edgetune.Model(buf)
def attempt(label, f, *a):
    try:
        f(*a)
        print(label, 'OK')
    except Exception as e:
        print(label, type(e).__name__, e)
attempt('short', m.predict, bytes({n_in - 1}))
attempt('long', m.predict, bytes({n_in + 1}))
attempt('empty', m.predict_class, b'')
attempt('int', m.predict, 5)
attempt('none', m.predict_class, None)
attempt('right', m.predict, bytes({n_in}))
attempt('array', m.predict_class, __import__('array').array('b', [1] * {n_in}))
attempt('model_int', edgetune.Model, 12)
attempt('model_empty', edgetune.Model, b'')
attempt('misaligned', edgetune.Model, memoryview(b'\\0' + buf)[1:])
ba2 = bytearray(buf)
attempt('bytearray', edgetune.Model, ba2)
attempt('memoryview_bytearray', edgetune.Model, memoryview(ba2))
attempt('array_model', edgetune.Model, __import__('array').array('b', buf))
m2 = edgetune.Model(memoryview(buf))
attempt('memoryview_bytes', m2.predict, bytes({n_in}))
"""
    proc = _run(micropython, tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert got["short"] == f"ValueError edgetune: input has {n_in - 1} bytes, the model expects {n_in}"
    assert got["long"].startswith("ValueError") and str(n_in) in got["long"]
    assert got["empty"].startswith("ValueError")
    assert got["int"].startswith("TypeError")
    assert got["none"].startswith("TypeError")
    assert got["right"] == "OK" and got["array"] == "OK" and got["memoryview_bytes"] == "OK"
    assert got["model_int"].startswith("TypeError")
    assert got["model_empty"].startswith("ValueError edgetune: not an .etm file")
    assert got["misaligned"].startswith("ValueError") and "aligned" in got["misaligned"]
    # a buffer that could change under the model (resized: freed memory; rewritten: unvalidated
    # counts) is refused up front (docs/reliability.md §7)
    for what in ("bytearray", "memoryview_bytearray", "array_model"):
        assert got[what].startswith("TypeError") and "read-only buffer" in got[what], got[what]
