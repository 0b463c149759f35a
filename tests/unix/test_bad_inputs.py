"""Every bad input through the MicroPython API on the real unix port (docs/reliability.md).

The reference model (host/edgetune/learn/zoo.py's small variant, exported as `make demo` does) is
trained a few steps, so its state differs from the flashed weights; then each bad call below
must raise the documented exception with an "edgetune:" message (or the runtime's own
TypeError/OSError for wrong Python types and missing files), and leave the model UNCHANGED:
the same predict() outputs on fixed inputs and the same saved trained-weights bytes before
and after. At the end the model still trains, saves and loads.

Covered: wrong input length/type (predict, predict_class, train, evaluate), label out of range
or of the wrong type, NaN/inf/non-number lr, bad momentum, scheme naming a missing layer, a
layer without weights, a bad ratio, a repeated layer, bad n_bias, a non-dict scheme; training
a model with nothing trainable (inference-only scheme: computes the loss, changes nothing);
loading another model's file, a file saved under another scheme or momentum setting, a
missing file, every truncation of a good file, every single-bit flip of its header, random
byte flips of its parameters, an appended byte and garbage.

All cases run in ONE MicroPython process; each prints a JSON line checked here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.relhelp import REPO, record, reference_etm, run_script

SCRIPT = r"""
import edgetune, json, os
D = {d!r}
buf = open({etm!r}, 'rb').read()
other = open({other!r}, 'rb').read()
xs = [bytes(((i * 37 + k * 11) % 256) for k in range({n_in})) for i in range(4)]
m = edgetune.Model(buf)
for i in range(6):
    m.train(xs[i % 4], i % {ncls}, lr=0.05)
N_OUT = {ncls}

def state():
    m.save(D + '/snap.etw')
    with open(D + '/snap.etw', 'rb') as f:
        return f.read()

def snap():
    return ([m.predict(x) for x in xs], state())

GOOD = state()
BEFORE = snap()
results = []

def case(name, want, f):
    try:
        f()
        got, msg = 'OK', ''
    except Exception as e:
        got, msg = type(e).__name__, str(e)
    after = snap()
    print(json.dumps([name, want, got, msg, after == BEFORE]))

def write(name, data):
    with open(D + '/' + name, 'wb') as f:
        f.write(data)
    return D + '/' + name

n = {n_in}
# --- inputs
case('predict_short', 'ValueError', lambda: m.predict(bytes(n - 1)))
case('predict_long', 'ValueError', lambda: m.predict(bytes(n + 1)))
case('predict_empty', 'ValueError', lambda: m.predict(b''))
case('predict_int', 'TypeError', lambda: m.predict(5))
case('predict_none', 'TypeError', lambda: m.predict(None))
case('predict_list', 'TypeError', lambda: m.predict([0] * n))
case('predict_class_short', 'ValueError', lambda: m.predict_class(bytes(n - 1)))
case('predict_class_float', 'TypeError', lambda: m.predict_class(1.5))
case('train_short', 'ValueError', lambda: m.train(bytes(n - 1), 0))
case('train_long', 'ValueError', lambda: m.train(bytes(2 * n), 0))
case('train_list', 'TypeError', lambda: m.train([0] * n, 0))
case('train_none', 'TypeError', lambda: m.train(None, 0))
# --- labels
case('label_negative', 'ValueError', lambda: m.train(xs[0], -1))
case('label_n_classes', 'ValueError', lambda: m.train(xs[0], N_OUT))
case('label_huge', 'ValueError', lambda: m.train(xs[0], 1 << 40))
case('label_bigint', 'OverflowError', lambda: m.train(xs[0], 1 << 100))
case('label_float', 'TypeError', lambda: m.train(xs[0], 1.0))
case('label_str', 'TypeError', lambda: m.train(xs[0], '1'))
case('label_none', 'TypeError', lambda: m.train(xs[0], None))
# --- learning rate
case('lr_nan', 'ValueError', lambda: m.train(xs[0], 0, lr=float('nan')))
case('lr_inf', 'ValueError', lambda: m.train(xs[0], 0, lr=float('inf')))
case('lr_minus_inf', 'ValueError', lambda: m.train(xs[0], 0, lr=-float('inf')))
case('lr_str', 'TypeError', lambda: m.train(xs[0], 0, lr='0.1'))
case('lr_none', 'TypeError', lambda: m.train(xs[0], 0, lr=None))
case('lr_negative', 'ValueError', lambda: m.train(xs[0], 0, lr=-0.01))
case('lr_zero', 'ValueError', lambda: m.train(xs[0], 0, lr=0.0))
case('lr_huge', 'ValueError', lambda: m.train(xs[0], 0, lr=1e6))
# --- evaluate
case('eval_len_mismatch', 'ValueError', lambda: m.evaluate([xs[0]], [0, 1]))
case('eval_empty', 'ValueError', lambda: m.evaluate([], []))
case('eval_bad_label', 'ValueError', lambda: m.evaluate([xs[0], xs[1]], [0, N_OUT]))
case('eval_bad_input', 'ValueError', lambda: m.evaluate([xs[0], b'x'], [0, 1]))
case('eval_not_list', 'TypeError', lambda: m.evaluate(5, 5))
# --- Model(): schemes and momentum (the existing model must not be affected either)
NL = {n_layers}
case('scheme_type', 'TypeError', lambda: edgetune.Model(buf, scheme=3))
case('scheme_missing_layer', 'ValueError', lambda: edgetune.Model(buf, scheme={{'weights': [(NL, 1)]}}))
case('scheme_missing_layer_neg', 'ValueError', lambda: edgetune.Model(buf, scheme={{'weights': [(-NL - 1, 1)]}}))
case('scheme_layer_without_weights', 'ValueError', lambda: edgetune.Model(buf, scheme={{'weights': [({pool}, 1)]}}))
case('scheme_ratio_3', 'ValueError', lambda: edgetune.Model(buf, scheme={{'weights': [(0, 3)]}}))
case('scheme_ratio_0', 'ValueError', lambda: edgetune.Model(buf, scheme={{'weights': [(0, 0)]}}))
case('scheme_ratio_16', 'ValueError', lambda: edgetune.Model(buf, scheme={{'weights': [(0, 16)]}}))
case('scheme_repeated_layer', 'ValueError', lambda: edgetune.Model(buf, scheme={{'weights': [(0, 1), (0, 2)]}}))
case('scheme_not_pairs', 'ValueError', lambda: edgetune.Model(buf, scheme={{'weights': [(0,)]}}))
case('scheme_weights_int', 'TypeError', lambda: edgetune.Model(buf, scheme={{'weights': 5}}))
case('scheme_nbias_negative', 'ValueError', lambda: edgetune.Model(buf, scheme={{'n_bias': -1}}))
case('scheme_nbias_too_many', 'ValueError', lambda: edgetune.Model(buf, scheme={{'n_bias': 99}}))
case('scheme_nbias_str', 'TypeError', lambda: edgetune.Model(buf, scheme={{'n_bias': '1'}}))
case('momentum_one', 'ValueError', lambda: edgetune.Model(buf, momentum=1.0))
case('momentum_negative', 'ValueError', lambda: edgetune.Model(buf, momentum=-0.1))
case('momentum_nan', 'ValueError', lambda: edgetune.Model(buf, momentum=float('nan')))
case('momentum_str', 'TypeError', lambda: edgetune.Model(buf, momentum='0.9'))
case('scheme_unknown_key', 'ValueError', lambda: edgetune.Model(buf, scheme={{'bogus': 1}}))
case('model_not_buffer', 'TypeError', lambda: edgetune.Model(12))
case('model_path', 'TypeError', lambda: edgetune.Model({etm!r}))
case('model_garbage', 'ValueError', lambda: edgetune.Model(b'EDTM' + bytes(100)))
case('model_truncated', 'ValueError', lambda: edgetune.Model(buf[:len(buf) // 2]))
# --- inference-only scheme: nothing trains; train() returns the loss and changes nothing
inf = edgetune.Model(buf, scheme={{'n_bias': 0}}) if {clf_is_fc} else None
print(json.dumps(['inference_only_trainable', inf.info()['trainable'] if inf else None]))
# --- loading weights
p_other = D + '/other.etw'
edgetune.Model(other).save(p_other)
case('load_other_model', 'ValueError', lambda: m.load(p_other))
p_scheme = D + '/scheme.etw'
edgetune.Model(buf, scheme={{'n_bias': 1}}).save(p_scheme)
case('load_other_scheme', 'ValueError', lambda: m.load(p_scheme))
p_mom = D + '/mom.etw'
edgetune.Model(buf, momentum=0.5).save(p_mom)
case('load_other_momentum', 'ValueError', lambda: m.load(p_mom))
case('load_missing_file', 'OSError', lambda: m.load(D + '/does-not-exist.etw'))
case('load_directory', 'OSError', lambda: m.load(D))
case('load_empty', 'ValueError', lambda: m.load(write('empty.etw', b'')))
case('load_garbage', 'ValueError', lambda: m.load(write('garbage.etw', b'not a weights file' * 40)))
case('load_appended_byte', 'ValueError', lambda: m.load(write('long.etw', GOOD + b'\0')))
case('load_model_file', 'ValueError', lambda: m.load({etm!r}))
case('save_missing_dir', 'OSError', lambda: m.save(D + '/no/such/dir/w.etw'))

# Every truncation, every single-bit flip of the 32-byte header, and byte flips of the
# parameters (each a separate file): ValueError, unchanged.
trunc_ok = flip_ok = body_ok = 0
for k in range(len(GOOD)):
    try:
        m.load(write('t.etw', GOOD[:k]))
    except ValueError:
        trunc_ok += 1
for k in range(32 * 8):
    b = bytearray(GOOD)
    b[k // 8] ^= 1 << (k % 8)
    try:
        m.load(write('f.etw', b))
    except ValueError:
        flip_ok += 1
import random
random.seed(1)
bodies = 200
for k in range(bodies):
    b = bytearray(GOOD)
    i = 32 + random.getrandbits(16) % (len(GOOD) - 32)
    b[i] ^= 1 + random.getrandbits(7)
    try:
        m.load(write('b.etw', b))
    except ValueError:
        body_ok += 1
print(json.dumps(['bulk', len(GOOD), trunc_ok, 256, flip_ok, bodies, body_ok, snap() == BEFORE]))

# Still usable: train, save, load round trip.
loss = m.train(xs[0], 1, lr=0.05)
m.save(D + '/after.etw')
m2 = edgetune.Model(buf)
m2.load(D + '/after.etw')
print(json.dumps(['usable', loss == loss, m2.predict(xs[1]) == m.predict(xs[1]), snap() != BEFORE]))
"""


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> dict:
    from edgetune.format.modelfile import OP_FULLY_CONNECTED, read_etm

    d = tmp_path_factory.mktemp("bad_inputs")
    etm = reference_etm()
    model = read_etm(etm.read_bytes())
    pool = next(i for i, ly in enumerate(model.layers) if ly.weight == 0xFFFF)
    code = SCRIPT.format(d=str(d), etm=str(etm), other=str(REPO / "fuzz" / "base.etm"),
                         n_in=model.input_tensor.size, ncls=model.output_tensor.size, n_layers=len(model.layers),
                         pool=pool, clf_is_fc=model.layers[-1].op == OP_FULLY_CONNECTED)
    proc = run_script(code, d)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    cases = {r[0]: r[1:] for r in rows if len(r) == 5}
    extra = {r[0]: r[1:] for r in rows if len(r) != 5}
    return {"cases": cases, "extra": extra}


def test_every_bad_call_raises_and_changes_nothing(outcome):
    cases = outcome["cases"]
    assert len(cases) >= 55
    bad = []
    for name, (want, got, msg, unchanged) in cases.items():
        if got != want or not unchanged:
            bad.append(f"{name}: want {want}, got {got} ({msg}); unchanged={unchanged}")
        # Our own refusals say who is talking; the runtime's TypeErrors/OSErrors are its own.
        if want == "ValueError" and not name.startswith("scheme_not_pairs") and not msg.startswith("edgetune:"):
            bad.append(f"{name}: message without 'edgetune:' prefix: {msg!r}")
    n_pass = len(cases) - len(bad)
    bulk = outcome["extra"]["bulk"]
    size, trunc_ok, n_flips, flip_ok, n_bodies, body_ok, bulk_unchanged = bulk
    record("bad_inputs", {
        "api_cases_tried": len(cases), "api_cases_passing": n_pass,
        "file_cases_tried": size + n_flips + n_bodies, "file_cases_passing": trunc_ok + flip_ok + body_ok,
        "file_cases_unchanged": bool(bulk_unchanged),
    })
    assert not bad, "\n".join(bad)


def test_error_messages_name_the_problem(outcome):
    c = outcome["cases"]
    assert "expects" in c["predict_short"][2]
    assert "out of range" in c["label_n_classes"][2]
    assert f"label {1 << 40} out of range" in c["label_huge"][2]  # was printed as (int)label = 0
    assert "finite" in c["lr_nan"][2]
    assert "(0, 1]" in c["lr_negative"][2] and "(0, 1]" in c["lr_huge"][2]
    assert "'bogus'" in c["scheme_unknown_key"][2] and "n_bias" in c["scheme_unknown_key"][2]
    assert "open(" in c["model_path"][2] and "read()" in c["model_path"][2]
    assert "does-not-exist.etw" in c["load_missing_file"][2]  # the file is named
    assert "no/such/dir/w.etw" in c["save_missing_dir"][2]
    assert "another model" in c["load_other_model"][2]
    assert "another training scheme" in c["load_other_scheme"][2]
    assert "momentum" in c["load_other_momentum"][2]
    assert "truncated" in c["load_appended_byte"][2] or "bytes" in c["load_appended_byte"][2]
    assert "no weights" in c["scheme_layer_without_weights"][2] or "layer" in c["scheme_layer_without_weights"][2]


def test_every_truncation_and_flip_of_a_weights_file_is_refused(outcome):
    size, trunc_ok, n_flips, flip_ok, n_bodies, body_ok, unchanged = outcome["extra"]["bulk"]
    assert size > 32
    assert trunc_ok == size
    assert flip_ok == n_flips
    assert body_ok == n_bodies
    assert unchanged


def test_inference_only_scheme_and_model_still_usable(outcome):
    # n_bias=0 on a model whose classifier is FULLY_CONNECTED still trains the classifier
    # (docs/training.md §1); an n_entries=0 scheme is covered by test_unix_train.py.
    trainable = outcome["extra"]["inference_only_trainable"][0]
    assert trainable is None or trainable > 0
    ok_loss, same_pred, changed = outcome["extra"]["usable"]
    assert ok_loss and same_pred and changed


def test_flashed_minus_128_weight_saves_and_loads(tmp_path):
    """Regression (found by fuzz_etm): a model whose trained channel holds a flashed weight of
    -128 saved a file its own load() refused ("weight -128 outside [-127, 127]"), so a reboot
    dropped the training. Such a weight that training never touched now loads (C and twin);
    a -128 where the flashed weight is not -128 is still refused."""
    import struct
    import zlib

    from edgetune.format.modelfile import read_etm, write_etm
    from edgetune.format.scheme import channel_weights, weight_layers
    from edgetune.twin.training import Trainer

    model = read_etm((REPO / "fuzz" / "base.etm").read_bytes())
    clf = weight_layers(model)[-1]  # the classifier: trained (all channels) by the default scheme
    w = model.tensors[model.layers[clf].weight]
    w.data = w.data.copy()
    w.data.reshape(-1)[3] = -128
    etm = write_etm(model)
    (tmp_path / "m.etm").write_bytes(etm)
    twin = Trainer(etm)
    good = twin.state_bytes()
    twin.load_state(good)  # the twin loads its own file
    # A -128 elsewhere in the copy (flashed value not -128) stays refused, in C and in the twin.
    flashed = channel_weights(model, clf).reshape(-1)
    k = int(np.flatnonzero(flashed != -128)[0])
    params = memory_offsets(model, twin, clf)
    bad = bytearray(good)
    bad[32 + params + k] = 0x80
    struct.pack_into("<I", bad, 12, zlib.crc32(bytes(bad[16:])) & 0xFFFFFFFF)
    with pytest.raises(ValueError, match="-128"):
        Trainer(etm).load_state(bytes(bad))
    (tmp_path / "bad.etw").write_bytes(bytes(bad))
    code = f"""
import edgetune
buf = open({str(tmp_path / 'm.etm')!r}, 'rb').read()
m = edgetune.Model(buf)
m.save({str(tmp_path / 'c.etw')!r})
m2 = edgetune.Model(buf)
m2.load({str(tmp_path / 'c.etw')!r})
print('LOADED')
try:
    m2.load({str(tmp_path / 'bad.etw')!r})
    print('BAD LOADED')
except ValueError as e:
    print('BAD', e)
"""
    proc = run_script(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.etw").read_bytes() == good
    assert "LOADED" in proc.stdout and "BAD edgetune: trained-weights file: layer" in proc.stdout, proc.stdout


def memory_offsets(model, twin, layer: int) -> int:
    """Offset of layer's weight copy inside the params region (docs/training.md §6)."""
    from edgetune.twin import memory

    layout = memory.training_layout(model, twin.scheme, False)
    items = {(name, ly): off for r in layout for name, ly, off, _ in r.items}
    return items[("weights", layer)] - layout[2].offset
