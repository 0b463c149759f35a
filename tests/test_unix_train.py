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

import math
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from edgetune.twin import memory
from edgetune.format.modelfile import (
    ACT_NONE,
    ACT_RELU,
    ACT_RELU6,
    DT_INT8,
    DT_INT32,
    NONE,
    OP_AVERAGE_POOL_2D,
    OP_CONV_2D,
    OP_DEPTHWISE_CONV_2D,
    OP_FULLY_CONNECTED,
    OP_MAX_POOL_2D,
    OP_MEAN,
    EtmModel,
    Layer,
    Tensor,
    read_etm,
    write_etm,
)
from edgetune.convert.prepare import PADDING_SAME, PADDING_VALID, compute_padding, conv_multipliers, fc_multipliers, mean_params
from edgetune.format.scheme import Scheme, weight_layers
from edgetune.twin.training import Trainer

STEPS = 20
N_HAND = 36  # hand-built random models
N_REAL = 6  # converted Keras models (tests/modelgen.py)

# --------------------------------------------------------------------------------------------
# Random trainable models (pure numpy): consistent float scales, so gradients are meaningful
# --------------------------------------------------------------------------------------------


def _clamp(rng, zp: int):
    r = rng.random()
    if r < 0.45:
        return ACT_NONE, -128, 127
    if r < 0.8:
        return ACT_RELU, max(-128, zp), 127
    return ACT_RELU6, max(-128, zp), min(127, zp + int(rng.integers(40, 200)))


def train_model(seed: int) -> EtmModel:
    """A random chain of conv / depthwise / pools / MEAN / hidden FC ending in an FC classifier."""
    rng = np.random.default_rng([41, seed])
    if rng.random() < 0.5:
        h, w = 1, int(rng.integers(4, 33))
    else:
        h, w = int(rng.integers(3, 11)), int(rng.integers(3, 11))
    c = int(rng.integers(1, 5))
    tensors = [Tensor(DT_INT8, (1, h, w, c), zero_point=int(rng.integers(-60, 60)),
                      scale=float(rng.uniform(0.005, 0.05)), name="input")]
    layers: list[Layer] = []

    def add(t: Tensor) -> int:
        tensors.append(t)
        return len(tensors) - 1

    def weights(shape, c_out: int, axis: int, taps: int):
        data = rng.integers(-127, 128, shape).astype(np.int8)
        if rng.random() < 0.15:
            data[..., :] = (data // 8).astype(np.int8)  # small weights: l1 ties / small gradients
        if rng.random() < 0.6:
            sc = rng.uniform(0.5, 2.0, c_out).astype(np.float32) * np.float32(0.3 / (127 * math.sqrt(taps)))
            return Tensor(DT_INT8, shape, data=data, quant_axis=axis, scales=sc.astype(np.float32)), sc
        s = float(0.3 / (127 * math.sqrt(taps)) * rng.uniform(0.5, 2.0))
        return Tensor(DT_INT8, shape, data=data, scale=s), np.array([s], np.float32)

    def bias(in_scale: float, wt: Tensor, c_out: int, force: bool = False) -> int:
        if not force and rng.random() < 0.25:
            return NONE
        sc = (np.float32(in_scale) * (wt.scales if wt.scales is not None else np.float32(wt.scale)))
        sc = np.broadcast_to(np.asarray(sc, np.float32), (c_out,)).astype(np.float32)
        data = np.round(rng.normal(0, 0.1, c_out) / sc).astype(np.int64)
        data = np.clip(data, -(1 << 24), 1 << 24).astype(np.int32).reshape(c_out, 1, 1, 1)
        if wt.scales is not None:
            return add(Tensor(DT_INT32, (c_out, 1, 1, 1), data=data, quant_axis=0, scales=sc))
        return add(Tensor(DT_INT32, (c_out, 1, 1, 1), data=data, scale=float(sc[0])))

    def out_tensor(shape, in_scale):
        zp = int(rng.integers(-100, 30))
        return add(Tensor(DT_INT8, shape, zero_point=zp, scale=float(in_scale * rng.uniform(0.6, 2.0)))), zp

    cur = 0
    for _ in range(int(rng.integers(0, 4))):
        _, h, w, c = tensors[cur].shape
        t_in = tensors[cur]
        kind = str(rng.choice(["conv", "dw", "max", "avg"], p=[0.4, 0.3, 0.15, 0.15]))
        kh = int(rng.integers(1, min(3, h) + 1))
        kw = int(rng.integers(1, min(4, w) + 1))
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        pad = PADDING_SAME if rng.random() < 0.5 else PADDING_VALID
        p = compute_padding(pad, h, w, kh, kw, sh, sw)
        if kind in ("max", "avg"):
            act, lo, hi = (ACT_NONE, -128, 127) if rng.random() < 0.7 else _clamp(rng, t_in.zero_point)
            oi = add(Tensor(DT_INT8, (1, p.out_h, p.out_w, c), zero_point=t_in.zero_point, scale=t_in.scale))
            layers.append(Layer(OP_MAX_POOL_2D if kind == "max" else OP_AVERAGE_POOL_2D, cur, oi, activation=act,
                                stride_h=sh, stride_w=sw, filter_h=kh, filter_w=kw, pad_h=p.pad_h,
                                pad_w=p.pad_w, act_min=lo, act_max=hi))
        else:
            dm = int(rng.integers(1, 3)) if kind == "dw" else 1
            c_out = c * dm if kind == "dw" else int(rng.integers(2, 13))
            shape = (c_out, kh, kw, c) if kind == "conv" else (1, kh, kw, c_out)
            taps = kh * kw * (c if kind == "conv" else 1)
            wt, ws = weights(shape, c_out, 0 if kind == "conv" else 3, taps)
            wi = add(wt)
            bi = bias(t_in.scale, wt, c_out)
            oi, ozp = out_tensor((1, p.out_h, p.out_w, c_out), t_in.scale * 0.3 * 4)
            mult, shift = conv_multipliers(t_in.scale, ws, tensors[oi].scale, c_out)
            act, lo, hi = _clamp(rng, ozp)
            layers.append(Layer(OP_CONV_2D if kind == "conv" else OP_DEPTHWISE_CONV_2D, cur, oi, weight=wi,
                                bias=bi, activation=act, stride_h=sh, stride_w=sw, filter_h=kh, filter_w=kw,
                                pad_h=p.pad_h, pad_w=p.pad_w, depth_multiplier=dm, input_offset=-t_in.zero_point,
                                output_offset=ozp, act_min=lo, act_max=hi, multipliers=mult, shifts=shift))
        cur = layers[-1].output
    _, h, w, c = tensors[cur].shape
    if h * w > 1 and rng.random() < 0.4:
        t_in = tensors[cur]
        out_scale = t_in.scale * float(rng.uniform(0.5, 1.5))
        ozp = int(rng.integers(-30, 30))
        mp = mean_params(t_in.scale, t_in.zero_point, out_scale, ozp, h * w)
        oi = add(Tensor(DT_INT8, (1, 1, 1, c), zero_point=ozp, scale=out_scale))
        layers.append(Layer(OP_MEAN, cur, oi, input_offset=-t_in.zero_point, output_offset=ozp,
                            multipliers=np.array([mp.multiplier], np.int32),
                            shifts=np.array([mp.shift], np.int32), p0=mp.p0))
        cur = oi
    n_fc = 2 if rng.random() < 0.35 else 1
    for k in range(n_fc):
        t_in = tensors[cur]
        kin = t_in.size
        c_out = int(rng.integers(2, 9)) if k == n_fc - 1 else int(rng.integers(3, 17))
        wt, ws = weights((c_out, 1, 1, kin), c_out, 0, kin)
        wi = add(wt)
        bi = bias(t_in.scale, wt, c_out, force=k == n_fc - 1 and rng.random() < 0.8)
        oi, ozp = out_tensor((1, 1, 1, c_out), t_in.scale * 0.3 * 4)
        if k == n_fc - 1:  # logits: wider range, no clamp most of the time
            tensors[oi].scale = float(rng.uniform(0.02, 0.2))
        mult, shift = fc_multipliers(t_in.scale, ws if ws.size > 1 else ws[0], tensors[oi].scale, c_out)
        act, lo, hi = (ACT_NONE, -128, 127) if k == n_fc - 1 and rng.random() < 0.8 else _clamp(rng, ozp)
        layers.append(Layer(OP_FULLY_CONNECTED, cur, oi, weight=wi, bias=bi, activation=act,
                            input_offset=-t_in.zero_point, output_offset=ozp, act_min=lo, act_max=hi,
                            multipliers=mult, shifts=shift))
        cur = oi
    return read_etm(write_etm(EtmModel(tensors, layers, 0, cur, meta={"seed": seed})))


def real_models() -> dict[str, EtmModel]:
    """Converted Keras models (cached by tests/modelgen.py); empty if the generator is missing."""
    try:
        import modelgen
        from edgetune.convert.export import tflite_to_etm
    except ImportError:
        return {}
    out = {}
    for seed in range(N_REAL):
        # models not ending in FULLY_CONNECTED have no classifier: "classifier" trains nothing
        out[f"k{seed}"] = read_etm(write_etm(tflite_to_etm(modelgen.tflite_model(seed))))
    return out


# --------------------------------------------------------------------------------------------
# Cases: model x scheme x qas x momentum
# --------------------------------------------------------------------------------------------


class Case:
    def __init__(self, name: str, model: EtmModel, kind: str, scheme: Scheme, device_scheme, momentum: float,
                 qas: bool, lr: float, etm: bytes):
        self.name, self.model, self.kind, self.scheme = name, model, kind, scheme
        self.device_scheme, self.momentum, self.qas, self.lr, self.etm = device_scheme, momentum, qas, lr, etm


def cases_for(name: str, model: EtmModel, rng: np.random.Generator) -> list[Case]:
    wl = weight_layers(model)
    out = []
    plain = write_etm(model)
    kinds = ["default", "classifier", "bias_etm", "sliced"]
    for kind in kinds:
        mom = float(rng.choice([0.0, 0.0, 0.5, 0.9]))
        qas = bool(rng.random() < 0.65)
        lr = float(rng.choice([0.005, 0.02, 0.1, 0.5]))
        etm, dev = plain, None
        if kind == "default":
            scheme = Scheme.default(model)
        elif kind == "classifier":
            scheme = Scheme.build(model, 0)
            dev = {"n_bias": 0}
        elif kind == "bias_etm":  # bias-only last n (no classifier weights), stored in the .etm
            n = int(rng.integers(1, len(wl) + 1))
            scheme = Scheme.build(model, n, with_classifier=False)
            m2 = read_etm(plain)
            m2.scheme = scheme.encode()
            etm = write_etm(m2)
        else:  # classifier + channel-sliced weights of 1-2 other weight layers
            others = wl[:-1]
            if not others:
                continue
            picks = sorted(set(int(rng.choice(others)) for _ in range(2)))
            den = {layer: int(rng.choice([1, 2, 4, 8])) for layer in picks}
            n_bias = int(rng.integers(0, len(wl) + 1))
            try:
                scheme = Scheme.build(model, n_bias, {k: Fraction(1, d) for k, d in den.items()})
            except ValueError:
                continue  # accumulator bound; covered by test_scheme_refusals_agree
            # negative layer indices are accepted by both sides
            dev = {"n_bias": n_bias, "weights": [(k - len(model.layers), d) for k, d in den.items()]}
        out.append(Case(f"{name}_{kind}", model, kind, scheme, dev, mom, qas, lr, etm))
    return out


RUNNER = """
import edgetune, struct, binascii, gc
D = {d!r}
def hx(v):
    return binascii.hexlify(struct.pack('<f', v)).decode()
for name, scheme, mom, qas, lr in {cases!r}:
    buf = open(D + '/' + name + '.etm', 'rb').read()
    m = edgetune.Model(buf, scheme=scheme, momentum=mom)
    xs = open(D + '/' + name + '.x', 'rb').read()
    labels = open(D + '/' + name + '.lab', 'rb').read()
    info = m.info()
    n = len(xs) // len(labels)
    mv = memoryview(xs)
    losses = []
    for i in range(len(labels)):
        losses.append(hx(m.train(mv[i * n:(i + 1) * n], labels[i], lr=lr, qas=qas)))
    m.save(D + '/' + name + '.state')
    ev = m.evaluate([mv[i * n:(i + 1) * n] for i in range(len(labels))], list(labels))
    y = m.predict(mv[0:n])
    info = m.info()
    print('CASE', name, ' '.join(losses), info['arena'], info['trainable'], info['peak'],
          info['inference_arena'], hx(ev[0]), hx(ev[1]), binascii.hexlify(y).decode())
print('DONE')
"""


def _f32hex(v) -> str:
    return struct.pack("<f", float(np.float32(v))).hex()


def run_script(micropython: Path, tmp: Path, code: str, heapsize: str | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    script = tmp / "runner.py"
    script.write_text(code)
    cmd = [str(micropython)] + (["-X", f"heapsize={heapsize}"] if heapsize else []) + [str(script)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def check_cases(micropython: Path, tmp: Path, cases: list[Case], seed: int) -> int:
    rng = np.random.default_rng([97, seed])
    data = {}
    for c in cases:
        n_in, n_cls = c.model.input_tensor.size, c.model.output_tensor.size
        xs = rng.integers(-128, 128, (STEPS, n_in)).astype(np.int8)
        labels = rng.integers(0, n_cls, STEPS).astype(np.uint8)
        (tmp / f"{c.name}.etm").write_bytes(c.etm)
        (tmp / f"{c.name}.x").write_bytes(xs.tobytes())
        (tmp / f"{c.name}.lab").write_bytes(labels.tobytes())
        data[c.name] = (xs, labels)
    spec = [(c.name, c.device_scheme, c.momentum, c.qas, c.lr) for c in cases]
    proc = run_script(micropython, tmp, RUNNER.format(d=str(tmp), cases=spec))
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("DONE"), (
        f"MicroPython exited with {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    got = {}
    for line in proc.stdout.splitlines():
        if line.startswith("CASE "):
            parts = line.split()
            got[parts[1]] = parts[2:]
    n_trained = 0
    for c in cases:
        xs, labels = data[c.name]
        tw = Trainer(c.etm, c.scheme, momentum=c.momentum)
        want = [_f32hex(tw.step(x, int(lb), c.lr, c.qas)) for x, lb in zip(xs, labels)]
        g = got[c.name]
        losses, (arena, trainable, peak, inf_arena, ev_loss, ev_acc, y) = g[:STEPS], g[STEPS:]
        where = (f"{c.name}: ops {[ly.op_name for ly in c.model.layers]} scheme {c.scheme.describe()} "
                 f"momentum {c.momentum} qas {c.qas} lr {c.lr}")
        first_bad = next((k for k in range(STEPS) if losses[k] != want[k]), None)
        assert first_bad is None, f"{where}: loss of step {first_bad} differs: C {losses[first_bad]} numpy {want[first_bad]}"
        state = (tmp / f"{c.name}.state").read_bytes()
        twin = tw.state_bytes()
        assert len(state) == len(twin), f"{where}: state file {len(state)} bytes, twin {len(twin)}"
        if state != twin:
            k = next(i for i in range(len(state)) if state[i] != twin[i])
            items = memory.training_layout(c.model, c.scheme, c.momentum > 0)
            raise AssertionError(f"{where}: state files differ first at byte {k} (params offset {k - 32}); "
                                 f"layout {items}")
        assert int(arena) == memory.training_arena(c.model, c.scheme, c.momentum > 0), where
        assert int(inf_arena) == memory.inference_arena(c.model), where
        assert int(peak) == int(arena), where  # after a step the whole planned arena was used
        assert int(trainable) == c.scheme.n_params(c.model), where
        ev = tw.evaluate(xs, labels)
        assert (ev_loss, ev_acc) == (_f32hex(ev[0]), _f32hex(ev[1])), where
        assert bytes.fromhex(y) == tw.predict(xs[0]).tobytes(), where
        if c.qas:  # plain int8 SGD steps are ~s_b^2 smaller and often round to nothing
            n_trained += int(state[32:] != Trainer(c.etm, c.scheme, momentum=c.momentum).state_bytes()[32:])
    return n_trained


def _hand_cases(lo: int, hi: int) -> list[Case]:
    cases = []
    for seed in range(lo, hi):
        cases += cases_for(f"h{seed}", train_model(seed), np.random.default_rng([5, seed]))
    return cases


@pytest.mark.natmod
@pytest.mark.parametrize("chunk", range(3))
def test_training_c_vs_numpy_hand_built(micropython, tmp_path, chunk):
    """36 random hand-built models x up to 4 schemes, 20 steps each: identical bits."""
    per = N_HAND // 3
    cases = _hand_cases(chunk * per, (chunk + 1) * per)
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
        pytest.skip("tests/modelgen.py or export.py not available")
    cases = []
    for name, m in models.items():
        cases += cases_for(name, m, np.random.default_rng([6, len(cases)]))
    assert len(models) == N_REAL and len(cases) >= 3 * len(models)
    check_cases(micropython, tmp_path, cases, 1000)


def test_sliced_schemes_cover_every_weight_op():
    """The hand-built cases exercise channel-sliced CONV_2D, DEPTHWISE_CONV_2D and hidden FC."""
    ops = set()
    for c in _hand_cases(0, N_HAND):
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


def _bound_model() -> EtmModel:
    """conv (first) -> FC with C_out * 1 = 600 > 516: training the conv must be refused."""
    rng = np.random.default_rng(0)
    m = train_model(3)
    t = [Tensor(DT_INT8, (1, 1, 4, 2), zero_point=0, scale=0.02)]
    w0 = Tensor(DT_INT8, (3, 1, 1, 2), data=rng.integers(-127, 128, (3, 1, 1, 2)).astype(np.int8), scale=0.01)
    t += [w0, Tensor(DT_INT8, (1, 1, 4, 3), zero_point=0, scale=0.02)]
    w1 = Tensor(DT_INT8, (600, 1, 1, 12), data=rng.integers(-127, 128, (600, 1, 1, 12)).astype(np.int8), scale=0.01)
    t += [w1, Tensor(DT_INT8, (1, 1, 1, 600), zero_point=0, scale=0.1)]
    m0, s0 = conv_multipliers(0.02, [0.01], 0.02, 3)
    m1, s1 = fc_multipliers(0.02, [0.01], 0.1, 600)
    layers = [Layer(OP_CONV_2D, 0, 2, weight=1, multipliers=m0, shifts=s0),
              Layer(OP_FULLY_CONNECTED, 2, 4, weight=3, multipliers=m1, shifts=s1)]
    del m
    return EtmModel(t, layers, 0, 4)


def test_accumulator_bound_refused(micropython, tmp_path):
    m = _bound_model()
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

TRAIN_HARNESS_C = r"""
/* Host harness: model.c + scheme.c + train.c + every kernel. Usage:
 *   harness ETM XS LABELS LR QAS MOMENTUM STATE_OUT
 * Model with the .etm's scheme (else the default), exactly-sized heap blocks for the model, the
 * per-layer table, the arena and every input (so ASan sees any access past them); one step per
 * label; prints the losses as float32 hex and "PEAK <peak> <arena>", writes the state file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
#include "scheme.h"
#include "train.h"

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n ? (size_t)n : 1);
    if (fread(p, 1, (size_t)n, f) != (size_t)n) { perror(path); exit(2); }
    fclose(f);
    *len = (size_t)n;
    return p;
}

static int run_job(char **argv) {
    char err[192];
    size_t len, xlen, nlab;
    uint8_t *buf = slurp(argv[1], &len);
    et_model_t m;
    const char *bad = et_model_init(&m, buf, len, err, sizeof err);
    if (bad) { printf("VE %s\n", bad); return 4; }
    et_scheme_layer_t *s = malloc(sizeof(*s) * m.n_layers);
    if (m.scheme_off) {
        const char *msg = et_scheme_parse(&m, s, err, sizeof err);
        if (msg) { printf("VE %s\n", msg); return 4; }
    } else {
        et_scheme_default(&m, s);
    }
    et_train_layer_t *tl = calloc(m.n_layers, sizeof(*tl));
    for (unsigned i = 0; i < m.n_layers; ++i) { tl[i].s = s[i]; }
    et_train_t t;
    const char *msg = et_train_plan(&t, &m, tl, (float)atof(argv[6]), err, sizeof err);
    if (msg) { printf("VE %s\n", msg); return 4; }
    uint8_t *arena = malloc(t.arena_size);
    et_train_init(&t, arena);
    int8_t *xs = (int8_t *)slurp(argv[2], &xlen);
    uint8_t *labels = slurp(argv[3], &nlab);
    size_t k = et_model_input_size(&m);
    int8_t *x = malloc(k);
    /* losses as float32 hex, then "PEAK <peak> <arena>", to stdout and to STATE_OUT.txt */
    char path[600];
    snprintf(path, sizeof path, "%s.txt", argv[7]);
    FILE *log = fopen(path, "w");
    for (size_t i = 0; i < nlab; ++i) {
        memcpy(x, xs + i * k, k);
        float loss = et_train_step(&t, x, labels[i], (float)atof(argv[4]), atoi(argv[5]));
        uint8_t b[4];
        memcpy(b, &loss, 4);
        printf("%02x%02x%02x%02x ", b[0], b[1], b[2], b[3]);
        fprintf(log, "%02x%02x%02x%02x ", b[0], b[1], b[2], b[3]);
    }
    printf("\nPEAK %lu %lu\n", (unsigned long)t.peak, (unsigned long)t.arena_size);
    fprintf(log, "\nPEAK %lu %lu\n", (unsigned long)t.peak, (unsigned long)t.arena_size);
    fclose(log);
    uint8_t hdr[ET_STATE_HEADER];
    et_train_state_header(&t, hdr);
    size_t n = et_train_state_size(&t);
    uint8_t *file = malloc(n);
    memcpy(file, hdr, ET_STATE_HEADER);
    memcpy(file + ET_STATE_HEADER, arena + t.params_off, t.params_size);
    if (et_train_state_check(&t, file, n, err, sizeof err)) { printf("CHECK %s\n", err); return 5; }
    FILE *f = fopen(argv[7], "wb");
    fwrite(file, 1, n, f);
    fclose(f);
    free(file); free(x); free(labels); free(xs); free(arena); free(tl); free(s); free(buf);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 8) {
        return run_job(argv);
    }
#ifdef JOBS_FILE
    /* Bare-metal (QEMU + semihosting): one job per line of JOBS_FILE, 7 space-separated fields. */
    static char line[1024];
    FILE *jobs = fopen(JOBS_FILE, "r");
    if (!jobs) { printf("NOJOBS\n"); return 2; }
    while (fgets(line, sizeof line, jobs)) {
        char *args[8] = { "harness" };
        int n = 1;
        for (char *tok = strtok(line, " \n"); tok && n < 8; tok = strtok(NULL, " \n")) { args[n++] = tok; }
        if (n != 8) { break; }
        int rc = run_job(args);
        printf("RC %d\n", rc);
    }
    fclose(jobs);
    /* QEMU's console is buffered and picolibc's exit does not stop the machine: the host
     * polls for this file, then terminates QEMU. */
    snprintf(line, sizeof line, "%s.done", JOBS_FILE);
    FILE *done = fopen(line, "w");
    fputs("DONE\n", done);
    fclose(done);
#endif
    return 2;
}
"""


def _build_harness(out: Path, name: str, flags: list[str]) -> Path:
    import shutil

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    mod = Path(__file__).resolve().parents[1] / "native_modules" / "edgetune"
    (out / "harness.c").write_text(TRAIN_HARNESS_C)
    exe = out / name
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-ffp-contract=off", *flags,
           f"-I{mod}", f"-I{mod / 'kernels'}", str(out / "harness.c"), str(mod / "model.c"), str(mod / "scheme.c"),
           str(mod / "train.c"), *map(str, sorted((mod / "kernels").glob("*.c"))), "-o", str(exe)]
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
    for c in _hand_cases(0, 24):
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
        want = [_f32hex(tw.step(x, int(lb), c.lr, c.qas)) for x, lb in zip(xs, labels)]
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
    mod = Path(__file__).resolve().parents[1] / "native_modules" / "edgetune"
    (tmp_path / "harness.c").write_text(TRAIN_HARNESS_C)
    jobs = tmp_path / "jobs.txt"
    elf = tmp_path / "harness.elf"
    cmd = [cc, "-mcpu=cortex-m3", "-mthumb", "-O2", "-std=gnu99", "-Wall", "-Wextra", "-Werror",
           "-Wno-unused-parameter", "-ffp-contract=off", f"--specs={specs}", "--oslib=semihost",
           f'-DJOBS_FILE="{jobs}"', f"-I{mod}", f"-I{mod / 'kernels'}", str(tmp_path / "harness.c"),
           str(mod / "model.c"), str(mod / "scheme.c"), str(mod / "train.c"),
           *map(str, sorted((mod / "kernels").glob("*.c"))),
           "-Wl,--defsym=__flash=0x0", "-Wl,--defsym=__flash_size=0x400000", "-Wl,--defsym=__ram=0x20000000",
           "-Wl,--defsym=__ram_size=0x400000", "-Wl,--defsym=__stack_size=0x10000", "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rng = np.random.default_rng(78)
    lines, expect = [], []
    for c in _hand_cases(0, 12):
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
        want = [_f32hex(tw.step(x, int(lb), c.lr, True)) for x, lb in zip(xs, labels)]
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
