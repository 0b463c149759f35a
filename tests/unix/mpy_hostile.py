# MicroPython script of tests/unix/test_hostile.py (docs/reliability.md §7): hostile Python objects
# for every argument of every method of edgetune.Model (or edgetune_py.Model). Run as
#   micropython mpy_hostile.py MODULE ETM_PATH WORKDIR
# One line per case: "CASE <name>|<outcome>|<same|changed>|<expect>", then "DONE".
import sys
import gc
from array import array

MOD = __import__(sys.argv[1])
ETM, WORK = sys.argv[2], sys.argv[3]
buf = open(ETM, "rb").read()
m = MOD.Model(buf)
mb = MOD.Model(buf, batch=True)
info = m.info()
NIN = 1
for d in info["input_shape"]:
    NIN *= d
C = info["input_shape"][3]
K = info["output_shape"][3]


class Boom(Exception):
    pass


def boom():
    raise Boom("from a callback")


def churn():
    """Collect, then fill the freed memory: a stale pointer now reads other objects' bytes."""
    gc.collect()
    junk = [bytearray(b"\x7f" * 48) for _ in range(300)]
    return len(junk)


class Int:
    def __init__(self, v, act=None):
        self.v, self.act = v, act

    def __int__(self):
        if self.act:
            self.act()
        return self.v

    __index__ = __int__


class Flt:
    def __init__(self, v, act=None):
        self.v, self.act = v, act

    def __float__(self):
        if self.act:
            self.act()
        return self.v


class Bool:
    def __init__(self, act=None):
        self.act = act

    def __bool__(self):
        if self.act:
            self.act()
        return True


def empty(b):
    b[:] = b""


def win(k):
    return bytes(((k * 37 + i * 11) % 256) for i in range(NIN))


X0 = win(0)
N_CASES = [0]


def state(model):
    return None if model is None else (model.state(), model.predict(X0))


def case(name, model, fn, expect=None):
    """expect: None (an error or a result), 'ok', or an exception name. After an error the model
    must be unchanged (state() bytes and predict())."""
    N_CASES[0] += 1
    s0 = state(model)
    try:
        r = fn()
        out = "ok"
        if isinstance(r, float) and not (r - r == 0.0):
            out = "ok-but-not-finite"
    except Exception as e:  # noqa: BLE001 - every exception is reported
        out = "%s: %s" % (type(e).__name__, str(e).replace("|", "/").replace("\n", " "))
    s1 = state(model)
    print("CASE %s|%s|%s|%s" % (name, out[:300], "same" if s0 == s1 else "changed", expect or "any"))


def same_result(name, model_a, fa, model_b, fb):
    """A hostile object without side effects gives exactly the plain value's result and state."""
    N_CASES[0] += 1
    try:
        ra, rb = fa(), fb()
        ok = repr(ra) == repr(rb) and state(model_a) == state(model_b)
        out = "ok" if ok else "differs: %r vs %r" % (ra, rb)
    except Exception as e:  # noqa: BLE001
        out = "%s: %s" % (type(e).__name__, e)
    print("CASE %s|%s|same|ok" % (name, out))


def fresh(**kw):
    return MOD.Model(buf, **kw)


# ---------------------------------------------------------------- Model()
case("Model.momentum.raise", None, lambda: MOD.Model(buf, momentum=Flt(0.5, boom)), "Boom")
case("Model.momentum.churn", None, lambda: MOD.Model(buf, momentum=Flt(0.5, churn)), "ok")
case("Model.momentum.huge", None, lambda: MOD.Model(buf, momentum=Flt(1e300)), "ValueError")
case("Model.batch.raise", None, lambda: MOD.Model(buf, batch=Bool(boom)), "Boom")
sch = {}
sch["n_bias"] = Int(1, lambda: (sch.clear(), churn()))
case("Model.scheme.n_bias.clears_dict", None, lambda: MOD.Model(buf, scheme=sch))
W = []
W.extend([(Int(-1, lambda: (W.clear(), churn())), 1), (0, 2)])
case("Model.scheme.weights.clears_list", None, lambda: MOD.Model(buf, scheme={"weights": W}), "ValueError")
P = []
P.extend([Int(-1, lambda: (P.clear(), churn())), Int(2)])
case("Model.scheme.pair.clears_pair", None, lambda: MOD.Model(buf, scheme={"weights": [P]}))
case("Model.scheme.n_bias.2**32+5", None, lambda: MOD.Model(buf, scheme={"n_bias": 2**32 + 5}), "ValueError")
case("Model.scheme.n_bias.2**100", None, lambda: MOD.Model(buf, scheme={"n_bias": 2**100}), "OverflowError,ValueError")
case("Model.scheme.n_bias.Int_huge", None, lambda: MOD.Model(buf, scheme={"n_bias": Int(2**62)}), "ValueError")
case("Model.scheme.layer.2**62", None, lambda: MOD.Model(buf, scheme={"weights": [(2**62, 1)]}), "ValueError")
case("Model.scheme.den.Int_raise", None, lambda: MOD.Model(buf, scheme={"weights": [(0, Int(1, boom))]}), "Boom")


ARMED = [False]


class Key:
    def __hash__(self):
        return hash("n_bias")

    def __eq__(self, other):
        if ARMED[0]:
            D.clear()
            churn()
        return False


D = {"n_bias": 1}
D[Key()] = 2


def with_key():
    ARMED[0] = True
    try:
        return MOD.Model(buf, scheme=D)
    finally:
        ARMED[0] = False


case("Model.scheme.key_eq_clears_dict", None, with_key, "ValueError")
case("Model.buf.bytearray", None, lambda: MOD.Model(bytearray(buf)), "TypeError")
case("Model.buf.memoryview_bytearray", None, lambda: MOD.Model(memoryview(bytearray(buf))), "TypeError")
case("Model.buf.array", None, lambda: MOD.Model(array("b", buf)), "TypeError")
case("Model.buf.memoryview_bytes", None, lambda: MOD.Model(memoryview(buf)), "ok")
case("Model.buf.str600", None, lambda: MOD.Model("x" * 600), "TypeError")

# ---------------------------------------------------------------- predict / predict_class
for meth in ("predict", "predict_class"):
    f = getattr(m, meth)
    case(meth + ".x.str", m, lambda: f("a" * NIN), "TypeError")
    case(meth + ".x.bytearray", m, lambda: f(bytearray(X0)), "ok")
    case(meth + ".x.Int", m, lambda: f(Int(3)), "TypeError")
    case(meth + ".x.short", m, lambda: f(X0[1:]), "ValueError")

# ---------------------------------------------------------------- train (one sample)
for how, mk in (("grow", lambda x: x.extend(bytes(4096))), ("empty", empty)):
    x = bytearray(X0)
    case("train.label.%s_x" % how, m, lambda: m.train(x, Int(1, lambda: (mk(x), churn()))), "ValueError")
    x = bytearray(X0)
    case("train.lr.%s_x" % how, m, lambda: m.train(x, 1, lr=Flt(0.01, lambda: (mk(x), churn()))), "ValueError")
    x = bytearray(X0)
    case("train.qas.%s_x" % how, m, lambda: m.train(x, 1, qas=Bool(lambda: (mk(x), churn()))), "ValueError")
case("train.label.raise", m, lambda: m.train(X0, Int(1, boom)), "Boom")
case("train.lr.raise", m, lambda: m.train(X0, 1, lr=Flt(0.01, boom)), "Boom")
case("train.qas.raise", m, lambda: m.train(X0, 1, qas=Bool(boom)), "Boom")
case("train.label.Int_2**62", m, lambda: m.train(X0, Int(2**62)), "ValueError")
case("train.label.2**100", m, lambda: m.train(X0, 2**100), "OverflowError,ValueError")
case("train.label.-1", m, lambda: m.train(X0, -1), "ValueError")
case("train.label.str", m, lambda: m.train(X0, "1"), "TypeError")
case("train.label.float", m, lambda: m.train(X0, 1.0), "TypeError")
case("train.label.array_b_-1_no_batch", m, lambda: m.train(X0, array("b", [-1])), "ValueError")
case("train.x.str", m, lambda: m.train("a" * NIN, 1), "TypeError")
case("train.lr.Flt_inf", m, lambda: m.train(X0, 1, lr=Flt(float("inf"))), "ValueError")
ma, mb2 = fresh(), fresh()
same_result("train.Int_Flt_no_side_effect", ma, lambda: ma.train(X0, Int(1), lr=Flt(0.05)), mb2,
            lambda: mb2.train(X0, 1, lr=0.05))

# ---------------------------------------------------------------- train (a batch)
XB = X0 + win(1)
case("train_batch.labels.array_b_-1", mb, lambda: mb.train(X0, array("b", [-1])), "ValueError")
case("train_batch.labels.array_h", mb, lambda: mb.train(XB, array("h", [0])), "ValueError")
case("train_batch.labels.Int_items", mb, lambda: mb.train(XB, [Int(0), Int(1)]), "ValueError")
case("train_batch.labels.2**62", mb, lambda: mb.train(XB, [0, 2**62]), "ValueError")
case("train_batch.labels.2**100", mb, lambda: mb.train(XB, [0, 2**100]), "OverflowError,ValueError")
lab = [0, 1]
case("train_batch.lr.clears_labels_list", mb, lambda: mb.train(XB, lab, lr=Flt(0.01, lambda: (lab.clear(), churn()))),
     "ok")
lab_b = bytearray([0, 1])
case("train_batch.lr.empties_labels_bytearray", mb,
     lambda: mb.train(XB, lab_b, lr=Flt(0.01, lambda: (empty(lab_b), churn()))), "ok")
lab_b2 = bytearray([0, 1])
case("train_batch.lr.grows_labels_bytearray", mb,
     lambda: mb.train(XB, lab_b2, lr=Flt(0.01, lambda: (lab_b2.extend(bytes([200]) * 4000), churn()))), "ok")
xb = bytearray(XB)
case("train_batch.lr.grows_x", mb, lambda: mb.train(xb, [0, 1], lr=Flt(0.01, lambda: (xb.extend(bytes(4096)), churn()))),
     "ValueError")
xb2 = bytearray(XB)
case("train_batch.qas.empties_x", mb, lambda: mb.train(xb2, [0, 1], qas=Bool(lambda: (empty(xb2), churn()))),
     "ValueError")
lab_big = [0, 1]


def set_big():
    lab_big[1] = 10**6


case("train_batch.lr.out_of_range_after_check", mb, lambda: mb.train(XB, lab_big, lr=Flt(0.01, set_big)), "ok")
case("train_batch.lr.raise", mb, lambda: mb.train(XB, [0, 1], lr=Flt(0.01, boom)), "Boom")
ba, bb = fresh(batch=True), fresh(batch=True)
same_result("train_batch.bytes_vs_list", ba, lambda: ba.train(XB, b"\x00\x01", lr=Flt(0.05)), bb,
            lambda: bb.train(XB, [0, 1], lr=0.05))

# ---------------------------------------------------------------- evaluate
XS = [win(k) for k in range(6)]
LS = [k % K for k in range(6)]


def ev(label_act, xs=None):
    xs = list(XS) if xs is None else xs
    labels = list(LS)
    labels[2] = Int(LS[2], lambda: label_act(xs, labels))
    return lambda: m.evaluate(xs, labels)


case("evaluate.label.clears_xs", m, ev(lambda xs, ls: (xs.clear(), churn())), "ValueError")
case("evaluate.label.grows_xs", m, ev(lambda xs, ls: (xs.extend([X0] * 300), churn())), "ValueError")
case("evaluate.label.clears_labels", m, ev(lambda xs, ls: (ls.clear(), churn())), "ValueError")


def swap0(xs, ls):
    xs[0] = b"short"


case("evaluate.label.swaps_xs_item", m, ev(swap0), "ValueError")
xsb = [bytearray(x) for x in XS]
case("evaluate.label.grows_input_bytearray", m, ev(lambda xs, ls: (xs[0].extend(bytes(4096)), churn()), xsb),
     "ValueError")
case("evaluate.label.raise", m, ev(lambda xs, ls: boom()), "Boom")
case("evaluate.labels.array_b_-1", m, lambda: m.evaluate(XS[:3], array("b", [0, -1, 1])), "ValueError")
case("evaluate.labels.2**100", m, lambda: m.evaluate(XS[:2], [0, 2**100]), "OverflowError,ValueError")
case("evaluate.labels.Int_2**62", m, lambda: m.evaluate(XS[:2], [0, Int(2**62)]), "ValueError")
case("evaluate.xs.str_item", m, lambda: m.evaluate(["a" * NIN], [0]), "TypeError")
same_result("evaluate.Int_labels", m, lambda: m.evaluate(XS, [Int(v) for v in LS]), m, lambda: m.evaluate(XS, LS))

# ---------------------------------------------------------------- refit
RX = [win(k) for k in range(12)]
RL = [k % K for k in range(12)]


def rf(label_act=None, l2=None, alpha=None, xs=None, stats=False):
    xs = list(RX) if xs is None else xs
    labels = list(RL)
    if label_act:
        labels[3] = Int(RL[3], lambda: label_act(xs, labels))
    if stats:
        return lambda: m.refit_stats(xs, labels)
    return lambda: m.refit(xs, labels, l2=l2, alpha=alpha)


case("refit.label.clears_xs", m, rf(lambda xs, ls: (xs.clear(), churn())), "ValueError")
case("refit.label.grows_xs", m, rf(lambda xs, ls: (xs.extend([X0] * 300), churn())), "ValueError")
case("refit.label.clears_labels", m, rf(lambda xs, ls: (ls.clear(), churn())), "ValueError")
rxb = [bytearray(x) for x in RX]
case("refit.label.grows_input_bytearray", m, rf(lambda xs, ls: (xs[0].extend(bytes(4096)), churn()), xs=rxb),
     "ValueError")
rx2 = list(RX)
case("refit.l2.clears_xs", m, lambda: m.refit(rx2, RL, l2=Flt(1.0, lambda: (rx2.clear(), churn())), alpha=0.5),
     "ValueError")
rl2 = list(RL)
case("refit.alpha.clears_labels", m, lambda: m.refit(RX, rl2, l2=1.0, alpha=Flt(0.5, lambda: (rl2.clear(), churn()))),
     "ValueError")
case("refit.l2.raise", m, lambda: m.refit(RX, RL, l2=Flt(1.0, boom), alpha=0.5), "Boom")
case("refit.labels.array_b_-1", m, lambda: m.refit(RX[:3], array("b", [0, -1, 1]), l2=1.0, alpha=0.5), "ValueError")
case("refit.labels.2**100", m, lambda: m.refit(RX[:2], [0, 2**100], l2=1.0, alpha=0.5), "OverflowError,ValueError")
ra, rb = fresh(), fresh()
same_result("refit.Int_Flt_no_side_effect", ra, lambda: sorted(ra.refit(RX, [Int(v) for v in RL], l2=Flt(1.0),
                                                                     alpha=Flt(0.5)).items()),
            rb, lambda: sorted(rb.refit(RX, RL, l2=1.0, alpha=0.5).items()))

# ---------------------------------------------------------------- refit_stats (the refit's arguments)
case("refit_stats.label.clears_xs", m, rf(lambda xs, ls: (xs.clear(), churn()), stats=True), "ValueError")
case("refit_stats.label.grows_xs", m, rf(lambda xs, ls: (xs.extend([X0] * 300), churn()), stats=True), "ValueError")
case("refit_stats.label.clears_labels", m, rf(lambda xs, ls: (ls.clear(), churn()), stats=True), "ValueError")
case("refit_stats.label.grows_input_bytearray", m,
     rf(lambda xs, ls: (xs[0].extend(bytes(4096)), churn()), xs=[bytearray(x) for x in RX], stats=True), "ValueError")
case("refit_stats.label.empties_input_bytearray", m,
     rf(lambda xs, ls: (empty(xs[0]), churn()), xs=[bytearray(x) for x in RX], stats=True), "ValueError")
case("refit_stats.label.raise", m, rf(lambda xs, ls: boom(), stats=True), "Boom")
case("refit_stats.labels.array_b_-1", m, lambda: m.refit_stats(RX[:3], array("b", [0, -1, 1])), "ValueError")
case("refit_stats.labels.2**100", m, lambda: m.refit_stats(RX[:2], [0, 2**100]), "OverflowError,ValueError")
case("refit_stats.labels.Int_2**62", m, lambda: m.refit_stats(RX[:2], [0, Int(2**62)]), "ValueError")
case("refit_stats.xs.str_item", m, lambda: m.refit_stats(["a" * NIN, X0], [0, 0]), "TypeError")
case("refit_stats.xs.int", m, lambda: m.refit_stats(5, RL), "TypeError")
sa, sb = fresh(), fresh()
same_result("refit_stats.Int_no_side_effect", sa, lambda: sa.refit_stats(RX, [Int(v) for v in RL]),
            sb, lambda: sb.refit_stats(RX, RL))
sa, sb = fresh(), fresh()
same_result("refit_stats.changes_nothing", sa, lambda: len(sa.refit_stats(RX, RL)) > 0, sb, lambda: True)

# ---------------------------------------------------------------- calibrate / frame
ST = [((i * 7) % 11) / 10.0 for i in range(K * 15)]
ST = [v + (1.0 if i % 15 in (3, 6, 8, 9, 12, 14) else 0.0) for i, v in enumerate(ST)]  # positive diagonals
CX = [win(k) for k in range(6)]
CL = [k % K for k in range(6)]


def cal(**kw):
    xs, labels, stats = list(CX), list(CL), list(ST)
    hooks = kw.pop("hooks")
    hooks(xs, labels, stats, kw)
    return lambda: m.calibrate(xs, labels, stats, **kw)


def stats_hook(act):
    def h(xs, labels, stats, kw):
        stats[4] = Flt(stats[4], lambda: act(xs, labels, stats))
    return h


case("calibrate.stats.clears_stats", m, cal(hooks=stats_hook(lambda xs, ls, st: (st.clear(), churn()))), "ValueError")
case("calibrate.stats.clears_xs", m, cal(hooks=stats_hook(lambda xs, ls, st: (xs.clear(), churn()))), "ValueError")
case("calibrate.stats.grows_xs", m, cal(hooks=stats_hook(lambda xs, ls, st: (xs.extend([X0] * 300), churn()))),
     "ValueError")
case("calibrate.stats.Flt_churn", m, cal(hooks=stats_hook(lambda xs, ls, st: churn())))


def label_hook(act):
    def h(xs, labels, stats, kw):
        labels[1] = Int(labels[1], lambda: act(xs, labels, stats))
    return h


case("calibrate.label.clears_xs", m, cal(hooks=label_hook(lambda xs, ls, st: (xs.clear(), churn()))), "ValueError")
case("calibrate.label.clears_labels", m, cal(hooks=label_hook(lambda xs, ls, st: (ls.clear(), churn()))), "ValueError")
case("calibrate.label.raise", m, cal(hooks=label_hook(lambda xs, ls, st: boom())), "Boom")


def group_hook(act):
    def h(xs, labels, stats, kw):
        g = [0, 1, 2]
        g[0] = Int(0, lambda: act(g, xs))
        kw["accel"] = g
    return h


case("calibrate.accel.clears_group", m, cal(hooks=group_hook(lambda g, xs: (g.clear(), churn()))), "ValueError")
case("calibrate.accel.clears_xs", m, cal(hooks=group_hook(lambda g, xs: (xs.clear(), churn()))), "ValueError")


def scale_hook(act):
    def h(xs, labels, stats, kw):
        kw["scale"] = [Flt(info["input_scale"], lambda: act(xs, stats))] + [info["input_scale"]] * (C - 1)
    return h


case("calibrate.scale.clears_xs", m, cal(hooks=scale_hook(lambda xs, st: (xs.clear(), churn()))), "ValueError")
case("calibrate.scale.clears_stats", m, cal(hooks=scale_hook(lambda xs, st: (st.clear(), churn()))))
case("calibrate.scale.raise", m, cal(hooks=scale_hook(lambda xs, st: boom())), "Boom")
case("calibrate.labels.array_b_-1", m, lambda: m.calibrate(CX[:2], array("b", [0, -1]), ST), "ValueError")
ca, cb = fresh(), fresh()
same_result("calibrate.Int_Flt_no_side_effect", ca,
            lambda: sorted(ca.calibrate(CX, [Int(v) for v in CL], [Flt(v) for v in ST]).items()),
            cb, lambda: sorted(cb.calibrate(CX, CL, ST).items()))

EYE = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
R = list(EYE)
R[0] = Flt(1.0, lambda: (R.clear(), churn()))
case("frame.R.clears_R", m, lambda: m.frame(R), "ValueError")
R2 = list(EYE)
R2[4] = Flt(1.0, boom)
case("frame.R.raise", m, lambda: m.frame(R2), "Boom")
G = [0, 1, 2]
G[1] = Int(1, lambda: (G.clear(), churn()))
case("frame.accel.clears_group", m, lambda: m.frame(EYE, accel=G), "ValueError")
case("frame.accel.Int_2**62", m, lambda: m.frame(EYE, accel=[0, 1, Int(2**62)]), "ValueError")
case("frame.R.not_orthogonal", m, lambda: m.frame([2.0] + EYE[1:]), "ValueError")
fa, fb = fresh(), fresh()
same_result("frame.Flt_no_side_effect", fa, lambda: fa.frame([Flt(v) for v in EYE], accel=[Int(0), 1, 2]), fb,
            lambda: fb.frame(EYE, accel=[0, 1, 2]))

# ---------------------------------------------------------------- quantize
SMP = [((i * 13) % 17 - 8) / 4.0 for i in range(C * 16)]
s1 = list(SMP)
s1[5] = Flt(SMP[5], lambda: (s1.clear(), churn()))
case("quantize.samples.clears_samples", m, lambda: m.quantize(s1), "ValueError")
s2 = list(SMP)
case("quantize.scale.clears_samples", m,
     lambda: m.quantize(s2, scale=[Flt(info["input_scale"], lambda: (s2.clear(), churn()))] + [info["input_scale"]] * (C - 1)),
     "ValueError")
fs = array("f", SMP)
case("quantize.scale.grows_f_buffer", m,
     lambda: m.quantize(fs, scale=[Flt(info["input_scale"], lambda: (fs.extend(array("f", [0.0] * 4000)), churn()))]
                        + [info["input_scale"]] * (C - 1)), "ValueError")
case("quantize.zero_point.raise", m, lambda: m.quantize(SMP, zero_point=[Flt(0.0, boom)] * C), "Boom")
case("quantize.samples.nan", m, lambda: m.quantize([float("nan")] * C), "ValueError")
same_result("quantize.Flt_no_side_effect", m, lambda: m.quantize([Flt(v) for v in SMP]), m, lambda: m.quantize(SMP))

# ---------------------------------------------------------------- save / load / load_state / state
import os  # noqa: E402

try:
    os.mkdir(WORK + "/adir")
except OSError:
    pass
case("save.path.Int", m, lambda: m.save(Int(1)), "TypeError")
case("save.path.empty", m, lambda: m.save(""), "ValueError")
case("save.path.directory", m, lambda: m.save(WORK + "/adir"), "OSError")
N_CASES[0] += 1
print("CASE save.directory_leaves_no_tmp|%s|same|ok" % ("ok" if "adir.tmp" not in os.listdir(WORK) else "tmp left"))
case("load.path.Int", m, lambda: m.load(Int(1)), "TypeError")
case("load.path.empty", m, lambda: m.load(""), "ValueError")
case("load_state.bytearray", m, lambda: m.load_state(bytearray(m.state())), "ok")
case("load_state.str", m, lambda: m.load_state("EDTW"))

# ---------------------------------------------------------------- still works
m.train(X0, 1)
m.save(WORK + "/w.etw")
m.load(WORK + "/w.etw")
print("CASES", N_CASES[0])
print("DONE")
