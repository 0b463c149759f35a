"""Random trainable models and the training cases the C module, the numpy twin and the fallback are
compared on (tests/unix/test_unix_train.py and the tests of the fallback, the qemu and Xtensa
boards, the recipe and the fleet): model x scheme x QAS x momentum, and the MicroPython runner
that trains each case and checks it against the twin bit for bit.
"""

from __future__ import annotations

import math
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

from edgetune.twin import memory
from edgetune.format.modelfile import (
    ACT_NONE, ACT_RELU, ACT_RELU6, DT_INT8, DT_INT32, NONE, OP_AVERAGE_POOL_2D, OP_CONV_2D,
    OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED, OP_MAX_POOL_2D, OP_MEAN, EtmModel, Layer, Tensor,
    read_etm, write_etm,
)
from edgetune.convert.prepare import PADDING_SAME, PADDING_VALID, compute_padding, conv_multipliers, fc_multipliers, mean_params
from edgetune.twin.refit import refit_layer
from edgetune.format.scheme import Scheme, weight_layers
from edgetune.twin.training import Trainer

STEPS = 20
N_HAND = 36  # hand-built random models
N_REAL = 6  # converted Keras models (tests/support/modelgen.py)

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
    """Converted Keras models (cached by tests/support/modelgen.py); empty if the generator is missing."""
    try:
        from tests.support import modelgen
        from edgetune.convert.export import tflite_to_etm
    except ImportError:
        return {}
    out = {}
    for seed in range(N_REAL):
        # models not ending in FULLY_CONNECTED have no classifier: "classifier" trains nothing
        out[f"k{seed}"] = read_etm(write_etm(tflite_to_etm(modelgen.tflite_model(seed))))
    return out


def refittable_models(n: int) -> list[tuple[int, EtmModel]]:
    """The first n (seed, train_model(seed)) whose default scheme has a refittable classifier."""
    out, seed = [], 0
    while len(out) < n:
        m = train_model(seed)
        if refit_layer(m, Scheme.default(m)) is not None:
            out.append((seed, m))
        seed += 1
    return out


def stepped_state(model: EtmModel, rng, steps: int = 4) -> tuple[bytes, bytes]:
    """(etm bytes, a global state that is not the flashed one): `steps` SGD steps on random
    windows from the flashed state (a fleet's global state after some training)."""
    etm = write_etm(model)
    t = Trainer(etm)
    n_in, n_cls = model.input_tensor.size, model.output_tensor.size
    for _ in range(steps):
        t.step(rng.integers(-128, 128, n_in).astype(np.int8), int(rng.integers(0, n_cls)), 0.05)
    return etm, t.state_bytes()

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


def f32hex(v) -> str:
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
        want = [f32hex(tw.step(x, int(lb), c.lr, c.qas)) for x, lb in zip(xs, labels)]
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
        assert (ev_loss, ev_acc) == (f32hex(ev[0]), f32hex(ev[1])), where
        assert bytes.fromhex(y) == tw.predict(xs[0]).tobytes(), where
        if c.qas:  # plain int8 SGD steps are ~s_b^2 smaller and often round to nothing
            n_trained += int(state[32:] != Trainer(c.etm, c.scheme, momentum=c.momentum).state_bytes()[32:])
    return n_trained


def hand_cases(lo: int, hi: int) -> list[Case]:
    cases = []
    for seed in range(lo, hi):
        cases += cases_for(f"h{seed}", train_model(seed), np.random.default_rng([5, seed]))
    return cases


def bound_model() -> EtmModel:
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


# --------------------------------------------------------------------------------------------
# Window sets on disk for a MicroPython runner script
# --------------------------------------------------------------------------------------------

# Lines of a runner's loop body (4 spaces in, with D the directory and name, n in scope) that read
# what write_windows wrote: buf (the .etm bytes), xs (n windows), lab (bytes, one label each).
READ_WINDOWS = """
    buf = open(D + '/' + name + '.etm', 'rb').read()
    raw = open(D + '/' + name + '.x', 'rb').read()
    lab = open(D + '/' + name + '.lab', 'rb').read()
    xs = [raw[i * (len(raw) // n):(i + 1) * (len(raw) // n)] for i in range(n)]
"""


def write_windows(tmp: Path, name: str, model: EtmModel, rng: np.random.Generator, n_lo: int,
                  n_hi: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """n in [n_lo, n_hi) random int8 windows and labels of model, written with its .etm for
    READ_WINDOWS as tmp/name.{etm,x,lab}; returns (etm, xs, labels)."""
    etm = write_etm(model)
    n = int(rng.integers(n_lo, n_hi))
    xs = rng.integers(-128, 128, (n, model.input_tensor.size)).astype(np.int8)
    labels = rng.integers(0, model.output_tensor.size, n).astype(np.uint8)
    for ext, data in (("etm", etm), ("x", xs.tobytes()), ("lab", labels.tobytes())):
        (tmp / f"{name}.{ext}").write_bytes(data)
    return etm, xs, labels
