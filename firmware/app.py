"""The device app: everything a person does is a short REPL call.

    import app
    app.boot()                         # main.py does this: model, sensor, saved weights
    app.collect("PEN", n=20)           # record 20 labelled windows (a button can call it too)
    app.calibrate()                    # sensor frame from the collected windows (mounting, arm)
    app.train(epochs=10, lr=0.01, target=0.9)
    app.predict()                      # classify what the sensor sees now
    app.save()                         # atomic; restored automatically at the next boot
    app.score("eval.csv")              # accuracy on a labelled session file (replay)

Every training step prints an `@et {json}` line (log.py) that `edgetune monitor` turns into
progress, a CSV and a plot. Collected windows live in a RAM ring buffer (collect.Ring); the last
1 in `holdout` windows of each class are the check set (recorded after the training windows, one
window apart: recipe.split), which early stopping, rollback and the do-no-harm guard use.
app.train() runs the default recipe (recipe.py): calibrate -> refit -> SGD with rollback -> guard.
"""

import gc

# Modules loaded from .mpy files (edgetune install puts the app in /lib) live in the heap, and
# loading one leaves garbage between its long-lived parts; collecting only when the heap is full
# would scatter them over all of it (151 KB free in holes of at most 15 KB after these imports
# on the stock qemu board). Collecting every 4 KB while importing keeps them packed. core first:
# a native edgetune.mpy (core.IMPL "mpy") loads its machine code into ONE ~60-70 KB block.
_threshold = getattr(gc, "threshold", None)  # (CircuitPython has none)
if _threshold:
    _prev = _threshold()
    _threshold(4096)
import core  # noqa: E402
import hal  # noqa: E402

import collect as _collect  # noqa: E402
import log  # noqa: E402
import sensors  # noqa: E402
import store  # noqa: E402

if _threshold:
    _threshold(_prev)
    del _prev
del _threshold

MODEL = "model.etm"
WEIGHTS = "weights.etw"
CONFIG = "config.json"
# Heap kept free when boot() sizes the ring buffer from the free heap (capacity=None): training,
# evaluation, scoring and logging live in it. The larger of 32 KiB and a quarter of the heap
# (143 KB qemu board: 35 840 B; RP2040: 62 984 B); half the heap with the pure-Python core
# (core.IMPL "py"), whose per-step temporaries are Python objects.
RING_MARGIN = 32 * 1024


class _State:
    pass


S = None  # the booted app state


def _load_json(path):
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return None


def _model_bytes(model):
    """The .etm: bytes given, else the file, else (default path missing) the frozen et_model
    module's MODEL constant (make firmware MODEL=...), which stays in flash."""
    if not isinstance(model, str):
        return model
    try:
        with open(model, "rb") as f:
            return f.read()
    except OSError as e:
        if model != MODEL:
            raise OSError(e.errno, "no model file %s (copy one: edgetune deploy --model M.etm)" % model)
    try:
        import et_model
    except ImportError:
        raise OSError("no %s on the filesystem and no frozen et_model in the firmware" % MODEL)
    return et_model.MODEL


def _margin():
    return max(RING_MARGIN, (gc.mem_free() + gc.mem_alloc()) // (2 if core.IMPL == "py" else 4))


def _ring(capacity, nbytes):
    """The ring buffer: `capacity` windows of `nbytes`, or (None) as many as fit in the free heap
    less _margin(). Asking for more than fits raises a MemoryError that names the numbers."""
    gc.collect()
    free, margin, per = gc.mem_free(), _margin(), nbytes + 2  # + label and held-back flag
    fit = max(0, (free - margin) // per)
    if capacity is None:
        if fit < 1:
            raise MemoryError("no room for a ring buffer: %d bytes of heap free, %d kept for training "
                              "(app.RING_MARGIN); a window takes %d" % (free, margin, per))
        while True:  # the free heap may be fragmented: the bytearray needs one block
            try:
                return _collect.Ring(fit, nbytes)
            except MemoryError:
                if fit < 2:
                    raise
                fit -= max(1, fit // 32)  # fine steps: a coarse one leaves KBs unused
    if capacity > fit:
        raise MemoryError("ring buffer of %d windows needs %d bytes (%d a window) but %d bytes of heap "
                          "are free and %d are kept for training (app.RING_MARGIN): at most capacity=%d "
                          "fits; capacity=None takes the most that fits" % (capacity, capacity * per, per,
                                                                            free, margin, fit))
    return _collect.Ring(capacity, nbytes)


def boot(model=MODEL, weights=WEIGHTS, source=None, config=CONFIG, capacity=None, holdout=4,
         scheme=None, momentum=0.0, restore=True):
    """Load the model, open the sensor, restore saved weights. Returns the app state.

    model: path of the .etm (default model.etm, else the frozen et_model) or its bytes. source: a sensors.Source,
    a sensor config dict, or None (config.json's "imu" section; no sensor if there is none).
    capacity: windows in the ring buffer; None (default) sizes it from the free heap, keeping
    max(RING_MARGIN, heap / 4) free; a number that does not fit raises MemoryError.
    """
    global S
    old, S = S, None  # a previous boot's ring buffer is garbage now (it counts as free heap) ...
    if old is not None and old.ring is not None:  # ... even if a stale pointer keeps its Ring alive
        old.ring.data = old.ring.labels = old.ring.held = None
    old = None
    gc.collect()  # long-lived objects (model, tables, ring) then pack below the garbage's holes
    s = _State()
    buf = _model_bytes(model)
    s.buf = buf
    s.meta = core.metadata(buf)
    s.model = core.Model(buf, scheme, momentum) if scheme is not None or momentum else core.Model(buf)
    info = s.model.info()
    shape = info["input_shape"]
    s.window, s.channels = shape[2], shape[3]
    s.names = list(s.meta.get("class_names") or [str(k) for k in range(info["output_shape"][3])])
    s.rate = int(s.meta.get("sample_rate", 50))
    s.step = int(s.meta.get("step", s.window // 2))
    riq = s.meta.get("raw_input_quant")
    if riq:
        s.quant = _collect.Quantizer(riq["scale"], riq["zero_point"], s.model)
    else:  # no folded normalization: the input quantization of the model itself
        sc, zp = info["input_scale"], info["input_zero_point"]
        s.quant = _collect.Quantizer([sc] * s.channels, [zp] * s.channels, s.model)
    s.ring = None
    s.holdout = holdout
    s.taken = {}  # windows collected per class (decides which are held back)
    s.weights = weights
    s.step_count = 0
    s.last_acc = None
    if source is None:
        cfg = _load_json(config) if config else None
        source = cfg.get("imu") if cfg else None
    if isinstance(source, dict):
        source = sensors.open_imu(source, s.names)
    s.source = source
    S = s
    restored = store.restore(s.model, weights) if restore and weights else False
    info = riq = cfg = None  # garbage before sizing the ring
    try:
        s.ring = _ring(capacity, s.window * s.channels)  # last: sized from what is left
    except MemoryError:
        S = None
        raise
    info = s.model.info()
    s.arena, s.peak = info["arena"], info["peak"]
    gc.collect()
    log.emit("boot", (("impl", core.IMPL), ("restored", restored), ("trainable", info["trainable"]),
                      ("classes", len(s.names)), ("window", s.window), ("rate", s.rate),
                      ("heap_total", gc.mem_free() + gc.mem_alloc())) + _mem(True))
    return s


def _state():
    if S is None:
        raise RuntimeError("call app.boot() first")
    return S


def _label(label):
    s = _state()
    if isinstance(label, int):
        if not 0 <= label < len(s.names):
            raise ValueError("label %d out of range" % label)
        return label
    if label not in s.names:
        raise ValueError("unknown class %r; classes: %s" % (label, ", ".join(s.names)))
    return s.names.index(label)


def _mem(settle=False):
    """Memory fields of a log line. settle=True collects garbage first and adds heap_used (the
    live heap) and refreshes the arena peak (info() allocates, so not on every step)."""
    s = _state()
    if settle:
        gc.collect()
        s.peak = s.model.info()["peak"]
        return (("heap_free", gc.mem_free()), ("heap_used", gc.mem_alloc()), ("arena", s.arena),
                ("peak", s.peak))
    return (("heap_free", gc.mem_free()), ("arena", s.arena), ("peak", s.peak))


def collect(label, n=20, path=None):
    """Record n windows of class `label` (name or index) into the ring buffer (and, with path,
    the raw samples to a session CSV). Returns the number of windows stored for that class."""
    s = _state()
    if s.source is None:
        raise RuntimeError("no sensor: pass source= to app.boot()")
    k = _label(label)
    rec = _collect.Recorder(path, s.names) if path else None
    win = _collect.Windower(s.quant, s.window, s.step, s.channels)
    t0 = hal.ticks_ms()
    try:
        for w in _collect.windows(s.source, win, k, n, s.rate, rec):
            j = s.taken.get(k, 0)
            s.taken[k] = j + 1
            s.ring.add(w, k)  # the check set is chosen at train time (_split: the last ones)
    finally:
        if rec:
            rec.close()
    log.emit("collect", (("label", s.names[k]), ("n", n), ("stored", s.ring.count),
                         ("elapsed_ms", hal.ticks_diff(hal.ticks_ms(), t0))) + _mem(True))
    return s.taken[k]


def button(pin, label, n=20):
    """Collect n windows of `label` whenever the button on `pin` (to GND) is pressed.
    Runs collect() outside the interrupt (micropython.schedule). Returns the Pin."""
    busy = [False]

    def run():
        if busy[0]:
            return
        busy[0] = True
        try:
            collect(label, n)
        finally:
            busy[0] = False

    return hal.button(pin, run)


def clear():
    """Forget the collected windows."""
    s = _state()
    s.ring.clear()
    s.taken = {}


def evaluate():
    """(loss, accuracy) on the check windows (None if there are none); logs an eval line."""
    s = _state()
    _, held = _split()
    if not held:
        return None
    loss, acc = s.model.evaluate([w for w, _ in held], [k for _, k in held])
    s.last_acc = acc
    log.emit("eval", (("step", s.step_count), ("loss", loss), ("acc", acc), ("n", len(held))) + _mem(True))
    return loss, acc


def _split():
    """(train, check) lists of (window, label), oldest first: recipe.split over the ring's
    windows in collection order (per class the last 1 in `holdout` check, the window before
    them, which overlaps the first, dropped)."""
    import checkset  # on first use (small; recipe.py is imported only by train())

    s = _state()
    r = s.ring
    labels = [r.labels[(r.start + i) % r.capacity] for i in range(r.count)]
    tr, ck = checkset.split(labels, s.holdout, checkset.gap_windows(s.window, s.step))
    return [(r.window(i), labels[i]) for i in tr], [(r.window(i), labels[i]) for i in ck]


def train(epochs=5, lr=0.01, target=None, qas=True, seed=0, calibrate=True, refit=True, sgd=True,
          guard=True, refit_all=True):
    """The default recipe (recipe.py) on the collected windows: calibrate the sensor frame ->
    refit the classifier -> `epochs` shuffled passes of one-sample SGD (qas, lr) with rollback to
    the best epoch on the check set (stopping early once its accuracy reaches `target`) -> the
    do-no-harm guard (the model before train() stays unless the check set improves) -> when the
    refit was kept, the refit repeated over every collected window (refit_all).
    Each step can be switched off (calibrate=False, refit=False, sgd=False, guard=False).
    Logs every step. Returns the check accuracy of the model it leaves (None without check windows).
    The code is in app_train.py, imported on first use (a board that never trains keeps the heap)."""
    import sys

    import app_train

    return app_train.train(sys.modules[__name__], epochs, lr, target, qas, seed, calibrate, refit, sgd, guard, refit_all)


def _reframe_ring(R, groups):
    """Re-quantize every window of the ring into the frame after a fit R (dequantize in float32,
    then m.quantize with the model's frame set to R alone; the model's total frame is restored)."""
    from array import array

    s = _state()
    q = s.quant
    total = s.model.frame()
    s.model.frame(R, accel=groups["accel"], gyro=groups.get("gyro"))
    try:
        sc = array("f", q.scale)
        zp = array("f", q.zp)
        C, F = len(sc), array("f", [0.0])
        x = array("f", bytes(4 * s.ring.nbytes))  # one buffer for every window
        for i in range(s.ring.count):
            w = s.ring.window(i)
            for j in range(len(w)):
                v = w[j]
                F[0] = (v - 256 if v > 127 else v) - zp[j % C]  # float32 (q - zp), then * scale
                F[0] = F[0] * sc[j % C]
                x[j] = F[0]
            w[:] = s.model.quantize(x, sc, zp)
    finally:
        if total is None:
            s.model.frame(None)
        else:
            s.model.frame(total["R"], accel=total["accel"], gyro=total["gyro"])


def calibrate():
    """Sensor-frame calibration (docs/training.md §9) over all collected windows (check set
    included: measured, 56 windows instead of the 35 training ones give rotation 0.840 -> 0.856
    and side 0.830 -> 0.838 on 5 seeds, and the fit is guarded by its statistics): fits
    the frame that best explains them against the model's source statistics (.etm metadata
    `frame_stats`, `channel_groups`), sets it on the model (m.quantize applies it from now on,
    m.save keeps it) and re-quantizes every window in the ring into the new frame
    (dequantize, rotate by the fit, quantize: the same float32 recipe). Logs `@et calibrate`
    and returns the model's dict (R of the fit, improper, chosen, residuals)."""
    from array import array

    s = _state()
    st, groups = s.meta.get("frame_stats"), s.meta.get("channel_groups")
    if not st or not groups:
        raise RuntimeError("the model's metadata has no frame_stats/channel_groups (export it with a newer edgetune)")
    r_ = s.ring  # every collected window: the frame fit has its own guard and uses no loss
    wins = [r_.window(i) for i in range(r_.count)]
    labs = [r_.labels[(r_.start + i) % r_.capacity] for i in range(r_.count)]
    r_ = None
    if not wins:
        raise RuntimeError("nothing collected: app.collect(label, n) first")
    flat = array("f")  # the statistics sets: all arms pooled, then each arm (if exported)
    for rows in [st] + list(s.meta.get("frame_stats_sides") or ()):
        for row in rows:
            flat.extend(array("f", row))
    q = s.quant
    t0 = hal.ticks_ms()
    old = s.model.frame()
    r = s.model.calibrate(wins, labs, flat, q.scale, q.zp, accel=groups["accel"], gyro=groups.get("gyro"))
    n = len(wins)
    wins = labs = flat = None
    gc.collect()
    if r["chosen"] != "identity":  # the ring's windows are in the old frame: move them
        _reframe_ring(r["R"], groups)
    ms = hal.ticks_diff(hal.ticks_ms(), t0)
    log.emit("calibrate", (("chosen", r["chosen"]), ("improper", r["improper"]), ("set", r["set"]), ("n", n),
                           ("e_identity", r["e_identity"]), ("e_proper", r["e_proper"]),
                           ("e_improper", r["e_improper"]), ("R", list(r["R"])),
                           ("was_framed", old is not None), ("elapsed_ms", ms)) + _mem(True))
    return r


def refit(l2=None, alpha=None):
    """Closed-form refit of the classifier on the collected training windows (not the check set)
    (docs/training.md §9; l2/alpha None: chosen by cross-validation over them). Logs a `refit`
    line, then evaluates on the held-back windows. Returns the refit's dict."""
    s = _state()
    data, held = _split()
    if not data:
        raise RuntimeError("nothing collected: app.collect(label, n) first")
    t0 = hal.ticks_ms()
    xs, ys = [w for w, _ in data], [k for _, k in data]
    data = None
    gc.collect()  # the refit's scratch is one block
    r = s.model.refit(xs, ys, l2=l2, alpha=alpha)
    xs = ys = None
    log.emit("refit", (("l2", r["l2"]), ("alpha", r["alpha"]), ("cv_acc", r["cv_accuracy"]), ("n", r["n"]),
                       ("scratch", r["scratch"]), ("elapsed_ms", hal.ticks_diff(hal.ticks_ms(), t0))) + _mem(True))
    if held:
        evaluate()
    return r


def score(source=None, limit=None):
    """Accuracy on a labelled stream: a session file path (replayed once) or a Replay source.
    Windows are cut inside each label run every `step` samples. Logs a score line."""
    s = _state()
    close = False
    if source is None:
        source = s.source
    elif isinstance(source, str):
        source = sensors.Replay(source, s.names, loop=False)
        close = True
    win = _collect.Windower(s.quant, s.window, s.step, s.channels)
    correct = total = 0
    cur = None
    t0 = hal.ticks_ms()
    while limit is None or total < limit:
        x = source.read()
        if x is None:
            break
        if source.label != cur:
            cur = source.label
            win.reset()
        if cur is None or cur < 0:
            continue
        w = win.push(x)
        if w is not None:
            total += 1
            correct += s.model.predict_class(w) == cur
    if close:
        source.close()
    acc = correct / total if total else 0.0
    log.emit("score", (("step", s.step_count), ("acc", acc), ("n", total),
                       ("elapsed_ms", hal.ticks_diff(hal.ticks_ms(), t0))) + _mem(True))
    return acc


def predict(n=1):
    """Classify the next n windows from the sensor; returns the class names."""
    s = _state()
    win = _collect.Windower(s.quant, s.window, s.step, s.channels)
    out = []
    period = 1000 // s.rate
    due = hal.ticks_ms()
    while len(out) < n:
        if s.source.realtime:
            wait = hal.ticks_diff(due, hal.ticks_ms())
            if wait > 0:
                hal.sleep_ms(wait)
            due = hal.ticks_add(due, period)
        x = s.source.read()
        if x is None:
            break
        w = win.push(x)
        if w is not None:
            k = s.model.predict_class(w)
            out.append(s.names[k])
            log.emit("predict", (("label", s.names[k]),))
    return out


def save():
    """Save the trained weights (atomic); they are restored at the next boot."""
    s = _state()
    size = store.save(s.model, s.weights)
    log.emit("save", (("path", s.weights), ("bytes", size), ("step", s.step_count)))
    return size


def reset(forget=False):
    """Back to the flashed weights (forget=True also deletes the saved file)."""
    s = _state()
    if forget:
        store.forget(s.model, s.weights)
    else:
        s.model.reset()
    log.emit("reset", (("forget", forget),))


def info():
    """The model's info() plus the app's state."""
    s = _state()
    d = s.model.info()
    d.update(impl=core.IMPL, classes=s.names, collected=s.ring.count, capacity=s.ring.capacity,
             per_class=s.ring.per_label(),
             steps=s.step_count, heap_free=gc.mem_free())
    return d
