"""app.train(): the default recipe (recipe.py) on the app's ring buffer, model and log.

Kept out of app.py so that the app's bytecode (compiled into RAM when not frozen) stays small
for boards that only collect and predict; app.train() imports it on first use and hands itself
over (`train(app, ...)`), so this module never imports app back: no import cycle.
"""

import gc

import hal
import log
import recipe as _recipe

app = None  # the device app module, handed over by app.train()


def _refit_step(xs, ys):
    """The recipe's refit step: m.refit on the training windows after a gc (its scratch is one
    block; a MemoryError leaves the model unchanged and the recipe logs the step as skipped)."""
    def run():
        gc.collect()
        return app._state().model.refit(xs, ys)
    return run


def _refit_all():
    """The recipe's last refit over every collected window (check set included); the lists are
    built only when it runs (the heap is tight during the recipe)."""
    s = app._state()
    r = s.ring
    gc.collect()
    return s.model.refit([r.window(i) for i in range(r.count)],
                         [r.labels[(r.start + i) % r.capacity] for i in range(r.count)])


def _calibrate_step():
    """The recipe's calibrate step: calibrate() when the model and its metadata can (else None:
    logged as not supported). Remembers the fit so a guard that restores the old frame can move
    the ring's windows back (through R^T: within one quantization step of what they were)."""
    s = app._state()
    groups = s.meta.get("channel_groups")
    if not hasattr(s.model, "calibrate") or not s.meta.get("frame_stats") or not groups:
        return None
    r = app.calibrate()
    if r["chosen"] != "identity":
        R = list(r["R"])
        s.undo_frame = ([R[3 * j + i] for i in range(3) for j in range(3)], groups)
    return {"chosen": r["chosen"], "improper": r["improper"]}


def train(host, epochs, lr, target, qas, seed, calibrate, refit, sgd, guard, refit_all):
    """The default recipe (recipe.py) on the collected windows: calibrate the sensor frame ->
    refit the classifier -> `epochs` shuffled passes of one-sample SGD (qas, lr) with rollback to
    the best epoch on the check set (stopping early once its accuracy reaches `target`) -> the
    do-no-harm guard (the model before train() stays unless the check set improves) -> when the
    refit was kept, the refit repeated over every collected window (refit_all).
    Each step can be switched off (calibrate=False, refit=False, sgd=False, guard=False).
    Logs every step. Returns the check accuracy of the model it leaves (None without check windows)."""
    global app
    app = host
    s = app._state()
    data, held = app._split()
    if not data:
        raise RuntimeError("nothing collected: app.collect(label, n) first")
    if not held and s.holdout > 0:
        log.warn("no check windows, so no accuracy (acc: null), no early stop and no guard: the last 1 in %d "
                 "windows of a class are the check set; collect at least %d windows per class" % (s.holdout, s.holdout))
    t0 = hal.ticks_ms()
    n_sgd = epochs if sgd else 0
    log.emit("start", (("steps", n_sgd * len(data)), ("samples", len(data)), ("held", len(held)),
                       ("lr", lr), ("qas", qas), ("epochs", n_sgd)))
    xs = [w for w, _ in data]
    ys = [k for _, k in data]
    cxs = [w for w, _ in held]
    cys = [k for _, k in held]
    data = held = None
    n0 = s.step_count

    def emit(name, fields):
        if name == "eval":
            s.last_acc = fields[2][1]
        log.emit(name, (("step", s.step_count),) + fields + app._mem(name != "eval"))

    def on_step(ep, loss):
        s.step_count += 1
        log.emit("train", (("step", s.step_count), ("epoch", ep), ("loss", loss), ("acc", s.last_acc))
                 + app._mem() + (("elapsed_ms", hal.ticks_diff(hal.ticks_ms(), t0)),))

    m = s.model
    s.undo_frame = None
    cal = _calibrate_step if calibrate else None
    steps, kept = _recipe.run(m, xs, ys, cxs, cys, calibrate=cal,
                              refit=_refit_step(xs, ys) if refit and hasattr(m, "refit") else None,
                              refit_all=_refit_all if refit and refit_all and hasattr(m, "refit") else None,
                              sgd_epochs=n_sgd, lr=lr, qas=qas, seed=seed,
                              guard=guard, emit=emit, target=target, on_step=on_step)
    if not kept and s.undo_frame is not None:  # the guard restored the old frame: the windows too
        app._reframe_ring(*s.undo_frame)
    s.undo_frame = None
    final = steps[-1][1]
    s.last_acc = final[1] if final else None
    stop = target is not None and final is not None and final[1] >= target
    log.emit("end", (("step", s.step_count), ("steps", s.step_count - n0), ("acc", s.last_acc),
                     ("early_stop", stop), ("kept", kept),
                     ("elapsed_ms", hal.ticks_diff(hal.ticks_ms(), t0))) + app._mem(True))
    return s.last_acc


